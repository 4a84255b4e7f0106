//! The processor's background thread: applies new events to profiles as they are
//! committed, and reports its lag.
//!
//! Ingestion comes first: while the event-log writer is saturated (busy at least
//! 80 % of the time), the processor applies only one chunk per second, so on a small
//! machine a burst is acknowledged at full speed and profiles catch up after it.
//! The lag is visible as `tessera_processor_lag_events`.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tessera_identity::processor::{CHUNK_EVENTS, Processor};

/// How long the thread waits when there is nothing new.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Writer busy share (percent) from which ingestion is considered saturated.
const SATURATED_PERCENT: i64 = 80;
/// While ingestion is saturated, one chunk per this interval.
const SATURATED_INTERVAL: Duration = Duration::from_secs(1);

/// The running processor thread.
pub struct ProcessorThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProcessorThread {
    /// Starts applying events in the background.
    pub fn start(processor: Arc<Processor>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || {
                let mut failures = 0u32;
                while !flag.load(Ordering::SeqCst) {
                    let started = std::time::Instant::now();
                    match processor.run_chunk(CHUNK_EVENTS) {
                        Ok(applied) => {
                            failures = 0;
                            metrics.processor_events.inc_by(applied as u64);
                            if let Ok(lag) = processor.lag() {
                                metrics.processor_lag.set(lag);
                            }
                            if applied == 0 {
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
