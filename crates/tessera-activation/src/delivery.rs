//! Delivery workers: one task per destination, so a destination that is down or slow
//! never delays another.
//!
//! Each worker takes the destination's due deliveries from the outbox (oldest first,
//! one per profile at a time — per-profile order), checks consent again, sends them
//! with at most `concurrency` requests in flight and at most `ratePerSecond`, and
//! records each outcome: delivered; retried after an exponential backoff with ±50 %
//! jitter (at least the receiver's `Retry-After`); dead after `maxAttempts` or a
//! non-retryable answer. After `breakerFailures` failed rounds in a row the circuit
//! opens: nothing is sent for `breakerCooldownMs`, then one trial delivery decides.

use crate::Activation;
use crate::config::{Destination, Kind};
use crate::senders::{Attempt, render_error, send};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tessera_store::activation::{Delivery, DeliveryOutcome, DeliveryStatus};

/// A round holds up to this many times `concurrency × batch` deliveries while the
/// destination accepts them (a burst goes out in few outbox reads and writes).
const ROUND_FACTOR: usize = 64;
/// ... and this many times after a round with a failed attempt: a failing receiver's
/// retries take a small share of the outbox's writer, which every destination and
/// the fan-out share.
const FAILING_ROUND_FACTOR: usize = 16;
/// Most deliveries in one round.
const MAX_ROUND: usize = 1_000;
/// Longest a worker sleeps before looking at the outbox again.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Observes deliveries (metrics).
pub trait Observer: Send + Sync {
    /// A delivery was accepted; `latency_seconds` from its event's acknowledgement
    /// (for a delivery caused by an audience change, from the change).
    fn delivered(&self, destination: &str, latency_seconds: f64);
    /// When the event at `seq` was acknowledged (Unix ms), if the observer knows:
    /// deliveries measure their latency from there. Otherwise from the event's
    /// `receivedAt`, a few milliseconds earlier.
    fn acknowledged_at_ms(&self, _seq: i64) -> Option<i64> {
        None
    }
    /// An attempt failed and will be retried.
    fn retrying(&self, destination: &str);
    /// A delivery is dead.
    fn dead(&self, destination: &str);
    /// A delivery was blocked (consent, frequency cap, nothing to send).
    fn blocked(&self, destination: &str, reason: &str);
    /// The destination's circuit breaker opened (`true`) or closed.
    fn breaker(&self, destination: &str, open: bool);
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn delivered(&self, _: &str, _: f64) {}
    fn retrying(&self, _: &str) {}
    fn dead(&self, _: &str) {}
    fn blocked(&self, _: &str, _: &str) {}
    fn breaker(&self, _: &str, _: bool) {}
}

/// The retry delay after `attempts` failed attempts.
pub fn backoff_ms(destination: &Destination, attempts: u32, retry_after: Option<Duration>) -> i64 {
    let config = &destination.delivery;
    let exponent = attempts.saturating_sub(1).min(30);
    let base = config
        .initial_backoff_ms
        .saturating_mul(1_i64 << exponent)
        .min(config.max_backoff_ms);
    let jittered = (base as f64 * rand::rng().random_range(0.5..1.5)) as i64;
    let floor = retry_after.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    jittered.max(floor)
}

struct Breaker {
    failures: u32,
    open_until: Option<i64>,
}

