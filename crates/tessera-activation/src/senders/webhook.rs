//! Webhook destinations: a JSON POST (one event, or a batch), signed with
//! `X-Tessera-Signature` when the destination has a secret.

use super::{Attempt, Clients, Overrides, classify, transport_error};
use crate::config::WebhookSettings;
use crate::render::{RenderError, render_text};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use tessera_store::activation::Delivery;

/// What a webhook destination stores in the outbox for one event.
pub(super) fn render(
    settings: &WebhookSettings,
    overrides: &Overrides<'_>,
    context: &Value,
    message: &Value,
) -> Result<Value, RenderError> {
    let body = match overrides.text("template", settings.template.as_deref()) {
        Some(template) => {
            let text = render_text(&template, context)?;
            serde_json::from_str(&text).map_err(|e| {
                RenderError::Failed(format!("the webhook template did not produce JSON: {e}"))
            })?
        }
        None => message.clone(),
    };
    Ok(json!({ "body": body }))
}

/// Sends a group of deliveries: one event as it is, several as `{"batch": […]}`
/// (each with its idempotency key); one result for the whole request.
pub(super) async fn send(
    clients: &Clients,
    settings: &WebhookSettings,
    group: &[Delivery],
    payloads: &[Value],
    timeout: Duration,
) -> Attempt {
    let (body, key) = if group.len() == 1 {
        (
            payloads[0].get("body").cloned().unwrap_or(Value::Null),
            group[0].new.idempotency_key.clone(),
        )
    } else {
        let items: Vec<Value> = group
            .iter()
            .zip(payloads)
            .map(
                |(d, p)| json!({"idempotencyKey": d.new.idempotency_key, "payload": p.get("body")}),
            )
            .collect();
        let keys: Vec<&str> = group
            .iter()
            .map(|d| d.new.idempotency_key.as_str())
            .collect();
        (
            json!({ "batch": items }),
            tessera_core::ids::hash_secret(&keys.join(",")),
        )
    };
    let bytes = body.to_string().into_bytes();
    let mut request = clients
        .http
        .post(&settings.url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", key);
    for (name, value) in &settings.headers {
        if let Some(value) = value.as_str() {
            request = request.header(name.as_str(), value);
        }
    }
    if let Some(secret) = &settings.secret {
        let now = chrono::Utc::now().timestamp();
        request = request.header("X-Tessera-Signature", signature(secret, now, &bytes));
    }
    match request.body(bytes).send().await {
        Ok(response) => classify(response.status(), response.headers()),
        Err(error) => transport_error(&error),
    }
}

/// `X-Tessera-Signature` for a body: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stable_hmacs() {
        let sig = signature("s3cret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }
}
