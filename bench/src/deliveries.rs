//! `tessera-bench deliveries`: webhook delivery through a running Tessera to a local
//! receiver that this process runs.
//!
//! The receiver (plain HTTP/1.1 keep-alive over tokio) answers `--fail-rate` of the
//! requests with 503 and records, per `messageId`, when it first accepted it. The
//! command creates a webhook destination for `Bench Event` on the server, then:
//! - `steady`: sends `--rate` events/s for `--seconds` (batches of `--batch`) and
//!   reports, per event, acknowledged (2xx received by the client) → first accepted by
//!   the receiver, plus lost and duplicate deliveries;
//! - `burst`: sends `--events` as fast as it can, then measures deliveries/s from the
//!   first acknowledgement to the last delivery; in the same run, the same receiver
//!   is driven directly by this process (same number of connections) for the ceiling;
//! - `probe`: one event for the webhook every `--probe-interval-ms` while
//!   `--background-clients` clients each send a batch of `--background-batch` other
//!   events every `--background-interval-ms` (traffic no destination takes, which keeps
//!   the processor and the host busy); reports acknowledged → received for the probes.

use crate::http::{Target, admin, basic_auth, send};
use crate::stats::{percentile_of, unix_ms};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which measurement.
#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// A steady rate; latency and loss.
    Steady,
    /// As fast as possible; deliveries per second against a direct ceiling.
    Burst,
    /// Probe events beside background traffic; the probes' latency.
    Probe,
}

/// Options of `deliveries`.
#[derive(Args, Clone)]
pub struct DeliveriesArgs {
    /// Tessera's base URL (loopback).
    #[arg(long)]
    pub url: String,
    /// A source's write key.
    #[arg(long)]
    pub write_key: String,
    /// The admin token.
    #[arg(long, env = "TESSERA_ADMIN_TOKEN")]
    pub admin_token: String,
    /// steady or burst.
    #[arg(long, value_enum, default_value = "steady")]
    pub mode: Mode,
    /// Events per second (steady).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of sending (steady).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Events in total (burst).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events per request.
    #[arg(long, default_value_t = 10)]
    pub batch: u64,
    /// Share of receiver answers that are 503.
    #[arg(long, default_value_t = 0.3)]
    pub fail_rate: f64,
    /// The destination's concurrency.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Milliseconds between probe events (probe).
    #[arg(long, default_value_t = 50)]
    pub probe_interval_ms: u64,
    /// Clients sending background traffic (probe).
    #[arg(long, default_value_t = 2)]
    pub background_clients: u64,
    /// Events per background request (probe).
    #[arg(long, default_value_t = 100)]
    pub background_batch: u64,
    /// Milliseconds between one client's background requests (probe).
    #[arg(long, default_value_t = 20)]
    pub background_interval_ms: u64,
}

#[derive(Default)]
struct Received {
    accepted: HashMap<String, (i64, u32)>,
    attempts: u64,
    failed: u64,
}

/// The receiver: answers each request 200 or (fail_rate) 503, keeping connections open.
async fn serve_receiver(listener: TcpListener, fail_rate: f64, log: Arc<Mutex<Received>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let _ = connection(stream, fail_rate, log).await;
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    fail_rate: f64,
    log: Arc<Mutex<Received>>,
) -> Result<()> {
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let header_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < header_end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buffer[header_end..header_end + length].to_vec();
        buffer.drain(..header_end + length);
        let fail = rand::random::<f64>() < fail_rate;
        let now = unix_ms();
        {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.attempts += 1;
            if fail {
                log.failed += 1;
            } else if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                let ids: Vec<String> = match value.get("batch").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| i.pointer("/payload/messageId").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect(),
                    None => value
                        .get("messageId")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .into_iter()
                        .collect(),
                };
                for id in ids {
                    log.accepted.entry(id).or_insert((now, 0)).1 += 1;
                }
            }
        }
        let response: &[u8] = if fail {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        stream.write_all(response).await?;
    }
}

fn event(id: &str, n: u64) -> Value {
    json!({"type": "track", "event": "Bench Event", "userId": format!("bench-user-{}", n % 5_000),
           "messageId": id, "properties": {"n": n, "sku": format!("SKU-{}", n % 977), "price": (n % 90) + 10}})
}

