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

use serde::de;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashSet;

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
        let raw: &'a RawValue = serde_json::from_str(text).map_err(FieldsError::Json)?;
        Self::from_raw_value(raw)
    }

    /// Reads one message from JSON text a parser has already checked (a batch's items
    /// are, by the parse of the batch): one pass splits the object into its fields.
    pub fn from_raw_value(raw: &'a RawValue) -> Result<Self, FieldsError> {
        let text = raw.get();
        let Some(split) = split_object(text) else {
            // Not an object: serde words the error (with its position) as before.
            return Err(FieldsError::Json(
                serde_json::from_str::<std::collections::BTreeMap<String, de::IgnoredAny>>(text)
                    .err()
                    .unwrap_or_else(|| de::Error::custom("expected a JSON object")),
            ));
        };
        let mut fields = MessageFields {
            fields: Vec::with_capacity(split.len() + 4),
        };
        // A repeated key is looked for among those before it, and only when a cheap
        // fingerprint of it was seen: most messages have none, and an object with
        // thousands of keys (32 KB allows them) goes through a set.
        let mut seen = (split.len() > MANY_FIELDS).then(HashSet::new);
        let mut fingerprints = 0u64;
        for RawField { key, value, scan } in split {
            let key = match key {
                RawKey::Plain(key) => Cow::Borrowed(key),
                RawKey::Escaped(literal) => Cow::Owned(
                    serde_json::from_str::<String>(literal).map_err(|_| FieldsError::Unparsable)?,
                ),
            };
            let value = if scan.needs_full_parse {
                FieldValue::Parsed(
                    serde_json::from_str(value).map_err(|_| FieldsError::Unparsable)?,
                )
            } else {
                FieldValue::Raw {
                    text: value,
                    compact: scan.compact,
                }
            };
            let first_time = match seen.as_mut() {
                Some(seen) => seen.insert(key.clone()),
                None => {
                    let bit = key_fingerprint(&key);
                    let new = fingerprints & bit == 0;
                    fingerprints |= bit;
                    new
                }
            };
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
            FieldValue::Raw { text, .. } => Cow::Owned(match plain_string(text) {
                // Most read fields (ids, names, times) are strings without escapes.
                Some(plain) => Value::String(plain.to_owned()),
                None => serde_json::from_str(text).unwrap_or(Value::Null),
            }),
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

/// The characters of a JSON string literal that holds no escape (so it reads as it is).
fn plain_string(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['\\', '"'])).then_some(inner)
}

/// What the split found in one value's text.
#[derive(Debug, Clone, Copy)]
struct Scan {
    /// No whitespace between tokens.
    compact: bool,
    /// Holds something only a full parse can vouch for.
    needs_full_parse: bool,
}

/// A top-level key as it appears in the text.
enum RawKey<'a> {
    /// The key's characters (no escapes in it).
    Plain(&'a str),
    /// The whole string literal, quotes included, to be unescaped.
    Escaped(&'a str),
}

/// One top-level field of an object's text.
struct RawField<'a> {
    key: RawKey<'a>,
    value: &'a str,
    scan: Scan,
}

/// One bit of 64 for a key (its length and last byte), so that a message whose keys all
/// differ in it needs no search for repeats.
fn key_fingerprint(key: &str) -> u64 {
    let last = key.as_bytes().last().copied().unwrap_or(0);
    1 << ((key.len() as u64 * 7 + u64::from(last)) % 64)
}

