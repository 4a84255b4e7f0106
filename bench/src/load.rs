//! `load`: closed-loop HTTP load against `/v1/batch` over N keep-alive connections,
//! or paced at a fixed total rate (`--rate`, for soak runs).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use hyper::Method;
use hyper::header::RETRY_AFTER;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::http::{Target, basic_auth, send};
use crate::messages::BodyGen;
use crate::stats::{
    CpuSnapshot, Latency, Recorder, Window, cpu_lines, per_second_summary, round3, thousands,
};

/// Settings of a `load` run.
pub struct LoadConfig {
    /// Server base URL (loopback only).
    pub url: String,
    /// Source write key (sent as HTTP Basic username).
    pub write_key: String,
    /// Concurrent keep-alive connections, one request in flight each.
    pub connections: usize,
    /// Measured window.
    pub duration: Duration,
    /// Warmup before the measured window (not counted).
    pub warmup: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest Retry-After honoured (longer values are capped).
    pub max_backoff: Duration,
    /// Server process id, to report its CPU use during the window.
    pub server_pid: Option<u32>,
    /// Total events per second to pace at (0: closed loop, as fast as answered).
    pub rate: f64,
}

/// Retry-After in seconds (integer form); 1 s when absent or unparsable.
fn retry_after(headers: &hyper::HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(1), Duration::from_secs_f64)
}

/// Number of per-message rejections in a 2xx body (`"rejected":[...]`), 0 when none.
fn rejected_count(body: &Bytes) -> u64 {
    if !body.windows(10).any(|w| w == b"\"rejected\"") {
        return 0;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("rejected")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
        })
        .unwrap_or(0)
}

/// A connection's timing: request timeout, longest Retry-After honoured, pacing.
#[derive(Clone, Copy)]
struct Timing {
    timeout: Duration,
    max_backoff: Duration,
    /// Paced runs: the interval between this connection's batches.
    pace: Option<Duration>,
}

