//! The audience engine over the real stores and processor: realtime entry and exit,
//! windows that expire with no new event, merges that bring events from both sides,
//! restarts that announce nothing twice.
#![allow(clippy::unwrap_used)]

use chrono::DateTime;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tessera_audience::engine::{AudienceEngine, EngineOptions, ProfileChanges};
use tessera_core::fields::MessageFields;
use tessera_core::message::{RequestDefaults, normalize};
use tessera_core::time::{Clock, FixedClock, parse_timestamp};
use tessera_identity::processor::Processor;
use tessera_store::audiences::{AudienceStore, Membership, MembershipChange, StoredChange};
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{
    AppendBatch, Catalog, EventLog, EventRecord, NewSource, StoreError, StoreResult,
};
use tessera_store_sqlite::{SqliteAudienceStore, SqliteProfileStore, open_data_dir};

const DAY: i64 = 86_400_000;

struct World {
    dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    catalog: Arc<dyn Catalog>,
    profiles: Arc<dyn ProfileStore>,
    store: Arc<dyn AudienceStore>,
    processor: Processor,
    clock: Arc<FixedClock>,
    engine: AudienceEngine,
    source: i64,
}

fn engine_over(
    world_dir: &std::path::Path,
    clock: Arc<FixedClock>,
) -> (AudienceEngine, Arc<dyn AudienceStore>) {
    let (log, catalog) = open_data_dir(world_dir).unwrap();
    let store: Arc<dyn AudienceStore> = Arc::new(SqliteAudienceStore::open_in(world_dir).unwrap());
    let engine = AudienceEngine::new(
        Arc::new(catalog),
        Arc::clone(&store),
        Arc::new(SqliteProfileStore::open_in(world_dir).unwrap()),
        Arc::new(log),
        clock,
        EngineOptions {
            schedule_interval_ms: 60_000,
            ..EngineOptions::default()
        },
    );
    engine.load(&mut |_, _| {}).unwrap();
    (engine, store)
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (log, catalog) = open_data_dir(dir.path()).unwrap();
        let catalog: Arc<dyn Catalog> = Arc::new(catalog);
        let source = catalog
            .create_source(&NewSource {
                id: "src_web".into(),
                name: "web".into(),
                write_key_hash: "hash".into(),
                write_key_prefix: "x".into(),
                created_at_ms: 0,
            })
            .unwrap()
            .key;
        let log: Arc<dyn EventLog> = Arc::new(log);
        let profiles: Arc<dyn ProfileStore> =
            Arc::new(SqliteProfileStore::open_in(dir.path()).unwrap());
        let processor = Processor::new(
            Arc::clone(&log),
            Arc::clone(&profiles),
            Arc::clone(&catalog),
        )
        .unwrap();
        let clock = Arc::new(FixedClock::new(
            parse_timestamp("2026-11-23T12:00:00Z").unwrap(),
        ));
        let (engine, store) = engine_over(dir.path(), Arc::clone(&clock));
        Self {
            dir,
            log,
            catalog,
            profiles,
            store,
            processor,
            clock,
            engine,
            source,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Appends a message to the log, stamped now (unless it has its own timestamp).
    fn append(&self, message: Value) {
        let text = message.to_string();
        let now = DateTime::from_timestamp_millis(self.now()).unwrap();
        let fields = MessageFields::from_json(&text).expect("object");
        let n = normalize(fields, None, &RequestDefaults::default(), now).unwrap();
        self.log
            .append(&[AppendBatch {
                events: vec![EventRecord {
                    source_key: self.source,
                    payload: n.payload,
                    message_id: n.message_id,
                    received_at_ms: n.received_at.timestamp_millis(),
                }],
                rejections: vec![],
            }])
            .unwrap();
    }

    /// Sends a message and lets the processor and the engine handle it, as the
    /// server's processor thread does.
    fn send(&self, message: Value) -> Vec<MembershipChange> {
        self.append(message);
        self.step()
    }

    fn step(&self) -> Vec<MembershipChange> {
        let mut out = Vec::new();
        loop {
            let report = self.processor.run_chunk_reporting(100).unwrap();
            if report.applied == 0 {
                break;
            }
            out.extend(
                self.engine
                    .apply(&ProfileChanges {
                        events: report.events,
                        merges: report.merges,
                    })
                    .unwrap(),
            );
        }
        self.engine.tick().unwrap();
        out
    }

    fn profile(&self, id_type: &str, value: &str) -> ProfileId {
        self.profiles.find(id_type, value).unwrap().unwrap()
    }

    fn members(&self, key: &str) -> Vec<ProfileId> {
        self.store
            .members(key, i64::MIN, 1000)
            .unwrap()
            .into_iter()
            .map(|m| m.profile_id)
            .collect()
    }

    fn feed(&self) -> Vec<(String, ProfileId, bool, String)> {
        self.store
            .changes(0, None, 1000)
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.change.audience,
                    c.change.profile_id,
                    c.change.entered,
                    c.change.reason,
                )
            })
            .collect()
    }
}

