//! Segment-spec messages: validation and normalization of one message.
//!
//! A message arrives as a JSON object. [`normalize`] checks it against the Segment spec
//! for its type, fills what the server owns (`messageId` when absent, `receivedAt`, the
//! clock-skew corrected `timestamp`), merges the batch-level `context`/`integrations`,
//! and keeps every other field as sent: unknown fields are the sender's data, not ours
//! to drop. It never panics and never echoes field values in errors (they may be PII).

use crate::error::ErrorCode;
use crate::fields::{JsonKind, MessageFields};
use crate::ids::new_message_id;
use crate::time::{format_timestamp, parse_timestamp};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// The most characters a `messageId` may have.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The earliest time a clock-skew corrected `timestamp` is stored as,
/// 0000-01-01T00:00:00.000Z in Unix milliseconds: the first instant of a four-digit
/// ISO-8601 year, the range the API accepts, so what is stored can be sent again.
pub const MIN_CORRECTED_TIMESTAMP_MS: i64 = -62_167_219_200_000;
/// The latest time a clock-skew corrected `timestamp` is stored as,
/// 9999-12-31T23:59:59.999Z in Unix milliseconds.
pub const MAX_CORRECTED_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// The six Segment message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Who the user is, with traits.
    Identify,
    /// An action the user performed.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user joined a group (account).
    Group,
    /// Links a previous identity to a user id.
    Alias,
}

impl MessageType {
    /// Every type, in spec order.
    pub const ALL: [MessageType; 6] = [
        MessageType::Identify,
        MessageType::Track,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];

    /// The wire name (`identify`, `track`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    /// Parses a wire name; `None` when it is not a Segment message type.
    pub fn parse(name: &str) -> Option<Self> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one message was not accepted. The message says what to fix, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stable code.
    pub code: ErrorCode,
    /// Human explanation, e.g. `track message: "event" is required`.
    pub message: String,
    /// The message type, when it could be read.
    pub message_type: Option<MessageType>,
    /// The `messageId`, when it could be read (not PII; helps find the message).
    pub message_id: Option<String>,
}

/// What applies to every message of one request.
#[derive(Debug, Clone, Default)]
pub struct RequestDefaults {
    /// The batch's top-level `context`, merged under each message's own.
    pub context: Option<Map<String, Value>>,
    /// The batch's top-level `integrations`, merged under each message's own.
    pub integrations: Option<Map<String, Value>>,
    /// The batch's top-level `sentAt`, used when a message has none.
    pub sent_at: Option<Value>,
    /// The client's IP address, set as `context.ip` when the message has none
    /// (browser endpoints only: server SDKs would report their own address).
    pub client_ip: Option<String>,
    /// Historical import: a valid `receivedAt` in the message is kept instead of stamped.
    pub keep_received_at: bool,
}

/// A message that passed validation, ready to append to the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedMessage {
    /// Its type.
    pub message_type: MessageType,
    /// Its `messageId` (generated when absent).
    pub message_id: String,
    /// `userId` as a string, when present.
    pub user_id: Option<String>,
    /// `anonymousId` as a string, when present.
    pub anonymous_id: Option<String>,
    /// The skew-corrected event time.
    pub timestamp: DateTime<Utc>,
    /// When Tessera received it.
    pub received_at: DateTime<Utc>,
    /// The full stored message as compact JSON text (one line).
    pub payload: String,
}

impl NormalizedMessage {
    /// The stored message as a parsed object (for the rare reader that needs to walk
    /// it: suppression screening, tests).
    pub fn body(&self) -> serde_json::Result<Map<String, Value>> {
        serde_json::from_str(&self.payload)
    }
}

