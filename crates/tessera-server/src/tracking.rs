//! The Segment-compatible Tracking API.
//!
//! `POST /v1/{identify,track,page,screen,group,alias,batch,import}` and the browser
//! library's short forms `/v1/{i,t,p,s,g,a,b}`. Any content type is read as JSON
//! (analytics.js sends `text/plain` to avoid a CORS preflight). The handler is thin:
//! read the body, authenticate, let `tessera-core` validate, hand the result to the
//! group committer, and answer only once the events are durable.
//!
//! Partial batches: the SDKs retry whole batches on a non-2xx answer and drop them on
//! most 4xx, so one bad message must neither cost the good ones nor cause the batch to
//! be resent forever. A batch is therefore answered 200 when at least one message was
//! stored; the refused ones are listed in `rejected` (index, code, message), counted in
//! `tessera_events_rejected_total`, and kept in the rejected-events view. Only when no
//! message of a batch is valid is the answer 400 `all_messages_rejected`.

use crate::AppState;
use crate::api_error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Instant;
use tessera_core::message::MessageType;
use tessera_core::request::{BodyKind, MAX_BATCH_BYTES, parse_request};
use tessera_core::{ErrorCode, Rejection};
use tessera_runtime::metrics::RequestLabels;
use tessera_runtime::privacy::Screened;
use tessera_runtime::sources::SourceLookupError;
use tessera_store::{AppendBatch, EventRecord, RejectionRecord, Source};
use tower_http::cors::{Any, CorsLayer};

/// The tracking routes, with CORS for browsers ([`cors`]) on them alone.
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (long, short, message_type) in [
        ("/v1/identify", "/v1/i", MessageType::Identify),
        ("/v1/track", "/v1/t", MessageType::Track),
        ("/v1/page", "/v1/p", MessageType::Page),
        ("/v1/screen", "/v1/s", MessageType::Screen),
        ("/v1/group", "/v1/g", MessageType::Group),
        ("/v1/alias", "/v1/a", MessageType::Alias),
    ] {
        let kind = BodyKind::Single(message_type);
        router = router
            .route(
                long,
                post(move |state, request| ingest(state, request, kind, false)).options(preflight),
            )
            .route(
                short,
                post(move |state, request| ingest(state, request, kind, true)).options(preflight),
            );
    }
    router
        .route(
            "/v1/batch",
            post(|state, request| ingest(state, request, BodyKind::Batch, false))
                .options(preflight),
        )
        .route(
            "/v1/b",
            post(|state, request| ingest(state, request, BodyKind::Batch, true)).options(preflight),
        )
        .route(
            "/v1/import",
            post(|state, request| ingest(state, request, BodyKind::Import, false))
                .options(preflight),
        )
        .layer(cors())
}

/// `OPTIONS` on a tracking route: the CORS layer answers preflights before this;
/// a plain `OPTIONS` gets an empty 204.
pub(crate) async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// The request headers browsers may send to the tracking and browser-SDK routes:
/// what analytics.js (`X-Retry-Count`, `Authorization` when configured) and
/// RudderStack's SDK (`AnonymousId`, `SentAt`, its `Rsa-*` retry headers,
/// `Authorization`) send. Listed one by one: a wildcard does not extend to
/// `Authorization` under the Fetch standard.
pub const CORS_ALLOWED_HEADERS: [&str; 12] = [
    "accept",
    "anonymousid",
    "authorization",
    "content-encoding",
    "content-type",
    "rsa-recovered",
    "rsa-retry-attempt",
    "rsa-retry-reason",
    "rsa-since-first-attempt",
    "rsa-since-last-attempt",
    "sentat",
    "x-retry-count",
];

/// CORS for browsers (analytics.js, RudderStack's SDK, pages posting JSON with custom
/// headers), on the tracking and browser-SDK routes only: it answers their preflight
/// `OPTIONS` requests with [`CORS_ALLOWED_HEADERS`] and lets scripts read
/// `Retry-After`. The admin, profile and audience APIs are not for browsers on other
/// origins and send no CORS headers.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(CORS_ALLOWED_HEADERS.map(header::HeaderName::from_static))
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(86_400))
}