const CART: &str =
    r#"event "Product Added" >= 1 within 7d and not event "Order Completed" within 7d"#;

#[test]
fn cart_abandoners_enter_on_add_and_exit_on_order_in_realtime() {
    let w = World::new();
    w.engine
        .create("cart", "Cart abandoners", "", CART)
        .unwrap();
    w.engine.tick().unwrap();
    let entered = w.send(json!({"type": "track", "userId": "u1", "event": "Product Added", "properties": {"sku": "A"}}));
    let u1 = w.profile("user_id", "u1");
    assert_eq!(entered.len(), 1);
    assert!(entered[0].entered && entered[0].profile_id == u1 && entered[0].reason == "event");
    assert_eq!(w.members("cart"), [u1]);
    // A second add changes nothing: no duplicate announcement.
    assert!(
        w.send(json!({"type": "track", "userId": "u1", "event": "Product Added"}))
            .is_empty()
    );
    let exited = w.send(json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 10}}));
    assert_eq!(exited.len(), 1);
    assert!(!exited[0].entered);
    assert!(w.members("cart").is_empty());
}

#[test]
fn a_window_that_expires_without_new_events_exits_on_schedule_with_an_inclusive_bound() {
    let w = World::new();
    w.engine.create("cart", "", "", CART).unwrap();
    w.send(json!({"type": "track", "userId": "u1", "event": "Product Added"}));
    let u1 = w.profile("user_id", "u1");
    // Exactly seven days later the add is still inside the window.
    w.clock.advance_millis(7 * DAY);
    w.engine.tick().unwrap();
    assert_eq!(w.members("cart"), [u1]);
    // One millisecond more and the scheduler takes the profile out.
    w.clock.advance_millis(60_000);
    w.engine.tick().unwrap();
    assert!(w.members("cart").is_empty());
    let feed = w.feed();
    assert_eq!(
        feed.last().unwrap(),
        &("cart".to_owned(), u1, false, "schedule".to_owned())
    );
}

