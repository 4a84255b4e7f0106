//! The generic mapping: JSON pointers (RFC 6901) into the payload for each field of
//! a Segment message.
//!
//! ```json
//! {"type": "track", "event": "/action", "userId": "/user/id",
//!  "properties": {"plan": "/data/plan", "source": {"value": "billing"}},
//!  "messageId": "/delivery_id", "timestamp": "/occurred_at"}
//! ```
//!
//! A field is a pointer (a string starting with `/`), a literal (any other string,
//! or `{"value": …}`), or `{"pointer": "…", "default": …}` (`""` points at the whole
//! payload). `properties`, `traits` and `context` are either one field giving an
//! object or an object of name → field.

use serde_json::{Map, Value};

/// Largest mapping, in bytes of JSON.
pub const MAX_MAPPING_BYTES: usize = 16 * 1024;
/// Most fields in one mapping (named properties and traits included).
pub const MAX_MAPPING_FIELDS: usize = 100;
/// Longest pointer, in characters.
pub const MAX_POINTER_CHARS: usize = 256;
/// Most reference tokens in one pointer.
pub const MAX_POINTER_SEGMENTS: usize = 32;

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A JSON pointer into the payload, with a value for when it finds nothing.
    Pointer(String, Option<Value>),
    /// A fixed value.
    Literal(Value),
}

impl Field {
    fn get(&self, body: &Value) -> Option<Value> {
        match self {
            Field::Pointer(pointer, default) => body
                .pointer(pointer)
                .filter(|v| !v.is_null())
                .cloned()
                .or_else(|| default.clone()),
            Field::Literal(value) => Some(value.clone()),
        }
    }
}

/// An object-valued part of the message: one field, or named fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Fields {
    /// The whole object from one field.
    Whole(Field),
    /// Name → field.
    Named(Vec<(String, Field)>),
}

/// A compiled generic mapping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenericMapping {
    scalars: Vec<(&'static str, Field)>,
    objects: Vec<(&'static str, Fields)>,
}

const SCALARS: [&str; 7] = [
    "type",
    "event",
    "userId",
    "anonymousId",
    "messageId",
    "timestamp",
    "name",
];
const OBJECTS: [&str; 3] = ["properties", "traits", "context"];

fn check_pointer(pointer: &str, at: &str) -> Result<(), String> {
    if pointer.chars().count() > MAX_POINTER_CHARS {
        return Err(format!(
            "{at}: the pointer is longer than {MAX_POINTER_CHARS} characters"
        ));
    }
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!("{at}: a JSON pointer starts with \"/\" (RFC 6901)"));
    }
    if pointer.matches('/').count() > MAX_POINTER_SEGMENTS {
        return Err(format!(
            "{at}: the pointer has more than {MAX_POINTER_SEGMENTS} segments"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{at}: \"~\" in a pointer must be written ~0 (and \"/\" in a name ~1)"
            ));
        }
    }
    Ok(())
}

fn field(spec: &Value, at: &str) -> Result<Field, String> {
    match spec {
        Value::String(s) if s.starts_with('/') => {
            check_pointer(s, at)?;
            Ok(Field::Pointer(s.clone(), None))
        }
        Value::Object(o) if o.contains_key("pointer") => {
            if o.keys().any(|k| k != "pointer" && k != "default") {
                return Err(format!(
                    "{at}: a pointer field takes only \"pointer\" and \"default\""
                ));
            }
            let pointer = o
                .get("pointer")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: \"pointer\" must be a string"))?;
            check_pointer(pointer, at)?;
            Ok(Field::Pointer(
                pointer.to_owned(),
                o.get("default").cloned(),
            ))
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("value") => {
            Ok(Field::Literal(o["value"].clone()))
        }
        Value::Object(_) => Err(format!(
            "{at}: write a pointer \"/a/b\", a literal, {{\"value\": …}} or {{\"pointer\": \"/a\", \"default\": …}}"
        )),
        literal => Ok(Field::Literal(literal.clone())),
    }
}

impl GenericMapping {
    /// Compiles a mapping, checking its size, names and pointers.
    pub fn compile(spec: &Value) -> Result<Self, String> {
        if spec.to_string().len() > MAX_MAPPING_BYTES {
            return Err(format!(
                "the mapping is over {MAX_MAPPING_BYTES} bytes of JSON"
            ));
        }
        let object = spec
            .as_object()
            .ok_or("the mapping must be a JSON object of message field → pointer")?;
        let mut mapping = GenericMapping::default();
        let mut count = 0;
        for (key, value) in object {
            if let Some(name) = SCALARS.iter().find(|n| *n == key) {
                count += 1;
                mapping.scalars.push((name, field(value, key)?));
            } else if let Some(name) = OBJECTS.iter().find(|n| *n == key) {
                let fields = match value {
                    Value::Object(o)
                        if !(o.contains_key("pointer")
                            || o.len() == 1 && o.contains_key("value")) =>
                    {
                        let mut named = Vec::with_capacity(o.len());
                        for (prop, spec) in o {
                            count += 1;
                            named.push((prop.clone(), field(spec, &format!("{key}.{prop}"))?));
                        }
                        Fields::Named(named)
                    }
                    other => {
                        count += 1;
                        Fields::Whole(field(other, key)?)
                    }
                };
                mapping.objects.push((name, fields));
            } else {
                return Err(format!(
                    "unknown mapping field {key:?}: use {} or {}",
                    SCALARS.join(", "),
                    OBJECTS.join(", ")
                ));
            }
            if count > MAX_MAPPING_FIELDS {
                return Err(format!("the mapping has over {MAX_MAPPING_FIELDS} fields"));
            }
        }
        Ok(mapping)
    }

