//! Signature checks of webhook senders, over the raw request body.
//!
//! Every comparison of a presented signature with the expected one is constant-time
//! (`Mac::verify_slice`). The header parsers face the network and are total: any
//! string gives a parsed header or a reason, never a panic (property-tested below).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a Stripe signature's timestamp may be from now, in seconds.
pub const STRIPE_TOLERANCE_SECONDS: i64 = 300;
/// Longest signature header looked at; longer ones are refused unread.
pub const MAX_SIGNATURE_HEADER_CHARS: usize = 2_048;
/// Most `v1=` signatures of a Stripe header checked.
const MAX_STRIPE_SIGNATURES: usize = 8;

/// Why a signature was refused (a message for the sender's operator; never the
/// expected value or the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureProblem(pub String);

fn problem(text: impl Into<String>) -> SignatureProblem {
    SignatureProblem(text.into())
}

/// HMAC-SHA256 of `parts` (concatenated) under `secret`; `None` only if the HMAC
/// implementation refused the key, which it does for no key length.
fn mac(secret: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

/// HMAC-SHA256 of `parts` (concatenated) under `secret`.
pub fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(secret, parts).map_or([0; 32], |mac| mac.finalize().into_bytes().into())
}

/// Whether `presented` is the HMAC of `parts`, compared in constant time.
fn verify(secret: &[u8], parts: &[&[u8]], presented: &[u8]) -> bool {
    mac(secret, parts).is_some_and(|mac| mac.verify_slice(presented).is_ok())
}