#[test]
fn events_are_placed_by_their_instant_whatever_the_time_zone() {
    let w = World::new();
    w.engine
        .create("recent", "", "", r#"event "Product Added" within 1d"#)
        .unwrap();
    // 2026-11-22T13:59:59+02:00 is 11:59:59Z: one second before the window opens.
    w.send(json!({"type": "track", "userId": "u1", "event": "Product Added", "timestamp": "2026-11-22T13:59:59+02:00"}));
    // 14:00:00+02:00 is exactly the lower bound: inside.
    w.send(json!({"type": "track", "userId": "u2", "event": "Product Added", "timestamp": "2026-11-22T14:00:00+02:00"}));
    assert_eq!(w.members("recent"), [w.profile("user_id", "u2")]);
}

#[test]
fn a_merge_brings_events_from_both_sides_and_the_merged_away_profile_exits() {
    let w = World::new();
    w.engine
        .create("adder", "", "", r#"event "Product Added""#)
        .unwrap();
    w.engine
        .create(
            "buyer-who-added",
            "",
            "",
            r#"event "Product Added" and event "Order Completed""#,
        )
        .unwrap();
    w.send(json!({"type": "track", "anonymousId": "anon-1", "event": "Product Added"}));
    let anonymous = w.profile("anonymous_id", "anon-1");
    w.send(json!({"type": "track", "userId": "u1", "event": "Order Completed"}));
    let known = w.profile("user_id", "u1");
    assert_eq!(w.members("adder"), [anonymous]);
    assert!(w.members("buyer-who-added").is_empty());
    // The person logs in on the device: both profiles become one.
    let changes = w.send(json!({"type": "identify", "userId": "u1", "anonymousId": "anon-1"}));
    let merged = w.profile("user_id", "u1");
    assert_eq!(merged, w.profile("anonymous_id", "anon-1"));
    assert!([anonymous, known].contains(&merged));
    assert_eq!(w.members("buyer-who-added"), [merged]);
    assert_eq!(w.members("adder"), [merged]);
    if merged != anonymous {
        assert!(
            changes
                .iter()
                .any(|c| c.profile_id == anonymous && !c.entered && c.reason == "merged")
        );
    }
}

#[test]
fn computed_traits_rfm_and_nested_audiences_are_usable_in_conditions() {
    let w = World::new();
    w.engine
        .create("repeat", "", "", "computed total_orders >= 2")
        .unwrap();
    w.engine
        .create(
            "pro-repeat",
            "",
            "",
            r#"audience repeat and trait plan = "pro""#,
        )
        .unwrap();
    w.send(json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}));
    w.send(json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 20}}));
    assert!(w.members("repeat").is_empty());
    w.send(json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 30}}));
    let u1 = w.profile("user_id", "u1");
    assert_eq!(w.members("repeat"), [u1]);
    assert_eq!(w.members("pro-repeat"), [u1]);
    let values = w.engine.computed_values(u1);
    assert_eq!(values["total_orders"], json!(2));
    assert_eq!(values["lifetime_value"], json!(50));
    assert!(values.contains_key("rfm_segment"));
    // A cycle is refused; so is deleting an audience another one uses.
    assert!(
        w.engine
            .update("repeat", None, None, Some("audience \"pro-repeat\""))
            .is_err()
    );
    assert!(w.engine.delete("repeat").is_err());
}

#[test]
fn a_restart_recomputes_everything_and_announces_nothing_twice() {
    let w = World::new();
    w.engine.create("cart", "", "", CART).unwrap();
    w.send(json!({"type": "track", "userId": "u1", "event": "Product Added"}));
    w.send(json!({"type": "track", "userId": "u2", "event": "Product Added"}));
    let before = w.feed();
    assert_eq!(before.len(), 2);
    let (again, _) = engine_over(w.dir.path(), Arc::clone(&w.clock));
    again.tick().unwrap();
    assert_eq!(w.feed(), before);
    assert_eq!(again.status("cart").members, 2);
    // An edited definition is recomputed in batch: both leave.
    again
        .update("cart", None, None, Some(r#"trait plan = "pro""#))
        .unwrap();
    again.tick().unwrap();
    let after = w.feed();
    assert_eq!(after.len(), 4);
    assert!(
        after[2..]
            .iter()
            .all(|(_, _, entered, reason)| !entered && reason == "computed")
    );
    let _ = &w.catalog;
}

#[test]
fn preview_counts_and_samples_without_storing_anything() {
    let w = World::new();
    for (user, plan) in [("u1", "pro"), ("u2", "free"), ("u3", "pro")] {
        w.send(json!({"type": "identify", "userId": user, "traits": {"plan": plan, "email": format!("{user}@example.com")}}));
    }
    let condition = w
        .engine
        .check_definition(r#"trait plan = "pro""#, None)
        .unwrap();
    let preview = w.engine.preview(&condition, 1);
    assert_eq!(preview.count, 2);
    assert_eq!(preview.sample.len(), 1);
    assert_eq!(preview.sample[0].traits["plan"], json!("pro"));
    assert!(w.feed().is_empty());
}

#[test]
fn an_index_rebuilt_from_the_store_equals_the_one_kept_live() {
    let w = World::new();
    w.send(json!({"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro", "address": {"country": "DE"}}}));
    w.send(json!({"type": "track", "anonymousId": "a1", "event": "Product Added", "properties": {"category": "shoes", "sku": "S1"}}));
    w.send(json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 12.5, "category": "bags"}}));
    w.send(json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "u1@example.com"}}));
    w.send(json!({"type": "page", "userId": "u2", "properties": {"path": "/"}}));
    w.send(json!({"type": "track", "userId": "u2", "event": "Product Added to Wishlist", "properties": {"sku": "W1"},
                  "context": {"consent": {"categoryPreferences": {"marketing": true}}}}));
    let (rebuilt, _) = engine_over(w.dir.path(), Arc::clone(&w.clock));
    for definition in [
        r#"trait "address.country" = "DE" and identifier email"#,
        r#"event "Product Added" and event "Order Completed""#,
        r#"event "Page Viewed" and consent marketing"#,
        "computed total_orders = 1",
        r#"computed wishlist contains "W1""#,
    ] {
        let condition = w.engine.check_definition(definition, None).unwrap();
        let live = w.engine.preview(&condition, 10);
        let again = rebuilt.preview(&condition, 10);
        assert_eq!(live, again, "{definition}");
        assert_eq!(live.count, 1, "{definition}");
    }
    // The RFM model is refreshed on the schedule: let both refresh before comparing.
    w.clock.advance_millis(61_000);
    w.engine.tick().unwrap();
    rebuilt.tick().unwrap();
    for user in ["u1", "u2"] {
        let id = w.profile("user_id", user);
        assert_eq!(w.engine.computed_values(id), rebuilt.computed_values(id));
    }
}

