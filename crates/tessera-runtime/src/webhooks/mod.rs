//! Webhook sources: a source whose events arrive as a third party's webhook
//! (`POST /v1/webhooks/{sourceId}`) instead of as Segment messages.
//!
//! Each webhook source has a secret and a preset (`shopify`, `woocommerce`,
//! `stripe`, `generic`), stored in the catalog under `webhook_source/<source id>`.
//! [`handle`] is pure: it checks the sender's signature over the raw body, then maps
//! the payload to Segment messages with a `messageId` derived from the sender's
//! event id (so a sender's retries are stored once). A payload no mapping covers is
//! kept as a `Webhook Received` track holding its body, never dropped.
//!
//! The secret is stored as given (a signature check needs it), unlike write keys; it
//! is never shown again by the API or the CLI.

pub mod generic;
pub mod presets;
pub mod signature;

use crate::json_depth::depth;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::{ErrorCode, UserError};
use tessera_store::{Catalog, Source, StoreError};

/// Largest webhook body, in bytes.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 256 * 1024;
/// Deepest JSON nesting of a webhook body that is parsed; deeper bodies are kept as
/// text.
pub const MAX_BODY_DEPTH: usize = 64;
/// Longest secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 1_024;
/// Shortest secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 8;
/// The event name of a payload no mapping covers.
pub const WEBHOOK_RECEIVED: &str = "Webhook Received";
/// The catalog key prefix of webhook source configurations.
pub const CONFIG_PREFIX: &str = "webhook_source/";
/// A `Webhook Received` body above this many bytes is not copied into the message
/// (the stored message must stay under the 32 KB message limit).
const MAX_KEPT_BODY_BYTES: usize = 24 * 1024;
/// Largest mapped message before its `messageId` and context are added.
const MAX_MAPPED_MESSAGE_BYTES: usize = 30 * 1024;
/// Longest `messageId` (Segment's limit).
const MAX_MESSAGE_ID_CHARS: usize = 100;
/// How long a configuration lookup is trusted.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Which sender a webhook source expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Shopify (`X-Shopify-Hmac-Sha256`, `X-Shopify-Topic`).
    Shopify,
    /// WooCommerce (`X-WC-Webhook-Signature`, `X-WC-Webhook-Topic`).
    Woocommerce,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// Anything else, through a mapping of JSON pointers.
    Generic,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Preset::Shopify,
        Preset::Woocommerce,
        Preset::Stripe,
        Preset::Generic,
    ];

    /// The preset's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Shopify => "shopify",
            Preset::Woocommerce => "woocommerce",
            Preset::Stripe => "stripe",
            Preset::Generic => "generic",
        }
    }

    /// The preset of a name.
    pub fn parse(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A webhook source's stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// The sender.
    pub preset: Preset,
    /// The shared secret the sender signs with.
    pub secret: String,
    /// The generic preset's mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Value>,
    /// The generic preset's signature header (default `X-Signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
}

/// The generic preset's default signature header.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-signature-256";

/// A configuration ready to check and map requests.
#[derive(Debug, Clone)]
pub struct CompiledWebhook {
    /// The sender.
    pub preset: Preset,
    secret: Vec<u8>,
    mapping: Option<generic::GenericMapping>,
    signature_header: String,
}

/// Errors of webhook sources.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The caller's input was wrong (configuration, body size, signature).
    #[error(transparent)]
    User(#[from] UserError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl tessera_core::CodedError for WebhookError {
    fn code(&self) -> ErrorCode {
        match self {
            WebhookError::User(user) => user.code,
            WebhookError::Store(_) => ErrorCode::InternalError,
        }
    }

    fn user_message(&self) -> String {
        match self {
            WebhookError::User(user) => user.message.clone(),
            WebhookError::Store(store) => store.to_string(),
        }
    }
}

impl From<StoreError> for WebhookError {
    fn from(error: StoreError) -> Self {
        WebhookError::Store(error)
    }
}

fn invalid_config(message: impl Into<String>) -> WebhookError {
    UserError::new(ErrorCode::InvalidWebhookConfig, message).into()
}

