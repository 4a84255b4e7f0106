//! Measurement helpers: measurement window, per-worker recorders, exact latency percentiles,
//! duration parsing and CPU accounting from `/proc`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// Linux USER_HZ: the unit of the CPU times in `/proc/*/stat` (100 on every mainstream kernel).
const TICKS_PER_SEC: f64 = 100.0;

/// Parses `20s`, `1500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid duration {s:?} (examples: 20s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("invalid duration {s:?}");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// The timeline of a run: warmup from `start` to `measure_start`, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of warmup, start of the measured window.
    pub measure_start: Instant,
    /// End of the measured window; no new request is issued after it.
    pub measure_end: Instant,
}

impl Window {
    /// A window starting now.
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        let measure_start = start + warmup;
        Self {
            measure_start,
            measure_end: measure_start + duration,
        }
    }

    /// Seconds in the measured window.
    pub fn measured_secs(&self) -> f64 {
        (self.measure_end - self.measure_start).as_secs_f64()
    }

    /// Index of the whole second of the measured window containing `t`, if inside it.
    pub fn second(&self, t: Instant) -> Option<usize> {
        if t < self.measure_start || t >= self.measure_end {
            return None;
        }
        Some((t - self.measure_start).as_secs() as usize)
    }

    /// Number of (possibly partial) seconds in the measured window.
    pub fn seconds(&self) -> usize {
        (self.measure_end - self.measure_start).as_secs_f64().ceil() as usize
    }
}

/// What one worker saw inside the measured window (completion time decides).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Latency in microseconds of every accepted (2xx / acknowledged) request.
    pub latencies_us: Vec<u32>,
    /// Requests completed in the window, any outcome.
    pub requests: u64,
    /// Requests answered 2xx / acknowledged.
    pub ok_requests: u64,
    /// Events accepted (messages in accepted requests minus per-message rejections).
    pub events: u64,
    /// Messages rejected individually inside an otherwise accepted batch.
    pub rejected_events: u64,
    /// Failures by HTTP status or error kind (`io`, `timeout`, `connect`).
    pub errors: BTreeMap<String, u64>,
    /// Accepted events per whole second of the window.
    pub per_second: Vec<u64>,
    /// Request body bytes of accepted requests.
    pub bytes: u64,
    /// 503 answers that were backed off and retried.
    pub retries: u64,
}

impl Recorder {
    /// An empty recorder for a window of `seconds` seconds.
    pub fn new(seconds: usize) -> Self {
        Self {
            per_second: vec![0; seconds.max(1)],
            ..Self::default()
        }
    }

    /// Records an accepted request that completed at `done`.
    pub fn accepted(
        &mut self,
        w: &Window,
        done: Instant,
        latency: Duration,
        events: u64,
        bytes: u64,
    ) {
        let Some(sec) = w.second(done) else { return };
        self.requests += 1;
        self.ok_requests += 1;
        self.events += events;
        self.bytes += bytes;
        self.latencies_us
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        if let Some(slot) = self.per_second.get_mut(sec) {
            *slot += events;
        }
    }

    /// Records a failed request that completed at `done`.
    pub fn failed(&mut self, w: &Window, done: Instant, kind: &str) {
        if w.second(done).is_none() {
            return;
        }
        self.requests += 1;
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Adds another recorder into this one.
    pub fn merge(&mut self, o: Recorder) {
        self.latencies_us.extend(o.latencies_us);
        self.requests += o.requests;
        self.ok_requests += o.ok_requests;
        self.events += o.events;
        self.rejected_events += o.rejected_events;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if self.per_second.len() < o.per_second.len() {
            self.per_second.resize(o.per_second.len(), 0);
        }
        for (a, b) in self.per_second.iter_mut().zip(o.per_second) {
            *a += b;
        }
        self.bytes += o.bytes;
        self.retries += o.retries;
    }
}

/// Exact latency percentiles (nearest rank) in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Computes percentiles from microsecond samples (sorts them).
    pub fn from_us(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| -> f64 {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            f64::from(samples[rank - 1]) / 1000.0
        };
        let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: f64::from(samples[n - 1]) / 1000.0,
            mean: sum as f64 / n as f64 / 1000.0,
        }
    }

    /// As a JSON object (milliseconds, 3 decimals).
    pub fn to_json(self) -> Value {
        json!({
            "p50": round3(self.p50),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "p999": round3(self.p999),
            "max": round3(self.max),
            "mean": round3(self.mean),
        })
    }
}