#[test]
fn events_before_a_merge_in_the_same_chunk_follow_the_merge() {
    let w = World::new();
    w.engine
        .create(
            "buyers",
            "",
            "",
            r#"event "Order Completed" and identifier email"#,
        )
        .unwrap();
    w.engine.tick().unwrap();
    // Appended together, applied in one processor chunk: the order goes to the anonymous
    // profile, which the identify then merges into the known one.
    for message in [
        json!({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}),
        json!({"type": "track", "anonymousId": "a1", "event": "Order Completed", "properties": {"revenue": 5}}),
        json!({"type": "identify", "userId": "u1", "anonymousId": "a1"}),
    ] {
        w.append(message);
    }
    w.step();
    let u1 = w.profile("user_id", "u1");
    assert_eq!(w.profile("anonymous_id", "a1"), u1);
    assert_eq!(w.members("buyers"), [u1]);
    assert_eq!(w.engine.computed_values(u1)["total_orders"], json!(1));
}

/// An audience store that fails on demand, and runs a hook before `members`.
struct Flaky {
    inner: Arc<dyn AudienceStore>,
    fail: AtomicBool,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl AudienceStore for Flaky {
    fn apply_changes(&self, changes: &[MembershipChange]) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Engine("disk full".into()));
        }
        self.inner.apply_changes(changes)
    }
    fn members(&self, key: &str, after: ProfileId, limit: usize) -> StoreResult<Vec<Membership>> {
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        self.inner.members(key, after, limit)
    }
    fn audiences_with_members(&self) -> StoreResult<Vec<String>> {
        self.inner.audiences_with_members()
    }
    fn member_count(&self, key: &str) -> StoreResult<i64> {
        self.inner.member_count(key)
    }
    fn memberships(&self, profile: ProfileId) -> StoreResult<Vec<Membership>> {
        self.inner.memberships(profile)
    }
    fn changes(
        &self,
        after: i64,
        key: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<StoredChange>> {
        self.inner.changes(after, key, limit)
    }
    fn profile_changes(&self, profile: ProfileId) -> StoreResult<Vec<StoredChange>> {
        self.inner.profile_changes(profile)
    }
    fn erase_profiles(&self, profiles: &[ProfileId]) -> StoreResult<()> {
        self.inner.erase_profiles(profiles)
    }
    fn purge_deleted(&self) -> StoreResult<()> {
        self.inner.purge_deleted()
    }
}

/// A second engine over the world's stores whose audience store can fail.
fn flaky_engine(w: &World) -> (AudienceEngine, Arc<Flaky>) {
    let (log, catalog) = open_data_dir(w.dir.path()).unwrap();
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&w.store),
        fail: AtomicBool::new(false),
        hook: Mutex::new(None),
    });
    let engine = AudienceEngine::new(
        Arc::new(catalog),
        flaky.clone(),
        Arc::clone(&w.profiles),
        Arc::new(log),
        w.clock.clone(),
        EngineOptions {
            schedule_interval_ms: 60_000,
            ..EngineOptions::default()
        },
    );
    (engine, flaky)
}

