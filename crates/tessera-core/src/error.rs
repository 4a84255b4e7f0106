//! The one table of error codes users and SDKs can match on.
//!
//! Every error that leaves Tessera — an HTTP 4xx/5xx body `{"code", "message"}` or a
//! CLI failure — carries one of these codes. Codes are part of the public contract:
//! never rename one; add a new variant instead. Tests assert codes, not prose.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident => ($code:literal, $status:literal), )*) => {
        /// A stable, machine-readable error code with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order (for documentation and tests).
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire form of the code, e.g. `missing_event`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// One line saying what the code means (used in the docs' error table).
            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => concat!($($doc),*).trim_ascii(), )* }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON.
    InvalidJson => ("invalid_json", 400),
    /// The body is JSON but not the expected shape (e.g. `batch` is not an array).
    InvalidBody => ("invalid_body", 400),
    /// The body claims `Content-Encoding: gzip` but does not decompress.
    InvalidGzip => ("invalid_gzip", 400),
    /// `Content-Encoding` is neither `gzip` nor `identity`.
    UnsupportedEncoding => ("unsupported_encoding", 415),
    /// One message is larger than 32 KB.
    MessageTooLarge => ("message_too_large", 413),
    /// The request body is larger than 500 KB (after decompression).
    BatchTooLarge => ("batch_too_large", 413),
    /// An admin or query API request body is over its limit (2 MB).
    BodyTooLarge => ("body_too_large", 413),
    /// A batch holds more than 2,500 messages.
    TooManyMessages => ("too_many_messages", 413),
    /// No write key: send it as the HTTP Basic user or as `writeKey` in the body.
    MissingWriteKey => ("missing_write_key", 401),
    /// The write key does not belong to any source.
    InvalidWriteKey => ("invalid_write_key", 401),
    /// The write key belongs to a disabled source.
    SourceDisabled => ("source_disabled", 401),
    /// No enabled source has this write key: the browser SDKs' settings
    /// (`/v1/projects/{writeKey}/settings`) and source configuration (`/sourceConfig`)
    /// are answered only for an enabled source's key.
    WriteKeyNotFound => ("write_key_not_found", 404),
    /// analytics.js asked for a chunk that the analytics.js version Tessera serves
    /// does not have (the page runs another version's bundle: reload it).
    UnknownAsset => ("unknown_asset", 404),
    /// A message has neither `userId` nor `anonymousId`.
    MissingUserId => ("missing_user_id", 400),
    /// A `track` message has no `event`.
    MissingEvent => ("missing_event", 400),
    /// An `alias` message has no `previousId`.
    MissingPreviousId => ("missing_previous_id", 400),
    /// A `group` message has no `groupId`.
    MissingGroupId => ("missing_group_id", 400),
    /// A batch item's `type` is missing or not a Segment message type.
    InvalidType => ("invalid_type", 400),
    /// A field has the wrong JSON type (e.g. `traits` is not an object).
    InvalidFieldType => ("invalid_field_type", 400),
    /// A timestamp field is not an ISO-8601 date-time.
    InvalidTimestamp => ("invalid_timestamp", 400),
    /// `messageId` is longer than 100 characters.
    MessageIdTooLong => ("message_id_too_long", 400),
    /// No message of the batch was valid; see `rejected` for each reason.
    AllMessagesRejected => ("all_messages_rejected", 400),
    /// The ingest queue is full; retry after the `Retry-After` seconds.
    Overloaded => ("overloaded", 503),
    /// The server has as many open connections as it takes; retry shortly.
    TooManyConnections => ("too_many_connections", 503),
    /// The request body did not arrive in time (see `body_timeout_ms`); send it again.
    RequestTimeout => ("request_timeout", 408),
    /// The server is shutting down; retry against another node or later.
    ShuttingDown => ("shutting_down", 503),
    /// An fsync of the event log failed: this server stores nothing more until it is
    /// restarted; retry against another node or after the restart.
    EventLogFailed => ("event_log_failed", 503),
    /// The event log cannot be written now (the disk is full or failing): nothing
    /// of the request was stored; retry after the `Retry-After` seconds.
    StorageUnavailable => ("storage_unavailable", 503),
    /// The admin API needs `Authorization: Bearer <admin token>`.
    InvalidAdminToken => ("invalid_admin_token", 401),
    /// The token is valid but lacks the scope this endpoint needs (e.g. a
    /// `read:profiles` token on an admin route).
    InsufficientScope => ("insufficient_scope", 403),
    /// Too many requests for this write key or token; retry after the `Retry-After`
    /// seconds.
    RateLimited => ("rate_limited", 429),
    /// This client address presented too many wrong credentials within a window
    /// (`[http] auth_failures`); its requests are refused without being checked until
    /// the `Retry-After` seconds have passed.
    TooManyAuthFailures => ("too_many_auth_failures", 429),
    /// This client address has as many open connections as one client may
    /// (`[http] max_connections_per_client`); close some, or retry after the
    /// `Retry-After` seconds.
    TooManyClientConnections => ("too_many_client_connections", 429),
    /// `/metrics` needs `Authorization: Bearer <metrics token>` (`[metrics] token`,
    /// `TESSERA_METRICS_TOKEN`) or the admin token.
    InvalidMetricsToken => ("invalid_metrics_token", 401),
    /// No API token has that id.
    TokenNotFound => ("token_not_found", 404),
    /// A request parameter is missing or invalid, or the request is not well-formed HTTP/1.1.
    InvalidRequest => ("invalid_request", 400),
    /// No source has that id.
    SourceNotFound => ("source_not_found", 404),
    /// A source with that name exists already (names are unique, so `--source NAME`
    /// names one source).
    SourceExists => ("source_exists", 409),
    /// No profile holds that identifier (or has that id).
    ProfileNotFound => ("profile_not_found", 404),
    /// The identity rules refuse this merge (e.g. both profiles have a user id).
    MergeConflict => ("merge_conflict", 409),
    /// The identifier is not `type:value` with a known identifier type.
    InvalidIdentifier => ("invalid_identifier", 400),
    /// The consent request names a purpose that is not configured.
    UnknownPurpose => ("unknown_purpose", 400),
    /// The message would store an identifier of an erased person.
    IdentifierErased => ("identifier_erased", 409),
    /// No privacy request has that id.
    PrivacyRequestNotFound => ("privacy_request_not_found", 404),
    /// A destination or journey definition is invalid (the message says where).
    InvalidActivation => ("invalid_activation", 400),
    /// A template of the destination or journey exceeds the render budget already
    /// with sample data (too many steps, too much output or too deep nesting); make
    /// it do less.
    TemplateOverBudget => ("template_over_budget", 400),
    /// The update keeps a masked secret (`"***"`) but changes where it would be sent
    /// (URL scheme, host or port, SMTP server); send the secret again.
    SecretRequired => ("secret_required", 400),
    /// An email's open pixel or tracked link whose token does not verify (changed,
    /// forged, or made by another server); never redirected.
    InvalidEngagementToken => ("invalid_engagement_token", 400),
    /// No destination has that id.
    DestinationNotFound => ("destination_not_found", 404),
    /// A destination with that id exists (or journeys still use it).
    DestinationConflict => ("destination_conflict", 409),
    /// No journey has that key.
    JourneyNotFound => ("journey_not_found", 404),
    /// A journey with that key exists.
    JourneyExists => ("journey_exists", 409),
    /// No audience has that key.
    AudienceNotFound => ("audience_not_found", 404),
    /// An audience with that key exists already.
    AudienceExists => ("audience_exists", 409),
    /// An audience definition (text or JSON) does not parse or refers to something
    /// that does not exist; the message points at the place.
    InvalidDefinition => ("invalid_definition", 400),
    /// No stored computed trait has that key.
    ComputedTraitNotFound => ("computed_trait_not_found", 404),
    /// The audience index is still being built after start; retry shortly.
    AudiencesLoading => ("audiences_loading", 503),
    /// An insight query (trends, funnel, retention) is not well-formed: an unknown
    /// interval, measure or order, a date that does not parse, a step that is not an
    /// event; the message names the field and what it takes.
    InvalidInsight => ("invalid_insight", 400),
    /// An insight query asks for more than its limits allow (buckets, series, steps,
    /// breakdown values, periods, the range or the conversion window); the message
    /// names the limit.
    InsightTooLarge => ("insight_too_large", 400),
    /// No route matches the path.
    NotFound => ("not_found", 404),
    /// The path exists but not for this HTTP method.
    MethodNotAllowed => ("method_not_allowed", 405),
    /// The request's path and query are over 64 KB.
    UriTooLong => ("uri_too_long", 414),
    /// The request has too many headers (over 100) or too large ones.
    HeadersTooLarge => ("headers_too_large", 431),
    /// An input file could not be read or parsed.
    InvalidInputFile => ("invalid_input_file", 400),
    /// A CLI command that must not run beside a server (`tessera replay`) found one
    /// running on the data directory: stop it first.
    ServerRunning => ("server_running", 409),
    /// A webhook's signature is missing, malformed, does not match the body under the
    /// source's secret, or (Stripe) is more than 5 minutes old; the message says which.
    InvalidWebhookSignature => ("invalid_webhook_signature", 401),
    /// A webhook body is over 256 KB.
    WebhookBodyTooLarge => ("webhook_body_too_large", 413),
    /// A webhook source's configuration (preset, secret, mapping) is invalid; the
    /// message says where.
    InvalidWebhookConfig => ("invalid_webhook_config", 400),
    /// No webhook source has that id (the source does not exist or has no webhook
    /// configuration).
    WebhookNotConfigured => ("webhook_not_configured", 404),
    /// A tracking plan is invalid (mode, event names, a JSON Schema, its size or
    /// depth); the message says where.
    InvalidTrackingPlan => ("invalid_tracking_plan", 400),
    /// The message breaks its source's tracking plan, which is in `block` mode (an
    /// event the plan does not list, or properties or traits its schema refuses).
    TrackingPlanViolation => ("tracking_plan_violation", 400),
    /// The source has no tracking plan.
    TrackingPlanNotFound => ("tracking_plan_not_found", 404),
    /// Something failed inside Tessera; the detail is in the server log.
    InternalError => ("internal_error", 500),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user-facing error: a stable code plus a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    /// The stable code.
    pub code: ErrorCode,
    /// What was wrong, where, and how to fix it. Never contains PII.
    pub message: String,
}

impl UserError {
    /// Creates an error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for UserError {}

/// A domain error that knows its stable [`ErrorCode`] — and through it its HTTP
/// status — where it is raised, so the HTTP edge and the CLI map errors to codes
/// in one place instead of once per module.
pub trait CodedError: std::error::Error {
    /// The stable code; [`ErrorCode::InternalError`] when the detail is for the
    /// server log only.
    fn code(&self) -> ErrorCode;

    /// What to tell the user (never PII); by default the error's text.
    fn user_message(&self) -> String {
        self.to_string()
    }
}

impl CodedError for UserError {
    fn code(&self) -> ErrorCode {
        self.code
    }

    fn user_message(&self) -> String {
        self.message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_in_the_api_reference_with_its_status() {
        let reference = include_str!("../../../docs/API.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.http_status());
            assert!(reference.contains(&row), "docs/API.md lacks the row {row}");
        }
    }

    #[test]
    fn codes_are_unique_snake_case_and_documented() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(!code.description().is_empty());
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
