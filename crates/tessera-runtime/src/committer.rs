//! Group commit: many concurrent requests share one durable commit.
//!
//! Request handlers hand their [`AppendBatch`] to a bounded queue and await the answer.
//! One writer thread takes everything waiting and appends it in a single transaction;
//! a sync thread fsyncs and then answers every request of the groups committed before
//! that fsync. While one group is fsynced the writer already inserts the next, and
//! while it fsyncs the next groups gather, so durability costs one fsync per group
//! (or fewer), not per request, and the fsync and the inserts overlap.
//!
//! The queue is bounded: when it is full the handler gets [`SubmitError::Overloaded`]
//! at once (answered 503 with `Retry-After`) instead of growing memory without end.
//! A third thread checkpoints the write-ahead log in the background.
//!
//! Storage failures stop acknowledgements, in two ways:
//! - a **failed commit** (a full disk, a write error) acknowledges nothing of its
//!   group and makes the log *degraded* ([`StorageHealth`]): requests get
//!   [`SubmitError::StorageUnavailable`] (503 with `Retry-After`) and `/healthz`
//!   answers 503 until a write succeeds again — the next commit, or the probe the
//!   checkpoint thread writes every second while degraded. SQLite rolled the
//!   failed transaction back and nothing of it was acknowledged, so retrying is safe.
//! - a **failed fsync** is final for the process ([`SubmitError::LogFailed`]): after
//!   one, the kernel may have dropped the dirty pages and a later fsync would succeed
//!   without them, so only a restart, which reads the log back from the disk, is safe.

use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tessera_store::{AppendBatch, AppendOutcome, EventLog, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Tuning of the ingest pipeline.
#[derive(Debug, Clone, Copy)]
pub struct CommitterConfig {
    /// Requests that may wait for the writer before new ones get 503.
    pub queue_capacity: usize,
    /// A group stops gathering at this many events (bounds one transaction).
    pub max_events_per_commit: usize,
    /// How often the write-ahead log is checkpointed into the main file. Often,
    /// so that each checkpoint writes little: the commit's fsync shares the disk
    /// with the checkpoint's writes, and 20 ms of appends (a few MB) delay it far
    /// less than 100 ms of them did (docs/BENCHMARKS.md, ingest tail latency).
    pub checkpoint_interval: Duration,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            max_events_per_commit: 20_000,
            checkpoint_interval: Duration::from_millis(20),
        }
    }
}

/// Why a batch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full; the client should retry shortly.
    #[error("the ingest queue is full: retry after the Retry-After seconds")]
    Overloaded,
    /// The server is shutting down and takes no more writes.
    #[error("the server is shutting down: retry shortly")]
    ShuttingDown,
    /// An fsync of the event log failed; nothing more is stored until a restart.
    #[error(
        "an fsync of the event log failed: this server stores nothing more until it is restarted; retry later"
    )]
    LogFailed,
    /// The commit failed (a full disk, a write error): nothing of the batch was
    /// stored or acknowledged; a retry may succeed once the storage takes writes.
    #[error("the event log could not be written: {0}")]
    StorageUnavailable(StoreError),
}

/// Why the event log is degraded: its last write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// `disk_full` or `write_failed`.
    pub reason: &'static str,
    /// The engine's error, for the operator.
    pub detail: String,
    /// When the first failure of this spell happened (Unix ms).
    pub since_ms: i64,
}

/// Whether the event log currently takes writes (see the module doc).
#[derive(Debug, Default)]
pub struct StorageHealth {
    degraded: AtomicBool,
    state: Mutex<Option<Degraded>>,
}