/// Reads, authenticates, validates and stores one tracking request (also behind
/// RudderStack's beacon route, see [`crate::web_sdk`]).
pub(crate) async fn ingest(
    State(state): State<AppState>,
    request: Request,
    kind: BodyKind,
    browser: bool,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&state.metrics);
    let peer = request
        .extensions()
        .get::<ConnectInfo<crate::http_errors::ClientAddr>>()
        .map(|info| info.0.0.ip());
    let client_ip = peer.filter(|_| browser).map(|ip| ip.to_string());
    let (parts, body) = request.into_parts();
    let response = match ingest_request(&state, &parts.headers, body, kind, client_ip, peer).await {
        Ok(response) => response,
        Err((error, source_key)) => {
            state.metrics.rejected(error.code().as_str());
            if let Some(source_key) = source_key.filter(|_| error.code().http_status() < 500) {
                record_request_rejection(&state, source_key, &error).await;
            }
            error.into_response()
        }
    };
    state
        .metrics
        .ingest_latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Counts a tracking request in `tessera_ingest_in_flight` while it is handled (also
/// when the client goes away and the handler is dropped mid-way).
struct InFlight<'a>(&'a tessera_runtime::metrics::Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a tessera_runtime::metrics::Metrics) -> Self {
        metrics.request_started();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// An error answer, with the key of the source when the request was authenticated.
pub(crate) type IngestError = (ApiError, Option<i64>);

async fn ingest_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    kind: BodyKind,
    client_ip: Option<String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, IngestError> {
    // A client that presented too many wrong write keys waits, unchecked and unread.
    state.auth_backoff.check(peer).map_err(|e| (e, None))?;
    let header_key = basic_auth_user(headers);
    // Authenticate before reading the body when the key is in the header.
    let mut source = match &header_key {
        Some(key) => Some(resolve(state, key, peer)?),
        None => None,
    };
    let source_key = source.as_ref().map(|s| s.key);
    // A stranger's body (no key in the headers) is read before anyone knows whether
    // its key is good: only so many at once, so strangers cannot fill the memory.
    let _keyless = match &header_key {
        Some(_) => None,
        None => Some(state.bodies.keyless.try_acquire().map_err(|_| {
            let error = ApiError::new(
                ErrorCode::Overloaded,
                "too many requests without a write key in their headers are being read: retry shortly, or send the key as the HTTP Basic user",
            );
            (error, None)
        })?),
    };
    let raw = match tokio::time::timeout(
        state.bodies.timeout,
        axum::body::to_bytes(body, MAX_BATCH_BYTES + 1),
    )
    .await
    {
        Ok(read) => read.map_err(|_| (too_large(kind, None), source_key))?,
        Err(_) => {
            let error = ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the body did not arrive within {} ms: send it again, faster",
                    state.bodies.timeout.as_millis()
                ),
            );
            return Err((error, source_key));
        }
    };
    state.metrics.request_bytes.inc_by(raw.len() as u64);
    let decoded = decode_body(headers, raw, kind).map_err(|e| (e, source_key))?;
    let mut parsed = parse_request(&decoded, kind).map_err(|e| (e.into(), source_key))?;
    let source = match source.take() {
        Some(source) => source,
        None => {
            let key = parsed.write_key.take().ok_or_else(|| {
                let error = ApiError::new(
                    ErrorCode::MissingWriteKey,
                    "send the write key as the HTTP Basic user (password empty) or as \"writeKey\" in the body",
                );
                (error, None)
            })?;
            resolve(state, &key, peer)?
        }
    };
    if !state.rate_limiter.allow(&source.id) {
        return Err((rate_limited(), None));
    }
    parsed.defaults.client_ip = client_ip;
    store_messages(state, &source, parsed, kind, false).await
}

