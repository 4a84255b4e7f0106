//! `tessera-bench`: ingest benchmark for Tessera.
//!
//! * `load`: loopback HTTP load generator for `POST /v1/batch` (Segment Tracking API), reporting
//!   sustained accepted events/s and acknowledgement latency percentiles.
//! * `raw`: the raw ceiling of this machine for the same bytes (parse, serialize, append, fsync
//!   with group commit), so the two can be compared.
//! * `compare`: ratio of a `load` report to a `raw` report, against the targets.
//! * `processor`: identity-resolution throughput of the processor on a generated mix.
//! * `profile-api`: Profile API latency at a fixed request rate.
//! * `deliveries`: webhook deliveries through Tessera to a local failing receiver.
//! * `setup`, `get`, `free-port`: small helpers used by `bench/run.sh`.
//!
//! Human summaries go to stderr; with `--json` a single JSON line goes to stdout.

mod audience_bench;
mod audience_data;
mod audience_realtime;
mod deliveries;
mod http;
mod insight_bench;
mod load;
mod messages;
mod processor;
mod profile_api;
mod raw;
mod stats;
mod webhooks;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use crate::http::Target;

/// The same allocator as the `tessera` binary, so in-process figures (processor)
/// match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::messages::{BodyGen, GenOptions};
use crate::raw::CommitEvery;
use crate::stats::{parse_duration, thousands};

/// Ingest benchmark for Tessera (loopback only).
#[derive(Parser)]
#[command(name = "tessera-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP load against a running server's /v1/batch.
    Load(LoadArgs),
    /// Raw ceiling: parse + serialize + append + fsync (group commit) of the same bodies.
    Raw(RawArgs),
    /// Compare a load report with a raw report against the targets.
    Compare(CompareArgs),
    /// Wait for /healthz, create a source through the admin API, print its write key.
    Setup(SetupArgs),
    /// GET a path on the server and print the body (e.g. /metrics).
    Get(GetArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Identity-resolution throughput of the processor on a generated identifier mix.
    Processor(processor::ProcessorArgs),
    /// Profile API latency at a fixed request rate (after `processor` built the data).
    ProfileApi(profile_api::ProfileApiArgs),
    /// Generate the audience benchmark's data set (CSV) and definitions (cases.json).
    AudienceData(audience_data::AudienceDataArgs),
    /// Audience engine vs DuckDB on the same generated data, in the same run.
    Audiences(audience_bench::AudienceBenchArgs),
    /// Event acknowledged → audience membership change latency at a steady rate.
    AudienceRealtime(audience_realtime::RealtimeArgs),
    /// Webhook deliveries through Tessera to a local failing receiver: latency, loss, rate.
    Deliveries(deliveries::DeliveriesArgs),
    /// Webhook-source throughput beside /v1/batch, and ingest with a tracking plan
    /// beside ingest without, in one run.
    Webhooks(webhooks::WebhookBenchArgs),
}

