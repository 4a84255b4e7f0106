//! Promises of [`ProfileStore`] and [`ProfileTxn`].

use super::{Ctx, Engine, Outcome, crash_copy, ensure, ensure_eq, ensure_gone, ensure_stored};
use crate::StoreResult;
use crate::profiles::{
    ConflictRecord, ConsentRecord, GroupMembership, IdentityLink, MergeRecord, ProfileId,
    ProfileStore, ProfileTxn, StoredTrait,
};

fn link(profile_id: ProfileId, id_type: &str, value: &str) -> IdentityLink {
    IdentityLink {
        id_type: id_type.to_string(),
        value: value.to_string(),
        profile_id,
        first_seen_ms: 1,
        source_key: 1,
        message_id: format!("m{profile_id}"),
    }
}

fn stored_trait(name: &str, value_json: &str, seq: i64) -> StoredTrait {
    StoredTrait {
        name: name.to_string(),
        value_json: value_json.to_string(),
        source_key: 1,
        message_id: format!("m{seq}"),
        timestamp_ms: seq * 10,
        seq,
    }
}

fn group(group_id: &str, traits_json: &str, timestamp_ms: i64) -> GroupMembership {
    GroupMembership {
        group_id: group_id.to_string(),
        traits_json: traits_json.to_string(),
        timestamp_ms,
    }
}

fn consent(purpose: &str, granted: bool, timestamp_ms: i64, seq: i64) -> ConsentRecord {
    ConsentRecord {
        purpose: purpose.to_string(),
        granted,
        source_key: 1,
        message_id: format!("m{seq}"),
        timestamp_ms,
        seq,
    }
}

fn merge_record(winner: ProfileId, loser: ProfileId, seq: i64) -> MergeRecord {
    MergeRecord {
        winner,
        loser,
        seq,
        message_id: format!("m{seq}"),
        rule: "shared identifier email".into(),
        timestamp_ms: seq * 10,
    }
}

/// Runs `work` in `apply`, answering whether it applied.
fn apply(
    store: &dyn ProfileStore,
    after: i64,
    through: i64,
    mut work: impl FnMut(&mut dyn ProfileTxn) -> StoreResult<()>,
) -> Result<bool, String> {
    store.apply(after, through, &mut work).ctx("apply")
}

/// A profile with an identifier and its events (`seqs`, event time `seq * 10`).
fn create(txn: &mut dyn ProfileTxn, id: ProfileId, email: &str, seqs: &[i64]) -> StoreResult<()> {
    txn.create_profile(id, id * 10)?;
    txn.link(&link(id, "email", email))?;
    for seq in seqs {
        txn.add_event(id, *seq, seq * 10)?;
    }
    Ok(())
}

/// Profile 1 (email a, events 1 and 2, a trait, a group, consent, a conflict),
/// profile 3 (email b, event 3) merged into 1 at seq 5, and profile 4 (email c,
/// event 4); the checkpoint at 5.
fn seed(store: &dyn ProfileStore, marker: &str) -> Result<(), String> {
    let applied = apply(store, 0, 5, |txn| {
        create(txn, 1, &format!("a{marker}"), &[1, 2])?;
        txn.set_trait(1, &stored_trait("plan", &format!("\"{marker}\""), 2))?;
        txn.set_group(1, &group("acme", &format!("{{\"n\":\"{marker}\"}}"), 10))?;
        txn.record_consent(1, &consent("marketing", true, 10, 1))?;
        txn.record_conflict(&ConflictRecord {
            seq: 2,
            message_id: "m2".into(),
            profile_id: Some(1),
            dropped_type: "user_id".into(),
            detail: format!("dropped {marker}"),
        })?;
        create(txn, 3, &format!("b{marker}"), &[3])?;
        txn.record_consent(3, &consent("email", false, 30, 3))?;
        create(txn, 4, "c@example.com", &[4])?;
        txn.merge(&merge_record(1, 3, 5))
    })?;
    ensure!(applied, "apply from the initial checkpoint 0 applies");
    Ok(())
}