/// Rounds to 3 decimals (for JSON output).
/// Milliseconds since the Unix epoch, on this machine's clock.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The `p`-th percentile (nearest rank) of sorted values; 0 when empty.
pub fn percentile_of(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Formats an integer with thousands separators.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Min / median / max of the per-second accepted events, ignoring a trailing partial second.
pub fn per_second_summary(per_second: &[u64], window: &Window) -> (u64, u64, u64) {
    let full = (window.measured_secs().floor() as usize).clamp(1, per_second.len().max(1));
    let mut v: Vec<u64> = per_second.iter().take(full).copied().collect();
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// CPU time (user + system ticks) of one thread or process.
#[derive(Debug, Clone)]
pub struct CpuTimes {
    /// Thread or process name (`comm`).
    pub comm: String,
    /// User-mode ticks.
    pub utime: u64,
    /// Kernel-mode ticks.
    pub stime: u64,
}

/// Reads `comm`, `utime`, `stime` from a `/proc/.../stat` file.
pub fn read_stat(path: &str) -> Result<CpuTimes> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let open = text.find('(').context("malformed stat")?;
    let close = text.rfind(')').context("malformed stat")?;
    let comm = text.get(open + 1..close).unwrap_or("?").to_owned();
    let rest: Vec<&str> = text
        .get(close + 1..)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // Fields after ')' start at field 3 (state); utime is field 14, stime field 15.
    let utime = rest.get(11).context("stat too short")?.parse()?;
    let stime = rest.get(12).context("stat too short")?.parse()?;
    Ok(CpuTimes { comm, utime, stime })
}

/// Per-thread CPU times of a process, keyed by thread id.
pub fn read_threads(pid: u32) -> Result<BTreeMap<u32, CpuTimes>> {
    let mut out = BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may exit between listing and reading: skip it.
        if let Ok(t) = read_stat(&format!("{dir}/{tid}/stat")) {
            out.insert(tid, t);
        }
    }
    Ok(out)
}

/// Aggregate CPU ticks of the whole machine from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimes {
    /// user + nice
    pub user: u64,
    /// system + irq + softirq
    pub system: u64,
    /// idle
    pub idle: u64,
    /// iowait
    pub iowait: u64,
    /// steal
    pub steal: u64,
}

/// Reads the first `cpu` line of `/proc/stat`.
pub fn read_system() -> Result<SystemTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(SystemTimes {
        user: g(0) + g(1),
        system: g(2) + g(5) + g(6),
        idle: g(3),
        iowait: g(4),
        steal: g(7),
    })
}

/// CPU snapshot at one instant: this process, optionally a server process, the machine.
pub struct CpuSnapshot {
    at: Instant,
    own: Option<CpuTimes>,
    server: Option<BTreeMap<u32, CpuTimes>>,
    system: Option<SystemTimes>,
}

