//! Realistic Segment message generation.
//!
//! A deterministic pool of messages (track / page / identify mix, ~600 bytes each, with
//! analytics.js-like `context`) is built once; from it a set of batch body *templates* is
//! assembled. Each request takes a template, copies it and patches a fresh, run-unique
//! `messageId` into every message (12 hex digits at known offsets), so producing a body costs
//! one memcpy plus a few hundred byte writes and the generator never becomes the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};

/// Placeholder patched with the per-message counter; same width as the counter (12 hex digits).
const ID_PLACEHOLDER: &str = "@@@@@@@@@@@@";
const ID_COUNTER_WIDTH: usize = 12;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Small, fast, deterministic PRNG (SplitMix64). Good enough to vary test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Creates a generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Picks one element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len() as u64) as usize;
        &items[i]
    }

    /// Lowercase hex string of `n` random digits.
    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(HEX[self.below(16) as usize]))
            .collect()
    }
}

/// Formats a time as ISO-8601 UTC with milliseconds and a `Z` suffix.
pub fn iso8601_ms(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Product {
    id: &'static str,
    name: &'static str,
    category: &'static str,
    brand: &'static str,
    price: f64,
}

const PRODUCTS: &[Product] = &[
    Product {
        id: "sku_10482",
        name: "Trail Running Shoe",
        category: "Footwear",
        brand: "Northpeak",
        price: 89.99,
    },
    Product {
        id: "sku_20931",
        name: "Merino Wool Hoodie",
        category: "Apparel",
        brand: "Fjellwear",
        price: 129.0,
    },
    Product {
        id: "sku_33107",
        name: "Insulated Water Bottle 750ml",
        category: "Accessories",
        brand: "Hydra",
        price: 24.5,
    },
    Product {
        id: "sku_40277",
        name: "Ultralight Tent 2P",
        category: "Camping",
        brand: "Northpeak",
        price: 349.95,
    },
    Product {
        id: "sku_51840",
        name: "Headlamp 400 Lumen",
        category: "Electronics",
        brand: "Lumo",
        price: 39.99,
    },
    Product {
        id: "sku_62019",
        name: "Down Sleeping Bag -5C",
        category: "Camping",
        brand: "Fjellwear",
        price: 279.0,
    },
    Product {
        id: "sku_70655",
        name: "Packable Rain Jacket",
        category: "Apparel",
        brand: "Stormline",
        price: 159.99,
    },
    Product {
        id: "sku_88213",
        name: "Carbon Trekking Poles",
        category: "Accessories",
        brand: "Alpin",
        price: 119.0,
    },
];

const TRACK_EVENTS: &[&str] = &[
    "Product Viewed",
    "Product Added",
    "Product Clicked",
    "Checkout Started",
    "Order Completed",
    "Cart Viewed",
    "Coupon Applied",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
];

const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("spring_sale", "newsletter", "email"),
    ("brand_search", "google", "cpc"),
    ("retargeting_q2", "facebook", "paid_social"),
    ("summer_launch", "instagram", "social"),
];

const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://news.example.org/gear-guide",
    "",
];

const LOCALES: &[&str] = &["en-US", "en-GB", "de-DE", "fr-FR", "sv-SE"];

/// One pool message: its serialized JSON and the offset of the messageId counter placeholder.
struct PoolMessage {
    json: String,
    id_offset: usize,
}

/// A batch body with the offsets (absolute, in `bytes`) of every messageId counter.
pub struct Template {
    bytes: Vec<u8>,
    id_offsets: Vec<usize>,
}

/// Shared generator of fresh batch bodies.
#[derive(Clone)]
pub struct BodyGen {
    templates: Arc<Vec<Template>>,
    counter: Arc<AtomicU64>,
    /// Average serialized size of one message, in bytes.
    pub avg_message_bytes: f64,
    /// Average size of one batch body, in bytes.
    pub avg_body_bytes: f64,
    /// Messages per batch.
    pub batch: usize,
    sequential_ids: bool,
}

/// Options for building the message pool and templates.
pub struct GenOptions {
    /// Messages per batch body.
    pub batch: usize,
    /// Distinct messages in the pool.
    pub pool: usize,
    /// Distinct batch templates.
    pub templates: usize,
    /// PRNG seed (the data is deterministic for a seed; messageIds are unique per run).
    pub seed: u64,
    /// Increasing messageIds (index-friendly) instead of random-looking ones (the default,
    /// like SDK-generated UUIDs).
    pub sequential_ids: bool,
}

