//! Erasure helpers: removing an erased person's identifiers from messages that
//! belong to someone else.
//!
//! A person's own events are deleted outright. Another person's event may still
//! carry the erased identifiers — a shared device's message that named them, an
//! identifier the rules refused to link (a conflict). Such an event is kept, with
//! every value equal to one of the erased texts removed: object fields are dropped,
//! array elements become `null`.

use serde_json::{Map, Value};

/// Removes from `message` every string (or number) equal, ignoring ASCII case and
/// surrounding space, to one of `needles` (given lowercase); returns whether
/// anything was removed.
pub fn redact(message: &mut Map<String, Value>, needles: &[String]) -> bool {
    let mut removed = false;
    message.retain(|_, value| {
        if matches_any(value, needles) {
            removed = true;
            false
        } else {
            removed |= redact_value(value, needles);
            true
        }
    });
    removed
}

fn redact_value(value: &mut Value, needles: &[String]) -> bool {
    match value {
        Value::Object(map) => redact(map, needles),
        Value::Array(items) => {
            let mut removed = false;
            for item in items {
                if matches_any(item, needles) {
                    *item = Value::Null;
                    removed = true;
                } else {
                    removed |= redact_value(item, needles);
                }
            }
            removed
        }
        _ => false,
    }
}

fn matches_any(value: &Value, needles: &[String]) -> bool {
    let text = match value {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    needles.contains(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_exact_values_anywhere_and_keeps_the_rest() {
        let Value::Object(mut message) = json!({
            "userId": "u-2",
            "anonymousId": "Shared-Device",
            "context": {"traits": {"email": " ADA@example.com ", "plan": "pro"},
                        "externalIds": [{"id": "ada@example.com", "type": "email"}]},
            "properties": {"note": "ada@example.com wrote", "codes": ["x", "shared-device"]}
        }) else {
            unreachable!()
        };
        let needles = vec!["ada@example.com".to_string(), "shared-device".to_string()];
        assert!(redact(&mut message, &needles));
        assert_eq!(
            Value::Object(message),
            json!({
                "userId": "u-2",
                "context": {"traits": {"plan": "pro"},
                            "externalIds": [{"type": "email"}]},
                "properties": {"note": "ada@example.com wrote", "codes": ["x", null]}
            })
        );
    }

    #[test]
    fn nothing_to_remove_reports_false() {
        let Value::Object(mut message) = json!({"userId": "u-1", "n": 5}) else {
            unreachable!()
        };
        assert!(!redact(&mut message, &["u-2".to_string()]));
        assert!(redact(&mut message, &["5".to_string()]));
    }
}
