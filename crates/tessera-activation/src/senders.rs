//! Rendering a delivery when it is enqueued, and sending it per destination type.
//!
//! What is stored in the outbox is the rendered message (so a retry sends exactly the
//! same thing, and a template change does not alter what is already queued):
//! - webhook `{"body": …}`; email `{"to", "subject", "text", "html", "unsubscribe"}`;
//!   SMS `{"to", "body"}`; CRM `{"id", "properties"}`; file `{"line": …}`.

use crate::config::{CrmSettings, Destination, Kind, smtp_endpoint};
use crate::render::{RenderError, render_html, render_text};
use hmac::{Hmac, Mac};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tessera_store::activation::Delivery;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver accepted it.
    Delivered,
    /// Try again (after at least `after`, when the receiver said so).
    Retry {
        /// What went wrong (status or error kind; never the payload).
        error: String,
        /// `Retry-After`.
        after: Option<Duration>,
    },
    /// Will never work as it is (a 4xx other than 408/429, a bad address).
    Fail {
        /// What went wrong.
        error: String,
    },
}

/// Renders what a destination sends for one event. `context` is the template
/// context (profile, traits, event); `message` the Segment-style event; `overrides`
/// replace settings (journey sends). A template over its budget is
/// [`RenderError::Budget`]; anything else that leaves nothing to send is
/// [`RenderError::Failed`].
pub fn render_payload(
    destination: &Destination,
    context: &Value,
    message: &Value,
    overrides: &Map<String, Value>,
) -> Result<Value, RenderError> {
    let nothing = |why: &str| RenderError::Failed(why.to_string());
    let setting = |name: &str, default: Option<&str>| -> Option<String> {
        overrides
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| default.map(str::to_owned))
    };
    match &destination.kind {
        Kind::Webhook(s) => {
            let body = match setting("template", s.template.as_deref()) {
                Some(template) => {
                    let text = render_text(&template, context)?;
                    serde_json::from_str(&text).map_err(|e| {
                        RenderError::Failed(format!(
                            "the webhook template did not produce JSON: {e}"
                        ))
                    })?
                }
                None => message.clone(),
            };
            Ok(json!({ "body": body }))
        }
        Kind::Email(s) => {
            let to = render_text(
                &setting("to", s.to.as_deref()).unwrap_or_else(|| "{{ traits.email }}".into()),
                context,
            )?;
            if to.trim().is_empty() {
                return Err(nothing("the person has no email address (traits.email)"));
            }
            let html = setting("html", s.html.as_deref())
                .map(|t| render_html(&t, context))
                .transpose()?;
            let unsubscribe = setting("unsubscribeUrl", s.unsubscribe_url.as_deref())
                .map(|t| render_text(&t, context))
                .transpose()?;
            Ok(json!({
                "to": to.trim(),
                "subject": render_text(&setting("subject", Some(&s.subject)).unwrap_or_default(), context)?,
                "text": render_text(&setting("text", Some(&s.text)).unwrap_or_default(), context)?,
                "html": html,
                "unsubscribe": unsubscribe,
            }))
        }
        Kind::Sms(s) => {
            let to = render_text(
                &setting("to", s.to.as_deref()).unwrap_or_else(|| "{{ traits.phone }}".into()),
                context,
            )?;
            if to.trim().is_empty() {
                return Err(nothing("the person has no phone number (traits.phone)"));
            }
            Ok(json!({
                "to": to.trim(),
                "body": render_text(&setting("body", Some(&s.body)).unwrap_or_default(), context)?,
            }))
        }
        Kind::Crm(s) => crm_payload(s, context),
        Kind::File(_) => Ok(json!({ "line": message })),
    }
}

