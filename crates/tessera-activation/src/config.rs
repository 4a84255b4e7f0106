//! Destination and journey definitions (JSON, stored in the catalog), validated and
//! compiled.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tessera_audience::ast::Condition;
use tessera_audience::language::parse_definition;

pub use crate::error::ConfigError;

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// The longest duration a definition may name (ten years), so sums never overflow.
pub const MAX_DURATION_MS: i64 = 3_650 * 86_400_000;

/// Parses `30s`, `15m`, `2h`, `7d` (or plain milliseconds as a number) into ms.
pub fn parse_duration_ms(text: &str) -> Result<i64, ConfigError> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        ConfigError(format!(
            "{text:?} is not a duration such as 30s, 15m, 2h or 7d"
        ))
    })?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return err(format!(
                "{text:?} is not a duration such as 30s, 15m, 2h or 7d"
            ));
        }
    };
    n.checked_mul(factor)
        .filter(|ms| *ms <= MAX_DURATION_MS)
        .ok_or_else(|| ConfigError(format!("{text:?} is too long (at most 3650d)")))
}

/// A key: lowercase letters, digits, `-` and `_`, 1 to 64 characters.
pub fn check_key(what: &str, key: &str) -> Result<(), ConfigError> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        err(format!(
            "{what} {key:?} must be 1 to 64 characters of a-z, 0-9, - and _"
        ))
    }
}

fn has_line_break(text: &str) -> bool {
    text.contains(['\r', '\n', '\0'])
}

/// A custom header: a valid name, and a string value without line breaks or other
/// control characters (they would make every request fail, or add headers).
fn check_header(name: &str, value: &Value) -> Result<(), ConfigError> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return err(format!(
            "settings.headers: {name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    match value.as_str() {
        Some(text) if reqwest::header::HeaderValue::from_str(text).is_ok() => Ok(()),
        Some(_) => err(format!(
            "settings.headers.{name}: the value must be visible ASCII on one line (no CR, LF or control characters)"
        )),
        None => err(format!(
            "settings.headers.{name}: the value must be a string"
        )),
    }
}

/// Which events and audience changes reach a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Event names (track `event`, page/screen `name`); empty = any.
    #[serde(default)]
    pub events: Vec<String>,
    /// Message types (`track`, `identify`, …); empty = any.
    #[serde(default)]
    pub types: Vec<String>,
    /// Source ids; empty = any.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Only events of people in this audience.
    #[serde(default)]
    pub member_of: Option<String>,
    /// `Audience Entered` / `Audience Exited` of these audiences are delivered.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Deliver events at all (default: yes unless `audiences` is set).
    #[serde(default)]
    pub include_events: Option<bool>,
}

/// How a destination delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Attempts before a delivery is dead.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay (ms); doubles each attempt, with ±50 % jitter.
    #[serde(default = "default_backoff")]
    pub initial_backoff_ms: i64,
    /// Longest retry delay (ms).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: i64,
    /// Requests per second at most (0 = no limit).
    #[serde(default)]
    pub rate_per_second: u32,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Deliveries per request (webhook and file; others send one each).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Request timeout (ms).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before one trial request (ms).
    #[serde(default = "default_breaker_ms")]
    pub breaker_cooldown_ms: i64,
    /// At most this many deliveries of this destination's channel per person per
    /// window (`{"max": 1, "window": "1d"}`); journeys' sends count too.
    #[serde(default)]
    pub frequency_cap: Option<FrequencyCap>,
}

/// A frequency cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// Deliveries allowed in the window.
    pub max: u32,
    /// The window (`1d`, `12h`).
    pub window: String,
}

fn default_attempts() -> u32 {
    10
}
fn default_backoff() -> i64 {
    500
}
fn default_max_backoff() -> i64 {
    300_000
}
fn default_concurrency() -> u32 {
    4
}
fn default_batch() -> u32 {
    1
}
fn default_timeout() -> u64 {
    10_000
}
fn default_breaker() -> u32 {
    5
}
fn default_breaker_ms() -> i64 {
    10_000
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_backoff(),
            max_backoff_ms: default_max_backoff(),
            rate_per_second: 0,
            concurrency: default_concurrency(),
            batch_size: default_batch(),
            timeout_ms: default_timeout(),
            breaker_failures: default_breaker(),
            breaker_cooldown_ms: default_breaker_ms(),
            frequency_cap: None,
        }
    }
}

