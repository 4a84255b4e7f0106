//! The built-in mappings: Shopify, WooCommerce and Stripe payloads to Segment
//! messages (the e-commerce spec's field names). Each returns `None` for a topic it
//! does not map, and the caller keeps the payload as a `Webhook Received` track.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// Most products copied from one order or checkout.
pub const MAX_PRODUCTS: usize = 250;

/// A mapped message before its `messageId` is set.
pub type Mapped = Map<String, Value>;

/// A string field (numbers are written as text, as ids often are).
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A numeric field; shops send prices as decimal strings (`"199.00"`).
pub(crate) fn number(value: Option<&Value>) -> Option<Value> {
    match value? {
        Value::Number(n) => Some(Value::Number(n.clone())),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        _ => None,
    }
}

/// An ISO-8601 time as RFC 3339 UTC, when it parses.
pub(crate) fn iso_time(value: Option<&Value>) -> Option<String> {
    let text = value?.as_str()?;
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            // WooCommerce's `date_created_gmt` has no offset.
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc())
        })
        .ok()?;
    Some(parsed.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Unix seconds as RFC 3339 UTC.
pub(crate) fn unix_time(value: Option<&Value>) -> Option<String> {
    let seconds = value?.as_i64()?;
    DateTime::from_timestamp(seconds, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value.into());
    }
}

fn message(kind: &str, anonymous_id: String) -> Mapped {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("anonymousId".into(), anonymous_id.into());
    m
}

fn track(event: &str, anonymous_id: String, properties: Map<String, Value>) -> Mapped {
    let mut m = message("track", anonymous_id);
    m.insert("event".into(), event.into());
    m.insert("properties".into(), Value::Object(properties));
    m
}

/// `context.traits` for identity resolution (email and phone link profiles).
fn context_traits(m: &mut Mapped, email: Option<String>, phone: Option<String>) {
    let mut traits = Map::new();
    put(&mut traits, "email", email);
    put(&mut traits, "phone", phone);
    if !traits.is_empty() {
        m.insert("context".into(), json!({"traits": traits}));
    }
}

fn products(items: Option<&Value>, woo: bool) -> Value {
    let Some(items) = items.and_then(Value::as_array) else {
        return Value::Array(Vec::new());
    };
    let list = items
        .iter()
        .take(MAX_PRODUCTS)
        .enumerate()
        .map(|(index, item)| {
            let mut product = Map::new();
            put(&mut product, "product_id", text(item.get("product_id")));
            put(&mut product, "sku", text(item.get("sku")));
            let name = if woo {
                text(item.get("name"))
            } else {
                text(item.get("title")).or_else(|| text(item.get("name")))
            };
            put(&mut product, "name", name);
            put(&mut product, "price", number(item.get("price")));
            put(&mut product, "quantity", number(item.get("quantity")));
            if woo {
                put(
                    &mut product,
                    "variant",
                    text(item.get("variation_id")).filter(|v| v != "0"),
                );
            } else {
                put(&mut product, "variant", text(item.get("variant_title")));
                put(&mut product, "brand", text(item.get("vendor")));
            }
            product.insert("position".into(), (index + 1).into());
            Value::Object(product)
        })
        .collect();
    Value::Array(list)
}

fn sum_prices(items: Option<&Value>) -> Option<Value> {
    let items = items?.as_array()?;
    let total: f64 = items
        .iter()
        .filter_map(|line| number(line.get("price")).and_then(|n| n.as_f64()))
        .sum();
    serde_json::Number::from_f64(total).map(Value::Number)
}