/// Validates and normalizes one message.
///
/// `endpoint_type` is the type the endpoint implies (`/v1/track`); `None` for batch
/// items, whose `type` field decides. `received_at` is the server clock's now.
pub fn normalize(
    mut body: MessageFields<'_>,
    endpoint_type: Option<MessageType>,
    defaults: &RequestDefaults,
    received_at: DateTime<Utc>,
) -> Result<NormalizedMessage, Rejection> {
    let message_type = match endpoint_type {
        Some(t) => t,
        None => match body.get_str("type") {
            Some(name) => MessageType::parse(&name).ok_or_else(|| {
                reject_untyped(
                    &body,
                    ErrorCode::InvalidType,
                    "\"type\" must be one of identify, track, page, screen, group, alias".into(),
                )
            })?,
            None => {
                return Err(reject_untyped(
                    &body,
                    ErrorCode::InvalidType,
                    "\"type\" is required: one of identify, track, page, screen, group, alias"
                        .into(),
                ));
            }
        },
    };
    let supplied_id = body.get("messageId").map(Cow::into_owned);
    let checker = Checker {
        message_type,
        message_id: supplied_id
            .as_ref()
            .and_then(Value::as_str)
            .map(|id| id.chars().take(MAX_MESSAGE_ID_CHARS).collect()),
    };
    body.set("type", Value::String(message_type.as_str().into()));
    // A write key is a secret: it authenticates the request and is never stored.
    body.remove("writeKey");

    let message_id = match supplied_id {
        None | Some(Value::Null) => new_message_id(),
        Some(Value::String(id)) if id.trim().is_empty() => new_message_id(),
        Some(Value::String(id)) if id.chars().count() > MAX_MESSAGE_ID_CHARS => {
            return Err(checker.reject(
                ErrorCode::MessageIdTooLong,
                format!("\"messageId\" must be at most {MAX_MESSAGE_ID_CHARS} characters"),
            ));
        }
        Some(Value::String(id)) => id,
        Some(other) => return Err(checker.wrong_type("messageId", "a string", &other)),
    };
    body.set("messageId", Value::String(message_id.clone()));

    let user_id = checker.identifier(&mut body, "userId")?;
    let anonymous_id = checker.identifier(&mut body, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(checker.reject(
            ErrorCode::MissingUserId,
            "\"userId\" or \"anonymousId\" is required".into(),
        ));
    }

    for field in ["context", "integrations", "properties", "traits"] {
        checker.expect_kind(&body, field, JsonKind::Object)?;
    }
    match message_type {
        MessageType::Track => match body.get("event").as_deref() {
            Some(Value::String(event)) if !event.trim().is_empty() => {}
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(checker.reject(ErrorCode::MissingEvent, "\"event\" is required".into()));
            }
            Some(other) => return Err(checker.wrong_type("event", "a string", other)),
        },
        MessageType::Page | MessageType::Screen => {
            checker.expect_kind(&body, "name", JsonKind::String)?;
            checker.expect_kind(&body, "category", JsonKind::String)?;
        }
        MessageType::Group => {
            if checker.identifier(&mut body, "groupId")?.is_none() {
                return Err(
                    checker.reject(ErrorCode::MissingGroupId, "\"groupId\" is required".into())
                );
            }
        }
        MessageType::Alias => {
            if checker.identifier(&mut body, "previousId")?.is_none() {
                return Err(checker.reject(
                    ErrorCode::MissingPreviousId,
                    "\"previousId\" is required".into(),
                ));
            }
        }
        MessageType::Identify => {}
    }

    merge_defaults(&mut body, "context", defaults.context.as_ref());
    merge_defaults(&mut body, "integrations", defaults.integrations.as_ref());
    if let Some(ip) = &defaults.client_ip {
        set_context_ip(&mut body, ip);
    }

    // A historical message that carries its `receivedAt` was received by a server
    // before (an export of Tessera or Segment): its `timestamp` is that server's
    // corrected time already, kept as it is, so export then import is an exact copy.
    let stored_before = if defaults.keep_received_at {
        checker.timestamp(&body, "receivedAt")?
    } else {
        None
    };
    let received_at = stored_before.unwrap_or(received_at);
    let timestamp = if stored_before.is_some() {
        // Received by a server before (an export): kept as stored, no second correction.
        checker
            .timestamp(&body, "timestamp")?
            .unwrap_or(received_at)
    } else {
        if !body.contains("sentAt")
            && let Some(sent_at) = &defaults.sent_at
        {
            body.set("sentAt", sent_at.clone());
        }
        let sent_at = checker.timestamp(&body, "sentAt")?;
        // The client's own clock reading: `originalTimestamp` when an earlier hop kept it
        // (re-import of an export), else the `timestamp` the SDK set.
        let original_field = if body.contains("originalTimestamp") {
            "originalTimestamp"
        } else {
            "timestamp"
        };
        let original = checker.timestamp(&body, original_field)?;
        let timestamp = match (original, sent_at) {
            // The device clock may be wrong; the time elapsed between the event and its
            // sending is not. Segment's rule: receivedAt - (sentAt - originalTimestamp).
            // A correction outside four-digit years (a `sentAt` or `timestamp` years off)
            // is clamped to them and flagged as `context.tessera.timestampClamped`.
            (Some(original), Some(sent_at)) => {
                let corrected = received_at
                    .checked_sub_signed(sent_at - original)
                    .ok_or_else(|| {
                        checker.reject(
                            ErrorCode::InvalidTimestamp,
                            "\"sentAt\" and \"timestamp\" are too far apart to correct the clock skew"
                                .into(),
                        )
                    })?;
                let (clamped, changed) = clamp_corrected(corrected);
                if changed {
                    flag_clamped_timestamp(&mut body);
                }
                clamped
            }
            (Some(original), None) => original,
            (None, _) => received_at,
        };
        if original_field == "timestamp"
            && let Some(client_value) = body.get("timestamp").map(Cow::into_owned)
        {
            body.set("originalTimestamp", client_value);
        }
        timestamp
    };
    body.set("timestamp", Value::String(format_timestamp(timestamp)));
    body.set("receivedAt", Value::String(format_timestamp(received_at)));
    let payload = body.to_json().map_err(|_| {
        checker.reject(
            ErrorCode::InvalidBody,
            "the message could not be written as JSON".into(),
        )
    })?;

    Ok(NormalizedMessage {
        message_type,
        message_id,
        user_id,
        anonymous_id,
        timestamp,
        received_at,
        payload,
    })
}