/// The CRM upsert: mapped traits, except those the CRM owns or sent itself.
fn crm_payload(settings: &CrmSettings, context: &Value) -> Result<Value, RenderError> {
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

/// The key of a payload that holds no message but the reason its render failed
/// (a template over budget): such a delivery is not sent but fails.
pub const RENDER_ERROR_KEY: &str = "renderError";

/// The render failure stored in place of a delivery's payload, if any.
pub fn render_error(delivery: &Delivery) -> Option<String> {
    if !delivery.new.payload.contains(RENDER_ERROR_KEY) {
        return None;
    }
    serde_json::from_str::<Value>(&delivery.new.payload)
        .ok()?
        .get(RENDER_ERROR_KEY)?
        .as_str()
        .map(str::to_owned)
}

/// HTTP and SMTP clients shared by the delivery workers, and where they may send.
pub struct Clients {
    http: reqwest::Client,
    pub(crate) reach: Arc<crate::Reach>,
    /// Open pixels and tracked links of emails (`None`: sent as written).
    pub(crate) engagement: Option<Arc<crate::engagement::Engagement>>,
}

impl Clients {
    /// Creates the clients (the TLS provider is installed once per process); they
    /// reach only what `reach` allows.
    pub fn new(
        reach: Arc<crate::Reach>,
        engagement: Option<Arc<crate::engagement::Engagement>>,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let networks = Arc::clone(&reach.networks);
        let http = reqwest::Client::builder()
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(crate::network::GuardedResolver::new(Arc::clone(&networks)))
            .redirect(crate::network::redirect_policy(networks))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            reach,
            engagement,
        }
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self::new(Arc::default(), None)
    }
}

fn classify(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let error = format!("HTTP {}", status.as_u16());
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        let after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Attempt::Retry { error, after }
    } else {
        Attempt::Fail { error }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(86_400)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(
        u64::try_from(wait.clamp(0, 86_400_000)).unwrap_or(0),
    ))
}

fn transport_error(error: &reqwest::Error) -> Attempt {
    // A denied address (a name resolving to one, a redirect to one) fails for good,
    // saying why; other details stay out of the error (they may hold the URL).
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains(crate::network::DENIED) {
            return Attempt::Fail { error: text };
        }
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    };
    Attempt::Retry {
        error: kind.into(),
        after: None,
    }
}

