//! `audience-data`: the data set and the audience definitions of the audience benchmark.
//!
//! [`generate`] builds a deterministic e-commerce data set: profiles with traits and the
//! Segment `track`/`page` events they performed over the 90 days before `now_ms`.
//! [`write_csv`] writes it as `profiles.csv` and `events.csv` with typed columns for
//! DuckDB (`bench/audiences/duckdb_side.py`), and [`AUDIENCE_CASES`] holds the ten
//! audience definitions, each in Tessera's audience language and as the equivalent
//! DuckDB SQL, so both engines answer the same questions over the same data.
//!
//! # The data
//!
//! * Event names and shares: Page Viewed 40 %, Product Viewed 25 %, Product Added 10 %,
//!   Product Removed 3 %, Product Added to Wishlist 3 %, Checkout Started 5 %, Order
//!   Completed 3 %, Signed In 6 %, Email Opened 5 % (shares are approximate: every
//!   profile has a buying propensity, and only profiles with an email open emails).
//! * Activity per profile is heavy-tailed (Pareto, alpha 1.2, capped): 12 % of the
//!   profiles have no event at all, the median active profile has about ten, a few
//!   percent have hundreds, the largest a few thousand. Events come in sessions of a
//!   few events a few seconds to minutes apart, ordered along the funnel; an Order
//!   Completed shares its session with a Checkout Started and a Product Added when the
//!   profile has any. Active profiles were active more recently.
//! * Product events carry `sku` (`SKU-00001`..`SKU-05000`, Zipf(0.7) popularity), `category`
//!   (12, skewed) and `price` (fixed per sku, 2 decimals). Order Completed carries a
//!   unique `order_id` (`ORD-00000001`.. in time order), `revenue` (10-600, skewed, 2
//!   decimals) and `currency` (per profile: EUR 60 %, USD 30 %, GBP 10 %); Checkout
//!   Started carries `revenue` and `currency` (the cart value). Page Viewed carries `path`.
//! * Traits: `plan` (free 70 %, pro 25 %, enterprise 5 %; missing for 2 %), `country`
//!   (10 countries, skewed; missing for 1 %), `signup_at` (RFC 3339 UTC with
//!   milliseconds, within 2 years before now, recent ones more likely), `age` (18-80,
//!   missing for 20 %). `email` (`user{id}@example.com`) for 70 % of the profiles.
//! * Edge cases, on purpose, so that a wrong bound shows in the member counts: about 1
//!   event in 4,000 sits exactly on a window bound (now, now - 7d, now - 7d - 1 ms,
//!   now - 30d, now - 30d - 1 ms, now - 90d), about 1 in 20,000 is up to 2 h in the
//!   future (client clock skew: counted by all-time conditions, never by `within`),
//!   about 1 order in 500 has a revenue of exactly 100.00, and about 1 profile in 5,000
//!   signed up exactly 30 days before now (or 1 ms after that).
//!
//! Events are sorted by time (then profile), like an event log. Event properties are
//! typed fields (see [`GenEvent`]) rather than a JSON map: 20 M events take about
//! 2.6 GB this way; [`GenEvent::properties`] gives the JSON form.
//!
//! Generation is deterministic for a seed (and a given `rand` version): every profile
//! draws from its own generator seeded by (seed, id), so the result does not depend on
//! the number of threads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Map, Value, json};

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;
/// Events lie within this many days before now (plus a little clock skew).
const HISTORY_DAYS: i64 = 90;
/// Signups lie within this many days before now.
const SIGNUP_DAYS: i64 = 730;
/// Default `--now-ms`: 2026-12-01T00:00:00.000Z (fixed, so runs are repeatable).
pub const DEFAULT_NOW_MS: i64 = 1_796_083_200_000;

/// Number of products in the catalog.
const PRODUCTS: u32 = 5_000;

/// Event names, in the order of [`BASE_WEIGHTS`].
const EVENT_NAMES: [&str; 9] = [
    "Page Viewed",
    "Product Viewed",
    "Product Added",
    "Product Removed",
    "Product Added to Wishlist",
    "Checkout Started",
    "Order Completed",
    "Signed In",
    "Email Opened",
];
const PAGE_VIEWED: usize = 0;
const PRODUCT_VIEWED: usize = 1;
const PRODUCT_ADDED: usize = 2;
const PRODUCT_REMOVED: usize = 3;
const WISHLIST: usize = 4;
const CHECKOUT_STARTED: usize = 5;
const ORDER_COMPLETED: usize = 6;
const SIGNED_IN: usize = 7;
const EMAIL_OPENED: usize = 8;
/// Target shares in percent (Email Opened is scaled up for the 70 % with an email).
const BASE_WEIGHTS: [f64; 9] = [40.0, 25.0, 10.0, 3.0, 3.0, 5.0, 3.0, 6.0, 5.0 / 0.7];

/// Product categories, their share of the catalog (percent) and a typical price.
const CATEGORIES: [(&str, f64, f64); 12] = [
    ("shoes", 18.0, 89.0),
    ("shirts", 14.0, 35.0),
    ("bags", 10.0, 79.0),
    ("jackets", 9.0, 149.0),
    ("pants", 9.0, 59.0),
    ("dresses", 8.0, 69.0),
    ("accessories", 8.0, 25.0),
    ("sportswear", 7.0, 45.0),
    ("underwear", 5.0, 19.0),
    ("hats", 4.0, 22.0),
    ("socks", 4.0, 9.0),
    ("watches", 4.0, 199.0),
];