/// Decodes a base64 signature header (Shopify's `X-Shopify-Hmac-Sha256`,
/// WooCommerce's `X-WC-Webhook-Signature`).
pub fn parse_base64_signature(value: &str) -> Result<Vec<u8>, SignatureProblem> {
    if value.len() > MAX_SIGNATURE_HEADER_CHARS {
        return Err(problem("the signature header is too long"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| problem("the signature header is not base64"))?;
    if decoded.len() != 32 {
        return Err(problem(
            "the signature header is not a base64 HMAC-SHA256 (32 bytes)",
        ));
    }
    Ok(decoded)
}

/// Checks a base64 HMAC-SHA256 of the raw body (Shopify, WooCommerce).
pub fn verify_base64_body(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    header_name: &str,
) -> Result<(), SignatureProblem> {
    verify_body(secret, body, header, header_name, parse_base64_signature)
}

/// Checks an HMAC-SHA256 of the raw body presented in `header`, read by `parse`.
fn verify_body(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    header_name: &str,
    parse: fn(&str) -> Result<Vec<u8>, SignatureProblem>,
) -> Result<(), SignatureProblem> {
    let value = header.ok_or_else(|| problem(format!("the {header_name} header is missing")))?;
    let presented = parse(value)?;
    if verify(secret, &[body], &presented) {
        Ok(())
    } else {
        Err(problem(format!(
            "the {header_name} header does not match the body: check the source's secret"
        )))
    }
}

/// A parsed `Stripe-Signature` header: `t=<unix seconds>,v1=<hex>[,v1=…][,v0=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSignature {
    /// The signing time, Unix seconds.
    pub timestamp: i64,
    /// The `v1` signatures (HMAC-SHA256, 32 bytes each); other schemes are ignored.
    pub v1: Vec<Vec<u8>>,
}

/// Parses a `Stripe-Signature` header.
pub fn parse_stripe_signature(value: &str) -> Result<StripeSignature, SignatureProblem> {
    if value.len() > MAX_SIGNATURE_HEADER_CHARS {
        return Err(problem("the Stripe-Signature header is too long"));
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in value.split(',') {
        let Some((key, val)) = item.trim().split_once('=') else {
            return Err(problem(
                "the Stripe-Signature header is not t=<seconds>,v1=<hex>",
            ));
        };
        match key {
            "t" => {
                let parsed = val
                    .parse::<i64>()
                    .map_err(|_| problem("the Stripe-Signature timestamp t= is not a number"))?;
                timestamp = Some(parsed);
            }
            "v1" if v1.len() < MAX_STRIPE_SIGNATURES => {
                // A v1 that is not 64 hex digits can never match; skip it.
                if let Some(bytes) = decode_hex(val).filter(|b| b.len() == 32) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| problem("the Stripe-Signature header has no t="))?;
    if v1.is_empty() {
        return Err(problem(
            "the Stripe-Signature header has no v1= signature of 64 hex digits",
        ));
    }
    Ok(StripeSignature { timestamp, v1 })
}

/// Checks a `Stripe-Signature` header: a `v1` must be the HMAC-SHA256 of
/// `<t>.<body>` under the endpoint's signing secret, and `t` within
/// [`STRIPE_TOLERANCE_SECONDS`] of `now_s` (the injected clock's now).
pub fn verify_stripe(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    now_s: i64,
) -> Result<(), SignatureProblem> {
    let value = header.ok_or_else(|| problem("the Stripe-Signature header is missing"))?;
    let parsed = parse_stripe_signature(value)?;
    if now_s.saturating_sub(parsed.timestamp).abs() > STRIPE_TOLERANCE_SECONDS {
        return Err(problem(format!(
            "the Stripe-Signature timestamp is more than {STRIPE_TOLERANCE_SECONDS} seconds from now (a replayed or delayed delivery, or a wrong clock)"
        )));
    }
    let t = parsed.timestamp.to_string();
    if parsed
        .v1
        .iter()
        .any(|sig| verify(secret, &[t.as_bytes(), b".", body], sig))
    {
        Ok(())
    } else {
        Err(problem(
            "no v1 signature of the Stripe-Signature header matches the body: check the source's signing secret (whsec_…)",
        ))
    }
}

/// Parses the generic signature header: `sha256=<hex>`, bare hex, or base64 of an
/// HMAC-SHA256.
pub fn parse_generic_signature(value: &str) -> Result<Vec<u8>, SignatureProblem> {
    if value.len() > MAX_SIGNATURE_HEADER_CHARS {
        return Err(problem("the signature header is too long"));
    }
    let value = value.trim();
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    if let Some(bytes) = decode_hex(value).filter(|b| b.len() == 32) {
        return Ok(bytes);
    }
    parse_base64_signature(value).map_err(|_| {
        problem("the signature header is not sha256=<hex>, hex or base64 of an HMAC-SHA256")
    })
}

/// Checks the generic signature: HMAC-SHA256 of the raw body.
pub fn verify_generic(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    header_name: &str,
) -> Result<(), SignatureProblem> {
    verify_body(secret, body, header, header_name, parse_generic_signature)
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Base64 of bytes (what Shopify and WooCommerce send).
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shopify_style_base64_signature_is_checked() {
        let body = br#"{"id":820982911946154508}"#;
        let good = to_base64(&hmac_sha256(b"secret", &[body]));
        assert!(verify_base64_body(b"secret", body, Some(&good), "X").is_ok());
        assert!(verify_base64_body(b"other", body, Some(&good), "X").is_err());
        assert!(verify_base64_body(b"secret", b"{}", Some(&good), "X").is_err());
        assert!(verify_base64_body(b"secret", body, None, "X").is_err());
        assert!(verify_base64_body(b"secret", body, Some("!!"), "X").is_err());
    }

    #[test]
    fn stripe_signature_with_tolerance() {
        let body = br#"{"id":"evt_1","type":"customer.created"}"#;
        let t = 1_700_000_000_i64;
        let sig = to_hex(&hmac_sha256(
            b"whsec_x",
            &[t.to_string().as_bytes(), b".", body],
        ));
        let header = format!("t={t},v1={},v0=deadbeef", sig);
        assert!(verify_stripe(b"whsec_x", body, Some(&header), t + 299).is_ok());
        assert!(verify_stripe(b"whsec_x", body, Some(&header), t - 299).is_ok());
        let stale = verify_stripe(b"whsec_x", body, Some(&header), t + 301).unwrap_err();
        assert!(stale.0.contains("300 seconds"));
        assert!(verify_stripe(b"whsec_y", body, Some(&header), t).is_err());
        // A second, rotated signature may match.
        let two = format!("t={t},v1={},v1={sig}", "0".repeat(64));
        assert!(verify_stripe(b"whsec_x", body, Some(&two), t).is_ok());
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "garbage", "t=1,v1=zz"] {
            assert!(parse_stripe_signature(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generic_signature_forms() {
        let body = b"hello";
        let mac = hmac_sha256(b"k", &[body]);
        for form in [
            format!("sha256={}", to_hex(&mac)),
            to_hex(&mac),
            to_hex(&mac).to_uppercase(),
            to_base64(&mac),
        ] {
            assert!(
                verify_generic(b"k", body, Some(&form), "X").is_ok(),
                "{form}"
            );
        }
        assert!(verify_generic(b"k", b"hellO", Some(&to_hex(&mac)), "X").is_err());
    }

    proptest! {
        #[test]
        fn header_parsers_are_total(text in ".{0,300}") {
            let _ = parse_stripe_signature(&text);
            let _ = parse_generic_signature(&text);
            let _ = parse_base64_signature(&text);
        }

        #[test]
        fn stripe_parser_reads_what_it_is_given(t in any::<i64>(), sig in proptest::collection::vec(any::<u8>(), 32), junk in "[a-z0-9]{0,10}") {
            let header = format!("t={t},v0={junk},v1={}", to_hex(&sig));
            let parsed = parse_stripe_signature(&header).unwrap();
            prop_assert_eq!(parsed.timestamp, t);
            prop_assert_eq!(parsed.v1, vec![sig]);
        }

        #[test]
        fn only_the_right_mac_verifies(body in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..32) {
            let mac = hmac_sha256(b"s", &[&body]);
            prop_assert!(verify_generic(b"s", &body, Some(&to_hex(&mac)), "X").is_ok());
            let mut wrong = mac;
            wrong[flip] ^= 1;
            prop_assert!(verify_generic(b"s", &body, Some(&to_hex(&wrong)), "X").is_err());
        }
    }
}
