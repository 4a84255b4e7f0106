//! Audiences, computed traits, RFM settings and insights over the admin API.
//!
//! `/api/v1/audiences` (CRUD, members, preview, change feed),
//! `/api/v1/computed-traits`, `/api/v1/rfm`, `/api/v1/insights/top`. Definitions
//! are accepted as the text form or as JSON; errors point at the place in the text.

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tessera_audience::ast::Duration;
use tessera_audience::computed::ComputedTrait;
use tessera_audience::engine::{AudienceDefinition, AudienceEngine, EngineError, TopQuery};
use tessera_audience::language::parse_definition;
use tessera_audience::rfm::RfmConfig;
use tessera_core::ErrorCode;
use tessera_core::time::format_millis;
use tessera_runtime::audit::record_audit;
use tessera_store::audiences::StoredChange;

/// The audience routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audiences", get(list).post(create))
        .route("/api/v1/audiences/preview", post(preview))
        .route("/api/v1/audiences/changes", get(changes))
        .route(
            "/api/v1/audiences/{key}",
            get(show).put(update).patch(update).delete(delete),
        )
        .route("/api/v1/audiences/{key}/members", get(members))
        .route("/api/v1/computed-traits", get(list_computed))
        .route(
            "/api/v1/computed-traits/{key}",
            get(show_computed).put(put_computed).delete(delete_computed),
        )
        .route("/api/v1/rfm", get(get_rfm).put(put_rfm))
        .route("/api/v1/insights/top", get(top))
}

/// `503 audiences_loading` until the index is built after start.
pub(crate) fn ready(engine: &AudienceEngine) -> Result<(), ApiError> {
    if engine.is_ready() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::AudiencesLoading,
            "the audience index is still loading after start; retry after the Retry-After seconds",
        ))
    }
}

fn body<T: DeserializeOwned>(bytes: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("{e}; send {shape}")))
}

/// A definition in a request: the text form as a string, or the JSON form.
fn definition_text(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Object(_) => Ok(value.to_string()),
        _ => Err(ApiError::new(
            ErrorCode::InvalidDefinition,
            "\"definition\" must be the text form (a string) or the JSON form (an object)",
        )),
    }
}

/// Adds `warnings` to an answer when a definition names events, traits or
/// properties never seen in the data (each with the closest observed name).
pub fn with_warnings(
    mut answer: Value,
    warnings: &[tessera_audience::names::NameWarning],
) -> Value {
    if !warnings.is_empty()
        && let Value::Object(map) = &mut answer
    {
        map.insert("warnings".into(), json!(warnings));
    }
    answer
}

/// An audience's definition as the audit log keeps it.
fn definition_json(audience: &AudienceDefinition) -> Value {
    json!({"key": audience.key, "name": audience.name, "description": audience.description,
           "definition": audience.text()})
}

fn audience_json(engine: &AudienceEngine, audience: &AudienceDefinition) -> Value {
    json!({
        "key": audience.key,
        "name": audience.name,
        "description": audience.description,
        "definition": audience.text(),
        "condition": audience.condition,
        "createdAt": format_millis(audience.created_at_ms),
        "updatedAt": format_millis(audience.updated_at_ms),
        "status": engine.status(&audience.key),
    })
}