impl BodyGen {
    /// Builds the message pool and batch templates.
    pub fn new(opts: &GenOptions) -> Result<Self> {
        if opts.batch == 0 || opts.pool == 0 || opts.templates == 0 {
            bail!("--batch, --pool and --templates must be > 0");
        }
        let mut rng = SplitMix64::new(opts.seed);
        // Run-unique, UUID-shaped prefix: "xxxxxxxx-xxxx-4xxx-yxxx-" + 12 hex counter digits.
        let run = uuid::Uuid::new_v4().hyphenated().to_string();
        let id_prefix = run
            .get(..24)
            .context("uuid shorter than expected")?
            .to_owned();
        let now = SystemTime::now();
        let pool: Vec<PoolMessage> = (0..opts.pool)
            .map(|i| build_message(&mut rng, i, &id_prefix, now))
            .collect::<Result<_>>()?;
        let avg_message_bytes =
            pool.iter().map(|m| m.json.len()).sum::<usize>() as f64 / pool.len() as f64;

        let mut templates = Vec::with_capacity(opts.templates);
        for _ in 0..opts.templates {
            let mut body = String::with_capacity(opts.batch * 700 + 64);
            let mut id_offsets = Vec::with_capacity(opts.batch);
            body.push_str("{\"batch\":[");
            for j in 0..opts.batch {
                if j > 0 {
                    body.push(',');
                }
                let m = rng.pick(&pool);
                id_offsets.push(body.len() + m.id_offset);
                body.push_str(&m.json);
            }
            body.push_str("],\"sentAt\":\"");
            body.push_str(&iso8601_ms(now));
            body.push_str("\"}");
            templates.push(Template {
                bytes: body.into_bytes(),
                id_offsets,
            });
        }
        let avg_body_bytes =
            templates.iter().map(|t| t.bytes.len()).sum::<usize>() as f64 / templates.len() as f64;
        Ok(Self {
            templates: Arc::new(templates),
            counter: Arc::new(AtomicU64::new(1)),
            avg_message_bytes,
            avg_body_bytes,
            batch: opts.batch,
            sequential_ids: opts.sequential_ids,
        })
    }

    /// `"random"` or `"sequential"`: how messageIds are laid out.
    pub fn id_order(&self) -> &'static str {
        if self.sequential_ids {
            "sequential"
        } else {
            "random"
        }
    }

    /// A fresh batch body (template `seq % templates`) with new unique messageIds.
    pub fn next_body(&self, seq: usize) -> Bytes {
        let t = &self.templates[seq % self.templates.len()];
        let mut bytes = t.bytes.clone();
        let base = self
            .counter
            .fetch_add(t.id_offsets.len() as u64, Ordering::Relaxed);
        for (i, &off) in t.id_offsets.iter().enumerate() {
            let n = base + i as u64;
            let v = if self.sequential_ids {
                n
            } else {
                scramble48(n)
            };
            write_hex12(&mut bytes[off..off + ID_COUNTER_WIDTH], v);
        }
        Bytes::from(bytes)
    }
}

/// A bijection on 48-bit integers that makes consecutive counters look random, so messageIds
/// are unique but land all over a messageId index, like the random UUIDs real SDKs send.
fn scramble48(x: u64) -> u64 {
    const MASK: u64 = (1 << 48) - 1;
    let mut x = x & MASK;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK; // odd multiplier: invertible mod 2^48
    x ^= x >> 23;
    x = x.wrapping_mul(0xBF58_476D_1CE5) & MASK;
    x ^= x >> 25;
    x
}