/// `apply` runs the work and moves the checkpoint from `after_seq` to `through_seq`
/// together; the checkpoint starts at 0.
pub fn apply_moves_the_checkpoint_with_the_work<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        0,
        "a new store's checkpoint"
    );
    let applied = apply(store.as_ref(), 0, 10, |txn| create(txn, 1, "a@x", &[1]))?;
    ensure!(applied, "apply at the current checkpoint applies");
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        10,
        "the checkpoint moved to through_seq"
    );
    ensure_eq!(
        store.find("email", "a@x").ctx("find")?,
        Some(1),
        "the work's writes are there"
    );
    ensure!(
        apply(store.as_ref(), 10, 20, |txn| create(txn, 12, "b@x", &[12]))?,
        "the next chunk applies"
    );
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        20,
        "the checkpoint moved again"
    );
    Ok(())
}

/// `apply` is a compare-and-set on the checkpoint: from any `after_seq` other than
/// the current checkpoint it answers `false` and applies nothing.
pub fn apply_is_compare_and_set<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    ensure!(
        apply(store.as_ref(), 0, 10, |txn| create(txn, 1, "a@x", &[1]))?,
        "the first chunk applies"
    );
    for stale in [0, 5, 15] {
        let applied = apply(store.as_ref(), stale, 30, |txn| create(txn, 2, "b@x", &[2]))?;
        ensure!(
            !applied,
            "apply from {stale} while the checkpoint is 10 answered true"
        );
        ensure_eq!(
            store.checkpoint().ctx("checkpoint")?,
            10,
            "a refused apply leaves the checkpoint"
        );
        ensure_eq!(
            store.profile(2).ctx("profile")?,
            None,
            "a refused apply writes nothing"
        );
    }
    Ok(())
}

/// Processors racing to apply the same chunk (threads on one handle and on separate
/// handles, as processes would): exactly one applies it.
pub fn apply_race_has_one_winner<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    let shared: &dyn ProfileStore = store.as_ref();
    let wins = std::thread::scope(|scope| -> Result<Vec<bool>, String> {
        let handles: Vec<_> = (0..6i64)
            .map(|t| {
                let place = &place;
                scope.spawn(move || -> Result<bool, String> {
                    let work = |txn: &mut dyn ProfileTxn| {
                        create(txn, 100 + t, &format!("{t}@x"), &[100 + t])
                    };
                    if t % 2 == 0 {
                        apply(shared, 0, 10, work)
                    } else {
                        let own = engine
                            .profiles(place)
                            .ctx("open a second profile store handle")?;
                        apply(own.as_ref(), 0, 10, work)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a racing thread panicked".to_string())?
            })
            .collect()
    })?;
    ensure_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "racing applies of one chunk: winners"
    );
    ensure_eq!(
        store.profile_count().ctx("profile_count")?,
        1,
        "only the winner's work is stored"
    );
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        10,
        "the checkpoint after the race"
    );
    Ok(())
}

/// Work that fails inside `apply` applies nothing and leaves the checkpoint: the
/// chunk and the checkpoint are one transaction.
pub fn failed_work_applies_nothing<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    let result = store.apply(0, 10, &mut |txn| {
        create(txn, 1, "a@x", &[1])?;
        Err(crate::StoreError::Engine("the work failed".into()))
    });
    ensure!(result.is_err(), "apply returns the work's error");
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        0,
        "a failed chunk leaves the checkpoint"
    );
    ensure_eq!(
        store.profile(1).ctx("profile")?,
        None,
        "a failed chunk writes nothing"
    );
    ensure_eq!(
        store.find("email", "a@x").ctx("find")?,
        None,
        "a failed chunk links nothing"
    );
    ensure!(
        apply(store.as_ref(), 0, 10, |txn| create(txn, 1, "a@x", &[1]))?,
        "the chunk applies on retry"
    );
    Ok(())
}