impl StorageHealth {
    /// Why writes fail now, or `None` when the last write succeeded.
    pub fn degraded(&self) -> Option<Degraded> {
        if !self.degraded.load(Ordering::SeqCst) {
            return None;
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    fn write_failed(&self, error: &StoreError, metrics: &Metrics) {
        let detail = error.to_string();
        let reason = if detail.contains("disk is full") || detail.contains("No space left") {
            "disk_full"
        } else {
            "write_failed"
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.is_none() {
            tracing::error!(%error, reason, "the event log cannot be written: ingest answers 503 until it can");
        }
        let since_ms = state
            .as_ref()
            .map_or_else(|| chrono::Utc::now().timestamp_millis(), |d| d.since_ms);
        *state = Some(Degraded {
            reason,
            detail,
            since_ms,
        });
        self.degraded.store(true, Ordering::SeqCst);
        metrics.event_log_degraded.set(1);
    }

    fn write_succeeded(&self, metrics: &Metrics) {
        if !self.degraded.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(degraded) = state.take() {
            tracing::warn!(
                reason = degraded.reason,
                seconds = (chrono::Utc::now().timestamp_millis() - degraded.since_ms) / 1000,
                "the event log takes writes again: ingest resumed"
            );
        }
        metrics.event_log_degraded.set(0);
    }
}

impl tessera_core::CodedError for SubmitError {
    /// Overload and shutdown are the client's to retry (503 with `Retry-After`); a
    /// store failure is internal.
    fn code(&self) -> tessera_core::ErrorCode {
        use tessera_core::ErrorCode;
        match self {
            SubmitError::Overloaded => ErrorCode::Overloaded,
            SubmitError::ShuttingDown => ErrorCode::ShuttingDown,
            SubmitError::LogFailed => ErrorCode::EventLogFailed,
            SubmitError::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
        }
    }

    /// The detail of a failed write is for the log (it is logged where the commit
    /// failed); the client learns what to do.
    fn user_message(&self) -> String {
        match self {
            SubmitError::StorageUnavailable(_) => "the event log cannot be written now (the disk holding the data directory is full or failing): nothing of this request was stored; retry after the Retry-After seconds".into(),
            other => other.to_string(),
        }
    }
}

/// Groups the writer committed that wait for a sync before at most this many are
/// queued; then the writer waits too (and the request queue fills: backpressure).
const UNSYNCED_GROUPS: usize = 64;

/// A committed group's answers, sent once the sync after its commit returned.
struct Committed {
    replies: Vec<Reply>,
    outcomes: Vec<AppendOutcome>,
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

enum Job {
    Append { batch: AppendBatch, reply: Reply },
    Shutdown,
}

/// The handle request handlers submit batches through.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    health: Arc<StorageHealth>,
}

/// Owns the writer and checkpoint threads; [`CommitterThreads::shutdown`] drains and joins them.
pub struct CommitterThreads {
    queue: mpsc::Sender<Job>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    stop_checkpointer: Arc<AtomicBool>,
    log: Arc<dyn EventLog>,
}

impl Committer {
    /// Starts the writer and checkpoint threads over `log`.
    pub fn start(
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        config: CommitterConfig,
    ) -> std::io::Result<(Committer, CommitterThreads)> {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        if let Ok(bytes) = log.size_bytes() {
            metrics
                .event_log_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(seq) = log.durable_seq() {
            // What is durable already was acknowledged before this process: latency is
            // measured from the first fsync on.
            metrics
                .acks
                .record(seq, chrono::Utc::now().timestamp_millis());
        }
        let (committed, to_sync) = std::sync::mpsc::sync_channel(UNSYNCED_GROUPS);
        let health = Arc::new(StorageHealth::default());
        let writer = {
            let log = Arc::clone(&log);
            let metrics = Arc::clone(&metrics);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("event-log-writer".into())
                .spawn(move || {
                    run_writer(
                        log.as_ref(),
                        &metrics,
                        &health,
                        receiver,
                        &committed,
                        config,
                    )
                })?
        };
        let syncer = {
            let log = Arc::clone(&log);
            let metrics = Arc::clone(&metrics);
            std::thread::Builder::new()
                .name("event-log-sync".into())
                .spawn(move || run_syncer(log.as_ref(), &metrics, &to_sync))?
        };
        let stop_checkpointer = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let log = Arc::clone(&log);
            let metrics = Arc::clone(&metrics);
            let stop = Arc::clone(&stop_checkpointer);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("event-log-checkpoint".into())
                .spawn(move || run_checkpointer(log.as_ref(), &metrics, &health, &stop, config))?
        };
        Ok((
            Committer {
                queue: queue.clone(),
                metrics,
                health,
            },
            CommitterThreads {
                queue,
                writer: Some(writer),
                syncer: Some(syncer),
                checkpointer: Some(checkpointer),
                stop_checkpointer,
                log,
            },
        ))
    }

    /// Appends a batch durably; returns once it is committed.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, SubmitError> {
        if self.log_failed() {
            return Err(SubmitError::LogFailed);
        }
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job::Append { batch, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SubmitError::ShuttingDown),
        }
        self.metrics.ingest_queue_depth.set(self.queue_depth());
        match answer.await {
            Ok(Err(_)) if self.log_failed() => Err(SubmitError::LogFailed),
            Ok(Err(error)) => Err(SubmitError::StorageUnavailable(error)),
            Ok(Ok(outcome)) => Ok(outcome),
            // The writer stopped without answering: it was shut down mid-queue.
            Err(_) => Err(SubmitError::ShuttingDown),
        }
    }

    /// Whether an fsync of the event log failed (then nothing more is stored).
    pub fn log_failed(&self) -> bool {
        self.metrics.event_log_failed.get() != 0
    }

    /// Why the event log's writes fail now (a full disk), or `None`.
    pub fn degraded(&self) -> Option<Degraded> {
        self.health.degraded()
    }

    fn queue_depth(&self) -> i64 {
        (self.queue.max_capacity() - self.queue.capacity()) as i64
    }
}

impl CommitterThreads {
    /// Stops taking new batches, commits everything already queued, checkpoints, and
    /// joins both threads. Call after the HTTP server has finished its requests.
    pub fn shutdown(mut self) {
        // The writer closes the queue when it reads this, then drains what is left.
        // `send` waits for room, so the marker cannot be lost to a full queue.
        if self.queue.blocking_send(Job::Shutdown).is_err() {
            tracing::debug!("writer already stopped");
        }
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("event-log writer thread panicked");
        }
        // The writer's end of the sync queue is gone: the syncer answers what is left.
        if let Some(syncer) = self.syncer.take()
            && syncer.join().is_err()
        {
            tracing::error!("event-log sync thread panicked");
        }
        self.stop_checkpointer.store(true, Ordering::SeqCst);
        if let Some(checkpointer) = self.checkpointer.take()
            && checkpointer.join().is_err()
        {
            tracing::error!("checkpoint thread panicked");
        }
        if let Err(error) = self.log.checkpoint() {
            tracing::warn!(%error, "final checkpoint failed; the WAL will be replayed on start");
        }
    }
}