/// Runs the measurement.
pub async fn run(a: &DeliveriesArgs) -> Result<Value> {
    let target = Target::resolve(&a.url).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}", listener.local_addr()?);
    let log = Arc::new(Mutex::new(Received::default()));
    tokio::spawn(serve_receiver(listener, a.fail_rate, Arc::clone(&log)));
    let run_tag = unix_ms();
    let destination = format!("bench-{run_tag}");
    admin(&target, &a.admin_token, Method::POST, "/api/v1/destinations", json!({
        "id": destination, "type": "webhook", "settings": {"url": format!("{receiver_url}/in")},
        "filter": {"events": ["Bench Event"]},
        "delivery": {"initialBackoffMs": 100, "maxBackoffMs": 2000, "concurrency": a.concurrency,
                     "breakerFailures": 1_000_000, "maxAttempts": 30},
    })).await?;

    let auth = basic_auth(&a.write_key);
    if matches!(a.mode, Mode::Probe) {
        return probe(a, &target, &auth, &log, run_tag).await;
    }
    let total = match a.mode {
        Mode::Steady => a.rate * a.seconds,
        Mode::Burst | Mode::Probe => a.events,
    };
    let requests = total.div_ceil(a.batch);
    let interval = match a.mode {
        Mode::Steady => Duration::from_secs_f64(a.batch as f64 / a.rate as f64),
        Mode::Burst | Mode::Probe => Duration::ZERO,
    };
    let acks: Arc<Mutex<HashMap<String, i64>>> = Arc::new(Mutex::new(HashMap::new()));
    let connections = 8u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let target = target.clone();
        let auth = auth.clone();
        let acks = Arc::clone(&acks);
        let batch = a.batch;
        tasks.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            let mut r = c;
            while r < requests {
                let due = started + interval * u32::try_from(r).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due.into()).await;
                let ids: Vec<String> = (0..batch)
                    .map(|i| r * batch + i)
                    .filter(|n| *n < total)
                    .map(|n| format!("bench-{run_tag}-{n}"))
                    .collect();
                let items: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| event(id, r * batch + i as u64))
                    .collect();
                let body = Bytes::from(json!({"batch": items}).to_string());
                let req = target.request(Method::POST, "/v1/batch", Some(&auth), body)?;
                let (status, _, _) = send(&mut sender, req).await?;
                if !status.is_success() {
                    bail!("POST /v1/batch answered {status}");
                }
                let now = unix_ms();
                let mut acks = acks.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    acks.insert(id, now);
                }
                r += connections;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("sender task")??;
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let acks = acks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut report = summarize(a, &acks, &log, sent_seconds).await;
    if matches!(a.mode, Mode::Burst) {
        report["direct_ceiling_per_second"] =
            json!(direct_ceiling(&receiver_url, total, a.batch, connections).await?);
        let ratio = report["deliveries_per_second"].as_f64().unwrap_or(0.0)
            / report["direct_ceiling_per_second"]
                .as_f64()
                .unwrap_or(1.0)
                .max(1.0);
        report["ratio_to_direct"] = json!((ratio * 1000.0).round() / 1000.0);
    }
    Ok(report)
}

