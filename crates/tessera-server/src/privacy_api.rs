//! The privacy API (admin scope): access exports, erasures and consent.
//!
//! - `POST /api/v1/privacy/exports` `{"identifier": "email:ada@example.com"}` → the
//!   access document (see [`tessera_runtime::privacy::export_document`]).
//! - `POST /api/v1/privacy/erasures` `{"identifier": "…"}` → `202 {"id", "status"}`;
//!   `GET /api/v1/privacy/erasures/{id}` → its progress (`pending`, `running`,
//!   `completed`, `failed`) and, once completed, what was removed (counts only).
//! - `POST /api/v1/privacy/consent` `{"identifier": "…", "purposes": {"marketing":
//!   false}}` → records the decision as a `Consent Preference Updated` event in the
//!   log (so replay keeps it), answered `202 {"messageId"}`.

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tessera_core::{ErrorCode, ids};
use tessera_identity::identifiers::Identifier;
use tessera_identity::suggestions::INTERNAL_SOURCE_KEY;
use tessera_runtime::audit::record_audit;
use tessera_runtime::privacy::{
    PrivacyStores, export_document, parse_identifier, record_export, request_erasure, request_json,
};
use tessera_store::{AppendBatch, EventRecord, PrivacyRequestKind};

/// The privacy routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/privacy/exports", post(export))
        .route("/api/v1/privacy/erasures", post(erase))
        .route("/api/v1/privacy/erasures/{id}", get(erasure_status))
        .route("/api/v1/privacy/consent", post(consent))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifierRequest {
    identifier: String,
}

fn identifier_of(state: &AppState, body: &Bytes) -> Result<Identifier, ApiError> {
    let request: IdentifierRequest = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send {\"identifier\": \"type:value\"}, e.g. {\"identifier\": \"email:ada@example.com\"}",
        )
    })?;
    Ok(parse_identifier(
        &state.processor.compiled_rules(),
        &request.identifier,
    )?)
}

fn audit_subject(state: &AppState, identifier: &Identifier) -> String {
    format!(
        "{}:salted-sha256:{}",
        identifier.id_type,
        state.privacy.hash(identifier)
    )
}

async fn export(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let identifier = identifier_of(&state, &body)?;
    let request_id = ids::new_privacy_request_id();
    let worker = state.clone();
    let id = request_id.clone();
    let wanted = identifier.clone();
    let document = tokio::task::spawn_blocking(move || {
        let stores = PrivacyStores {
            log: worker.events.as_ref(),
            profiles: worker.profiles.as_ref(),
            audiences: worker.audiences.store(),
            catalog: worker.catalog.as_ref(),
            activation: worker.activation.store(),
        };
        let engine = &worker.audiences;
        let computed = |profile| engine.computed_values(profile);
        let computed: Option<&dyn Fn(i64) -> Map<String, Value>> =
            engine.is_ready().then_some(&computed);
        export_document(&stores, &wanted, &id, computed)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let found = document.is_some();
    let privacy = std::sync::Arc::clone(&state.privacy);
    let actor = admin.actor.clone();
    let id = request_id.clone();
    let subject = identifier.clone();
    tokio::task::spawn_blocking(move || record_export(&privacy, &subject, &actor, &id, found))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    document.map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProfileNotFound,
            format!(
                "no profile holds the {} identifier given: Tessera keeps no data about it",
                identifier.id_type
            ),
        )
    })
}

async fn erase(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let identifier = identifier_of(&state, &body)?;
    let privacy = std::sync::Arc::clone(&state.privacy);
    let actor = admin.actor.clone();
    let request =
        tokio::task::spawn_blocking(move || request_erasure(&privacy, &identifier, &actor))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    state.privacy.wake();
    Ok((StatusCode::ACCEPTED, Json(request_json(&request))))
}

async fn erasure_status(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .catalog
        .privacy_request(&id)
        .map_err(ApiError::internal)?
        .filter(|r| r.kind == PrivacyRequestKind::Erasure)
        .map(|r| Json(request_json(&r)))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PrivacyRequestNotFound,
                "no erasure request has that id (ids look like prq_…)",
            )
        })
}

/// The answer when a request would store an erased person's identifier again.
pub fn erased_error() -> ApiError {
    ApiError::new(
        ErrorCode::IdentifierErased,
        "the identifier belongs to an erased person: Tessera keeps nothing about them and stores nothing new",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    identifier: String,
    purposes: Map<String, Value>,
    /// Event time of the decision (RFC 3339); now when absent.
    timestamp: Option<String>,
}

async fn consent(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: ConsentRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send {\"identifier\": \"email:ada@example.com\", \"purposes\": {\"marketing\": false}}",
        )
    })?;
    let identifier = parse_identifier(&state.processor.compiled_rules(), &request.identifier)?;
    let allowed = &state.privacy.config().purposes;
    let mut preferences = Map::new();
    for (purpose, granted) in &request.purposes {
        let purpose = purpose.trim().to_lowercase();
        if !allowed.contains(&purpose) {
            return Err(ApiError::new(
                ErrorCode::UnknownPurpose,
                format!(
                    "{purpose:?} is not a configured purpose; the purposes are {} ([privacy] purposes in tessera.toml)",
                    allowed.join(", ")
                ),
            ));
        }
        let Some(granted) = granted.as_bool() else {
            return Err(ApiError::new(
                ErrorCode::InvalidFieldType,
                format!("purposes.{purpose} must be true (granted) or false (refused)"),
            ));
        };
        preferences.insert(purpose, Value::Bool(granted));
    }
    if preferences.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "purposes is empty: name at least one purpose, e.g. {\"marketing\": false}",
        ));
    }
    let received = chrono::Utc::now();
    let timestamp = match &request.timestamp {
        Some(text) => tessera_core::time::parse_timestamp(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidTimestamp,
                "timestamp must be an ISO-8601 / RFC 3339 time, e.g. 2026-11-23T10:00:00Z",
            )
        })?,
        None => received,
    };
    // The message names the person by an identifier the processor resolves; user and
    // anonymous ids go where Segment puts them, other types in context.externalIds.
    let mut message = json!({
        "type": "track",
        "event": "Consent Preference Updated",
        "messageId": ids::new_message_id(),
        "timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "receivedAt": received.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "properties": {},
        "context": {
            "consent": {"categoryPreferences": preferences},
            "library": {"name": "tessera-privacy-api"},
        },
    });
    match identifier.id_type.as_str() {
        "user_id" => message["userId"] = json!(identifier.value),
        "anonymous_id" => message["anonymousId"] = json!(identifier.value),
        // Like an applied merge: no user or anonymous id, nothing new to link.
        _ => {
            message["context"]["externalIds"] = json!([{
                "id": identifier.value, "type": identifier.id_type,
                "collection": "users", "encoding": "none",
            }]);
        }
    }
    let message_id = message["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let payload = message.to_string();
    let _screened = state.privacy.gate.read().await;
    if state
        .privacy
        .carries_erased(&state.processor.compiled_rules(), &payload)
    {
        return Err(erased_error());
    }
    state
        .committer
        .append(AppendBatch {
            events: vec![EventRecord {
                source_key: INTERNAL_SOURCE_KEY,
                message_id: message_id.clone(),
                received_at_ms: received.timestamp_millis(),
                payload,
            }],
            rejections: vec![],
        })
        .await
        .map_err(ApiError::from)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "privacy.consent",
        &audit_subject(&state, &identifier),
        None,
        Some(&json!({"purposes": preferences, "messageId": message_id})),
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"messageId": message_id, "purposes": preferences})),
    ))
}