/// Splits the text of a valid JSON object into its top-level fields in one pass, noting
/// for each value whether it has whitespace and whether it needs a full parse (see the
/// module docs). `None` when the text is not an object. The text must be valid JSON (a
/// parser checked it); on any other text this returns something or `None`, never panics.
fn split_object(text: &str) -> Option<Vec<RawField<'_>>> {
    let bytes = text.as_bytes();
    let mut i = skip_whitespace(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_whitespace(bytes, i + 1);
    let mut fields = Vec::with_capacity(16);
    if bytes.get(i) == Some(&b'}') {
        return Some(fields);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let mut key_scan = Scan {
            compact: true,
            needs_full_parse: false,
        };
        let (key_end, escaped) = string_end(bytes, i + 1, &mut key_scan);
        let key = if escaped {
            RawKey::Escaped(text.get(i..key_end)?)
        } else {
            RawKey::Plain(text.get(i + 1..key_end.saturating_sub(1))?)
        };
        i = skip_whitespace(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_whitespace(bytes, i + 1);
        let (end, scan) = scan_value(bytes, start);
        fields.push(RawField {
            key,
            value: text.get(start..end)?,
            scan,
        });
        i = skip_whitespace(bytes, end);
        match bytes.get(i) {
            Some(b',') => i = skip_whitespace(bytes, i + 1),
            Some(b'}') => return Some(fields),
            _ => return None,
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string whose characters start at `i`, and
/// whether it holds an escape. Notes a surrogate escape (`\uD800`–`\uDFFF`, which must
/// come in a valid pair) in `found`.
fn string_end(bytes: &[u8], mut i: usize, found: &mut Scan) -> (usize, bool) {
    let mut escaped = false;
    loop {
        let Some(at) = bytes
            .get(i..)
            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
        else {
            return (bytes.len(), escaped);
        };
        i += at;
        if bytes[i] == b'"' {
            return (i + 1, escaped);
        }
        escaped = true;
        if bytes.get(i + 1) == Some(&b'u')
            && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
            && matches!(
                bytes.get(i + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
        {
            found.needs_full_parse = true;
        }
        i += 2;
    }
}

/// Scans the value starting at `i`: its end, whitespace between its tokens, and anything
/// a syntax check passes but a full parse may refuse.
fn scan_value(bytes: &[u8], mut i: usize) -> (usize, Scan) {
    let mut found = Scan {
        compact: true,
        needs_full_parse: false,
    };
    let mut depth = 0u32;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => i = string_end(bytes, i + 1, &mut found).0,
            b'[' | b'{' => {
                depth += 1;
                if depth > DEEP_NESTING {
                    found.needs_full_parse = true;
                }
                i += 1;
                continue;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                found.compact = false;
                i += 1;
                continue;
            }
            b',' | b':' => {
                i += 1;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = bytes.get(i) {
                    if matches!(bytes[i], b'e' | b'E') {
                        found.needs_full_parse = true;
                    }
                    i += 1;
                }
                if i - start > LONG_NUMBER {
                    found.needs_full_parse = true;
                }
            }
            // true, false, null
            _ => {
                let start = i;
                while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
                    i += 1;
                }
                i = i.max(start + 1);
            }
        }
        if depth == 0 {
            break;
        }
    }
    (i.min(bytes.len()), found)
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
    fn the_split_finds_each_field_and_what_it_needs() {
        let text = "{ \"a\" :\t[ 1 , {\"b\":\"}\\\"{\"} ] , \"k\\u0041\":true,\"n\":-12.5,\
                    \"e\":2E3,\"s\":\"\\uD83D\\uDE00\",\"z\":null }";
        let fields = split_object(text).unwrap_or_default();
        let seen: Vec<(&str, &str, bool, bool)> = fields
            .iter()
            .map(|f| {
                let key = match f.key {
                    RawKey::Plain(key) | RawKey::Escaped(key) => key,
                };
                (key, f.value, f.scan.compact, f.scan.needs_full_parse)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", "[ 1 , {\"b\":\"}\\\"{\"} ]", false, false),
                ("\"k\\u0041\"", "true", true, false),
                ("n", "-12.5", true, false),
                ("e", "2E3", true, true),
                ("s", "\"\\uD83D\\uDE00\"", true, true),
                ("z", "null", true, false),
            ]
        );
        assert_eq!(read(text).get_str("kA").as_deref(), None);
        assert_eq!(read(text).kind("kA"), Some(JsonKind::Bool));
        assert!(split_object("{}").is_some_and(|f| f.is_empty()));
        assert!(split_object(" [1] ").is_none());
    }

    #[test]
    fn the_split_never_panics_on_text_no_parser_checked() {
        for text in [
            "{",
            "{\"",
            "{\"a",
            "{\"a\":",
            "{\"a\":[",
            "{\"a\":\"\\",
            "{\"a\":1,",
            "{\"a\":tru",
            "{\"a\"1}",
            "{,}",
        ] {
            let _ = split_object(text);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_split_is_total(text in "[{}\\[\\]\":,a-z0-9 .eE+\\\\-]{0,40}") {
            let _ = split_object(&text);
        }
    }

    #[test]
    fn plain_strings_are_read_without_a_parse() {
        let fields = read(r#"{"a":"x y","b":"q\"t","c":"\u00e9"}"#);
        assert_eq!(fields.get_str("a").as_deref(), Some("x y"));
        assert_eq!(fields.get_str("b").as_deref(), Some("q\"t"));
        assert_eq!(fields.get_str("c").as_deref(), Some("é"));
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
