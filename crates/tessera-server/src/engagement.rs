//! Engagement of Tessera's own emails (no credentials: the signed token is the
//! proof):
//!
//! - `GET /e/o/{token}.gif` — the open pixel: records `Email Opened`, answers a
//!   transparent 1×1 GIF.
//! - `GET /e/c/{token}` — a tracked link: records `Email Link Clicked`, answers
//!   `302` to the link's URL.
//!
//! A token that does not verify (changed, forged, another server's, the other
//! route's) is answered `400 invalid_engagement_token` — never a redirect. The
//! events go through the committer like any tracked event (durable when
//! acknowledged, screened for erased identifiers), from the internal source, naming
//! the recipient by an identifier of the profile the email was sent to, with the
//! properties `journey`, `destination`, `messageId` (the delivery id) and, for
//! clicks, `url`. Their `messageId` is derived from the token, so a pixel loaded ten
//! times or a link clicked twice is one event (within the de-duplication window).

use crate::AppState;
use crate::api_error::ApiError;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tessera_activation::engagement::{Kind, Token};
use tessera_core::ErrorCode;
use tessera_identity::suggestions::INTERNAL_SOURCE_KEY;
use tessera_store::{AppendBatch, EventRecord};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The engagement routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/e/o/{token}", get(opened))
        .route("/e/c/{token}", get(clicked))
}

fn refused(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidEngagementToken,
        format!("{error}; use a link exactly as an email from this Tessera holds it"),
    )
}

fn verify(state: &AppState, text: &str, kind: Kind) -> Result<Token, ApiError> {
    let engagement = state.activation.engagement().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidEngagementToken,
            "engagement tracking is off on this server ([http] public_url is not set)",
        )
    })?;
    engagement.verify(text, kind).map_err(refused)
}

async fn opened(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(text) = token.strip_suffix(".gif") else {
        return refused("the open pixel's address ends in .gif").into_response();
    };
    let token = match verify(&state, text, Kind::Open) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    record(&state, &token, text).await;
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            ),
        ],
        PIXEL,
    )
        .into_response()
}

async fn clicked(State(state): State<AppState>, Path(text): Path<String>) -> Response {
    let token = match verify(&state, &text, Kind::Click) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    // Verified: the URL is the one Tessera signed, http(s) and free of controls.
    let Some(location) = token
        .url
        .as_deref()
        .and_then(|url| HeaderValue::from_str(url).ok())
    else {
        return refused("the link's address cannot be sent back").into_response();
    };
    record(&state, &token, &text).await;
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            ),
        ],
    )
        .into_response()
}

/// Appends the event; a failure is logged, never shown to the recipient (the pixel
/// still loads, the link still leads on).
async fn record(state: &AppState, token: &Token, text: &str) {
    let kind = match token.kind {
        Kind::Open => "open",
        Kind::Click => "click",
    };
    let message = match message(state, token, text).await {
        Ok(Some(message)) => message,
        Ok(None) => {
            tracing::info!(
                kind,
                delivery = token.delivery,
                "email engagement not recorded: the recipient's profile is gone"
            );
            return;
        }
        Err(error) => {
            tracing::warn!(kind, delivery = token.delivery, error = %error.message(), "email engagement not recorded");
            return;
        }
    };
    let message_id = message["messageId"].as_str().unwrap_or_default().to_owned();
    let payload = message.to_string();
    let _screened = state.privacy.gate.read().await;
    if state
        .privacy
        .carries_erased(&state.processor.compiled_rules(), &payload)
    {
        return;
    }
    let appended = state
        .committer
        .append(AppendBatch {
            events: vec![EventRecord {
                source_key: INTERNAL_SOURCE_KEY,
                message_id,
                received_at_ms: chrono::Utc::now().timestamp_millis(),
                payload,
            }],
            rejections: vec![],
        })
        .await;
    if let Err(error) = appended {
        tracing::warn!(kind, delivery = token.delivery, error = %error, "email engagement not recorded");
    }
}

/// The track message for a verified token, naming the recipient by an identifier of
/// the profile the email went to (`None` when that profile no longer exists).
async fn message(state: &AppState, token: &Token, text: &str) -> Result<Option<Value>, ApiError> {
    let Some(profile) = token.profile else {
        return Ok(None);
    };
    let profiles = std::sync::Arc::clone(&state.profiles);
    let identities = tokio::task::spawn_blocking(move || {
        let mut id = profile;
        // Follow merges to the surviving profile (bounded: chains are short).
        for _ in 0..16 {
            match profiles.profile(id)? {
                Some(summary) => match summary.merged_into {
                    Some(winner) if winner != id => id = winner,
                    _ => return Ok(Some(profiles.identities(id)?)),
                },
                None => return Ok(None),
            }
        }
        Ok::<_, tessera_store::StoreError>(None)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let Some(identities) = identities else {
        return Ok(None);
    };
    let pick = |t: &str| identities.iter().find(|l| l.id_type == t);
    let Some(identity) = pick("user_id")
        .or_else(|| pick("anonymous_id"))
        .or_else(|| identities.first())
    else {
        return Ok(None);
    };
    let (event, key) = match token.kind {
        Kind::Open => ("Email Opened", "open"),
        Kind::Click => ("Email Link Clicked", "click"),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut properties = json!({
        "destination": token.destination,
        "journey": token.journey,
        "messageId": token.delivery.to_string(),
    });
    if let Some(url) = &token.url {
        properties["url"] = json!(url);
    }
    let mut message = json!({
        "type": "track",
        "event": event,
        // One event per pixel or link of a delivery: repeats are de-duplicated.
        "messageId": format!("email-{key}-{}", &tessera_core::ids::hash_secret(text)[..32]),
        "timestamp": now,
        "receivedAt": now,
        "properties": properties,
        "context": {"library": {"name": "tessera-email-engagement"}},
    });
    match identity.id_type.as_str() {
        "user_id" => message["userId"] = json!(identity.value),
        "anonymous_id" => message["anonymousId"] = json!(identity.value),
        _ => {
            message["context"]["externalIds"] = json!([{
                "id": identity.value, "type": identity.id_type,
                "collection": "users", "encoding": "none",
            }]);
        }
    }
    Ok(Some(message))
}