/// What kind of destination, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "settings", rename_all = "lowercase")]
pub enum Kind {
    /// JSON POST to a URL.
    Webhook(WebhookSettings),
    /// Email over SMTP.
    Email(EmailSettings),
    /// SMS through an HTTP gateway (Twilio's form API by default).
    Sms(SmsSettings),
    /// Upsert of profile traits into a CRM.
    Crm(CrmSettings),
    /// JSONL file.
    File(FileSettings),
}

/// Webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key: `X-Tessera-Signature: t=<unix s>,v1=<hex>` over `t.body`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// A template producing the JSON body instead of the Segment-style event.
    #[serde(default)]
    pub template: Option<String>,
}

/// Email settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailSettings {
    /// `smtp://host:port` (plain), `smtp+starttls://host:port`, `smtps://host:port`.
    pub smtp_url: String,
    /// SMTP user.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender, e.g. `Shop <shop@example.com>`.
    pub from: String,
    /// Recipient template (default `{{ traits.email }}`).
    #[serde(default)]
    pub to: Option<String>,
    /// Subject template.
    pub subject: String,
    /// Plain-text body template.
    pub text: String,
    /// HTML body template.
    #[serde(default)]
    pub html: Option<String>,
    /// Unsubscribe URL template, sent as `List-Unsubscribe`.
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// `false`: no open pixel and no tracked links in this destination's emails
    /// (default: tracked when the server has a `public_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_engagement: Option<bool>,
}

/// SMS gateway settings (Twilio-compatible form POST: `To`, `From`, `Body`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmsSettings {
    /// The gateway's messages URL.
    pub url: String,
    /// Basic-auth user (Twilio: the account SID).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password (Twilio: the auth token).
    #[serde(default)]
    pub password: Option<String>,
    /// Sender number.
    pub from: String,
    /// Recipient template (default `{{ traits.phone }}`).
    #[serde(default)]
    pub to: Option<String>,
    /// Message template.
    pub body: String,
}

/// CRM settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrmSettings {
    /// Base URL (HubSpot: `https://api.hubapi.com`).
    pub url: String,
    /// `hubspot` (contacts upsert by email) or `generic` (PUT {url}/{id}).
    #[serde(default = "default_shape")]
    pub shape: String,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// Tessera trait → CRM property; only these are sent.
    pub mapping: Map<String, Value>,
    /// The source (id or name) that is the CRM itself: traits whose value came from
    /// it are never sent back.
    #[serde(default)]
    pub crm_source: Option<String>,
    /// CRM properties the CRM owns: never written.
    #[serde(default)]
    pub crm_owned: Vec<String>,
}

fn default_shape() -> String {
    "hubspot".into()
}

/// File sink settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSettings {
    /// The JSONL file appended to: relative to `[activation] file_dir`, or an
    /// absolute path inside it.
    pub path: String,
}

/// A destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Its key.
    pub id: String,
    /// A display name.
    #[serde(default)]
    pub name: String,
    /// Whether it delivers (a disabled one keeps its outbox).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The consent purpose its deliveries need (`None`: none; e.g. transactional).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Type and settings.
    #[serde(flatten)]
    pub kind: Kind,
    /// What reaches it.
    #[serde(default)]
    pub filter: Filter,
    /// How it delivers.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn yes() -> bool {
    true
}

