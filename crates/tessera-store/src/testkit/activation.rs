//! Promises of [`ActivationStore`].

use super::{Ctx, Engine, Outcome, crash_copy, ensure, ensure_eq, ensure_gone, ensure_stored};
use crate::activation::{
    ActivationStore, Delivery, DeliveryFilter, DeliveryOutcome, DeliveryStatus, JourneyRun,
    NewDelivery,
};
use crate::profiles::ProfileId;
use std::sync::atomic::{AtomicBool, Ordering};

/// Far past any enqueue time: everything enqueued is due by then.
const LATER: i64 = i64::MAX / 4;

fn delivery(key: &str, destination: &str, profile_id: Option<ProfileId>) -> NewDelivery {
    NewDelivery {
        destination: destination.to_string(),
        profile_id,
        idempotency_key: key.to_string(),
        channel: "webhook".into(),
        purpose: None,
        payload: format!("{{\"key\":\"{key}\"}}"),
        origin_ms: 1,
        status: DeliveryStatus::Pending,
        reason: None,
        journey: None,
        queued_ms: QUEUED_MS,
    }
}

/// When the deliveries of these checks are queued (activation's clock; the engine
/// stores what it is given).
const QUEUED_MS: i64 = 1_000_000;

fn run(journey: &str, profile_id: ProfileId, trigger_key: &str) -> JourneyRun {
    JourneyRun {
        id: 0,
        journey: journey.to_string(),
        profile_id,
        state: "active".into(),
        step: 0,
        wake_at_ms: None,
        waiting_event: None,
        entered_ms: 10,
        updated_ms: 10,
        trigger_key: trigger_key.to_string(),
        trigger_json: format!("{{\"trigger\":\"{trigger_key}\"}}"),
        history_json: "[]".into(),
    }
}

fn all(store: &dyn ActivationStore) -> Result<Vec<Delivery>, String> {
    store
        .deliveries(&DeliveryFilter {
            limit: 10_000,
            ..DeliveryFilter::default()
        })
        .ctx("deliveries")
}

fn keys(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries
        .iter()
        .map(|d| d.new.idempotency_key.as_str())
        .collect()
}

fn outcome(id: i64, status: DeliveryStatus, next_attempt_ms: i64) -> DeliveryOutcome {
    DeliveryOutcome {
        id,
        status,
        attempts: 1,
        next_attempt_ms,
        error: (status != DeliveryStatus::Delivered).then(|| "500 Internal Server Error".into()),
        delivered_ms: (status == DeliveryStatus::Delivered).then_some(77),
    }
}

/// The outbox is idempotent: a delivery whose idempotency key is already stored
/// (from an earlier call or earlier in the same call) is ignored, the first one
/// kept; `enqueue` returns how many were new; ids ascend in enqueue order.
pub fn enqueue_is_idempotent<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let first = delivery("e1:hook", "hook", Some(1));
    let new = store
        .enqueue(
            &[
                first.clone(),
                delivery("e2:hook", "hook", Some(2)),
                NewDelivery {
                    payload: "{}".into(),
                    ..first.clone()
                },
            ],
            &[],
        )
        .ctx("enqueue")?;
    ensure_eq!(new, 2, "a key repeated within one call is queued once");
    let new = store
        .enqueue(
            &[
                NewDelivery {
                    payload: "{\"again\":1}".into(),
                    ..first.clone()
                },
                delivery("e3:hook", "hook", None),
            ],
            &[],
        )
        .ctx("enqueue")?;
    ensure_eq!(new, 1, "a key stored by an earlier call is ignored");
    let stored = all(store.as_ref())?;
    ensure_eq!(
        keys(&stored),
        vec!["e1:hook", "e2:hook", "e3:hook"],
        "each key once, in enqueue order"
    );
    ensure!(
        stored.windows(2).all(|w| w[0].id < w[1].id),
        "ids ascend in enqueue order"
    );
    ensure_eq!(
        stored[0].new,
        first,
        "the first delivery of a key is the one kept, whole"
    );
    ensure_eq!(
        (
            stored[0].attempts,
            stored[0].last_error.clone(),
            stored[0].delivered_ms
        ),
        (0, None, None),
        "a new delivery"
    );
    Ok(())
}

