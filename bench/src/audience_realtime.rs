//! `tessera-bench audience-realtime`: latency from an event's acknowledgement to the
//! audience membership change it causes, at a steady event rate.
//!
//! Creates the cart-abandonment audience on a running server, then sends
//! `Product Added` events from new users at `--rate` events/s (batches of `--batch`
//! on a fixed schedule over several connections). Each event makes a new profile
//! enter the audience. Afterwards it reads the change feed and, from the server's
//! data directory (read-only), the event that created each profile (a profile's id is
//! the log position of its first event), and reports per event:
//! - ack → change: the change's time minus the client's receipt of the 2xx for the
//!   batch (negative when the change was decided before the answer reached the client;
//!   counted as 0);
//! - receipt → change: the change's time minus the event's `receivedAt` (an upper
//!   bound that also holds the durable commit).
//!
//! Both clocks are this machine's.

use crate::http::{Target, admin, send};
use crate::stats::{percentile_of, unix_ms};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `audience-realtime`.
#[derive(Args, Clone)]
pub struct RealtimeArgs {
    /// Tessera's base URL (loopback).
    #[arg(long)]
    pub url: String,
    /// A source's write key.
    #[arg(long)]
    pub write_key: String,
    /// The admin token.
    #[arg(long, env = "TESSERA_ADMIN_TOKEN")]
    pub admin_token: String,
    /// The server's data directory (read after the run).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Connections sending in parallel.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
}

fn distribution(mut values: Vec<i64>) -> Value {
    values.sort_unstable();
    json!({
        "count": values.len(),
        "p50_ms": percentile_of(&values, 50.0),
        "p90_ms": percentile_of(&values, 90.0),
        "p99_ms": percentile_of(&values, 99.0),
        "max_ms": values.last().copied().unwrap_or(0),
    })
}

/// Runs the measurement and returns the report.
pub async fn run(a: &RealtimeArgs) -> Result<Value> {
    let target = Target::resolve(&a.url).await?;
    let key = format!("rt-{}", unix_ms());
    admin(
        &target,
        &a.admin_token,
        Method::POST,
        "/api/v1/audiences",
        json!({"key": key, "definition": "event \"Product Added\" >= 1 within 7d and not event \"Order Completed\" within 7d"}),
    )
    .await?;
    // Wait for its first computation, then note where the change feed stands.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let audience = admin(
            &target,
            &a.admin_token,
            Method::GET,
            &format!("/api/v1/audiences/{key}"),
            Value::Null,
        )
        .await?;
        if audience["status"]["state"] == "ready" {
            break;
        }
        if Instant::now() > deadline {
            bail!("audience {key} not computed within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Members computed at creation (profiles already in the store) are not part of
    // the measurement: start reading the feed after them.
    let mut feed_start = 0i64;
    loop {
        let page = admin(
            &target,
            &a.admin_token,
            Method::GET,
            &format!("/api/v1/audiences/changes?audience={key}&after={feed_start}&limit=10000"),
            Value::Null,
        )
        .await?;
        match page["nextAfter"].as_i64() {
            Some(next) => feed_start = next,
            None => break,
        }
    }

    let batches = a.rate * a.seconds / a.batch;
    let interval = Duration::from_secs_f64(a.batch as f64 / a.rate as f64);
    let started = Instant::now();
    let acks: Arc<tokio::sync::Mutex<HashMap<u64, i64>>> = Arc::default();
    let auth = crate::http::basic_auth(&a.write_key);
    let mut workers = Vec::new();
    for worker in 0..a.connections {
        let target = target.clone();
        let acks = Arc::clone(&acks);
        let auth = auth.clone();
        let key = key.clone();
        let (batch, connections) = (a.batch, a.connections);
        workers.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            let mut late = 0u64;
            let mut k = worker;
            while k < batches {
                let due = started + interval * k as u32;
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                } else if now - due > interval {
                    late += 1;
                }
                let events: Vec<Value> = (0..batch)
                    .map(|j| {
                        json!({"type": "track", "userId": format!("{key}-{k}-{j}"), "event": "Product Added",
                               "properties": {"sku": format!("SKU-{:05}", (k * 7 + j) % 5000), "category": "shoes", "price": 19.5}})
                    })
                    .collect();
                let body = Bytes::from(json!({"batch": events}).to_string());
                let request = target.request(Method::POST, "/v1/batch", Some(&auth), body)?;
                let (status, _, _) = send(&mut sender, request).await?;
                if !status.is_success() {
                    bail!("batch {k}: {status}");
                }
                acks.lock().await.insert(k, unix_ms());
                k += connections;
            }
            Ok::<u64, anyhow::Error>(late)
        }));
    }
    let mut late = 0;
    for w in workers {
        late += w.await.context("sender task")??;
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let sent = batches * a.batch;
    eprintln!(
        "sent {sent} events in {send_seconds:.1} s ({late} batches more than one interval late)"
    );

    // Collect the audience's changes until every profile entered (or 120 s pass).
    let mut changes: Vec<(i64, i64)> = Vec::new(); // (profile, at_ms)
    let mut after = feed_start;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (changes.len() as u64) < sent && Instant::now() < deadline {
        let page = admin(
            &target,
            &a.admin_token,
            Method::GET,
            &format!("/api/v1/audiences/changes?audience={key}&after={after}&limit=10000"),
            Value::Null,
        )
        .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        for e in &events {
            after = e["seq"].as_i64().unwrap_or(after);
            if e["event"] == "Audience Entered" {
                let at = e["timestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                changes.push((
                    e["profileId"].as_i64().unwrap_or(0),
                    at.map_or(0, |t| t.timestamp_millis()),
                ));
            }
        }
    }

    // The event that created each profile: its receivedAt and its batch's ack.
    let log = tessera_runtime::open_stores(tessera_runtime::StoreOptions::read_only(&a.data_dir))
        .and_then(|stores| stores.events())
        .context("opening the server's data directory read-only")?;
    let acks = acks.lock().await.clone();
    let mut from_ack = Vec::new();
    let mut from_receipt = Vec::new();
    for chunk in changes.chunks(5_000) {
        let seqs: Vec<i64> = chunk.iter().map(|(p, _)| *p).collect();
        let at: HashMap<i64, i64> = chunk.iter().copied().collect();
        for event in log.get(&seqs)? {
            let message: Value = serde_json::from_str(&event.payload)?;
            let change_ms = at.get(&event.seq).copied().unwrap_or(0);
            let received = message["receivedAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp_millis());
            from_receipt.push(change_ms - received);
            let batch: Option<u64> = message["userId"]
                .as_str()
                .and_then(|u| u.rsplit('-').nth(1))
                .and_then(|k| k.parse().ok());
            if let Some(ack) = batch.and_then(|k| acks.get(&k)) {
                from_ack.push((change_ms - ack).max(0));
            }
        }
    }
    let report = json!({
        "rate": a.rate,
        "seconds": a.seconds,
        "batch": a.batch,
        "connections": a.connections,
        "sent": sent,
        "achieved_rate": (sent as f64 / send_seconds).round(),
        "late_batches": late,
        "entered": changes.len(),
        "lost": sent.saturating_sub(changes.len() as u64),
        "ack_to_change": distribution(from_ack),
        "receipt_to_change": distribution(from_receipt),
    });
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}