/// Shopify: `orders/create` → `Order Completed`, `checkouts/create` → `Checkout
/// Started`, `customers/create` → `identify`.
pub fn shopify(topic: &str, body: &Value) -> Option<Vec<Mapped>> {
    let customer = body.get("customer");
    let customer_id = customer.and_then(|c| text(c.get("id")));
    let email = text(body.get("email"))
        .or_else(|| text(body.get("contact_email")))
        .or_else(|| customer.and_then(|c| text(c.get("email"))));
    let phone = text(body.get("phone")).or_else(|| customer.and_then(|c| text(c.get("phone"))));
    match topic {
        "orders/create" => {
            let order_id = text(body.get("id"))?;
            let mut p = Map::new();
            p.insert("order_id".into(), order_id.clone().into());
            put(&mut p, "checkout_id", text(body.get("checkout_id")));
            put(&mut p, "order_number", text(body.get("order_number")));
            p.insert("affiliation".into(), "Shopify".into());
            put(&mut p, "total", number(body.get("total_price")));
            put(&mut p, "subtotal", number(body.get("subtotal_price")));
            put(&mut p, "revenue", number(body.get("subtotal_price")));
            put(&mut p, "shipping", sum_prices(body.get("shipping_lines")));
            put(&mut p, "tax", number(body.get("total_tax")));
            put(&mut p, "discount", number(body.get("total_discounts")));
            put(
                &mut p,
                "coupon",
                body.pointer("/discount_codes/0/code")
                    .and_then(|c| text(Some(c))),
            );
            put(&mut p, "currency", text(body.get("currency")));
            p.insert("products".into(), products(body.get("line_items"), false));
            let id = customer_id.map_or_else(
                || format!("shopify-order:{order_id}"),
                |c| format!("shopify:{c}"),
            );
            let mut m = track("Order Completed", id, p);
            put(&mut m, "timestamp", iso_time(body.get("created_at")));
            context_traits(&mut m, email, phone);
            Some(vec![m])
        }
        "checkouts/create" => {
            let token = text(body.get("token")).or_else(|| text(body.get("id")))?;
            let mut p = Map::new();
            p.insert("checkout_id".into(), token.clone().into());
            p.insert("affiliation".into(), "Shopify".into());
            put(&mut p, "value", number(body.get("total_price")));
            put(&mut p, "revenue", number(body.get("subtotal_price")));
            put(&mut p, "tax", number(body.get("total_tax")));
            put(&mut p, "discount", number(body.get("total_discounts")));
            put(&mut p, "currency", text(body.get("currency")));
            p.insert("products".into(), products(body.get("line_items"), false));
            let id = customer_id.map_or_else(
                || format!("shopify-checkout:{token}"),
                |c| format!("shopify:{c}"),
            );
            let mut m = track("Checkout Started", id, p);
            put(&mut m, "timestamp", iso_time(body.get("created_at")));
            context_traits(&mut m, email, phone);
            Some(vec![m])
        }
        "customers/create" => {
            let id = text(body.get("id"))?;
            let mut traits = Map::new();
            put(&mut traits, "email", text(body.get("email")));
            put(&mut traits, "phone", text(body.get("phone")));
            let first = text(body.get("first_name"));
            let last = text(body.get("last_name"));
            let name = match (&first, &last) {
                (Some(f), Some(l)) => Some(format!("{f} {l}")),
                (Some(n), None) | (None, Some(n)) => Some(n.clone()),
                (None, None) => None,
            };
            put(&mut traits, "firstName", first);
            put(&mut traits, "lastName", last);
            put(&mut traits, "name", name);
            put(&mut traits, "createdAt", iso_time(body.get("created_at")));
            traits.insert("shopifyCustomerId".into(), id.clone().into());
            if let Some(address) = body.get("default_address").filter(|a| a.is_object()) {
                let mut a = Map::new();
                put(&mut a, "street", text(address.get("address1")));
                put(&mut a, "city", text(address.get("city")));
                put(&mut a, "state", text(address.get("province")));
                put(&mut a, "postalCode", text(address.get("zip")));
                put(&mut a, "country", text(address.get("country")));
                traits.insert("address".into(), Value::Object(a));
            }
            let mut m = message("identify", format!("shopify:{id}"));
            m.insert("traits".into(), Value::Object(traits));
            put(&mut m, "timestamp", iso_time(body.get("created_at")));
            Some(vec![m])
        }
        _ => None,
    }
}

/// WooCommerce: `order.created` → `Order Completed`, `customer.created` →
/// `identify`.
pub fn woocommerce(topic: &str, body: &Value) -> Option<Vec<Mapped>> {
    let billing = body.get("billing");
    match topic {
        "order.created" => {
            let order_id = text(body.get("id"))?;
            let mut p = Map::new();
            p.insert("order_id".into(), order_id.clone().into());
            put(&mut p, "order_number", text(body.get("number")));
            p.insert("affiliation".into(), "WooCommerce".into());
            put(&mut p, "total", number(body.get("total")));
            put(&mut p, "shipping", number(body.get("shipping_total")));
            put(&mut p, "tax", number(body.get("total_tax")));
            put(&mut p, "discount", number(body.get("discount_total")));
            let revenue = match (
                number(body.get("total")).and_then(|v| v.as_f64()),
                number(body.get("shipping_total")).and_then(|v| v.as_f64()),
                number(body.get("total_tax")).and_then(|v| v.as_f64()),
            ) {
                (Some(t), s, x) => {
                    serde_json::Number::from_f64(t - s.unwrap_or(0.0) - x.unwrap_or(0.0))
                }
                _ => None,
            };
            put(&mut p, "revenue", revenue.map(Value::Number));
            put(
                &mut p,
                "coupon",
                body.pointer("/coupon_lines/0/code")
                    .and_then(|c| text(Some(c))),
            );
            put(&mut p, "currency", text(body.get("currency")));
            p.insert("products".into(), products(body.get("line_items"), true));
            let customer = text(body.get("customer_id")).filter(|c| c != "0");
            let id = customer.map_or_else(
                || format!("woocommerce-order:{order_id}"),
                |c| format!("woocommerce:{c}"),
            );
            let mut m = track("Order Completed", id, p);
            put(
                &mut m,
                "timestamp",
                iso_time(body.get("date_created_gmt"))
                    .or_else(|| iso_time(body.get("date_created"))),
            );
            context_traits(
                &mut m,
                billing.and_then(|b| text(b.get("email"))),
                billing.and_then(|b| text(b.get("phone"))),
            );
            Some(vec![m])
        }
        "customer.created" => {
            let id = text(body.get("id"))?;
            let mut traits = Map::new();
            put(&mut traits, "email", text(body.get("email")));
            put(
                &mut traits,
                "phone",
                billing.and_then(|b| text(b.get("phone"))),
            );
            put(&mut traits, "firstName", text(body.get("first_name")));
            put(&mut traits, "lastName", text(body.get("last_name")));
            put(&mut traits, "username", text(body.get("username")));
            put(
                &mut traits,
                "createdAt",
                iso_time(body.get("date_created_gmt"))
                    .or_else(|| iso_time(body.get("date_created"))),
            );
            traits.insert("woocommerceCustomerId".into(), id.clone().into());
            let mut m = message("identify", format!("woocommerce:{id}"));
            m.insert("traits".into(), Value::Object(traits));
            Some(vec![m])
        }
        _ => None,
    }
}

