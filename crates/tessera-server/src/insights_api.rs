//! Trends, funnels and retention over the admin API:
//! `GET`/`POST /api/v1/insights/{trends,funnels,retention}`.
//!
//! `POST` takes the request as a JSON body; `GET` takes the same fields as query
//! parameters, list fields repeated (`?series=A&series=B`, `?steps=A&steps=B`).
//! Answers are JSON, or CSV with `Accept: text/csv` or `format=csv`. The work runs
//! on a blocking thread under the audience index's read lock (see
//! [`tessera_audience::insights`]). A funnel `POST` with `saveDropped` also creates
//! an audience of the people who dropped at a step (`201`, audited as
//! `audience.create`).

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use crate::audiences::with_warnings;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tessera_audience::analytics::{answer, save_dropped};
use tessera_audience::insights::InsightRequest;
use tessera_audience::insights::funnels::FunnelRequest;
use tessera_audience::insights::retention::RetentionRequest;
use tessera_audience::insights::trends::TrendsRequest;
use tessera_core::ErrorCode;
use tessera_runtime::audit::record_audit;

/// The insight routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/insights/trends", get(trends_get).post(trends_post))
        .route(
            "/api/v1/insights/funnels",
            get(funnels_get).post(funnels_post),
        )
        .route(
            "/api/v1/insights/retention",
            get(retention_get).post(retention_post),
        )
}

/// Query parameters as the JSON object the request types read: `lists` fields
/// collect repeated parameters, `numbers` fields are read as integers.
fn query_object<T: DeserializeOwned>(
    pairs: Vec<(String, String)>,
    lists: &[&str],
    numbers: &[&str],
    example: &str,
) -> Result<T, ApiError> {
    let mut object = Map::new();
    for (key, value) in pairs {
        if lists.contains(&key.as_str()) {
            if let Value::Array(items) = object
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                items.push(Value::String(value));
            }
            continue;
        }
        let parsed = if numbers.contains(&key.as_str()) {
            value
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        if object.insert(key.clone(), parsed).is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidInsight,
                format!(
                    "\"{key}\" is given twice; only {} may repeat",
                    lists.join(", ")
                ),
            ));
        }
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInsight,
            format!("{e}; use e.g. {example}"),
        )
    })
}

fn body<T: DeserializeOwned>(bytes: &Bytes, example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInsight,
            format!("{e}; send e.g. {example}"),
        )
    })
}

fn pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::new(ErrorCode::InvalidInsight, e.to_string()))
}

/// Whether the client asked for CSV (`format=csv`, or `Accept: text/csv`).
fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format.map(str::trim) {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidInsight,
            format!("\"format\" is \"{other}\": use json or csv"),
        )),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv"))),
    }
}

/// Runs a request on a blocking thread and answers it as JSON or CSV.
async fn respond<R>(state: &AppState, headers: &HeaderMap, request: R) -> Result<Response, ApiError>
where
    R: InsightRequest + Send + 'static,
    R::Answer: Send,
{
    crate::audiences::ready(&state.audiences)?;
    let csv = wants_csv(request.format(), headers)?;
    let engine = Arc::clone(&state.audiences);
    let (answered, table) = tokio::task::spawn_blocking(move || {
        answer(&engine, &request).map(|a| {
            let table = csv.then(|| R::table(&a.answer));
            (a, table)
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)?;
    Ok(match table {
        Some(table) => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            table.csv(),
        )
            .into_response(),
        None => {
            let json = serde_json::to_value(&answered.answer).map_err(ApiError::internal)?;
            axum::Json(with_warnings(json, &answered.warnings)).into_response()
        }
    })
}

const TRENDS_EXAMPLE: &str = r#"{"series": ["Order Completed"], "from": "2026-03-01", "to": "2026-03-31", "interval": "day"}"#;
const FUNNELS_EXAMPLE: &str = r#"{"steps": ["Product Added", "Order Completed"], "window": "7d", "from": "2026-03-01", "to": "2026-03-31"}"#;
const RETENTION_EXAMPLE: &str =
    r#"{"start": "Signed Up", "return": "Order Completed", "interval": "week", "periods": 8}"#;

async fn trends_get(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request: TrendsRequest = query_object(
        pairs(query)?,
        &["series"],
        &["limit"],
        "?series=Order%20Completed&from=2026-03-01&to=2026-03-31&interval=day",
    )?;
    respond(&state, &headers, request).await
}

async fn trends_post(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: TrendsRequest = body(&bytes, TRENDS_EXAMPLE)?;
    respond(&state, &headers, request).await
}

async fn funnels_get(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request: FunnelRequest = query_object(
        pairs(query)?,
        &["steps"],
        &["limit"],
        "?steps=Product%20Added&steps=Order%20Completed&window=7d",
    )?;
    respond(&state, &headers, request).await
}

async fn funnels_post(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: FunnelRequest = body(&bytes, FUNNELS_EXAMPLE)?;
    let Some(save) = request.save_dropped.clone() else {
        return respond(&state, &headers, request).await;
    };
    crate::audiences::ready(&state.audiences)?;
    if wants_csv(request.format.as_deref(), &headers)? {
        return Err(ApiError::new(
            ErrorCode::InvalidInsight,
            "\"saveDropped\" is answered as JSON (the funnel and the new audience): leave out format=csv",
        ));
    }
    let engine = Arc::clone(&state.audiences);
    let saved = tokio::task::spawn_blocking(move || save_dropped(&engine, &request))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    let audience = &saved.audience;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "audience.create",
        &audience.key,
        None,
        Some(&json!({"key": audience.key, "name": audience.name,
                     "description": audience.description, "definition": audience.text()})),
    );
    let mut answer = serde_json::to_value(&saved.answer).map_err(ApiError::internal)?;
    if let Value::Object(map) = &mut answer {
        map.insert(
            "savedAudience".into(),
            json!({"key": audience.key, "name": audience.name, "step": save.step,
                   "people": saved.members, "description": audience.description}),
        );
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(with_warnings(answer, &saved.warnings)),
    )
        .into_response())
}

async fn retention_get(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request: RetentionRequest = query_object(
        pairs(query)?,
        &[],
        &["periods"],
        "?start=Signed%20Up&return=Order%20Completed&interval=week&periods=8",
    )?;
    respond(&state, &headers, request).await
}

async fn retention_post(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: RetentionRequest = body(&bytes, RETENTION_EXAMPLE)?;
    respond(&state, &headers, request).await
}
