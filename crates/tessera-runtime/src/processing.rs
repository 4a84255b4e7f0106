//! The processor's background thread: applies new events to profiles as they are
//! committed, hands each chunk's changes to the audience engine (realtime
//! memberships), runs the engine's batch work between chunks, and reports its lag.
//!
//! At start it first builds the audience index from the profile store, so the index
//! and the processor's checkpoint agree before any new event is applied.
//!
//! Ingestion comes first, but only when it is really saturated: then the processor
//! applies a small chunk (250 events) every 250 ms, so on a small machine a burst is
//! acknowledged at full speed and profiles catch up after it. Saturated means
//! requests are queueing — at least [`QUEUEING_REQUESTS`] tracking requests were in
//! flight at once within the last [`QUEUEING_HOLD`] (by Little's law, arrivals × time
//! in the server: at 10,000 events/s in batches of 100 that is one or two; a closed
//! loop of 32 clients at the server's limit keeps up to 32, though right after a
//! group is acknowledged only a few, hence the peak, not a sample) — and a resource
//! ingestion needs is short: the event-log writer is busy at least 60 % of the time
//! (its inserts overlap the fsyncs, so near capacity it is busy 60–75 %, not all of
//! the time), or the CPU is (the processor's own thread waited for a CPU at least a
//! quarter of the time it wanted one, from Linux's `/proc/thread-self/schedstat`). A
//! busy CPU alone is not enough: on a 2-core host a load generator and a webhook
//! receiver at 1,000–10,000 events/s make the processor wait for a CPU too, and
//! yielding then held every event up to a quarter of a second before identity,
//! audiences and activation saw it.
//! Small and frequent rather than a full chunk a second: a full chunk holds a core for
//! ~150 ms, which the ingest threads feel as a latency spike. The lag is visible as
//! `tessera_processor_lag_events`, the yielding as `tessera_processor_yielding`, and
//! the latency from acknowledgement as `tessera_ack_latency_seconds`.

use crate::metrics::{KindLabels, Metrics, Stage};
use crate::privacy::{ActivationSide, AudienceSide, ErasureError, Privacy, run_open_erasures};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tessera_activation::Activation;
use tessera_activation::fanout::AppliedChunk;
use tessera_audience::engine::{AudienceEngine, ProfileChanges};
use tessera_identity::processor::{CHUNK_EVENTS, ChunkReport, Processor};
use tessera_store::StoredEvent;
use tessera_store::profiles::ProfileId;