impl WebhookConfig {
    /// Checks and compiles the configuration.
    pub fn compile(&self) -> Result<CompiledWebhook, WebhookError> {
        let secret = self.secret.trim();
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len()) {
            return Err(invalid_config(format!(
                "the secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes: use the signing secret the sender shows (Stripe: whsec_…; Shopify: the app's client secret; WooCommerce: the webhook's secret)"
            )));
        }
        let mapping = match (self.preset, &self.mapping) {
            (Preset::Generic, Some(spec)) => Some(
                generic::GenericMapping::compile(spec)
                    .map_err(|e| invalid_config(format!("mapping: {e}")))?,
            ),
            (Preset::Generic, None) => None,
            (other, Some(_)) => {
                return Err(invalid_config(format!(
                    "the {} preset has a built-in mapping; \"mapping\" is for the generic preset",
                    other.as_str()
                )));
            }
            (_, None) => None,
        };
        let signature_header = match (&self.signature_header, self.preset) {
            (None, _) => DEFAULT_SIGNATURE_HEADER.to_owned(),
            (Some(name), Preset::Generic) => {
                let valid = !name.is_empty()
                    && name.len() <= 100
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(invalid_config(
                        "\"signatureHeader\" must be an HTTP header name (letters, digits, - and _)",
                    ));
                }
                name.to_ascii_lowercase()
            }
            (Some(_), _) => {
                return Err(invalid_config(
                    "\"signatureHeader\" is for the generic preset; the others use their sender's header",
                ));
            }
        };
        Ok(CompiledWebhook {
            preset: self.preset,
            secret: secret.as_bytes().to_vec(),
            mapping,
            signature_header,
        })
    }

    /// The configuration as shown to users: everything but the secret.
    pub fn public_json(&self, source_id: &str) -> Value {
        let mut body = json!({
            "sourceId": source_id,
            "preset": self.preset.as_str(),
            "secret": "***",
            "url": format!("/v1/webhooks/{source_id}"),
        });
        if let Some(mapping) = &self.mapping {
            body["mapping"] = mapping.clone();
        }
        if let Some(header) = &self.signature_header {
            body["signatureHeader"] = header.clone().into();
        }
        body
    }
}

/// Reads the configuration JSON the API and CLI take:
/// `{"preset", "secret", "mapping"?, "signatureHeader"?}`.
pub fn parse_config(body: &[u8]) -> Result<WebhookConfig, WebhookError> {
    if body.len() > generic::MAX_MAPPING_BYTES + MAX_SECRET_BYTES + 1_024 {
        return Err(invalid_config(format!(
            "the configuration is too large (the mapping may be {} bytes)",
            generic::MAX_MAPPING_BYTES
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        invalid_config(
            "send JSON such as {\"preset\": \"shopify\", \"secret\": \"…\"} (generic: add \"mapping\")",
        )
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid_config("the configuration must be a JSON object"))?;
    for key in object.keys() {
        if !["preset", "secret", "mapping", "signatureHeader"].contains(&key.as_str()) {
            return Err(invalid_config(format!(
                "unknown field {key:?}: use preset, secret, mapping, signatureHeader"
            )));
        }
    }
    let preset_name = object
        .get("preset")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid_config("\"preset\" is required: shopify, woocommerce, stripe or generic")
        })?;
    let preset = Preset::parse(preset_name).ok_or_else(|| {
        invalid_config(format!(
            "unknown preset {preset_name:?}: use shopify, woocommerce, stripe or generic"
        ))
    })?;
    let secret = object
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_config("\"secret\" (a string) is required"))?
        .to_owned();
    let signature_header = match object.get("signatureHeader") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid_config("\"signatureHeader\" must be a string")),
    };
    let config = WebhookConfig {
        preset,
        secret,
        mapping: object.get("mapping").filter(|m| !m.is_null()).cloned(),
        signature_header,
    };
    config.compile()?;
    Ok(config)
}

/// Stores a source's webhook configuration (checked first).
pub fn set_config(
    catalog: &dyn Catalog,
    source: &Source,
    config: &WebhookConfig,
) -> Result<(), WebhookError> {
    config.compile()?;
    let text = serde_json::to_string(config)
        .map_err(|e| WebhookError::Store(StoreError::Engine(e.to_string())))?;
    catalog.set_setting(&format!("{CONFIG_PREFIX}{}", source.id), &text)?;
    Ok(())
}