/// Cursors are 0 until set and move in the same call as the deliveries, also when
/// every delivery was already stored; a lower value never moves one back.
pub fn cursors_move_with_enqueue<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    ensure_eq!(store.cursor("fanout").ctx("cursor")?, 0, "an unset cursor");
    store
        .enqueue(
            &[delivery("e1:hook", "hook", None)],
            &[("fanout", 5), ("other", 2)],
        )
        .ctx("enqueue")?;
    ensure_eq!(
        (
            store.cursor("fanout").ctx("cursor")?,
            store.cursor("other").ctx("cursor")?
        ),
        (5, 2),
        "cursors moved by enqueue"
    );
    let new = store
        .enqueue(&[delivery("e1:hook", "hook", None)], &[("fanout", 7)])
        .ctx("enqueue")?;
    ensure_eq!(
        (new, store.cursor("fanout").ctx("cursor")?),
        (0, 7),
        "a cursor moves even when every delivery was a repeat"
    );
    store.enqueue(&[], &[("fanout", 9)]).ctx("enqueue")?;
    ensure_eq!(
        store.cursor("fanout").ctx("cursor")?,
        9,
        "a cursor moves with no deliveries"
    );
    store.enqueue(&[], &[("fanout", 4)]).ctx("enqueue")?;
    ensure_eq!(
        store.cursor("fanout").ctx("cursor")?,
        9,
        "a cursor never moves back"
    );
    Ok(())
}