/// How long the thread waits when there is nothing new.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Writer busy share (percent) from which ingestion is considered saturated.
const SATURATED_PERCENT: i64 = 60;
/// While ingestion is saturated, one small chunk per this interval.
const SATURATED_INTERVAL: Duration = Duration::from_millis(250);
/// Events per chunk while ingestion is saturated.
const SATURATED_CHUNK_EVENTS: usize = 250;
/// Share of the time the processor's thread wanted a CPU and waited for one, from
/// which the CPU counts as short while ingestion is queueing.
const SATURATED_CPU_WAIT: f64 = 0.25;
/// Tracking requests in flight at once from which ingestion counts as queueing.
pub const QUEUEING_REQUESTS: i64 = 16;
/// Ingestion counts as queueing this long after requests last queued (samples come
/// every 20 ms while resting, after every chunk otherwise): long enough not to flap
/// between two groups of a saturating load, far shorter than a burst.
pub const QUEUEING_HOLD: Duration = Duration::from_millis(500);
/// The audience engine's batch work (definitions changed, schedules) runs this often.
const TICK_INTERVAL: Duration = Duration::from_millis(200);
/// Queued privacy requests (from the CLI) are looked for this often.
const PRIVACY_INTERVAL: Duration = Duration::from_secs(1);
/// The audience index's size gauges are refreshed this often.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// The running processor thread.
pub struct ProcessorThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProcessorThread {
    /// Starts applying events in the background.
    pub fn start(
        processor: Arc<Processor>,
        audiences: Arc<AudienceEngine>,
        metrics: Arc<Metrics>,
        privacy: Arc<Privacy>,
        activation: Arc<Activation>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || {
                load_audiences(&audiences, &metrics, &flag);
                let mut failures = 0u32;
                let mut last_tick = std::time::Instant::now() - TICK_INTERVAL;
                let mut last_gauges = std::time::Instant::now() - GAUGE_INTERVAL;
                let mut last_privacy = std::time::Instant::now();
                let mut saturation = Saturation::default();
                while !flag.load(Ordering::SeqCst) {
                    let started = std::time::Instant::now();
                    let chunk = if saturation.update(&metrics, true) {
                        SATURATED_CHUNK_EVENTS
                    } else {
                        CHUNK_EVENTS
                    };
                    match processor.run_chunk_reporting(chunk) {
                        Ok(report) => {
                            failures = 0;
                            metrics.processor_events.inc_by(report.applied as u64);
                            if report.applied > 0 {
                                // The fan-out takes the events with their profiles
                                // from here instead of reading them back (and wakes).
                                activation.hand_applied(applied_chunk(&report));
                            }
                            let applied_at = chrono::Utc::now().timestamp_millis();
                            let acked = acknowledged(&metrics, &report.events, applied_at);
                            if !realtime_measured(
                                &audiences,
                                &metrics,
                                report.events,
                                report.merges,
                                &acked,
                            ) {
                                // The index may have missed the chunk: rebuild it from
                                // the store (which has it) and reconcile on the next tick.
                                load_audiences(&audiences, &metrics, &flag);
                            }
                            if let Ok(lag) = processor.lag() {
                                metrics.processor_lag.set(lag);
                            }
                            if last_tick.elapsed() >= TICK_INTERVAL {
                                last_tick = std::time::Instant::now();
                                tick(&audiences, &metrics);
                            }
                            if last_gauges.elapsed() >= GAUGE_INTERVAL {
                                last_gauges = std::time::Instant::now();
                                index_gauges(&audiences, &metrics);
                            }
                            if privacy.take_wake() || last_privacy.elapsed() >= PRIVACY_INTERVAL {
                                last_privacy = std::time::Instant::now();
                                erasures(
                                    &processor,
                                    &audiences,
                                    &metrics,
                                    &privacy,
                                    &activation,
                                    &flag,
                                );
                            }
                            if report.applied == 0 {
                                std::thread::sleep(IDLE_WAIT);
                            }
                            // Rest while ingestion is saturated, checking often enough
                            // to resume at full speed as soon as it is not.
                            while !flag.load(Ordering::SeqCst)
                                && saturation.update(&metrics, false)
                                && started.elapsed() < SATURATED_INTERVAL
                            {
                                std::thread::sleep(IDLE_WAIT);
                            }
                        }
                        Err(error) => {
                            // Nothing was applied (the chunk's transaction rolled back);
                            // retry with backoff rather than skip events.
                            failures += 1;
                            tracing::error!(%error, failures, "processor chunk failed; retrying");
                            std::thread::sleep(IDLE_WAIT * failures.min(50));
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops after the current chunk and joins the thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("processor thread panicked");
        }
    }
}

/// A chunk's events in log order with their profiles, as the processor hands them to
/// the fan-out ([`Activation::hand_applied`]).
pub fn applied_chunk(report: &ChunkReport) -> AppliedChunk {
    let mut events: Vec<(StoredEvent, Option<ProfileId>)> = report
        .events
        .iter()
        .map(|(owner, event)| (event.clone(), Some(*owner)))
        .chain(
            report
                .unattributed
                .iter()
                .map(|event| (event.clone(), None)),
        )
        .collect();
    events.sort_unstable_by_key(|(event, _)| event.seq);
    AppliedChunk {
        after_seq: report.after_seq,
        through_seq: report.through_seq,
        events,
        merges: report.merges.clone(),
    }
}

/// Carries out queued erasures; a failed one stays open and is retried.
fn erasures(
    processor: &Processor,
    audiences: &AudienceEngine,
    metrics: &Metrics,
    privacy: &Privacy,
    activation: &Activation,
    stop: &AtomicBool,
) {
    // Everything stored before the erasure is attributed first, with the audience
    // index following as usual.
    let mut catch_up = |fence: i64| -> Result<(), ErasureError> {
        // Up to what was stored when the identifiers were suppressed: under steady
        // ingestion "until nothing is left" would never end.
        while processor.profiles().checkpoint()? < fence {
            let report = processor
                .run_chunk_reporting(CHUNK_EVENTS)
                .map_err(ErasureError::from)?;
            if report.applied == 0 {
                return Ok(());
            }
            metrics.processor_events.inc_by(report.applied as u64);
            if !realtime(audiences, metrics, report.events, report.merges) {
                load_audiences(audiences, metrics, stop);
            }
        }
        Ok(())
    };
    if let Err(error) = run_open_erasures(
        processor,
        privacy,
        &AudienceSide::Engine(audiences),
        Some(&ActivationSide {
            store: activation.store(),
            pause: Some(activation.round_lock()),
            forget_handed: Some(&|| activation.forget_applied()),
        }),
        &mut catch_up,
    ) {
        tracing::error!(%error, "erasure failed; it stays open and is retried");
    }
}

/// Builds the audience index, retrying until it works or Tessera stops.
fn load_audiences(audiences: &AudienceEngine, metrics: &Metrics, stop: &AtomicBool) {
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    while !stop.load(Ordering::SeqCst) {
        match audiences.load(&mut |done, total| {
            if done % 500_000 < 10_000 {
                tracing::info!(done, total, "loading events into the audience index");
            }
        }) {
            Ok(()) => {
                let memory = audiences.memory();
                metrics.audience_index_events.set(memory.events as i64);
                tracing::info!(
                    profiles = memory.profiles,
                    events = memory.events,
                    seconds = started.elapsed().as_secs_f64(),
                    "audience index ready"
                );
                return;
            }
            Err(error) => {
                attempt += 1;
                metrics.audience_errors.inc();
                tracing::error!(%error, attempt, "building the audience index failed; retrying");
                std::thread::sleep(IDLE_WAIT * attempt.min(50));
            }
        }
    }
}

fn count_changes(metrics: &Metrics, changes: &[tessera_store::audiences::MembershipChange]) {
    for change in changes {
        let kind = if change.entered { "entered" } else { "exited" };
        metrics
            .audience_changes
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }
}

/// Folds a chunk into the audience engine; `false` when that failed.
fn realtime(
    audiences: &AudienceEngine,
    metrics: &Metrics,
    events: Vec<(i64, tessera_store::StoredEvent)>,
    merges: Vec<(i64, i64)>,
) -> bool {
    realtime_measured(audiences, metrics, events, merges, &[])
}

/// [`realtime`], observing each membership change's latency from the acknowledgement
/// of the newest event of its profile in the chunk (`acked`: profile and
/// acknowledgement time, see [`acknowledged`]).
fn realtime_measured(
    audiences: &AudienceEngine,
    metrics: &Metrics,
    events: Vec<(i64, tessera_store::StoredEvent)>,
    merges: Vec<(i64, i64)>,
    acked: &[(i64, i64)],
) -> bool {
    if events.is_empty() && merges.is_empty() {
        return true;
    }
    let started = std::time::Instant::now();
    let ok = match audiences.apply(&ProfileChanges { events, merges }) {
        Ok(changes) => {
            count_changes(metrics, &changes);
            if !changes.is_empty() && !acked.is_empty() {
                let now = chrono::Utc::now().timestamp_millis();
                // Later events of a profile come later in the chunk: the newest wins.
                let newest: HashMap<i64, i64> = acked.iter().copied().collect();
                metrics.observe_stage_many(
                    Stage::Audience,
                    changes
                        .iter()
                        .filter_map(|change| newest.get(&change.profile_id))
                        .map(|&at| seconds_between(at, now)),
                );
            }
            true
        }
        Err(error) => {
            metrics.audience_errors.inc();
            tracing::error!(%error, "realtime audience update failed; rebuilding the audience index");
            false
        }
    };
    metrics
        .audience_realtime_seconds
        .observe(started.elapsed().as_secs_f64());
    ok
}

/// Observes how long after its acknowledgement each event of a chunk was applied
/// (`applied_at`, Unix ms); returns the profile and acknowledgement time of those
/// whose acknowledgement is known, in chunk order.
fn acknowledged(
    metrics: &Metrics,
    events: &[(i64, tessera_store::StoredEvent)],
    applied_at: i64,
) -> Vec<(i64, i64)> {
    let times = metrics
        .acks
        .times(events.iter().map(|(_, event)| event.seq));
    let acked: Vec<(i64, i64)> = events
        .iter()
        .zip(times)
        .filter_map(|((profile, _), at)| Some((*profile, at?)))
        .collect();
    metrics.observe_stage_many(
        Stage::Applied,
        acked.iter().map(|&(_, at)| seconds_between(at, applied_at)),
    );
    acked
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1_000.0
}

fn tick(audiences: &AudienceEngine, metrics: &Metrics) {
    match audiences.tick() {
        Ok(report) => {
            for (kind, n) in [("entered", report.entered), ("exited", report.exited)] {
                metrics
                    .audience_changes
                    .get_or_create(&KindLabels { kind: kind.into() })
                    .inc_by(n);
            }
        }
        Err(error) => {
            metrics.audience_errors.inc();
            tracing::error!(%error, "audience batch work failed; retrying on the next tick");
        }
    }
}

/// The index's size gauges (walking the index costs milliseconds: not every tick).
fn index_gauges(audiences: &AudienceEngine, metrics: &Metrics) {
    let memory = audiences.memory();
    metrics.audience_index_events.set(memory.events as i64);
    metrics.audience_index_bytes.set(
        (memory.event_bytes
            + memory.property_set_bytes
            + memory.symbol_bytes
            + memory.profile_bytes) as i64,
    );
}

/// Whether ingestion is saturated (see the module doc), from samples the processor
/// thread takes between chunks.
#[derive(Default)]
struct Saturation {
    cpu_wait: CpuWait,
    cpu_short: bool,
    /// When at least [`QUEUEING_REQUESTS`] were last seen in flight at once.
    last_queueing: Option<std::time::Instant>,
}

impl Saturation {
    /// Takes a sample; `true` while the processor should yield to ingestion. Sets
    /// `tessera_processor_yielding`. `after_work`: the thread applied a chunk since
    /// the last call, so its CPU wait says something; while it rests, the little it
    /// runs is favoured by the scheduler (a waking sleeper) and would read as a free
    /// CPU.
    fn update(&mut self, metrics: &Metrics, after_work: bool) -> bool {
        if after_work && let Some(share) = self.cpu_wait.sample() {
            self.cpu_short = share >= SATURATED_CPU_WAIT;
        }
        if metrics.take_in_flight_peak() >= QUEUEING_REQUESTS {
            self.last_queueing = Some(std::time::Instant::now());
        }
        let queueing = self
            .last_queueing
            .is_some_and(|at| at.elapsed() < QUEUEING_HOLD);
        let yielding = yields(
            metrics.ingest_active(),
            queueing,
            metrics.ingest_writer_busy_percent.get(),
            self.cpu_short,
        );
        metrics.processor_yielding.set(i64::from(yielding));
        yielding
    }
}

/// The rule of the module doc: ingestion active and queueing, and the writer or the
/// CPU short.
fn yields(active: bool, queueing: bool, writer_busy_percent: i64, cpu_short: bool) -> bool {
    active && queueing && (writer_busy_percent >= SATURATED_PERCENT || cpu_short)
}

/// How much of the time the calling thread wanted a CPU and waited for one, from
/// Linux's per-thread scheduler statistics. Elsewhere it reports nothing, and only
/// the writer's busy share counts.
#[derive(Default)]
struct CpuWait {
    last: Option<SchedStat>,
}

/// Nanoseconds a thread ran and waited on a run queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SchedStat {
    ran_ns: u64,
    waited_ns: u64,
}

impl SchedStat {
    /// Parses `/proc/thread-self/schedstat`: "<ran ns> <waited ns> <timeslices>".
    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
        Some(Self {
            ran_ns: fields.next()?.ok()?,
            waited_ns: fields.next()?.ok()?,
        })
    }

    /// The share of the time between `earlier` and `self` that the thread waited,
    /// out of the time it wanted a CPU; `None` when it wanted one for under 1 ms
    /// (too little to tell).
    fn wait_share_since(self, earlier: Self) -> Option<f64> {
        let ran = self.ran_ns.saturating_sub(earlier.ran_ns);
        let waited = self.waited_ns.saturating_sub(earlier.waited_ns);
        let wanted = ran + waited;
        (wanted >= 1_000_000).then(|| waited as f64 / wanted as f64)
    }
}

impl CpuWait {
    /// The share since the last sample that gave one (see `wait_share_since`).
    fn sample(&mut self) -> Option<f64> {
        let now = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|text| SchedStat::parse(&text))?;
        let Some(last) = self.last else {
            self.last = Some(now);
            return None;
        };
        let share = now.wait_share_since(last)?;
        self.last = Some(now);
        Some(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_wait_is_the_share_of_wanted_time_spent_waiting() {
        let earlier = SchedStat::parse("1000000000 500000000 40\n");
        assert_eq!(
            earlier,
            Some(SchedStat {
                ran_ns: 1_000_000_000,
                waited_ns: 500_000_000
            })
        );
        let later = SchedStat::parse("1003000000 501000000 44").unwrap_or(SchedStat {
            ran_ns: 0,
            waited_ns: 0,
        });
        let share = earlier.and_then(|e| later.wait_share_since(e));
        assert_eq!(share, Some(0.25));
        // Under 1 ms of wanted time says nothing; nor does a line that is not schedstat.
        assert_eq!(later.wait_share_since(later), None);
        assert_eq!(SchedStat::parse("n/a"), None);
        assert_eq!(SchedStat::parse("12"), None);
    }

    #[test]
    fn yields_only_while_requests_queue_and_the_writer_or_the_cpu_is_short() {
        // A busy host at moderate load: the CPU is short, but requests do not queue.
        assert!(!yields(true, false, 10, true));
        // A queue without a short resource (a slow disk): applying costs ingest nothing.
        assert!(!yields(true, true, 20, false));
        // Saturated: queueing, and the writer or the CPU short.
        assert!(yields(true, true, 20, true));
        assert!(yields(true, true, 60, false));
        // Nothing committed lately: never.
        assert!(!yields(false, true, 90, true));
    }

    /// Marks `n` requests in flight at once, as the tracking handler does.
    fn in_flight_peak(metrics: &Metrics, n: i64) {
        for _ in 0..n {
            metrics.request_started();
        }
        for _ in 0..n {
            metrics.request_finished();
        }
    }

    #[test]
    fn saturation_follows_the_peak_of_requests_in_flight() {
        let metrics = Metrics::new();
        metrics.ingest_writer_busy_percent.set(80);
        metrics
            .last_commit_unix_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        let mut saturation = Saturation::default();
        // A few at once: a moderate load.
        in_flight_peak(&metrics, 3);
        assert!(!saturation.update(&metrics, true));
        assert_eq!(metrics.processor_yielding.get(), 0);
        // Thirty-two at once, even if only for a moment between two samples.
        in_flight_peak(&metrics, 32);
        assert_eq!(metrics.ingest_in_flight.get(), 0);
        assert!(saturation.update(&metrics, true));
        assert_eq!(metrics.processor_yielding.get(), 1);
        // Held for a while without a new peak, then released.
        assert!(saturation.update(&metrics, false));
        std::thread::sleep(QUEUEING_HOLD);
        assert!(!saturation.update(&metrics, false));
        assert_eq!(metrics.processor_yielding.get(), 0);
    }

    #[test]
    fn cpu_wait_samples_this_thread_on_linux() {
        let mut wait = CpuWait::default();
        assert_eq!(wait.sample(), None, "the first sample only sets the start");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(20) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        if cfg!(target_os = "linux") {
            let share = wait.sample();
            assert!(share.is_some_and(|s| (0.0..=1.0).contains(&s)), "{share:?}");
        }
    }
}