/// Page paths of Page Viewed and their weights.
const PATHS: [(&str, f64); 23] = [
    ("/", 25.0),
    ("/search", 10.0),
    ("/cart", 8.0),
    ("/sale", 6.0),
    ("/new-arrivals", 5.0),
    ("/account", 5.0),
    ("/account/orders", 3.0),
    ("/checkout", 3.0),
    ("/help", 2.0),
    ("/blog", 2.0),
    ("/about", 1.0),
    ("/c/shoes", 6.0),
    ("/c/shirts", 4.5),
    ("/c/bags", 3.0),
    ("/c/jackets", 3.0),
    ("/c/pants", 2.5),
    ("/c/dresses", 2.5),
    ("/c/accessories", 2.5),
    ("/c/sportswear", 2.0),
    ("/c/underwear", 1.5),
    ("/c/hats", 1.0),
    ("/c/socks", 1.0),
    ("/c/watches", 1.0),
];

/// Plans and their shares (percent of the profiles that have a plan).
const PLANS: [(&str, f64); 3] = [("free", 70.0), ("pro", 25.0), ("enterprise", 5.0)];
/// Countries and their shares (percent of the profiles that have a country).
const COUNTRIES: [(&str, f64); 10] = [
    ("DE", 28.0),
    ("FR", 14.0),
    ("US", 14.0),
    ("GB", 11.0),
    ("NL", 7.0),
    ("ES", 7.0),
    ("IT", 6.0),
    ("AT", 5.0),
    ("CH", 4.0),
    ("PL", 4.0),
];
/// Currencies and their shares (chosen once per profile).
const CURRENCIES: [(&str, f64); 3] = [("EUR", 60.0), ("USD", 30.0), ("GBP", 10.0)];

/// Offsets before now that the edge-case events sit on exactly.
const BOUNDARY_OFFSETS_MS: [i64; 6] = [
    0,
    7 * DAY_MS,
    7 * DAY_MS + 1,
    30 * DAY_MS,
    30 * DAY_MS + 1,
    HISTORY_DAYS * DAY_MS,
];

/// One generated profile.
pub struct GenProfile {
    /// Profile id, `1..=profiles`.
    pub id: i64,
    /// `user{id}@example.com` for 70 % of the profiles.
    pub email: Option<String>,
    /// `plan`, `country`, `signup_at` (RFC 3339 string) and `age` (integer), each
    /// possibly missing (see the module documentation for the shares).
    pub traits: Map<String, Value>,
}

/// One generated event (a Segment track/page call, already attributed to a profile).
///
/// The properties are typed fields (a `None` is an absent property) to keep 20 M events
/// small; [`GenEvent::properties`] gives them as the JSON object of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    /// Id of the profile that performed it.
    pub profile: i64,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Event name (`page` calls are `Page Viewed`).
    pub name: &'static str,
    /// Product number: the `sku` property is `SKU-{sku:05}` (see [`sku_label`]).
    pub sku: Option<u32>,
    /// `category` of the product.
    pub category: Option<&'static str>,
    /// `price` of the product (fixed per sku, 2 decimals).
    pub price: Option<f64>,
    /// Order number: the `order_id` property is `ORD-{n:08}` (see [`order_label`]).
    pub order_id: Option<u32>,
    /// `revenue` (2 decimals) of Order Completed and Checkout Started.
    pub revenue: Option<f64>,
    /// `currency` of Order Completed and Checkout Started.
    pub currency: Option<&'static str>,
    /// `path` of Page Viewed.
    pub path: Option<&'static str>,
}

impl GenEvent {
    /// The event's properties as the JSON object a Segment call would carry.
    pub fn properties(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(sku) = self.sku {
            m.insert("sku".into(), Value::String(sku_label(sku)));
        }
        if let Some(c) = self.category {
            m.insert("category".into(), Value::String(c.into()));
        }
        if let Some(p) = self.price {
            m.insert("price".into(), json!(p));
        }
        if let Some(o) = self.order_id {
            m.insert("order_id".into(), Value::String(order_label(o)));
        }
        if let Some(r) = self.revenue {
            m.insert("revenue".into(), json!(r));
        }
        if let Some(c) = self.currency {
            m.insert("currency".into(), Value::String(c.into()));
        }
        if let Some(p) = self.path {
            m.insert("path".into(), Value::String(p.into()));
        }
        m
    }

    fn blank() -> Self {
        Self {
            profile: 0,
            timestamp_ms: 0,
            name: EVENT_NAMES[PAGE_VIEWED],
            sku: None,
            category: None,
            price: None,
            order_id: None,
            revenue: None,
            currency: None,
            path: None,
        }
    }
}

/// The `sku` property of product number `n`: `SKU-00042`.
pub fn sku_label(n: u32) -> String {
    format!("SKU-{n:05}")
}

/// The `order_id` property of order number `n`: `ORD-00000042`.
pub fn order_label(n: u32) -> String {
    format!("ORD-{n:08}")
}

/// A generated data set.
pub struct Dataset {
    /// The "now" the data was generated for (and the audiences are evaluated at).
    pub now_ms: i64,
    /// Profiles, ids `1..=n` in order.
    pub profiles: Vec<GenProfile>,
    /// Events, sorted by time then profile.
    pub events: Vec<GenEvent>,
}

/// One audience definition of the benchmark.
pub struct AudienceCase {
    /// Short identifier.
    pub key: &'static str,
    /// What it exercises: trait-only, window, negation, nested, property filter, ...
    pub kind: &'static str,
    /// The definition in Tessera's audience language.
    pub text: &'static str,
    /// The same audience as a DuckDB `SELECT profile_id ...` over the tables `profiles`
    /// and `events` (see `bench/audiences/README.md`), with a `{now_ms}` placeholder.
    ///
    /// The event-only cases read `events` alone: every event's profile is in `profiles`
    /// (true of generated data), and none of them can hold for a profile without events.
    pub sql: &'static str,
}