fn reject_untyped(body: &MessageFields<'_>, code: ErrorCode, message: String) -> Rejection {
    Rejection {
        code,
        message: format!("message: {message}"),
        message_type: None,
        message_id: body
            .get_str("messageId")
            .map(|id| id.chars().take(MAX_MESSAGE_ID_CHARS).collect()),
    }
}

/// Builds rejections that name the message type and field.
struct Checker {
    message_type: MessageType,
    message_id: Option<String>,
}

impl Checker {
    fn reject(&self, code: ErrorCode, detail: String) -> Rejection {
        Rejection {
            code,
            message: format!("{} message: {detail}", self.message_type),
            message_type: Some(self.message_type),
            message_id: self.message_id.clone(),
        }
    }

    fn wrong_type(&self, field: &str, expected: &str, found: &Value) -> Rejection {
        self.wrong_kind(field, expected, JsonKind::of(found))
    }

    fn wrong_kind(&self, field: &str, expected: &str, found: JsonKind) -> Rejection {
        self.reject(
            ErrorCode::InvalidFieldType,
            format!("\"{field}\" must be {expected}, found {}", found.name()),
        )
    }

    /// Reads an identifier field (string or number), rewriting numbers as strings.
    /// Empty strings and `null` count as absent.
    fn identifier(
        &self,
        body: &mut MessageFields<'_>,
        field: &'static str,
    ) -> Result<Option<String>, Rejection> {
        let (text, was_string) = match body.get(field).map(Cow::into_owned) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => (s, true),
            Some(Value::Number(n)) => (n.to_string(), false),
            Some(other) => return Err(self.wrong_type(field, "a string", &other)),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if !was_string {
            body.set(field, Value::String(text.clone()));
        }
        Ok(Some(text))
    }

