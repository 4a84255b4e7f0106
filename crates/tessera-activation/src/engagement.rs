//! Engagement of Tessera's own emails: an open pixel and rewritten links, each
//! carrying a signed token, served back by Tessera (`GET /e/o/{token}.gif`,
//! `GET /e/c/{token}`), where they become `Email Opened` / `Email Link Clicked`
//! events.
//!
//! A token is `<payload>.<signature>`, both base64url without padding: the payload
//! is a small JSON array (version, kind, delivery id, profile id, destination,
//! journey, link URL), the signature its HMAC-SHA256 under a secret only the server
//! holds. A token that does not verify is refused, so links cannot be forged or
//! turned into an open redirect: a click redirects only to the URL its own signed
//! token names, and only to `http`/`https`.
//!
//! Links are rewritten in the HTML part at send time (when the delivery id is
//! known); what the outbox stores stays the rendered message, so a retry sends the
//! same links. The plain-text part is left as written.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Longest token accepted, in characters (a link URL of [`MAX_URL_BYTES`] fits).
pub const MAX_TOKEN_CHARS: usize = 8_192;
/// Longest link URL rewritten, in bytes; longer links are left as they are.
pub const MAX_URL_BYTES: usize = 2_048;
/// Most links of one email rewritten; later ones are left as they are.
pub const MAX_LINKS: usize = 500;
/// The version written in every token's payload.
const VERSION: u64 = 1;

/// What a token records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The email was opened (its pixel was loaded).
    Open,
    /// A link was clicked.
    Click,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "o",
            Kind::Click => "c",
        }
    }
}

/// What a token says: which delivery of which destination (and journey) to which
/// person, and for a click, the link's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Open or click.
    pub kind: Kind,
    /// The delivery's id in the outbox (the email's message id).
    pub delivery: i64,
    /// The recipient's profile when the email was sent.
    pub profile: Option<i64>,
    /// The destination that sent it.
    pub destination: String,
    /// The journey that sent it, if any.
    pub journey: Option<String>,
    /// The link's URL (clicks).
    pub url: Option<String>,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Too long, not two base64url parts, or a payload of the wrong shape.
    #[error("the link is not one Tessera made (malformed token)")]
    Malformed,
    /// The signature does not hold: changed, or made with another secret.
    #[error("the link is not one Tessera made (bad signature)")]
    BadSignature,
    /// A valid token of the other kind (an open token on the click route).
    #[error("the link is not one Tessera made (wrong kind of token)")]
    WrongKind,
}