/// `merge` moves the loser's identifiers, events, groups and consent to the winner,
/// marks the loser merged into it (and every profile merged into the loser before),
/// records the merge, and adds up merge and event counts and first/last seen.
pub fn merge_moves_everything_to_the_winner<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    ensure_eq!(
        store.find("email", "b@example.com").ctx("find")?,
        Some(1),
        "the loser's identifier points at the winner"
    );
    let loser = store.profile(3).ctx("profile")?;
    ensure_eq!(
        loser.and_then(|p| p.merged_into),
        Some(1),
        "the loser is merged into the winner"
    );
    let winner = store
        .profile(1)
        .ctx("profile")?
        .ok_or("the winner is gone")?;
    ensure_eq!(
        (
            winner.merged_into,
            winner.merge_count,
            winner.event_count,
            winner.first_seen_ms,
            winner.last_seen_ms
        ),
        (None, 1, 3, 10, 30),
        "the winner's summary (merged_into, merge_count, event_count, first and last seen)"
    );
    ensure_eq!(
        store.event_seqs(1, None, 10).ctx("event_seqs")?,
        vec![3, 2, 1],
        "the loser's events moved"
    );
    ensure_eq!(
        store.event_seqs(3, None, 10).ctx("event_seqs")?,
        Vec::<i64>::new(),
        "the loser keeps no events"
    );
    ensure_eq!(
        store.merged_members(1).ctx("merged_members")?,
        vec![3],
        "merged_members"
    );
    ensure_eq!(
        store.merges(1).ctx("merges")?,
        vec![merge_record(1, 3, 5)],
        "the merge is recorded"
    );
    let purposes: Vec<String> = store
        .consent(1)
        .ctx("consent")?
        .into_iter()
        .map(|c| c.purpose)
        .collect();
    ensure_eq!(
        purposes,
        vec!["marketing", "email"],
        "the loser's consent moved"
    );
    // A chain: 1 (with 3 in it) merged into 4.
    ensure!(
        apply(store.as_ref(), 5, 6, |txn| txn
            .merge(&merge_record(4, 1, 6)))?,
        "the second merge applies"
    );
    let mut members = store.merged_members(4).ctx("merged_members")?;
    members.sort_unstable();
    ensure_eq!(
        members,
        vec![1, 3],
        "profiles merged into the loser follow it"
    );
    ensure_eq!(
        store.find("email", "b@example.com").ctx("find")?,
        Some(4),
        "identifiers follow the chain"
    );
    ensure_eq!(
        store.merges(4).ctx("merges")?.len(),
        2,
        "the loser's merge history moves to the winner"
    );
    ensure_eq!(
        store.profile_count().ctx("profile_count")?,
        1,
        "one canonical profile left"
    );
    Ok(())
}