    /// An optional field must be `null` or of `kind` when present.
    fn expect_kind(
        &self,
        body: &MessageFields<'_>,
        field: &str,
        kind: JsonKind,
    ) -> Result<(), Rejection> {
        match body.kind(field) {
            None | Some(JsonKind::Null) => Ok(()),
            Some(found) if found == kind => Ok(()),
            Some(found) => Err(self.wrong_kind(field, kind.name(), found)),
        }
    }

    fn timestamp(
        &self,
        body: &MessageFields<'_>,
        field: &str,
    ) -> Result<Option<DateTime<Utc>>, Rejection> {
        match body.get(field).as_deref() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => parse_timestamp(text).map(Some).ok_or_else(|| {
                self.reject(
                    ErrorCode::InvalidTimestamp,
                    format!(
                        "\"{field}\" must be an ISO-8601 date-time such as 2026-11-23T11:09:55.123Z"
                    ),
                )
            }),
            Some(other) => Err(self.wrong_type(field, "an ISO-8601 date-time string", other)),
        }
    }
}

/// Fills keys of `defaults` that the message's own object does not set.
fn merge_defaults<'a>(
    body: &mut MessageFields<'a>,
    field: &'a str,
    defaults: Option<&Map<String, Value>>,
) {
    let Some(defaults) = defaults.filter(|d| !d.is_empty()) else {
        return;
    };
    let mut own = match body.get(field).map(Cow::into_owned) {
        Some(Value::Object(own)) => own,
        _ => Map::new(),
    };
    for (key, value) in defaults {
        if !own.contains_key(key) {
            own.insert(key.clone(), value.clone());
        }
    }
    body.set(field, Value::Object(own));
}

/// A corrected time within [`MIN_CORRECTED_TIMESTAMP_MS`]..=[`MAX_CORRECTED_TIMESTAMP_MS`],
/// and whether it had to be moved there.
fn clamp_corrected(corrected: DateTime<Utc>) -> (DateTime<Utc>, bool) {
    let millis = corrected.timestamp_millis();
    let bounded = millis.clamp(MIN_CORRECTED_TIMESTAMP_MS, MAX_CORRECTED_TIMESTAMP_MS);
    if bounded == millis {
        return (corrected, false);
    }
    (
        DateTime::from_timestamp_millis(bounded).unwrap_or(corrected),
        true,
    )
}

/// Sets `context.tessera.timestampClamped` to true, keeping the rest of `context`.
fn flag_clamped_timestamp(body: &mut MessageFields<'_>) {
    let mut context = match body.get("context").map(Cow::into_owned) {
        Some(Value::Object(context)) => context,
        _ => Map::new(),
    };
    let tessera = context
        .entry("tessera")
        .or_insert_with(|| Value::Object(Map::new()));
    if !tessera.is_object() {
        *tessera = Value::Object(Map::new());
    }
    if let Value::Object(tessera) = tessera {
        tessera.insert("timestampClamped".into(), Value::Bool(true));
    }
    body.set("context", Value::Object(context));
}

fn set_context_ip(body: &mut MessageFields<'_>, ip: &str) {
    let mut context = match body.get("context").map(Cow::into_owned) {
        Some(Value::Object(context)) => context,
        _ => Map::new(),
    };
    if !context.contains_key("ip") {
        context.insert("ip".into(), Value::String(ip.into()));
        body.set("context", Value::Object(context));
    }
}

