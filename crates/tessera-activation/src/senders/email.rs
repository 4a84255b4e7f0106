//! Email destinations over SMTP: the rendered message with an optional HTML part
//! (open pixel and tracked links added when sending) and `List-Unsubscribe`.

use super::{Attempt, Clients, Overrides};
use crate::config::{EmailSettings, smtp_endpoint};
use crate::render::{RenderError, render_html, render_text};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};
use std::time::Duration;
use tessera_store::activation::Delivery;

/// What an email destination stores in the outbox for one event.
pub(super) fn render(
    settings: &EmailSettings,
    overrides: &Overrides<'_>,
    context: &Value,
) -> Result<Value, RenderError> {
    let to = overrides.recipient(
        settings.to.as_deref(),
        "{{ traits.email }}",
        context,
        "the person has no email address (traits.email)",
    )?;
    let html = overrides
        .text("html", settings.html.as_deref())
        .map(|t| render_html(&t, context))
        .transpose()?;
    let unsubscribe = overrides
        .text("unsubscribeUrl", settings.unsubscribe_url.as_deref())
        .map(|t| render_text(&t, context))
        .transpose()?;
    Ok(json!({
        "to": to,
        "subject": render_text(&overrides.text("subject", Some(&settings.subject)).unwrap_or_default(), context)?,
        "text": render_text(&overrides.text("text", Some(&settings.text)).unwrap_or_default(), context)?,
        "html": html,
        "unsubscribe": unsubscribe,
    }))
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

/// Sends one delivery: builds the message (the open pixel and tracked links name
/// this delivery, known only now) and hands it to the SMTP relay.
pub(super) async fn send(
    clients: &Clients,
    settings: &EmailSettings,
    delivery: &Delivery,
    payload: &Value,
    timeout: Duration,
) -> Attempt {
    let engagement = clients
        .engagement
        .as_deref()
        .filter(|_| settings.track_engagement != Some(false));
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
}
