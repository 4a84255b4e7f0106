//! `raw`: the machine's ceiling for the same bytes without the server.
//!
//! N submitter tasks (like N connections, one batch in flight each) take the same batch bodies
//! the load generator sends, parse them into `serde_json::Value` (as the server does), serialize
//! every message to one JSON line, and hand the lines to a single writer thread. The writer does
//! group commit: it takes every batch waiting (at most `--commit-every N` when given), appends
//! them to a plain file, calls `File::sync_data`, and only then acknowledges them. Latency is
//! measured from "body in hand" to acknowledgement, like the HTTP request latency.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::load::print_human;
use crate::messages::BodyGen;
use crate::stats::{CpuSnapshot, Latency, Recorder, Window, per_second_summary, round3};

/// How many pending batches one fsync may cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitEvery {
    /// Group commit: everything waiting when the writer gets to it.
    Auto,
    /// At most this many batches per fsync (1 = fsync every batch).
    Max(usize),
}

impl std::str::FromStr for CommitEvery {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let n: usize = s
            .parse()
            .with_context(|| format!("--commit-every expects auto or a number, got {s:?}"))?;
        if n == 0 {
            bail!("--commit-every must be >= 1");
        }
        Ok(Self::Max(n))
    }
}

/// Settings of a `raw` run.
pub struct RawConfig {
    /// Directory for the append-only file (use the same filesystem as the server's data dir).
    pub dir: PathBuf,
    /// Concurrent submitters, one batch in flight each.
    pub connections: usize,
    /// Measured window.
    pub duration: Duration,
    /// Warmup before the measured window.
    pub warmup: Duration,
    /// Commit cadence.
    pub commit_every: CommitEvery,
    /// Keep the file afterwards (it is deleted by default).
    pub keep: bool,
}

struct Commit {
    lines: Vec<u8>,
    ack: oneshot::Sender<Result<(), String>>,
}

/// One group commit as seen by the writer.
struct CommitRecord {
    done: Instant,
    batches: u32,
    bytes: u64,
    fsync_us: u32,
}

fn writer_loop(
    mut file: File,
    mut rx: mpsc::UnboundedReceiver<Commit>,
    commit_every: CommitEvery,
) -> Vec<CommitRecord> {
    let max = match commit_every {
        CommitEvery::Auto => usize::MAX,
        CommitEvery::Max(n) => n,
    };
    let mut records = Vec::new();
    let mut group: Vec<Commit> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < max {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        buf.clear();
        for c in &group {
            buf.extend_from_slice(&c.lines);
        }
        let t0 = Instant::now();
        let res = file
            .write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| e.to_string());
        let done = Instant::now();
        records.push(CommitRecord {
            done,
            batches: group.len() as u32,
            bytes: buf.len() as u64,
            fsync_us: (done - t0).as_micros().min(u128::from(u32::MAX)) as u32,
        });
        for c in group.drain(..) {
            // A submitter that went away does not care about its ack.
            let _ = c.ack.send(res.clone());
        }
    }
    records
}

/// Parses a batch body like the server does and renders one JSON line per message.
pub fn render_lines(body: &[u8]) -> Result<(Vec<u8>, u64)> {
    let v: Value = serde_json::from_slice(body).context("parsing batch body")?;
    let batch = v
        .get("batch")
        .and_then(Value::as_array)
        .context("body has no batch array")?;
    let mut out = Vec::with_capacity(body.len() + batch.len());
    for m in batch {
        serde_json::to_writer(&mut out, m).context("serializing message")?;
        out.push(b'\n');
    }
    Ok((out, batch.len() as u64))
}

async fn submitter(
    id: usize,
    bodies: BodyGen,
    tx: mpsc::UnboundedSender<Commit>,
    window: Window,
) -> Result<(Recorder, u64)> {
    let mut rec = Recorder::new(window.seconds());
    // Every acknowledged event, in the window or not (warmup, the last ack after the window).
    let mut acknowledged = 0u64;
    let mut seq = id * 7919;
    while Instant::now() < window.measure_end {
        seq += 1;
        let body = bodies.next_body(seq);
        let t0 = Instant::now();
        let (lines, events) = render_lines(&body)?;
        let (ack_tx, ack_rx) = oneshot::channel();
        tx.send(Commit { lines, ack: ack_tx })
            .map_err(|_| anyhow::anyhow!("writer thread stopped"))?;
        match ack_rx.await {
            Ok(Ok(())) => {
                let t1 = Instant::now();
                acknowledged += events;
                rec.accepted(&window, t1, t1 - t0, events, body.len() as u64);
            }
            Ok(Err(e)) => bail!("append/fsync failed: {e}"),
            Err(_) => bail!("writer thread dropped an acknowledgement"),
        }
    }
    Ok((rec, acknowledged))
}

