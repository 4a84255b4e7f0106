//! Tessera's HTTP edge: the Segment-compatible Tracking API, the admin API,
//! `/healthz`, `/metrics` and `/api/openapi.json`, over the group-committing ingest
//! pipeline.
//!
//! [`router`] builds the whole application from an [`AppState`] without a socket, so
//! tests drive it with `tower::ServiceExt::oneshot`; the binary serves it through
//! [`connections::serve`], the listener with limits.

pub mod activation_api;
pub mod admin;
pub mod api_error;
pub mod audiences;
pub mod auth_backoff;
pub mod connections;
pub mod engagement;
pub mod http_errors;
pub mod insights_api;
pub mod plans_api;
pub mod privacy_api;
pub mod profiles;
pub mod rate_limit;
pub mod tracking;
pub mod web_sdk;
pub mod webhooks;

use crate::api_error::ApiError;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tessera_audience::engine::AudienceEngine;
use tessera_core::ErrorCode;
use tessera_core::time::Clock;
use tessera_identity::processor::Processor;
use tessera_runtime::committer::Committer;
use tessera_runtime::metrics::Metrics;
use tessera_runtime::sources::SourceResolver;
use tessera_store::profiles::ProfileStore;
use tessera_store::{Catalog, EventLog};

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The event log (reads; writes go through `committer`).
    pub events: Arc<dyn EventLog>,
    /// Profiles and the identity graph (derived state).
    pub profiles: Arc<dyn ProfileStore>,
    /// The processor (identity rules, unlink).
    pub processor: Arc<Processor>,
    /// Sources and settings.
    pub catalog: Arc<dyn Catalog>,
    /// The group-committing writer.
    pub committer: Committer,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Write key to source, cached.
    pub sources: Arc<SourceResolver>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: String,
    /// The clock (`receivedAt`).
    pub clock: Arc<dyn Clock>,
    /// Computed traits, audiences and their memberships.
    pub audiences: Arc<AudienceEngine>,
    /// Per-key request limits.
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    /// Suppression of erased identifiers, privacy configuration.
    pub privacy: Arc<tessera_runtime::privacy::Privacy>,
    /// Destinations, the outbox, journeys.
    pub activation: Arc<tessera_activation::Activation>,
    /// Deadlines and permits of request bodies (see [`connections`]).
    pub bodies: Arc<connections::BodyGate>,
    /// Failed authentications per client (see [`auth_backoff`]).
    pub auth_backoff: Arc<auth_backoff::AuthBackoff>,
    /// SHA-256 of the token `/metrics` requires (`None`: `/metrics` is open).
    pub metrics_token_hash: Option<String>,
    /// Where browsers reach Tessera (see [`web_sdk`]).
    pub web_sdk: Arc<web_sdk::WebSdkConfig>,
    /// Webhook sources and their compiled configurations, cached.
    pub webhooks: Arc<tessera_runtime::webhooks::WebhookSources>,
    /// Tracking plans, compiled and cached per source, and their violations.
    pub plans: Arc<tessera_runtime::plans::Plans>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tracking::router())
        .merge(web_sdk::router())
        .merge(admin::router())
        .merge(profiles::router())
        .merge(audiences::router())
        .merge(insights_api::router())
        .merge(privacy_api::router())
        .merge(activation_api::router())
        .merge(engagement::router())
        .merge(webhooks::router())
        .merge(plans_api::router())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(api_error::json_rejections))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tracking::count_requests,
        ))
        .with_state(state)
}

/// `ok`; 503 `failed` once the event log failed an fsync (a supervisor should
/// restart us); 503 `degraded` while its writes fail (a full disk: it recovers by
/// itself once a write succeeds).
async fn healthz(State(state): State<AppState>) -> Response {
    if state.committer.log_failed() {
        let body = serde_json::json!({
            "status": "failed",
            "code": ErrorCode::EventLogFailed.as_str(),
            "message": "an fsync of the event log failed: restart Tessera, which recovers the log from disk",
        });
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        )
            .into_response();
    }
    if let Some(degraded) = state.committer.degraded() {
        let since = chrono::DateTime::from_timestamp_millis(degraded.since_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let body = serde_json::json!({
            "status": "degraded",
            "code": ErrorCode::StorageUnavailable.as_str(),
            "reason": degraded.reason,
            "since": since,
            "message": if degraded.reason == "disk_full" {
                "the disk holding the data directory is full: ingest answers 503 until there is room again (Tessera retries by itself)"
            } else {
                "writes to the event log fail: ingest answers 503 until one succeeds (Tessera retries by itself); see the log"
            },
        });
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `/metrics`, behind `Authorization: Bearer <metrics token>` (or the admin token) when
/// a metrics token is configured.
async fn metrics(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.metrics_token_hash {
        let client = auth_backoff::client_ip(request.extensions());
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let missing = || {
            ApiError::new(
                ErrorCode::InvalidMetricsToken,
                "/metrics needs \"Authorization: Bearer <token>\" with the metrics token ([metrics] token, TESSERA_METRICS_TOKEN) or the admin token",
            )
        };
        let Some(presented) = presented else {
            return Err(missing());
        };
        state.auth_backoff.check(client)?;
        let hash = tessera_core::ids::hash_secret(presented);
        if &hash != expected && hash != state.admin_token_hash {
            state.auth_backoff.failed(client);
            return Err(missing());
        }
    }
    Ok(render_metrics(&state).into_response())
}

fn render_metrics(state: &AppState) -> impl IntoResponse {
    // The lag as of now, not as of the processor's last chunk: a reader waiting for
    // "everything acknowledged is applied" must not see a stale 0.
    if let Ok(lag) = state.processor.lag() {
        state.metrics.processor_lag.set(lag);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The OpenAPI 3.1 description of every route, kept beside this crate's manifest; a
/// test (`tests/openapi.rs`) fails when it and the routers disagree.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /api/openapi.json`: [`OPENAPI_JSON`], without authentication.
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint: see docs/API.md for the routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that HTTP method (tracking endpoints take POST)",
    )
}