impl AudienceCase {
    /// [`AudienceCase::sql`] with `{now_ms}` replaced by `now_ms`.
    pub fn sql_at(&self, now_ms: i64) -> String {
        self.sql.replace("{now_ms}", &now_ms.to_string())
    }
}

/// The ten audience definitions, in Tessera's language and as DuckDB SQL.
///
/// Windows: `within D` counts events with `now - D <= ts <= now`; without `within`,
/// every event counts (future ones too). A missing trait fails every test but `!=`.
pub const AUDIENCE_CASES: [AudienceCase; 10] = [
    AudienceCase {
        key: "pro_plan",
        kind: "trait-only",
        text: r#"trait plan = "pro""#,
        sql: "SELECT profile_id FROM profiles WHERE plan = 'pro'",
    },
    AudienceCase {
        key: "dach_paying",
        kind: "trait-only",
        text: r#"trait country in ["DE", "AT", "CH"] and trait plan != "free""#,
        sql: "SELECT profile_id FROM profiles \
              WHERE country IN ('DE', 'AT', 'CH') AND plan IS DISTINCT FROM 'free'",
    },
    AudienceCase {
        key: "cart_abandoners_7d",
        kind: "negation",
        text: r#"event "Product Added" >= 1 within 7d and not event "Order Completed" within 7d"#,
        sql: "SELECT profile_id FROM events \
              WHERE name IN ('Product Added', 'Order Completed') \
              AND ts_ms BETWEEN {now_ms} - 604800000 AND {now_ms} \
              GROUP BY profile_id \
              HAVING count(*) FILTER (WHERE name = 'Product Added') >= 1 \
              AND count(*) FILTER (WHERE name = 'Order Completed') = 0",
    },
    AudienceCase {
        key: "product_viewers_30d",
        kind: "window count",
        text: r#"event "Product Viewed" >= 5 within 30d"#,
        sql: "SELECT profile_id FROM events \
              WHERE name = 'Product Viewed' \
              AND ts_ms BETWEEN {now_ms} - 2592000000 AND {now_ms} \
              GROUP BY profile_id HAVING count(*) >= 5",
    },
    AudienceCase {
        key: "big_order_90d",
        kind: "property filter",
        text: r#"event "Order Completed" where revenue > 100 >= 1 within 90d"#,
        sql: "SELECT DISTINCT profile_id FROM events \
              WHERE name = 'Order Completed' AND revenue > 100 \
              AND ts_ms BETWEEN {now_ms} - 7776000000 AND {now_ms}",
    },
    AudienceCase {
        key: "shoe_adders",
        kind: "property filter",
        text: r#"event "Product Added" where category = "shoes" >= 2"#,
        sql: "SELECT profile_id FROM events \
              WHERE name = 'Product Added' AND category = 'shoes' \
              GROUP BY profile_id HAVING count(*) >= 2",
    },
    AudienceCase {
        key: "de_fr_engaged",
        kind: "nested",
        text: r#"(trait country = "DE" or trait country = "FR") and (event "Order Completed" >= 3 or event "Product Added to Wishlist" >= 2 within 30d)"#,
        sql: "SELECT profile_id FROM profiles \
              WHERE (country = 'DE' OR country = 'FR') AND profile_id IN ( \
              SELECT profile_id FROM events \
              WHERE name IN ('Order Completed', 'Product Added to Wishlist') \
              GROUP BY profile_id \
              HAVING count(*) FILTER (WHERE name = 'Order Completed') >= 3 \
              OR count(*) FILTER (WHERE name = 'Product Added to Wishlist' \
              AND ts_ms BETWEEN {now_ms} - 2592000000 AND {now_ms}) >= 2)",
    },
    AudienceCase {
        key: "lapsed_buyers",
        kind: "negation",
        text: r#"event "Order Completed" >= 1 and not event "Page Viewed" within 30d"#,
        sql: "SELECT profile_id FROM events \
              WHERE name IN ('Order Completed', 'Page Viewed') \
              GROUP BY profile_id \
              HAVING count(*) FILTER (WHERE name = 'Order Completed') >= 1 \
              AND count(*) FILTER (WHERE name = 'Page Viewed' \
              AND ts_ms BETWEEN {now_ms} - 2592000000 AND {now_ms}) = 0",
    },
    AudienceCase {
        key: "one_time_buyers",
        kind: "exact count",
        text: r#"event "Order Completed" = 1"#,
        sql: "SELECT profile_id FROM events \
              WHERE name = 'Order Completed' \
              GROUP BY profile_id HAVING count(*) = 1",
    },
    AudienceCase {
        key: "new_with_email",
        kind: "identifier + relative date",
        text: "identifier email and trait signup_at after 30d ago",
        sql: "SELECT profile_id FROM profiles \
              WHERE email IS NOT NULL AND signup_at_ms > {now_ms} - 2592000000",
    },
];