/// The JSON type name used in error messages (`an array`, `a number`, ...).
pub fn json_type_name(value: &Value) -> &'static str {
    JsonKind::of(value).name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        parse_timestamp(text).unwrap_or_default()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn run(value: Value, endpoint: Option<MessageType>) -> Result<NormalizedMessage, Rejection> {
        normalize(
            MessageFields::from_map(object(value)),
            endpoint,
            &RequestDefaults::default(),
            at("2026-11-23T12:00:00Z"),
        )
    }

    fn body_of(message: &NormalizedMessage) -> Map<String, Value> {
        message.body().unwrap_or_else(|e| panic!("{e}"))
    }

    fn code_of(value: Value, endpoint: Option<MessageType>) -> Option<ErrorCode> {
        run(value, endpoint).err().map(|r| r.code)
    }

    #[test]
    fn each_type_has_its_required_field() {
        use MessageType::*;
        let cases = [
            (json!({"userId": "u"}), Track, Some(ErrorCode::MissingEvent)),
            (
                json!({"userId": "u", "event": ""}),
                Track,
                Some(ErrorCode::MissingEvent),
            ),
            (
                json!({"userId": "u", "event": 3}),
                Track,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": "u", "event": "Order Completed"}),
                Track,
                None,
            ),
            (
                json!({"userId": "u"}),
                Alias,
                Some(ErrorCode::MissingPreviousId),
            ),
            (json!({"userId": "u", "previousId": "a"}), Alias, None),
            (
                json!({"userId": "u"}),
                Group,
                Some(ErrorCode::MissingGroupId),
            ),
            (json!({"userId": "u", "groupId": 42}), Group, None),
            (json!({"anonymousId": "a"}), Identify, None),
            (
                json!({"traits": {}}),
                Identify,
                Some(ErrorCode::MissingUserId),
            ),
            (
                json!({"userId": "", "anonymousId": null}),
                Page,
                Some(ErrorCode::MissingUserId),
            ),
            (
                json!({"userId": "u", "name": 5}),
                Page,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": "u", "traits": "x"}),
                Identify,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": ["u"]}),
                Screen,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": "u", "properties": []}),
                Screen,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": "u", "timestamp": "soon"}),
                Screen,
                Some(ErrorCode::InvalidTimestamp),
            ),
            (
                json!({"userId": "u", "timestamp": 17}),
                Screen,
                Some(ErrorCode::InvalidFieldType),
            ),
            (
                json!({"userId": "u", "messageId": "x".repeat(101)}),
                Screen,
                Some(ErrorCode::MessageIdTooLong),
            ),
            (
                json!({"userId": "u", "messageId": "x".repeat(100)}),
                Screen,
                None,
            ),
        ];
        for (message, endpoint, expected) in cases {
            assert_eq!(
                code_of(message.clone(), Some(endpoint)),
                expected,
                "{endpoint} {message}"
            );
        }
    }

    #[test]
    fn batch_items_need_a_known_type() {
        assert_eq!(
            code_of(json!({"userId": "u"}), None),
            Some(ErrorCode::InvalidType)
        );
        assert_eq!(
            code_of(json!({"userId": "u", "type": "tracks"}), None),
            Some(ErrorCode::InvalidType)
        );
        assert_eq!(
            code_of(json!({"userId": "u", "type": "identify"}), None),
            None
        );
    }

    #[test]
    fn endpoint_type_wins_and_ids_become_strings() {
        let normalized = run(
            json!({"type": "identify", "userId": 42, "event": "E"}),
            Some(MessageType::Track),
        );
        let normalized = normalized.unwrap_or_else(|r| panic!("{r:?}"));
        let body = body_of(&normalized);
        assert_eq!(body["type"], "track");
        assert_eq!(body["userId"], "42");
        assert_eq!(normalized.user_id.as_deref(), Some("42"));
    }

    #[test]
    fn server_fields_are_filled_and_unknown_fields_kept() {
        let normalized = run(
            json!({"userId": "u", "writeKey": "secret", "custom": {"a": [1, 2]}}),
            Some(MessageType::Identify),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        let body = body_of(&normalized);
        assert_eq!(normalized.message_id.len(), 36);
        assert_eq!(body["messageId"], normalized.message_id.as_str());
        assert_eq!(body["receivedAt"], "2026-11-23T12:00:00.000Z");
        assert_eq!(body["timestamp"], "2026-11-23T12:00:00.000Z");
        assert_eq!(body["custom"], json!({"a": [1, 2]}));
        assert!(!body.contains_key("writeKey"));
        assert!(!body.contains_key("originalTimestamp"));
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        // The device clock runs one hour behind; the event happened 10 s before sending.
        let normalized = run(
            json!({"userId": "u", "event": "E",
                   "timestamp": "2026-11-23T10:59:50.000Z", "sentAt": "2026-11-23T11:00:00.000Z"}),
            Some(MessageType::Track),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        let body = body_of(&normalized);
        assert_eq!(body["timestamp"], "2026-11-23T11:59:50.000Z");
        assert_eq!(body["originalTimestamp"], "2026-11-23T10:59:50.000Z");
        assert_eq!(body["sentAt"], "2026-11-23T11:00:00.000Z");
    }

    #[test]
    fn a_correction_outside_four_digit_years_is_clamped_and_flagged() {
        for (timestamp, sent_at, stored) in [
            // Corrected into year -7974 and year 12026.
            (
                "0001-01-01T00:00:00Z",
                "9999-01-01T00:00:00Z",
                "0000-01-01T00:00:00.000Z",
            ),
            (
                "9999-01-01T00:00:00Z",
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999Z",
            ),
        ] {
            let normalized = run(
                json!({"userId": "u", "event": "E", "context": {"ip": "1.2.3.4"},
                       "timestamp": timestamp, "sentAt": sent_at}),
                Some(MessageType::Track),
            )
            .unwrap_or_else(|r| panic!("{r:?}"));
            let body = body_of(&normalized);
            assert_eq!(body["timestamp"], stored);
            assert_eq!(format_timestamp(normalized.timestamp), stored);
            assert_eq!(body["originalTimestamp"], timestamp);
            assert_eq!(body["context"]["tessera"]["timestampClamped"], true);
            assert_eq!(body["context"]["ip"], "1.2.3.4");
            // What is stored can be sent again.
            assert!(parse_timestamp(stored).is_some());
        }
        // A correction within the range is not flagged.
        let normalized = run(
            json!({"userId": "u", "event": "E",
                   "timestamp": "0001-01-01T00:00:00Z", "sentAt": "0001-01-01T00:00:10Z"}),
            Some(MessageType::Track),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        assert!(!body_of(&normalized).contains_key("context"));
    }

    proptest::proptest! {
        #[test]
        fn corrected_timestamps_stay_within_four_digit_years(
            timestamp in MIN_CORRECTED_TIMESTAMP_MS..=MAX_CORRECTED_TIMESTAMP_MS,
            sent_at in MIN_CORRECTED_TIMESTAMP_MS..=MAX_CORRECTED_TIMESTAMP_MS,
        ) {
            let text = |ms: i64| DateTime::from_timestamp_millis(ms).map(format_timestamp).unwrap_or_default();
            let normalized = run(
                json!({"userId": "u", "event": "E", "timestamp": text(timestamp), "sentAt": text(sent_at)}),
                Some(MessageType::Track),
            );
            let normalized = normalized.map_err(|r| proptest::test_runner::TestCaseError::fail(format!("{r:?}")))?;
            let millis = normalized.timestamp.timestamp_millis();
            proptest::prop_assert!((MIN_CORRECTED_TIMESTAMP_MS..=MAX_CORRECTED_TIMESTAMP_MS).contains(&millis));
            let body = body_of(&normalized);
            let stored = body["timestamp"].as_str().unwrap_or_default().to_string();
            proptest::prop_assert_eq!(parse_timestamp(&stored).map(|t| t.timestamp_millis()), Some(millis));
            let expected = at("2026-11-23T12:00:00Z").timestamp_millis() - (sent_at - timestamp);
            let flagged = body.get("context").is_some_and(|c| c["tessera"]["timestampClamped"] == true);
            proptest::prop_assert_eq!(flagged, expected != millis);
        }
    }

    #[test]
    fn renormalizing_an_import_keeps_its_times() {
        let first = run(
            json!({"userId": "u", "event": "E",
                   "timestamp": "2026-11-23T10:59:50.000Z", "sentAt": "2026-11-23T11:00:00.000Z"}),
            Some(MessageType::Track),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        let defaults = RequestDefaults {
            keep_received_at: true,
            ..Default::default()
        };
        let again = normalize(
            MessageFields::from_json(&first.payload).unwrap_or_else(|e| panic!("{e:?}")),
            None,
            &defaults,
            at("2027-01-01T00:00:00Z"),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(again.payload, first.payload);
    }

    #[test]
    fn reimporting_a_stored_message_changes_nothing() {
        // Sent without a timestamp, and with a sentAt but no timestamp: what an export
        // prints must come back byte for byte (no `originalTimestamp` added, no second
        // skew correction).
        let defaults = RequestDefaults {
            keep_received_at: true,
            ..Default::default()
        };
        for sent in [
            json!({"userId": "u", "event": "E"}),
            json!({"userId": "u", "event": "E", "sentAt": "2026-11-23T11:00:00.000Z"}),
            json!({"userId": "u", "event": "E", "timestamp": "2026-11-23T10:59:50.000Z",
                   "sentAt": "2026-11-23T11:00:00.000Z"}),
            json!({"userId": "u", "event": "E", "timestamp": "2026-11-20T10:00:00Z"}),
        ] {
            let stored =
                run(sent.clone(), Some(MessageType::Track)).unwrap_or_else(|r| panic!("{r:?}"));
            let again = normalize(
                MessageFields::from_json(&stored.payload).unwrap_or_else(|e| panic!("{e:?}")),
                None,
                &defaults,
                at("2027-01-01T00:00:00Z"),
            )
            .unwrap_or_else(|r| panic!("{r:?}"));
            assert_eq!(again.payload, stored.payload, "{sent}");
            assert_eq!(again.timestamp, stored.timestamp);
            assert_eq!(again.received_at, stored.received_at);
        }
    }

    #[test]
    fn batch_defaults_fill_but_never_override() {
        let defaults = RequestDefaults {
            context: Some(object(
                json!({"library": {"name": "batch"}, "locale": "de-DE"}),
            )),
            integrations: Some(object(json!({"All": false}))),
            sent_at: Some(json!("2026-11-23T12:00:00Z")),
            client_ip: Some("203.0.113.9".into()),
            keep_received_at: false,
        };
        let normalized = normalize(
            MessageFields::from_map(object(
                json!({"userId": "u", "event": "E", "context": {"locale": "fr-FR"}}),
            )),
            Some(MessageType::Track),
            &defaults,
            at("2026-11-23T12:00:00Z"),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        let body = body_of(&normalized);
        assert_eq!(
            body["context"],
            json!({"locale": "fr-FR", "library": {"name": "batch"}, "ip": "203.0.113.9"})
        );
        assert_eq!(body["integrations"], json!({"All": false}));
        assert_eq!(body["sentAt"], "2026-11-23T12:00:00Z");
    }

    #[test]
    fn rejections_never_echo_values() {
        let secret = "jane@example.com";
        for message in [
            json!({"userId": {"email": secret}}),
            json!({"userId": "u", "timestamp": secret}),
            json!({"userId": "u", "event": [secret]}),
        ] {
            let rejection = run(message, Some(MessageType::Track)).err();
            let text = rejection.map(|r| r.message).unwrap_or_default();
            assert!(!text.is_empty() && !text.contains(secret), "{text}");
        }
    }
}