/// Deliveries and cursors are written together: a reader that sees a cursor moved
/// sees the deliveries enqueued with it.
pub fn cursor_is_never_seen_without_its_deliveries<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let store: &dyn ActivationStore = store.as_ref();
    let rounds = 200i64;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| -> Outcome {
        let writer = scope.spawn(|| -> Outcome {
            let result = (1..=rounds).try_for_each(|i| {
                store
                    .enqueue(
                        &[
                            delivery(&format!("e{i}:a"), "hook", Some(i)),
                            delivery(&format!("e{i}:b"), "hook", Some(i)),
                        ],
                        &[("fanout", i)],
                    )
                    .ctx("enqueue")
                    .map(|_| ())
            });
            done.store(true, Ordering::SeqCst);
            result
        });
        let reader = scope.spawn(|| -> Outcome {
            while !done.load(Ordering::SeqCst) {
                let cursor = store.cursor("fanout").ctx("cursor")?;
                let stored = all(store)?.len() as i64;
                ensure!(
                    stored >= 2 * cursor,
                    "cursor {cursor} seen with only {stored} deliveries: not written together"
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

/// `due`: pending deliveries of the destination whose next attempt has come, oldest
/// first, at most `limit`, at most one per profile and never one behind an earlier
/// pending delivery of its profile (deliveries about no one are not held back);
/// `next_due` is the earliest next attempt among those `due` could return.
pub fn due_keeps_per_profile_order<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    ensure_eq!(
        store.next_due("hook").ctx("next_due")?,
        None,
        "next_due of an empty outbox"
    );
    store
        .enqueue(
            &[
                delivery("d1", "hook", Some(1)),
                delivery("d2", "hook", Some(1)),
                delivery("d3", "hook", Some(2)),
                delivery("d4", "hook", None),
                delivery("d5", "hook", None),
                NewDelivery {
                    status: DeliveryStatus::Blocked,
                    reason: Some("no consent".into()),
                    ..delivery("d6", "hook", Some(3))
                },
                delivery("d7", "other", Some(4)),
            ],
            &[],
        )
        .ctx("enqueue")?;
    let due = store.due("hook", LATER, 10).ctx("due")?;
    ensure_eq!(
        keys(&due),
        vec!["d1", "d3", "d4", "d5"],
        "due: oldest pending per profile, this destination, not blocked"
    );
    ensure_eq!(
        keys(&store.due("hook", LATER, 2).ctx("due")?),
        vec!["d1", "d3"],
        "due: at most limit, oldest first"
    );
    ensure!(
        store.due("hook", 0, 10).ctx("due")?.is_empty(),
        "nothing is due before its next attempt"
    );
    let ids: Vec<i64> = due.iter().map(|d| d.id).collect();
    store
        .record(&[
            outcome(ids[0], DeliveryStatus::Pending, LATER + 1_000),
            outcome(ids[1], DeliveryStatus::Delivered, 0),
            outcome(ids[2], DeliveryStatus::Delivered, 0),
            outcome(ids[3], DeliveryStatus::Delivered, 0),
        ])
        .ctx("record")?;
    ensure!(
        store.due("hook", LATER, 10).ctx("due")?.is_empty(),
        "a delivery waits behind its profile's earlier pending one"
    );
    ensure_eq!(
        store.next_due("hook").ctx("next_due")?,
        Some(LATER + 1_000),
        "next_due: the held-back delivery does not count"
    );
    ensure_eq!(
        keys(&store.due("hook", LATER + 1_000, 10).ctx("due")?),
        vec!["d1"],
        "due once its retry time has come"
    );
    store
        .record(&[outcome(ids[0], DeliveryStatus::Delivered, 0)])
        .ctx("record")?;
    ensure_eq!(
        keys(&store.due("hook", LATER, 10).ctx("due")?),
        vec!["d2"],
        "the next of the profile is due once the earlier is done"
    );
    Ok(())
}

/// `record` stores attempts' outcomes; `counts` counts per status; `retry_dead` puts
/// dead deliveries (all of a destination, or the given ids) back to pending with no
/// attempts, due at `now_ms`, and returns how many.
pub fn record_and_retry_dead<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    store
        .enqueue(
            &[
                delivery("a", "hook", Some(1)),
                delivery("b", "hook", Some(2)),
                delivery("c", "hook", Some(3)),
                delivery("d", "other", Some(4)),
            ],
            &[],
        )
        .ctx("enqueue")?;
    let ids: Vec<i64> = all(store.as_ref())?.iter().map(|d| d.id).collect();
    store
        .record(&[
            outcome(ids[0], DeliveryStatus::Delivered, 0),
            outcome(ids[1], DeliveryStatus::Dead, 0),
            outcome(ids[2], DeliveryStatus::Dead, 0),
            outcome(ids[3], DeliveryStatus::Dead, 0),
        ])
        .ctx("record")?;
    let stored = all(store.as_ref())?;
    ensure_eq!(
        (
            stored[0].new.status,
            stored[0].attempts,
            stored[0].delivered_ms
        ),
        (DeliveryStatus::Delivered, 1, Some(77)),
        "a recorded delivery"
    );
    ensure_eq!(
        (stored[1].new.status, stored[1].last_error.clone()),
        (
            DeliveryStatus::Dead,
            Some("500 Internal Server Error".to_string())
        ),
        "a recorded failure keeps its error"
    );
    let mut counts = store.counts("hook").ctx("counts")?;
    counts.sort_by_key(|(s, _)| s.as_str());
    ensure_eq!(
        counts,
        vec![(DeliveryStatus::Dead, 2), (DeliveryStatus::Delivered, 1)],
        "counts per status"
    );
    ensure_eq!(
        store
            .retry_dead(None, &[ids[0], ids[3]], 500)
            .ctx("retry_dead")?,
        1,
        "retry_dead of ids retries only dead ones"
    );
    ensure_eq!(
        store.retry_dead(Some("hook"), &[], 600).ctx("retry_dead")?,
        2,
        "retry_dead of a destination"
    );
    ensure_eq!(
        store.retry_dead(Some("hook"), &[], 700).ctx("retry_dead")?,
        0,
        "nothing dead is left"
    );
    let stored = all(store.as_ref())?;
    for (i, at) in [(1, 600), (2, 600), (3, 500)] {
        ensure_eq!(
            (
                stored[i].new.status,
                stored[i].attempts,
                stored[i].next_attempt_ms
            ),
            (DeliveryStatus::Pending, 0, at),
            "a retried delivery is pending, without attempts, due at now_ms"
        );
    }
    ensure_eq!(
        stored[0].new.status,
        DeliveryStatus::Delivered,
        "a delivered one stays delivered"
    );
    Ok(())
}

/// `deliveries` filters by destination, status, profile and `after_id`, by id, at
/// most `limit`.
pub fn deliveries_filter<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    store
        .enqueue(
            &[
                delivery("a", "hook", Some(1)),
                delivery("b", "other", Some(1)),
                NewDelivery {
                    status: DeliveryStatus::Blocked,
                    ..delivery("c", "hook", Some(2))
                },
                delivery("d", "hook", Some(1)),
            ],
            &[],
        )
        .ctx("enqueue")?;
    let list = |filter: DeliveryFilter| -> Result<Vec<String>, String> {
        Ok(store
            .deliveries(&filter)
            .ctx("deliveries")?
            .into_iter()
            .map(|d| d.new.idempotency_key)
            .collect())
    };
    let base = DeliveryFilter {
        limit: 100,
        ..DeliveryFilter::default()
    };
    ensure_eq!(
        list(DeliveryFilter {
            destination: Some("hook".into()),
            ..base.clone()
        })?,
        vec!["a", "c", "d"],
        "by destination"
    );
    ensure_eq!(
        list(DeliveryFilter {
            status: Some(DeliveryStatus::Blocked),
            ..base.clone()
        })?,
        vec!["c"],
        "by status"
    );
    ensure_eq!(
        list(DeliveryFilter {
            profile_id: Some(1),
            ..base.clone()
        })?,
        vec!["a", "b", "d"],
        "by profile"
    );
    let first = all(store.as_ref())?[0].id;
    ensure_eq!(
        list(DeliveryFilter {
            after_id: first,
            limit: 2,
            ..base.clone()
        })?,
        vec!["b", "c"],
        "after_id and limit"
    );
    Ok(())
}

/// `recent_sends` counts a profile's deliveries of a channel queued since
/// `since_ms` (by their `queued_ms`, activation's clock), blocked ones excluded.
pub fn recent_sends_window<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let before = QUEUED_MS;
    let email = |key: &str, profile| NewDelivery {
        channel: "email".into(),
        ..delivery(key, "mail", Some(profile))
    };
    store
        .enqueue(
            &[
                email("a", 1),
                email("b", 1),
                NewDelivery {
                    status: DeliveryStatus::Blocked,
                    reason: Some("frequency cap".into()),
                    ..email("c", 1)
                },
                NewDelivery {
                    channel: "sms".into(),
                    ..email("d", 1)
                },
                email("e", 2),
            ],
            &[],
        )
        .ctx("enqueue")?;
    let after = QUEUED_MS;
    let ids: Vec<i64> = all(store.as_ref())?.iter().map(|d| d.id).collect();
    store
        .record(&[outcome(ids[0], DeliveryStatus::Delivered, 0)])
        .ctx("record")?;
    ensure_eq!(
        store
            .recent_sends(1, "email", before - 60_000)
            .ctx("recent_sends")?,
        2,
        "sends within the window, blocked excluded"
    );
    ensure_eq!(
        store
            .recent_sends(1, "sms", before - 60_000)
            .ctx("recent_sends")?,
        1,
        "per channel"
    );
    ensure_eq!(
        store
            .recent_sends(1, "email", after + 60_000)
            .ctx("recent_sends")?,
        0,
        "nothing enqueued since a later time"
    );
    ensure_eq!(
        store.recent_sends(3, "email", 0).ctx("recent_sends")?,
        0,
        "another profile"
    );
    Ok(())
}

/// `start_run` starts one run per trigger and at most one active run of a journey per
/// person: a repeated trigger, or another while a run is active, answers `None` and
/// writes nothing (its deliveries neither); once the run ended, a new trigger starts
/// one, a trigger that started one before does not.
pub fn start_run_once_per_trigger_and_active_run<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let first = store
        .start_run(&run("j", 1, "event:1"), &[delivery("r1", "mail", Some(1))])
        .ctx("start_run")?;
    let Some(first) = first else {
        return Err("start_run of a new trigger answered None".into());
    };
    ensure_eq!(
        store
            .start_run(
                &run("j", 1, "event:1"),
                &[delivery("r1-again", "mail", Some(1))]
            )
            .ctx("start_run")?,
        None,
        "the same trigger again starts nothing"
    );
    ensure_eq!(
        store
            .start_run(&run("j", 1, "event:2"), &[delivery("r2", "mail", Some(1))])
            .ctx("start_run")?,
        None,
        "another trigger while a run of the journey is active starts nothing"
    );
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["r1"],
        "only the started run's deliveries are written"
    );
    ensure!(
        store
            .start_run(&run("k", 1, "event:2"), &[])
            .ctx("start_run")?
            .is_some(),
        "another journey starts"
    );
    let ended = JourneyRun {
        id: first,
        state: "completed".into(),
        updated_ms: 20,
        ..run("j", 1, "event:1")
    };
    ensure!(
        store.update_run(&ended, &[]).ctx("update_run")?,
        "the run ends"
    );
    ensure!(
        store
            .start_run(&run("j", 1, "event:3"), &[])
            .ctx("start_run")?
            .is_some(),
        "a new trigger after the run ended starts one"
    );
    ensure!(
        store
            .update_run(
                &JourneyRun {
                    state: "completed".into(),
                    ..run("j", 1, "event:3")
                },
                &[]
            )
            .is_ok(),
        "update_run of a stale id is not an error"
    );
    let active = store.active_runs(1).ctx("active_runs")?;
    let third = active
        .iter()
        .find(|r| r.journey == "j")
        .map(|r| r.id)
        .ok_or("the third run is not active")?;
    store
        .update_run(
            &JourneyRun {
                id: third,
                state: "exited".into(),
                ..run("j", 1, "event:3")
            },
            &[],
        )
        .ctx("update_run")?;
    ensure_eq!(
        store
            .start_run(&run("j", 1, "event:1"), &[])
            .ctx("start_run")?,
        None,
        "a trigger that started a run never starts another"
    );
    Ok(())
}

