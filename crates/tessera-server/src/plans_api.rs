//! Tracking plans over HTTP: `/api/v1/sources/{id}/plan` (PUT, GET, DELETE), its
//! recorded violations (`/plan/violations`) and a plan proposed from the source's
//! traffic (`/plan/infer`). The checking itself runs on the ingest path
//! (`tessera_runtime::plans::Plans::apply`).

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_core::{ErrorCode, UserError};
use tessera_runtime::audit::record_audit;
use tessera_runtime::plans::{self, PlanError, violations};
use tessera_runtime::sources::resolve_source;

/// The tracking plan routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/sources/{id}/plan",
            put(set_plan).get(get_plan).delete(delete_plan),
        )
        .route(
            "/api/v1/sources/{id}/plan/violations",
            get(get_violations).delete(clear_violations),
        )
        .route("/api/v1/sources/{id}/plan/infer", post(infer))
}

fn not_found(source_id: &str) -> ApiError {
    ApiError::coded(PlanError::User(UserError::new(
        ErrorCode::TrackingPlanNotFound,
        format!(
            "source {source_id} has no tracking plan: PUT one, or propose one with POST …/plan/infer"
        ),
    )))
}

async fn set_plan(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let plan = plans::parse_plan(&body)?;
    plans::set_plan(state.catalog.as_ref(), &source.id, &plan)?;
    state.plans.invalidate();
    let summary = json!({"mode": plan["mode"], "events": plan.get("events").and_then(Value::as_object).map_or(0, |e| e.len())});
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.plan.set",
        &source.id,
        None,
        Some(&summary),
    );
    Ok(Json(json!({"sourceId": source.id, "plan": plan})))
}

async fn get_plan(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let plan =
        plans::plan(state.catalog.as_ref(), &source.id)?.ok_or_else(|| not_found(&source.id))?;
    Ok(Json(json!({"sourceId": source.id, "plan": plan})))
}

async fn delete_plan(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    if !plans::delete_plan(state.catalog.as_ref(), &source.id)? {
        return Err(not_found(&source.id));
    }
    state.plans.invalidate();
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.plan.delete",
        &source.id,
        None,
        None,
    );
    Ok(Json(json!({"sourceId": source.id, "deleted": true})))
}

async fn get_violations(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let plans = state.plans.clone();
    let catalog = state.catalog.clone();
    let source_id = source.id.clone();
    let stored = tokio::task::spawn_blocking(move || {
        plans.flush(true)?;
        violations::stored(catalog.as_ref(), &source_id)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(violations::report(&source.id, &stored)))
}

async fn clear_violations(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    state.plans.flush(true).map_err(ApiError::internal)?;
    let cleared =
        violations::clear(state.catalog.as_ref(), &source.id).map_err(ApiError::internal)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "source.plan.violations.clear",
        &source.id,
        None,
        None,
    );
    Ok(Json(json!({"sourceId": source.id, "cleared": cleared})))
}

#[derive(Deserialize)]
struct InferQuery {
    since: Option<String>,
}

async fn infer(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    query: Result<Query<InferQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "\"since\" must be a duration such as 7d, 24h or 30m",
        )
    })?;
    let source = resolve_source(state.catalog.as_ref(), &id)?;
    let since = plans::infer::parse_since(query.since.as_deref().unwrap_or("7d"))?;
    let since_ms = state.clock.now().timestamp_millis() - since.as_millis() as i64;
    let events = state.events.clone();
    let proposal = tokio::task::spawn_blocking(move || {
        plans::infer::propose(events.as_ref(), source.key, since_ms)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"sourceId": id, "scanned": proposal.scanned, "plan": proposal.plan}),
    ))
}
