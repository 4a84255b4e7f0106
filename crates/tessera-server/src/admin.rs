//! The admin API under `/api/v1`: sources and the rejected-events view.
//!
//! Every route needs `Authorization: Bearer <admin token>`; the token is compared by
//! its SHA-256 hash, the only form Tessera keeps.

use crate::AppState;
use crate::api_error::ApiError;
use crate::sources::{SourceError, create_source, disable_source};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use tessera_core::ErrorCode;
use tessera_core::ids::hash_secret;
use tessera_core::time::format_millis;
use tessera_store::Source;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sources", post(create).get(list))
        .route("/api/v1/sources/{id}/disable", post(disable))
        .route("/api/v1/rejections", get(rejections))
}

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, credentials)| {
                if scheme.eq_ignore_ascii_case("bearer") {
                    Some(credentials.trim().to_string())
                } else if scheme.eq_ignore_ascii_case("basic") {
                    // Segment's Profile API takes its token as the Basic user.
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(credentials.trim())
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    Some(
                        text.split_once(':')
                            .map_or(text.clone(), |(user, _)| user.to_string()),
                    )
                } else {
                    None
                }
            });
        match token {
            Some(token) if hash_secret(&token) == state.admin_token_hash => Ok(Admin),
            _ => Err(ApiError::new(
                ErrorCode::InvalidAdminToken,
                "send the admin token as \"Authorization: Bearer <token>\" (TESSERA_ADMIN_TOKEN, or the token printed on first start)",
            )),
        }
    }
}

/// The public JSON form of a source.
pub fn source_json(source: &Source) -> Value {
    json!({
        "id": source.id,
        "name": source.name,
        "enabled": source.enabled,
        "createdAt": format_millis(source.created_at_ms),
        "writeKeyPrefix": source.write_key_prefix,
    })
}

fn source_error(error: SourceError) -> ApiError {
    match error {
        SourceError::User(user) => user.into(),
        SourceError::Store(store) => ApiError::internal(store),
    }
}

#[derive(Deserialize)]
struct CreateSource {
    name: Option<Value>,
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateSource = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            "send a JSON object such as {\"name\": \"web\"}",
        )
    })?;
    let Some(Value::String(name)) = request.name else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"name\" (a string) is required",
        ));
    };
    let created = create_source(state.catalog.as_ref(), &name).map_err(source_error)?;
    state.sources.invalidate();
    let mut body = source_json(&created.source);
    body["writeKey"] = Value::String(created.write_key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let sources = state.catalog.list_sources().map_err(ApiError::internal)?;
    Ok(Json(
        json!({"sources": sources.iter().map(source_json).collect::<Vec<_>>()}),
    ))
}

async fn disable(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = disable_source(state.catalog.as_ref(), &id).map_err(source_error)?;
    state.sources.invalidate();
    Ok(Json(source_json(&source)))
}

#[derive(Deserialize)]
struct RejectionsQuery {
    limit: Option<usize>,
}

async fn rejections(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<RejectionsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be a number from 1 to 1000",
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be a number from 1 to 1000",
        ));
    }
    let stored = state
        .events
        .recent_rejections(limit)
        .map_err(ApiError::internal)?;
    let source_ids: HashMap<i64, String> = state
        .catalog
        .list_sources()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|s| (s.key, s.id))
        .collect();
    let items: Vec<Value> = stored
        .into_iter()
        .map(|r| {
            json!({
                "receivedAt": format_millis(r.record.received_at_ms),
                "sourceId": r.record.source_key.and_then(|k| source_ids.get(&k).cloned()),
                "code": r.record.code,
                "message": r.record.message,
                "type": r.record.message_type,
                "messageId": r.record.message_id,
            })
        })
        .collect();
    Ok(Json(json!({"rejections": items})))
}
