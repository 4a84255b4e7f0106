//! A message's top-level fields, read lazily.
//!
//! Validation reads a dozen top-level fields of a message; the rest (`context`,
//! `properties`, `traits`: most of its bytes) is the sender's data and is stored as sent.
//! [`MessageFields`] keeps each top-level value as the JSON text it arrived as and parses
//! only the fields that are read, so an ingested message is not built into a tree of maps
//! and written back out (that round trip was most of the ingest path's CPU).
//!
//! Stored text must parse again wherever it is read later. A syntax check alone accepts
//! a few things a full parse refuses — a lone surrogate escape (`"\ud800"`), a number out
//! of range (`1e400`), nesting past the parser's limit — so a value holding a surrogate
//! escape, an exponent, a long number or deep nesting is parsed in full when it is read
//! in, and a message whose value fails that is refused as before.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Nesting inside one value past which it is parsed in full (serde_json stops at 128).
const DEEP_NESTING: u32 = 100;
/// Top-level fields from which repeated keys are found through a set.
const MANY_FIELDS: usize = 32;
/// Characters of a number past which it is parsed in full (where `f64` range begins to
/// matter; `1e400` has an exponent and is caught by that).
const LONG_NUMBER: usize = 15;

/// The JSON type of a value, named as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`
    Null,
    /// `true` / `false`
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    /// The kind of a parsed value.
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }

    /// The kind of a valid JSON text, from its first byte.
    fn of_text(text: &str) -> Self {
        match text.trim_start().as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b't' | b'f') => JsonKind::Bool,
            Some(b'n') | None => JsonKind::Null,
            Some(_) => JsonKind::Number,
        }
    }

    /// `null`, `a boolean`, `a number`, `a string`, `an array`, `an object`.
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        }
    }
}

/// Why a message's text could not be read as fields.
#[derive(Debug)]
pub enum FieldsError {
    /// Not JSON, or not a JSON object (serde's error, for its position).
    Json(serde_json::Error),
    /// Valid JSON syntax with a value a full parse refuses (see the module docs).
    Unparsable,
}

enum FieldValue<'a> {
    /// As received; `compact` when it has no whitespace between its tokens.
    Raw { text: &'a str, compact: bool },
    /// Parsed, or set by the server.
    Parsed(Value),
}

/// A message's top-level fields in their order, each kept as received until read.
///
/// As in a parsed JSON object, a key given twice keeps its first position and its last
/// value, and setting a key that exists replaces its value in place.
pub struct MessageFields<'a> {
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
}

impl<'a> MessageFields<'a> {
    /// Reads one message from its JSON text, which must be an object.
    pub fn from_json(text: &'a str) -> Result<Self, FieldsError> {
        let RawFields(raw) = serde_json::from_str(text).map_err(FieldsError::Json)?;
        let mut fields = MessageFields {
            fields: Vec::with_capacity(raw.len() + 4),
        };
        // A repeated key is looked for among those before it: linear for a message's
        // dozen fields, through a set for an object with thousands (32 KB allows them).
        let mut seen = (raw.len() > MANY_FIELDS).then(HashSet::new);
        for (key, value) in raw {
            let text = value.get();
            let scan = scan(text);
            let value = if scan.needs_full_parse {
                FieldValue::Parsed(serde_json::from_str(text).map_err(|_| FieldsError::Unparsable)?)
            } else {
                FieldValue::Raw {
                    text,
                    compact: scan.compact,
                }
            };
            let first_time = seen.as_mut().is_some_and(|seen| seen.insert(key.clone()));
            if first_time {
                fields.fields.push((key, value));
            } else {
                fields.put(key, value);
            }
        }
        Ok(fields)
    }

