//! Webhook-source throughput beside the same events through `/v1/batch`, and ingest
//! with a tracking plan beside ingest without, all against one running server in one
//! run, phases alternated (`rounds`) so drift of the machine hits every variant alike.
//!
//! Phases, each a closed loop of `connections` keep-alive connections:
//! - `webhook`: Shopify `orders/create` payloads (unique order and webhook ids, two line
//!   items), signed with HMAC-SHA256, to `POST /v1/webhooks/{id}`;
//! - `batch1`: the very `Order Completed` messages the webhook mapping makes, one per
//!   request, to `/v1/batch` (the same events and fsync per request, without the
//!   signature check and mapping);
//! - `batch100-noplan` / `batch100-plan`: batches of 100 `Order Completed` tracks to
//!   `/v1/batch` on a source without a plan and on one with a `flag` plan whose schema
//!   every message keeps (the cost is the check, not the recording).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use serde_json::{Value, json};
use tessera_runtime::webhooks::presets;
use tessera_runtime::webhooks::signature::{hmac_sha256, to_base64};

use crate::http::{Target, admin, basic_auth, send};

const SECRET: &str = "bench-webhook-secret";

/// Options of `tessera-bench webhooks`.
#[derive(Args)]
pub struct WebhookBenchArgs {
    /// Server base URL (loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token (creates the sources, the webhook configuration and the plan).
    #[arg(long, env = "TESSERA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Concurrent connections per phase.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per phase and round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of all phases.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Print the JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

fn order(n: u64) -> Value {
    json!({
        "id": 5_000_000_000u64 + n,
        "email": format!("buyer{}@example.com", n % 50_000),
        "created_at": "2026-12-01T10:00:00+01:00",
        "currency": "EUR",
        "total_price": "412.00", "subtotal_price": "398.00", "total_tax": "4.00",
        "total_discounts": "0.00", "order_number": 1000 + n, "checkout_id": 900_000 + n,
        "customer": {"id": 7_000_000 + n % 50_000, "email": format!("buyer{}@example.com", n % 50_000),
                     "first_name": "Sam", "last_name": "Buyer", "phone": null},
        "line_items": [
            {"id": 1, "product_id": 632910392, "variant_id": 808950810, "sku": "IPOD2008PINK",
             "title": "IPod Nano - 8GB", "variant_title": "Pink", "vendor": "Apple",
             "price": "199.00", "quantity": 1},
            {"id": 2, "product_id": 632910393, "variant_id": 808950811, "sku": "IPOD2008BLUE",
             "title": "IPod Nano - 8GB", "variant_title": "Blue", "vendor": "Apple",
             "price": "199.00", "quantity": 1}
        ],
        "shipping_lines": [{"price": "10.00", "title": "Standard"}],
        "discount_codes": [],
        "billing_address": {"city": "Ottawa", "country": "Canada", "zip": "K2P 2L8"},
    })
}

/// What one phase sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Webhook,
    Batch1,
    Batch100NoPlan,
    Batch100Plan,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Webhook => "webhook",
            Phase::Batch1 => "batch1",
            Phase::Batch100NoPlan => "batch100-noplan",
            Phase::Batch100Plan => "batch100-plan",
        }
    }
}

struct Setup {
    target: Target,
    webhook_source: String,
    batch_auth: String,
    plan_auth: String,
    counter: AtomicU64,
    run_tag: u64,
}

fn mapped(n: u64, tag: u64) -> Value {
    let mut m = presets::shopify("orders/create", &order(n))
        .and_then(|mut v| v.pop())
        .unwrap_or_default();
    m.insert("messageId".into(), format!("bench-{tag}-{n}").into());
    Value::Object(m)
}

fn request(setup: &Setup, phase: Phase) -> Result<(Request<Full<Bytes>>, u64)> {
    let t = &setup.target;
    let builder = Request::builder()
        .method(Method::POST)
        .header(HOST, &t.authority)
        .header(CONTENT_TYPE, "application/json");
    let n = setup.counter.fetch_add(1, Ordering::Relaxed);
    let (builder, body, events) = match phase {
        Phase::Webhook => {
            let body = serde_json::to_vec(&order(n))?;
            let sig = to_base64(&hmac_sha256(SECRET.as_bytes(), &[&body]));
            let b = builder
                .uri(t.path(&format!("/v1/webhooks/{}", setup.webhook_source)))
                .header("X-Shopify-Hmac-Sha256", sig)
                .header("X-Shopify-Topic", "orders/create")
                .header(
                    "X-Shopify-Webhook-Id",
                    format!("bench-{}-{n}", setup.run_tag),
                );
            (b, body, 1)
        }
        Phase::Batch1 => {
            let body = serde_json::to_vec(&json!({"batch": [mapped(n, setup.run_tag)]}))?;
            let b = builder
                .uri(t.path("/v1/batch"))
                .header(AUTHORIZATION, &setup.batch_auth);
            (b, body, 1)
        }
        Phase::Batch100NoPlan | Phase::Batch100Plan => {
            let batch: Vec<Value> = (0..100)
                .map(|i| mapped(n * 100 + i, setup.run_tag + 1))
                .collect();
            let body = serde_json::to_vec(&json!({"batch": batch}))?;
            let auth = if phase == Phase::Batch100Plan {
                &setup.plan_auth
            } else {
                &setup.batch_auth
            };
            let b = builder.uri(t.path("/v1/batch")).header(AUTHORIZATION, auth);
            (b, body, 100)
        }
    };
    Ok((builder.body(Full::new(Bytes::from(body)))?, events))
}

