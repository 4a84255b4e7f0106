//! The activation fan-out thread: rounds of [`Activation::round`] — events and
//! audience changes to the outbox, journeys advanced — re-reading definitions changed
//! by another process every second.

use std::sync::Arc;
use std::time::Duration;
use tessera_activation::Activation;
use tessera_activation::fanout::Resolver;

/// Longest pause between rounds when nothing is new.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How often definitions are re-read from the catalog.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The running fan-out thread.
pub struct FanoutThread {
    handle: Option<std::thread::JoinHandle<()>>,
    activation: Arc<Activation>,
}

impl FanoutThread {
    /// Starts following the log and the change feed; `resolve` finds each event's
    /// owner.
    pub fn start(activation: Arc<Activation>, resolve: Arc<Resolver>) -> std::io::Result<Self> {
        let worker = Arc::clone(&activation);
        let handle = std::thread::Builder::new()
            .name("activation".into())
            .spawn(move || {
                let mut failures = 0u32;
                let mut last_reload = std::time::Instant::now();
                while !worker.is_stopping() {
                    // Definitions changed by the CLI (another process) are picked up.
                    if last_reload.elapsed() >= RELOAD_INTERVAL {
                        last_reload = std::time::Instant::now();
                        if let Err(error) = worker.reload() {
                            tracing::error!(%error, "reloading destinations and journeys failed");
                        }
                    }
                    match worker.round(resolve.as_ref()) {
                        Ok(0) => {
                            failures = 0;
                            worker.wait_for_work(IDLE_WAIT);
                        }
                        Ok(_) => failures = 0,
                        Err(error) => {
                            failures += 1;
                            tracing::error!(%error, failures, "activation fan-out failed; retrying");
                            std::thread::sleep(IDLE_WAIT * failures.min(40));
                        }
                    }
                }
            })?;
        Ok(Self {
            handle: Some(handle),
            activation,
        })
    }

    /// Stops the thread (and the delivery workers) and joins it.
    pub fn shutdown(mut self) {
        self.activation.stop();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("activation thread panicked");
        }
    }
}