impl Kind {
    /// Where its credentials go: `scheme://host:port` of the URL (webhook, SMS,
    /// CRM) or of the SMTP server (email); `None` for a file or an unparsable
    /// address. A masked secret may only be kept while this stays the same.
    pub fn secret_target(&self) -> Option<String> {
        let of_url = |url: &str| {
            let url = reqwest::Url::parse(url).ok()?;
            Some(format!(
                "{}://{}:{}",
                url.scheme(),
                url.host_str()?.to_ascii_lowercase(),
                url.port_or_known_default()?
            ))
        };
        match self {
            Self::Webhook(s) => of_url(&s.url),
            Self::Sms(s) => of_url(&s.url),
            Self::Crm(s) => of_url(&s.url),
            Self::Email(s) => smtp_endpoint(&s.smtp_url).ok().map(|(mode, host, port)| {
                format!("smtp-{mode}://{}:{port}", host.to_ascii_lowercase())
            }),
            Self::File(_) => None,
        }
    }

    /// The URL it sends to (webhook, SMS, CRM); `None` for email and file.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Webhook(s) => Some(&s.url),
            Self::Sms(s) => Some(&s.url),
            Self::Crm(s) => Some(&s.url),
            Self::Email(_) | Self::File(_) => None,
        }
    }

    /// The channel name (`webhook`, `email`, …).
    pub fn channel(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
            Self::Sms(_) => "sms",
            Self::Crm(_) => "crm",
            Self::File(_) => "file",
        }
    }
}

impl Destination {
    /// Checks a definition; `purposes` are the configured consent purposes.
    pub fn validate(&self, purposes: &[String]) -> Result<(), ConfigError> {
        check_key("destination id", &self.id)?;
        if let Some(purpose) = &self.purpose
            && !purposes.contains(purpose)
        {
            return err(format!(
                "purpose {purpose:?} is not configured; the purposes are {}",
                purposes.join(", ")
            ));
        }
        let url_ok = |url: &str, what: &str| {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err(format!("{what} must be an http:// or https:// URL"));
            }
            match reqwest::Url::parse(url) {
                Err(error) => err(format!("{what} is not a URL: {error}")),
                Ok(parsed) => match crate::network::denied_host(&parsed) {
                    Some(why) => err(format!("{what}: {why}")),
                    None => Ok(()),
                },
            }
        };
        match &self.kind {
            Kind::Webhook(s) => {
                url_ok(&s.url, "settings.url")?;
                for (name, value) in &s.headers {
                    check_header(name, value)?;
                }
                if let Some(t) = &s.template {
                    crate::render::check_template(t)?;
                }
            }
            Kind::Email(s) => {
                smtp_endpoint(&s.smtp_url)?;
                if has_line_break(&s.from) || s.from.parse::<lettre::message::Mailbox>().is_err() {
                    return err(
                        "settings.from must be one address such as \"Shop <shop@example.com>\", on one line",
                    );
                }
                for t in [
                    Some(&s.subject),
                    Some(&s.text),
                    s.html.as_ref(),
                    s.to.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    crate::render::check_template(t)?;
                }
            }
            Kind::Sms(s) => {
                url_ok(&s.url, "settings.url")?;
                if has_line_break(&s.from) {
                    return err("settings.from must be on one line");
                }
                crate::render::check_template(&s.body)?;
            }
            Kind::Crm(s) => {
                url_ok(&s.url, "settings.url")?;
                if s.shape != "hubspot" && s.shape != "generic" {
                    return err("settings.shape must be \"hubspot\" or \"generic\"");
                }
                if s.mapping.values().any(|v| !v.is_string()) {
                    return err(
                        "settings.mapping maps trait names to CRM property names (strings)",
                    );
                }
            }
            Kind::File(s) => {
                if s.path.trim().is_empty() {
                    return err("settings.path is empty");
                }
            }
        }
        let d = &self.delivery;
        if d.max_attempts == 0 || d.concurrency == 0 || d.batch_size == 0 || d.batch_size > 1_000 {
            return err(
                "delivery.maxAttempts and delivery.concurrency must be at least 1, delivery.batchSize 1 to 1000",
            );
        }
        if d.initial_backoff_ms < 0
            || d.max_backoff_ms < d.initial_backoff_ms
            || d.max_backoff_ms > 86_400_000
        {
            return err(
                "delivery.initialBackoffMs must be >= 0 and <= delivery.maxBackoffMs, which is at most 86400000 (a day)",
            );
        }
        if !(0..=86_400_000).contains(&d.breaker_cooldown_ms)
            || !(1..=600_000).contains(&d.timeout_ms)
        {
            return err(
                "delivery.breakerCooldownMs must be 0 to 86400000 and delivery.timeoutMs 1 to 600000",
            );
        }
        if let Some(cap) = &d.frequency_cap {
            parse_duration_ms(&cap.window)?;
        }
        Ok(())
    }

    /// Renders each of its templates with a sample context: one that already exceeds
    /// the render budget there is refused (the message names the setting).
    pub fn check_budgets(&self) -> Result<(), ConfigError> {
        let templates: Vec<(&str, &Option<String>, bool)> = match &self.kind {
            Kind::Webhook(s) => vec![("settings.template", &s.template, false)],
            Kind::Email(s) => vec![
                ("settings.to", &s.to, false),
                ("settings.html", &s.html, true),
                ("settings.unsubscribeUrl", &s.unsubscribe_url, false),
            ],
            Kind::Sms(s) => vec![("settings.to", &s.to, false)],
            Kind::Crm(_) | Kind::File(_) => Vec::new(),
        };
        let required: Vec<(&str, &String, bool)> = match &self.kind {
            Kind::Email(s) => vec![
                ("settings.subject", &s.subject, false),
                ("settings.text", &s.text, false),
            ],
            Kind::Sms(s) => vec![("settings.body", &s.body, false)],
            _ => Vec::new(),
        };
        let all = templates
            .into_iter()
            .filter_map(|(what, t, html)| t.as_ref().map(|t| (what, t, html)))
            .chain(required);
        for (what, template, html) in all {
            crate::render::check_budget(template, html)
                .map_err(|e| ConfigError(format!("{what}: {e}")))?;
        }
        Ok(())
    }

    /// Whether events (not only audience changes) reach it.
    pub fn takes_events(&self) -> bool {
        self.filter
            .include_events
            .unwrap_or(self.filter.audiences.is_empty())
    }
}

