//! Identity: every identifier a person leaves becomes one profile, and wrong merges
//! never happen.
//!
//! - [`rules`]: identifier types, priorities, limits, blocked values, caps.
//! - [`identifiers`]: extraction and normalization of a message's identifiers.
//! - [`resolution`]: the pure decision — new profile, attach, merge, or drop.
//! - [`processor`]: folds the event log into profiles; replay and unlink.
//! - [`dedupe`]: probabilistic matching of records that share no identifier.
//! - [`suggestions`]: that matcher over stored profiles; applying a merge.

pub mod dedupe;
pub mod erasure;
pub mod identifiers;
pub mod processor;
pub mod resolution;
pub mod rules;
pub mod suggestions;
