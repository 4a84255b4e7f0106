//! Every counter, gauge and histogram Tessera exposes, defined in one place so that
//! metrics and logs never drift apart. Rendered at `GET /metrics` in Prometheus text.

use crate::acks::AckTimes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, e.g. `/v1/batch`.
    pub endpoint: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels naming a message type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `track`, `identify`, ...
    pub r#type: String,
}

/// Labels naming why something was rejected.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The error code.
    pub reason: String,
}

/// All of Tessera's metrics.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by endpoint and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Events appended to the log, by type.
    pub events_accepted: Family<TypeLabels, Counter>,
    /// Messages (or whole requests) refused, by error code.
    pub events_rejected: Family<ReasonLabels, Counter>,
    /// Events whose `messageId` was already stored for their source.
    pub events_duplicate: Counter,
    /// Request body bytes received on the tracking API (as sent, before gunzip).
    pub request_bytes: Counter,
    /// Seconds from receiving a tracking request to its durable acknowledgement.
    pub ingest_latency: Histogram,
    /// Events per durable commit (how well group commit batches).
    pub commit_events: Histogram,
    /// Seconds one group commit takes (the inserts and the write to the WAL).
    pub commit_seconds: Histogram,
    /// Seconds one fsync of the WAL takes (it acknowledges every group committed before it).
    pub sync_seconds: Histogram,
    /// Requests waiting in the ingest queue.
    pub ingest_queue_depth: Gauge,
    /// Open HTTP connections.
    pub connections_open: Gauge,
    /// Connections answered 503 `too_many_connections` and closed.
    pub connections_refused: Counter,
    /// Tracking requests being handled now (from their headers to their answer).
    pub ingest_in_flight: Gauge,
    /// Most tracking requests in flight at once since the processor last looked (not
    /// exported; see [`Metrics::take_in_flight_peak`]).
    ingest_in_flight_peak: std::sync::atomic::AtomicI64,
    /// Share of the last second the event-log writer spent committing, in percent.
    pub ingest_writer_busy_percent: Gauge,
    /// When the writer last finished a commit (Unix ms; not exported): a busy share
    /// is only current while commits keep coming.
    pub last_commit_unix_ms: std::sync::atomic::AtomicI64,
    /// Bytes the event log occupies on disk.
    pub event_log_bytes: Gauge,
    /// 1 once an fsync of the event log failed: ingest stops until a restart.
    pub event_log_failed: Gauge,
    /// 1 while the event log's writes fail (a full disk): ingest answers 503.
    pub event_log_degraded: Gauge,
    /// Events in the log the processor has not applied yet.
    pub processor_lag: Gauge,
    /// Events the processor applied to profiles.
    pub processor_events: Counter,
    /// 1 while the processor yields to saturated ingestion (small chunks, rests).
    pub processor_yielding: Gauge,
    /// Audience membership changes written, by kind (`entered`, `exited`).
    pub audience_changes: Family<KindLabels, Counter>,
    /// Seconds to fold one processor chunk into the audience index and re-evaluate
    /// the touched profiles.
    pub audience_realtime_seconds: Histogram,
    /// Events in the audience index.
    pub audience_index_events: Gauge,
    /// Approximate bytes of the audience index.
    pub audience_index_bytes: Gauge,
    /// Failures of the audience engine (realtime or batch), each logged.
    pub audience_errors: Counter,
    /// New messages carrying an erased identifier, by what happened (`dropped`,
    /// `anonymized`).
    pub events_suppressed: Family<KindLabels, Counter>,
    /// Webhook requests by preset and outcome (`stored`, `ping`,
    /// `invalid_webhook_signature`, …).
    pub webhooks: Family<WebhookLabels, Counter>,
    /// Tracking plan violations by plan mode (`flag`, `block`).
    pub plan_violations: Family<KindLabels, Counter>,
    /// Delivery outcomes by destination and kind (`delivered`, `retrying`, `dead`,
    /// `blocked`).
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Seconds from an event's acknowledgement to its delivery, by destination.
    pub delivery_latency: Family<DestinationLabels, Histogram, fn() -> Histogram>,
    /// 1 while a destination's circuit breaker is open.
    pub destination_breaker_open: Family<DestinationLabels, Gauge>,
    /// Seconds from an event's acknowledgement to a later stage (`applied`,
    /// `audience`, `delivered`): the end-to-end latency a user sees.
    pub ack_latency: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// When events were acknowledged (not exported; feeds `ack_latency`).
    pub acks: AckTimes,
}