async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let engine = &state.audiences;
    let audiences: Vec<Value> = engine
        .list()
        .map_err(ApiError::from)?
        .iter()
        .map(|a| audience_json(engine, a))
        .collect();
    Ok(Json(json!({ "audiences": audiences })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    definition: Value,
}

const CREATE_SHAPE: &str = r#"{"key": "cart-abandoners", "name": "...", "definition": "event \"Product Added\" within 7d and not event \"Order Completed\" within 7d"}"#;

async fn create(
    State(state): State<AppState>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = body(&bytes, CREATE_SHAPE)?;
    let text = definition_text(&request.definition)?;
    let engine = &state.audiences;
    let audience = engine
        .create(&request.key, &request.name, &request.description, &text)
        .map_err(ApiError::from)?;
    let after = definition_json(&audience);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "audience.create",
        &audience.key,
        None,
        Some(&after),
    );
    let warnings = engine.unknown_names(&audience.condition);
    let answer = with_warnings(audience_json(engine, &audience), &warnings);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let engine = &state.audiences;
    let audience = engine.get(&key).map_err(ApiError::from)?;
    Ok(Json(audience_json(engine, &audience)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    name: Option<String>,
    description: Option<String>,
    definition: Option<Value>,
}

async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: UpdateRequest = body(&bytes, r#"{"name": "...", "definition": "..."}"#)?;
    let text = request
        .definition
        .as_ref()
        .map(definition_text)
        .transpose()?;
    let engine = &state.audiences;
    let before = engine.get(&key).ok().map(|a| definition_json(&a));
    let audience = engine
        .update(
            &key,
            request.name.as_deref(),
            request.description.as_deref(),
            text.as_deref(),
        )
        .map_err(ApiError::from)?;
    let after = definition_json(&audience);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "audience.update",
        &key,
        before.as_ref(),
        Some(&after),
    );
    let warnings = if text.is_some() {
        engine.unknown_names(&audience.condition)
    } else {
        Vec::new()
    };
    Ok(Json(with_warnings(
        audience_json(engine, &audience),
        &warnings,
    )))
}

async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let before = state.audiences.get(&key).ok().map(|a| definition_json(&a));
    // Destinations and journeys naming it would point at nothing.
    let destinations = state.activation.destinations();
    let journeys = state.activation.journeys();
    let users = tessera_activation::references::audience_users(
        &key,
        destinations.iter().map(|d| d.as_ref()),
        journeys.iter().map(|j| &j.journey),
    );
    if !users.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidDefinition,
            tessera_activation::references::audience_in_use(&key, &users),
        ));
    }
    let audit_key = key.clone();
    let engine = std::sync::Arc::clone(&state.audiences);
    let report = tokio::task::spawn_blocking(move || engine.delete(&key))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "audience.delete",
        &audit_key,
        before.as_ref(),
        None,
    );
    Ok(Json(json!({"deleted": true, "exited": report.exited})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<i64>,
    limit: Option<usize>,
    audience: Option<String>,
}

fn page(query: Result<Query<PageQuery>, QueryRejection>) -> Result<(PageQuery, usize), ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; use ?after=N&limit=N"),
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be from 1 to 10000",
        ));
    }
    Ok((query, limit))
}

async fn members(
    State(state): State<AppState>,
    _: Admin,
    Path(key): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (query, limit) = page(query)?;
    let engine = &state.audiences;
    engine.get(&key).map_err(ApiError::from)?;
    let members = engine
        .members(&key, query.after.unwrap_or(i64::MIN), limit)
        .map_err(ApiError::from)?;
    let next = (members.len() == limit).then(|| members.last().map(|m| m.profile_id));
    let items: Vec<Value> = members
        .iter()
        .map(|m| json!({"profileId": m.profile_id, "since": format_millis(m.since_ms)}))
        .collect();
    Ok(Json(json!({"members": items, "nextAfter": next.flatten()})))
}

/// A membership change as the Segment track event activation consumes.
pub fn change_event(change: &StoredChange) -> Value {
    let c = &change.change;
    json!({
        "seq": change.seq,
        "type": "track",
        "event": if c.entered { "Audience Entered" } else { "Audience Exited" },
        "profileId": c.profile_id,
        "timestamp": format_millis(c.at_ms),
        "properties": {"audience_key": c.audience, "reason": c.reason},
        "context": {"personas": {"computation_key": c.audience, "computation_class": "audience"}},
    })
}