/// Signs and checks tokens, and rewrites emails; one per server.
#[derive(Clone)]
pub struct Engagement {
    public_url: String,
    /// HMAC-SHA256 keyed with the server's secret, cloned for each use.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Engagement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engagement")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Engagement {
    /// Tokens signed with `secret`, links pointing at `public_url` (the address
    /// recipients reach Tessera at, e.g. `https://cdp.example.com`).
    pub fn new(public_url: &str, secret: &[u8]) -> Result<Self, String> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .map_err(|e| format!("the engagement secret cannot key HMAC: {e}"))?;
        Ok(Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            keyed,
        })
    }

    /// The base of every link.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// The token for `token`: payload and signature.
    pub fn sign(&self, token: &Token) -> String {
        let payload = json!([
            VERSION,
            token.kind.as_str(),
            token.delivery,
            token.profile,
            token.destination,
            token.journey,
            token.url,
        ])
        .to_string();
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Checks a token from a request; `kind` is the route's.
    pub fn verify(&self, text: &str, kind: Kind) -> Result<Token, TokenError> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let (payload, signature) = text.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let token = parse_payload(&payload).ok_or(TokenError::Malformed)?;
        if token.kind != kind {
            return Err(TokenError::WrongKind);
        }
        Ok(token)
    }

    /// The open pixel's URL for a delivery.
    pub fn open_url(&self, base: &Token) -> String {
        let token = Token {
            kind: Kind::Open,
            url: None,
            ..base.clone()
        };
        format!("{}/e/o/{}.gif", self.public_url, self.sign(&token))
    }

    /// The tracked URL of a link.
    pub fn click_url(&self, base: &Token, url: &str) -> String {
        let token = Token {
            kind: Kind::Click,
            url: Some(url.to_owned()),
            ..base.clone()
        };
        format!("{}/e/c/{}", self.public_url, self.sign(&token))
    }

    /// The HTML with every `http(s)` link of an `<a href>` pointing at its tracked
    /// URL (at most [`MAX_LINKS`]) and the open pixel before `</body>` (or at the
    /// end). `base` names the delivery.
    pub fn rewrite_html(&self, html: &str, base: &Token) -> String {
        let mut out = String::with_capacity(html.len() + 1024);
        let mut rest = html;
        let mut links = 0;
        while let Some(start) = find_ascii_ci(rest, "<a") {
            let after = &rest[start + 2..];
            // `<a` followed by whitespace starts an anchor (not `<abbr>`).
            if !after.starts_with(|c: char| c.is_ascii_whitespace()) {
                out.push_str(&rest[..start + 2]);
                rest = after;
                continue;
            }
            let Some(end) = after.find('>') else {
                break;
            };
            let tag = &after[..end];
            out.push_str(&rest[..start + 2]);
            match href_value(tag) {
                Some((from, to, raw)) if links < MAX_LINKS => {
                    let url = unescape_attribute(raw);
                    if trackable(&url) {
                        links += 1;
                        out.push_str(&tag[..from]);
                        out.push_str(&escape_attribute(&self.click_url(base, &url)));
                        out.push_str(&tag[to..]);
                    } else {
                        out.push_str(tag);
                    }
                }
                _ => out.push_str(tag),
            }
            out.push('>');
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            escape_attribute(&self.open_url(base))
        );
        match out.rfind("</body>").or_else(|| out.rfind("</BODY>")) {
            Some(at) => out.insert_str(at, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

/// A token's payload, or `None` when it is not the shape [`Engagement::sign`] writes.
fn parse_payload(bytes: &[u8]) -> Option<Token> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let items = value.as_array()?;
    if items.len() != 7 || items[0].as_u64()? != VERSION {
        return None;
    }
    let kind = match items[1].as_str()? {
        "o" => Kind::Open,
        "c" => Kind::Click,
        _ => return None,
    };
    let optional_text = |v: &Value| -> Option<Option<String>> {
        match v {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s.clone())),
            _ => None,
        }
    };
    let profile = match &items[3] {
        Value::Null => None,
        other => Some(other.as_i64()?),
    };
    let token = Token {
        kind,
        delivery: items[2].as_i64()?,
        profile,
        destination: items[4].as_str()?.to_owned(),
        journey: optional_text(&items[5])?,
        url: optional_text(&items[6])?,
    };
    // A click names where it goes; an open names nowhere.
    match (kind, &token.url) {
        (Kind::Click, Some(url)) if trackable(url) => Some(token),
        (Kind::Open, None) => Some(token),
        _ => None,
    }
}

/// Whether a link URL is tracked (and may be redirected to): absolute `http` or
/// `https`, no longer than [`MAX_URL_BYTES`], without control characters.
pub fn trackable(url: &str) -> bool {
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() <= MAX_URL_BYTES
        && url.len() > lower.find("//").map_or(0, |i| i + 2)
        && !url.chars().any(|c| c.is_control() || c == ' ')
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// In the inside of an `<a …>` tag, the byte range of the `href` value (without
/// its quotes) and the value.
fn href_value(tag: &str) -> Option<(usize, usize, &str)> {
    let bytes = tag.as_bytes();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let at_name = bytes[i..i + 4].eq_ignore_ascii_case(b"href")
            && (i == 0 || bytes[i - 1].is_ascii_whitespace());
        if !at_name {
            i += 1;
            continue;
        }
        let mut j = i + 4;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            i += 4;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let quote = *bytes.get(j)?;
        if quote == b'"' || quote == b'\'' {
            let from = j + 1;
            let len = tag[from..].find(quote as char)?;
            return Some((from, from + len, &tag[from..from + len]));
        }
        // Unquoted: up to whitespace.
        let len = tag[j..]
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(tag.len() - j);
        return Some((j, j + len, &tag[j..j + len]));
    }
    None
}

