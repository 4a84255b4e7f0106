//! SMS destinations through an HTTP gateway (Twilio's form API by default).

use super::{Attempt, Clients, Overrides, classify, transport_error};
use crate::config::SmsSettings;
use crate::render::{RenderError, render_text};
use serde_json::{Value, json};
use std::time::Duration;
use tessera_store::activation::Delivery;

/// What an SMS destination stores in the outbox for one event.
pub(super) fn render(
    settings: &SmsSettings,
    overrides: &Overrides<'_>,
    context: &Value,
) -> Result<Value, RenderError> {
    let to = overrides.recipient(
        settings.to.as_deref(),
        "{{ traits.phone }}",
        context,
        "the person has no phone number (traits.phone)",
    )?;
    Ok(json!({
        "to": to,
        "body": render_text(&overrides.text("body", Some(&settings.body)).unwrap_or_default(), context)?,
    }))
}

/// Sends one delivery.
pub(super) async fn send(
    clients: &Clients,
    settings: &SmsSettings,
    delivery: &Delivery,
    payload: &Value,
    timeout: Duration,
) -> Attempt {
    let form = [
        (
            "To",
            payload.get("to").and_then(Value::as_str).unwrap_or(""),
        ),
        ("From", settings.from.as_str()),
        (
            "Body",
            payload.get("body").and_then(Value::as_str).unwrap_or(""),
        ),
    ];
    let mut request = clients
        .http
        .post(&settings.url)
        .timeout(timeout)
        .header("Idempotency-Key", &delivery.new.idempotency_key)
        .header("I-Twilio-Idempotency-Token", &delivery.new.idempotency_key)
        .form(&form);
    if let Some(user) = &settings.username {
        request = request.basic_auth(user, settings.password.as_ref());
    }
    match request.send().await {
        Ok(response) => classify(response.status(), response.headers()),
        Err(error) => transport_error(&error),
    }
}