/// Buckets of `ack_latency`: 1 ms to about 65 s.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Labels naming a stage an event reaches after its acknowledgement.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `applied` (to its profile), `audience` (a membership change it caused) or
    /// `delivered` (accepted by a destination).
    pub stage: String,
}

/// The stages of `ack_latency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The processor applied the event to its profile.
    Applied,
    /// The event changed an audience membership (realtime).
    Audience,
    /// A destination accepted a delivery caused by the event.
    Delivered,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Audience => "audience",
            Self::Delivered => "delivered",
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
    ])
}

/// Labels of a delivery outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The destination id.
    pub destination: String,
    /// `delivered`, `retrying`, `dead` or `blocked`.
    pub outcome: String,
}

/// Labels naming a destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// The destination id.
    pub destination: String,
}

impl tessera_activation::delivery::Observer for Metrics {
    fn delivered(&self, destination: &str, latency_seconds: f64) {
        self.delivery_outcome(destination, "delivered");
        self.delivery_latency
            .get_or_create(&DestinationLabels {
                destination: destination.into(),
            })
            .observe(latency_seconds);
        self.observe_stage(Stage::Delivered, latency_seconds);
    }
    fn acknowledged_at_ms(&self, seq: i64) -> Option<i64> {
        self.acks.time_of(seq)
    }
    fn retrying(&self, destination: &str) {
        self.delivery_outcome(destination, "retrying");
    }
    fn dead(&self, destination: &str) {
        self.delivery_outcome(destination, "dead");
    }
    fn blocked(&self, destination: &str, _reason: &str) {
        self.delivery_outcome(destination, "blocked");
    }
    fn breaker(&self, destination: &str, open: bool) {
        self.destination_breaker_open
            .get_or_create(&DestinationLabels {
                destination: destination.into(),
            })
            .set(i64::from(open));
    }
}

/// Labels of a webhook request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `shopify`, `woocommerce`, `stripe`, `generic`, or `unknown`.
    pub preset: String,
    /// `stored`, `ping`, or the error code.
    pub outcome: String,
}

