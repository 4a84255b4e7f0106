//! The activation API (admin scope): destinations, the delivery outbox, journeys.
//!
//! - `POST /api/v1/destinations`, `GET /api/v1/destinations`,
//!   `GET|PUT|DELETE /api/v1/destinations/{id}` — definitions with their delivery
//!   counts; secrets (webhook secret, SMTP/SMS passwords, CRM token) are never shown.
//! - `GET /api/v1/deliveries?destination=&status=&profileId=&after=&limit=` — the
//!   outbox, dead letters included; `POST /api/v1/deliveries/retry`
//!   `{"destination": "…"}` or `{"ids": […]}` — dead deliveries back to pending.
//! - `POST /api/v1/journeys`, `GET /api/v1/journeys`,
//!   `GET|PUT|DELETE /api/v1/journeys/{key}`; `GET /api/v1/profiles/{id}/journeys` —
//!   a person's runs with their history.

use crate::AppState;
use crate::admin::Admin;
use crate::api_error::ApiError;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_activation::config::{Destination, Journey};
use tessera_activation::delivery::payload_json;
use tessera_activation::{ActivationError, run_json};
use tessera_core::ErrorCode;
use tessera_runtime::audit::record_audit;
use tessera_store::activation::{Delivery, DeliveryFilter, DeliveryStatus};

/// The activation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/destinations",
            post(create_destination).get(list_destinations),
        )
        .route(
            "/api/v1/destinations/{id}",
            get(show_destination)
                .put(update_destination)
                .delete(delete_destination),
        )
        .route("/api/v1/deliveries", get(list_deliveries))
        .route("/api/v1/deliveries/retry", post(retry_deliveries))
        .route("/api/v1/journeys", post(create_journey).get(list_journeys))
        .route(
            "/api/v1/journeys/{key}",
            get(show_journey).put(update_journey).delete(delete_journey),
        )
        .route("/api/v1/profiles/{id}/journeys", get(profile_journeys))
}

/// Runs a definition change off the async runtime (it writes the catalog).
async fn change<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Arc<tessera_activation::Activation>) -> Result<T, ActivationError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let activation = Arc::clone(&state.activation);
    tokio::task::spawn_blocking(move || work(&activation))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

fn body<T: DeserializeOwned>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidActivation,
            format!("{e}; send a {what} definition as JSON (see docs/activation.md)"),
        )
    })
}

/// A definition without its secrets.
pub fn redacted(destination: &Destination) -> Value {
    let mut value = serde_json::to_value(destination).unwrap_or(Value::Null);
    if let Some(settings) = value.get_mut("settings").and_then(Value::as_object_mut) {
        for secret in ["secret", "password", "token"] {
            if settings.get(secret).is_some_and(|v| !v.is_null()) {
                settings.insert(secret.into(), json!("***"));
            }
        }
        // Custom headers usually carry credentials (Authorization, X-Api-Key).
        if let Some(headers) = settings.get_mut("headers").and_then(Value::as_object_mut) {
            for value in headers.values_mut() {
                *value = json!("***");
            }
        }
    }
    value
}

fn destination_json(state: &AppState, destination: &Destination) -> Result<Value, ApiError> {
    let mut value = redacted(destination);
    let mut counts = serde_json::Map::new();
    for status in DeliveryStatus::ALL {
        counts.insert(status.as_str().into(), json!(0));
    }
    for (status, n) in state
        .activation
        .store()
        .counts(&destination.id)
        .map_err(ApiError::internal)?
    {
        counts.insert(status.as_str().into(), json!(n));
    }
    value["deliveries"] = Value::Object(counts);
    Ok(value)
}

async fn create_destination(
    State(state): State<AppState>,
    admin: Admin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let destination: Destination = body(&bytes, "destination")?;
    let saved = destination.clone();
    change(&state, move |a| a.save_destination(saved, true)).await?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "destination.create",
        &destination.id,
        None,
        Some(&redacted(&destination)),
    );
    Ok((
        StatusCode::CREATED,
        Json(destination_json(&state, &destination)?),
    ))
}

async fn list_destinations(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Value>, ApiError> {
    let all: Result<Vec<Value>, ApiError> = state
        .activation
        .destinations()
        .iter()
        .map(|d| destination_json(&state, d))
        .collect();
    Ok(Json(json!({ "destinations": all? })))
}

fn find_destination(state: &AppState, id: &str) -> Result<Arc<Destination>, ApiError> {
    state.activation.destination(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::DestinationNotFound,
            format!("no destination has the id {id:?}"),
        )
    })
}

async fn show_destination(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let destination = find_destination(&state, &id)?;
    Ok(Json(destination_json(&state, &destination)?))
}

