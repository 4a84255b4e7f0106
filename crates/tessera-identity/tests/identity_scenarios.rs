//! Identity scenarios over the real SQLite stores: events are normalized as the
//! tracking API does, appended to the log, and folded by the processor.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_core::fields::MessageFields;
use tessera_core::message::{RequestDefaults, normalize};
use tessera_core::time::parse_timestamp;
use tessera_identity::identifiers::Identifier;
use tessera_identity::processor::Processor;
use tessera_identity::rules::IdentityRules;
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{AppendBatch, Catalog, EventLog, EventRecord, NewSource};
use tessera_store_sqlite::{SqliteProfileStore, open_data_dir};

struct World {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    catalog: Arc<dyn Catalog>,
    profiles: Arc<dyn ProfileStore>,
    processor: Processor,
    sources: BTreeMap<&'static str, i64>,
    clock: i64,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, catalog) = open_data_dir(dir.path()).expect("stores");
        let catalog: Arc<dyn Catalog> = Arc::new(catalog);
        let mut sources = BTreeMap::new();
        for name in ["web", "app", "crm"] {
            let source = catalog
                .create_source(&NewSource {
                    id: format!("src_{name}"),
                    name: name.into(),
                    write_key_hash: format!("hash-{name}"),
                    write_key_prefix: "x".into(),
                    created_at_ms: 0,
                })
                .expect("source");
            sources.insert(name, source.key);
        }
        let log: Arc<dyn EventLog> = Arc::new(log);
        let profiles: Arc<dyn ProfileStore> =
            Arc::new(SqliteProfileStore::open_in(dir.path()).expect("profiles"));
        let processor = Processor::new(
            Arc::clone(&log),
            Arc::clone(&profiles),
            Arc::clone(&catalog),
        )
        .expect("processor");
        Self {
            _dir: dir,
            log,
            catalog,
            profiles,
            processor,
            sources,
            clock: parse_timestamp("2026-11-01T09:00:00Z")
                .map(|t| t.timestamp_millis())
                .unwrap_or_default(),
        }
    }

    /// Sends a message from a source, one minute after the previous one.
    fn send(&mut self, source: &str, message: Value) {
        self.clock += 60_000;
        let now = DateTime::<Utc>::from_timestamp_millis(self.clock).unwrap_or_default();
        let text = message.to_string();
        let fields = MessageFields::from_json(&text).expect("message must be an object");
        let normalized =
            normalize(fields, None, &RequestDefaults::default(), now).expect("valid message");
        let record = EventRecord {
            source_key: self.sources[source],
            payload: normalized.payload,
            message_id: normalized.message_id,
            received_at_ms: normalized.received_at.timestamp_millis(),
        };
        self.log
            .append(&[AppendBatch {
                events: vec![record],
                rejections: vec![],
            }])
            .expect("append");
    }

    fn process(&self) {
        self.processor.catch_up(&mut |_, _| {}).expect("process");
    }

    fn profile(&self, id_type: &str, value: &str) -> Option<ProfileId> {
        self.profiles.find(id_type, value).expect("find")
    }

    fn traits(&self, profile: ProfileId) -> Map<String, Value> {
        self.profiles
            .traits(profile)
            .expect("traits")
            .into_iter()
            .map(|t| {
                (
                    t.name,
                    serde_json::from_str(&t.value_json).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    fn identifiers(&self, profile: ProfileId) -> Vec<String> {
        let mut ids: Vec<String> = self
            .profiles
            .identities(profile)
            .expect("identities")
            .into_iter()
            .map(|l| format!("{}:{}", l.id_type, l.value))
            .collect();
        ids.sort();
        ids
    }

    fn event_count(&self, profile: ProfileId) -> usize {
        self.profiles
            .event_seqs(profile, None, 10_000)
            .expect("events")
            .len()
    }

    /// Everything derived, in a comparable form.
    fn snapshot(&self) -> Vec<Value> {
        let mut seen = Vec::new();
        let last = self.log.last_seq().expect("last seq");
        for seq in 1..=last {
            if self
                .profiles
                .profile(seq)
                .expect("profile")
                .is_some_and(|p| p.merged_into.is_none())
            {
                seen.push(json!({
                    "id": seq,
                    "identifiers": self.identifiers(seq),
                    "traits": self.traits(seq),
                    "events": self.profiles.event_seqs(seq, None, 10_000).expect("events"),
                    "groups": self.profiles.groups(seq).expect("groups").iter().map(|g| g.group_id.clone()).collect::<Vec<_>>(),
                    "merges": self.profiles.merges(seq).expect("merges").iter().map(|m| (m.loser, m.rule.clone())).collect::<Vec<_>>(),
                }));
            }
        }
        seen
    }
}

#[test]
fn anonymous_browsing_then_email_login_then_app_phone_login_is_one_profile() {
    let mut w = World::new();
    w.send(
        "web",
        json!({"type": "page", "anonymousId": "cookie-1", "name": "Home"}),
    );
    w.send("web", json!({"type": "track", "anonymousId": "cookie-1", "event": "Product Added", "properties": {"sku": "A-1"}}));
    w.send("web", json!({"type": "identify", "anonymousId": "cookie-1", "traits": {"email": "Jane@Example.com", "name": "Jane"}}));
    w.send("app", json!({"type": "identify", "anonymousId": "app-device-7", "traits": {"email": "jane@example.com", "phone": "+1 415 555 2671"}}));
    w.send("app", json!({"type": "identify", "userId": "user-42", "traits": {"phone": "(415) 555-2671"}, "context": {"device": {"id": "iphone-1"}}}));
    w.process();

    let profile = w.profile("user_id", "user-42").expect("profile");
    for (t, v) in [
        ("anonymous_id", "cookie-1"),
        ("email", "jane@example.com"),
        ("phone", "+14155552671"),
        ("device_id", "iphone-1"),
        ("anonymous_id", "app-device-7"),
    ] {
        assert_eq!(w.profile(t, v), Some(profile), "{t}:{v}");
    }
    assert_eq!(w.event_count(profile), 5);
    assert_eq!(w.traits(profile)["name"], "Jane");
    assert_eq!(w.profiles.profile_count().expect("count"), 1);
}

#[test]
fn shared_device_used_by_two_users_stays_two_profiles() {
    let mut w = World::new();
    w.send("app", json!({"type": "identify", "userId": "alice", "context": {"device": {"id": "family-ipad"}}, "traits": {"name": "Alice"}}));
    w.send("app", json!({"type": "identify", "userId": "bob", "context": {"device": {"id": "family-ipad"}}, "traits": {"name": "Bob"}}));
    w.send("app", json!({"type": "track", "userId": "bob", "event": "Order Completed", "context": {"device": {"id": "family-ipad"}}}));
    w.process();

    let alice = w.profile("user_id", "alice").expect("alice");
    let bob = w.profile("user_id", "bob").expect("bob");
    assert_ne!(alice, bob);
    assert_eq!(w.traits(alice)["name"], "Alice");
    assert_eq!(w.traits(bob)["name"], "Bob");
    assert_eq!(w.event_count(bob), 2);
    let conflicts = w.profiles.conflicts(10).expect("conflicts");
    assert!(
        conflicts
            .iter()
            .any(|c| c.dropped_type == "device_id" && c.detail.contains("user_id"))
    );
}

#[test]
fn blocked_values_never_link_people() {
    let mut w = World::new();
    w.send("web", json!({"type": "identify", "userId": "a", "anonymousId": "null", "traits": {"email": "a@x.io"}}));
    w.send(
        "web",
        json!({"type": "identify", "userId": "b", "anonymousId": "null"}),
    );
    w.send(
        "web",
        json!({"type": "identify", "anonymousId": "00000", "traits": {"phone": "0"}}),
    );
    w.process();
    assert_ne!(w.profile("user_id", "a"), w.profile("user_id", "b"));
    assert_eq!(w.profile("anonymous_id", "null"), None);
    // No usable identifier: the third message belongs to nobody.
    assert_eq!(w.profiles.profile_count().expect("count"), 2);
}

#[test]
fn alias_links_previous_id_to_user_id() {
    let mut w = World::new();
    w.send(
        "web",
        json!({"type": "track", "anonymousId": "anon-5", "event": "Signed Up"}),
    );
    w.send(
        "web",
        json!({"type": "identify", "userId": "u-5", "traits": {"plan": "pro"}}),
    );
    w.send(
        "web",
        json!({"type": "alias", "userId": "u-5", "previousId": "anon-5"}),
    );
    w.process();
    let profile = w.profile("user_id", "u-5").expect("profile");
    assert_eq!(w.profile("anonymous_id", "anon-5"), Some(profile));
    assert_eq!(w.event_count(profile), 3);
    let merges = w.profiles.merges(profile).expect("merges");
    assert_eq!(merges.len(), 1);
    assert!(merges[0].rule.contains("anonymous_id") || merges[0].rule.contains("user_id"));
}

#[test]
fn merging_two_profiles_keeps_newest_traits_and_all_events() {
    let mut w = World::new();
    w.send("web", json!({"type": "identify", "anonymousId": "c1", "traits": {"email": "p@x.io", "city": "Berlin", "first": "web"}}));
    w.send(
        "app",
        json!({"type": "identify", "userId": "p-1", "traits": {"city": "Hamburg", "plan": "free"}}),
    );
    w.send(
        "app",
        json!({"type": "track", "userId": "p-1", "event": "Order Completed"}),
    );
    w.send(
        "web",
        json!({"type": "identify", "anonymousId": "c1", "userId": "p-1"}),
    );
    w.process();
    let profile = w.profile("user_id", "p-1").expect("profile");
    assert_eq!(w.profile("email", "p@x.io"), Some(profile));
    let traits = w.traits(profile);
    assert_eq!(traits["city"], "Hamburg");
    assert_eq!(traits["first"], "web");
    assert_eq!(traits["plan"], "free");
    assert_eq!(w.event_count(profile), 4);
    // The oldest profile survives: its id is the seq of the first event.
    assert_eq!(profile, 1);
}

#[test]
fn a_source_ranked_higher_for_a_trait_wins_whatever_the_time() {
    let mut w = World::new();
    let mut rules = IdentityRules::default();
    rules
        .trait_sources
        .insert("email".into(), vec!["crm".into(), "web".into()]);
    w.processor.set_rules(rules).expect("rules");
    w.send("crm", json!({"type": "identify", "userId": "c-1", "traits": {"email": "crm@x.io", "title": "CTO"}}));
    w.send("web", json!({"type": "identify", "userId": "c-1", "traits": {"email": "web@x.io", "title": "Founder"}}));
    w.process();
    let profile = w.profile("user_id", "c-1").expect("profile");
    let traits = w.traits(profile);
    assert_eq!(traits["email"], "crm@x.io");
    assert_eq!(traits["title"], "Founder");
    let provenance = w.profiles.traits(profile).expect("traits");
    let email = provenance
        .iter()
        .find(|t| t.name == "email")
        .expect("email");
    assert_eq!(email.source_key, w.sources["crm"]);
}

#[test]
fn processing_is_idempotent_and_resumes_from_its_checkpoint() {
    let mut w = World::new();
    w.send(
        "web",
        json!({"type": "track", "anonymousId": "a", "event": "E1"}),
    );
    w.process();
    let before = w.snapshot();
    w.process();
    assert_eq!(w.snapshot(), before);
    w.send(
        "web",
        json!({"type": "track", "anonymousId": "a", "event": "E2"}),
    );
    w.process();
    let profile = w.profile("anonymous_id", "a").expect("profile");
    assert_eq!(w.event_count(profile), 2);
    assert_eq!(w.processor.lag().expect("lag"), 0);
}

#[test]
fn replay_rebuilds_exactly_what_live_processing_built() {
    let mut w = World::new();
    let people = ["ann", "ben", "cai", "dee", "eve"];
    for round in 0..6 {
        for (i, person) in people.iter().enumerate() {
            let anon = format!("cookie-{person}-{}", round % 2);
            w.send(
                "web",
                json!({"type": "page", "anonymousId": anon, "name": format!("p{round}")}),
            );
            if round % 3 == i % 3 {
                w.send("web", json!({"type": "identify", "anonymousId": anon, "userId": person, "traits": {"email": format!("{person}@x.io"), "round": round}}));
            }
            if round == 4 {
                w.send("app", json!({"type": "group", "userId": person, "groupId": "acme", "traits": {"name": "Acme"}}));
                w.send("web", json!({"type": "identify", "userId": person, "context": {"device": {"id": "shared-kiosk"}}}));
            }
        }
        // Process live in several steps, as the server does.
        w.process();
    }
    let live = w.snapshot();
    assert!(live.len() >= people.len());
    w.processor.replay(&mut |_, _| {}).expect("replay");
    assert_eq!(w.snapshot(), live);
}

#[test]
fn unlinking_a_wrong_identifier_splits_the_profiles_and_traits_follow() {
    let mut w = World::new();
    // Two people share a family email; it merged them.
    w.send("web", json!({"type": "identify", "anonymousId": "tom-laptop", "traits": {"email": "family@x.io", "name": "Tom"}}));
    w.send(
        "web",
        json!({"type": "track", "anonymousId": "tom-laptop", "event": "Viewed"}),
    );
    w.send("web", json!({"type": "identify", "anonymousId": "sue-phone", "traits": {"email": "family@x.io", "name": "Sue"}}));
    w.process();
    let merged = w.profile("anonymous_id", "tom-laptop").expect("tom");
    assert_eq!(w.profile("anonymous_id", "sue-phone"), Some(merged));

    let owners = w
        .processor
        .unlink(&Identifier::new("email", "family@x.io"))
        .expect("unlink");
    assert_eq!(owners.len(), 2);
    let tom = w.profile("anonymous_id", "tom-laptop").expect("tom");
    let sue = w.profile("anonymous_id", "sue-phone").expect("sue");
    assert_ne!(tom, sue);
    assert_eq!(w.traits(tom)["name"], "Tom");
    assert_eq!(w.traits(sue)["name"], "Sue");
    assert_eq!(w.event_count(tom), 2);
    assert_eq!(w.profile("email", "family@x.io"), None);

    // The unlink is configuration: new events and a replay respect it.
    w.send("web", json!({"type": "identify", "anonymousId": "tom-laptop", "traits": {"email": "family@x.io"}}));
    w.process();
    assert_ne!(
        w.profile("anonymous_id", "tom-laptop"),
        w.profile("anonymous_id", "sue-phone")
    );
    let _ = &w.catalog;
}

#[test]
fn lookalike_profiles_are_suggested_and_merge_only_when_applied() {
    use tessera_identity::suggestions::{INTERNAL_SOURCE_KEY, merge_message, suggest_merges};
    let mut w = World::new();
    let first = [
        "anna", "bernd", "carla", "dieter", "elena", "frank", "greta", "hans", "ines", "jonas",
        "katrin", "lukas", "maria", "niklas", "olga", "paul", "rita", "stefan", "tanja", "uwe",
    ];
    let last = [
        "meyer",
        "schulz",
        "wagner",
        "becker",
        "hoffmann",
        "koch",
        "richter",
        "klein",
        "wolf",
        "neumann",
        "schwarz",
        "zimmermann",
        "braun",
        "krueger",
        "hartmann",
        "lange",
        "werner",
        "krause",
        "lehmann",
        "koehler",
    ];
    let cities = ["berlin", "hamburg", "munich", "cologne", "frankfurt"];
    for (i, (f, l)) in first.iter().zip(last).enumerate() {
        let dob = format!("19{:02}-0{}-1{}", 60 + i, 1 + i % 9, i % 10);
        w.send("web", json!({"type": "identify", "anonymousId": format!("web-{i}"),
            "traits": {"first_name": f, "last_name": l, "date_of_birth": dob, "city": cities[i % 5]}}));
        // The same person from the shop, with a typo in the surname, no shared identifier.
        let typo = format!("{}{}", &l[..l.len() - 1], "x");
        let shop_last = if i % 2 == 0 { typo.as_str() } else { l };
        w.send("crm", json!({"type": "identify", "anonymousId": format!("shop-{i}"),
            "traits": {"first_name": f, "last_name": shop_last, "date_of_birth": dob, "city": cities[i % 5]}}));
    }
    w.process();
    assert_eq!(w.profiles.profile_count().expect("count"), 40);

    let suggestions = suggest_merges(w.profiles.as_ref(), None, 100).expect("suggestions");
    let pair_of = |i: usize| {
        let a = w.profile("anonymous_id", &format!("web-{i}")).expect("web");
        let b = w
            .profile("anonymous_id", &format!("shop-{i}"))
            .expect("shop");
        (a.min(b), a.max(b))
    };
    let suggested: Vec<(i64, i64)> = suggestions
        .iter()
        .map(|s| (s.left.min(s.right), s.left.max(s.right)))
        .collect();
    let found = (0..20).filter(|i| suggested.contains(&pair_of(*i))).count();
    assert!(
        found >= 18,
        "only {found} of 20 true pairs suggested: {suggested:?}"
    );
    assert!(
        suggested.len() <= 22,
        "too many suggestions: {}",
        suggested.len()
    );
    let top = &suggestions[0];
    assert!(
        top.mergeable
            && top
                .explanation
                .fields
                .iter()
                .any(|f| f.field == "last_name")
    );
    // Nothing merged by suggesting.
    assert_eq!(w.profiles.profile_count().expect("count"), 40);

    let (a, b) = pair_of(3);
    let rules = w.processor.compiled_rules();
    let event = merge_message(
        &rules,
        w.profiles.as_ref(),
        a,
        b,
        "reviewed",
        INTERNAL_SOURCE_KEY,
        1,
    )
    .expect("merge");
    w.log
        .append(&[AppendBatch {
            events: vec![event],
            rejections: vec![],
        }])
        .expect("append");
    w.process();
    assert_eq!(
        w.profile("anonymous_id", "web-3"),
        w.profile("anonymous_id", "shop-3")
    );
    assert_eq!(w.profiles.profile_count().expect("count"), 39);
    let live = w.snapshot();
    w.processor.replay(&mut |_, _| {}).expect("replay");
    assert_eq!(
        w.snapshot(),
        live,
        "an applied merge is in the log, so replay repeats it"
    );
}

#[test]
fn two_profiles_with_user_ids_cannot_be_merged_by_hand() {
    use tessera_identity::suggestions::{INTERNAL_SOURCE_KEY, SuggestionError, merge_message};
    let mut w = World::new();
    w.send("web", json!({"type": "identify", "userId": "a"}));
    w.send("web", json!({"type": "identify", "userId": "b"}));
    w.process();
    let (a, b) = (
        w.profile("user_id", "a").expect("a"),
        w.profile("user_id", "b").expect("b"),
    );
    let rules = w.processor.compiled_rules();
    let result = merge_message(
        &rules,
        w.profiles.as_ref(),
        a,
        b,
        "x",
        INTERNAL_SOURCE_KEY,
        1,
    );
    assert!(
        matches!(result, Err(SuggestionError::User(e)) if e.code == tessera_core::ErrorCode::MergeConflict)
    );
}

#[test]
fn unlinking_rebuilds_a_profile_without_repeating_its_conflicts() {
    let mut w = World::new();
    // Bob's identify drops the device Alice holds: one conflict, on Bob's profile.
    w.send("app", json!({"type": "identify", "userId": "alice", "context": {"device": {"id": "family-ipad"}}}));
    w.send("app", json!({"type": "identify", "userId": "bob", "context": {"device": {"id": "family-ipad"}}, "traits": {"email": "bob@x.io"}}));
    w.process();
    let before = w.profiles.conflicts(100).expect("conflicts");
    assert_eq!(before.len(), 1, "{before:?}");

    // The unlink rebuilds Bob's profile from his events, which drop the device again.
    w.processor
        .unlink(&Identifier::new("email", "bob@x.io"))
        .expect("unlink");
    let after = w.profiles.conflicts(100).expect("conflicts");
    assert_eq!(after.len(), 1, "the rebuild repeated a conflict: {after:?}");
}