/// `update_run` saves a run's state with its step's deliveries only while the stored
/// run is active; once ended (e.g. by `exit_runs`) it answers `false` and writes
/// nothing.
pub fn update_run_only_while_active<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let id = store
        .start_run(&run("j", 1, "event:1"), &[])
        .ctx("start_run")?
        .ok_or("start_run answered None")?;
    let step = JourneyRun {
        id,
        step: 2,
        wake_at_ms: Some(500),
        waiting_event: Some("Order Completed".into()),
        updated_ms: 30,
        history_json: "[{\"step\":1}]".into(),
        ..run("j", 1, "event:1")
    };
    ensure!(
        store
            .update_run(&step, &[delivery("s2", "mail", Some(1))])
            .ctx("update_run")?,
        "an active run is saved"
    );
    ensure_eq!(
        store.last_run("j", 1).ctx("last_run")?,
        Some(step.clone()),
        "the saved run reads back whole"
    );
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["s2"],
        "its step's deliveries are written"
    );
    ensure_eq!(
        store
            .exit_runs("j", 40, "journey changed")
            .ctx("exit_runs")?,
        1,
        "exit_runs ends the active run"
    );
    ensure!(
        !store
            .update_run(
                &JourneyRun { step: 3, ..step },
                &[delivery("s3", "mail", Some(1))]
            )
            .ctx("update_run")?,
        "an ended run is not saved"
    );
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["s2"],
        "an unsaved step writes no deliveries"
    );
    ensure_eq!(
        store
            .last_run("j", 1)
            .ctx("last_run")?
            .map(|r| (r.state, r.step)),
        Some(("exited".to_string(), 2)),
        "the exited run"
    );
    Ok(())
}