/// Validates a parsed request's messages, applies the source's tracking plan, and
/// appends what is valid through the group committer; answers once it is durable.
/// The tracking routes and webhook sources share it. With `always_ok` (webhooks),
/// a request none of whose messages was stored is still answered 200 with its
/// `rejected` list (its senders would retry a 400 in vain).
pub(crate) async fn store_messages(
    state: &AppState,
    source: &Source,
    parsed: tessera_core::request::ParsedRequest<'_>,
    kind: BodyKind,
    always_ok: bool,
) -> Result<Response, IngestError> {
    let received_at = state.clock.now();
    let mut validated = parsed.validate(received_at);
    state
        .plans
        .apply(
            &source.id,
            &mut validated,
            received_at.timestamp_millis(),
            &state.metrics,
        )
        .map_err(|e| (ApiError::internal(e), Some(source.key)))?;

    let received_at_ms = received_at.timestamp_millis();
    let mut batch = AppendBatch {
        events: Vec::with_capacity(validated.accepted.len()),
        rejections: Vec::with_capacity(validated.rejected.len()),
    };
    let mut per_type = [0u64; MessageType::ALL.len()];
    // Held until the append returned: an erasure waits for it before it counts on
    // its suppression being in force (see `Privacy::gate`).
    let _screened = state.privacy.gate.read().await;
    let rules = state
        .privacy
        .is_suppressing()
        .then(|| state.processor.compiled_rules());
    for mut message in validated.accepted {
        if let Some(rules) = &rules {
            let body = message
                .body()
                .map_err(|e| (ApiError::internal(e), Some(source.key)))?;
            match state.privacy.screen(rules, &body) {
                Screened::Keep => {}
                Screened::Drop => {
                    state.metrics.suppressed("dropped");
                    continue;
                }
                Screened::Anonymized(body) => {
                    state.metrics.suppressed("anonymized");
                    message.user_id = None;
                    message.anonymous_id = body
                        .get("anonymousId")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    message.payload = serde_json::to_string(&body)
                        .map_err(|e| (ApiError::internal(e), Some(source.key)))?;
                }
            }
        }
        per_type[MessageType::ALL
            .iter()
            .position(|t| *t == message.message_type)
            .unwrap_or(0)] += 1;
        batch.events.push(EventRecord {
            source_key: source.key,
            message_id: message.message_id,
            received_at_ms,
            payload: message.payload,
        });
    }
    let is_single = matches!(kind, BodyKind::Single(_));
    let prefix = |index: usize| {
        if is_single {
            String::new()
        } else {
            format!("batch[{index}]: ")
        }
    };
    let rejected: Vec<Value> = validated
        .rejected
        .iter()
        .map(|(index, r)| json!({"index": index, "code": r.code.as_str(), "message": format!("{}{}", prefix(*index), r.message)}))
        .collect();
    for (index, rejection) in &validated.rejected {
        state.metrics.rejected(rejection.code.as_str());
        batch.rejections.push(rejection_record(
            Some(source.key),
            received_at_ms,
            rejection,
            &prefix(*index),
        ));
    }
    let stored_any = !batch.events.is_empty();
    let first_rejection = validated.rejected.first().map(|(_, r)| r.clone());

    let outcome = if batch.events.is_empty() && batch.rejections.is_empty() {
        Default::default()
    } else {
        state
            .committer
            .append(batch)
            .await
            .map_err(|e| (ApiError::from(e), None))?
    };
    for (count, message_type) in per_type.iter().zip(MessageType::ALL) {
        if *count > 0 {
            state.metrics.accepted(message_type.as_str(), *count);
        }
    }
    state
        .metrics
        .events_duplicate
        .inc_by(outcome.duplicates as u64);
    // `events_accepted` counts acknowledged messages; those already stored before are
    // also counted in `events_duplicate`.

    if !state.plans.violations.is_empty() {
        // Recorded violations reach the catalog at most once a second, off this task.
        let plans = state.plans.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = plans.flush(false) {
                tracing::warn!(%error, "could not store tracking plan violations");
            }
        });
    }
    if let Some(first) = first_rejection.filter(|_| !stored_any && !always_ok) {
        let error = if is_single {
            ApiError::new(first.code, first.message)
        } else {
            ApiError::new(
                ErrorCode::AllMessagesRejected,
                format!(
                    "no message of the batch was valid; the first problem: {}",
                    rejected
                        .first()
                        .and_then(|r| r["message"].as_str())
                        .unwrap_or_default()
                ),
            )
            .with_field("rejected", Value::Array(rejected))
        };
        return Ok(error.into_response());
    }
    let mut body = json!({"success": true});
    if !rejected.is_empty() {
        body["rejected"] = Value::Array(rejected);
    }
    Ok(axum::Json(body).into_response())
}

