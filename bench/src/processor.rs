//! `processor`: identity-resolution throughput of the processor over a realistic
//! identifier mix, on the real SQLite stores.
//!
//! People browse anonymously (one or two cookies or app installs), most identify by
//! email, about half log in with a user id, some give a phone number, a few share a
//! device with another person. The generated events are appended to a fresh data
//! directory's event log, then the processor applies the whole log; the figure is
//! events applied per second, with the resulting profile count and peak memory.

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tessera_identity::processor::Processor;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::{AppendBatch, EventRecord, NewSource};
use tessera_store_sqlite::DedupConfig;

use crate::stats::thousands;

/// Options of `processor`.
#[derive(Args, Clone)]
pub struct ProcessorArgs {
    /// Data directory to create (must not exist).
    #[arg(long)]
    pub dir: PathBuf,
    /// People to simulate (the profile count comes out close to this).
    #[arg(long, default_value_t = 1_000_000)]
    pub people: u64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the report as one JSON line on stdout too.
    #[arg(long)]
    pub json: bool,
}

/// A tiny deterministic generator (SplitMix64), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One person's events, as Segment messages.
fn person_events(rng: &mut Rng, person: u64, people: u64) -> Vec<serde_json::Value> {
    let cookie = format!("anon-{person:x}-{:x}", rng.next() & 0xffff);
    let mut events = vec![
        json!({"type": "page", "anonymousId": cookie, "name": "Home", "properties": {"path": "/"}}),
        json!({"type": "track", "anonymousId": cookie, "event": "Product Viewed", "properties": {"sku": format!("SKU-{}", rng.next() % 5000), "price": 19.5}}),
    ];
    let email = format!("person{person}@example.com");
    let identified = rng.chance(70);
    if identified {
        events.push(json!({"type": "identify", "anonymousId": cookie, "traits": {"email": email, "first_name": "Alex", "plan": "free"}}));
    }
    if rng.chance(30) {
        // A second device, later tied to the same person by email.
        let app = format!("app-{person:x}");
        events.push(json!({"type": "screen", "anonymousId": app, "name": "Home", "context": {"device": {"id": format!("dev-{person:x}")}}}));
        if identified {
            events
                .push(json!({"type": "identify", "anonymousId": app, "traits": {"email": email}}));
        }
    }
    if identified && rng.chance(50) {
        let user = format!("u{person}");
        let mut traits = json!({"email": email, "plan": "pro"});
        if rng.chance(40) {
            traits["phone"] = json!(format!("+1415{}", 2_000_000 + person % 8_000_000));
        }
        events.push(
            json!({"type": "identify", "userId": user, "anonymousId": cookie, "traits": traits}),
        );
        events.push(json!({"type": "track", "userId": user, "event": "Order Completed", "properties": {"total": 42.5, "currency": "EUR"}}));
        if rng.chance(3) {
            // A shared family device: a conflict, never a merge of two user ids.
            let other = (person + 1) % people;
            events.push(json!({"type": "track", "userId": format!("u{other}"), "event": "Viewed", "context": {"device": {"id": format!("dev-{person:x}")}}}));
        }
    }
    events
}

/// Runs the benchmark.
pub fn run(args: &ProcessorArgs) -> Result<serde_json::Value> {
    anyhow::ensure!(
        !args.dir.exists(),
        "{} exists: give a new directory",
        args.dir.display()
    );
    let stores = open_stores(StoreOptions::writer(&args.dir, DedupConfig::default()))?;
    let (log, catalog) = (stores.events()?, stores.catalog()?);
    let source = catalog.create_source(&NewSource {
        id: "src_bench".into(),
        name: "bench".into(),
        write_key_hash: "bench".into(),
        write_key_prefix: "bnch".into(),
        created_at_ms: 0,
    })?;

    let started = Instant::now();
    let mut rng = Rng(args.seed);
    let mut pending = Vec::with_capacity(20_000);
    let mut events_total = 0u64;
    let base_ms: i64 = 1_790_000_000_000;
    for person in 0..args.people {
        for mut message in person_events(&mut rng, person, args.people) {
            events_total += 1;
            let message_id = format!("m-{events_total}");
            let ts = base_ms + i64::try_from(events_total).unwrap_or(0) * 10;
            let time = chrono::DateTime::from_timestamp_millis(ts)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            message["messageId"] = json!(message_id);
            message["timestamp"] = json!(time);
            message["receivedAt"] = json!(time);
            pending.push(EventRecord {
                source_key: source.key,
                message_id,
                received_at_ms: ts,
                payload: message.to_string(),
            });
            if pending.len() == pending.capacity() {
                log.append(&[AppendBatch {
                    events: std::mem::take(&mut pending),
                    rejections: vec![],
                }])?;
                pending.reserve(20_000);
            }
        }
    }
    log.append(&[AppendBatch {
        events: pending,
        rejections: vec![],
    }])?;
    let generated_s = started.elapsed().as_secs_f64();
    eprintln!(
        "processor: {} events for {} people written in {generated_s:.1} s; applying…",
        thousands(events_total),
        thousands(args.people)
    );

    let profiles = stores.profiles()?;
    let processor = Processor::new(Arc::clone(&log), Arc::clone(&profiles), catalog)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let applied = processor
        .catch_up(&mut |applied, target| {
            if last_report.elapsed().as_secs() >= 10 {
                last_report = Instant::now();
                eprintln!(
                    "  applied {} of {}",
                    thousands(applied),
                    thousands(u64::try_from(target).unwrap_or(0))
                );
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let profile_count = profiles.profile_count()?;
    let conflicts = profiles.conflicts(1_000_000)?.len();
    let peak_rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0);
    let profiles_db_mb = std::fs::metadata(args.dir.join("profiles.db"))
        .map(|m| m.len() as f64 / 1e6)
        .context("profiles.db")?;
    let rate = applied as f64 / seconds;
    eprintln!(
        "processor: applied {} events in {seconds:.1} s => {} events/s; {} profiles, {} conflicts, peak RSS {peak_rss_mb:.0} MB, profiles.db {profiles_db_mb:.0} MB",
        thousands(applied),
        thousands(rate as u64),
        thousands(u64::try_from(profile_count).unwrap_or(0)),
        thousands(conflicts as u64),
    );
    Ok(json!({
        "events": applied, "seconds": seconds, "events_per_second": rate,
        "people": args.people, "profiles": profile_count, "conflicts": conflicts,
        "peak_rss_mb": peak_rss_mb, "profiles_db_mb": profiles_db_mb,
    }))
}
