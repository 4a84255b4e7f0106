//! How a domain error reads on the command line: `[code] message` for what the user
//! can fix, the full error for an internal failure.

use tessera_core::{CodedError, ErrorCode};

/// The error a command exits with (non-zero) for a domain error.
pub fn coded(error: impl CodedError + Send + Sync + 'static) -> anyhow::Error {
    match error.code() {
        ErrorCode::InternalError => anyhow::Error::new(error),
        code => anyhow::anyhow!("[{code}] {}", error.user_message()),
    }
}