/// The answer over a key's rate limit.
pub fn rate_limited() -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many requests for this key: retry after the Retry-After seconds (the limit is [limits] in tessera.toml)",
    )
}

fn resolve(
    state: &AppState,
    key: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<Source, IngestError> {
    state.sources.resolve(key).map_err(|e| match e {
        SourceLookupError::User(user) => {
            // A key of no source is a wrong credential; a disabled source's is not.
            if user.code == ErrorCode::InvalidWriteKey {
                state.auth_backoff.failed(peer);
            }
            (user.into(), None)
        }
        SourceLookupError::Store(store) => (ApiError::internal(store), None),
    })
}

fn rejection_record(
    source_key: Option<i64>,
    received_at_ms: i64,
    rejection: &Rejection,
    prefix: &str,
) -> RejectionRecord {
    RejectionRecord {
        source_key,
        received_at_ms,
        code: rejection.code.as_str().to_string(),
        message: format!("{prefix}{}", rejection.message),
        message_type: rejection.message_type.map(|t| t.as_str().to_string()),
        message_id: rejection.message_id.clone(),
    }
}

/// Keeps a request refused as a whole in the rejected-events view, when we know its
/// source (unauthenticated junk is only counted, so it cannot fill the disk).
async fn record_request_rejection(state: &AppState, source_key: i64, error: &ApiError) {
    let rejection = Rejection {
        code: error.code(),
        message: format!("request refused: {}", error.code().description()),
        message_type: None,
        message_id: None,
    };
    let record = rejection_record(
        Some(source_key),
        state.clock.now().timestamp_millis(),
        &rejection,
        "",
    );
    let batch = AppendBatch {
        events: Vec::new(),
        rejections: vec![record],
    };
    if let Err(error) = state.committer.append(batch).await {
        tracing::warn!(%error, "could not record a rejected request");
    }
}

/// The write key from `Authorization: Basic base64(key:)`, if present.
pub(crate) fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_string())
}

fn too_large(kind: BodyKind, size: Option<usize>) -> ApiError {
    let size = size.map_or_else(|| "over 500 KB".to_string(), |s| format!("{s} bytes"));
    match kind {
        BodyKind::Single(t) => ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("{t} message is {size}; the limit is 32 KB"),
        ),
        _ => ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("the body is {size}; the limit is 500 KB: send smaller batches"),
        ),
    }
}

/// Undoes `Content-Encoding: gzip`, refusing other encodings and bodies that inflate
/// beyond the batch limit (a small gzip bomb must not become a large allocation).
fn decode_body(headers: &HeaderMap, raw: Bytes, kind: BodyKind) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            flate2::read::MultiGzDecoder::new(raw.as_ref())
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidGzip,
                        "the body is marked Content-Encoding: gzip but is not valid gzip",
                    )
                })?;
            if inflated.len() > MAX_BATCH_BYTES {
                return Err(too_large(kind, None));
            }
            Ok(Bytes::from(inflated))
        }
        other => Err(ApiError::new(
            ErrorCode::UnsupportedEncoding,
            format!("Content-Encoding {other:?} is not supported: send gzip or no encoding"),
        )),
    }
}

/// Records every request's endpoint and status (a `tower` middleware).
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            endpoint,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