/// Options shared by `load` and `raw` (they must match for the ratio to mean something).
#[derive(Args, Clone)]
struct Common {
    /// Concurrent connections (raw: concurrent submitters), one batch in flight each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured window, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Warmup before the measured window (not counted).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Messages per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Distinct pre-generated messages.
    #[arg(long, default_value_t = 2000)]
    pool: usize,
    /// Distinct batch body templates built from the pool.
    #[arg(long, default_value_t = 64)]
    templates: usize,
    /// Seed of the message data (messageIds are unique per run regardless).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Increasing messageIds instead of random-looking ones (random is closer to real SDKs,
    /// whose UUIDs land all over a messageId index).
    #[arg(long)]
    sequential_ids: bool,
    /// Runtime worker threads (load default 1, raw default = number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Also print the report as one JSON line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LoadArgs {
    /// Server base URL (loopback only), e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// Source write key.
    #[arg(long, env = "TESSERA_WRITE_KEY")]
    write_key: String,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Cap on an honoured Retry-After.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    max_backoff: Duration,
    /// PID of the server, to report its CPU use (per thread name) during the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Events per second to send in total (0: as fast as the server answers). Each
    /// connection then sends a batch every `batch × connections / rate` seconds.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct RawArgs {
    /// Directory for the append-only file (same filesystem as the server's data dir).
    #[arg(long)]
    dir: PathBuf,
    /// Batches per fsync: `auto` (group commit of everything waiting) or a maximum N.
    #[arg(long, default_value = "auto")]
    commit_every: CommitEvery,
    /// Keep the written file (deleted by default).
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct CompareArgs {
    /// JSON report of `load`.
    #[arg(long)]
    tessera: PathBuf,
    /// JSON report of `raw`.
    #[arg(long)]
    raw: PathBuf,
    /// Target sustained events/s.
    #[arg(long, default_value_t = 100_000.0)]
    target_events: f64,
    /// Target p99 latency in ms (strictly below).
    #[arg(long, default_value_t = 50.0)]
    target_p99_ms: f64,
    /// Target ratio tessera/raw.
    #[arg(long, default_value_t = 0.5)]
    target_ratio: f64,
    /// Also print the comparison as one JSON line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SetupArgs {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// Admin token.
    #[arg(long, env = "TESSERA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Source name.
    #[arg(long, default_value = "bench")]
    name: String,
    /// How long to wait for /healthz.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    wait: Duration,
}

#[derive(Args)]
struct GetArgs {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// Path, e.g. /metrics
    path: String,
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("bench-worker")
        .enable_all()
        .build()
        .context("building tokio runtime")
}

fn bodies_from(c: &Common) -> Result<BodyGen> {
    BodyGen::new(&GenOptions {
        batch: c.batch,
        pool: c.pool,
        templates: c.templates,
        seed: c.seed,
        sequential_ids: c.sequential_ids,
    })
}

fn emit_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").context("writing stdout")?;
    out.flush().context("flushing stdout")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Load(a) => {
            let bodies = bodies_from(&a.common)?;
            let cfg = load::LoadConfig {
                url: a.url,
                write_key: a.write_key,
                connections: a.common.connections,
                duration: a.common.duration,
                warmup: a.common.warmup,
                timeout: a.timeout,
                max_backoff: a.max_backoff,
                server_pid: a.server_pid,
                rate: a.rate,
            };
            let report =
                runtime(a.common.threads.unwrap_or(1))?.block_on(load::run(cfg, bodies))?;
            if a.common.json {
                emit_json(&report)?;
            }
        }
        Cmd::Raw(a) => {
            let bodies = bodies_from(&a.common)?;
            let cfg = raw::RawConfig {
                dir: a.dir,
                connections: a.common.connections,
                duration: a.common.duration,
                warmup: a.common.warmup,
                commit_every: a.commit_every,
                keep: a.keep,
            };
            let threads = a
                .common
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let report = runtime(threads)?.block_on(raw::run(cfg, bodies))?;
            if a.common.json {
                emit_json(&report)?;
            }
        }
        Cmd::Compare(a) => compare(&a)?,
        Cmd::Setup(a) => {
            let key = runtime(1)?.block_on(setup(&a))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{key}").context("writing stdout")?;
        }
        Cmd::Get(a) => {
            let body = runtime(1)?.block_on(async {
                let t = Target::resolve(&a.url).await?;
                let (status, _, body) = t.once(Method::GET, &a.path, None, Bytes::new()).await?;
                if !status.is_success() {
                    bail!("GET {} answered {status}", a.path);
                }
                Ok(body)
            })?;
            let mut out = std::io::stdout().lock();
            out.write_all(&body).context("writing stdout")?;
        }
        Cmd::Processor(a) => {
            let report = processor::run(&a)?;
            if a.json {
                emit_json(&report)?;
            }
        }
        Cmd::Webhooks(a) => {
            let report = runtime(1)?.block_on(webhooks::run(&a))?;
            if a.json {
                emit_json(&report)?;
            }
        }
        Cmd::ProfileApi(a) => {
            let report = runtime(1)?.block_on(profile_api::run(&a))?;
            if a.json {
                emit_json(&report)?;
            }
        }
        Cmd::AudienceData(a) => audience_data::run(&a)?,
        Cmd::Audiences(a) => emit_json(&audience_bench::run(&a)?)?,
        Cmd::AudienceRealtime(a) => {
            let report = runtime(2)?.block_on(audience_realtime::run(&a))?;
            emit_json(&report)?;
        }
        Cmd::Deliveries(a) => {
            let report = runtime(2)?.block_on(deliveries::run(&a))?;
            emit_json(&report)?;
        }
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{port}").context("writing stdout")?;
        }
    }
    Ok(())
}

