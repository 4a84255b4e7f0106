//! Tracking API request bodies: one message, or a batch with shared defaults.
//!
//! This is the parser that faces the network, so it is total: any byte string gives
//! either a [`ParsedRequest`] or a [`UserError`] — never a panic (a property test
//! drives it with arbitrary input). Limits follow Segment's: 32 KB per message,
//! 500 KB and 2,500 messages per batch.

use crate::error::{ErrorCode, UserError};
use crate::fields::{FieldsError, MessageFields};
use crate::message::{
    MessageType, NormalizedMessage, Rejection, RequestDefaults, json_type_name, normalize,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Largest accepted single message, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Largest accepted request body (after decompression), in bytes.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

/// What kind of body an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `/v1/track` and friends: the body is one message of this type.
    Single(MessageType),
    /// `/v1/batch`: `{"batch": [...], "context", "integrations", "sentAt", "writeKey"}`.
    Batch,
    /// `/v1/import`: a batch of historical messages; a valid `receivedAt` is kept.
    Import,
}

/// A parsed request: its write key (when in the body), defaults, and its messages.
pub struct ParsedRequest<'a> {
    /// `writeKey` from the body, if any.
    pub write_key: Option<String>,
    /// Batch-level values applied to each message.
    pub defaults: RequestDefaults,
    /// The endpoint's implied type (single-message endpoints).
    pub endpoint_type: Option<MessageType>,
    /// Each message's fields (borrowing the body), or why it could not be read.
    pub items: Vec<Result<MessageFields<'a>, Rejection>>,
}

/// The outcome of validating every message of a request.
#[derive(Debug, Default)]
pub struct ValidatedRequest {
    /// Messages ready to append, in request order.
    pub accepted: Vec<NormalizedMessage>,
    /// Rejected messages with their index in the request.
    pub rejected: Vec<(usize, Rejection)>,
}

#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    context: Option<Value>,
    integrations: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// Parses a (decompressed) request body for an endpoint.
pub fn parse_request(body: &[u8], kind: BodyKind) -> Result<ParsedRequest<'_>, UserError> {
    match kind {
        BodyKind::Single(message_type) => parse_single(body, message_type),
        BodyKind::Batch => parse_batch(body, false),
        BodyKind::Import => parse_batch(body, true),
    }
}

fn parse_single(body: &[u8], message_type: MessageType) -> Result<ParsedRequest<'_>, UserError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(UserError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "{message_type} message is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (32 KB)",
                body.len()
            ),
        ));
    }
    let shape = "the body must be one JSON object (a Segment message)";
    let text = std::str::from_utf8(body).map_err(|e| {
        UserError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body is not valid JSON: it is not UTF-8 (byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    let message = MessageFields::from_json(text).map_err(|e| match e {
        FieldsError::Json(e) => json_error(&e, shape),
        FieldsError::Unparsable => UserError::new(ErrorCode::InvalidBody, UNPARSABLE),
    })?;
    let write_key = match message.get("writeKey").as_deref() {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(other) => {
            return Err(UserError::new(
                ErrorCode::InvalidBody,
                format!(
                    "\"writeKey\" must be a string, found {}",
                    json_type_name(other)
                ),
            ));
        }
    };
    Ok(ParsedRequest {
        write_key,
        defaults: RequestDefaults::default(),
        endpoint_type: Some(message_type),
        items: vec![Ok(message)],
    })
}

fn parse_batch(body: &[u8], import: bool) -> Result<ParsedRequest<'_>, UserError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(UserError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "the body is {} bytes; the limit is {MAX_BATCH_BYTES} bytes (500 KB): send smaller batches",
                body.len()
            ),
        ));
    }
    let shape = "the body must be a JSON object with a \"batch\" array of messages";
    let envelope: BatchEnvelope<'_> =
        serde_json::from_slice(body).map_err(|e| json_error(&e, shape))?;
    let raw_items = envelope.batch.ok_or_else(|| {
        UserError::new(
            ErrorCode::InvalidBody,
            format!("{shape}: \"batch\" is missing"),
        )
    })?;
    if raw_items.len() > MAX_BATCH_MESSAGES {
        return Err(UserError::new(
            ErrorCode::TooManyMessages,
            format!(
                "the batch has {} messages; the limit is {MAX_BATCH_MESSAGES}: split it",
                raw_items.len()
            ),
        ));
    }
    let defaults = RequestDefaults {
        context: optional_object(envelope.context, "context")?,
        integrations: optional_object(envelope.integrations, "integrations")?,
        sent_at: envelope.sent_at.filter(|v| !v.is_null()),
        client_ip: None,
        keep_received_at: import,
    };
    let write_key = match envelope.write_key {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key),
        Some(other) => {
            return Err(UserError::new(
                ErrorCode::InvalidBody,
                format!(
                    "\"writeKey\" must be a string, found {}",
                    json_type_name(&other)
                ),
            ));
        }
    };
    let items = raw_items.into_iter().map(read_batch_item).collect();
    Ok(ParsedRequest {
        write_key,
        defaults,
        endpoint_type: None,
        items,
    })
}