fn run_writer(
    log: &dyn EventLog,
    metrics: &Metrics,
    health: &StorageHealth,
    mut receiver: mpsc::Receiver<Job>,
    committed: &std::sync::mpsc::SyncSender<Committed>,
    config: CommitterConfig,
) {
    let mut batches = Vec::new();
    let mut replies = Vec::new();
    let mut busy = BusyMeter::default();
    while let Some(job) = receiver.blocking_recv() {
        busy.idle_until_now();
        let mut pending = Some(job);
        let mut events = 0;
        // Gather the group: everything already waiting, up to the size cap.
        while let Some(job) = pending.take() {
            match job {
                Job::Append { batch, reply } => {
                    events += batch.events.len();
                    batches.push(batch);
                    replies.push(reply);
                }
                Job::Shutdown => receiver.close(),
            }
            if events < config.max_events_per_commit {
                pending = receiver.try_recv().ok();
            }
        }
        metrics
            .ingest_queue_depth
            .set((receiver.max_capacity() - receiver.capacity()) as i64);
        if batches.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = log.append_unsynced(&batches);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics
            .ingest_writer_busy_percent
            .set(busy.busy_until_now());
        metrics.last_commit_unix_ms.store(
            chrono::Utc::now().timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        metrics.commit_events.observe(events as f64);
        match result {
            Ok(outcomes) => {
                health.write_succeeded(metrics);
                let group = Committed {
                    replies: std::mem::take(&mut replies),
                    outcomes,
                };
                if let Err(std::sync::mpsc::SendError(group)) = committed.send(group) {
                    // Only if the sync thread died: nothing can be acknowledged.
                    for reply in group.replies {
                        let _ = reply.send(Err(StoreError::Engine(
                            "the event-log sync thread stopped".into(),
                        )));
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, batches = batches.len(), "event-log commit failed");
                if !log_failed(metrics) {
                    health.write_failed(&error, metrics);
                }
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(StoreError::Engine(error.to_string())));
                }
            }
        }
        replies.clear();
        batches.clear();
    }
}

