//! Webhook sources over HTTP: `POST /v1/webhooks/{sourceId}` takes a third party's
//! webhook, and `/api/v1/sources/{id}/webhook` configures a source for it.
//!
//! The handler is thin: it reads the raw body (up to 256 KB, within the body
//! deadline), lets `tessera_runtime::webhooks::handle` check the signature and map
//! the payload, and hands the messages to the same path as `/v1/batch` (validation,
//! tracking plan, group committer, dedup by `messageId`, answer once durable). A bad
//! signature is 401 `invalid_webhook_signature`, counted in
//! `tessera_webhooks_total{outcome="invalid_webhook_signature"}`.

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use crate::tracking::IngestError;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use bytes::Bytes;
use serde_json::{Value, json};
use tessera_core::ErrorCode;
use tessera_core::request::{BodyKind, parse_request};
use tessera_runtime::audit::record_audit;
use tessera_runtime::sources::resolve_source;
use tessera_runtime::webhooks::{
    self, MAX_WEBHOOK_BODY_BYTES, WebhookError, WebhookHeaders, WebhookOutcome,
};

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/{source_id}", post(receive))
        .route(
            "/api/v1/sources/{id}/webhook",
            put(set_config).get(get_config).delete(delete_config),
        )
}

async fn receive(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    request: Request,
) -> Response {
    let peer = crate::auth_backoff::client_ip(request.extensions());
    let mut preset = "unknown";
    let result = receive_inner(&state, &source_id, request, peer, &mut preset).await;
    match result {
        Ok((outcome, response)) => {
            state.metrics.webhook(preset, outcome);
            response
        }
        Err((error, _)) => {
            let code = error.code();
            state.metrics.webhook(preset, code.as_str());
            state.metrics.rejected(code.as_str());
            if code == ErrorCode::InvalidWebhookSignature {
                state.auth_backoff.failed(peer);
            }
            error.into_response()
        }
    }
}

async fn receive_inner(
    state: &AppState,
    source_id: &str,
    request: Request,
    peer: Option<std::net::IpAddr>,
    preset: &mut &'static str,
) -> Result<(&'static str, Response), IngestError> {
    state.auth_backoff.check(peer).map_err(|e| (e, None))?;
    let found = state
        .webhooks
        .resolve(source_id)
        .map_err(|e| (ApiError::from(e), None))?;
    let (source, config) = (&found.0, &found.1);
    *preset = config.preset.as_str();
    if !state.rate_limiter.allow(&source.id) {
        return Err((crate::tracking::rate_limited(), None));
    }
    // Anyone may send to a source id: read only so many unverified bodies at once.
    let _permit = state.bodies.keyless.try_acquire().map_err(|_| {
        let error = ApiError::new(
            ErrorCode::Overloaded,
            "too many webhook bodies are being read: retry shortly",
        );
        (error, None)
    })?;
    let (parts, body) = request.into_parts();
    let raw = match tokio::time::timeout(
        state.bodies.timeout,
        axum::body::to_bytes(body, MAX_WEBHOOK_BODY_BYTES + 1),
    )
    .await
    {
        Ok(Ok(raw)) => raw,
        Ok(Err(_)) => {
            let error = ApiError::new(
                ErrorCode::WebhookBodyTooLarge,
                format!("the webhook body is over {MAX_WEBHOOK_BODY_BYTES} bytes"),
            );
            return Err((error, None));
        }
        Err(_) => {
            let error = ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the body did not arrive within {} ms",
                    state.bodies.timeout.as_millis()
                ),
            );
            return Err((error, None));
        }
    };
    state.metrics.request_bytes.inc_by(raw.len() as u64);
    let headers = WebhookHeaders::new(
        parts
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    );
    let outcome = webhooks::handle(&source.id, config, &headers, &raw, state.clock.now())
        .map_err(|e| (ApiError::from(e), None))?;
    let messages = match outcome {
        WebhookOutcome::Ping => {
            return Ok((
                "ping",
                Json(json!({"success": true, "ping": true})).into_response(),
            ));
        }
        WebhookOutcome::Messages(messages) => messages,
    };
    let batch = serde_json::to_vec(&json!({"batch": messages}))
        .map_err(|e| (ApiError::internal(e), Some(source.key)))?;
    let parsed = parse_request(&batch, BodyKind::Batch)
        .map_err(|e| (ApiError::from(e), Some(source.key)))?;
    let response =
        crate::tracking::store_messages(state, source, parsed, BodyKind::Batch, true).await?;
    Ok(("stored", response))
}

async fn set_config(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let config = webhooks::parse_config(&body)?;
    webhooks::set_config(state.catalog.as_ref(), &source, &config)?;
    state.webhooks.invalidate();
    let shown = config.public_json(&source.id);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.webhook.set",
        &source.id,
        None,
        Some(&shown),
    );
    Ok(Json(shown))
}

fn not_configured() -> ApiError {
    ApiError::coded(WebhookError::User(tessera_core::UserError::new(
        ErrorCode::WebhookNotConfigured,
        "this source has no webhook configuration: PUT one with {\"preset\", \"secret\"}",
    )))
}

async fn get_config(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let config =
        webhooks::config(state.catalog.as_ref(), &source.id)?.ok_or_else(not_configured)?;
    Ok(Json(config.public_json(&source.id)))
}

async fn delete_config(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    if !webhooks::delete_config(state.catalog.as_ref(), &source.id)? {
        return Err(not_configured());
    }
    state.webhooks.invalidate();
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.webhook.delete",
        &source.id,
        None,
        None,
    );
    Ok(Json(json!({"sourceId": source.id, "deleted": true})))
}