/// Why a message that is valid JSON syntax is refused anyway.
const UNPARSABLE: &str = "the message holds a value JSON parsers refuse: a lone surrogate escape, a number out of range, or nesting deeper than 128";

fn read_batch_item(raw: &RawValue) -> Result<MessageFields<'_>, Rejection> {
    let text = raw.get();
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection {
            code: ErrorCode::MessageTooLarge,
            message: format!(
                "message is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (32 KB)",
                text.len()
            ),
            message_type: None,
            message_id: None,
        });
    }
    MessageFields::from_raw_value(raw).map_err(|e| Rejection {
        code: ErrorCode::InvalidBody,
        message: match e {
            FieldsError::Json(_) => "message must be a JSON object".into(),
            FieldsError::Unparsable => format!("message: {UNPARSABLE}"),
        },
        message_type: None,
        message_id: None,
    })
}

fn optional_object(
    value: Option<Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, UserError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(UserError::new(
            ErrorCode::InvalidBody,
            format!(
                "batch \"{field}\" must be an object, found {}",
                json_type_name(&other)
            ),
        )),
    }
}

/// Maps a serde error to our codes without echoing input (it may hold PII).
fn json_error(error: &serde_json::Error, shape: &str) -> UserError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => UserError::new(
            ErrorCode::InvalidBody,
            format!("{shape} (line {}, column {})", error.line(), error.column()),
        ),
        Category::Syntax | Category::Eof | Category::Io => UserError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body is not valid JSON: {} at line {}, column {}",
                syntax_problem(error),
                error.line(),
                error.column()
            ),
        ),
    }
}