/// Within one transaction every read sees the transaction's own writes (an engine
/// may hold them back and write them at the end, as long as no read can tell):
/// `profile_of` after `link` and `merge`, `trait_value`/`traits` after `set_trait`,
/// `summary` after `add_event`, the loser's traits gone after `merge`; and all of it
/// is in the store once the work is done.
pub fn transactions_read_their_own_writes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    let applied = apply(store.as_ref(), 0, 9, |txn| {
        let check = |ok: bool, what: &str| -> StoreResult<()> {
            if ok {
                Ok(())
            } else {
                Err(crate::StoreError::Engine(format!(
                    "in the transaction: {what}"
                )))
            }
        };
        check(
            txn.profile_of("email", "a@x")?.is_none(),
            "no owner before link",
        )?;
        create(txn, 1, "a@x", &[1, 2])?;
        check(
            txn.profile_of("email", "a@x")? == Some(1),
            "profile_of after link",
        )?;
        txn.set_trait(1, &stored_trait("plan", "\"free\"", 1))?;
        txn.set_trait(1, &stored_trait("plan", "\"pro\"", 2))?;
        txn.set_trait(1, &stored_trait("age", "42", 2))?;
        check(
            txn.trait_value(1, "plan")?.map(|t| t.value_json) == Some("\"pro\"".into()),
            "trait_value after set_trait",
        )?;
        let names: Vec<String> = txn.traits(1)?.into_iter().map(|t| t.name).collect();
        check(
            names == ["age", "plan"],
            "traits after set_trait, in name order",
        )?;
        let summary = txn.summary(1)?;
        check(
            summary.map(|s| (s.event_count, s.first_seen_ms, s.last_seen_ms)) == Some((2, 10, 20)),
            "summary after add_event",
        )?;
        create(txn, 3, "b@x", &[3])?;
        txn.set_trait(3, &stored_trait("city", "\"Oslo\"", 3))?;
        txn.add_event(1, 4, 40)?;
        txn.merge(&merge_record(1, 3, 5))?;
        check(
            txn.profile_of("email", "b@x")? == Some(1),
            "profile_of after merge",
        )?;
        check(
            txn.traits(3)?.is_empty(),
            "the loser's traits are gone after merge",
        )?;
        let summary = txn.summary(1)?;
        check(
            summary.map(|s| (s.event_count, s.last_seen_ms, s.merge_count)) == Some((4, 40, 1)),
            "the winner's summary after merge",
        )?;
        txn.set_trait(1, &stored_trait("plan", "\"team\"", 6))
    })?;
    ensure!(applied, "apply from the initial checkpoint 0 applies");
    let traits: Vec<(String, String)> = store
        .traits(1)
        .ctx("traits")?
        .into_iter()
        .map(|t| (t.name, t.value_json))
        .collect();
    ensure_eq!(
        traits,
        vec![
            ("age".into(), "42".into()),
            ("plan".into(), "\"team\"".into())
        ],
        "the transaction's last trait values are stored"
    );
    ensure_eq!(
        store.traits(3).ctx("traits")?,
        Vec::<StoredTrait>::new(),
        "the loser keeps no traits"
    );
    let winner = store
        .profile(1)
        .ctx("profile")?
        .ok_or("the winner is gone")?;
    ensure_eq!(
        (
            winner.event_count,
            winner.first_seen_ms,
            winner.last_seen_ms
        ),
        (4, 10, 40),
        "the winner's counters are stored"
    );
    Ok(())
}

