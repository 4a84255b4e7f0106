//! The error of a definition (destination, journey, template) that cannot be
//! saved, shared by the modules that check definitions.

/// A definition problem, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
