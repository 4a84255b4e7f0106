//! The processor's background thread: applies new events to profiles as they are
//! committed, hands each chunk's changes to the audience engine (realtime
//! memberships), runs the engine's batch work between chunks, and reports its lag.
//!
//! At start it first builds the audience index from the profile store, so the index
//! and the processor's checkpoint agree before any new event is applied.
//!
//! Ingestion comes first: while the event-log writer is saturated (busy at least
//! 60 % of the time: its inserts overlap the fsyncs, so near capacity it is busy
//! 60–75 % of the time, not all of it), the processor applies only a small chunk (250 events) every
//! 250 ms, so on a small machine a burst is acknowledged at full speed and profiles
//! catch up after it. Small and frequent rather than a full chunk a second: a full
//! chunk holds a core for ~150 ms, which the ingest threads feel as a latency spike.
//! The lag is visible as `tessera_processor_lag_events`.

use crate::metrics::{KindLabels, Metrics};
use crate::privacy::{ActivationSide, AudienceSide, ErasureError, Privacy, run_open_erasures};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tessera_activation::Activation;
use tessera_audience::engine::{AudienceEngine, ProfileChanges};
use tessera_identity::processor::{CHUNK_EVENTS, Processor};

/// How long the thread waits when there is nothing new.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Writer busy share (percent) from which ingestion is considered saturated.
const SATURATED_PERCENT: i64 = 60;
/// While ingestion is saturated, one small chunk per this interval.
const SATURATED_INTERVAL: Duration = Duration::from_millis(250);
/// Events per chunk while ingestion is saturated.
const SATURATED_CHUNK_EVENTS: usize = 250;
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
                while !flag.load(Ordering::SeqCst) {
                    let started = std::time::Instant::now();
                    let chunk = if metrics.ingest_saturated(SATURATED_PERCENT) {
                        SATURATED_CHUNK_EVENTS
                    } else {
                        CHUNK_EVENTS
                    };
                    match processor.run_chunk_reporting(chunk) {
                        Ok(report) => {
                            failures = 0;
                            metrics.processor_events.inc_by(report.applied as u64);
                            if report.applied > 0 {
                                activation.wake_fanout();
                            }
                            if !realtime(&audiences, &metrics, report.events, report.merges) {
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
                                && metrics.ingest_saturated(SATURATED_PERCENT)
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
    if events.is_empty() && merges.is_empty() {
        return true;
    }
    let started = std::time::Instant::now();
    let ok = match audiences.apply(&ProfileChanges { events, merges }) {
        Ok(changes) => {
            count_changes(metrics, &changes);
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