fn unescape_attribute(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn engagement() -> Engagement {
        Engagement::new("https://cdp.example.com/", b"a secret of the server").unwrap()
    }

    fn base() -> Token {
        Token {
            kind: Kind::Open,
            delivery: 42,
            profile: Some(7),
            destination: "mail".into(),
            journey: Some("cart-email".into()),
            url: None,
        }
    }

    fn token_of(url: &str) -> String {
        let prefix = "https://cdp.example.com/e/";
        let rest = url.strip_prefix(prefix).unwrap();
        rest[2..].trim_end_matches(".gif").to_owned()
    }

    #[test]
    fn links_and_the_pixel_carry_verifiable_tokens() {
        let e = engagement();
        let html = r##"<html><body><p>Hi <abbr>x</abbr><a class="b" href="https://shop.example.com/cart?a=1&amp;b=2">cart</a>
<A HREF='http://example.org/x'>x</A> <a href="mailto:help@example.com">mail</a> <a href="#top">top</a></p></body></html>"##;
        let out = e.rewrite_html(html, &base());
        let clicks: Vec<&str> = out
            .match_indices("https://cdp.example.com/e/c/")
            .map(|(i, _)| &out[i..])
            .collect();
        assert_eq!(clicks.len(), 2, "{out}");
        let first = clicks[0].split(['"', '\'']).next().unwrap();
        let token = e.verify(&token_of(first), Kind::Click).unwrap();
        assert_eq!(
            token.url.as_deref(),
            Some("https://shop.example.com/cart?a=1&b=2")
        );
        assert_eq!(
            (token.delivery, token.profile, token.destination.as_str()),
            (42, Some(7), "mail")
        );
        assert_eq!(token.journey.as_deref(), Some("cart-email"));
        assert!(
            out.contains("mailto:help@example.com") && out.contains("href=\"#top\""),
            "{out}"
        );
        assert!(out.contains("<abbr>x</abbr>"));
        let pixel_at = out.find("/e/o/").unwrap();
        assert!(pixel_at < out.find("</body>").unwrap(), "{out}");
        let src = &out[out.find("<img src=\"").unwrap() + 10..];
        let src = src.split('"').next().unwrap();
        let open = e.verify(&token_of(src), Kind::Open).unwrap();
        assert_eq!(open.url, None);
        // The other kind's route refuses it.
        assert_eq!(
            e.verify(&token_of(src), Kind::Click),
            Err(TokenError::WrongKind)
        );
    }

    #[test]
    fn another_secret_or_a_changed_url_does_not_verify() {
        let e = engagement();
        let url = e.click_url(&base(), "https://shop.example.com/");
        let token = token_of(&url);
        let other = Engagement::new("https://cdp.example.com", b"another secret").unwrap();
        assert_eq!(
            other.verify(&token, Kind::Click),
            Err(TokenError::BadSignature)
        );
        // Point the payload at another site, keep the signature.
        let (_, signature) = token.split_once('.').unwrap();
        let forged_payload = json!([
            1,
            "c",
            42,
            7,
            "mail",
            "cart-email",
            "https://evil.example.net/"
        ])
        .to_string();
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(forged_payload));
        assert_eq!(
            e.verify(&forged, Kind::Click),
            Err(TokenError::BadSignature)
        );
        // Signed, but not somewhere a browser should be sent.
        let script = e.sign(&Token {
            kind: Kind::Click,
            url: Some("javascript:alert(1)".into()),
            ..base()
        });
        assert_eq!(e.verify(&script, Kind::Click), Err(TokenError::Malformed));
    }

    fn arb_token() -> impl Strategy<Value = Token> {
        (
            any::<bool>(),
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            ".{0,40}",
            proptest::option::of(".{0,40}"),
            "[a-z0-9/?=&.%#-]{0,200}",
        )
            .prop_map(
                |(click, delivery, profile, destination, journey, path)| Token {
                    kind: if click { Kind::Click } else { Kind::Open },
                    delivery,
                    profile,
                    destination,
                    journey,
                    url: click.then(|| format!("https://example.com/{path}")),
                },
            )
    }

    proptest! {
        #[test]
        fn what_is_signed_verifies_as_itself(token in arb_token()) {
            let e = engagement();
            let text = e.sign(&token);
            prop_assert_eq!(e.verify(&text, token.kind), Ok(token));
        }

        #[test]
        fn any_change_to_a_signed_token_is_refused(token in arb_token(), at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_.-]") {
            let e = engagement();
            let text = e.sign(&token);
            let i = at.index(text.len());
            let mut changed = text.clone();
            changed.replace_range(i..=i, &with);
            prop_assume!(changed != text);
            prop_assert!(e.verify(&changed, token.kind).is_err());
        }

        #[test]
        fn arbitrary_text_never_verifies_nor_panics(text in ".{0,300}", payload in ".{0,300}") {
            let e = engagement();
            prop_assert!(e.verify(&text, Kind::Click).is_err());
            let crafted = format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode([0u8; 32]));
            prop_assert!(e.verify(&crafted, Kind::Open).is_err());
        }

        #[test]
        fn rewriting_any_html_never_panics(html in ".{0,400}") {
            let out = engagement().rewrite_html(&html, &base());
            prop_assert!(out.contains("/e/o/"));
        }
    }
}