impl CpuSnapshot {
    /// Takes a snapshot (errors reading `/proc` are tolerated: the figure is then omitted).
    pub fn take(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            own: read_stat("/proc/self/stat").ok(),
            server: server_pid.and_then(|p| read_threads(p).ok()),
            system: read_system().ok(),
        }
    }

    /// CPU use between two snapshots as JSON: cores used (1.0 = one core busy all the time).
    pub fn delta_json(&self, later: &CpuSnapshot) -> Value {
        let secs = (later.at - self.at).as_secs_f64().max(1e-9);
        let cores = |ticks: u64| round3(ticks as f64 / TICKS_PER_SEC / secs);
        let mut out = serde_json::Map::new();
        if let (Some(a), Some(b)) = (&self.own, &later.own) {
            out.insert(
                "bench_process".into(),
                json!({
                    "cores": cores((b.utime + b.stime).saturating_sub(a.utime + a.stime)),
                    "user_cores": cores(b.utime.saturating_sub(a.utime)),
                    "system_cores": cores(b.stime.saturating_sub(a.stime)),
                }),
            );
        }
        if let (Some(a), Some(b)) = (&self.server, &later.server) {
            let (mut user, mut system) = (0u64, 0u64);
            let mut by_name: BTreeMap<String, (u64, u64, u32)> = BTreeMap::new();
            for (tid, tb) in b {
                let (ua, sa) = a.get(tid).map_or((0, 0), |t| (t.utime, t.stime));
                let du = tb.utime.saturating_sub(ua);
                let ds = tb.stime.saturating_sub(sa);
                user += du;
                system += ds;
                let e = by_name.entry(tb.comm.clone()).or_default();
                e.0 += du;
                e.1 += ds;
                e.2 += 1;
            }
            let mut threads: Vec<(String, (u64, u64, u32))> = by_name.into_iter().collect();
            threads.sort_by_key(|y| std::cmp::Reverse(y.1.0 + y.1.1));
            let threads: Vec<Value> = threads
                .into_iter()
                .map(|(name, (u, s, n))| {
                    json!({"name": name, "threads": n, "cores": cores(u + s),
                           "user_cores": cores(u), "system_cores": cores(s)})
                })
                .collect();
            out.insert(
                "server_process".into(),
                json!({
                    "cores": cores(user + system),
                    "user_cores": cores(user),
                    "system_cores": cores(system),
                    "by_thread_name": threads,
                }),
            );
        }
        if let (Some(a), Some(b)) = (self.system, later.system) {
            let busy = (b.user + b.system).saturating_sub(a.user + a.system);
            let ours: f64 = ["bench_process", "server_process"]
                .iter()
                .filter_map(|k| out.get(*k)?.get("cores")?.as_f64())
                .sum();
            out.insert(
                "other_processes_cores".into(),
                json!(round3((busy as f64 / TICKS_PER_SEC / secs - ours).max(0.0))),
            );
            out.insert(
                "machine".into(),
                json!({
                    "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
                    "user_cores": cores(b.user.saturating_sub(a.user)),
                    "system_cores": cores(b.system.saturating_sub(a.system)),
                    "iowait_cores": cores(b.iowait.saturating_sub(a.iowait)),
                    "idle_cores": cores(b.idle.saturating_sub(a.idle)),
                    "steal_cores": cores(b.steal.saturating_sub(a.steal)),
                }),
            );
        }
        Value::Object(out)
    }
}

/// Human-readable lines for a `delta_json` value.
pub fn cpu_lines(cpu: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    if let Some(m) = cpu.get("machine") {
        lines.push(format!(
            "  machine ({} cores): user {:.2}, system {:.2}, iowait {:.2}, idle {:.2}, steal {:.2} cores",
            m.get("nproc").and_then(Value::as_u64).unwrap_or(0),
            f(m, "user_cores"),
            f(m, "system_cores"),
            f(m, "iowait_cores"),
            f(m, "idle_cores"),
            f(m, "steal_cores"),
        ));
    }
    if let Some(o) = cpu.get("other_processes_cores").and_then(Value::as_f64) {
        lines.push(format!(
            "  other processes: {o:.2} cores{}",
            if o > 0.15 {
                "  (WARNING: the machine was not idle; figures are disturbed)"
            } else {
                ""
            }
        ));
    }
    if let Some(b) = cpu.get("bench_process") {
        lines.push(format!(
            "  tessera-bench process: {:.2} cores (user {:.2}, system {:.2})",
            f(b, "cores"),
            f(b, "user_cores"),
            f(b, "system_cores")
        ));
    }
    if let Some(s) = cpu.get("server_process") {
        lines.push(format!(
            "  server process: {:.2} cores (user {:.2}, system {:.2})",
            f(s, "cores"),
            f(s, "user_cores"),
            f(s, "system_cores")
        ));
        for t in s
            .get("by_thread_name")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "    {:<16} x{:<3} {:.2} cores (user {:.2}, system {:.2})",
                t.get("name").and_then(Value::as_str).unwrap_or("?"),
                t.get("threads").and_then(Value::as_u64).unwrap_or(0),
                f(t, "cores"),
                f(t, "user_cores"),
                f(t, "system_cores"),
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() -> Result<()> {
        assert_eq!(parse_duration("20s")?, Duration::from_secs(20));
        assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
        assert_eq!(parse_duration("2m")?, Duration::from_secs(120));
        assert_eq!(parse_duration("3")?, Duration::from_secs(3));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1s").is_err());
        Ok(())
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<u32> = (1..=1000).map(|x| x * 1000).collect();
        let l = Latency::from_us(&mut v);
        assert!((l.p50 - 500.0).abs() < 1e-9);
        assert!((l.p99 - 990.0).abs() < 1e-9);
        assert!((l.max - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn thousands_sep() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn own_stat_parses() -> Result<()> {
        let s = read_stat("/proc/self/stat")?;
        assert!(!s.comm.is_empty());
        Ok(())
    }
}