    /// Applies the mapping to a payload: the message's fields (not yet checked as a
    /// Segment message), and the mapped `messageId` when there is one.
    pub fn apply(&self, body: &Value) -> (Map<String, Value>, Option<String>) {
        let mut message = Map::new();
        let mut message_id = None;
        for (name, field) in &self.scalars {
            let Some(value) = field.get(body) else {
                continue;
            };
            if *name == "messageId" {
                message_id = super::presets::text(Some(&value));
                continue;
            }
            // Ids given as numbers are written as text, as Segment expects.
            let value = match (*name, &value) {
                ("userId" | "anonymousId", Value::Number(n)) => Value::String(n.to_string()),
                _ => value,
            };
            message.insert((*name).to_owned(), value);
        }
        for (name, fields) in &self.objects {
            let value = match fields {
                Fields::Whole(field) => field.get(body),
                Fields::Named(named) => {
                    let mut object = Map::new();
                    for (prop, field) in named {
                        if let Some(value) = field.get(body) {
                            object.insert(prop.clone(), value);
                        }
                    }
                    Some(Value::Object(object))
                }
            };
            if let Some(value) = value {
                message.insert((*name).to_owned(), value);
            }
        }
        (message, message_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn pointers_literals_and_defaults() {
        let mapping = GenericMapping::compile(&json!({
            "type": "track",
            "event": "/action",
            "userId": "/user/id",
            "messageId": "/id",
            "properties": {"plan": "/data/plan", "odd": "/data/a~1b", "tilde": "/data/c~0d",
                           "fixed": {"value": "/not-a-pointer"}, "missing": {"pointer": "/nope", "default": 0}},
            "context": {"pointer": "/ctx"}
        }))
        .unwrap();
        let (m, id) = mapping.apply(&json!({
            "id": 42, "action": "Plan Changed", "user": {"id": 7},
            "data": {"plan": "pro", "a/b": 1, "c~d": 2}
        }));
        assert_eq!(id.as_deref(), Some("42"));
        assert_eq!(m["type"], "track");
        assert_eq!(m["event"], "Plan Changed");
        assert_eq!(m["userId"], "7");
        assert_eq!(
            m["properties"],
            json!({"plan": "pro", "odd": 1, "tilde": 2, "fixed": "/not-a-pointer", "missing": 0})
        );
        assert!(!m.contains_key("context"));
    }

    #[test]
    fn bad_mappings_are_refused_with_the_place() {
        for (spec, needle) in [
            (json!([1]), "JSON object"),
            (json!({"evnt": "/a"}), "unknown mapping field"),
            (json!({"event": {"pointer": "a"}}), "starts with"),
            (json!({"event": "/a~2"}), "~0"),
            (json!({"properties": {"x": {"pointer": 1}}}), "properties.x"),
            (json!({"event": {"pointer": "/a", "other": 1}}), "only"),
            (
                json!({"event": format!("/{}", "a/".repeat(40))}),
                "segments",
            ),
        ] {
            let error = GenericMapping::compile(&spec).unwrap_err();
            assert!(error.contains(needle), "{spec}: {error}");
        }
        let many: Map<String, Value> = (0..150).map(|i| (format!("p{i}"), json!("/x"))).collect();
        assert!(GenericMapping::compile(&json!({"properties": many})).is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z~/]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z~/]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn compile_and_apply_are_total(spec in json_value(), body in json_value()) {
            if let Ok(mapping) = GenericMapping::compile(&spec) {
                let _ = mapping.apply(&body);
            }
        }

        #[test]
        fn a_pointer_reads_what_is_there(key in "[a-z~/]{1,8}", value in any::<i64>()) {
            let escaped = key.replace('~', "~0").replace('/', "~1");
            let mapping = GenericMapping::compile(&json!({"event": format!("/{escaped}")})).unwrap();
            let mut body = Map::new();
            body.insert(key, json!(value));
            let (m, _) = mapping.apply(&Value::Object(body));
            prop_assert_eq!(&m["event"], &json!(value));
        }
    }
}