async fn changes(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (query, limit) = page(query)?;
    let changes = state
        .audiences
        .changes(query.after.unwrap_or(0), query.audience.as_deref(), limit)
        .map_err(ApiError::from)?;
    let next = changes.last().map(|c| c.seq);
    let events: Vec<Value> = changes.iter().map(change_event).collect();
    Ok(Json(json!({"events": events, "nextAfter": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    definition: Value,
    #[serde(default = "default_sample")]
    sample: usize,
}

fn default_sample() -> usize {
    10
}

async fn preview(
    State(state): State<AppState>,
    _: Admin,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: PreviewRequest = body(&bytes, r#"{"definition": "trait plan = \"pro\""}"#)?;
    if request.sample > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"sample\" must be at most 100",
        ));
    }
    ready(&state.audiences)?;
    let text = definition_text(&request.definition)?;
    let engine = std::sync::Arc::clone(&state.audiences);
    let condition = engine
        .check_definition(&text, None)
        .map_err(ApiError::from)?;
    let warnings = engine.unknown_names(&condition);
    let started = std::time::Instant::now();
    let preview = tokio::task::spawn_blocking(move || engine.preview(&condition, request.sample))
        .await
        .map_err(ApiError::internal)?;
    let answer = json!({
        "count": preview.count,
        "sample": preview.sample,
        "definition": parse_definition(&text).map(|c| c.to_string()).unwrap_or_default(),
        "tookMs": started.elapsed().as_secs_f64() * 1000.0,
    });
    Ok(Json(with_warnings(answer, &warnings)))
}

async fn list_computed(State(state): State<AppState>, _: Admin) -> Json<Value> {
    Json(json!({"computedTraits": state.audiences.computed_traits()}))
}

fn computed_not_found(key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ComputedTraitNotFound,
        format!("no computed trait \"{key}\" (GET /api/v1/computed-traits lists them)"),
    )
}

async fn show_computed(
    State(state): State<AppState>,
    _: Admin,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .audiences
        .computed_traits()
        .into_iter()
        .find(|c| c.key == key)
        .map(|c| Json(json!(c)))
        .ok_or_else(|| computed_not_found(&key))
}

async fn put_computed(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut value: Value = body(
        &bytes,
        r#"{"aggregate": "sum", "event": "Order Completed", "property": "revenue", "window": "30d"}"#,
    )?;
    if let Value::Object(map) = &mut value {
        map.insert("key".into(), Value::String(key));
    }
    let definition: ComputedTrait = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidDefinition,
            format!("computed trait: {e} (aggregate is one of count, sum, avg, min, max, first, last, most_frequent, unique_list, first_seen, last_seen)"),
        )
    })?;
    let before = state
        .audiences
        .computed_traits()
        .into_iter()
        .find(|c| c.key == definition.key)
        .map(|c| json!(c));
    state
        .audiences
        .save_computed(&definition)
        .map_err(ApiError::from)?;
    let after = json!(definition);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "computed_trait.put",
        &definition.key,
        before.as_ref(),
        Some(&after),
    );
    Ok(Json(after))
}

async fn delete_computed(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.audiences.delete_computed(&key).map_err(|e| match e {
        EngineError::NotFound(_) => computed_not_found(&key),
        other => ApiError::from(other),
    })?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "computed_trait.delete",
        &key,
        None,
        None,
    );
    Ok(Json(json!({"deleted": true})))
}

async fn get_rfm(State(state): State<AppState>, _: Admin) -> Json<Value> {
    Json(json!(state.audiences.rfm_config()))
}

async fn put_rfm(
    State(state): State<AppState>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let config: RfmConfig = body(
        &bytes,
        r#"{"event": "Order Completed", "revenue_property": "revenue", "window": "365d"}"#,
    )?;
    let before = json!(state.audiences.rfm_config());
    state
        .audiences
        .set_rfm_config(&config)
        .map_err(ApiError::from)?;
    let after = json!(config);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "rfm.update",
        "rfm",
        Some(&before),
        Some(&after),
    );
    Ok(Json(after))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopRequest {
    event: String,
    property: String,
    #[serde(rename = "where")]
    filter: Option<String>,
    by: Option<String>,
    within: Option<String>,
    limit: Option<usize>,
}

async fn top(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<TopRequest>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(request) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; use ?event=Order%20Completed&property=category&by=country&where=...&within=30d&limit=10"),
        )
    })?;
    ready(&state.audiences)?;
    let filter = request
        .filter
        .as_deref()
        .map(|text| state.audiences.check_definition(text, None))
        .transpose()
        .map_err(ApiError::from)?;
    let within = request
        .within
        .as_deref()
        .map(Duration::parse)
        .transpose()
        .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, format!("\"within\": {m}")))?;
    let limit = request.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be from 1 to 1000",
        ));
    }
    let engine = &state.audiences;
    let mut warnings: Vec<_> = [
        engine.unknown_event(&request.event),
        engine.unknown_property(&request.property),
        request
            .by
            .as_deref()
            .and_then(|by| engine.unknown_trait(by)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(filter) = &filter {
        warnings.extend(engine.unknown_names(filter));
    }
    let query = TopQuery {
        event: request.event,
        property: request.property,
        filter,
        group_by: request.by,
        within,
        limit,
    };
    let engine = std::sync::Arc::clone(&state.audiences);
    let rows = tokio::task::spawn_blocking(move || engine.top(&query))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(with_warnings(json!({"rows": rows}), &warnings)))
}