/// A source's webhook configuration, if it has one.
pub fn config(
    catalog: &dyn Catalog,
    source_id: &str,
) -> Result<Option<WebhookConfig>, WebhookError> {
    let Some(text) = catalog.setting(&format!("{CONFIG_PREFIX}{source_id}"))? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        WebhookError::Store(StoreError::Engine(format!(
            "webhook configuration of {source_id}: {e}"
        )))
    })
}

/// Removes a source's webhook configuration; whether it had one.
pub fn delete_config(catalog: &dyn Catalog, source_id: &str) -> Result<bool, WebhookError> {
    Ok(catalog.delete_setting(&format!("{CONFIG_PREFIX}{source_id}"))?)
}

/// The headers of a webhook request the mappings look at, by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct WebhookHeaders(HashMap<String, String>);

impl WebhookHeaders {
    /// Headers from `(name, value)` pairs (names in any case; the first of a repeated
    /// header wins).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map = HashMap::new();
        for (name, value) in pairs {
            map.entry(name.to_ascii_lowercase())
                .or_insert_with(|| value.to_owned());
        }
        Self(map)
    }

    /// A header's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// What a webhook request comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookOutcome {
    /// A sender's test delivery with nothing to store (WooCommerce's ping).
    Ping,
    /// Segment messages to store, each with `type` and `messageId`.
    Messages(Vec<Map<String, Value>>),
}

fn bad_signature(problem: signature::SignatureProblem) -> WebhookError {
    UserError::new(ErrorCode::InvalidWebhookSignature, problem.0).into()
}

fn body_sha256(body: &[u8]) -> String {
    signature::to_hex(&sha2::Sha256::digest(body))[..32].to_owned()
}

