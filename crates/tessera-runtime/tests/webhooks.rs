//! Webhook presets against payloads shaped like the senders' documented examples
//! (`tests/fixtures/webhooks/`), signed as each sender signs.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tessera_runtime::webhooks::signature::{hmac_sha256, to_base64, to_hex};
use tessera_runtime::webhooks::{
    CompiledWebhook, Preset, WebhookConfig, WebhookHeaders, WebhookOutcome, handle,
};

const SECRET: &str = "hush-hush-secret";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compiled(preset: Preset, mapping: Option<Value>) -> CompiledWebhook {
    WebhookConfig {
        preset,
        secret: SECRET.into(),
        mapping,
        signature_header: None,
    }
    .compile()
    .unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn messages(outcome: WebhookOutcome) -> Vec<Map<String, Value>> {
    match outcome {
        WebhookOutcome::Messages(m) => m,
        WebhookOutcome::Ping => panic!("a ping"),
    }
}

fn shopify(topic: &str, body: &[u8]) -> Vec<Map<String, Value>> {
    let sig = to_base64(&hmac_sha256(SECRET.as_bytes(), &[body]));
    let headers = WebhookHeaders::new([
        ("X-Shopify-Hmac-Sha256", sig.as_str()),
        ("X-Shopify-Topic", topic),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ]);
    messages(
        handle(
            "src_a",
            &compiled(Preset::Shopify, None),
            &headers,
            body,
            now(),
        )
        .unwrap(),
    )
}

#[test]
fn shopify_order_checkout_and_customer() {
    let order = &shopify("orders/create", &fixture("shopify_orders_create"))[0];
    assert_eq!(order["type"], "track");
    assert_eq!(order["event"], "Order Completed");
    assert_eq!(order["anonymousId"], "shopify:115310627314723954");
    assert_eq!(
        order["messageId"],
        "shopify:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    );
    assert_eq!(order["timestamp"], "2022-01-01T00:00:00.000Z");
    assert_eq!(order["context"]["traits"]["email"], "jon@example.com");
    assert_eq!(order["context"]["webhook"]["topic"], "orders/create");
    let p = &order["properties"];
    assert_eq!(p["order_id"], "820982911946154508");
    assert_eq!(
        (p["total"].as_f64(), p["revenue"].as_f64()),
        (Some(403.0), Some(388.0))
    );
    assert_eq!(
        (p["shipping"].as_f64(), p["discount"].as_f64()),
        (Some(10.0), Some(20.0))
    );
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["products"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        p["products"][0],
        json!({"product_id": "632910392", "sku": "IPOD2008PINK", "name": "IPod Nano - 8GB", "price": 199.0, "quantity": 1, "position": 1})
    );

    let checkout = &shopify("checkouts/create", &fixture("shopify_checkouts_create"))[0];
    assert_eq!(checkout["event"], "Checkout Started");
    assert_eq!(checkout["properties"]["checkout_id"], "123123123");
    assert_eq!(checkout["properties"]["products"][0]["variant"], "Pink");
    assert_eq!(checkout["properties"]["products"][0]["brand"], "Apple");

    let customer = &shopify("customers/create", &fixture("shopify_customers_create"))[0];
    assert_eq!(customer["type"], "identify");
    assert_eq!(customer["anonymousId"], "shopify:706405506930370084");
    let t = &customer["traits"];
    assert_eq!(
        (
            t["email"].as_str(),
            t["firstName"].as_str(),
            t["lastName"].as_str()
        ),
        (Some("bob@biller.com"), Some("Bob"), Some("Biller"))
    );
    assert_eq!(t["name"], "Bob Biller");
    assert_eq!(t["address"]["postalCode"], "K2P 2L8");

    // A topic without a mapping is kept whole.
    let other = &shopify("orders/paid", &fixture("shopify_orders_create"))[0];
    assert_eq!(other["event"], "Webhook Received");
    assert_eq!(other["properties"]["topic"], "orders/paid");
    assert_eq!(other["properties"]["body"]["id"], 820982911946154508_u64);
}

#[test]
fn shopify_refuses_wrong_or_missing_signatures() {
    let body = fixture("shopify_orders_create");
    let config = compiled(Preset::Shopify, None);
    for sig in [
        None,
        Some(to_base64(&hmac_sha256(b"wrong-secret", &[&body]))),
        Some("not base64 !".to_owned()),
    ] {
        let mut pairs = vec![("X-Shopify-Topic", "orders/create")];
        if let Some(sig) = &sig {
            pairs.push(("X-Shopify-Hmac-Sha256", sig.as_str()));
        }
        let error =
            handle("src_a", &config, &WebhookHeaders::new(pairs), &body, now()).unwrap_err();
        assert_eq!(
            tessera_core::CodedError::code(&error),
            tessera_core::ErrorCode::InvalidWebhookSignature
        );
    }
}

#[test]
fn woocommerce_order_customer_and_ping() {
    let config = compiled(Preset::Woocommerce, None);
    let run = |topic: &str, body: &[u8]| {
        let sig = to_base64(&hmac_sha256(SECRET.as_bytes(), &[body]));
        let headers = WebhookHeaders::new([
            ("X-WC-Webhook-Signature", sig.as_str()),
            ("X-WC-Webhook-Topic", topic),
            ("X-WC-Webhook-Delivery-ID", "9"),
        ]);
        messages(handle("src_w", &config, &headers, body, now()).unwrap())
    };
    let order = &run("order.created", &fixture("woocommerce_order_created"))[0];
    assert_eq!(order["event"], "Order Completed");
    assert_eq!(order["anonymousId"], "woocommerce-order:727");
    assert_eq!(
        order["messageId"],
        "woocommerce:order.created:727:2017-03-22T19:28:08"
    );
    assert_eq!(order["timestamp"], "2017-03-22T19:28:02.000Z");
    assert_eq!(order["context"]["traits"]["email"], "john.doe@example.com");
    let p = &order["properties"];
    assert_eq!(
        (
            p["total"].as_f64(),
            p["shipping"].as_f64(),
            p["tax"].as_f64()
        ),
        (Some(29.35), Some(10.0), Some(1.35))
    );
    assert_eq!(p["products"][1]["variant"], "23");
    assert_eq!(p["products"][0]["quantity"], 2);
    let customer = &run("customer.created", &fixture("woocommerce_customer_created"))[0];
    assert_eq!(customer["type"], "identify");
    assert_eq!(customer["traits"]["phone"], "(555) 555-5555");

    // The unsigned ping when a webhook is saved.
    let ping = handle(
        "src_w",
        &config,
        &WebhookHeaders::default(),
        b"webhook_id=15",
        now(),
    )
    .unwrap();
    assert_eq!(ping, WebhookOutcome::Ping);
    // Anything else unsigned is refused.
    assert!(
        handle(
            "src_w",
            &config,
            &WebhookHeaders::default(),
            b"{\"id\":1}",
            now()
        )
        .is_err()
    );
}

fn stripe_header(body: &[u8], t: i64, secret: &str) -> String {
    let sig = hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    format!("t={t},v1={}", to_hex(&sig))
}

#[test]
fn stripe_payments_customers_and_tolerance() {
    let config = compiled(Preset::Stripe, None);
    let t = now().timestamp();
    let run = |name: &str| {
        let body = fixture(name);
        let headers = WebhookHeaders::new([(
            "Stripe-Signature",
            stripe_header(&body, t - 10, SECRET).as_str(),
        )]);
        messages(handle("src_s", &config, &headers, &body, now()).unwrap())
    };
    let paid = &run("stripe_payment_intent_succeeded")[0];
    assert_eq!(paid["event"], "Payment Succeeded");
    assert_eq!(paid["messageId"], "stripe:evt_3MtwBwLkdIwHu7ix0Jx4lPQK");
    assert_eq!(paid["anonymousId"], "stripe:cus_NffrFeUfNV2Hib");
    assert_eq!(paid["properties"]["amount"].as_f64(), Some(20.0));
    assert_eq!(paid["properties"]["revenue"].as_f64(), Some(20.0));
    assert_eq!(paid["properties"]["currency"], "USD");
    assert_eq!(
        paid["context"]["traits"]["email"],
        "jenny.rosen@example.com"
    );
    let charge = &run("stripe_charge_succeeded")[0];
    assert_eq!(charge["event"], "Charge Succeeded");
    assert_eq!(
        charge["properties"]["payment_intent_id"],
        "pi_3MtwBwLkdIwHu7ix28a3tqPa"
    );
    let customer = &run("stripe_customer_created")[0];
    assert_eq!(customer["type"], "identify");
    assert_eq!(customer["traits"]["email"], "jennyrosen@example.com");
    assert_eq!(customer["traits"]["name"], "Jenny Rosen");
    let other = &run("stripe_invoice_paid")[0];
    assert_eq!(other["event"], "Webhook Received");
    assert_eq!(other["properties"]["topic"], "invoice.paid");

    let body = fixture("stripe_customer_created");
    for (header, why) in [
        (stripe_header(&body, t - 301, SECRET), "300 seconds"),
        (stripe_header(&body, t + 301, SECRET), "300 seconds"),
        (stripe_header(&body, t, "whsec_other_secret"), "no v1"),
    ] {
        let headers = WebhookHeaders::new([("Stripe-Signature", header.as_str())]);
        let error = handle("src_s", &config, &headers, &body, now()).unwrap_err();
        assert!(error.to_string().contains(why), "{error}");
    }
}

fn generic(mapping: Value, body: &[u8]) -> Vec<Map<String, Value>> {
    let config = compiled(Preset::Generic, Some(mapping));
    let sig = format!(
        "sha256={}",
        to_hex(&hmac_sha256(SECRET.as_bytes(), &[body]))
    );
    let headers = WebhookHeaders::new([("X-Signature-256", sig.as_str())]);
    messages(handle("src_g", &config, &headers, body, now()).unwrap())
}

#[test]
fn generic_mapping_and_fallbacks() {
    let body = fixture("generic_event");
    let mapping = json!({
        "type": "track", "event": "/action", "userId": "/account/id", "messageId": "/delivery_id",
        "timestamp": "/occurred_at", "properties": "/data",
        "context": {"traits": {"pointer": "/account"}}
    });
    let m = &generic(mapping, &body)[0];
    assert_eq!(m["event"], "Subscription Renewed");
    assert_eq!(m["userId"], "acct_42");
    assert_eq!(m["messageId"], "generic:dlv_01HZX3");
    assert_eq!(
        m["properties"],
        json!({"plan": "pro", "seats": 12, "amount": 480.0})
    );
    assert_eq!(m["context"]["traits"]["email"], "ops@example.org");
    assert_eq!(m["context"]["webhook"]["preset"], "generic");

    // A mapping that finds no event keeps the payload, saying why.
    let kept = &generic(json!({"type": "track", "event": "/nope"}), &body)[0];
    assert_eq!(kept["event"], "Webhook Received");
    assert!(
        kept["properties"]["mappingProblem"]
            .as_str()
            .unwrap()
            .contains("event")
    );
    assert_eq!(kept["properties"]["body"]["action"], "Subscription Renewed");
    // The same body gets the same messageId (the sender's retry is stored once).
    let again = &generic(json!({"type": "track", "event": "/nope"}), &body)[0];
    assert_eq!(kept["messageId"], again["messageId"]);
    // Not JSON: kept as text.
    let text = &generic(json!({"type": "track", "event": "/a"}), b"a=1&b=2")[0];
    assert_eq!(text["properties"]["rawBody"], "a=1&b=2");
    // Its id comes from the body too, and it says where it came from.
    assert!(
        text["messageId"]
            .as_str()
            .unwrap()
            .starts_with("generic:sha256:")
    );
    assert_eq!(text["context"]["webhook"]["sourceId"], "src_g");
    // Too large to copy into one message: kept with its size and hash.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(40_000));
    let big = &generic(json!({"type": "track", "event": "/a"}), big.as_bytes())[0];
    assert_eq!(big["properties"]["bodyOmitted"], true);
    assert_eq!(big["properties"]["bodyKeys"], json!(["pad"]));
}

#[test]
fn body_limit_and_config_checks() {
    let config = compiled(Preset::Generic, None);
    let huge = vec![b' '; tessera_runtime::webhooks::MAX_WEBHOOK_BODY_BYTES + 1];
    let error = handle("src_g", &config, &WebhookHeaders::default(), &huge, now()).unwrap_err();
    assert_eq!(
        tessera_core::CodedError::code(&error),
        tessera_core::ErrorCode::WebhookBodyTooLarge
    );
    for body in [
        &br#"{"preset": "shopify"}"#[..],
        br#"{"preset": "magento", "secret": "0123456789"}"#,
        br#"{"preset": "shopify", "secret": "short"}"#,
        br#"{"preset": "shopify", "secret": "0123456789", "mapping": {}}"#,
        br#"{"preset": "generic", "secret": "0123456789", "mapping": {"evnt": "/a"}}"#,
        br#"{"preset": "generic", "secret": "0123456789", "signatureHeader": "bad header"}"#,
        b"[",
    ] {
        let error = tessera_runtime::webhooks::parse_config(body).unwrap_err();
        assert_eq!(
            tessera_core::CodedError::code(&error),
            tessera_core::ErrorCode::InvalidWebhookConfig
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any configuration bytes: a configuration or a coded refusal, never a panic.
        #[test]
        fn parse_config_is_total(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = tessera_runtime::webhooks::parse_config(&body);
        }

        /// Any body and signature header, signed or not, for every preset: a refusal or
        /// messages that each have a type and a messageId of at most 100 characters.
        #[test]
        fn handle_is_total_and_its_messages_are_well_formed(
            preset in prop_oneof![Just(Preset::Shopify), Just(Preset::Woocommerce), Just(Preset::Stripe), Just(Preset::Generic)],
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                "\\{\"id\":[0-9]{1,5},\"type\":\"(customer.created|charge.succeeded)\",\"data\":\\{\"object\":\\{\"id\":\"x\"\\}\\}\\}".prop_map(String::into_bytes),
            ],
            header in ".{0,120}",
            topic in prop_oneof![Just("orders/create"), Just("customers/create"), Just("order.created"), Just("x")],
            sign in any::<bool>(),
        ) {
            let mapping = (preset == Preset::Generic).then(|| json!({"type": "track", "event": "/type", "properties": "/data"}));
            let config = compiled(preset, mapping);
            let t = now().timestamp();
            let signature = if sign {
                match preset {
                    Preset::Stripe => stripe_header(&body, t, SECRET),
                    Preset::Generic => to_hex(&hmac_sha256(SECRET.as_bytes(), &[&body])),
                    _ => to_base64(&hmac_sha256(SECRET.as_bytes(), &[&body])),
                }
            } else {
                header
            };
            let headers = WebhookHeaders::new([
                ("X-Shopify-Hmac-Sha256", signature.as_str()),
                ("X-WC-Webhook-Signature", signature.as_str()),
                ("Stripe-Signature", signature.as_str()),
                ("X-Signature-256", signature.as_str()),
                ("X-Shopify-Topic", topic),
                ("X-WC-Webhook-Topic", topic),
            ]);
            match handle("src_p", &config, &headers, &body, now()) {
                Ok(WebhookOutcome::Messages(messages)) => {
                    prop_assert!(sign || preset == Preset::Woocommerce || !messages.is_empty());
                    for m in messages {
                        prop_assert!(m.get("type").and_then(Value::as_str).is_some());
                        let id = m.get("messageId").and_then(Value::as_str).unwrap_or("");
                        prop_assert!(!id.is_empty() && id.chars().count() <= 100);
                    }
                }
                Ok(WebhookOutcome::Ping) => prop_assert_eq!(preset, Preset::Woocommerce),
                Err(_) => prop_assert!(!sign),
            }
        }
    }
}