/// Options of `audience-data`.
#[derive(Args, Clone)]
pub struct AudienceDataArgs {
    /// Profiles to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub profiles: usize,
    /// Events to generate (exactly).
    #[arg(long, default_value_t = 20_000_000)]
    pub events: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// "Now" in ms since the epoch (default 2026-12-01T00:00:00Z); events lie in the 90
    /// days before it.
    #[arg(long, default_value_t = DEFAULT_NOW_MS, allow_negative_numbers = true)]
    pub now_ms: i64,
    /// Output directory (created if missing): profiles.csv, events.csv, cases.json,
    /// meta.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// `tessera-bench audience-data`: generate, write the CSVs, `cases.json` (key, kind,
/// text, sql with `{now_ms}` substituted) and `meta.json` (sizes, seed, now, timings).
pub fn run(a: &AudienceDataArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let t0 = Instant::now();
    let ds = generate(a.profiles, a.events, a.seed, a.now_ms);
    let generate_ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "generated {} profiles, {} events in {:.1} s",
        ds.profiles.len(),
        ds.events.len(),
        generate_ms / 1e3
    );
    let t1 = Instant::now();
    write_csv(&ds, &a.out)?;
    let write_ms = t1.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "wrote CSVs to {} in {:.1} s",
        a.out.display(),
        write_ms / 1e3
    );

    let cases: Vec<Value> = AUDIENCE_CASES
        .iter()
        .map(|c| json!({"key": c.key, "kind": c.kind, "text": c.text, "sql": c.sql_at(ds.now_ms)}))
        .collect();
    write_json(&a.out.join("cases.json"), &Value::Array(cases))?;
    let size = |f: &str| std::fs::metadata(a.out.join(f)).map_or(0, |m| m.len());
    let meta = json!({
        "profiles": ds.profiles.len(),
        "events": ds.events.len(),
        "seed": a.seed,
        "now_ms": ds.now_ms,
        "generate_ms": generate_ms.round(),
        "write_csv_ms": write_ms.round(),
        "profiles_csv_bytes": size("profiles.csv"),
        "events_csv_bytes": size("events.csv"),
        "event_struct_bytes": std::mem::size_of::<GenEvent>(),
    });
    write_json(&a.out.join("meta.json"), &meta)?;
    eprintln!("{meta}");
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Generates `profiles` profiles (ids `1..=profiles`) and exactly `events` events over
/// the 90 days before `now_ms` (no events when `profiles` is 0). Deterministic for a
/// seed; uses the available cores.
pub fn generate(profiles: usize, events: usize, seed: u64, now_ms: i64) -> Dataset {
    let events = if profiles == 0 { 0 } else { events };
    let catalog = Catalog::new(seed);
    let counts = activity_counts(profiles, events, seed);

    // Fill disjoint slices of one pre-sized vector in parallel, split where the running
    // event count crosses each thread's share (the result does not depend on it).
    let mut all = vec![GenEvent::blank(); events];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let mut ranges = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0usize, 0usize);
    for (i, &c) in counts.iter().enumerate() {
        acc += c as usize;
        let boundary = events * (ranges.len() + 1) / threads;
        if acc >= boundary && ranges.len() + 1 < threads {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    ranges.push(start..profiles);

    let mut chunks = Vec::with_capacity(ranges.len());
    let mut rest: &mut [GenEvent] = &mut all;
    for r in &ranges {
        let n: usize = counts[r.clone()].iter().map(|&c| c as usize).sum();
        let (head, tail) = rest.split_at_mut(n);
        chunks.push((r.clone(), head));
        rest = tail;
    }
    let ctx = Ctx {
        now_ms,
        catalog: &catalog,
    };
    let counts = &counts;
    let profile_parts: Vec<Vec<GenProfile>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|(range, out)| {
                let ctx = &ctx;
                s.spawn(move || {
                    let mut scratch = Scratch::default();
                    let mut profiles = Vec::with_capacity(range.len());
                    let mut offset = 0;
                    for i in range {
                        let k = counts[i] as usize;
                        let id = i as i64 + 1;
                        let mut rng = SmallRng::seed_from_u64(mix64(seed, id as u64));
                        let p = gen_profile(&mut rng, id, now_ms);
                        let has_email = p.email.is_some();
                        gen_events(
                            ctx,
                            &mut rng,
                            &mut scratch,
                            id,
                            has_email,
                            &mut out[offset..offset + k],
                        );
                        offset += k;
                        profiles.push(p);
                    }
                    profiles
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let profiles: Vec<GenProfile> = profile_parts.into_iter().flatten().collect();

    // By time then profile; the rest of the key only makes the order canonical (equal
    // keys are identical events), without the memory of a stable sort.
    all.sort_unstable_by(|a, b| {
        (a.timestamp_ms, a.profile, a.name, a.sku, a.path)
            .cmp(&(b.timestamp_ms, b.profile, b.name, b.sku, b.path))
            .then_with(|| {
                let bits = |e: &GenEvent| e.revenue.map(f64::to_bits);
                bits(a).cmp(&bits(b))
            })
    });
    let mut next_order = 0u32;
    for e in &mut all {
        if e.order_id.is_some() {
            next_order += 1;
            e.order_id = Some(next_order);
        }
    }
    Dataset {
        now_ms,
        profiles,
        events: all,
    }
}

/// Shared, read-only generation context.
struct Ctx<'a> {
    now_ms: i64,
    catalog: &'a Catalog,
}

/// The product catalog: category and price per sku, and popularity.
struct Catalog {
    /// `(category, price)` of sku `n` at index `n - 1`.
    products: Vec<(&'static str, f64)>,
    /// Cumulative Zipf weights over popularity ranks.
    popularity: Vec<f64>,
    /// Sku number of each popularity rank.
    rank_sku: Vec<u32>,
    /// Cumulative weights of [`PATHS`].
    paths: Vec<f64>,
}

impl Catalog {
    fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(mix64(seed, 0xCA7A_1065));
        let cats = cumulative(CATEGORIES.iter().map(|c| c.1));
        let products = (0..PRODUCTS)
            .map(|_| {
                let (cat, _, typical) = CATEGORIES[pick(&mut rng, &cats)];
                let x = (typical * (0.45 * normal(&mut rng)).exp()).max(3.0);
                // Prices end in .99: exact cents, then one division (shortest decimal form).
                let cents = (x.floor() as i64) * 100 + 99;
                (cat, cents as f64 / 100.0)
            })
            .collect();
        let popularity = cumulative((0..PRODUCTS).map(|r| 1.0 / f64::from(r + 1).powf(0.7)));
        let mut rank_sku: Vec<u32> = (1..=PRODUCTS).collect();
        rank_sku.shuffle(&mut rng);
        Self {
            products,
            popularity,
            rank_sku,
            paths: cumulative(PATHS.iter().map(|p| p.1)),
        }
    }

    /// A product by popularity: `(sku, category, price)`.
    fn product(&self, rng: &mut SmallRng) -> (u32, &'static str, f64) {
        let sku = self.rank_sku[pick(rng, &self.popularity)];
        let (cat, price) = self.products[sku as usize - 1];
        (sku, cat, price)
    }
}

/// Per-thread buffers reused from profile to profile.
#[derive(Default)]
struct Scratch {
    names: Vec<u8>,
    session_of: Vec<u32>,
    session_start: Vec<i64>,
    order: Vec<(u32, f32, u32)>,
    by_name: [Vec<u32>; 3],
}

/// Events per profile: 12 % inactive, the others Pareto(1.2) weights capped at 600x the
/// minimum, scaled so the total is exactly `events`.
fn activity_counts(profiles: usize, events: usize, seed: u64) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(mix64(seed, 0xAC71_717E));
    let weights: Vec<f64> = (0..profiles)
        .map(|_| {
            if rng.random_bool(0.12) {
                0.0
            } else {
                let u = 1.0 - rng.random::<f64>(); // (0, 1]
                u.powf(-1.0 / 1.2).min(600.0)
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut counts = vec![0u32; profiles];
    if profiles == 0 || events == 0 {
        return counts;
    }
    // Tiny inputs where every profile came out inactive: spread evenly instead.
    let even = total <= 0.0;
    if even {
        for c in counts.iter_mut() {
            *c = (events / profiles) as u32;
        }
    } else {
        let scale = events as f64 / total;
        for (c, w) in counts.iter_mut().zip(&weights) {
            *c = (w * scale).floor() as u32;
        }
    }
    let mut assigned: usize = counts.iter().map(|&c| c as usize).sum();
    while assigned < events {
        let i = rng.random_range(0..profiles);
        if even || weights[i] > 0.0 {
            counts[i] += 1;
            assigned += 1;
        }
    }
    counts
}

fn gen_profile(rng: &mut SmallRng, id: i64, now_ms: i64) -> GenProfile {
    let email = rng
        .random_bool(0.7)
        .then(|| format!("user{id}@example.com"));
    let mut traits = Map::new();
    if !rng.random_bool(0.02) {
        traits.insert(
            "plan".into(),
            Value::String(pick_static(rng, &PLANS).into()),
        );
    }
    if !rng.random_bool(0.01) {
        let c = pick_static(rng, &COUNTRIES);
        traits.insert("country".into(), Value::String(c.into()));
    }
    let signup_ms = if rng.random_bool(0.0002) {
        // Exactly on the bound of "after 30d ago" (out), or 1 ms after it (in).
        now_ms - 30 * DAY_MS + i64::from(rng.random_bool(0.5))
    } else {
        let age = (SIGNUP_DAYS * DAY_MS) as f64 * rng.random::<f64>().powf(1.3);
        now_ms - age as i64
    };
    traits.insert("signup_at".into(), Value::String(rfc3339_ms(signup_ms)));
    if !rng.random_bool(0.2) {
        let u = (rng.random::<f64>() + rng.random::<f64>() + rng.random::<f64>()) / 3.0;
        let age = (18 + (u.powf(1.3) * 63.0) as i64).min(80);
        traits.insert("age".into(), json!(age));
    }
    GenProfile { id, email, traits }
}

/// Fills `out` with the profile's events (in session order; sorted globally later).
fn gen_events(
    ctx: &Ctx<'_>,
    rng: &mut SmallRng,
    s: &mut Scratch,
    id: i64,
    has_email: bool,
    out: &mut [GenEvent],
) {
    let k = out.len();
    if k == 0 {
        return;
    }
    let now = ctx.now_ms;

    // Names: the base mix, bent by a buying propensity and by email presence.
    let mut w = BASE_WEIGHTS;
    let propensity = rng.random::<f64>();
    let (add, checkout, order) = if propensity < 0.5 {
        (0.85, 0.55, 0.4) // browsers
    } else if propensity < 0.85 {
        (1.05, 1.2, 1.2)
    } else {
        (1.35, 2.1, 2.9) // buyers
    };
    w[PRODUCT_ADDED] *= add;
    w[CHECKOUT_STARTED] *= checkout;
    w[ORDER_COMPLETED] *= order;
    if !has_email {
        w[EMAIL_OPENED] = 0.0;
    }
    let cum = cumulative(w.iter().copied());
    s.names.clear();
    s.names.extend((0..k).map(|_| pick(rng, &cum) as u8));

    // Sessions: active profiles have more of them, spread over a longer span, and were
    // active more recently.
    let session_len = rng.random_range(2..=7usize);
    let sessions = k.div_ceil(session_len);
    let activity = (1.0 + k as f64).ln();
    let history = (HISTORY_DAYS * DAY_MS) as f64;
    let last_age = history * rng.random::<f64>().powf(1.0 + activity / 1.5);
    let first_age =
        last_age + (history - last_age) * rng.random::<f64>().powf(1.0 / (1.0 + activity));
    let recency_bias = 1.0 + activity / 3.0;
    s.session_start.clear();
    s.session_start.extend((0..sessions).map(|_| {
        let age = last_age + (first_age - last_age) * rng.random::<f64>().powf(recency_bias);
        now - age as i64
    }));

    // Each order shares its session with a checkout and an add, when there are any.
    for v in &mut s.by_name {
        v.clear();
    }
    s.session_of.clear();
    s.session_of.resize(k, u32::MAX);
    for (i, &n) in s.names.iter().enumerate() {
        match n as usize {
            ORDER_COMPLETED => s.by_name[0].push(i as u32),
            CHECKOUT_STARTED => s.by_name[1].push(i as u32),
            PRODUCT_ADDED => s.by_name[2].push(i as u32),
            _ => {}
        }
    }
    let [orders, checkouts, adds] = &mut s.by_name;
    for &o in orders.iter() {
        let session = rng.random_range(0..sessions) as u32;
        s.session_of[o as usize] = session;
        for pool in [&mut *checkouts, &mut *adds] {
            if let Some(i) = pool.pop() {
                s.session_of[i as usize] = session;
            }
        }
    }
    for so in s.session_of.iter_mut() {
        if *so == u32::MAX {
            *so = rng.random_range(0..sessions) as u32;
        }
    }

    // Order within a session: email and sign-in first, browsing mixed, then checkout
    // and order.
    s.order.clear();
    for (i, &n) in s.names.iter().enumerate() {
        let key = match n as usize {
            EMAIL_OPENED => 0.0,
            SIGNED_IN => 1.0,
            CHECKOUT_STARTED => 8.0,
            ORDER_COMPLETED => 9.0,
            _ => 2.0 + 5.0 * rng.random::<f32>(),
        };
        s.order.push((s.session_of[i], key, i as u32));
    }
    s.order
        .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));

    let currency = pick_static(rng, &CURRENCIES);
    let mut session_first = 0;
    for j in 0..k {
        let (session, _, idx) = s.order[j];
        let name = s.names[idx as usize] as usize;
        let timestamp_ms = if j > 0 && s.order[j - 1].0 == session {
            out[j - 1].timestamp_ms + rng.random_range(5_000..=240_000)
        } else {
            session_first = j;
            s.session_start[session as usize] + rng.random_range(0..60_000)
        };
        let e = &mut out[j];
        *e = GenEvent::blank();
        e.profile = id;
        e.name = EVENT_NAMES[name];
        e.timestamp_ms = timestamp_ms;
        match name {
            PAGE_VIEWED => e.path = Some(PATHS[pick(rng, &ctx.catalog.paths)].0),
            PRODUCT_VIEWED | PRODUCT_ADDED | PRODUCT_REMOVED | WISHLIST => {
                let (sku, cat, price) = ctx.catalog.product(rng);
                e.sku = Some(sku);
                e.category = Some(cat);
                e.price = Some(price);
            }
            CHECKOUT_STARTED | ORDER_COMPLETED => {
                let cents = if name == ORDER_COMPLETED && rng.random_bool(0.002) {
                    10_000 // exactly 100.00: not "> 100"
                } else {
                    let x = 55.0 * (0.75 * normal(rng)).exp();
                    (x.clamp(10.0, 600.0) * 100.0).round() as i64
                };
                e.revenue = Some(cents as f64 / 100.0);
                e.currency = Some(currency);
                if name == ORDER_COMPLETED {
                    e.order_id = Some(0); // numbered in time order after the global sort
                }
            }
            _ => {}
        }
        // A session running past now is moved back as a whole.
        let session_ends = j + 1 == k || s.order[j + 1].0 != session;
        if session_ends && out[j].timestamp_ms > now {
            let shift = out[j].timestamp_ms - now + rng.random_range(0..600_000);
            for e in &mut out[session_first..=j] {
                e.timestamp_ms -= shift;
            }
        }
    }
    // A session starting near now - 90d may not have been shifted into the window's
    // past, but keep every regular event inside the 90 days.
    let oldest = now - HISTORY_DAYS * DAY_MS;
    for e in out.iter_mut() {
        if e.timestamp_ms < oldest {
            e.timestamp_ms = oldest + (oldest - e.timestamp_ms) % DAY_MS;
        }
        // Edge cases: exactly on a window bound, or in the near future (clock skew).
        let u = rng.random::<f64>();
        if u < 1.0 / 4_000.0 {
            let off = BOUNDARY_OFFSETS_MS[rng.random_range(0..BOUNDARY_OFFSETS_MS.len())];
            e.timestamp_ms = now - off;
        } else if u < 1.0 / 4_000.0 + 1.0 / 20_000.0 {
            e.timestamp_ms = now + rng.random_range(1..=7_200_000);
        }
    }
}

/// Writes `profiles.csv` and `events.csv` (header row, typed columns, empty = NULL) into
/// `dir`, the two files in parallel.
///
/// `profiles.csv`: `profile_id,plan,country,email,signup_at_ms,age` (`signup_at_ms` is
/// the `signup_at` trait parsed back). `events.csv`:
/// `profile_id,ts_ms,name,sku,category,price,order_id,revenue,currency,path`.
pub fn write_csv(dataset: &Dataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let profiles_path = dir.join("profiles.csv");
    let events_path = dir.join("events.csv");
    let (p, e) = std::thread::scope(|s| {
        let p = s.spawn(|| write_profiles(&dataset.profiles, &profiles_path));
        let e = write_events(&dataset.events, &events_path);
        (p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), e)
    });
    p.with_context(|| format!("writing {}", profiles_path.display()))?;
    e.with_context(|| format!("writing {}", events_path.display()))?;
    Ok(())
}

fn csv_writer(path: &Path) -> Result<csv::Writer<std::io::BufWriter<std::fs::File>>> {
    let f = std::fs::File::create(path)?;
    Ok(csv::WriterBuilder::new()
        .buffer_capacity(1 << 16)
        .from_writer(std::io::BufWriter::with_capacity(1 << 20, f)))
}

fn write_profiles(profiles: &[GenProfile], path: &Path) -> Result<()> {
    let mut w = csv_writer(path)?;
    w.write_record([
        "profile_id",
        "plan",
        "country",
        "email",
        "signup_at_ms",
        "age",
    ])?;
    let mut buf = String::new();
    for p in profiles {
        let s = |k: &str| p.traits.get(k).and_then(Value::as_str).unwrap_or("");
        num(&mut w, &mut buf, Some(p.id))?;
        w.write_field(s("plan"))?;
        w.write_field(s("country"))?;
        w.write_field(p.email.as_deref().unwrap_or(""))?;
        let signup = match p.traits.get("signup_at").and_then(Value::as_str) {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .with_context(|| format!("signup_at {t:?} of profile {}", p.id))?
                    .timestamp_millis(),
            ),
            None => None,
        };
        num(&mut w, &mut buf, signup)?;
        num(
            &mut w,
            &mut buf,
            p.traits.get("age").and_then(Value::as_i64),
        )?;
        w.write_record(None::<&[u8]>)?;
    }
    w.flush()?;
    Ok(())
}

fn write_events(events: &[GenEvent], path: &Path) -> Result<()> {
    let mut w = csv_writer(path)?;
    w.write_record([
        "profile_id",
        "ts_ms",
        "name",
        "sku",
        "category",
        "price",
        "order_id",
        "revenue",
        "currency",
        "path",
    ])?;
    let mut buf = String::new();
    for e in events {
        num(&mut w, &mut buf, Some(e.profile))?;
        num(&mut w, &mut buf, Some(e.timestamp_ms))?;
        w.write_field(e.name)?;
        match e.sku {
            Some(n) => {
                buf.clear();
                write!(buf, "SKU-{n:05}")?;
                w.write_field(&buf)?;
            }
            None => w.write_field("")?,
        }
        w.write_field(e.category.unwrap_or(""))?;
        num(&mut w, &mut buf, e.price)?;
        match e.order_id {
            Some(n) => {
                buf.clear();
                write!(buf, "ORD-{n:08}")?;
                w.write_field(&buf)?;
            }
            None => w.write_field("")?,
        }
        num(&mut w, &mut buf, e.revenue)?;
        w.write_field(e.currency.unwrap_or(""))?;
        w.write_field(e.path.unwrap_or(""))?;
        w.write_record(None::<&[u8]>)?;
    }
    w.flush()?;
    Ok(())
}

/// Writes a number field (`Display`: shortest round-trip form for floats), or an empty
/// one for `None`.
fn num<W: std::io::Write, T: std::fmt::Display>(
    w: &mut csv::Writer<W>,
    buf: &mut String,
    v: Option<T>,
) -> Result<()> {
    buf.clear();
    if let Some(v) = v {
        write!(buf, "{v}")?;
    }
    w.write_field(buf.as_bytes())?;
    Ok(())
}

/// RFC 3339 UTC with milliseconds: `2026-08-01T12:00:00.000Z`.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Running sums of the weights (for [`pick`]).
fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// An index drawn with the weights whose running sums are `cum`.
fn pick(rng: &mut SmallRng, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= x)
        .min(cum.len().saturating_sub(1))
}

