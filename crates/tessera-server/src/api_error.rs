//! The one error type of the HTTP edge and its wire shape.
//!
//! User errors answer with their code's status and `{"code", "message"}` (plus
//! `rejected` for batches). Internal errors answer a generic 500 and log the detail:
//! the client learns nothing it could not act on, the operator learns everything.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_core::{CodedError, ErrorCode, UserError};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    extra: Option<Box<(&'static str, Value)>>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a message saying what to fix.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// Answers with `Retry-After: seconds` (instead of the 1 s of overload answers).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// An internal failure: logged in full, answered as a generic `internal_error`.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "Tessera failed to handle the request; the server log has the detail",
        )
    }

    /// Adds one more field to the JSON body (e.g. `rejected`).
    pub fn with_field(mut self, name: &'static str, value: Value) -> Self {
        self.extra = Some(Box::new((name, value)));
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Rewrites the plain-text rejections of axum's extractors (a path segment that is not
/// UTF-8 once percent-decoded, a body over the 2 MB limit, a malformed query) into the
/// `{"code", "message"}` shape of every other error.
pub async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let (_, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4_096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            "the request body is over 2 MB, the limit of the admin and query API",
        )
    } else if status == StatusCode::NOT_FOUND {
        ApiError::new(
            ErrorCode::NotFound,
            format!("{detail}: see docs/API.md for the routes"),
        )
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this route does not take that method: see docs/API.md",
        )
    } else {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{detail}: path segments must be percent-encoded UTF-8 and the query well formed"
            ),
        )
    };
    error.into_response()
}

impl ApiError {
    /// A domain error answered with the code it carries; an internal one is logged
    /// and answered as a generic `internal_error`.
    pub fn coded(error: impl CodedError) -> Self {
        match error.code() {
            ErrorCode::InternalError => Self::internal(error),
            code => Self::new(code, error.user_message()),
        }
    }
}

/// Every domain error converts through [`ApiError::coded`].
macro_rules! from_coded {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for ApiError {
            fn from(error: $error) -> Self {
                Self::coded(error)
            }
        }
    )*};
}

from_coded!(
    UserError,
    tessera_activation::ActivationError,
    tessera_audience::engine::EngineError,
    tessera_identity::processor::ProcessorError,
    tessera_identity::suggestions::SuggestionError,
    tessera_runtime::sources::SourceError,
    tessera_runtime::committer::SubmitError,
    tessera_runtime::webhooks::WebhookError,
    tessera_runtime::plans::PlanError,
);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let (Some(extra), Value::Object(map)) = (self.extra, &mut body) {
            let (name, value) = *extra;
            map.insert(name.to_string(), value);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self.code {
            ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::AudiencesLoading
            | ErrorCode::RateLimited => Some("1"),
            // Storage needs an operator (room on the disk, or a restart).
            ErrorCode::StorageUnavailable => Some("5"),
            ErrorCode::EventLogFailed => Some("30"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            // Segment's SDKs honour Retry-After; the browser library reads x-ratelimit-reset.
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
            headers.insert("x-ratelimit-reset", HeaderValue::from_static(seconds));
        }
        if let Some(seconds) = self.retry_after {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            headers.insert("x-ratelimit-reset", HeaderValue::from(seconds));
        }
        response
    }
}