/// Answers committed groups after an fsync that covers them: takes every group waiting,
/// syncs once, answers them all.
fn run_syncer(
    log: &dyn EventLog,
    metrics: &Metrics,
    committed: &std::sync::mpsc::Receiver<Committed>,
) {
    let mut groups = Vec::new();
    while let Ok(first) = committed.recv() {
        groups.push(first);
        groups.extend(committed.try_iter());
        let started = Instant::now();
        let result = log.sync();
        metrics
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok()
            && let Some(seq) = log.durable_seq()
        {
            // Before the answers: a reader may see the events as soon as they are sent.
            metrics
                .acks
                .record(seq, chrono::Utc::now().timestamp_millis());
        }
        if let Err(error) = &result {
            // Fail-stop: the log refuses everything from now on (see `EventLog::sync`).
            metrics.event_log_failed.set(1);
            tracing::error!(
                %error,
                groups = groups.len(),
                "event-log fsync failed: nothing more is stored; restart Tessera, which recovers the log from disk"
            );
        }
        for group in groups.drain(..) {
            for (reply, outcome) in group.replies.into_iter().zip(group.outcomes) {
                // A dropped receiver means the client went away; the data is stored.
                let _ = reply.send(match &result {
                    Ok(()) => Ok(outcome),
                    Err(error) => Err(StoreError::Engine(error.to_string())),
                });
            }
        }
    }
}

fn log_failed(metrics: &Metrics) -> bool {
    metrics.event_log_failed.get() != 0
}

/// Exponentially weighted share of time spent committing (about a one-second memory).
struct BusyMeter {
    since: Instant,
    share: f64,
}

impl Default for BusyMeter {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            share: 0.0,
        }
    }
}

impl BusyMeter {
    fn account(&mut self, busy: bool) {
        let elapsed = self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        let weight = (elapsed / 1.0).min(1.0);
        let sample = if busy { 1.0 } else { 0.0 };
        self.share += (sample - self.share) * weight;
    }

    /// The writer waited for work until now.
    fn idle_until_now(&mut self) {
        self.account(false);
    }

    /// The writer committed until now; returns the busy share in percent.
    fn busy_until_now(&mut self) -> i64 {
        self.account(true);
        (self.share * 100.0).round() as i64
    }
}

/// While the log is degraded, how often the checkpoint thread probes whether it
/// takes writes again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