fn syntax_problem(error: &serde_json::Error) -> String {
    // serde_json's syntax messages name tokens, not values; strip its position suffix.
    let text = error.to_string();
    match text.find(" at line ") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

impl ParsedRequest<'_> {
    /// Validates and normalizes every message; `received_at` is the server's now.
    pub fn validate(self, received_at: DateTime<Utc>) -> ValidatedRequest {
        let mut outcome = ValidatedRequest {
            accepted: Vec::with_capacity(self.items.len()),
            rejected: Vec::new(),
        };
        for (index, item) in self.items.into_iter().enumerate() {
            match item.and_then(|message| {
                normalize(message, self.endpoint_type, &self.defaults, received_at)
            }) {
                Ok(message) => outcome.accepted.push(message),
                Err(rejection) => outcome.rejected.push((index, rejection)),
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::NormalizedMessage;
    use proptest::prelude::*;

    fn code_of(body: &[u8], kind: BodyKind) -> Option<ErrorCode> {
        parse_request(body, kind).err().map(|e| e.code)
    }

    #[test]
    fn malformed_and_misshapen_bodies_get_distinct_codes() {
        let track = BodyKind::Single(MessageType::Track);
        assert_eq!(
            code_of(b"{\"userId\":", track),
            Some(ErrorCode::InvalidJson)
        );
        assert_eq!(code_of(b"", BodyKind::Batch), Some(ErrorCode::InvalidJson));
        assert_eq!(code_of(b"[1,2]", track), Some(ErrorCode::InvalidBody));
        assert_eq!(
            code_of(b"{\"batch\": {}}", BodyKind::Batch),
            Some(ErrorCode::InvalidBody)
        );
        assert_eq!(
            code_of(b"{}", BodyKind::Batch),
            Some(ErrorCode::InvalidBody)
        );
        assert_eq!(
            code_of(b"{\"batch\": [], \"context\": 1}", BodyKind::Batch),
            Some(ErrorCode::InvalidBody)
        );
        assert_eq!(
            code_of(b"{\"batch\": [], \"writeKey\": 1}", BodyKind::Batch),
            Some(ErrorCode::InvalidBody)
        );
    }

    #[test]
    fn limits_are_segments() {
        let big = format!(
            "{{\"userId\":\"u\",\"event\":\"E\",\"pad\":\"{}\"}}",
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            code_of(big.as_bytes(), BodyKind::Single(MessageType::Track)),
            Some(ErrorCode::MessageTooLarge)
        );
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert_eq!(
            code_of(&huge, BodyKind::Batch),
            Some(ErrorCode::BatchTooLarge)
        );
        let many = format!(
            "{{\"batch\":[{}]}}",
            vec!["{}"; MAX_BATCH_MESSAGES + 1].join(",")
        );
        assert_eq!(
            code_of(many.as_bytes(), BodyKind::Batch),
            Some(ErrorCode::TooManyMessages)
        );
    }

    #[test]
    fn a_batch_keeps_valid_messages_and_lists_the_rest() {
        let pad = "y".repeat(MAX_MESSAGE_BYTES);
        let body = format!(
            r#"{{"writeKey":"k","sentAt":"2026-11-23T12:00:00Z","context":{{"app":"shop"}},"batch":[
                {{"type":"track","userId":"u","event":"A"}},
                {{"type":"track","userId":"u"}},
                7,
                {{"type":"identify","userId":"u","traits":{{"pad":"{pad}"}}}},
                {{"type":"page","anonymousId":"a"}}
            ]}}"#
        );
        let parsed =
            parse_request(body.as_bytes(), BodyKind::Batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.write_key.as_deref(), Some("k"));
        let outcome = parsed.validate(Utc::now());
        assert_eq!(outcome.accepted.len(), 2);
        let body = outcome.accepted[0].body().unwrap_or_default();
        assert_eq!(body["context"]["app"], "shop");
        let rejected: Vec<_> = outcome.rejected.iter().map(|(i, r)| (*i, r.code)).collect();
        assert_eq!(
            rejected,
            vec![
                (1, ErrorCode::MissingEvent),
                (2, ErrorCode::InvalidBody),
                (3, ErrorCode::MessageTooLarge)
            ]
        );
    }

    #[test]
    fn syntax_errors_do_not_echo_the_body() {
        let err = parse_request(b"{\"email\": \"jane@example.com\" \"x\"}", BodyKind::Batch)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.contains("line 1") && !err.contains("jane"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for kind in [BodyKind::Batch, BodyKind::Import, BodyKind::Single(MessageType::Track)] {
                if let Ok(parsed) = parse_request(&bytes, kind) {
                    let _ = parsed.validate(Utc::now());
                }
            }
        }

        #[test]
        fn any_json_message_validates_or_is_rejected_with_a_code(value in arb_json()) {
            let body = serde_json::json!({"batch": [value.clone()], "context": {"x": 1}}).to_string();
            let parsed = parse_request(body.as_bytes(), BodyKind::Batch);
            prop_assert!(parsed.is_ok());
            if let Ok(parsed) = parsed {
                let outcome = parsed.validate(Utc::now());
                prop_assert_eq!(outcome.accepted.len() + outcome.rejected.len(), 1);
                for message in &outcome.accepted {
                    prop_assert!(message.user_id.is_some() || message.anonymous_id.is_some());
                    prop_assert!(message.body().unwrap_or_default().contains_key("receivedAt"));
                }
            }
            for t in MessageType::ALL {
                let single = serde_json::to_vec(&value).unwrap_or_default();
                if let Ok(parsed) = parse_request(&single, BodyKind::Single(t)) {
                    let _ = parsed.validate(Utc::now());
                }
            }
        }
    }

    /// Normalizes `value` read from its text, and read as an already parsed object; the
    /// two must agree (the first keeps values as sent, the second re-serializes them).
    fn from_text_and_from_map(
        value: &Value,
        text: &str,
    ) -> Option<(
        Result<NormalizedMessage, Rejection>,
        Result<NormalizedMessage, Rejection>,
    )> {
        let Value::Object(map) = value else {
            return None;
        };
        let at = Utc::now();
        let defaults = RequestDefaults::default();
        let lazy = MessageFields::from_json(text)
            .map_err(|e| format!("{e:?}"))
            .ok()?;
        Some((
            normalize(lazy, None, &defaults, at),
            normalize(MessageFields::from_map(map.clone()), None, &defaults, at),
        ))
    }

    /// The stored text as a value, with a generated `messageId` blanked.
    fn comparable(message: &NormalizedMessage, generated_id: bool) -> (Vec<String>, Value) {
        let mut body = message.body().unwrap_or_default();
        if generated_id {
            body.insert("messageId".into(), Value::Null);
        }
        (body.keys().cloned().collect(), Value::Object(body))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn reading_fields_lazily_stores_what_a_full_parse_would(value in prop_oneof![arb_json(), arb_message()], pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            } else {
                value.to_string()
            };
            if let Some((lazy, parsed)) = from_text_and_from_map(&value, &text) {
                match (lazy, parsed) {
                    (Ok(lazy), Ok(parsed)) => {
                        let generated = !matches!(value.get("messageId"), Some(Value::String(id)) if !id.trim().is_empty());
                        prop_assert!(!lazy.payload.contains('\n'));
                        prop_assert_eq!(comparable(&lazy, generated), comparable(&parsed, generated));
                        prop_assert_eq!(lazy.user_id, parsed.user_id);
                        prop_assert_eq!(lazy.anonymous_id, parsed.anonymous_id);
                        prop_assert_eq!(lazy.timestamp, parsed.timestamp);
                        prop_assert_eq!(lazy.message_type, parsed.message_type);
                        if !generated {
                            prop_assert_eq!(lazy.payload, parsed.payload);
                        }
                    }
                    (Err(lazy), Err(parsed)) => prop_assert_eq!(lazy, parsed),
                    (lazy, parsed) => prop_assert!(false, "lazy {:?} vs parsed {:?}", lazy, parsed),
                }
            }
        }
    }

    /// One of the six type names.
    fn arb_type_name() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(MessageType::ALL.map(MessageType::as_str).to_vec())
    }

    /// A message of a valid shape with arbitrary extra fields (which may break it).
    fn arb_message() -> impl Strategy<Value = Value> {
        let kind = arb_type_name();
        let user = prop_oneof![
            ".{1,8}".prop_map(Value::String),
            any::<u32>().prop_map(Value::from),
        ];
        let extras = proptest::collection::btree_map(
            ".{0,6}|context|properties|traits|timestamp|sentAt|messageId",
            arb_json(),
            0..4,
        );
        (kind, user, extras, any::<bool>()).prop_map(|(kind, user, extras, anonymous)| {
            let mut message = serde_json::json!({
                "type": kind, "event": "Product Viewed", "groupId": "g1", "previousId": "p1",
                "timestamp": "2026-11-23T10:59:50.120Z", "sentAt": "2026-11-23T11:00:00Z",
                "context": {"library": {"name": "analytics.js"}, "page": {"url": "https://x.test/?a=1 b"}},
                "properties": {"price": 19.99, "tags": ["a", "b"], "nested": {"ok": true, "n": null}}
            });
            if let Value::Object(map) = &mut message {
                map.insert(if anonymous { "anonymousId" } else { "userId" }.into(), user);
                map.extend(extras);
            }
            message
        })
    }

    /// Arbitrary JSON biased toward Segment-looking messages.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,12}".prop_map(Value::String),
            Just(Value::String("2026-11-23T12:00:00Z".into())),
            arb_type_name().prop_map(|s| Value::String(s.into())),
        ];
        let keys = prop_oneof![
            Just("type".to_string()),
            Just("userId".to_string()),
            Just("anonymousId".to_string()),
            Just("event".to_string()),
            Just("messageId".to_string()),
            Just("timestamp".to_string()),
            Just("sentAt".to_string()),
            Just("originalTimestamp".to_string()),
            Just("receivedAt".to_string()),
            Just("context".to_string()),
            Just("traits".to_string()),
            Just("properties".to_string()),
            Just("groupId".to_string()),
            Just("previousId".to_string()),
            Just("writeKey".to_string()),
            ".{0,6}",
        ];
        leaf.prop_recursive(3, 32, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(keys.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
