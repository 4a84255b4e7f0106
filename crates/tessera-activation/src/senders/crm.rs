//! CRM destinations: upserts of mapped traits, never those the CRM owns or sent.

use super::{Attempt, Clients, classify, transport_error};
use crate::config::CrmSettings;
use crate::render::RenderError;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tessera_store::activation::Delivery;

/// Sends one delivery.
pub(super) async fn send(
    clients: &Clients,
    settings: &CrmSettings,
    delivery: &Delivery,
    payload: &Value,
    timeout: Duration,
) -> Attempt {
    let id = payload.get("id").cloned().unwrap_or(Value::Null);
    let properties = payload.get("properties").cloned().unwrap_or(Value::Null);
    let base = settings.url.trim_end_matches('/');
    let request = if settings.shape == "hubspot" {
        clients
            .http
            .post(format!("{base}/crm/v3/objects/contacts/batch/upsert"))
            .json(&json!({"inputs": [{"idProperty": "email", "id": id, "properties": properties}]}))
    } else {
        let id_text = match &id {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        clients
            .http
            .put(format!("{base}/{}", url_segment(&id_text)))
            .json(&json!({"id": id, "properties": properties}))
    };
    let mut request = request
        .timeout(timeout)
        .header("Idempotency-Key", &delivery.new.idempotency_key);
    if let Some(token) = &settings.token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => classify(response.status(), response.headers()),
        Err(error) => transport_error(&error),
    }
}

/// What a CRM destination stores in the outbox for one event: the upsert of mapped
/// traits, except those the CRM owns or sent itself.
pub(super) fn render(settings: &CrmSettings, context: &Value) -> Result<Value, RenderError> {
    let traits = context.get("traits").and_then(Value::as_object);
    let sources = context.get("traitSources").and_then(Value::as_object);
    let crm_source = settings.crm_source.as_deref();
    let mut properties = Map::new();
    for (name, property) in &settings.mapping {
        let Some(property) = property.as_str() else {
            continue;
        };
        if settings.crm_owned.iter().any(|p| p == property) {
            continue;
        }
        let from_crm = crm_source.is_some_and(|crm| {
            sources
                .and_then(|s| s.get(name))
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(crm)))
        });
        if from_crm {
            continue;
        }
        if let Some(value) = traits.and_then(|t| t.get(name)) {
            properties.insert(property.to_string(), value.clone());
        }
    }
    let id = match settings.shape.as_str() {
        "hubspot" => traits.and_then(|t| t.get("email")).cloned(),
        _ => context.pointer("/profile/id").cloned(),
    };
    match id {
        Some(id) if !id.is_null() => Ok(json!({ "id": id, "properties": properties })),
        _ => Err(RenderError::Failed(
            "the person has no email address (traits.email) to match the CRM contact".into(),
        )),
    }
}

fn url_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crm_never_sends_what_the_crm_owns() {
        let settings = CrmSettings {
            url: "http://crm".into(),
            shape: "hubspot".into(),
            token: None,
            mapping: serde_json::from_value(json!({
                "first_name": "firstname", "plan": "plan", "lifecycle": "lifecyclestage", "email": "email"
            }))
            .unwrap(),
            crm_source: Some("src_crm".into()),
            crm_owned: vec!["lifecyclestage".into()],
        };
        let context = json!({
            "traits": {"first_name": "Ada", "plan": "pro", "lifecycle": "lead", "email": "a@x.io"},
            "traitSources": {"first_name": ["src_web"], "plan": ["src_crm"], "email": ["src_web"]}
        });
        let payload = render(&settings, &context).unwrap();
        assert_eq!(
            payload,
            json!({"id": "a@x.io", "properties": {"firstname": "Ada", "email": "a@x.io"}})
        );
    }
}
