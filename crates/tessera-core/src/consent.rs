//! Consent decisions carried by a message.
//!
//! A person's consent per purpose (`marketing`, `analytics`, ...) arrives in two
//! ways, both read here so every part of Tessera agrees on them:
//! - Segment's consent object, `context.consent.categoryPreferences`
//!   (`{"marketing": true, "analytics": false}`), on any message type;
//! - an `identify` message's `traits.consent` object of the same shape (how CRMs
//!   and forms usually send opt-ins).
//!
//! Purpose names are compared in lowercase, so `Marketing` and `marketing` are the
//! same purpose. Values that are not booleans are ignored: a decision is explicit.

use serde_json::{Map, Value};

/// The longest purpose name kept; longer keys are ignored.
pub const MAX_PURPOSE_LEN: usize = 64;

/// The purposes configured when none are: what the consent API accepts.
pub const DEFAULT_PURPOSES: [&str; 4] = ["marketing", "analytics", "personalization", "sale"];

/// The consent decisions of one message, `(purpose, granted)`, purposes lowercased.
/// When both places name a purpose, `context.consent` wins (it is the newer Segment
/// convention and what consent managers send).
pub fn decisions(message: &Map<String, Value>) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut add = |prefs: &Map<String, Value>| {
        for (purpose, value) in prefs {
            let Some(granted) = value.as_bool() else {
                continue;
            };
            let purpose = purpose.trim().to_lowercase();
            if purpose.is_empty() || purpose.len() > MAX_PURPOSE_LEN {
                continue;
            }
            if !out.iter().any(|(p, _)| *p == purpose) {
                out.push((purpose, granted));
            }
        }
    };
    if let Some(Value::Object(prefs)) = message
        .get("context")
        .and_then(|c| c.get("consent"))
        .and_then(|c| c.get("categoryPreferences"))
    {
        add(prefs);
    }
    if message.get("type").and_then(Value::as_str) == Some("identify")
        && let Some(Value::Object(prefs)) = message.get("traits").and_then(|t| t.get("consent"))
    {
        add(prefs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(value: Value) -> Vec<(String, bool)> {
        match value {
            Value::Object(map) => decisions(&map),
            _ => unreachable!("test messages are objects"),
        }
    }

    #[test]
    fn reads_category_preferences_and_identify_traits() {
        let got = of(json!({
            "type": "identify",
            "context": {"consent": {"categoryPreferences": {"Marketing": true, "ads": "yes"}}},
            "traits": {"consent": {"marketing": false, "analytics": false}}
        }));
        assert_eq!(
            got,
            vec![
                ("marketing".to_string(), true),
                ("analytics".to_string(), false)
            ]
        );
    }

    #[test]
    fn traits_consent_only_counts_on_identify() {
        assert!(
            of(json!({"type": "track", "traits": {"consent": {"marketing": true}}})).is_empty()
        );
        assert!(of(json!({"type": "track", "context": {"consent": "no"}})).is_empty());
        let long = "x".repeat(MAX_PURPOSE_LEN + 1);
        assert!(
            of(json!({"context": {"consent": {"categoryPreferences": {long: true}}}})).is_empty()
        );
    }
}
