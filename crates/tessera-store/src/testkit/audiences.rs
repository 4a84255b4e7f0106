//! Promises of [`AudienceStore`](crate::audiences::AudienceStore).

use super::{Ctx, Engine, Outcome, crash_copy, ensure, ensure_eq, ensure_gone, ensure_stored};
use crate::audiences::{Membership, MembershipChange, StoredChange};
use crate::profiles::ProfileId;

fn change(audience: &str, profile_id: ProfileId, entered: bool, at_ms: i64) -> MembershipChange {
    MembershipChange {
        audience: audience.to_string(),
        profile_id,
        entered,
        at_ms,
        reason: "event".into(),
    }
}

fn member(audience: &str, profile_id: ProfileId, since_ms: i64) -> Membership {
    Membership {
        audience: audience.to_string(),
        profile_id,
        since_ms,
    }
}

fn feed(changes: &[StoredChange]) -> Vec<(String, ProfileId, bool)> {
    changes
        .iter()
        .map(|c| {
            (
                c.change.audience.clone(),
                c.change.profile_id,
                c.change.entered,
            )
        })
        .collect()
}

fn ensure_increasing(changes: &[StoredChange], what: &str) -> Outcome {
    ensure!(
        changes.windows(2).all(|w| w[0].seq < w[1].seq),
        "{what}: feed seqs not increasing: {:?}",
        changes.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    Ok(())
}

/// `apply_changes`: entering adds a member and appends the change to the feed,
/// leaving removes it and appends; entering again, or leaving an audience one is
/// not in, changes nothing and announces nothing.
pub fn apply_changes_announces_only_real_changes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.audiences(&place).ctx("open the audience store")?;
    store
        .apply_changes(&[
            change("vip", 1, true, 10),
            change("vip", 1, true, 11),
            change("vip", 2, false, 12),
            change("new", 2, true, 13),
        ])
        .ctx("apply_changes")?;
    store
        .apply_changes(&[change("vip", 1, true, 14)])
        .ctx("apply_changes")?;
    ensure_eq!(
        store.members("vip", 0, 10).ctx("members")?,
        vec![member("vip", 1, 10)],
        "entering twice keeps the first membership"
    );
    let all = store.changes(0, None, 100).ctx("changes")?;
    ensure_eq!(
        feed(&all),
        vec![("vip".to_string(), 1, true), ("new".to_string(), 2, true)],
        "only changes that changed a membership are announced"
    );
    ensure_eq!(
        all[0].change,
        change("vip", 1, true, 10),
        "a feed row keeps the change whole"
    );
    store
        .apply_changes(&[change("vip", 1, false, 20)])
        .ctx("apply_changes")?;
    ensure!(
        store.members("vip", 0, 10).ctx("members")?.is_empty(),
        "leaving removes the member"
    );
    let all = store.changes(0, None, 100).ctx("changes")?;
    ensure_eq!(
        all.last().map(|c| c.change.clone()),
        Some(change("vip", 1, false, 20)),
        "leaving is announced"
    );
    ensure_increasing(&all, "after apply_changes")?;
    store.apply_changes(&[]).ctx("apply_changes of nothing")?;
    Ok(())
}

/// `members` lists an audience's members above `after`, ascending by profile, at most
/// `limit`; `member_count`, `audiences_with_members` and `memberships` agree.
pub fn members_and_memberships_are_ordered<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.audiences(&place).ctx("open the audience store")?;
    store
        .apply_changes(&[
            change("vip", 30, true, 1),
            change("vip", 10, true, 2),
            change("vip", 20, true, 3),
            change("churn", 10, true, 4),
            change("gone", 10, true, 5),
            change("gone", 10, false, 6),
        ])
        .ctx("apply_changes")?;
    let ids = |m: Vec<Membership>| m.into_iter().map(|m| m.profile_id).collect::<Vec<_>>();
    ensure_eq!(
        ids(store.members("vip", 0, 2).ctx("members")?),
        vec![10, 20],
        "members ascending, at most limit"
    );
    ensure_eq!(
        ids(store.members("vip", 20, 10).ctx("members")?),
        vec![30],
        "members above after"
    );
    ensure_eq!(
        store.member_count("vip").ctx("member_count")?,
        3,
        "member_count"
    );
    ensure_eq!(
        store.member_count("gone").ctx("member_count")?,
        0,
        "member_count of an emptied audience"
    );
    let mut audiences = store
        .audiences_with_members()
        .ctx("audiences_with_members")?;
    audiences.sort();
    ensure_eq!(audiences, vec!["churn", "vip"], "audiences_with_members");
    let mut of_10: Vec<String> = store
        .memberships(10)
        .ctx("memberships")?
        .into_iter()
        .map(|m| m.audience)
        .collect();
    of_10.sort();
    ensure_eq!(of_10, vec!["churn", "vip"], "memberships of a profile");
    Ok(())
}