/// Reads of one profile: events newest first below `before_seq` (at most `limit`);
/// consent oldest first by time then log position; conflicts newest first; a trait
/// set again is replaced; a group set with an older time keeps the newer traits;
/// `add_event` widens first/last seen.
pub fn profile_reads_are_ordered<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    let applied = apply(store.as_ref(), 0, 9, |txn| {
        txn.create_profile(5, 50)?;
        for seq in [5, 7, 6, 9] {
            txn.add_event(5, seq, seq * 10)?;
        }
        txn.add_event(5, 2, 20)?;
        txn.record_consent(5, &consent("sms", true, 70, 7))?;
        txn.record_consent(5, &consent("email", false, 60, 9))?;
        txn.record_consent(5, &consent("push", true, 60, 6))?;
        txn.set_trait(5, &stored_trait("plan", "\"free\"", 5))?;
        txn.set_trait(5, &stored_trait("plan", "\"pro\"", 6))?;
        txn.set_group(5, &group("g", "{\"v\":2}", 200))?;
        txn.set_group(5, &group("g", "{\"v\":1}", 100))?;
        for (id_type, value) in [
            ("phone", "+49"),
            ("email", "b@x"),
            ("anonymous_id", "a1"),
            ("email", "a@x"),
        ] {
            txn.link(&link(5, id_type, value))?;
        }
        for (seq, detail) in [(5, "first"), (6, "second"), (7, "third")] {
            txn.record_conflict(&ConflictRecord {
                seq,
                message_id: format!("m{seq}"),
                profile_id: Some(5),
                dropped_type: "user_id".into(),
                detail: detail.into(),
            })?;
        }
        ensure_eq_store(
            txn.trait_value(5, "plan")?.map(|t| t.value_json),
            Some("\"pro\"".into()),
        )
    })?;
    ensure!(applied, "apply");
    ensure_eq!(
        store.event_seqs(5, None, 10).ctx("event_seqs")?,
        vec![9, 7, 6, 5, 2],
        "events newest first"
    );
    ensure_eq!(
        store.event_seqs(5, Some(7), 2).ctx("event_seqs")?,
        vec![6, 5],
        "below before_seq, at most limit"
    );
    let summary = store
        .profile(5)
        .ctx("profile")?
        .ok_or("the profile is missing")?;
    ensure_eq!(
        (
            summary.first_seen_ms,
            summary.last_seen_ms,
            summary.event_count
        ),
        (20, 90, 5),
        "first/last seen widened, events counted"
    );
    let order: Vec<String> = store
        .consent(5)
        .ctx("consent")?
        .into_iter()
        .map(|c| c.purpose)
        .collect();
    ensure_eq!(
        order,
        vec!["push", "email", "sms"],
        "consent by event time, then log position"
    );
    ensure_eq!(
        store.traits(5).ctx("traits")?,
        vec![stored_trait("plan", "\"pro\"", 6)],
        "a trait set again is replaced"
    );
    ensure_eq!(
        store.groups(5).ctx("groups")?,
        vec![group("g", "{\"v\":2}", 200)],
        "a group keeps its latest traits"
    );
    ensure_eq!(
        store.identifier_types(5).ctx("identifier_types")?,
        vec!["anonymous_id", "email", "phone"],
        "identifier types distinct and sorted"
    );
    let details: Vec<String> = store
        .conflicts(2)
        .ctx("conflicts")?
        .into_iter()
        .map(|c| c.detail)
        .collect();
    ensure_eq!(
        details,
        vec!["third", "second"],
        "conflicts newest first, at most limit"
    );
    Ok(())
}

/// An equality check usable inside a `ProfileTxn` closure.
fn ensure_eq_store<T: PartialEq + std::fmt::Debug>(found: T, expected: T) -> StoreResult<()> {
    if found == expected {
        Ok(())
    } else {
        Err(crate::StoreError::Engine(format!(
            "inside the transaction: expected {expected:?}, found {found:?}"
        )))
    }
}

/// `reset` deletes all derived state and puts the checkpoint back to 0.
pub fn reset_empties_everything<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    store.reset().ctx("reset")?;
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        0,
        "the checkpoint after reset"
    );
    ensure_eq!(
        store.profile_count().ctx("profile_count")?,
        0,
        "profiles after reset"
    );
    ensure_eq!(
        store.profile(1).ctx("profile")?,
        None,
        "a profile after reset"
    );
    ensure_eq!(
        store.find("email", "a@example.com").ctx("find")?,
        None,
        "an identifier after reset"
    );
    ensure!(
        store.conflicts(10).ctx("conflicts")?.is_empty(),
        "conflicts after reset"
    );
    ensure!(
        store.merges(1).ctx("merges")?.is_empty(),
        "merges after reset"
    );
    ensure!(
        store.consent(1).ctx("consent")?.is_empty(),
        "consent after reset"
    );
    ensure!(
        store
            .event_owner_page((0, 0), 10)
            .ctx("event_owner_page")?
            .is_empty(),
        "events after reset"
    );
    seed(store.as_ref(), "@example.com")?;
    Ok(())
}