/// Labels naming a kind of change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `entered` or `exited`; `dropped` or `anonymized`.
    pub kind: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            http_requests.clone(),
        );
        let events_accepted = Family::<TypeLabels, Counter>::default();
        registry.register(
            "events_accepted",
            "Events durably appended to the event log, by message type",
            events_accepted.clone(),
        );
        let events_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "events_rejected",
            "Messages refused by error code (a request refused as a whole counts once)",
            events_rejected.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Events not stored again because their source already sent that messageId",
            events_duplicate.clone(),
        );
        let request_bytes = Counter::default();
        registry.register(
            "request_bytes",
            "Tracking API request body bytes as received",
            request_bytes.clone(),
        );
        let ingest_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "ingest_latency_seconds",
            "Seconds from receiving a tracking request to its durable acknowledgement",
            ingest_latency.clone(),
        );
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "commit_events",
            "Events per durable group commit",
            commit_events.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "commit_seconds",
            "Seconds per group commit (inserts and WAL write; the fsync is sync_seconds)",
            commit_seconds.clone(),
        );
        let sync_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "sync_seconds",
            "Seconds per fsync of the event log's WAL, which acknowledges the groups committed before it",
            sync_seconds.clone(),
        );
        let ingest_queue_depth = Gauge::default();
        registry.register(
            "ingest_queue_depth",
            "Tracking requests waiting for the event-log writer",
            ingest_queue_depth.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open HTTP connections",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections over the connection cap (503 too_many_connections) or over one client's (429 too_many_client_connections), answered and closed",
            connections_refused.clone(),
        );
        let ingest_in_flight = Gauge::default();
        registry.register(
            "ingest_in_flight",
            "Tracking requests being handled now, from their headers to their answer",
            ingest_in_flight.clone(),
        );
        let ingest_writer_busy_percent = Gauge::default();
        registry.register(
            "ingest_writer_busy_percent",
            "Share of recent time the event-log writer spent committing (100 = saturated)",
            ingest_writer_busy_percent.clone(),
        );
        let event_log_failed = Gauge::default();
        registry.register(
            "event_log_failed",
            "1 once an fsync of the event log failed: nothing more is stored until Tessera is restarted",
            event_log_failed.clone(),
        );
        let event_log_degraded = Gauge::default();
        registry.register(
            "event_log_degraded",
            "1 while writes to the event log fail (a full disk): ingest answers 503 storage_unavailable until one succeeds",
            event_log_degraded.clone(),
        );
        let event_log_bytes = Gauge::default();
        registry.register(
            "event_log_bytes",
            "Bytes the event log occupies on disk (main file and write-ahead log)",
            event_log_bytes.clone(),
        );
        let processor_lag = Gauge::default();
        registry.register(
            "processor_lag_events",
            "Events in the log not yet applied to profiles",
            processor_lag.clone(),
        );
        let processor_events = Counter::default();
        registry.register(
            "processor_events",
            "Events applied to profiles by the processor",
            processor_events.clone(),
        );
        let processor_yielding = Gauge::default();
        registry.register(
            "processor_yielding",
            "1 while the processor yields to saturated ingestion: requests are queueing and the event-log writer or the CPU is short",
            processor_yielding.clone(),
        );
        let audience_changes = Family::<KindLabels, Counter>::default();
        registry.register(
            "audience_changes",
            "Audience membership changes written (Audience Entered / Audience Exited)",
            audience_changes.clone(),
        );
        let audience_realtime_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "audience_realtime_seconds",
            "Seconds to fold a processor chunk into the audience index and re-evaluate its profiles",
            audience_realtime_seconds.clone(),
        );
        let audience_index_events = Gauge::default();
        registry.register(
            "audience_index_events",
            "Events in the in-memory audience index",
            audience_index_events.clone(),
        );
        let audience_index_bytes = Gauge::default();
        registry.register(
            "audience_index_bytes",
            "Approximate bytes of the in-memory audience index",
            audience_index_bytes.clone(),
        );
        let audience_errors = Counter::default();
        registry.register(
            "audience_errors",
            "Failures of the audience engine (each is logged)",
            audience_errors.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery outcomes by destination: delivered, retrying (an attempt failed), dead, blocked (no consent, frequency cap)",
            deliveries.clone(),
        );
        let delivery_latency: Family<DestinationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "delivery_latency_seconds",
            "Seconds from the event's acknowledgement to its delivery",
            delivery_latency.clone(),
        );
        let destination_breaker_open = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "destination_breaker_open",
            "1 while a destination's circuit breaker is open",
            destination_breaker_open.clone(),
        );
        let ack_latency: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(stage_histogram);
        registry.register(
            "ack_latency_seconds",
            "Seconds from an event's acknowledgement to a stage: applied (to its profile), audience (a membership change it caused), delivered (accepted by a destination)",
            ack_latency.clone(),
        );
        let events_suppressed = Family::<KindLabels, Counter>::default();
        registry.register(
            "events_suppressed",
            "New messages carrying an erased identifier, dropped or stored anonymized",
            events_suppressed.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook requests by preset and outcome (stored, ping, invalid_webhook_signature, ...)",
            webhooks.clone(),
        );
        let plan_violations = Family::<KindLabels, Counter>::default();
        registry.register(
            "plan_violations",
            "Tracking plan violations by the plan's mode (flag: stored; block: refused)",
            plan_violations.clone(),
        );
        Self {
            registry,
            webhooks,
            plan_violations,
            deliveries,
            delivery_latency,
            destination_breaker_open,
            events_suppressed,
            processor_lag,
            processor_events,
            processor_yielding,
            audience_changes,
            audience_realtime_seconds,
            audience_index_events,
            audience_index_bytes,
            audience_errors,
            http_requests,
            events_accepted,
            events_rejected,
            events_duplicate,
            request_bytes,
            ingest_latency,
            commit_events,
            commit_seconds,
            sync_seconds,
            ingest_queue_depth,
            connections_open,
            connections_refused,
            ingest_in_flight,
            ingest_in_flight_peak: std::sync::atomic::AtomicI64::new(0),
            ingest_writer_busy_percent,
            last_commit_unix_ms: std::sync::atomic::AtomicI64::new(0),
            event_log_bytes,
            event_log_failed,
            event_log_degraded,
            ack_latency,
            acks: AckTimes::default(),
        }
    }

    /// A tracking request started (`tessera_ingest_in_flight` and its peak).
    pub fn request_started(&self) {
        let now = self.ingest_in_flight.inc() + 1;
        self.ingest_in_flight_peak
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// A tracking request was answered (or its client went away).
    pub fn request_finished(&self) {
        self.ingest_in_flight.dec();
    }

    /// The most tracking requests in flight at once since the last call (at least as
    /// many as now).
    pub fn take_in_flight_peak(&self) -> i64 {
        self.ingest_in_flight_peak.swap(
            self.ingest_in_flight.get(),
            std::sync::atomic::Ordering::Relaxed,
        )
    }

    /// Observes each of `seconds` from an event's acknowledgement to `stage`.
    pub fn observe_stage_many(&self, stage: Stage, seconds: impl IntoIterator<Item = f64>) {
        let histogram = self.ack_latency.get_or_create(&StageLabels {
            stage: stage.label().into(),
        });
        for value in seconds {
            histogram.observe(value.max(0.0));
        }
    }

    /// Observes `seconds` from an event's acknowledgement to `stage`.
    pub fn observe_stage(&self, stage: Stage, seconds: f64) {
        self.ack_latency
            .get_or_create(&StageLabels {
                stage: stage.label().into(),
            })
            .observe(seconds.max(0.0));
    }

    fn delivery_outcome(&self, destination: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                destination: destination.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts a new message carrying an erased identifier (`dropped`, `anonymized`).
    pub fn suppressed(&self, kind: &str) {
        self.events_suppressed
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Whether ingestion is saturated: the writer was busy at least `percent` % of the
    /// recent past and committed within the last 100 ms.
    pub fn ingest_saturated(&self, percent: i64) -> bool {
        self.ingest_writer_busy_percent.get() >= percent && self.ingest_active()
    }

    /// Whether the event-log writer committed within the last 100 ms.
    pub fn ingest_active(&self) -> bool {
        let last = self
            .last_commit_unix_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        chrono::Utc::now().timestamp_millis() - last < 100
    }

    /// Counts a webhook request's outcome.
    pub fn webhook(&self, preset: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                preset: preset.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts `count` tracking plan violations under a plan in `mode`.
    pub fn plan_violations(&self, mode: &str, count: u64) {
        self.plan_violations
            .get_or_create(&KindLabels { kind: mode.into() })
            .inc_by(count);
    }

    /// Counts a message or request refused with `code`.
    pub fn rejected(&self, code: &str) {
        self.events_rejected
            .get_or_create(&ReasonLabels {
                reason: code.to_string(),
            })
            .inc();
    }

    /// Counts `count` events of a type appended to the log.
    pub fn accepted(&self, message_type: &str, count: u64) {
        self.events_accepted
            .get_or_create(&TypeLabels {
                r#type: message_type.to_string(),
            })
            .inc_by(count);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}
