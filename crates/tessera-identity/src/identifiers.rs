//! Identifiers of a message, normalized before matching.
//!
//! Emails are trimmed, lowercased and must look like `local@domain.tld`; phones are
//! parsed and written in E.164 with the rules' default region; other types are
//! trimmed (and lowercased when configured). Blocked values and values that do not
//! normalize are left out: they never link two people.

use crate::rules::{CompiledRules, IdentifierType, Normalization};
use serde_json::{Map, Value};

/// One normalized identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    /// Its type's name (`email`).
    pub id_type: String,
    /// Its normalized value.
    pub value: String,
}

impl Identifier {
    /// Creates an identifier.
    pub fn new(id_type: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            id_type: id_type.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.id_type, self.value)
    }
}

/// Normalizes a raw value for a type; `None` when it is not a usable identifier.
pub fn normalize_value(
    rules: &CompiledRules,
    id_type: &IdentifierType,
    raw: &str,
) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > 1_000 {
        return None;
    }
    let value = match id_type.normalization {
        Normalization::Trim => trimmed.to_string(),
        Normalization::Lowercase => trimmed.to_lowercase(),
        Normalization::Email => normalize_email(trimmed)?,
        Normalization::Phone => normalize_phone(trimmed, rules.region)?,
    };
    (!rules.is_blocked(&value)).then_some(value)
}

fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.to_lowercase();
    let (local, domain) = email.rsplit_once('@')?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    let local_ok = !local.is_empty() && !local.chars().any(|c| c.is_whitespace() || c == '@');
    (domain_ok && local_ok).then_some(email)
}

fn normalize_phone(raw: &str, region: phonenumber::country::Id) -> Option<String> {
    let number = phonenumber::parse(Some(region), raw).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Reads a dotted path (`context.device.id`) from a message.
fn path_value<'a>(message: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = message.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A string or number as text (identifiers may be sent as numbers); `None` otherwise.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every identifier of a message, strongest type first, without duplicates.
///
/// `alias` messages also yield their `previousId`, typed as `previous_id_type`
/// (the caller decides whether it is a known user id or an anonymous id).
pub fn extract(rules: &CompiledRules, message: &Map<String, Value>) -> Vec<Identifier> {
    let mut found: Vec<Identifier> = Vec::new();
    let mut push = |id_type: &IdentifierType, raw: &Value| {
        if let Some(value) = scalar_text(raw).and_then(|raw| normalize_value(rules, id_type, &raw))
        {
            let identifier = Identifier::new(id_type.name.clone(), value);
            if !found.contains(&identifier) {
                found.push(identifier);
            }
        }
    };
    let external_ids = path_value(message, "context.externalIds").and_then(Value::as_array);
    for id_type in &rules.types {
        for field in &id_type.fields {
            if let Some(value) = path_value(message, field) {
                push(id_type, value);
            }
        }
        for entry in external_ids.into_iter().flatten() {
            let is_this_type = entry
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(&id_type.name));
            let collection_ok = entry
                .get("collection")
                .and_then(Value::as_str)
                .is_none_or(|c| c == "users");
            if is_this_type
                && collection_ok
                && let Some(id) = entry.get("id")
            {
                push(id_type, id);
            }
        }
    }
    found
}

/// The raw texts in a message (as sent, before normalization) of identifiers that
/// normalize to one of `wanted`: where an erased person's identifiers appear in
/// messages in another spelling (`+1 (555) 010-0000` for `+15550100000`).
pub fn raw_texts_of(
    rules: &CompiledRules,
    message: &Map<String, Value>,
    wanted: &[Identifier],
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut check = |id_type: &IdentifierType, raw: &Value| {
        if let Some(raw) = scalar_text(raw)
            && let Some(value) = normalize_value(rules, id_type, &raw)
            && wanted
                .iter()
                .any(|w| w.id_type == id_type.name && w.value == value)
            && !found.contains(&raw)
        {
            found.push(raw);
        }
    };
    let external_ids = path_value(message, "context.externalIds").and_then(Value::as_array);
    for id_type in &rules.types {
        for field in id_type
            .fields
            .iter()
            .map(String::as_str)
            .chain(["previousId"])
        {
            if let Some(value) = path_value(message, field) {
                check(id_type, value);
            }
        }
        for entry in external_ids.into_iter().flatten() {
            if let Some(id) = entry.get("id") {
                check(id_type, id);
            }
        }
    }
    found
}