/// Run reads: `due_runs` are active runs whose wait ended, earliest first, at most
/// `limit`; `active_runs` a profile's active runs; `profile_runs` newest first;
/// `last_run` the newest of a journey; `exit_runs` ends every active run of a journey
/// and counts them; `run_counts` per state.
pub fn run_reads_and_exit_runs<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let waiting = |journey: &str, profile, trigger: &str, wake| JourneyRun {
        wake_at_ms: Some(wake),
        ..run(journey, profile, trigger)
    };
    let a = store
        .start_run(&waiting("j", 1, "t1", 300), &[])
        .ctx("start_run")?
        .ok_or("start_run answered None")?;
    let b = store
        .start_run(&waiting("j", 2, "t2", 100), &[])
        .ctx("start_run")?
        .ok_or("start_run answered None")?;
    let c = store
        .start_run(&waiting("k", 1, "t3", 200), &[])
        .ctx("start_run")?
        .ok_or("start_run answered None")?;
    let d = store
        .start_run(&run("k", 2, "t4"), &[])
        .ctx("start_run")?
        .ok_or("start_run answered None")?;
    let ids = |runs: Vec<JourneyRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    ensure_eq!(
        ids(store.due_runs(250, 10).ctx("due_runs")?),
        vec![b, c],
        "due_runs: woken by now, earliest first"
    );
    ensure_eq!(
        ids(store.due_runs(1_000, 2).ctx("due_runs")?),
        vec![b, c],
        "due_runs: at most limit"
    );
    let mut active = ids(store.active_runs(1).ctx("active_runs")?);
    active.sort_unstable();
    ensure_eq!(active, vec![a, c], "active_runs of a profile");
    ensure_eq!(
        ids(store.profile_runs(1).ctx("profile_runs")?),
        vec![c, a],
        "profile_runs newest first"
    );
    ensure_eq!(
        store.last_run("k", 2).ctx("last_run")?.map(|r| r.id),
        Some(d),
        "last_run"
    );
    ensure_eq!(
        store.last_run("k", 3).ctx("last_run")?,
        None,
        "last_run of nobody"
    );
    ensure_eq!(
        store.exit_runs("j", 400, "deleted").ctx("exit_runs")?,
        2,
        "exit_runs counts the runs it ended"
    );
    ensure_eq!(
        ids(store.due_runs(1_000, 10).ctx("due_runs")?),
        vec![c],
        "exited runs are not due"
    );
    ensure_eq!(
        store.run_counts("j").ctx("run_counts")?,
        vec![("exited".to_string(), 2)],
        "run_counts of an exited journey"
    );
    ensure_eq!(
        store.run_counts("k").ctx("run_counts")?,
        vec![("active".to_string(), 2)],
        "run_counts"
    );
    Ok(())
}