/// `X-Tessera-Signature` for a body: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Sends a group of deliveries (several only for webhook and file batches); one
/// result per delivery.
pub async fn send(
    clients: &Clients,
    destination: &Destination,
    group: &[Delivery],
) -> Vec<Attempt> {
    let timeout = Duration::from_millis(destination.delivery.timeout_ms);
    let payloads: Vec<Value> = group
        .iter()
        .map(|d| serde_json::from_str(&d.new.payload).unwrap_or(Value::Null))
        .collect();
    let one = |attempt: Attempt| vec![attempt; group.len()];
    // Literal addresses skip the resolver's check: a destination stored before the
    // rule, or edited in the store, is refused here.
    if let Some(why) = destination
        .kind
        .url()
        .and_then(|url| reqwest::Url::parse(url).ok())
        .and_then(|url| clients.reach.networks.denied_host(&url))
    {
        return one(Attempt::Fail { error: why });
    }
    match &destination.kind {
        Kind::Webhook(s) => {
            let (body, key) = if group.len() == 1 {
                (
                    payloads[0].get("body").cloned().unwrap_or(Value::Null),
                    group[0].new.idempotency_key.clone(),
                )
            } else {
                let items: Vec<Value> = group
                    .iter()
                    .zip(&payloads)
                    .map(|(d, p)| json!({"idempotencyKey": d.new.idempotency_key, "payload": p.get("body")}))
                    .collect();
                let keys: Vec<&str> = group
                    .iter()
                    .map(|d| d.new.idempotency_key.as_str())
                    .collect();
                (
                    json!({ "batch": items }),
                    tessera_core::ids::hash_secret(&keys.join(",")),
                )
            };
            let bytes = body.to_string().into_bytes();
            let mut request = clients
                .http
                .post(&s.url)
                .timeout(timeout)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", key);
            for (name, value) in &s.headers {
                if let Some(value) = value.as_str() {
                    request = request.header(name.as_str(), value);
                }
            }
            if let Some(secret) = &s.secret {
                let now = chrono::Utc::now().timestamp();
                request = request.header("X-Tessera-Signature", signature(secret, now, &bytes));
            }
            match request.body(bytes).send().await {
                Ok(response) => one(classify(response.status(), response.headers())),
                Err(error) => one(transport_error(&error)),
            }
        }
        Kind::Sms(s) => {
            let payload = &payloads[0];
            let form = [
                (
                    "To",
                    payload.get("to").and_then(Value::as_str).unwrap_or(""),
                ),
                ("From", s.from.as_str()),
                (
                    "Body",
                    payload.get("body").and_then(Value::as_str).unwrap_or(""),
                ),
            ];
            let mut request = clients
                .http
                .post(&s.url)
                .timeout(timeout)
                .header("Idempotency-Key", &group[0].new.idempotency_key)
                .header("I-Twilio-Idempotency-Token", &group[0].new.idempotency_key)
                .form(&form);
            if let Some(user) = &s.username {
                request = request.basic_auth(user, s.password.as_ref());
            }
            match request.send().await {
                Ok(response) => one(classify(response.status(), response.headers())),
                Err(error) => one(transport_error(&error)),
            }
        }
        Kind::Crm(s) => {
            let payload = &payloads[0];
            let id = payload.get("id").cloned().unwrap_or(Value::Null);
            let properties = payload.get("properties").cloned().unwrap_or(Value::Null);
            let base = s.url.trim_end_matches('/');
            let request = if s.shape == "hubspot" {
                clients
                    .http
                    .post(format!("{base}/crm/v3/objects/contacts/batch/upsert"))
                    .json(&json!({"inputs": [{"idProperty": "email", "id": id, "properties": properties}]}))
            } else {
                let id_text = match &id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                clients
                    .http
                    .put(format!("{base}/{}", url_segment(&id_text)))
                    .json(&json!({"id": id, "properties": properties}))
            };
            let mut request = request
                .timeout(timeout)
                .header("Idempotency-Key", &group[0].new.idempotency_key);
            if let Some(token) = &s.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) => one(classify(response.status(), response.headers())),
                Err(error) => one(transport_error(&error)),
            }
        }
        Kind::Email(s) => {
            let engagement = clients
                .engagement
                .as_deref()
                .filter(|_| s.track_engagement != Some(false));
            vec![send_email(s, engagement, &group[0], &payloads[0], timeout).await]
        }
        Kind::File(s) => {
            let lines: Vec<String> = payloads
                .iter()
                .map(|p| p.get("line").cloned().unwrap_or(Value::Null).to_string())
                .collect();
            // Checked again before each write: the directory may have changed.
            let path = match clients.reach.file_path(&s.path) {
                Ok(path) => path,
                Err(why) => return one(Attempt::Fail { error: why }),
            };
            let written = tokio::task::spawn_blocking(move || append_lines(&path, &lines)).await;
            let error = match written {
                Ok(Ok(())) => return one(Attempt::Delivered),
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            };
            one(Attempt::Retry {
                error: format!("cannot write the file: {error}"),
                after: None,
            })
        }
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