/// Checks a webhook request's signature and maps its body; `now` is the injected
/// clock's time (Stripe's timestamp tolerance).
pub fn handle(
    source_id: &str,
    config: &CompiledWebhook,
    headers: &WebhookHeaders,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<WebhookOutcome, WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(UserError::new(
            ErrorCode::WebhookBodyTooLarge,
            format!(
                "the webhook body is {} bytes; the limit is {MAX_WEBHOOK_BODY_BYTES}",
                body.len()
            ),
        )
        .into());
    }
    let secret = &config.secret;
    let topic: Option<String> = match config.preset {
        Preset::Shopify => {
            signature::verify_base64_body(
                secret,
                body,
                headers.get("x-shopify-hmac-sha256"),
                "X-Shopify-Hmac-Sha256",
            )
            .map_err(bad_signature)?;
            headers.get("x-shopify-topic").map(str::to_owned)
        }
        Preset::Woocommerce => {
            let signed = headers.get("x-wc-webhook-signature");
            if signed.is_none() && is_woocommerce_ping(body) {
                return Ok(WebhookOutcome::Ping);
            }
            signature::verify_base64_body(secret, body, signed, "X-WC-Webhook-Signature")
                .map_err(bad_signature)?;
            headers.get("x-wc-webhook-topic").map(str::to_owned)
        }
        Preset::Stripe => {
            signature::verify_stripe(
                secret,
                body,
                headers.get("stripe-signature"),
                now.timestamp(),
            )
            .map_err(bad_signature)?;
            None
        }
        Preset::Generic => {
            let name = config.signature_header.as_str();
            signature::verify_generic(secret, body, headers.get(name), name)
                .map_err(bad_signature)?;
            None
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(body)
        .ok()
        .filter(|v: &Value| depth(v) <= MAX_BODY_DEPTH);
    let Some(value) = parsed else {
        // Not JSON (or too deep to map): kept as text, its id from the body's hash.
        let kept = webhook_received(source_id, config.preset, topic.as_deref(), body, None, None);
        let base_id = format!("{}:sha256:{}", config.preset.as_str(), body_sha256(body));
        return Ok(WebhookOutcome::Messages(finish(
            vec![kept],
            &base_id,
            source_id,
            config.preset,
            topic.as_deref(),
        )));
    };
    let topic = topic.or_else(|| match config.preset {
        Preset::Stripe => presets::text(value.get("type")),
        _ => None,
    });
    // The sender's id of this event: the same on its retries.
    let sender_id = match config.preset {
        Preset::Shopify => headers
            .get("x-shopify-event-id")
            .or_else(|| headers.get("x-shopify-webhook-id"))
            .map(str::to_owned),
        Preset::Woocommerce => presets::text(value.get("id")).map(|id| {
            let modified = presets::text(value.get("date_modified_gmt"))
                .or_else(|| presets::text(value.get("date_modified")))
                .unwrap_or_default();
            format!("{}:{id}:{modified}", topic.as_deref().unwrap_or(""))
        }),
        Preset::Stripe => presets::text(value.get("id")),
        Preset::Generic => None,
    };
    let mut problem = None;
    let (mapped, sender_id) = match config.preset {
        Preset::Shopify => (
            topic.as_deref().and_then(|t| presets::shopify(t, &value)),
            sender_id,
        ),
        Preset::Woocommerce => (
            topic
                .as_deref()
                .and_then(|t| presets::woocommerce(t, &value)),
            sender_id,
        ),
        Preset::Stripe => (presets::stripe(&value), sender_id),
        Preset::Generic => match &config.mapping {
            Some(mapping) => {
                let (mut message, id) = mapping.apply(&value);
                if !message.contains_key("userId") && !message.contains_key("anonymousId") {
                    message.insert("anonymousId".into(), format!("webhook:{source_id}").into());
                }
                match check_generic(&message) {
                    Ok(()) => (Some(vec![message]), id),
                    Err(why) => {
                        problem = Some(why);
                        (None, id)
                    }
                }
            }
            None => (None, None),
        },
    };
    let base_id = match &sender_id {
        Some(id) => format!("{}:{id}", config.preset.as_str()),
        None => format!("{}:sha256:{}", config.preset.as_str(), body_sha256(body)),
    };
    // A mapped message over the message limit (an order with very many products)
    // would be refused by validation: keep the payload instead.
    let fits = |m: &Map<String, Value>| {
        serde_json::to_string(m).is_ok_and(|t| t.len() <= MAX_MAPPED_MESSAGE_BYTES)
    };
    if mapped.as_ref().is_some_and(|m| !m.iter().all(fits)) {
        problem = Some("the mapped message is over the 32 KB message limit".to_owned());
    }
    let messages = match mapped {
        Some(messages) if !messages.is_empty() && problem.is_none() => messages,
        _ => vec![webhook_received(
            source_id,
            config.preset,
            topic.as_deref(),
            body,
            Some(&value),
            problem,
        )],
    };
    let messages = finish(
        messages,
        &base_id,
        source_id,
        config.preset,
        topic.as_deref(),
    );
    Ok(WebhookOutcome::Messages(messages))
}

/// Gives each message its `messageId` (`base_id`, with `:<index>` when there are
/// several) and `context.webhook` (`sourceId`, `preset`, `topic`).
fn finish(
    messages: Vec<Map<String, Value>>,
    base_id: &str,
    source_id: &str,
    preset: Preset,
    topic: Option<&str>,
) -> Vec<Map<String, Value>> {
    let several = messages.len() > 1;
    messages
        .into_iter()
        .enumerate()
        .map(|(index, mut message)| {
            let id = if several {
                format!("{base_id}:{index}")
            } else {
                base_id.to_owned()
            };
            message.insert("messageId".into(), message_id(&id).into());
            let context = message
                .entry("context")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(context) = context {
                let mut webhook = Map::new();
                webhook.insert("sourceId".into(), source_id.into());
                webhook.insert("preset".into(), preset.as_str().into());
                if let Some(topic) = topic {
                    webhook.insert("topic".into(), topic.into());
                }
                context.insert("webhook".into(), Value::Object(webhook));
            }
            message
        })
        .collect()
}

/// A `messageId` of at most 100 characters: long sender ids are hashed.
fn message_id(id: &str) -> String {
    if id.chars().count() <= MAX_MESSAGE_ID_CHARS {
        id.to_owned()
    } else {
        format!("webhook:sha256:{}", body_sha256(id.as_bytes()))
    }
}

fn check_generic(message: &Map<String, Value>) -> Result<(), String> {
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the mapping gave no \"type\"")?;
    let needs = match kind {
        "track" => Some("event"),
        "identify" | "page" | "screen" => None,
        "group" => Some("groupId"),
        "alias" => Some("previousId"),
        _ => return Err("the mapping's \"type\" is not a Segment message type".into()),
    };
    if let Some(field) = needs.filter(|f| message.get(*f).is_none_or(Value::is_null)) {
        return Err(format!("the mapping gave no \"{field}\" for a {kind}"));
    }
    Ok(())
}

