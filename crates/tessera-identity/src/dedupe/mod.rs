//! Probabilistic de-duplication: finds records of one person that share no
//! identifier — typos, nicknames, swapped or missing fields, CRM imports — with a
//! Fellegi–Sunter model.
//!
//! A run ([`dedupe`]) takes a [`Dataset`] of records with named, typed fields
//! ([`FieldSpec`], [`FieldKind`]) and:
//! 1. pairs records that share a blocking key ([`blocking`]), several keys unioned;
//! 2. compares each pair field by field into levels ([`compare`], [`Level`]);
//! 3. weighs each level by `log2(m/u)`, `m` and `u` estimated from the data (EM,
//!    random pairs) or given ([`Weights`]);
//! 4. links pairs at or above the threshold and clusters them without chaining
//!    ([`cluster`]).
//!
//! The fitted [`Model`] scores and explains any pair field by field
//! ([`PairExplanation`]), which is what merge suggestions show.
//!
//! ```
//! use tessera_identity::dedupe::{DedupeConfig, FieldKind, FieldSpec, Record, Schema, dedupe_records};
//!
//! let schema = Schema::new(vec![
//!     FieldSpec::new("first", FieldKind::FirstName),
//!     FieldSpec::new("last", FieldKind::LastName),
//!     FieldSpec::new("dob", FieldKind::DateOfBirth),
//! ])?;
//! let records = vec![
//!     Record::new("1").with("first", "William").with("last", "Smith").with("dob", "1980-03-12"),
//!     Record::new("2").with("first", "Bill").with("last", "Smith").with("dob", "12/03/1980"),
//!     Record::new("3").with("first", "Mary").with("last", "Jones").with("dob", "1975-01-02"),
//! ];
//! let (data, outcome) = dedupe_records(schema, &records, &DedupeConfig::default())?;
//! let explanation = outcome.model.explain(&data, 0, &data, 1);
//! assert!(explanation.weight > 0.0);
//! # Ok::<(), tessera_identity::dedupe::DedupeError>(())
//! ```

pub mod blocking;
pub mod cluster;
pub mod compare;
pub mod date;
mod engine;
mod error;
pub mod evaluate;
pub mod frequency;
pub mod generate;
mod kind;
mod model;
pub mod nicknames;
pub mod normalize;
pub mod phonetic;
mod record;
mod training;
mod weights;

pub use blocking::{BlockingMethod, BlockingRule, BlockingSettings, KeyPart, KeyTransform};
pub use cluster::{ClusterSettings, ClusterStats};
pub use engine::{
    AllPairsReport, DedupeConfig, DedupeOutcome, DedupeStats, NoProgress, PriorSource, Progress,
    ScoredPair, Stage, dedupe, dedupe_records,
};
pub use error::DedupeError;
pub use kind::{FieldKind, Level, UnknownFieldKind};
pub use model::{FieldContribution, Model, PairExplanation};
pub use record::{Dataset, FieldSpec, MAX_FIELDS, Record, Schema};
pub use training::SessionReport;
pub use weights::{EmSettings, FieldWeights, Weights};