/// `rewrite_payloads` hands each delivery payload and run trigger containing a needle
/// (ASCII case-insensitive) to the callbacks, stores what they return (`None` keeps
/// the text) and counts the changes.
pub fn rewrite_payloads_changes_matching_text<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    let with = |key: &str, payload: &str| NewDelivery {
        payload: payload.to_string(),
        ..delivery(key, "hook", Some(1))
    };
    store
        .enqueue(
            &[
                with("a", "{\"to\":\"Ann@Example.com\"}"),
                with("b", "{\"to\":\"bob@example.com\"}"),
                with("c", "{\"cc\":\"ANN@example.com\",\"keep\":1}"),
            ],
            &[],
        )
        .ctx("enqueue")?;
    store
        .start_run(
            &JourneyRun {
                trigger_json: "{\"email\":\"ann@example.com\"}".into(),
                ..run("j", 2, "event:9")
            },
            &[],
        )
        .ctx("start_run")?;
    let needles = vec!["ann@example.com".to_string()];
    let mut handed = Vec::new();
    let changed = store
        .rewrite_payloads(
            &needles,
            &mut |text| {
                handed.push(text.to_string());
                (!text.contains("keep")).then(|| "{\"to\":null}".to_string())
            },
            &mut |_| Some("{\"email\":null}".to_string()),
        )
        .ctx("rewrite_payloads")?;
    ensure_eq!(changed, 2, "rewrite_payloads counts what changed");
    handed.sort();
    ensure_eq!(
        handed.len(),
        2,
        "only matching payloads are handed to the callback"
    );
    let payloads: Vec<String> = all(store.as_ref())?
        .into_iter()
        .map(|d| d.new.payload)
        .collect();
    ensure_eq!(
        payloads,
        vec![
            "{\"to\":null}",
            "{\"to\":\"bob@example.com\"}",
            "{\"cc\":\"ANN@example.com\",\"keep\":1}"
        ],
        "matching payloads rewritten, None kept"
    );
    ensure_eq!(
        store
            .last_run("j", 2)
            .ctx("last_run")?
            .map(|r| r.trigger_json),
        Some("{\"email\":null}".to_string()),
        "a matching trigger rewritten"
    );
    Ok(())
}

/// `erase_events` deletes the deliveries made from the events — idempotency keys
/// `e<seq>:<destination>` — and the runs they triggered — trigger key `event:<seq>`
/// — and nothing else; `erase_profiles` deletes every delivery and run of the
/// profiles.
pub fn erase_events_and_profiles<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    store
        .enqueue(
            &[
                delivery("e5:hook", "hook", Some(1)),
                delivery("e5:mail", "mail", Some(2)),
                delivery("e50:hook", "hook", Some(2)),
                delivery("e6:hook", "hook", Some(1)),
                delivery("j:x:1", "mail", Some(3)),
            ],
            &[],
        )
        .ctx("enqueue")?;
    for (journey, profile, trigger) in [
        ("j", 2, "event:5"),
        ("k", 2, "event:50"),
        ("j", 3, "change:5"),
    ] {
        store
            .start_run(&run(journey, profile, trigger), &[])
            .ctx("start_run")?;
    }
    store.erase_events(&[5]).ctx("erase_events")?;
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["e50:hook", "e6:hook", "j:x:1"],
        "erase_events deletes the event's deliveries only"
    );
    let triggers: Vec<String> = store
        .profile_runs(2)
        .ctx("profile_runs")?
        .into_iter()
        .map(|r| r.trigger_key)
        .collect();
    ensure_eq!(
        triggers,
        vec!["event:50"],
        "erase_events deletes the runs the event triggered"
    );
    ensure_eq!(
        store.profile_runs(3).ctx("profile_runs")?.len(),
        1,
        "a change-triggered run stays"
    );
    store.erase_profiles(&[2, 3]).ctx("erase_profiles")?;
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["e6:hook"],
        "erase_profiles deletes the profiles' deliveries"
    );
    ensure!(
        store.profile_runs(2).ctx("profile_runs")?.is_empty()
            && store.profile_runs(3).ctx("profile_runs")?.is_empty(),
        "erase_profiles deletes their runs"
    );
    Ok(())
}