/// Appends and processes with `engine`; the engine's error, if any.
fn send_with(w: &World, engine: &AudienceEngine, message: Value) -> Result<(), String> {
    w.append(message);
    let mut result = Ok(());
    loop {
        let report = w.processor.run_chunk_reporting(100).unwrap();
        if report.applied == 0 {
            return result;
        }
        if let Err(e) = engine.apply(&ProfileChanges {
            events: report.events,
            merges: report.merges,
        }) {
            result = Err(e.to_string());
        }
    }
}

#[test]
fn a_failed_realtime_write_is_reconciled_from_the_store() {
    let w = World::new();
    let (engine, flaky) = flaky_engine(&w);
    engine.load(&mut |_, _| {}).unwrap();
    engine
        .create("pro", "", "", r#"trait plan = "pro""#)
        .unwrap();
    engine.tick().unwrap();
    flaky.fail.store(true, Ordering::SeqCst);
    assert!(
        send_with(
            &w,
            &engine,
            json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}})
        )
        .is_err()
    );
    flaky.fail.store(false, Ordering::SeqCst);
    engine.tick().unwrap();
    assert_eq!(w.members("pro"), [w.profile("user_id", "u1")]);
    assert_eq!(engine.status("pro").members, 1);
}

#[test]
fn a_failed_batch_write_neither_repeats_entries_nor_loses_exits() {
    let w = World::new();
    let (engine, flaky) = flaky_engine(&w);
    engine.load(&mut |_, _| {}).unwrap();
    engine
        .create("pro", "", "", r#"trait plan = "pro""#)
        .unwrap();
    engine.tick().unwrap();
    send_with(
        &w,
        &engine,
        json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro", "vip": true}}),
    )
    .unwrap();
    send_with(
        &w,
        &engine,
        json!({"type": "identify", "userId": "u2", "traits": {"plan": "pro"}}),
    )
    .unwrap();
    assert_eq!(w.members("pro").len(), 2);
    engine
        .update(
            "pro",
            None,
            None,
            Some(r#"trait plan = "pro" and trait vip = true"#),
        )
        .unwrap();
    flaky.fail.store(true, Ordering::SeqCst);
    assert!(engine.tick().is_err());
    flaky.fail.store(false, Ordering::SeqCst);
    engine.tick().unwrap();
    let u1 = w.profile("user_id", "u1");
    assert_eq!(w.feed().iter().filter(|c| c.1 == u1 && c.2).count(), 1);
    assert_eq!(w.members("pro"), [u1]);
}

#[test]
fn a_cli_preview_never_writes_to_the_members_of_a_running_server() {
    let w = Arc::new(World::new());
    w.engine
        .create("pro", "", "", r#"trait plan = "pro""#)
        .unwrap();
    w.engine.tick().unwrap();
    w.send(json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}));
    // The CLI's engine: the server adds u2 after the CLI's index is built.
    let (cli, flaky) = flaky_engine(&w);
    cli.load_definitions().unwrap();
    let server = Arc::clone(&w);
    *flaky.hook.lock().unwrap() = Some(Box::new(move || {
        server.send(json!({"type": "identify", "userId": "u2", "traits": {"plan": "pro"}}));
    }));
    cli.load(&mut |_, _| {}).unwrap();
    assert!(
        w.members("pro").contains(&w.profile("user_id", "u2")),
        "feed: {:?}",
        w.feed()
    );
}

#[test]
fn a_cli_delete_racing_the_server_leaves_no_member_behind() {
    let w = World::new();
    w.engine
        .create("pro", "", "", r#"trait plan = "pro""#)
        .unwrap();
    w.engine.tick().unwrap();
    let (cli, _) = flaky_engine(&w);
    cli.load_definitions().unwrap();
    cli.delete("pro").unwrap();
    // Before the server's next tick notices, an event makes a member.
    w.append(json!({"type": "identify", "userId": "u9", "traits": {"plan": "pro"}}));
    let report = w.processor.run_chunk_reporting(100).unwrap();
    w.engine
        .apply(&ProfileChanges {
            events: report.events,
            merges: report.merges,
        })
        .unwrap();
    w.engine.tick().unwrap();
    let u9 = w.profile("user_id", "u9");
    assert!(w.store.memberships(u9).unwrap().is_empty());
    assert!(
        w.feed()
            .iter()
            .any(|c| c.1 == u9 && !c.2 && c.3 == "deleted")
    );
}