/// Runs the raw ceiling measurement on the current runtime and returns the JSON report.
pub async fn run(cfg: RawConfig, bodies: BodyGen) -> Result<Value> {
    if cfg.connections == 0 {
        bail!("--connections must be > 0");
    }
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("creating {}", cfg.dir.display()))?;
    let path = cfg.dir.join("raw-ceiling.jsonl");
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing old {}", path.display())),
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    eprintln!(
        "raw: {} submitters, batch {} (~{:.0} B/message, {} messageIds), commit-every {:?}, warmup {:.1}s, measuring {:.1}s, file {}",
        cfg.connections,
        bodies.batch,
        bodies.avg_message_bytes,
        bodies.id_order(),
        cfg.commit_every,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
        path.display()
    );

    let (tx, rx) = mpsc::unbounded_channel::<Commit>();
    let commit_every = cfg.commit_every;
    let writer = std::thread::Builder::new()
        .name("raw-writer".into())
        .spawn(move || writer_loop(file, rx, commit_every))
        .context("spawning writer thread")?;

    let window = Window::new(cfg.warmup, cfg.duration);
    let mut set = JoinSet::new();
    for id in 0..cfg.connections {
        set.spawn(submitter(id, bodies.clone(), tx.clone(), window));
    }
    drop(tx);
    tokio::time::sleep_until(window.measure_start.into()).await;
    let cpu0 = CpuSnapshot::take(None);
    tokio::time::sleep_until(window.measure_end.into()).await;
    let cpu1 = CpuSnapshot::take(None);
    let cpu = cpu0.delta_json(&cpu1);

    let mut total = Recorder::new(window.seconds());
    let mut acknowledged_all = 0u64;
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((rec, acknowledged))) => {
                total.merge(rec);
                acknowledged_all += acknowledged;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("submitter panicked: {e}"));
            }
        }
    }
    let records = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if !cfg.keep {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }

    let in_window: Vec<&CommitRecord> = records
        .iter()
        .filter(|r| window.second(r.done).is_some())
        .collect();
    let fsyncs = in_window.len() as u64;
    let batches: u64 = in_window.iter().map(|r| u64::from(r.batches)).sum();
    let bytes_in_window: u64 = in_window.iter().map(|r| r.bytes).sum();
    let mut fsync_us: Vec<u32> = in_window.iter().map(|r| r.fsync_us).collect();
    let fl = Latency::from_us(&mut fsync_us);

    let secs = window.measured_secs();
    let lat = Latency::from_us(&mut total.latencies_us);
    let (min_s, med_s, max_s) = per_second_summary(&total.per_second, &window);
    let report = json!({
        "mode": "raw",
        "connections": cfg.connections,
        "batch": bodies.batch,
        "commit_every": match cfg.commit_every {
            CommitEvery::Auto => json!("auto"),
            CommitEvery::Max(n) => json!(n),
        },
        "dir": cfg.dir.display().to_string(),
        "avg_message_bytes": round3(bodies.avg_message_bytes),
        "message_ids": bodies.id_order(),
        "avg_body_bytes": round3(bodies.avg_body_bytes),
        "warmup_s": round3(cfg.warmup.as_secs_f64()),
        "duration_s": round3(secs),
        "requests": total.requests,
        "accepted_requests": total.ok_requests,
        "accepted_events": total.events,
        "acknowledged_events_all": acknowledged_all,
        "rejected_events": 0,
        "events_per_sec": round3(total.events as f64 / secs),
        "requests_per_sec": round3(total.ok_requests as f64 / secs),
        "mb_per_sec": round3(total.bytes as f64 / secs / 1e6),
        "per_second_events": {"min": min_s, "median": med_s, "max": max_s},
        "per_second_timeline": total.per_second,
        "latency_ms": lat.to_json(),
        "errors": {},
        "fsync": {
            "count": fsyncs,
            "per_sec": round3(fsyncs as f64 / secs),
            "avg_batches_per_fsync": round3(if fsyncs > 0 { batches as f64 / fsyncs as f64 } else { 0.0 }),
            "p50_ms": round3(fl.p50),
            "p99_ms": round3(fl.p99),
            "max_ms": round3(fl.max),
            "bytes_written": bytes_in_window,
            "file_bytes_total": file_bytes,
        },
        "cpu": cpu,
    });
    print_human("raw ceiling", &report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::GenOptions;

    #[test]
    fn commit_every_parsing() -> Result<()> {
        assert_eq!("auto".parse::<CommitEvery>()?, CommitEvery::Auto);
        assert_eq!("8".parse::<CommitEvery>()?, CommitEvery::Max(8));
        assert!("0".parse::<CommitEvery>().is_err());
        assert!("x".parse::<CommitEvery>().is_err());
        Ok(())
    }

    #[test]
    fn renders_one_line_per_message() -> Result<()> {
        let g = BodyGen::new(&GenOptions {
            batch: 10,
            pool: 20,
            templates: 2,
            seed: 1,
            sequential_ids: false,
        })?;
        let (lines, n) = render_lines(&g.next_body(0))?;
        assert_eq!(n, 10);
        let text = String::from_utf8(lines)?;
        assert_eq!(text.lines().count(), 10);
        for l in text.lines() {
            let _: Value = serde_json::from_str(l)?;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_raw_run() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("tessera-bench-test-{}", std::process::id()));
        let g = BodyGen::new(&GenOptions {
            batch: 10,
            pool: 20,
            templates: 2,
            seed: 1,
            sequential_ids: false,
        })?;
        let r = run(
            RawConfig {
                dir: dir.clone(),
                connections: 4,
                duration: Duration::from_millis(500),
                warmup: Duration::from_millis(100),
                commit_every: CommitEvery::Auto,
                keep: true,
            },
            g,
        )
        .await?;
        // How much lands inside a half-second window depends on how busy the disk is (a CI
        // machine running other tests saw one fsync outlast it), so the checks are on what
        // does not: everything acknowledged is in the file, one line per event, and the
        // window counts no more than was acknowledged in all.
        let all = r["acknowledged_events_all"].as_u64().unwrap_or(0);
        assert!(all > 0, "nothing was acknowledged: {r}");
        let text = std::fs::read_to_string(dir.join("raw-ceiling.jsonl"))?;
        assert_eq!(text.lines().count() as u64, all);
        assert_eq!(
            r["fsync"]["file_bytes_total"].as_u64(),
            Some(text.len() as u64)
        );
        assert!(r["accepted_events"].as_u64().unwrap_or(u64::MAX) <= all);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
