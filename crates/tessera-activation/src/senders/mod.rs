//! Rendering a delivery when it is enqueued, and sending it per destination type.
//!
//! What is stored in the outbox is the rendered message (so a retry sends exactly the
//! same thing, and a template change does not alter what is already queued):
//! - webhook `{"body": …}`; email `{"to", "subject", "text", "html", "unsubscribe"}`;
//!   SMS `{"to", "body"}`; CRM `{"id", "properties"}`; file `{"line": …}`.
//!
//! One module per destination type (`webhook`, `email`, `sms`, `crm`, `file`), each
//! with its `render` and `send`; this module dispatches and classifies answers.

mod crm;
mod email;
mod file;
mod sms;
mod webhook;

pub use webhook::signature;

use crate::config::{Destination, Kind};
use crate::render::RenderError;
use serde_json::{Map, Value};
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
    let overrides = Overrides(overrides);
    match &destination.kind {
        Kind::Webhook(settings) => webhook::render(settings, &overrides, context, message),
        Kind::Email(settings) => email::render(settings, &overrides, context),
        Kind::Sms(settings) => sms::render(settings, &overrides, context),
        Kind::Crm(settings) => crm::render(settings, context),
        Kind::File(_) => Ok(file::render(message)),
    }
}

/// Settings a journey step overrides (`subject`, `template`, …) over the destination's.
pub(crate) struct Overrides<'a>(&'a Map<String, Value>);

impl Overrides<'_> {
    /// The overriding text of `name`, else `default`.
    fn text(&self, name: &str, default: Option<&str>) -> Option<String> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| default.map(str::to_owned))
    }

    /// The rendered `to` (the step's, else the destination's, else `fallback`),
    /// trimmed; nothing to send to is [`RenderError::Failed`] with `missing`.
    fn recipient(
        &self,
        configured: Option<&str>,
        fallback: &str,
        context: &Value,
        missing: &str,
    ) -> Result<String, RenderError> {
        let template = self
            .text("to", configured)
            .unwrap_or_else(|| fallback.to_owned());
        let to = crate::render::render_text(&template, context)?;
        match to.trim() {
            "" => Err(RenderError::Failed(missing.to_owned())),
            to => Ok(to.to_owned()),
        }
    }
}

/// The same result for every delivery of a group.
fn for_each(group: &[Delivery], attempt: Attempt) -> Vec<Attempt> {
    vec![attempt; group.len()]
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
    // Literal addresses skip the resolver's check: a destination stored before the
    // rule, or edited in the store, is refused here.
    if let Some(why) = destination
        .kind
        .url()
        .and_then(|url| reqwest::Url::parse(url).ok())
        .and_then(|url| clients.reach.networks.denied_host(&url))
    {
        return for_each(group, Attempt::Fail { error: why });
    }
    let (Some(first), Some(payload)) = (group.first(), payloads.first()) else {
        return Vec::new();
    };
    let attempt = match &destination.kind {
        Kind::Webhook(settings) => {
            webhook::send(clients, settings, group, &payloads, timeout).await
        }
        Kind::File(settings) => file::send(clients, settings, &payloads).await,
        // Groups of one: only webhook and file deliveries are batched.
        Kind::Email(settings) => email::send(clients, settings, first, payload, timeout).await,
        Kind::Sms(settings) => sms::send(clients, settings, first, payload, timeout).await,
        Kind::Crm(settings) => crm::send(clients, settings, first, payload, timeout).await,
    };
    for_each(group, attempt)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