    /// Fields of an already parsed object (the CSV and JSONL import paths, tests).
    pub fn from_map(map: Map<String, Value>) -> MessageFields<'static> {
        MessageFields {
            fields: map
                .into_iter()
                .map(|(key, value)| (Cow::Owned(key), FieldValue::Parsed(value)))
                .collect(),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _)| k == key)
    }

    fn put(&mut self, key: Cow<'a, str>, value: FieldValue<'a>) {
        match self.position(&key) {
            Some(at) => self.fields[at].1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Whether the message has the field (with any value, `null` included).
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The JSON type of a field, without parsing it.
    pub fn kind(&self, key: &str) -> Option<JsonKind> {
        let at = self.position(key)?;
        Some(match &self.fields[at].1 {
            FieldValue::Raw { text, .. } => JsonKind::of_text(text),
            FieldValue::Parsed(value) => JsonKind::of(value),
        })
    }

    /// A field's value, parsed if it was still text. Meant for small fields (ids, names,
    /// times); a parse failure cannot happen for text read by [`Self::from_json`] and
    /// reads as `null`.
    pub fn get(&self, key: &str) -> Option<Cow<'_, Value>> {
        let at = self.position(key)?;
        Some(match &self.fields[at].1 {
            FieldValue::Raw { text, .. } => {
                Cow::Owned(serde_json::from_str(text).unwrap_or(Value::Null))
            }
            FieldValue::Parsed(value) => Cow::Borrowed(value),
        })
    }

    /// A string field's text (`None` when absent or not a string).
    pub fn get_str(&self, key: &str) -> Option<String> {
        match self.get(key)?.into_owned() {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// Sets a field: in place when it exists, else at the end.
    pub fn set(&mut self, key: &'a str, value: Value) {
        self.put(Cow::Borrowed(key), FieldValue::Parsed(value));
    }

    /// Removes a field.
    pub fn remove(&mut self, key: &str) {
        if let Some(at) = self.position(key) {
            self.fields.remove(at);
        }
    }

    /// The message as compact JSON text: raw values copied (whitespace between tokens
    /// dropped, so a stored message is one line), parsed ones serialized.
    pub fn to_json(&self) -> serde_json::Result<String> {
        let size: usize = self
            .fields
            .iter()
            .map(|(key, value)| {
                key.len()
                    + 4
                    + match value {
                        FieldValue::Raw { text, .. } => text.len(),
                        FieldValue::Parsed(_) => 32,
                    }
            })
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (index, (key, value)) in self.fields.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            if key
                .bytes()
                .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
            {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.push(b'"');
            } else {
                serde_json::to_writer(&mut out, key.as_ref())?;
            }
            out.push(b':');
            match value {
                FieldValue::Raw {
                    text,
                    compact: true,
                } => out.extend_from_slice(text.as_bytes()),
                FieldValue::Raw {
                    text,
                    compact: false,
                } => push_compact(&mut out, text),
                FieldValue::Parsed(value) => serde_json::to_writer(&mut out, value)?,
            }
        }
        out.push(b'}');
        String::from_utf8(out).map_err(|_| {
            <serde_json::Error as serde::ser::Error>::custom("message text is not UTF-8")
        })
    }
}

/// What [`scan`] found in one value's text.
struct Scan {
    /// No whitespace between tokens.
    compact: bool,
    /// Holds something only a full parse can vouch for.
    needs_full_parse: bool,
}

/// One pass over a valid JSON text: whitespace outside strings, and anything a syntax
/// check passes but a full parse may refuse.
fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut found = Scan {
        compact: true,
        needs_full_parse: false,
    };
    let mut depth = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        // `\uD800`–`\uDFFF`: a surrogate, which must come in a valid pair.
                        if bytes.get(i + 1) == Some(&b'u')
                            && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
                            && matches!(
                                bytes.get(i + 3),
                                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                            )
                        {
                            found.needs_full_parse = true;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                found.compact = false;
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > DEEP_NESTING {
                    found.needs_full_parse = true;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    if matches!(bytes[i], b'e' | b'E') {
                        found.needs_full_parse = true;
                    }
                    i += 1;
                }
                if i - start > LONG_NUMBER {
                    found.needs_full_parse = true;
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// Copies a valid JSON text without the whitespace between its tokens.
fn push_compact(out: &mut Vec<u8>, text: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// A JSON object read as its keys and the raw text of their values, in order.
struct RawFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawFieldsVisitor)
    }
}

struct RawFieldsVisitor;

impl<'de> Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            fields.push((key, value));
        }
        Ok(RawFields(fields))
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> MessageFields<'_> {
        MessageFields::from_json(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn values_stay_as_sent_and_whitespace_goes() {
        let text = "{ \"a\" : { \"b\" : [1, 2.50, \"x y\\\" z\"] },\n \"n\": -0.0 }";
        let fields = read(text);
        assert_eq!(fields.kind("a"), Some(JsonKind::Object));
        assert_eq!(
            fields.to_json().ok().as_deref(),
            Some(r#"{"a":{"b":[1,2.50,"x y\" z"]},"n":-0.0}"#)
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_its_last_value() {
        let mut fields = read(r#"{"a":1,"b":2,"a":3}"#);
        fields.set("b", json!("two"));
        fields.set("c", json!(null));
        fields.remove("nothing");
        assert_eq!(
            fields.to_json().ok().as_deref(),
            Some(r#"{"a":3,"b":"two","c":null}"#)
        );
    }

    #[test]
    fn an_object_with_thousands_of_keys_reads_quickly_and_keeps_the_last_value() {
        let keys: Vec<String> = (0..4000).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{{},\"k7\":\"last\"}}", keys.join(","));
        let fields = read(&text);
        assert_eq!(fields.fields.len(), 4000);
        assert_eq!(fields.get_str("k7").as_deref(), Some("last"));
        assert_eq!(fields.fields[7].0, "k7");
    }

    #[test]
    fn keys_with_escapes_are_written_escaped() {
        let fields = read(r#"{"a\"b\u0001":1,"é\n":2}"#);
        let text = fields.to_json().unwrap_or_default();
        let back: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, json!({"a\"b\u{1}": 1, "é\n": 2}));
    }

    #[test]
    fn what_a_full_parse_refuses_is_refused() {
        for text in [
            r#"{"p":{"x":"\ud800"}}"#,
            r#"{"p":[1e400]}"#,
            r#"{"p":-1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}"#,
        ] {
            assert!(
                matches!(MessageFields::from_json(text), Err(FieldsError::Unparsable)),
                "{text}"
            );
        }
        let deep = format!("{{\"p\":{}1{}}}", "[".repeat(140), "]".repeat(140));
        assert!(matches!(
            MessageFields::from_json(&deep),
            Err(FieldsError::Unparsable | FieldsError::Json(_))
        ));
        // A valid pair, an exponent in range and moderate nesting are kept.
        let fine = format!(
            "{{\"e\":\"\\ud83d\\ude00\",\"n\":1.5e3,\"d\":{}1{}}}",
            "[".repeat(90),
            "]".repeat(90)
        );
        let text = read(&fine).to_json().unwrap_or_default();
        let back: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back["e"], "😀");
        assert_eq!(back["n"], 1500.0);
    }

    #[test]
    fn not_an_object_is_a_json_error() {
        for text in ["[1]", "7", "\"x\"", "{\"a\":", "{} {}"] {
            assert!(
                matches!(MessageFields::from_json(text), Err(FieldsError::Json(_))),
                "{text}"
            );
        }
    }
}
