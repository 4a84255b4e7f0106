//! Tessera audiences: computed traits, the audience language, and its two
//! evaluators over an in-memory index of profiles.
//!
//! - [`ast`] is the condition tree; [`language`] reads and writes its text form
//!   (JSON is the serde form of the same tree).
//! - [`index`] holds compact, in-memory copies of every profile's traits and events,
//!   derived from the store and rebuilt from it, never the truth.
//! - [`eval`] compiles a condition against the index and is the per-profile
//!   (realtime) evaluator; [`batch`] is the set-wise evaluator over the whole index.
//!   A property test keeps them equal.
//! - [`computed`] and [`rfm`] derive traits from events.
//! - [`insights`] answers trends, funnels and retention over the same index;
//!   [`analytics`] runs their requests on the engine (and saves funnel drop-offs).
//! - [`engine`] ties them to the stores: definitions, realtime updates, scheduled and
//!   batch computations, membership changes.

pub mod analytics;
pub mod ast;
pub mod batch;
pub mod bitset;
pub mod computed;
pub mod engine;
pub mod eval;
pub mod index;
pub mod insights;
pub mod language;
pub mod names;
pub mod rfm;
pub mod scalar;

/// Checks the key of an audience or computed trait: 1–64 characters of `a-z`, `0-9`,
/// `_` and `-`, starting with a letter (keys appear in URLs and in conditions).
pub fn validate_key(key: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "key \"{key}\" must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter"
        ))
    }
}