/// `erase` removes canonical profiles and every profile merged into them with all
/// attached (identities, traits, events, groups, consent, merges, conflicts), returns
/// the ids removed, and leaves other profiles alone.
pub fn erase_removes_profiles_and_merged_ones<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    let mut removed = store.erase(&[1]).ctx("erase")?;
    removed.sort_unstable();
    ensure_eq!(
        removed,
        vec![1, 3],
        "erase returns the profile and those merged into it"
    );
    for id in [1, 3] {
        ensure_eq!(store.profile(id).ctx("profile")?, None, "an erased profile");
        ensure!(
            store.identities(id).ctx("identities")?.is_empty(),
            "identities of erased profile {id}"
        );
        ensure!(
            store.traits(id).ctx("traits")?.is_empty(),
            "traits of erased profile {id}"
        );
        ensure!(
            store.event_seqs(id, None, 10).ctx("event_seqs")?.is_empty(),
            "events of erased profile {id}"
        );
        ensure!(
            store.groups(id).ctx("groups")?.is_empty(),
            "groups of erased profile {id}"
        );
        ensure!(
            store.consent(id).ctx("consent")?.is_empty(),
            "consent of erased profile {id}"
        );
        ensure!(
            store.merges(id).ctx("merges")?.is_empty(),
            "merges of erased profile {id}"
        );
    }
    ensure_eq!(
        store.find("email", "b@example.com").ctx("find")?,
        None,
        "a merged profile's identifier"
    );
    ensure!(
        store.conflicts(10).ctx("conflicts")?.is_empty(),
        "the erased profile's conflicts"
    );
    ensure_eq!(
        store.find("email", "c@example.com").ctx("find")?,
        Some(4),
        "another profile stays"
    );
    ensure_eq!(
        store.event_seqs(4, None, 10).ctx("event_seqs")?,
        vec![4],
        "another profile's events stay"
    );
    ensure_eq!(
        store.profile_count().ctx("profile_count")?,
        1,
        "profiles left"
    );
    Ok(())
}

/// After `erase` and `purge_deleted`, no file holds the erased profiles' bytes.
pub fn erased_profiles_leave_no_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let marker = "-erase-profile-3e8d1f";
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), marker)?;
    ensure_stored(engine, &place, marker)?;
    store.erase(&[1]).ctx("erase")?;
    store.purge_deleted().ctx("purge_deleted")?;
    ensure_gone(engine, &place, marker, "erase and purge_deleted")?;
    drop(store);
    let _store = engine.profiles(&place).ctx("reopen the profile store")?;
    ensure_gone(engine, &place, marker, "reopening")?;
    Ok(())
}

/// `rebuild` deletes the profiles (and those merged into them) with everything
/// attached — conflicts, consent and merges included — and hands `work` their events'
/// `seq`s in log order, in one transaction: work that fails leaves them.
pub fn rebuild_hands_seqs_in_log_order<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    let failed = store.rebuild(&[1], &mut |_, _| {
        Err(crate::StoreError::Engine("work failed".into()))
    });
    ensure!(failed.is_err(), "rebuild returns the work's error");
    ensure!(
        store.profile(1).ctx("profile")?.is_some(),
        "a failed rebuild deletes nothing"
    );
    let mut handed = Vec::new();
    let mut seen_during = None;
    store
        .rebuild(&[1], &mut |txn, seqs| {
            handed = seqs.to_vec();
            seen_during = Some((
                txn.summary(1)?,
                txn.summary(3)?,
                txn.profile_of("email", "a@example.com")?,
            ));
            create(txn, 1, "a@example.com", &[1, 2])
        })
        .ctx("rebuild")?;
    ensure_eq!(
        handed,
        vec![1, 2, 3],
        "rebuild hands the events' seqs in log order"
    );
    ensure_eq!(
        seen_during,
        Some((None, None, None)),
        "inside rebuild the profiles are deleted"
    );
    ensure_eq!(
        store.profile(3).ctx("profile")?,
        None,
        "a merged profile is deleted by rebuild"
    );
    ensure!(
        store.conflicts(10).ctx("conflicts")?.is_empty(),
        "rebuild deletes the profiles' conflicts (work records them again)"
    );
    ensure!(
        store.consent(1).ctx("consent")?.is_empty() && store.merges(1).ctx("merges")?.is_empty(),
        "rebuild deletes the profiles' consent and merges (work did not record any)"
    );
    ensure_eq!(
        store.event_seqs(1, None, 10).ctx("event_seqs")?,
        vec![2, 1],
        "what work rebuilt stays"
    );
    ensure_eq!(
        store.find("email", "c@example.com").ctx("find")?,
        Some(4),
        "other profiles stay"
    );
    Ok(())
}