async fn setup(a: &SetupArgs) -> Result<String> {
    let t = Target::resolve(&a.url).await?;
    let start = Instant::now();
    loop {
        match t.once(Method::GET, "/healthz", None, Bytes::new()).await {
            Ok((s, _, _)) if s.is_success() => break,
            _ if start.elapsed() >= a.wait => {
                bail!("{}/healthz not ready after {:?}", a.url, a.wait)
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let body = Bytes::from(serde_json::to_vec(&json!({"name": a.name}))?);
    let auth = format!("Bearer {}", a.admin_token);
    let (status, _, resp) = t
        .once(Method::POST, "/api/v1/sources", Some(&auth), body)
        .await
        .context("creating source")?;
    if !status.is_success() {
        bail!(
            "POST /api/v1/sources answered {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    let v: Value = serde_json::from_slice(&resp).context("source creation response")?;
    let key = v
        .get("writeKey")
        .and_then(Value::as_str)
        .context("no writeKey in source creation response")?;
    eprintln!(
        "created source {} ({})",
        v.get("id").and_then(Value::as_str).unwrap_or("?"),
        a.name
    );
    Ok(key.to_owned())
}

fn read_report(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON report line in {}", path.display()))?;
    serde_json::from_str(line).with_context(|| format!("parsing report {}", path.display()))
}

fn compare(a: &CompareArgs) -> Result<()> {
    let t = read_report(&a.tessera)?;
    let r = read_report(&a.raw)?;
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let lat = |v: &Value, k: &str| {
        v.get("latency_ms")
            .and_then(|l| l.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let t_eps = f(&t, "events_per_sec");
    let r_eps = f(&r, "events_per_sec");
    let ratio = if r_eps > 0.0 { t_eps / r_eps } else { 0.0 };
    let t_p99 = lat(&t, "p99");
    let pass_events = t_eps >= a.target_events;
    let pass_p99 = t_p99 > 0.0 && t_p99 < a.target_p99_ms;
    let pass_ratio = ratio >= a.target_ratio;
    let verdict = |b: bool| if b { "PASS" } else { "FAIL" };
    eprintln!("== tessera vs raw ceiling ==");
    eprintln!(
        "  {:<28} {:>14} {:>14}  verdict",
        "metric", "measured", "target"
    );
    eprintln!(
        "  {:<28} {:>14} {:>14}  {}",
        "tessera events/s (sustained)",
        thousands(t_eps.round() as u64),
        format!(">= {}", thousands(a.target_events as u64)),
        verdict(pass_events)
    );
    eprintln!(
        "  {:<28} {:>14} {:>14}  {}",
        "tessera p99 latency",
        format!("{t_p99:.2} ms"),
        format!("< {} ms", a.target_p99_ms),
        verdict(pass_p99)
    );
    eprintln!(
        "  {:<28} {:>14} {:>14}  {}",
        "ratio tessera / raw",
        format!("{:.1} %", ratio * 100.0),
        format!(">= {:.0} %", a.target_ratio * 100.0),
        verdict(pass_ratio)
    );
    eprintln!(
        "  {:<28} {:>14}",
        "tessera p50 latency",
        format!("{:.2} ms", lat(&t, "p50"))
    );
    eprintln!(
        "  {:<28} {:>14}",
        "raw events/s",
        thousands(r_eps.round() as u64)
    );
    eprintln!(
        "  {:<28} {:>14}",
        "raw p50 / p99 latency",
        format!("{:.2}/{:.2} ms", lat(&r, "p50"), lat(&r, "p99"))
    );
    if a.json {
        emit_json(&json!({
            "tessera_events_per_sec": t_eps,
            "tessera_p50_ms": lat(&t, "p50"),
            "tessera_p99_ms": t_p99,
            "raw_events_per_sec": r_eps,
            "raw_p50_ms": lat(&r, "p50"),
            "raw_p99_ms": lat(&r, "p99"),
            "ratio": stats::round3(ratio),
            "pass": {"events_per_sec": pass_events, "p99": pass_p99, "ratio": pass_ratio},
        }))?;
    }
    Ok(())
}
