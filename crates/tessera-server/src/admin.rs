//! The admin API under `/api/v1`: sources, scoped API tokens and the
//! rejected-events view, and the extractors that check tokens.
//!
//! A request carries a token as `Authorization: Bearer <token>` (or as the HTTP Basic
//! user, as Segment's Profile API does). Tokens are compared by their SHA-256 hash,
//! the only form Tessera keeps. The admin token (`TESSERA_ADMIN_TOKEN`) may do
//! everything; API tokens carry scopes: `admin` (every admin route) or
//! `read:profiles` (the profile read routes). Write keys are the `write:<source>`
//! credentials of the tracking API. An unknown or revoked token gets 401
//! `invalid_admin_token`; a valid token without the scope gets 403
//! `insufficient_scope`.

use crate::AppState;
use crate::api_error::ApiError;
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
use tessera_core::ids::{hash_secret, new_api_token, new_token_id};
use tessera_core::time::format_millis;
use tessera_runtime::audit::record_audit;
use tessera_runtime::sources::{create_source, disable_source};
use tessera_store::{ApiToken, NewApiToken, Source};

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sources", post(create).get(list))
        .route("/api/v1/sources/{id}/disable", post(disable))
        .route("/api/v1/tokens", post(create_token_route).get(list_tokens))
        .route("/api/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/rejections", get(rejections))
}

/// Proof that the request carried the admin token or a token with the `admin` scope,
/// and who it is, for the audit log.
pub struct Admin {
    /// `admin-token` or `token:tok_…`.
    pub actor: String,
}

/// Proof that the request may read profiles: the admin token, or a token with the
/// `admin` or `read:profiles` scope.
pub struct ProfileReader;

/// Scopes an API token may carry.
pub const SCOPES: [&str; 2] = ["admin", "read:profiles"];

/// The token of a request: `Authorization: Bearer <token>` or the HTTP Basic user.
fn presented_token(parts: &Parts) -> Option<String> {
    parts
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
        })
}

/// Checks that the request's token grants one of `accepted` scopes (the admin token
/// grants all).
fn authorize(parts: &Parts, state: &AppState, accepted: &[&str]) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidAdminToken,
            "send the admin token or an API token as \"Authorization: Bearer <token>\" (TESSERA_ADMIN_TOKEN, the token printed on first start, or one from POST /api/v1/tokens)",
        )
    };
    let token = presented_token(parts).ok_or_else(invalid)?;
    // A client that presented too many wrong credentials waits, unchecked.
    let client = crate::auth_backoff::client_ip(&parts.extensions);
    state.auth_backoff.check(client)?;
    let hash = hash_secret(&token);
    if hash == state.admin_token_hash {
        return Ok("admin-token".to_owned());
    }
    let found = state
        .catalog
        .token_by_hash(&hash)
        .map_err(ApiError::internal)?;
    if found.as_ref().is_none_or(|t| t.revoked_at_ms.is_some()) {
        state.auth_backoff.failed(client);
    }
    match found {
        Some(token) if token.revoked_at_ms.is_none() => {
            if token.scopes.iter().any(|s| accepted.contains(&s.as_str())) {
                Ok(format!("token:{}", token.id))
            } else {
                Err(ApiError::new(
                    ErrorCode::InsufficientScope,
                    format!(
                        "token {} has scopes [{}]; this endpoint needs one of [{}]",
                        token.id,
                        token.scopes.join(", "),
                        accepted.join(", ")
                    ),
                ))
            }
        }
        _ => Err(invalid()),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = authorize(parts, state, &["admin"])?;
        if !state.rate_limiter.allow(&actor) {
            return Err(crate::tracking::rate_limited());
        }
        Ok(Admin { actor })
    }
}

impl FromRequestParts<AppState> for ProfileReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = authorize(parts, state, &["admin", "read:profiles"])?;
        if !state.rate_limiter.allow(&actor) {
            return Err(crate::tracking::rate_limited());
        }
        Ok(ProfileReader)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    action: Option<String>,
    limit: Option<usize>,
}

