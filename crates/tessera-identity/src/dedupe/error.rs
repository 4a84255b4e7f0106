//! The one error type of de-duplication: every variant says what was wrong in terms
//! the user wrote (a field name, a record id), so the CLI can print it as it is.

/// Why a de-duplication could not run.
#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    /// The fields to compare are unusable (none, too many, a duplicate name).
    #[error("{0}")]
    Schema(String),
    /// A record does not fit the schema.
    #[error("{0}")]
    Record(String),
    /// A blocking rule names a field that is not in the schema, or has no part.
    #[error("blocking rule {rule:?}: {message}")]
    Blocking {
        /// The rule's name.
        rule: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration value is out of range, or given weights do not fit the schema.
    #[error("{0}")]
    Config(String),
    /// More data than the compact storage holds (4 GiB of text in one field, 4
    /// billion records or 65,535 sources).
    #[error(
        "input too large for one de-duplication run (4 GiB of text per field, 2^32 records, 65,535 sources)"
    )]
    TooLarge,
}