/// A URL as it goes between `<` and `>` in `List-Unsubscribe`: angle brackets,
/// quotes, whitespace and control characters (from a trait value in the template)
/// are percent-encoded, so a value cannot close the bracket and add a second link.
fn header_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.trim().chars() {
        if c == '<' || c == '>' || c == '"' || c.is_whitespace() || c.is_control() {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends to `path` (created with mode 0600, with its directories): never through a
/// symbolic link put there since the path was checked.
fn append_lines(path: &std::path::Path, lines: &[String]) -> Result<(), std::io::Error> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let mut file = options.open(path)?;
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

async fn send_email(
    settings: &crate::config::EmailSettings,
    engagement: Option<&crate::engagement::Engagement>,
    delivery: &Delivery,
    payload: &Value,
    timeout: Duration,
) -> Attempt {
    let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
    let fail = |error: String| Attempt::Fail { error };
    let Ok(from) = settings.from.parse::<Mailbox>() else {
        return fail("settings.from is not an email address".into());
    };
    let Some(Ok(to)) = text("to").map(|t| t.parse::<Mailbox>()) else {
        return fail("the recipient is not an email address".into());
    };
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(text("subject").unwrap_or_default())
        .message_id(Some(format!(
            "<{}@tessera>",
            tessera_core::ids::hash_secret(&delivery.new.idempotency_key)
        )));
    if let Some(url) = text("unsubscribe") {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            format!("<{}>", header_url(&url)),
        ));
    }
    let body = text("text").unwrap_or_default();
    // The pixel and tracked links name this delivery, known only now.
    let html = text("html").map(|html| match engagement {
        Some(engagement) => engagement.rewrite_html(
            &html,
            &crate::engagement::Token {
                kind: crate::engagement::Kind::Open,
                delivery: delivery.id,
                profile: delivery.new.profile_id,
                destination: delivery.new.destination.clone(),
                journey: delivery.new.journey.clone(),
                url: None,
            },
        ),
        None => html,
    });
    let message = match html {
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(body),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        ),
        None => builder.header(ContentType::TEXT_PLAIN).body(body),
    };
    let message = match message {
        Ok(message) => message,
        Err(error) => return fail(format!("the email could not be built: {error}")),
    };
    let (mode, host, port) = match smtp_endpoint(&settings.smtp_url) {
        Ok(endpoint) => endpoint,
        Err(error) => return fail(error.0),
    };
    let builder = match mode {
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host),
        _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &host,
        )),
    };
    let mut builder = match builder {
        Ok(builder) => builder.port(port).timeout(Some(timeout)),
        Err(error) => return fail(format!("SMTP relay: {error}")),
    };
    if let Some(user) = &settings.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            settings.password.clone().unwrap_or_default(),
        ));
    }
    match builder.build().send(message).await {
        Ok(_) => Attempt::Delivered,
        Err(error) if error.is_permanent() => Attempt::Fail {
            error: "the SMTP server refused the message permanently (5xx)".into(),
        },
        Err(error) => Attempt::Retry {
            error: if error.is_transient() {
                "the SMTP server refused the message for now (4xx)".into()
            } else {
                "the SMTP server could not be reached".into()
            },
            after: None,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        assert_eq!(
            smtp_endpoint("smtp://127.0.0.1:2525"),
            Ok(("plain", "127.0.0.1".to_string(), 2525))
        );
        assert_eq!(
            smtp_endpoint("smtp+starttls://mail.example.com"),
            Ok(("starttls", "mail.example.com".to_string(), 587))
        );
        assert!(smtp_endpoint("http://x").is_err());
        assert!(smtp_endpoint("smtp://:25").is_err());
        assert!(smtp_endpoint("smtp://h:port").is_err());
    }

    #[test]
    fn an_unsubscribe_url_cannot_add_a_second_link() {
        assert_eq!(
            header_url("https://x.io/u?id=a>, <mailto:evil@x.io"),
            "https://x.io/u?id=a%3E,%20%3Cmailto:evil@x.io"
        );
        assert_eq!(
            header_url("https://x.io/u?id=1,2&n=\u{e9}"),
            "https://x.io/u?id=1,2&n=\u{e9}"
        );
        assert_eq!(
            header_url("https://x.io/\r\nBcc: a"),
            "https://x.io/%0D%0ABcc:%20a"
        );
    }

    #[test]
    fn signatures_are_stable_hmacs() {
        let sig = signature("s3cret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn retry_after_and_classes() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("soon"), None);
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(classify(reqwest::StatusCode::OK, &none), Attempt::Delivered);
        assert!(matches!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, &none),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_REQUEST, &none),
            Attempt::Fail { .. }
        ));
    }

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
        let payload = crm_payload(&settings, &context).unwrap();
        assert_eq!(
            payload,
            json!({"id": "a@x.io", "properties": {"firstname": "Ada", "email": "a@x.io"}})
        );
    }
}