/// What starts a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// The person entered this audience.
    #[serde(default)]
    pub audience_entered: Option<String>,
    /// The person performed this event.
    #[serde(default)]
    pub event: Option<String>,
}

/// One step of a journey as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Wait this long (`1h`).
    #[serde(default)]
    pub wait: Option<String>,
    /// Wait until an event, at most `timeout`; `then` runs if it came, `else` if not.
    #[serde(default)]
    pub wait_until: Option<WaitUntil>,
    /// A condition in the audience language; `then` if it holds, else `else`.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// Steps when the condition holds / the event came.
    #[serde(default)]
    pub then: Vec<Step>,
    /// Steps otherwise.
    #[serde(default, rename = "else")]
    pub otherwise: Vec<Step>,
    /// Send through a destination, with template overrides.
    #[serde(default)]
    pub send: Option<SendStep>,
    /// Leave the journey.
    #[serde(default)]
    pub exit: Option<bool>,
}

/// `waitUntil`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// The event name.
    pub event: String,
    /// The longest wait.
    pub timeout: String,
}

/// `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    /// The destination id.
    pub destination: String,
    /// Settings replacing the destination's (e.g. `subject`, `text`, `html`, `body`,
    /// `template`).
    #[serde(default)]
    pub overrides: Map<String, Value>,
}

/// A journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Journey {
    /// Its key.
    pub key: String,
    /// A display name.
    #[serde(default)]
    pub name: String,
    /// Whether new people enter.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What starts it.
    pub trigger: Trigger,
    /// Whether a person may enter again after finishing: `false` (never, default),
    /// `true` (any time), or a duration since their last entry (`7d`).
    #[serde(default)]
    pub reentry: Option<Value>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One compiled instruction.
#[derive(Debug, Clone)]
pub enum Instruction {
    /// Sleep.
    Wait(i64),
    /// Wait for an event (name, timeout ms); on timeout jump.
    WaitFor {
        /// The event name.
        event: String,
        /// Timeout in ms.
        timeout_ms: i64,
        /// Where a timeout continues.
        on_timeout: usize,
    },
    /// Continue if the condition holds, else jump.
    Branch {
        /// The condition.
        condition: Condition,
        /// Where "else" continues.
        otherwise: usize,
    },
    /// Send.
    Send(SendStep),
    /// Jump.
    Jump(usize),
    /// Leave.
    Exit,
}

