//! Tessera's application runtime: everything that runs, without HTTP.
//!
//! - [`stores`]: [`open_stores`], the one way to open the stores, used by `serve`,
//!   every CLI command and the benchmarks;
//! - [`runtime`]: [`Runtime`], the parts assembled on those stores, and the threads
//!   `serve` starts — the group [`committer`], the [`processing`] loop (identity,
//!   audiences, erasures) and the activation [`fanout`];
//! - [`sources`], [`audit`], [`privacy`] (suppression, access export, erasure),
//!   [`metrics`] and [`acks`] (latency from acknowledgement);
//! - [`webhooks`] (signature checks and mappings of webhook sources) and [`plans`]
//!   (tracking plans: validation, recorded violations, inference).
//!
//! The HTTP edge (`tessera-server`) and the CLI (`tessera`) both sit on this crate;
//! neither depends on the other for application work.

pub mod acks;
pub mod audit;
pub mod committer;
pub mod fanout;
mod json_depth;
pub mod metrics;
pub mod plans;
pub mod privacy;
pub mod processing;
pub mod runtime;
pub mod sources;
pub mod stores;
pub mod webhooks;

pub use runtime::{Running, Runtime, RuntimeConfig, RuntimeError};
pub use stores::{StoreOptions, Stores, open_stores};