/// Currencies Stripe counts in whole units (no cents).
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

fn stripe_amount(object: &Value, field: &str) -> Option<Value> {
    let amount = object.get(field)?.as_i64()?;
    let currency = object
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("usd");
    let major = if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        amount as f64
    } else {
        amount as f64 / 100.0
    };
    serde_json::Number::from_f64(major).map(Value::Number)
}

/// Stripe events: `payment_intent.succeeded` → `Payment Succeeded`,
/// `charge.succeeded` → `Charge Succeeded`, `customer.created|updated` → `identify`.
/// Amounts are in major units (Stripe sends cents), currencies upper-case.
pub fn stripe(body: &Value) -> Option<Vec<Mapped>> {
    let kind = body.get("type")?.as_str()?;
    let object = body.pointer("/data/object")?;
    let created = unix_time(body.get("created"));
    let customer = text(object.get("customer"));
    let currency = text(object.get("currency")).map(|c| c.to_ascii_uppercase());
    match kind {
        "payment_intent.succeeded" | "charge.succeeded" => {
            let id = text(object.get("id"))?;
            let mut p = Map::new();
            let email;
            let event = if kind == "charge.succeeded" {
                p.insert("charge_id".into(), id.clone().into());
                put(
                    &mut p,
                    "payment_intent_id",
                    text(object.get("payment_intent")),
                );
                put(&mut p, "amount", stripe_amount(object, "amount"));
                email = text(object.get("receipt_email")).or_else(|| {
                    object
                        .pointer("/billing_details/email")
                        .and_then(|e| text(Some(e)))
                });
                "Charge Succeeded"
            } else {
                p.insert("payment_intent_id".into(), id.clone().into());
                put(&mut p, "amount", stripe_amount(object, "amount_received"));
                if !p.contains_key("amount") {
                    put(&mut p, "amount", stripe_amount(object, "amount"));
                }
                email = text(object.get("receipt_email"));
                "Payment Succeeded"
            };
            if let Some(amount) = p.get("amount").cloned() {
                p.insert("revenue".into(), amount);
            }
            put(&mut p, "currency", currency);
            put(&mut p, "description", text(object.get("description")));
            let anonymous =
                customer.map_or_else(|| format!("stripe-payment:{id}"), |c| format!("stripe:{c}"));
            let mut m = track(event, anonymous, p);
            put(&mut m, "timestamp", created);
            context_traits(&mut m, email, None);
            Some(vec![m])
        }
        "customer.created" | "customer.updated" => {
            let id = text(object.get("id"))?;
            let mut traits = Map::new();
            put(&mut traits, "email", text(object.get("email")));
            put(&mut traits, "name", text(object.get("name")));
            put(&mut traits, "phone", text(object.get("phone")));
            put(&mut traits, "description", text(object.get("description")));
            put(&mut traits, "createdAt", unix_time(object.get("created")));
            traits.insert("stripeCustomerId".into(), id.clone().into());
            if let Some(address) = object.get("address").filter(|a| a.is_object()) {
                let mut a = Map::new();
                put(&mut a, "street", text(address.get("line1")));
                put(&mut a, "city", text(address.get("city")));
                put(&mut a, "state", text(address.get("state")));
                put(&mut a, "postalCode", text(address.get("postal_code")));
                put(&mut a, "country", text(address.get("country")));
                traits.insert("address".into(), Value::Object(a));
            }
            let mut m = message("identify", format!("stripe:{id}"));
            m.insert("traits".into(), Value::Object(traits));
            put(&mut m, "timestamp", created);
            Some(vec![m])
        }
        _ => None,
    }
}