/// A name drawn from weighted `(name, weight)` pairs.
fn pick_static(rng: &mut SmallRng, items: &[(&'static str, f64)]) -> &'static str {
    let total: f64 = items.iter().map(|i| i.1).sum();
    let mut x = rng.random::<f64>() * total;
    for &(name, w) in items {
        if x < w {
            return name;
        }
        x -= w;
    }
    items.last().map_or("", |i| i.0)
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Mixes a seed and a stream number into a generator seed (SplitMix64 finalizer).
fn mix64(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = DEFAULT_NOW_MS;

    #[test]
    fn deterministic_and_exact_sizes() {
        let a = generate(2_000, 40_000, 7, NOW);
        let b = generate(2_000, 40_000, 7, NOW);
        assert_eq!(a.profiles.len(), 2_000);
        assert_eq!(a.events.len(), 40_000);
        assert_eq!(a.events, b.events);
        let ta: Vec<_> = a.profiles.iter().map(|p| (&p.email, &p.traits)).collect();
        let tb: Vec<_> = b.profiles.iter().map(|p| (&p.email, &p.traits)).collect();
        assert_eq!(ta, tb);
        let c = generate(2_000, 40_000, 8, NOW);
        assert_ne!(a.events, c.events);
    }

    #[test]
    fn events_sorted_in_window_and_attributed() {
        let d = generate(3_000, 60_000, 1, NOW);
        assert!(
            d.events.windows(2).all(|w| {
                (w[0].timestamp_ms, w[0].profile) <= (w[1].timestamp_ms, w[1].profile)
            })
        );
        let oldest = NOW - HISTORY_DAYS * DAY_MS;
        assert!(d.events.iter().all(|e| e.timestamp_ms >= oldest));
        assert!(d.events.iter().all(|e| e.timestamp_ms <= NOW + 7_200_000));
        assert!(
            d.events
                .iter()
                .all(|e| e.profile >= 1 && e.profile <= 3_000)
        );
        assert!(
            d.profiles
                .iter()
                .enumerate()
                .all(|(i, p)| p.id == i as i64 + 1)
        );
        // Order ids are 1..=n in time order.
        let orders: Vec<u32> = d.events.iter().filter_map(|e| e.order_id).collect();
        assert!(!orders.is_empty());
        assert!(orders.iter().enumerate().all(|(i, &o)| o == i as u32 + 1));
    }

    #[test]
    fn mix_is_roughly_right() {
        let d = generate(20_000, 400_000, 3, NOW);
        let share = |n: &str| {
            d.events.iter().filter(|e| e.name == n).count() as f64 / d.events.len() as f64
        };
        let expect = [
            ("Page Viewed", 0.40),
            ("Product Viewed", 0.25),
            ("Product Added", 0.10),
            ("Product Removed", 0.03),
            ("Product Added to Wishlist", 0.03),
            ("Checkout Started", 0.05),
            ("Order Completed", 0.03),
            ("Signed In", 0.06),
            ("Email Opened", 0.05),
        ];
        for (n, e) in expect {
            let s = share(n);
            assert!((s - e).abs() < e * 0.25, "{n}: {s} vs {e}");
        }
        let pro = d
            .profiles
            .iter()
            .filter(|p| p.traits.get("plan").and_then(Value::as_str) == Some("pro"))
            .count() as f64
            / d.profiles.len() as f64;
        assert!((pro - 0.245).abs() < 0.02, "pro {pro}");
        let with_email = d.profiles.iter().filter(|p| p.email.is_some()).count() as f64
            / d.profiles.len() as f64;
        assert!((with_email - 0.7).abs() < 0.02, "email {with_email}");
        // Heavy tail: the median active profile has a few events, some have hundreds.
        let mut per = vec![0u32; d.profiles.len()];
        for e in &d.events {
            per[e.profile as usize - 1] += 1;
        }
        per.sort_unstable();
        let active: Vec<u32> = per.into_iter().filter(|&c| c > 0).collect();
        assert!(active[active.len() / 2] < 20);
        assert!(active.last().copied().unwrap_or(0) >= 300);
    }

    #[test]
    fn properties_follow_the_event_kind() {
        let d = generate(500, 10_000, 5, NOW);
        for e in &d.events {
            let p = e.properties();
            match e.name {
                "Page Viewed" => assert!(p.get("path").is_some_and(Value::is_string)),
                "Order Completed" => {
                    assert!(p.get("order_id").is_some_and(Value::is_string));
                    let r = p.get("revenue").and_then(Value::as_f64).unwrap_or(0.0);
                    assert!((10.0..=600.0).contains(&r));
                    assert!(
                        ["EUR", "USD", "GBP"]
                            .contains(&p.get("currency").and_then(Value::as_str).unwrap_or(""))
                    );
                }
                "Product Viewed"
                | "Product Added"
                | "Product Removed"
                | "Product Added to Wishlist" => {
                    let sku = p.get("sku").and_then(Value::as_str).unwrap_or("");
                    assert!(sku.starts_with("SKU-") && sku.len() == 9, "{sku}");
                    assert!(p.get("category").is_some_and(Value::is_string));
                    let price = p.get("price").and_then(Value::as_f64).unwrap_or(0.0);
                    assert!(((price * 100.0).round() / 100.0 - price).abs() < 1e-9);
                }
                _ => {}
            }
        }
        // The price of a sku is fixed.
        let mut prices = std::collections::HashMap::new();
        for e in &d.events {
            if let (Some(s), Some(p)) = (e.sku, e.price) {
                assert_eq!(*prices.entry(s).or_insert(p), p);
            }
        }
    }

    #[test]
    fn csv_has_headers_and_all_rows() -> Result<()> {
        let d = generate(300, 5_000, 9, NOW);
        let dir = std::env::temp_dir().join(format!("tessera-aud-{}", std::process::id()));
        write_csv(&d, &dir)?;
        let p = std::fs::read_to_string(dir.join("profiles.csv"))?;
        let e = std::fs::read_to_string(dir.join("events.csv"))?;
        std::fs::remove_dir_all(&dir)?;
        assert!(p.starts_with("profile_id,plan,country,email,signup_at_ms,age\n"));
        assert!(e.starts_with(
            "profile_id,ts_ms,name,sku,category,price,order_id,revenue,currency,path\n"
        ));
        assert_eq!(p.lines().count(), 301);
        assert_eq!(e.lines().count(), 5_001);
        assert!(e.lines().all(|l| l.split(',').count() == 10));
        // signup_at_ms is the trait parsed back.
        let first = p.lines().nth(1).unwrap_or("");
        let ms: i64 = first.split(',').nth(4).unwrap_or("").parse()?;
        let t = d.profiles[0].traits["signup_at"].as_str().unwrap_or("");
        assert_eq!(rfc3339_ms(ms), t);
        Ok(())
    }

    #[test]
    fn cases_are_complete() {
        let keys: std::collections::HashSet<_> = AUDIENCE_CASES.iter().map(|c| c.key).collect();
        assert_eq!(keys.len(), 10);
        for c in &AUDIENCE_CASES {
            let sql = c.sql_at(NOW);
            assert!(sql.starts_with("SELECT "), "{}", c.key);
            assert!(!sql.contains('{'), "{}", c.key);
        }
        assert_eq!(rfc3339_ms(1_785_585_600_000), "2026-08-01T12:00:00.000Z");
    }
}