/// Waits (up to 180 s) until every acknowledged event was received, then reports
/// latency from acknowledgement, loss, duplicates and deliveries per second.
async fn summarize(
    a: &DeliveriesArgs,
    acks: &HashMap<String, i64>,
    log: &Mutex<Received>,
    sent_seconds: f64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = {
            let received = log.lock().unwrap_or_else(|p| p.into_inner());
            acks.keys().all(|id| received.accepted.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    let mut latencies: Vec<i64> = acks
        .iter()
        .filter_map(|(id, ack)| received.accepted.get(id).map(|(at, _)| (at - ack).max(0)))
        .collect();
    latencies.sort_unstable();
    let lost = acks
        .keys()
        .filter(|id| !received.accepted.contains_key(*id))
        .count();
    let duplicates: u64 = received
        .accepted
        .values()
        .map(|(_, n)| u64::from(n.saturating_sub(1)))
        .sum();
    let first_ack = acks.values().min().copied().unwrap_or(0);
    let last_delivery = received
        .accepted
        .values()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(0);
    let delivery_seconds = (last_delivery - first_ack).max(1) as f64 / 1_000.0;
    json!({
        "mode": match a.mode { Mode::Steady => "steady", Mode::Burst => "burst", Mode::Probe => "probe" },
        "events": acks.len(),
        "acknowledged": acks.len(),
        "delivered": received.accepted.len(),
        "lost": lost,
        "duplicate_deliveries": duplicates,
        "receiver_attempts": received.attempts,
        "receiver_503s": received.failed,
        "fail_rate": a.fail_rate,
        "send_seconds": (sent_seconds * 100.0).round() / 100.0,
        "deliveries_per_second": (received.accepted.len() as f64 / delivery_seconds).round(),
        "ack_to_delivered_ms": {
            "p50": percentile_of(&latencies, 50.0), "p90": percentile_of(&latencies, 90.0),
            "p99": percentile_of(&latencies, 99.0), "max": latencies.last().copied().unwrap_or(0),
        },
    })
}

/// `probe`: probe events beside background traffic (see the module doc).
async fn probe(
    a: &DeliveriesArgs,
    target: &Target,
    auth: &str,
    log: &Mutex<Received>,
    run_tag: i64,
) -> Result<Value> {
    let run_for = Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut background = Vec::new();
    for client in 0..a.background_clients {
        let target = target.clone();
        let auth = auth.to_owned();
        let (batch, every) = (
            a.background_batch,
            Duration::from_millis(a.background_interval_ms.max(1)),
        );
        background.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            let mut sent = 0u64;
            let mut r = 0u32;
            while started.elapsed() < run_for {
                tokio::time::sleep_until((started + every * r).into()).await;
                r += 1;
                let items: Vec<Value> = (0..batch)
                    .map(|i| {
                        let n = sent + i;
                        json!({"type": "track", "event": "Background Event",
                               "anonymousId": format!("bg-{run_tag}-{client}-{}", n % 20_000),
                               "messageId": format!("bg-{run_tag}-{client}-{n}"),
                               "properties": {"n": n, "path": format!("/p/{}", n % 311)}})
                    })
                    .collect();
                let body = Bytes::from(json!({"batch": items}).to_string());
                let req = target.request(Method::POST, "/v1/batch", Some(&auth), body)?;
                let (status, _, _) = send(&mut sender, req).await?;
                if !status.is_success() {
                    bail!("POST /v1/batch (background) answered {status}");
                }
                sent += batch;
            }
            Ok::<_, anyhow::Error>(sent)
        }));
    }
    let mut acks = HashMap::new();
    let mut sender = target.connect().await?;
    let every = Duration::from_millis(a.probe_interval_ms.max(1));
    let mut n = 0u32;
    while started.elapsed() < run_for {
        tokio::time::sleep_until((started + every * n).into()).await;
        let id = format!("probe-{run_tag}-{n}");
        let body = Bytes::from(json!({"batch": [event(&id, u64::from(n))]}).to_string());
        let req = target.request(Method::POST, "/v1/batch", Some(auth), body)?;
        let (status, _, _) = send(&mut sender, req).await?;
        if !status.is_success() {
            bail!("POST /v1/batch (probe) answered {status}");
        }
        acks.insert(id, unix_ms());
        n += 1;
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let mut background_events = 0;
    for task in background {
        background_events += task.await.context("background task")??;
    }
    let mut report = summarize(a, &acks, log, sent_seconds).await;
    report["background_events"] = json!(background_events);
    report["background_events_per_second"] =
        json!((background_events as f64 / sent_seconds).round());
    Ok(report)
}

/// The same receiver driven directly: one message per request, `connections` at once,
/// failed requests retried at once — deliveries per second without Tessera.
async fn direct_ceiling(url: &str, total: u64, batch: u64, connections: u64) -> Result<f64> {
    let target = Target::resolve(url).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let _ = batch;
    for c in 0..connections {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            let mut n = c;
            while n < total {
                let body = Bytes::from(event(&format!("direct-{n}"), n).to_string());
                loop {
                    let req = target.request(Method::POST, "/in", None, body.clone())?;
                    let (status, _, _) = send(&mut sender, req).await?;
                    if status.is_success() {
                        break;
                    }
                }
                n += connections;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("direct task")??;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64()).round())
}
