//! Group commit: many concurrent requests share one durable commit.
//!
//! Request handlers hand their [`AppendBatch`] to a bounded queue and await the answer.
//! One writer thread takes everything waiting, appends it in a single transaction,
//! fsyncs once, and then answers every request of that group. While it fsyncs, the
//! next group gathers, so durability costs one fsync per group, not per request.
//!
//! The queue is bounded: when it is full the handler gets [`SubmitError::Overloaded`]
//! at once (answered 503 with `Retry-After`) instead of growing memory without end.
//! A second thread checkpoints the write-ahead log in the background.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    #[error("the ingest queue is full")]
    Overloaded,
    /// The server is shutting down and takes no more writes.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store failed; nothing of the batch was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Job {
    Append {
        batch: AppendBatch,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    },
    Shutdown,
}

/// The handle request handlers submit batches through.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

/// Owns the writer and checkpoint threads; [`CommitterThreads::shutdown`] drains and joins them.
pub struct CommitterThreads {
    queue: mpsc::Sender<Job>,
    writer: Option<JoinHandle<()>>,
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
        let writer = {
            let log = Arc::clone(&log);
            let metrics = Arc::clone(&metrics);
            std::thread::Builder::new()
                .name("event-log-writer".into())
                .spawn(move || run_writer(log.as_ref(), &metrics, receiver, config))?
        };
        let stop_checkpointer = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let log = Arc::clone(&log);
            let metrics = Arc::clone(&metrics);
            let stop = Arc::clone(&stop_checkpointer);
            std::thread::Builder::new()
                .name("event-log-checkpoint".into())
                .spawn(move || run_checkpointer(log.as_ref(), &metrics, &stop, config))?
        };
        Ok((
            Committer {
                queue: queue.clone(),
                metrics,
            },
            CommitterThreads {
                queue,
                writer: Some(writer),
                checkpointer: Some(checkpointer),
                stop_checkpointer,
                log,
            },
        ))
    }

    /// Appends a batch durably; returns once it is committed.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, SubmitError> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job::Append { batch, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SubmitError::ShuttingDown),
        }
        self.metrics.ingest_queue_depth.set(self.queue_depth());
        match answer.await {
            Ok(result) => Ok(result?),
            // The writer stopped without answering: it was shut down mid-queue.
            Err(_) => Err(SubmitError::ShuttingDown),
        }
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
    mut receiver: mpsc::Receiver<Job>,
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
        let result = log.append(&batches);
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
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // A dropped receiver means the client went away; the data is stored.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batches = batches.len(), "event-log commit failed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(StoreError::Engine(error.to_string())));
                }
            }
        }
        replies.clear();
        batches.clear();
    }
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

fn run_checkpointer(
    log: &dyn EventLog,
    metrics: &Metrics,
    stop: &AtomicBool,
    config: CommitterConfig,
) {
    let tick = config.checkpoint_interval.min(Duration::from_millis(20));
    let mut since_checkpoint = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
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