async fn worker(
    id: usize,
    target: Target,
    auth: String,
    bodies: BodyGen,
    window: Window,
    timing: Timing,
) -> Recorder {
    let Timing {
        timeout,
        max_backoff,
        pace,
    } = timing;
    let mut rec = Recorder::new(window.seconds());
    // Paced: this connection's next batch is due then (spread over one interval).
    let mut due = pace.map(|p| Instant::now() + p.mul_f64(id as f64 / 64.0 % 1.0));
    let mut sender = None;
    let mut seq = id * 7919;
    let mut pending: Option<Bytes> = None; // body to retry after a 503
    let batch = bodies.batch as u64;
    while Instant::now() < window.measure_end {
        if sender.is_none() {
            match tokio::time::timeout(timeout, target.connect()).await {
                Ok(Ok(s)) => sender = Some(s),
                _ => {
                    rec.failed(&window, Instant::now(), "connect");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let body = match pending.take() {
            Some(b) => b,
            None => {
                if let (Some(pace), Some(at)) = (pace, due.as_mut()) {
                    tokio::time::sleep_until((*at).into()).await;
                    // Behind by more than a second (the server stalled): no burst to
                    // catch up, the rate resumes from now.
                    *at = (*at + pace).max(Instant::now() - Duration::from_secs(1));
                }
                seq += 1;
                bodies.next_body(seq)
            }
        };
        let len = body.len() as u64;
        let req = match target.request(Method::POST, "/v1/batch", Some(&auth), body.clone()) {
            Ok(r) => r,
            Err(_) => {
                rec.failed(&window, Instant::now(), "request_build");
                continue;
            }
        };
        let t0 = Instant::now();
        let res = tokio::time::timeout(timeout, send(s, req)).await;
        let t1 = Instant::now();
        match res {
            Ok(Ok((status, headers, resp_body))) => {
                if status.is_success() {
                    let rejected = rejected_count(&resp_body).min(batch);
                    if window.second(t1).is_some() {
                        rec.rejected_events += rejected;
                    }
                    rec.accepted(&window, t1, t1 - t0, batch - rejected, len);
                } else {
                    rec.failed(&window, t1, status.as_str());
                    if status.as_u16() == 503 {
                        if window.second(t1).is_some() {
                            rec.retries += 1;
                        }
                        let wait = retry_after(&headers)
                            .min(max_backoff)
                            .min(window.measure_end.saturating_duration_since(t1));
                        pending = Some(body);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Ok(Err(_)) => {
                rec.failed(&window, t1, "io");
                sender = None;
            }
            Err(_) => {
                rec.failed(&window, t1, "timeout");
                sender = None;
            }
        }
    }
    rec
}

/// Runs the load and returns the JSON report (also printed as a human summary on stderr).
pub async fn run(cfg: LoadConfig, bodies: BodyGen) -> Result<Value> {
    if cfg.connections == 0 {
        bail!("--connections must be > 0");
    }
    let target = Target::resolve(&cfg.url).await?;
    let auth = basic_auth(&cfg.write_key);
    // Fail fast on an unreachable server or a bad key instead of measuring errors for 20 s.
    {
        let (status, _, body) = target
            .once(Method::POST, "/v1/batch", Some(&auth), bodies.next_body(0))
            .await
            .with_context(|| format!("probe request to {}", cfg.url))?;
        if !status.is_success() && status.as_u16() != 503 {
            bail!(
                "probe batch answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    eprintln!(
        "load: {} connections, batch {} (~{:.0} B/message, ~{:.0} KB/body, {} messageIds), warmup {:.1}s, measuring {:.1}s against {}",
        cfg.connections,
        bodies.batch,
        bodies.avg_message_bytes,
        bodies.avg_body_bytes / 1024.0,
        bodies.id_order(),
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
        cfg.url
    );
    let window = Window::new(cfg.warmup, cfg.duration);
    let pace = (cfg.rate > 0.0)
        .then(|| Duration::from_secs_f64(bodies.batch as f64 * cfg.connections as f64 / cfg.rate));
    let mut set = JoinSet::new();
    for id in 0..cfg.connections {
        set.spawn(worker(
            id,
            target.clone(),
            auth.clone(),
            bodies.clone(),
            window,
            Timing {
                timeout: cfg.timeout,
                max_backoff: cfg.max_backoff,
                pace,
            },
        ));
    }
    tokio::time::sleep_until(window.measure_start.into()).await;
    let cpu0 = CpuSnapshot::take(cfg.server_pid);
    tokio::time::sleep_until(window.measure_end.into()).await;
    let cpu1 = CpuSnapshot::take(cfg.server_pid);
    let cpu = cpu0.delta_json(&cpu1);

    let mut total = Recorder::new(window.seconds());
    let deadline = tokio::time::Instant::now() + cfg.timeout + Duration::from_secs(5);
    let mut aborted = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(rec))) => total.merge(rec),
            Ok(Some(Err(e))) => bail!("worker failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                aborted = set.len();
                set.abort_all();
                break;
            }
        }
    }
    let report = build_report(&cfg, &bodies, &window, total, cpu, aborted);
    print_human("tessera", &report);
    if report["accepted_events"].as_u64().unwrap_or(0) == 0 {
        bail!("no request was accepted during the measured window");
    }
    Ok(report)
}

fn build_report(
    cfg: &LoadConfig,
    bodies: &BodyGen,
    window: &Window,
    mut total: Recorder,
    cpu: Value,
    aborted: usize,
) -> Value {
    let secs = window.measured_secs();
    let lat = Latency::from_us(&mut total.latencies_us);
    let (min_s, med_s, max_s) = per_second_summary(&total.per_second, window);
    json!({
        "mode": "load",
        "url": cfg.url,
        "connections": cfg.connections,
        "rate": cfg.rate,
        "batch": bodies.batch,
        "avg_message_bytes": round3(bodies.avg_message_bytes),
        "message_ids": bodies.id_order(),
        "avg_body_bytes": round3(bodies.avg_body_bytes),
        "warmup_s": round3(cfg.warmup.as_secs_f64()),
        "duration_s": round3(secs),
        "requests": total.requests,
        "accepted_requests": total.ok_requests,
        "accepted_events": total.events,
        "rejected_events": total.rejected_events,
        "events_per_sec": round3(total.events as f64 / secs),
        "requests_per_sec": round3(total.ok_requests as f64 / secs),
        "mb_per_sec": round3(total.bytes as f64 / secs / 1e6),
        "per_second_events": {"min": min_s, "median": med_s, "max": max_s},
        "per_second_timeline": total.per_second,
        "latency_ms": lat.to_json(),
        "errors": total.errors,
        "retries_after_503": total.retries,
        "aborted_connections": aborted,
        "cpu": cpu,
    })
}

/// Prints the human summary of a `load` or `raw` report on stderr.
pub fn print_human(label: &str, r: &Value) {
    let u = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let l = |k: &str| {
        r.get("latency_ms")
            .and_then(|v| v.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let ps = |k: &str| {
        r.get("per_second_events")
            .and_then(|v| v.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    eprintln!(
        "== {label} ({}) ==",
        r.get("mode").and_then(Value::as_str).unwrap_or("?")
    );
    eprintln!(
        "  window           {:.1} s measured (after {:.1} s warmup), {} connections, batch {}",
        f("duration_s"),
        f("warmup_s"),
        u("connections"),
        u("batch")
    );
    eprintln!(
        "  requests         {} ({} accepted)",
        thousands(u("requests")),
        thousands(u("accepted_requests"))
    );
    eprintln!(
        "  accepted events  {}  =>  {} events/s sustained ({:.1} MB/s of bodies)",
        thousands(u("accepted_events")),
        thousands(f("events_per_sec").round() as u64),
        f("mb_per_sec")
    );
    eprintln!(
        "  per second       min {} / median {} / max {} events",
        thousands(ps("min")),
        thousands(ps("median")),
        thousands(ps("max"))
    );
    eprintln!(
        "  latency (ack)    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        l("p50"),
        l("p90"),
        l("p99"),
        l("p999"),
        l("max")
    );
    if let Some(e) = r.get("errors").and_then(Value::as_object)
        && !e.is_empty()
    {
        let parts: Vec<String> = e.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        eprintln!("  errors           {}", parts.join(", "));
    }
    if u("rejected_events") > 0 {
        eprintln!("  rejected events  {}", thousands(u("rejected_events")));
    }
    if let Some(fs) = r.get("fsync") {
        eprintln!(
            "  fsync            {} calls ({:.0}/s), {:.1} batches per fsync, fsync p50 {:.2} ms / p99 {:.2} ms, {:.1} MB written",
            thousands(fs.get("count").and_then(Value::as_u64).unwrap_or(0)),
            fs.get("per_sec").and_then(Value::as_f64).unwrap_or(0.0),
            fs.get("avg_batches_per_fsync")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            fs.get("p50_ms").and_then(Value::as_f64).unwrap_or(0.0),
            fs.get("p99_ms").and_then(Value::as_f64).unwrap_or(0.0),
            fs.get("bytes_written").and_then(Value::as_u64).unwrap_or(0) as f64 / 1e6,
        );
    }
    if let Some(cpu) = r.get("cpu") {
        eprintln!("  cpu during the measured window:");
        for line in cpu_lines(cpu) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_counting() {
        assert_eq!(
            rejected_count(&Bytes::from_static(b"{\"success\":true}")),
            0
        );
        assert_eq!(
            rejected_count(&Bytes::from_static(
                b"{\"success\":true,\"rejected\":[{\"index\":1},{\"index\":4}]}"
            )),
            2
        );
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(RETRY_AFTER, hyper::header::HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Duration::from_secs(2));
    }
}
