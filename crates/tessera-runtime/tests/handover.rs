//! The processor hands each applied chunk to the fan-out: a round takes the events
//! with their profiles from it (no identity lookup), follows merges made since, and
//! falls back to the log and the lookup for what was not handed over.

use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tessera_activation::config::Destination;
use tessera_runtime::processing::applied_chunk;
use tessera_runtime::{Runtime, RuntimeConfig, StoreOptions, open_stores};
use tessera_store::activation::{Delivery, DeliveryFilter};
use tessera_store::profiles::ProfileId;
use tessera_store::{AppendBatch, EventRecord, NewSource, StoreError};
use tessera_store_sqlite::DedupConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// (idempotency key, profile) of each delivery.
type Sent = Vec<(String, Option<ProfileId>)>;

struct Pipeline {
    runtime: Runtime,
    source_key: i64,
    lookups: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let stores = open_stores(StoreOptions::writer(
            &dir.path().join("data"),
            DedupConfig::default(),
        ))?;
        let destination: Destination = serde_json::from_value(json!({
            "id": "hook", "type": "webhook",
            "settings": {"url": "http://127.0.0.1:9/hook"},
        }))?;
        let runtime = Runtime::build(
            &stores,
            RuntimeConfig {
                destinations: vec![destination],
                ..RuntimeConfig::default()
            },
            Arc::new(tessera_core::time::SystemClock),
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
            source_key: source.key,
            lookups: Arc::new(AtomicUsize::new(0)),
            _dir: dir,
        })
    }

    fn append(&self, messages: &[Value]) -> TestResult {
        let events = messages
            .iter()
            .enumerate()
            .map(|(i, message)| EventRecord {
                source_key: self.source_key,
                message_id: message["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                received_at_ms: 1_790_000_000_000 + i as i64,
                payload: message.to_string(),
            })
            .collect();
        self.runtime.events.append(&[AppendBatch {
            events,
            rejections: vec![],
        }])?;
        Ok(())
    }

    /// Applies up to `max` events as one chunk; hands it over when `hand` is set.
    fn apply(&self, max: usize, hand: bool) -> TestResult {
        let report = self.runtime.processor.run_chunk_reporting(max)?;
        if hand {
            self.runtime.activation.hand_applied(applied_chunk(&report));
        }
        Ok(())
    }

    /// One fan-out round with a lookup that counts its calls.
    fn round(&self) -> TestResult {
        let processor = Arc::clone(&self.runtime.processor);
        let lookups = Arc::clone(&self.lookups);
        let resolve = move |message: &Map<String, Value>| -> Result<Option<ProfileId>, StoreError> {
            lookups.fetch_add(1, Ordering::SeqCst);
            processor.resolve_owner(message)
        };
        self.runtime.activation.round(&resolve)?;
        Ok(())
    }

    /// (idempotency key — `e<seq>:<destination>` —, profile) of each delivery, in
    /// event order.
    fn deliveries(&self) -> Result<Sent, Box<dyn std::error::Error>> {
        let mut all: Vec<Delivery> = self.runtime.activation_store.deliveries(&DeliveryFilter {
            destination: Some("hook".into()),
            limit: 100,
            ..DeliveryFilter::default()
        })?;
        all.sort_by_key(|d| d.id);
        Ok(all
            .into_iter()
            .map(|d| (d.new.idempotency_key, d.new.profile_id))
            .collect())
    }
}

fn track(id: &str, identity: Value) -> Value {
    let mut message = json!({"type": "track", "event": "Viewed", "messageId": id});
    if let (Some(target), Some(extra)) = (message.as_object_mut(), identity.as_object()) {
        target.extend(extra.clone());
    }
    message
}

#[test]
fn handed_over_events_need_no_lookup_and_follow_later_merges() -> TestResult {
    let pipeline = Pipeline::new()?;
    // Chunk 1: an anonymous visitor (profile 1) and a known user (profile 2).
    // Chunk 2: the visitor logs in as that user: profile 2 merges into profile 1.
    pipeline.append(&[
        track("m1", json!({"anonymousId": "anon-1"})),
        track("m2", json!({"userId": "u-1"})),
        track("m3", json!({"anonymousId": "anon-1", "userId": "u-1"})),
    ])?;
    pipeline.apply(2, true)?;
    pipeline.apply(2, true)?;
    pipeline.round()?;
    assert_eq!(
        pipeline.lookups.load(Ordering::SeqCst),
        0,
        "no owner was looked up for handed-over events"
    );
    let owner = pipeline.runtime.profiles.find("user_id", "u-1")?;
    assert!(owner.is_some(), "the user has a profile");
    assert_eq!(
        pipeline.deliveries()?,
        vec![
            ("e1:hook".to_string(), owner),
            ("e2:hook".to_string(), owner),
            ("e3:hook".to_string(), owner)
        ],
        "each event delivered once, for the profile it belongs to now (m2's profile merged into m1's)"
    );
    Ok(())
}

#[test]
fn what_was_not_handed_over_is_read_from_the_log() -> TestResult {
    let pipeline = Pipeline::new()?;
    pipeline.append(&[
        track("m1", json!({"userId": "u-1"})),
        track("m2", json!({"userId": "u-2"})),
        track("m3", json!({"userId": "u-3"})),
    ])?;
    // The first chunk is applied but not handed over (an erasure's catch-up, another
    // process); the second is.
    pipeline.apply(1, false)?;
    pipeline.apply(2, true)?;
    pipeline.round()?;
    pipeline.round()?;
    let ids: Vec<String> = pipeline
        .deliveries()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        ["e1:hook", "e2:hook", "e3:hook"],
        "every event once, in log order"
    );
    assert_eq!(
        pipeline.lookups.load(Ordering::SeqCst),
        1,
        "only the event missing from the hand-over was looked up"
    );

    // Forgotten hand-overs (an erasure starts) are read from the log too.
    pipeline.append(&[track("m4", json!({"userId": "u-4"}))])?;
    pipeline.apply(10, true)?;
    pipeline.runtime.activation.forget_applied();
    pipeline.round()?;
    let ids: Vec<String> = pipeline
        .deliveries()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["e1:hook", "e2:hook", "e3:hook", "e4:hook"]);
    assert_eq!(pipeline.lookups.load(Ordering::SeqCst), 2);
    Ok(())
}