/// The change feed: `changes` after `after_seq`, oldest first with increasing
/// `seq`s, at most `limit`, only the audience's own when one is named;
/// `profile_changes` a profile's rows oldest first; it survives reopening.
pub fn change_feed_is_ordered_and_filtered<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let store = engine.audiences(&place).ctx("open the audience store")?;
        store
            .apply_changes(&[
                change("a", 1, true, 1),
                change("b", 1, true, 2),
                change("a", 2, true, 3),
            ])
            .ctx("apply_changes")?;
        store
            .apply_changes(&[change("a", 1, false, 4)])
            .ctx("apply_changes")?;
    }
    let store = engine.audiences(&place).ctx("reopen the audience store")?;
    let all = store.changes(0, None, 100).ctx("changes")?;
    ensure_eq!(all.len(), 4, "every change survives reopening");
    ensure_increasing(&all, "the feed")?;
    ensure_eq!(
        feed(&store.changes(all[0].seq, Some("a"), 100).ctx("changes")?),
        vec![("a".to_string(), 2, true), ("a".to_string(), 1, false)],
        "changes of one audience after a seq"
    );
    ensure_eq!(
        store.changes(0, None, 2).ctx("changes")?,
        all[..2].to_vec(),
        "at most limit, oldest first"
    );
    ensure_eq!(
        feed(&store.profile_changes(1).ctx("profile_changes")?),
        vec![
            ("a".to_string(), 1, true),
            ("b".to_string(), 1, true),
            ("a".to_string(), 1, false)
        ],
        "a profile's changes oldest first"
    );
    ensure_eq!(
        store.members("a", 0, 10).ctx("members")?,
        vec![member("a", 2, 3)],
        "members survive reopening"
    );
    Ok(())
}

/// `erase_profiles` deletes the profiles' memberships and feed rows and nothing else.
pub fn erase_profiles_removes_memberships_and_feed<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.audiences(&place).ctx("open the audience store")?;
    store
        .apply_changes(&[
            change("a", 1, true, 1),
            change("a", 2, true, 2),
            change("b", 1, true, 3),
        ])
        .ctx("apply_changes")?;
    store.erase_profiles(&[1]).ctx("erase_profiles")?;
    ensure!(
        store.memberships(1).ctx("memberships")?.is_empty(),
        "memberships of an erased profile"
    );
    ensure!(
        store.profile_changes(1).ctx("profile_changes")?.is_empty(),
        "feed rows of an erased profile"
    );
    ensure_eq!(
        feed(&store.changes(0, None, 10).ctx("changes")?),
        vec![("a".to_string(), 2, true)],
        "the feed keeps the others"
    );
    ensure_eq!(
        store.members("a", 0, 10).ctx("members")?,
        vec![member("a", 2, 2)],
        "other members stay"
    );
    ensure_eq!(
        store
            .audiences_with_members()
            .ctx("audiences_with_members")?,
        vec!["a"],
        "an audience of erased members only"
    );
    Ok(())
}

/// Feed `seq`s are never reused: after erasure removed the newest feed rows, a new
/// change gets a higher `seq` than any before (a consumer's position stays valid),
/// also after reopening.
pub fn feed_seq_is_never_reused_after_erasure<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let newest = {
        let store = engine.audiences(&place).ctx("open the audience store")?;
        store
            .apply_changes(&[change("a", 1, true, 1), change("a", 2, true, 2)])
            .ctx("apply_changes")?;
        let newest = store.changes(0, None, 10).ctx("changes")?[1].seq;
        store.erase_profiles(&[2]).ctx("erase_profiles")?;
        store
            .apply_changes(&[change("a", 3, true, 3)])
            .ctx("apply_changes")?;
        let next = store.changes(0, None, 10).ctx("changes")?;
        ensure!(
            next.last().is_some_and(|c| c.seq > newest),
            "a change after erasing the newest feed row reused its seq {newest}"
        );
        store.erase_profiles(&[3]).ctx("erase_profiles")?;
        next.last().map_or(newest, |c| c.seq)
    };
    let store = engine.audiences(&place).ctx("reopen the audience store")?;
    store
        .apply_changes(&[change("a", 4, true, 4)])
        .ctx("apply_changes")?;
    let next = store.changes(0, None, 10).ctx("changes")?;
    ensure!(
        next.last().is_some_and(|c| c.seq > newest),
        "after erasing the newest feed row and reopening, a change reused seq {newest}"
    );
    Ok(())
}

/// After `erase_profiles` and `purge_deleted`, no file holds the erased rows' bytes.
pub fn erased_memberships_leave_no_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let marker = "audience-of-one-6c0a9b";
    let store = engine.audiences(&place).ctx("open the audience store")?;
    store
        .apply_changes(&[change(marker, 1, true, 1), change("other", 2, true, 2)])
        .ctx("apply_changes")?;
    ensure_stored(engine, &place, marker)?;
    store.erase_profiles(&[1]).ctx("erase_profiles")?;
    store.purge_deleted().ctx("purge_deleted")?;
    ensure_gone(engine, &place, marker, "erase_profiles and purge_deleted")?;
    Ok(())
}

/// Applied changes are in the files when `apply_changes` returns: a copy taken with
/// the store still open (a crash) holds the members and the feed.
pub fn changes_survive_a_crash<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.audiences(&place).ctx("open the audience store")?;
    store
        .apply_changes(&[change("a", 1, true, 1), change("a", 2, true, 2)])
        .ctx("apply_changes")?;
    let before = store.changes(0, None, 10).ctx("changes")?;
    let crashed = crash_copy(engine, &place)?;
    let copy = engine
        .audiences(&crashed)
        .ctx("open the audience store after a crash")?;
    ensure_eq!(
        copy.changes(0, None, 10).ctx("changes")?,
        before,
        "the feed after a crash"
    );
    ensure_eq!(
        copy.member_count("a").ctx("member_count")?,
        2,
        "members after a crash"
    );
    Ok(())
}