async fn audit(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; use ?after=N&action=audience.&limit=100"),
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be from 1 to 1000",
        ));
    }
    let entries = state
        .catalog
        .audit_entries(query.after.unwrap_or(0), query.action.as_deref(), limit)
        .map_err(ApiError::internal)?;
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "at": format_millis(e.at_ms), "actor": e.actor, "action": e.action,
                "target": e.target, "before": parse(&e.before), "after": parse(&e.after),
            })
        })
        .collect();
    let next = entries.last().map(|e| e.id);
    Ok(Json(json!({"entries": items, "nextAfter": next})))
}

/// The public JSON form of an API token (never its secret).
pub fn token_json(token: &ApiToken) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "scopes": token.scopes,
        "prefix": token.prefix,
        "createdAt": format_millis(token.created_at_ms),
        "revokedAt": token.revoked_at_ms.map(format_millis),
        "parent": token.parent_id,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    scopes: Vec<String>,
}

/// Creates a scoped API token; the secret is in the answer only. `parent` is the API
/// token that asks (`None`: the admin token or the CLI): revoking it revokes this one.
pub fn create_token(
    catalog: &dyn tessera_store::Catalog,
    name: &str,
    scopes: &[String],
    parent: Option<&str>,
) -> Result<(ApiToken, String), ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"name\" must be 1 to 200 characters",
        ));
    }
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "\"scopes\" must be a non-empty list of [{}] (write keys, the write:<source> credentials, come with sources)",
                SCOPES.join(", ")
            ),
        ));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let secret = new_api_token();
    let token = ApiToken {
        id: new_token_id(),
        name: name.to_owned(),
        scopes,
        prefix: secret.chars().take(8).collect(),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        revoked_at_ms: None,
        parent_id: parent.map(str::to_owned),
    };
    catalog
        .create_token(&NewApiToken {
            token: token.clone(),
            secret_hash: hash_secret(&secret),
        })
        .map_err(|e| match e {
            tessera_store::StoreError::NotFound(_) => ApiError::new(
                ErrorCode::InvalidAdminToken,
                "the token making this request was revoked meanwhile; no token was created",
            ),
            other => ApiError::internal(other),
        })?;
    Ok((token, secret))
}

async fn create_token_route(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; send {{\"name\": \"support desk\", \"scopes\": [\"read:profiles\"]}}"),
        )
    })?;
    let parent = admin.actor.strip_prefix("token:");
    let (token, secret) = create_token(
        state.catalog.as_ref(),
        &request.name,
        &request.scopes,
        parent,
    )?;
    let mut body = token_json(&token);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "token.create",
        &token.id,
        None,
        Some(&body),
    );
    body["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_tokens(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let tokens: Vec<Value> = state
        .catalog
        .list_tokens()
        .map_err(ApiError::internal)?
        .iter()
        .map(token_json)
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

async fn revoke_token(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state
        .catalog
        .revoke_token(&id, chrono::Utc::now().timestamp_millis())
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TokenNotFound,
                format!("no API token has the id {id:?} (GET /api/v1/tokens lists them)"),
            )
        })?;
    let token = revoked.token;
    let mut body = token_json(&token);
    body["revokedDescendants"] = json!(revoked.descendants);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "token.revoke",
        &token.id,
        None,
        Some(&body),
    );
    Ok(Json(body))
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

#[derive(Deserialize)]
struct CreateSource {
    name: Option<Value>,
}

async fn create(
    State(state): State<AppState>,
    admin: Admin,
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
    let created = create_source(state.catalog.as_ref(), &name).map_err(ApiError::from)?;
    state.sources.invalidate();
    let mut body = source_json(&created.source);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.create",
        &created.source.id,
        None,
        Some(&body),
    );
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
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = disable_source(state.catalog.as_ref(), &id).map_err(ApiError::from)?;
    state.sources.invalidate();
    let body = source_json(&source);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.disable",
        &source.id,
        None,
        Some(&body),
    );
    Ok(Json(body))
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