fn write_hex12(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn build_message(
    rng: &mut SplitMix64,
    i: usize,
    id_prefix: &str,
    now: SystemTime,
) -> Result<PoolMessage> {
    let user_no = 10_000 + rng.below(90_000);
    let anonymous_id = format!(
        "{}-{}-4{}-a{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(3),
        rng.hex(3),
        rng.hex(12)
    );
    let user_id = format!("user_{user_no}");
    let message_id = format!("{id_prefix}{ID_PLACEHOLDER}");
    let ts = iso8601_ms(now - Duration::from_millis(rng.below(5_000)));
    let product = rng.pick(PRODUCTS);
    let path = format!("/p/{}", product.id);
    let url = format!("https://shop.example.com{path}");
    let referrer = *rng.pick(REFERRERS);
    // 70 % of messages come from the browser library (full page context, user agent, often a
    // campaign), 30 % from a server-side library (small context); pages only from browsers.
    let browser = rng.below(100) < 70;
    let context = if browser {
        let mut c = json!({
            "library": {"name": "analytics.js", "version": "next-1.72.0"},
            "page": {
                "path": path,
                "referrer": referrer,
                "title": product.name,
                "url": url,
            },
            "userAgent": *rng.pick(USER_AGENTS),
            "ip": format!("203.0.113.{}", 1 + rng.below(254)),
            "locale": *rng.pick(LOCALES),
        });
        if rng.below(100) < 40 {
            let (c_name, c_source, c_medium) = *rng.pick(CAMPAIGNS);
            c["campaign"] = json!({"name": c_name, "source": c_source, "medium": c_medium});
        }
        c
    } else {
        json!({
            "library": {"name": "analytics-node", "version": "2.1.2"},
            "ip": format!("198.51.100.{}", 1 + rng.below(254)),
        })
    };
    // Browser mix: 60 % track, 25 % page, 15 % identify; server-side: 80 % track, 20 % identify
    // (overall about 66 / 17 / 16 %, roughly what a storefront sends).
    let roll = if browser {
        rng.below(100)
    } else {
        rng.below(75)
    };
    let roll = if !browser && roll >= 60 {
        roll + 25
    } else {
        roll
    };
    let msg: Value = if roll < 60 {
        let quantity = 1 + rng.below(3);
        json!({
            "type": "track",
            "event": *rng.pick(TRACK_EVENTS),
            "userId": user_id,
            "anonymousId": anonymous_id,
            "messageId": message_id,
            "timestamp": ts,
            "properties": {
                "product_id": product.id,
                "category": product.category,
                "price": product.price,
                "currency": "USD",
                "quantity": quantity,
            },
            "context": context,
        })
    } else if roll < 85 {
        json!({
            "type": "page",
            "name": "Product Detail",
            "anonymousId": anonymous_id,
            "messageId": message_id,
            "timestamp": ts,
            "properties": {
                "category": product.category,
                "brand": product.brand,
            },
            "context": context,
        })
    } else {
        let plan = *rng.pick(&["free", "pro", "business"]);
        json!({
            "type": "identify",
            "userId": user_id,
            "anonymousId": anonymous_id,
            "messageId": message_id,
            "timestamp": ts,
            "traits": {
                "email": format!("{user_id}@example.com"),
                "firstName": "Alex",
                "plan": plan,
                "logins": 1 + rng.below(200),
            },
            "context": context,
        })
    };
    let json = serde_json::to_string(&msg).context("serializing a generated message")?;
    let id_offset = json
        .find(ID_PLACEHOLDER)
        .with_context(|| format!("messageId placeholder missing in generated message {i}"))?;
    Ok(PoolMessage { json, id_offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scramble_is_injective_on_a_range() {
        let mut seen = std::collections::HashSet::new();
        for x in 0..200_000u64 {
            let y = scramble48(x);
            assert!(y < (1 << 48));
            assert!(seen.insert(y));
        }
    }

    #[test]
    fn iso_format_known_dates() {
        assert_eq!(iso8601_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // 2024-02-29 (leap day)
        assert_eq!(iso8601_ms(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn bodies_are_valid_json_with_unique_ids() -> Result<()> {
        let g = BodyGen::new(&GenOptions {
            batch: 100,
            pool: 200,
            templates: 4,
            seed: 7,
            sequential_ids: false,
        })?;
        assert!(
            (450.0..800.0).contains(&g.avg_message_bytes),
            "avg message size {}",
            g.avg_message_bytes
        );
        let mut ids = std::collections::HashSet::new();
        for seq in 0..8 {
            let body = g.next_body(seq);
            let v: Value = serde_json::from_slice(&body)?;
            let batch = v["batch"].as_array().context("batch array")?;
            assert_eq!(batch.len(), 100);
            for m in batch {
                let id = m["messageId"].as_str().context("messageId")?;
                assert_eq!(id.len(), 36);
                assert!(!id.contains('@'));
                assert!(ids.insert(id.to_owned()), "duplicate id {id}");
                assert!(m["userId"].is_string() || m["anonymousId"].is_string());
            }
        }
        Ok(())
    }
}