/// `canonical_profiles` pages through canonical (not merged) profile ids above
/// `after`, ascending, at most `limit`; `profile_count` counts them.
pub fn canonical_profiles_pages<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    ensure!(
        apply(store.as_ref(), 0, 50, |txn| {
            for id in [40, 10, 30, 20, 50] {
                create(txn, id, &format!("{id}@x"), &[id])?;
            }
            txn.merge(&merge_record(10, 20, 50))
        })?,
        "apply"
    );
    ensure_eq!(
        store.canonical_profiles(0, 2).ctx("canonical_profiles")?,
        vec![10, 30],
        "first page"
    );
    ensure_eq!(
        store.canonical_profiles(30, 2).ctx("canonical_profiles")?,
        vec![40, 50],
        "next page"
    );
    ensure_eq!(
        store.canonical_profiles(50, 2).ctx("canonical_profiles")?,
        Vec::<i64>::new(),
        "past the end"
    );
    ensure_eq!(
        store.profile_count().ctx("profile_count")?,
        4,
        "profile_count counts canonical profiles"
    );
    Ok(())
}

/// `owners_of_events`: the profiles the events are attributed to (after a merge, the
/// winner); unknown `seq`s and an empty list find nothing.
pub fn owners_of_events<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    let mut owners = store
        .owners_of_events(&[4, 3, 99])
        .ctx("owners_of_events")?;
    owners.sort_unstable();
    ensure_eq!(
        owners,
        vec![1, 4],
        "owners of events (a merged profile's event belongs to the winner)"
    );
    let mut owners = store.owners_of_events(&[1, 2]).ctx("owners_of_events")?;
    owners.dedup();
    ensure_eq!(owners, vec![1], "each owner once");
    ensure!(
        store
            .owners_of_events(&[])
            .ctx("owners_of_events")?
            .is_empty(),
        "no seqs, no owners"
    );
    Ok(())
}

/// The bulk reads page in key order from `after`: `event_owner_page` by
/// `(profile, seq)`, `trait_page` by `(profile, name)`, `identifier_type_page`
/// distinct `(profile, type)`.
pub fn bulk_pages_are_ordered<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    ensure!(
        apply(store.as_ref(), 0, 9, |txn| {
            create(txn, 2, "b@x", &[2, 8])?;
            create(txn, 1, "a@x", &[1, 9])?;
            txn.link(&link(1, "email", "a2@x"))?;
            txn.link(&link(1, "phone", "+1"))?;
            txn.set_trait(2, &stored_trait("z", "1", 2))?;
            txn.set_trait(1, &stored_trait("b", "2", 1))?;
            txn.set_trait(1, &stored_trait("a", "3", 1))
        })?,
        "apply"
    );
    ensure_eq!(
        store.event_owner_page((0, 0), 10).ctx("event_owner_page")?,
        vec![(1, 1), (1, 9), (2, 2), (2, 8)],
        "event_owner_page order"
    );
    ensure_eq!(
        store.event_owner_page((1, 9), 1).ctx("event_owner_page")?,
        vec![(2, 2)],
        "event_owner_page after and limit"
    );
    let traits = store.trait_page((0, ""), 10).ctx("trait_page")?;
    let keys: Vec<(i64, &str)> = traits.iter().map(|(p, n, _)| (*p, n.as_str())).collect();
    ensure_eq!(keys, vec![(1, "a"), (1, "b"), (2, "z")], "trait_page order");
    ensure_eq!(
        store.trait_page((1, "a"), 1).ctx("trait_page")?,
        vec![(1, "b".to_string(), "2".to_string())],
        "trait_page after and limit"
    );
    ensure_eq!(
        store
            .identifier_type_page((0, ""), 10)
            .ctx("identifier_type_page")?,
        vec![
            (1, "email".to_string()),
            (1, "phone".into()),
            (2, "email".into())
        ],
        "identifier_type_page: distinct, ordered"
    );
    ensure_eq!(
        store
            .identifier_type_page((1, "email"), 1)
            .ctx("identifier_type_page")?,
        vec![(1, "phone".to_string())],
        "identifier_type_page after and limit"
    );
    Ok(())
}