/// Runs one destination's deliveries until it is deleted or Tessera stops.
pub async fn run_worker(activation: Arc<Activation>, id: String, generation: u64) {
    let notify = activation.notifier(&id);
    let mut breaker = Breaker {
        failures: 0,
        open_until: None,
    };
    let mut tokens = 0.0f64;
    // Whether the last round had a failed attempt (smaller rounds until one succeeds).
    let mut failing = false;
    let mut last_refill = std::time::Instant::now();
    loop {
        if activation.is_stopping() || !activation.is_current_worker(&id, generation) {
            return;
        }
        let Some(destination) = activation.destination(&id) else {
            return;
        };
        if !destination.enabled {
            let _ = tokio::time::timeout(IDLE_POLL, notify.notified()).await;
            continue;
        }
        let now = activation.now_ms();
        if let Some(until) = breaker.open_until
            && now < until
        {
            let wait = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
            tokio::time::sleep(wait.min(IDLE_POLL)).await;
            continue;
        }
        let half_open = breaker.open_until.is_some();
        let config = &destination.delivery;
        let batch = match destination.kind {
            Kind::Webhook(_) | Kind::File(_) => config.batch_size.max(1) as usize,
            _ => 1,
        };
        // A round takes many deliveries (each of a different person) so one outbox
        // read and one durable write serve them all; `concurrency` bounds what is in
        // flight within the round.
        let limit = if half_open {
            1
        } else {
            let factor = if failing {
                FAILING_ROUND_FACTOR
            } else {
                ROUND_FACTOR
            };
            ((config.concurrency.max(1) as usize) * batch * factor).min(MAX_ROUND)
        };
        let store = Arc::clone(&activation.store);
        let key = id.clone();
        let due = tokio::task::spawn_blocking(move || store.due(&key, now, limit)).await;
        let due = match due {
            Ok(Ok(due)) => due,
            Ok(Err(error)) => {
                tracing::error!(destination = %id, %error, "reading the outbox failed");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            Err(_) => return,
        };
        if due.is_empty() {
            let store = Arc::clone(&activation.store);
            let key = id.clone();
            let next = tokio::task::spawn_blocking(move || store.next_due(&key))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            let wait = next.map_or(IDLE_POLL, |at| {
                Duration::from_millis(u64::try_from((at - activation.now_ms()).max(1)).unwrap_or(1))
                    .min(IDLE_POLL)
            });
            let _ = tokio::time::timeout(wait, notify.notified()).await;
            continue;
        }

        // Consent may have been withdrawn since the delivery was queued.
        let mut outcomes = Vec::new();
        let mut sendable = Vec::new();
        let checks: Vec<(Option<i64>, Option<String>)> = due
            .iter()
            .map(|d| (d.new.profile_id, d.new.purpose.clone()))
            .collect();
        let verdicts = {
            let activation = Arc::clone(&activation);
            tokio::task::spawn_blocking(move || {
                checks
                    .iter()
                    .map(|(profile, purpose)| activation.may_send(*profile, purpose.as_deref()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        };
        for (delivery, allowed) in due.into_iter().zip(verdicts) {
            match allowed {
                // Its template went over budget when it was rendered: it can never
                // be sent. It fails at once (not the receiver's fault, so the
                // breaker does not count it).
                Ok(true) => match render_error(&delivery) {
                    Some(error) => {
                        activation.observer.dead(&id);
                        outcomes.push(DeliveryOutcome {
                            id: delivery.id,
                            status: DeliveryStatus::Dead,
                            attempts: delivery.attempts + 1,
                            next_attempt_ms: activation.now_ms(),
                            error: Some(error),
                            delivered_ms: None,
                        });
                    }
                    None => sendable.push(delivery),
                },
                Ok(false) => {
                    activation.observer.blocked(&id, "consent");
                    outcomes.push(DeliveryOutcome {
                        id: delivery.id,
                        status: DeliveryStatus::Blocked,
                        attempts: delivery.attempts,
                        next_attempt_ms: delivery.next_attempt_ms,
                        error: Some(match &delivery.new.purpose {
                            Some(purpose) => format!(
                                "consent for {purpose} withdrawn (or the person erased) before sending"
                            ),
                            None => "the person was erased before sending".into(),
                        }),
                        delivered_ms: None,
                    });
                }
                Err(error) => {
                    tracing::error!(destination = %id, %error, "consent check failed; retrying later");
                }
            }
        }

        let mut tasks = tokio::task::JoinSet::new();
        let mut finished = Vec::new();
        let in_flight = config.concurrency.max(1) as usize;
        for group in sendable.chunks(batch) {
            while tasks.len() >= in_flight {
                if let Some(Ok(done)) = tasks.join_next().await {
                    finished.push(done);
                }
            }
            if config.rate_per_second > 0 {
                let rate = f64::from(config.rate_per_second);
                loop {
                    let elapsed = last_refill.elapsed().as_secs_f64();
                    last_refill = std::time::Instant::now();
                    tokens = (tokens + elapsed * rate).min(rate.max(1.0));
                    if tokens >= 1.0 {
                        tokens -= 1.0;
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / rate)).await;
                }
            }
            let group = group.to_vec();
            let destination = Arc::clone(&destination);
            let clients = Arc::clone(&activation.clients);
            tasks.spawn(async move {
                let attempts = send(&clients, &destination, &group).await;
                (group, attempts)
            });
        }
        let mut any_delivered = false;
        let mut any_failed = false;
        while let Some(joined) = tasks.join_next().await {
            if let Ok(done) = joined {
                finished.push(done);
            }
        }
        for (group, attempts) in finished {
            let at = activation.now_ms();
            for (delivery, attempt) in group.iter().zip(attempts) {
                let made = delivery.attempts + 1;
                outcomes.push(match attempt {
                    Attempt::Delivered => {
                        // Tests: the receiver has it, the outbox does not know yet.
                        tessera_store::fault::crash_point(
                            tessera_store::fault::points::SEND_AFTER_DELIVERY,
                        );
                        any_delivered = true;
                        let latency = (at - delivery.new.origin_ms).max(0) as f64 / 1_000.0;
                        activation.observer.delivered(&id, latency);
                        DeliveryOutcome {
                            id: delivery.id,
                            status: DeliveryStatus::Delivered,
                            attempts: made,
                            next_attempt_ms: at,
                            error: None,
                            delivered_ms: Some(at),
                        }
                    }
                    Attempt::Retry { error, after } if made < config.max_attempts => {
                        any_failed = true;
                        activation.observer.retrying(&id);
                        DeliveryOutcome {
                            id: delivery.id,
                            status: DeliveryStatus::Pending,
                            attempts: made,
                            next_attempt_ms: at.saturating_add(backoff_ms(
                                &destination,
                                made,
                                after,
                            )),
                            error: Some(error),
                            delivered_ms: None,
                        }
                    }
                    Attempt::Retry { error, .. } | Attempt::Fail { error } => {
                        any_failed = true;
                        activation.observer.dead(&id);
                        DeliveryOutcome {
                            id: delivery.id,
                            status: DeliveryStatus::Dead,
                            attempts: made,
                            next_attempt_ms: at,
                            error: Some(error),
                            delivered_ms: None,
                        }
                    }
                });
            }
        }
        failing = any_failed;
        if any_delivered {
            if breaker.open_until.is_some() {
                activation.observer.breaker(&id, false);
            }
            breaker.failures = 0;
            breaker.open_until = None;
        } else if any_failed {
            breaker.failures += 1;
            if half_open || breaker.failures >= config.breaker_failures {
                if breaker.open_until.is_none() {
                    tracing::warn!(destination = %id, failures = breaker.failures, "circuit breaker opened");
                    activation.observer.breaker(&id, true);
                }
                breaker.open_until = Some(
                    activation
                        .now_ms()
                        .saturating_add(config.breaker_cooldown_ms),
                );
            }
        }
        let store = Arc::clone(&activation.store);
        let recorded = tokio::task::spawn_blocking(move || store.record(&outcomes)).await;
        if !matches!(recorded, Ok(Ok(()))) {
            // Unrecorded outcomes are retried; receivers de-duplicate by idempotency key.
            tracing::error!(destination = %id, "recording delivery outcomes failed");
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
}

/// Re-reads a delivery's payload text for the API (no secrets are in payloads).
pub fn payload_json(delivery: &Delivery) -> serde_json::Value {
    serde_json::from_str(&delivery.new.payload).unwrap_or(serde_json::Value::Null)
}