async fn update_destination(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut destination: Destination = body(&bytes, "destination")?;
    if destination.id != id {
        return Err(ApiError::new(
            ErrorCode::InvalidActivation,
            format!(
                "the body's id {:?} differs from the path's {id:?}",
                destination.id
            ),
        ));
    }
    // Secrets shown as *** are kept as they were.
    let previous = find_destination(&state, &id)?;
    keep_secrets(&mut destination, &previous)?;
    let saved = destination.clone();
    change(&state, move |a| a.save_destination(saved, false)).await?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "destination.update",
        &id,
        Some(&redacted(&previous)),
        Some(&redacted(&destination)),
    );
    Ok(Json(destination_json(&state, &destination)?))
}

/// Puts the stored secrets back where the update shows them masked (`"***"`) —
/// refused when the destination now sends somewhere else (another scheme, host or
/// port), which would hand the stored secret to that place.
fn keep_secrets(next: &mut Destination, previous: &Destination) -> Result<(), ApiError> {
    let (Ok(mut value), Ok(before)) =
        (serde_json::to_value(&*next), serde_json::to_value(previous))
    else {
        return Ok(());
    };
    let mut kept: Vec<String> = Vec::new();
    if let (Some(settings), Some(old)) = (
        value.get_mut("settings").and_then(Value::as_object_mut),
        before.get("settings").and_then(Value::as_object),
    ) {
        for secret in ["secret", "password", "token"] {
            if settings.get(secret).and_then(Value::as_str) == Some("***")
                && let Some(old) = old.get(secret)
            {
                settings.insert(secret.into(), old.clone());
                kept.push(format!("settings.{secret}"));
            }
        }
        let old_headers = old.get("headers").and_then(Value::as_object).cloned();
        if let (Some(headers), Some(old_headers)) = (
            settings.get_mut("headers").and_then(Value::as_object_mut),
            old_headers,
        ) {
            for (name, value) in headers.iter_mut() {
                if value.as_str() == Some("***")
                    && let Some(old) = old_headers.get(name)
                {
                    *value = old.clone();
                    kept.push(format!("settings.headers.{name}"));
                }
            }
        }
    }
    if !kept.is_empty() {
        let (before, after) = (previous.kind.secret_target(), next.kind.secret_target());
        if before.is_none() || before != after {
            return Err(ApiError::new(
                ErrorCode::SecretRequired,
                format!(
                    "{} {} masked (\"***\") but the destination now sends to {}: send the secret itself again",
                    kept.join(", "),
                    if kept.len() == 1 { "is" } else { "are" },
                    after.as_deref().unwrap_or("another place"),
                ),
            ));
        }
    }
    if let Ok(restored) = serde_json::from_value(value) {
        *next = restored;
    }
    Ok(())
}

async fn delete_destination(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = id.clone();
    let previous = change(&state, move |a| a.delete_destination(&key)).await?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "destination.delete",
        &id,
        Some(&redacted(&previous)),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeliveryQuery {
    destination: Option<String>,
    status: Option<String>,
    profile_id: Option<i64>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// A delivery as the API shows it.
pub fn delivery_json(d: &Delivery) -> Value {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    json!({
        "id": d.id,
        "destination": d.new.destination,
        "profileId": d.new.profile_id,
        "idempotencyKey": d.new.idempotency_key,
        "channel": d.new.channel,
        "purpose": d.new.purpose,
        "status": d.new.status.as_str(),
        "reason": d.new.reason,
        "journey": d.new.journey,
        "attempts": d.attempts,
        "nextAttemptAt": (d.new.status == DeliveryStatus::Pending).then(|| at(d.next_attempt_ms)).flatten(),
        "lastError": d.last_error,
        "createdAt": at(d.created_ms),
        "deliveredAt": d.delivered_ms.and_then(at),
        "payload": payload_json(d),
    })
}

async fn list_deliveries(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; parameters: destination, status, profileId, after, limit"),
        )
    })?;
    let status = match &query.status {
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "status is one of pending, delivered, dead, blocked",
            )
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "limit must be between 1 and 1000",
        ));
    }
    let filter = DeliveryFilter {
        destination: query.destination,
        status,
        profile_id: query.profile_id,
        after_id: query.after.unwrap_or(0),
        limit,
    };
    let activation = Arc::clone(&state.activation);
    let rows = tokio::task::spawn_blocking(move || activation.store().deliveries(&filter))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    Ok(Json(json!({
        "deliveries": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "nextAfter": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    destination: Option<String>,
    #[serde(default)]
    ids: Vec<i64>,
}

async fn retry_deliveries(
    State(state): State<AppState>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RetryRequest = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send {\"destination\": \"id\"} (all its dead deliveries) or {\"ids\": [1, 2]}",
        )
    })?;
    if request.destination.is_none() && request.ids.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name a destination or the delivery ids to retry",
        ));
    }
    if let Some(id) = &request.destination {
        find_destination(&state, id)?;
    }
    let activation = Arc::clone(&state.activation);
    let (destination, ids) = (request.destination.clone(), request.ids.clone());
    let retried = tokio::task::spawn_blocking(move || {
        let n = activation.store().retry_dead(
            destination.as_deref(),
            &ids,
            chrono::Utc::now().timestamp_millis(),
        )?;
        for d in activation.destinations() {
            activation.wake_destination(&d.id);
        }
        Ok::<_, tessera_store::StoreError>(n)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "deliveries.retry",
        request.destination.as_deref().unwrap_or("ids"),
        None,
        Some(&json!({"ids": request.ids, "retried": retried})),
    );
    Ok(Json(json!({ "retried": retried })))
}