/// Removes from a message every identifier field (the rules' fields, `previousId`,
/// `context.externalIds` entries) whose value normalizes to one of `wanted`; other
/// fields are untouched even when they hold the same text. Returns whether anything
/// was removed.
pub fn redact_identifiers(
    rules: &CompiledRules,
    message: &mut Map<String, Value>,
    wanted: &[Identifier],
) -> bool {
    let matches = |id_type: &IdentifierType, raw: &Value| {
        scalar_text(raw)
            .and_then(|raw| normalize_value(rules, id_type, &raw))
            .is_some_and(|value| {
                wanted
                    .iter()
                    .any(|w| w.id_type == id_type.name && w.value == value)
            })
    };
    let mut removed = false;
    for id_type in &rules.types {
        for field in id_type
            .fields
            .iter()
            .map(String::as_str)
            .chain(["previousId"])
        {
            let (parent, key) = match field.rsplit_once('.') {
                Some((parent, key)) => (Some(parent), key),
                None => (None, field),
            };
            let object = match parent {
                Some(parent) => path_object_mut(message, parent),
                None => Some(&mut *message),
            };
            if let Some(object) = object
                && object.get(key).is_some_and(|v| matches(id_type, v))
            {
                object.remove(key);
                removed = true;
            }
        }
        if let Some(Value::Array(entries)) = message
            .get_mut("context")
            .and_then(|c| c.get_mut("externalIds"))
        {
            let before = entries.len();
            entries.retain(|entry| !entry.get("id").is_some_and(|id| matches(id_type, id)));
            removed |= entries.len() != before;
        }
    }
    removed
}

fn path_object_mut<'a>(
    message: &'a mut Map<String, Value>,
    path: &str,
) -> Option<&'a mut Map<String, Value>> {
    let mut current = message;
    for part in path.split('.') {
        current = current.get_mut(part)?.as_object_mut()?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IdentityRules;
    use serde_json::json;

    fn rules() -> CompiledRules {
        let mut rules = IdentityRules {
            default_region: "DE".into(),
            ..IdentityRules::default()
        };
        rules.identifier_types.push(IdentifierType {
            name: "crm_id".into(),
            priority: 7,
            limit: 1,
            fields: vec!["traits.crm_id".into()],
            normalization: Normalization::Lowercase,
        });
        rules.compile().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn redaction_touches_identifier_fields_only() {
        let Value::Object(mut message) = json!({
            "userId": "42",
            "anonymousId": "keep-me",
            "context": {"traits": {"email": " ADA@example.com ", "plan": "42"},
                        "externalIds": [{"id": "ada@example.com", "type": "email"},
                                        {"id": "x-1", "type": "crm"}]},
            "properties": {"order_id": "42", "revenue": 42, "note": "ada@example.com"}
        }) else {
            unreachable!()
        };
        let wanted = [
            Identifier::new("user_id", "42"),
            Identifier::new("email", "ada@example.com"),
        ];
        assert!(redact_identifiers(&rules(), &mut message, &wanted));
        assert_eq!(
            Value::Object(message.clone()),
            json!({
                "anonymousId": "keep-me",
                "context": {"traits": {"plan": "42"},
                            "externalIds": [{"id": "x-1", "type": "crm"}]},
                "properties": {"order_id": "42", "revenue": 42, "note": "ada@example.com"}
            })
        );
        assert!(!redact_identifiers(&rules(), &mut message, &wanted));
    }

    fn ids(message: Value) -> Vec<String> {
        let Value::Object(map) = message else {
            return vec![];
        };
        extract(&rules(), &map)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_source_of_identifiers_is_read_and_normalized() {
        let found = ids(json!({
            "userId": " u-1 ",
            "anonymousId": "anon-9",
            "traits": {"email": "  Jane.Doe@Example.COM ", "phone": "0151 1234 5678", "crm_id": "CRM-7"},
            "context": {
                "device": {"id": "dev-1", "advertisingId": "ad-1"},
                "externalIds": [
                    {"id": "jd@example.com", "type": "email", "collection": "users", "encoding": "none"},
                    {"id": "acct-1", "type": "crm_id", "collection": "accounts"}
                ]
            }
        }));
        assert_eq!(
            found,
            [
                "user_id:u-1",
                "email:jane.doe@example.com",
                "email:jd@example.com",
                "phone:+4915112345678",
                "advertising_id:ad-1",
                "anonymous_id:anon-9",
                "device_id:dev-1",
                "crm_id:crm-7",
            ]
        );
    }

    #[test]
    fn blocked_and_malformed_values_never_link() {
        let found = ids(json!({
            "userId": "null",
            "anonymousId": "0000",
            "traits": {"email": "not-an-email", "phone": "12"},
            "context": {"device": {"id": "-1"}, "traits": {"email": "a@b.co"}}
        }));
        assert_eq!(found, ["email:a@b.co"]);
    }

    #[test]
    fn the_same_phone_written_differently_is_one_identifier() {
        let rules = rules();
        let phone = rules
            .identifier_type("phone")
            .cloned()
            .unwrap_or_else(|| panic!("phone"));
        let forms = [
            "+49 151 12345678",
            "0151-12345678",
            "(0151) 123 456 78",
            "+4915112345678",
        ];
        for form in forms {
            assert_eq!(
                normalize_value(&rules, &phone, form).as_deref(),
                Some("+4915112345678"),
                "{form}"
            );
        }
    }
}