/// Re-entry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// Once per person ever.
    Never,
    /// Any time they are not in it.
    Always,
    /// When their last entry is older than this (ms).
    After(i64),
}

impl CompiledJourney {
    /// Renders each send step's template overrides with a sample context: one that
    /// already exceeds the render budget there is refused.
    pub fn check_budgets(&self) -> Result<(), ConfigError> {
        for (i, instruction) in self.program.iter().enumerate() {
            if let Instruction::Send(send) = instruction {
                for (name, value) in &send.overrides {
                    if let Some(text) = value.as_str() {
                        crate::render::check_budget(text, name == "html").map_err(|e| {
                            ConfigError(format!(
                                "the send to {:?} (instruction {i}), overrides.{name}: {e}",
                                send.destination
                            ))
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A validated journey with its program.
#[derive(Debug, Clone)]
pub struct CompiledJourney {
    /// As written.
    pub journey: Journey,
    /// The program.
    pub program: Vec<Instruction>,
    /// Re-entry rule.
    pub reentry: Reentry,
}

impl Journey {
    /// Validates and compiles; `destinations` are the existing destination ids.
    pub fn compile(&self, destinations: &[String]) -> Result<CompiledJourney, ConfigError> {
        check_key("journey key", &self.key)?;
        match (&self.trigger.audience_entered, &self.trigger.event) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return err("trigger needs exactly one of audienceEntered or event"),
        }
        let reentry = match &self.reentry {
            None | Some(Value::Bool(false)) | Some(Value::Null) => Reentry::Never,
            Some(Value::Bool(true)) => Reentry::Always,
            Some(Value::String(d)) => Reentry::After(parse_duration_ms(d)?),
            Some(_) => return err("reentry is false, true or a duration such as \"7d\""),
        };
        if self.steps.is_empty() {
            return err("steps is empty");
        }
        let mut program = Vec::new();
        compile_steps(&self.steps, destinations, &mut program, "steps")?;
        Ok(CompiledJourney {
            journey: self.clone(),
            program,
            reentry,
        })
    }
}

fn compile_steps(
    steps: &[Step],
    destinations: &[String],
    out: &mut Vec<Instruction>,
    path: &str,
) -> Result<(), ConfigError> {
    for (i, step) in steps.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let kinds = [
            step.wait.is_some(),
            step.wait_until.is_some(),
            step.condition.is_some(),
            step.send.is_some(),
            step.exit == Some(true),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return err(format!(
                "{here}: a step is exactly one of wait, waitUntil, if, send, exit"
            ));
        }
        let branches = step.wait_until.is_some() || step.condition.is_some();
        if !branches && (!step.then.is_empty() || !step.otherwise.is_empty()) {
            return err(format!(
                "{here}: then/else belong to if and waitUntil steps"
            ));
        }
        if let Some(wait) = &step.wait {
            out.push(Instruction::Wait(
                parse_duration_ms(wait).map_err(|e| ConfigError(format!("{here}.wait: {e}")))?,
            ));
        } else if let Some(send) = &step.send {
            if !destinations.contains(&send.destination) {
                return err(format!(
                    "{here}.send: no destination has the id {:?}{}",
                    send.destination,
                    tessera_core::suggest::did_you_mean(&send.destination, destinations)
                ));
            }
            for value in send.overrides.values() {
                if let Some(text) = value.as_str() {
                    crate::render::check_template(text)
                        .map_err(|e| ConfigError(format!("{here}.send.overrides: {e}")))?;
                }
            }
            out.push(Instruction::Send(send.clone()));
        } else if step.exit == Some(true) {
            out.push(Instruction::Exit);
        } else {
            let at = out.len();
            if let Some(wait) = &step.wait_until {
                let timeout_ms = parse_duration_ms(&wait.timeout)
                    .map_err(|e| ConfigError(format!("{here}.waitUntil.timeout: {e}")))?;
                out.push(Instruction::WaitFor {
                    event: wait.event.clone(),
                    timeout_ms,
                    on_timeout: 0,
                });
            } else if let Some(text) = &step.condition {
                let condition =
                    parse_definition(text).map_err(|e| ConfigError(format!("{here}.if: {e}")))?;
                out.push(Instruction::Branch {
                    condition,
                    otherwise: 0,
                });
            }
            compile_steps(&step.then, destinations, out, &format!("{here}.then"))?;
            let jump_at = out.len();
            out.push(Instruction::Jump(0));
            let else_at = out.len();
            compile_steps(&step.otherwise, destinations, out, &format!("{here}.else"))?;
            let end = out.len();
            out[jump_at] = Instruction::Jump(end);
            match &mut out[at] {
                Instruction::WaitFor { on_timeout, .. } => *on_timeout = else_at,
                Instruction::Branch { otherwise, .. } => *otherwise = else_at,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Parses an SMTP URL into (mode, host, port).
pub fn smtp_endpoint(url: &str) -> Result<(&'static str, String, u16), ConfigError> {
    let (mode, rest, default_port) = if let Some(rest) = url.strip_prefix("smtp+starttls://") {
        ("starttls", rest, 587)
    } else if let Some(rest) = url.strip_prefix("smtps://") {
        ("tls", rest, 465)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        ("plain", rest, 25)
    } else {
        return Err(ConfigError(
            "settings.smtpUrl must be smtp://host:port (plain), smtp+starttls://host:port or smtps://host:port".into(),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| ConfigError(format!("settings.smtpUrl: {port:?} is not a port")))?,
        ),
        None => (rest, default_port),
    };
    if host.is_empty() {
        return Err(ConfigError("settings.smtpUrl has no host".into()));
    }
    Ok((mode, host.to_string(), port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("5w").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
        assert!(parse_duration_ms("3651d").is_err());
        assert_eq!(parse_duration_ms("3650d"), Ok(MAX_DURATION_MS));
    }

    #[test]
    fn journeys_compile_to_jumps() {
        let journey: Journey = serde_json::from_value(json!({
            "key": "cart",
            "trigger": {"audienceEntered": "cart"},
            "steps": [
                {"wait": "1h"},
                {"if": "trait plan = \"pro\"", "then": [{"send": {"destination": "mail"}}],
                 "else": [{"exit": true}]},
                {"waitUntil": {"event": "Order Completed", "timeout": "1d"},
                 "else": [{"send": {"destination": "mail"}}]}
            ]
        }))
        .unwrap();
        let compiled = journey.compile(&["mail".to_string()]).unwrap();
        let shape: Vec<String> = compiled
            .program
            .iter()
            .map(|i| match i {
                Instruction::Wait(ms) => format!("wait {ms}"),
                Instruction::WaitFor { on_timeout, .. } => format!("waitfor else {on_timeout}"),
                Instruction::Branch { otherwise, .. } => format!("if else {otherwise}"),
                Instruction::Send(_) => "send".into(),
                Instruction::Jump(to) => format!("jump {to}"),
                Instruction::Exit => "exit".into(),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "wait 3600000",
                "if else 4",
                "send",
                "jump 5",
                "exit",
                "waitfor else 7",
                "jump 8",
                "send"
            ]
        );
        assert_eq!(compiled.reentry, Reentry::Never);
    }

    #[test]
    fn bad_journeys_say_where() {
        let bad: Journey = serde_json::from_value(json!({
            "key": "x", "trigger": {"event": "A"},
            "steps": [{"send": {"destination": "nope"}}]
        }))
        .unwrap();
        let e = bad.compile(&[]).unwrap_err();
        assert!(e.0.contains("steps[0].send"), "{e}");
        let two: Journey = serde_json::from_value(json!({
            "key": "x", "trigger": {"event": "A"}, "steps": [{"wait": "1h", "exit": true}]
        }))
        .unwrap();
        assert!(two.compile(&[]).is_err());
    }
}