fn is_woocommerce_ping(body: &[u8]) -> bool {
    // WooCommerce's test delivery when a webhook is saved: a form body
    // `webhook_id=<n>`, unsigned.
    let text = std::str::from_utf8(body).unwrap_or("");
    text.strip_prefix("webhook_id=").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The `Webhook Received` track keeping a payload no mapping covers.
fn webhook_received(
    source_id: &str,
    preset: Preset,
    topic: Option<&str>,
    raw: &[u8],
    parsed: Option<&Value>,
    problem: Option<String>,
) -> Map<String, Value> {
    let mut properties = Map::new();
    properties.insert("preset".into(), preset.as_str().into());
    if let Some(topic) = topic {
        properties.insert("topic".into(), topic.into());
    }
    if let Some(problem) = problem {
        properties.insert("mappingProblem".into(), problem.into());
    }
    properties.insert("bodyBytes".into(), raw.len().into());
    if raw.len() <= MAX_KEPT_BODY_BYTES {
        match parsed {
            Some(value) => {
                properties.insert("body".into(), value.clone());
            }
            None => {
                properties.insert(
                    "rawBody".into(),
                    String::from_utf8_lossy(raw).into_owned().into(),
                );
            }
        }
    } else {
        // Too large for one message: keep what identifies it.
        properties.insert("bodyOmitted".into(), true.into());
        properties.insert("bodySha256".into(), body_sha256(raw).into());
        if let Some(Value::Object(top)) = parsed {
            let keys: Vec<Value> = top.keys().take(100).map(|k| k.clone().into()).collect();
            properties.insert("bodyKeys".into(), Value::Array(keys));
        }
    }
    let mut message = Map::new();
    message.insert("type".into(), "track".into());
    message.insert("event".into(), WEBHOOK_RECEIVED.into());
    message.insert("anonymousId".into(), format!("webhook:{source_id}").into());
    message.insert("properties".into(), Value::Object(properties));
    message
}

/// A webhook source as looked up, and when.
type CachedWebhook = (Option<Arc<(Source, CompiledWebhook)>>, Instant);

/// Finds a webhook source and its compiled configuration, with a short-lived cache
/// (a change made by the CLI is seen within two seconds).
pub struct WebhookSources {
    catalog: Arc<dyn Catalog>,
    cache: RwLock<HashMap<String, CachedWebhook>>,
}

impl WebhookSources {
    /// A registry over the catalog.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The enabled webhook source with this id, or why not.
    pub fn resolve(&self, source_id: &str) -> Result<Arc<(Source, CompiledWebhook)>, WebhookError> {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(source_id).cloned())
            .filter(|(_, at)| at.elapsed() < CACHE_TTL);
        let found = match cached {
            Some((found, _)) => found,
            None => {
                let found = self.load(source_id)?;
                if let Ok(mut cache) = self.cache.write() {
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(source_id.to_owned(), (found.clone(), Instant::now()));
                }
                found
            }
        };
        let found = found.ok_or_else(|| {
            WebhookError::User(UserError::new(
                ErrorCode::WebhookNotConfigured,
                "no webhook source has this id: configure one with PUT /api/v1/sources/{id}/webhook or `tessera sources webhook`",
            ))
        })?;
        if !found.0.enabled {
            return Err(UserError::new(
                ErrorCode::SourceDisabled,
                format!(
                    "source {} is disabled; its webhooks are refused",
                    found.0.id
                ),
            )
            .into());
        }
        Ok(found)
    }

    fn load(
        &self,
        source_id: &str,
    ) -> Result<Option<Arc<(Source, CompiledWebhook)>>, WebhookError> {
        // Only ids: a source's name in the URL would make it guessable.
        if !source_id.starts_with("src_") || source_id.len() > 64 {
            return Ok(None);
        }
        let Some(source) = self
            .catalog
            .find_source(source_id)?
            .filter(|s| s.id == source_id)
        else {
            return Ok(None);
        };
        let Some(config) = config(self.catalog.as_ref(), source_id)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new((source, config.compile()?))))
    }

    /// Forgets cached lookups (after a change made through this process).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }
}