fn run_checkpointer(
    log: &dyn EventLog,
    metrics: &Metrics,
    health: &StorageHealth,
    stop: &AtomicBool,
    config: CommitterConfig,
) {
    let tick = config.checkpoint_interval.min(Duration::from_millis(20));
    let mut since_checkpoint = Duration::ZERO;
    let mut last_probe = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        // A node taken out of a load balancer for its 503s gets no request that
        // could find the disk writable again: this probe does.
        if health.is_degraded() && !log_failed(metrics) && last_probe.elapsed() >= PROBE_INTERVAL {
            last_probe = Instant::now();
            if log.probe_write().is_ok() {
                health.write_succeeded(metrics);
            }
        }
        since_checkpoint += tick;
        if since_checkpoint < config.checkpoint_interval {
            continue;
        }
        since_checkpoint = Duration::ZERO;
        if let Err(error) = log.checkpoint() {
            tracing::warn!(%error, "background checkpoint failed");
        }
        if let Ok(bytes) = log.size_bytes() {
            metrics
                .event_log_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tessera_store::{
        EventFilter, EventRecord, RewrittenEvent, StoreResult, StoredEvent, StoredRejection,
    };

    /// An event log that records the order of commits and syncs; `fail_sync` makes
    /// every sync fail.
    #[derive(Default)]
    struct RecordingLog {
        steps: Mutex<Vec<String>>,
        fail_sync: bool,
        /// Commits (and write probes) fail as on a full disk while set.
        disk_full: AtomicBool,
    }

    impl RecordingLog {
        fn step(&self, what: String) {
            self.steps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }

        fn steps(&self) -> Vec<String> {
            self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    impl EventLog for RecordingLog {
        fn append(&self, batches: &[AppendBatch]) -> StoreResult<Vec<AppendOutcome>> {
            let outcomes = self.append_unsynced(batches)?;
            self.sync()?;
            Ok(outcomes)
        }

        fn append_unsynced(&self, batches: &[AppendBatch]) -> StoreResult<Vec<AppendOutcome>> {
            if self.disk_full.load(Ordering::SeqCst) {
                return Err(StoreError::Engine("database or disk is full".into()));
            }
            self.step(format!("commit {}", batches.len()));
            Ok(batches
                .iter()
                .map(|b| AppendOutcome {
                    appended: b.events.len(),
                    duplicates: 0,
                })
                .collect())
        }

        fn sync(&self) -> StoreResult<()> {
            self.step("sync start".into());
            // Long enough that an early answer would be seen before it ends.
            std::thread::sleep(Duration::from_millis(50));
            self.step("sync end".into());
            if self.fail_sync {
                Err(StoreError::Engine("disk gone".into()))
            } else {
                Ok(())
            }
        }

        fn scan(
            &self,
            _: &EventFilter,
            _: &mut dyn FnMut(StoredEvent) -> StoreResult<()>,
        ) -> StoreResult<u64> {
            Ok(0)
        }

        fn get(&self, _: &[i64]) -> StoreResult<Vec<StoredEvent>> {
            Ok(Vec::new())
        }

        fn last_seq(&self) -> StoreResult<i64> {
            Ok(0)
        }

        fn delete_events(&self, _: &[i64]) -> StoreResult<u64> {
            Ok(0)
        }

        fn rewrite_events(&self, _: &[RewrittenEvent]) -> StoreResult<u64> {
            Ok(0)
        }

        fn purge_deleted(&self) -> StoreResult<()> {
            Ok(())
        }

        fn find_containing(&self, _: &[String]) -> StoreResult<Vec<i64>> {
            Ok(Vec::new())
        }

        fn recent_rejections(&self, _: usize) -> StoreResult<Vec<StoredRejection>> {
            Ok(Vec::new())
        }

        fn size_bytes(&self) -> StoreResult<u64> {
            Ok(0)
        }

        fn checkpoint(&self) -> StoreResult<()> {
            Ok(())
        }

        fn probe_write(&self) -> StoreResult<()> {
            if self.disk_full.load(Ordering::SeqCst) {
                return Err(StoreError::Engine("database or disk is full".into()));
            }
            Ok(())
        }
    }

    fn one_event() -> AppendBatch {
        AppendBatch {
            events: vec![EventRecord {
                source_key: 1,
                message_id: "m".into(),
                received_at_ms: 1,
                payload: "{}".into(),
            }],
            rejections: Vec::new(),
        }
    }

    fn start(log: &Arc<RecordingLog>) -> (Committer, CommitterThreads) {
        Committer::start(
            Arc::clone(log) as Arc<dyn EventLog>,
            Arc::new(Metrics::new()),
            CommitterConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn stop(threads: CommitterThreads) {
        tokio::task::spawn_blocking(move || threads.shutdown())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn append_once(
        log: Arc<RecordingLog>,
    ) -> (Result<AppendOutcome, SubmitError>, Vec<String>) {
        let (committer, threads) = start(&log);
        let answer = committer.append(one_event()).await;
        // What had happened when the answer came.
        let steps = log.steps();
        stop(threads).await;
        (answer, steps)
    }

    #[tokio::test]
    async fn an_append_is_answered_only_after_a_sync_that_follows_its_commit() {
        let (answer, steps) = append_once(Arc::new(RecordingLog::default())).await;
        assert!(
            matches!(answer, Ok(AppendOutcome { appended: 1, .. })),
            "{answer:?}"
        );
        assert_eq!(steps, ["commit 1", "sync start", "sync end"]);
    }

    #[tokio::test]
    async fn a_failed_sync_acknowledges_nothing_and_stops_ingest() {
        let log = Arc::new(RecordingLog {
            fail_sync: true,
            ..RecordingLog::default()
        });
        let (committer, threads) = start(&log);
        let answer = committer.append(one_event()).await;
        assert!(matches!(answer, Err(SubmitError::LogFailed)), "{answer:?}");
        assert!(committer.log_failed());
        // Fail-stop: the next append is refused without reaching the log.
        let again = committer.append(one_event()).await;
        assert!(matches!(again, Err(SubmitError::LogFailed)), "{again:?}");
        assert_eq!(log.steps(), ["commit 1", "sync start", "sync end"]);
        stop(threads).await;
    }

    #[tokio::test]
    async fn a_failed_commit_answers_storage_unavailable_until_a_probe_succeeds() {
        let log = Arc::new(RecordingLog::default());
        let (committer, threads) = start(&log);
        log.disk_full.store(true, Ordering::SeqCst);
        let answer = committer.append(one_event()).await;
        assert!(
            matches!(answer, Err(SubmitError::StorageUnavailable(_))),
            "{answer:?}"
        );
        assert_eq!(committer.degraded().map(|d| d.reason), Some("disk_full"));
        assert!(
            !committer.log_failed(),
            "a failed write is not a failed fsync"
        );
        // Room again: the checkpoint thread's probe clears it without any request.
        log.disk_full.store(false, Ordering::SeqCst);
        let started = Instant::now();
        while committer.degraded().is_some() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(committer.degraded(), None);
        let answer = committer.append(one_event()).await;
        assert!(
            matches!(answer, Ok(AppendOutcome { appended: 1, .. })),
            "{answer:?}"
        );
        stop(threads).await;
    }
}