fn journey_json(state: &AppState, journey: &Journey) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(journey).unwrap_or(Value::Null);
    let mut runs = serde_json::Map::new();
    for s in ["active", "completed", "exited"] {
        runs.insert(s.into(), json!(0));
    }
    for (s, n) in state
        .activation
        .store()
        .run_counts(&journey.key)
        .map_err(ApiError::internal)?
    {
        runs.insert(s, json!(n));
    }
    value["runs"] = Value::Object(runs);
    Ok(value)
}

async fn create_journey(
    State(state): State<AppState>,
    admin: Admin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let journey: Journey = body(&bytes, "journey")?;
    let saved = journey.clone();
    // Unknown audiences, computed traits and destinations are refused by the save.
    let saved = change(&state, move |a| a.save_journey(saved, true)).await?;
    let after = serde_json::to_value(&journey).unwrap_or(Value::Null);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "journey.create",
        &journey.key,
        None,
        Some(&after),
    );
    let answer = crate::audiences::with_warnings(journey_json(&state, &journey)?, &saved.warnings);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list_journeys(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let all: Result<Vec<Value>, ApiError> = state
        .activation
        .journeys()
        .iter()
        .map(|j| journey_json(&state, &j.journey))
        .collect();
    Ok(Json(json!({ "journeys": all? })))
}

async fn show_journey(
    State(state): State<AppState>,
    _: Admin,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let journey = state.activation.journey(&key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::JourneyNotFound,
            format!("no journey has the key {key:?}"),
        )
    })?;
    Ok(Json(journey_json(&state, &journey.journey)?))
}

async fn update_journey(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let journey: Journey = body(&bytes, "journey")?;
    if journey.key != key {
        return Err(ApiError::new(
            ErrorCode::InvalidActivation,
            format!(
                "the body's key {:?} differs from the path's {key:?}",
                journey.key
            ),
        ));
    }
    let saved = journey.clone();
    let saved = change(&state, move |a| a.save_journey(saved, false)).await?;
    let before = saved
        .previous
        .map(|p| serde_json::to_value(&p.journey).unwrap_or(Value::Null));
    let after = serde_json::to_value(&journey).unwrap_or(Value::Null);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "journey.update",
        &key,
        before.as_ref(),
        Some(&after),
    );
    let answer = crate::audiences::with_warnings(journey_json(&state, &journey)?, &saved.warnings);
    Ok(Json(answer))
}

async fn delete_journey(
    State(state): State<AppState>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let k = key.clone();
    let previous = change(&state, move |a| a.delete_journey(&k)).await?;
    let before = serde_json::to_value(&previous.journey).unwrap_or(Value::Null);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "journey.delete",
        &key,
        Some(&before),
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn profile_journeys(
    State(state): State<AppState>,
    _: crate::admin::ProfileReader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "the profile id is a number (find it with GET /api/v1/profiles?identifier=type:value)",
        )
    })?;
    let canonical = state
        .profiles
        .profile(id)
        .map_err(ApiError::internal)?
        .map(|p| p.merged_into.unwrap_or(p.id))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ProfileNotFound,
                format!("no profile has the id {id}"),
            )
        })?;
    let mut ids = vec![canonical];
    ids.extend(
        state
            .profiles
            .merged_members(canonical)
            .map_err(ApiError::internal)?,
    );
    let mut runs = Vec::new();
    for profile in ids {
        runs.extend(
            state
                .activation
                .store()
                .profile_runs(profile)
                .map_err(ApiError::internal)?,
        );
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(Json(json!({
        "profileId": canonical,
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
    })))
}
