//! Activation reads time from the injected clock: a journey's wait and a frequency
//! cap's window are moved through with a fake clock, no sleeping.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_activation::config::{Destination, Journey};
use tessera_core::time::FixedClock;
use tessera_runtime::{Runtime, RuntimeConfig, StoreOptions, open_stores};
use tessera_store::activation::{Delivery, DeliveryFilter, DeliveryStatus};
use tessera_store::{AppendBatch, EventRecord, NewSource};
use tessera_store_sqlite::DedupConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Pipeline {
    runtime: Runtime,
    clock: Arc<FixedClock>,
    source_key: i64,
    next_message: u32,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    fn new(destinations: Vec<Value>) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let start: DateTime<Utc> = "2026-03-02T09:00:00Z".parse()?;
        let clock = Arc::new(FixedClock::new(start));
        let stores = open_stores(StoreOptions::writer(
            &dir.path().join("data"),
            DedupConfig::default(),
        ))?;
        let destinations = destinations
            .into_iter()
            .map(serde_json::from_value::<Destination>)
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = Runtime::build(
            &stores,
            RuntimeConfig {
                destinations,
                ..RuntimeConfig::default()
            },
            Arc::clone(&clock) as Arc<dyn tessera_core::time::Clock>,
            None,
        )?;
        let source = runtime.catalog.create_source(&NewSource {
            id: "src_test".into(),
            name: "test".into(),
            write_key_hash: "hash".into(),
            write_key_prefix: "pref".into(),
            created_at_ms: 0,
        })?;
        Ok(Self {
            runtime,
            clock,
            source_key: source.key,
            next_message: 0,
            _dir: dir,
        })
    }

    /// Appends a track event of `user` stamped with the fake clock's time, applies
    /// it to profiles and runs one fan-out round.
    fn track(&mut self, user: &str, event: &str) -> TestResult {
        self.next_message += 1;
        let now = self.runtime.clock.now();
        let message = json!({
            "type": "track", "userId": user, "event": event,
            "messageId": format!("m{}", self.next_message),
            "timestamp": now.to_rfc3339(), "receivedAt": now.to_rfc3339(),
        });
        self.runtime.events.append(&[AppendBatch {
            events: vec![EventRecord {
                source_key: self.source_key,
                message_id: format!("m{}", self.next_message),
                received_at_ms: now.timestamp_millis(),
                payload: message.to_string(),
            }],
            rejections: vec![],
        }])?;
        self.round()
    }

    /// Applies what the log holds and runs one fan-out round (journeys due now).
    fn round(&self) -> TestResult {
        self.runtime.processor.catch_up(&mut |_, _| {})?;
        let processor = Arc::clone(&self.runtime.processor);
        let resolve =
            move |message: &serde_json::Map<String, Value>| processor.resolve_owner(message);
        self.runtime.activation.round(&resolve)?;
        Ok(())
    }

    fn advance_minutes(&self, minutes: i64) {
        self.clock.advance_millis(minutes * 60_000);
    }

    fn deliveries(&self, destination: &str) -> Result<Vec<Delivery>, Box<dyn std::error::Error>> {
        let mut all = self.runtime.activation_store.deliveries(&DeliveryFilter {
            destination: Some(destination.into()),
            limit: 100,
            ..DeliveryFilter::default()
        })?;
        all.sort_by_key(|d| d.id);
        Ok(all)
    }
}

fn webhook(id: &str, extra: Value) -> Value {
    let mut destination = json!({
        "id": id, "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9/hook"},
    });
    if let (Some(target), Some(extra)) = (destination.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    destination
}

#[test]
fn a_journey_wait_ends_when_the_clock_passes_it_not_before() -> TestResult {
    let mut pipeline = Pipeline::new(vec![webhook(
        "hook",
        json!({"filter": {"events": ["Never Sent Directly"]}}),
    )])?;
    let journey: Journey = serde_json::from_value(json!({
        "key": "welcome", "name": "Welcome",
        "trigger": {"event": "Signed Up"},
        "steps": [{"wait": "1h"}, {"send": {"destination": "hook"}}],
    }))?;
    pipeline.runtime.activation.save_journey(journey, true)?;

    pipeline.track("u1", "Signed Up")?;
    assert!(
        pipeline.deliveries("hook")?.is_empty(),
        "sent before the wait"
    );

    pipeline.advance_minutes(59);
    pipeline.round()?;
    assert!(
        pipeline.deliveries("hook")?.is_empty(),
        "sent after 59 of 60 minutes"
    );

    pipeline.advance_minutes(2);
    pipeline.round()?;
    let sent = pipeline.deliveries("hook")?;
    assert_eq!(sent.len(), 1, "the wait of an hour ended: {sent:?}");
    assert_eq!(sent[0].new.journey.as_deref(), Some("welcome"));
    assert_eq!(sent[0].new.status, DeliveryStatus::Pending);
    // Queued at the fake clock's time, not the machine's.
    assert_eq!(sent[0].new.queued_ms, pipeline.runtime.activation.now_ms());
    Ok(())
}

#[test]
fn a_frequency_cap_counts_within_its_window_on_the_injected_clock() -> TestResult {
    let mut pipeline = Pipeline::new(vec![webhook(
        "capped",
        json!({
            "filter": {"events": ["Product Viewed"]},
            "delivery": {"frequencyCap": {"max": 1, "window": "1h"}},
        }),
    )])?;
    pipeline.track("u1", "Product Viewed")?;
    pipeline.advance_minutes(30);
    pipeline.track("u1", "Product Viewed")?;
    let statuses = |p: &Pipeline| -> Result<Vec<DeliveryStatus>, Box<dyn std::error::Error>> {
        Ok(p.deliveries("capped")?
            .iter()
            .map(|d| d.new.status)
            .collect())
    };
    assert_eq!(
        statuses(&pipeline)?,
        vec![DeliveryStatus::Pending, DeliveryStatus::Blocked],
        "the second within the hour is capped"
    );

    // 61 minutes after the first: the window has moved past it.
    pipeline.advance_minutes(31);
    pipeline.track("u1", "Product Viewed")?;
    assert_eq!(
        statuses(&pipeline)?,
        vec![
            DeliveryStatus::Pending,
            DeliveryStatus::Blocked,
            DeliveryStatus::Pending
        ],
        "the cap's window is measured on the injected clock"
    );
    Ok(())
}
