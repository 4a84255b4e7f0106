//! Tessera's domain types, free of I/O: Segment-spec messages and their validation and
//! normalization, request-body parsing with Segment's limits, the error-code table, the
//! clock, and the identifier/secret generator.

pub mod consent;
pub mod error;
pub mod fields;
pub mod ids;
pub mod message;
pub mod request;
pub mod suggest;
pub mod time;

pub use error::{CodedError, ErrorCode, UserError};
pub use message::{MessageType, NormalizedMessage, Rejection, RequestDefaults};