async fn worker(setup: Arc<Setup>, phase: Phase, until: Instant) -> Result<(u64, u64, Vec<u32>)> {
    let mut sender = setup.target.connect().await?;
    let (mut events, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
    while Instant::now() < until {
        let (req, n) = request(&setup, phase)?;
        let started = Instant::now();
        match send(&mut sender, req).await {
            Ok((status, _, body)) if status.is_success() => {
                if body.windows(10).any(|w| w == b"\"rejected\"") {
                    bail!(
                        "{}: messages were rejected: {}",
                        phase.name(),
                        String::from_utf8_lossy(&body)
                    );
                }
                events += n;
                latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok((status, _, body)) => {
                errors += 1;
                if errors == 1 {
                    eprintln!(
                        "{}: {status} {}",
                        phase.name(),
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            Err(_) => {
                errors += 1;
                sender = setup.target.connect().await?;
            }
        }
    }
    Ok((events, errors, latencies))
}

async fn phase(
    setup: &Arc<Setup>,
    phase: Phase,
    connections: usize,
    seconds: u64,
) -> Result<Value> {
    // One second of warmup per phase, not counted.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..connections {
        warm.spawn(worker(setup.clone(), phase, warm_until));
    }
    while let Some(r) = warm.join_next().await {
        r??;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..connections {
        set.spawn(worker(setup.clone(), phase, until));
    }
    let (mut events, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    while let Some(r) = set.join_next().await {
        let (e, x, l) = r??;
        events += e;
        errors += x;
        lat.extend(l);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let report = json!({
        "phase": phase.name(),
        "events_per_sec": (events as f64 / secs).round(),
        "requests": lat.len(),
        "errors": errors,
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
    });
    eprintln!(
        "{:<16} {:>9.0} events/s  p50 {:>6.1} ms  p99 {:>6.1} ms  errors {}",
        phase.name(),
        events as f64 / secs,
        pct(0.5),
        pct(0.99),
        errors
    );
    Ok(report)
}

/// Runs the benchmark and returns its report.
pub async fn run(args: &WebhookBenchArgs) -> Result<Value> {
    let target = Target::resolve(&args.url).await?;
    let tag = crate::stats::unix_ms() as u64;
    let mut keys = Vec::new();
    for name in ["webhook", "batch", "plan"] {
        let created = admin(
            &target,
            &args.admin_token,
            Method::POST,
            "/api/v1/sources",
            json!({"name": format!("bench-{name}-{tag}")}),
        )
        .await?;
        let id = created["id"].as_str().context("source id")?.to_owned();
        let key = created["writeKey"]
            .as_str()
            .context("write key")?
            .to_owned();
        keys.push((id, key));
    }
    admin(
        &target,
        &args.admin_token,
        Method::PUT,
        &format!("/api/v1/sources/{}/webhook", keys[0].0),
        json!({"preset": "shopify", "secret": SECRET}),
    )
    .await?;
    let plan = json!({"mode": "flag", "events": {"Order Completed": {"properties": {
        "type": "object",
        "properties": {
            "order_id": {"type": "string"}, "total": {"type": "number"}, "revenue": {"type": "number"},
            "currency": {"type": "string", "enum": ["EUR", "USD"]},
            "products": {"type": "array", "items": {"type": "object",
                "properties": {"sku": {"type": "string"}, "price": {"type": "number"}, "quantity": {"type": "integer"}},
                "required": ["sku", "price"]}}
        },
        "required": ["order_id", "total", "currency", "products"]
    }}}});
    admin(
        &target,
        &args.admin_token,
        Method::PUT,
        &format!("/api/v1/sources/{}/plan", keys[2].0),
        plan,
    )
    .await?;
    let setup = Arc::new(Setup {
        target,
        webhook_source: keys[0].0.clone(),
        batch_auth: basic_auth(&keys[1].1),
        plan_auth: basic_auth(&keys[2].1),
        counter: AtomicU64::new(0),
        run_tag: tag,
    });
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}", round + 1);
        let mut phases = Vec::new();
        for p in [
            Phase::Webhook,
            Phase::Batch1,
            Phase::Batch100NoPlan,
            Phase::Batch100Plan,
        ] {
            phases.push(phase(&setup, p, args.connections, args.seconds).await?);
        }
        rounds.push(Value::Array(phases));
    }
    let violations = admin(
        &setup.target,
        &args.admin_token,
        Method::GET,
        &format!("/api/v1/sources/{}/plan/violations", keys[2].0),
        Value::Null,
    )
    .await?;
    if violations["total"].as_u64().unwrap_or(0) != 0 {
        bail!("the plan flagged the bench's messages: {violations}");
    }
    Ok(json!({
        "connections": args.connections,
        "seconds_per_phase": args.seconds,
        "rounds": rounds,
    }))
}