/// After `erase_profiles` and `purge_deleted`, no file holds the erased deliveries'
/// or runs' bytes.
pub fn erased_deliveries_leave_no_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let marker = "outbox-erase-me-2f71c4@example.com";
    let store = engine.activation(&place).ctx("open the activation store")?;
    store
        .enqueue(
            &[
                NewDelivery {
                    payload: format!("{{\"to\":\"{marker}\"}}"),
                    ..delivery("e1:mail", "mail", Some(1))
                },
                delivery("e2:mail", "mail", Some(2)),
            ],
            &[],
        )
        .ctx("enqueue")?;
    store
        .start_run(
            &JourneyRun {
                trigger_json: format!("{{\"email\":\"{marker}\"}}"),
                ..run("j", 1, "event:1")
            },
            &[],
        )
        .ctx("start_run")?;
    ensure_stored(engine, &place, marker)?;
    store.erase_profiles(&[1]).ctx("erase_profiles")?;
    store.purge_deleted().ctx("purge_deleted")?;
    ensure_gone(engine, &place, marker, "erase_profiles and purge_deleted")?;
    Ok(())
}

/// Deliveries, cursors and runs survive dropping the handle and reopening, and the
/// idempotency keys still hold.
pub fn outbox_survives_reopen<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let store = engine.activation(&place).ctx("open the activation store")?;
        store
            .enqueue(&[delivery("e1:hook", "hook", Some(1))], &[("fanout", 3)])
            .ctx("enqueue")?;
        store
            .start_run(&run("j", 1, "event:1"), &[])
            .ctx("start_run")?;
    }
    let store = engine
        .activation(&place)
        .ctx("reopen the activation store")?;
    ensure_eq!(
        keys(&all(store.as_ref())?),
        vec!["e1:hook"],
        "deliveries after reopening"
    );
    ensure_eq!(
        store.cursor("fanout").ctx("cursor")?,
        3,
        "a cursor after reopening"
    );
    ensure_eq!(
        store
            .enqueue(&[delivery("e1:hook", "hook", Some(1))], &[])
            .ctx("enqueue")?,
        0,
        "idempotency after reopening"
    );
    ensure_eq!(
        store
            .start_run(&run("j", 1, "event:1"), &[])
            .ctx("start_run")?,
        None,
        "one run per trigger after reopening"
    );
    Ok(())
}

/// The outbox is durable: deliveries, cursors and runs are in the files when the
/// call returns — a copy taken with the store still open (a crash) holds them, so
/// fan-out repeated after the crash queues nothing twice.
pub fn outbox_survives_a_crash<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let store = engine.activation(&place).ctx("open the activation store")?;
    store
        .enqueue(&[delivery("e1:hook", "hook", Some(1))], &[("fanout", 3)])
        .ctx("enqueue")?;
    store
        .start_run(&run("j", 1, "event:1"), &[])
        .ctx("start_run")?;
    let crashed = crash_copy(engine, &place)?;
    let copy = engine
        .activation(&crashed)
        .ctx("open the activation store after a crash")?;
    ensure_eq!(
        keys(&all(copy.as_ref())?),
        vec!["e1:hook"],
        "deliveries after a crash"
    );
    ensure_eq!(
        copy.cursor("fanout").ctx("cursor")?,
        3,
        "a cursor after a crash"
    );
    ensure_eq!(
        copy.enqueue(&[delivery("e1:hook", "hook", Some(1))], &[])
            .ctx("enqueue")?,
        0,
        "fan-out repeated after a crash queues nothing twice"
    );
    ensure_eq!(
        copy.start_run(&run("j", 1, "event:1"), &[])
            .ctx("start_run")?,
        None,
        "a run started before a crash is not started again"
    );
    Ok(())
}