/// Applied chunks and the checkpoint survive dropping the handle and reopening.
pub fn profiles_survive_reopen<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let store = engine.profiles(&place).ctx("open the profile store")?;
        seed(store.as_ref(), "@example.com")?;
    }
    let store = engine.profiles(&place).ctx("reopen the profile store")?;
    ensure_eq!(
        store.checkpoint().ctx("checkpoint")?,
        5,
        "the checkpoint after reopening"
    );
    ensure_eq!(
        store.find("email", "b@example.com").ctx("find")?,
        Some(1),
        "identities after reopening"
    );
    ensure_eq!(
        store.event_seqs(1, None, 10).ctx("event_seqs")?,
        vec![3, 2, 1],
        "events after reopening"
    );
    ensure!(
        !apply(store.as_ref(), 0, 5, |_| Ok(()))?,
        "a chunk applied before reopening is not applied again"
    );
    Ok(())
}

/// An applied chunk and its checkpoint are in the files when `apply` returns: a copy
/// taken with the store still open (a crash) holds both, so the chunk is not applied
/// twice.
pub fn applied_chunks_survive_a_crash<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    seed(store.as_ref(), "@example.com")?;
    let crashed = crash_copy(engine, &place)?;
    let copy = engine
        .profiles(&crashed)
        .ctx("open the profile store after a crash")?;
    ensure_eq!(
        copy.checkpoint().ctx("checkpoint")?,
        5,
        "the checkpoint after a crash"
    );
    ensure_eq!(
        copy.find("email", "b@example.com").ctx("find")?,
        Some(1),
        "the chunk's writes after a crash"
    );
    ensure!(
        !apply(copy.as_ref(), 0, 5, |_| Ok(()))?,
        "a chunk applied before a crash is not applied again"
    );
    Ok(())
}

/// A chunk and its checkpoint become visible together: a reader that sees the
/// checkpoint moved sees the chunk's writes.
pub fn checkpoint_is_never_seen_without_its_chunk<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.profiles(&place).ctx("open the profile store")?;
    let store: &dyn ProfileStore = store.as_ref();
    let chunks = 150i64;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Outcome {
        let writer = scope.spawn(|| -> Outcome {
            let result = (1..=chunks).try_for_each(|i| {
                let applied = apply(store, i - 1, i, |txn| {
                    create(txn, i, &format!("{i}@x"), &[i])
                })?;
                ensure!(applied, "chunk {i} was not applied");
                Ok(())
            });
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        });
        let reader = scope.spawn(|| -> Outcome {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let checkpoint = store.checkpoint().ctx("checkpoint")?;
                let count = store.profile_count().ctx("profile_count")?;
                ensure!(
                    count >= checkpoint,
                    "checkpoint {checkpoint} seen with only {count} profiles: not one transaction"
                );
            }
            Ok(())
        });
        let written = writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string())?;
        let read = reader
            .join()
            .map_err(|_| "the reader thread panicked".to_string())?;
        written.and(read)
    })
}
