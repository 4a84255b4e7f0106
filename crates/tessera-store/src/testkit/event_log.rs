//! Promises of [`EventLog`].

use super::{Ctx, Engine, Outcome, crash_copy, ensure, ensure_eq, ensure_gone, ensure_stored};
use crate::{
    AppendBatch, AppendOutcome, EventFilter, EventLog, EventRecord, RejectionRecord,
    RewrittenEvent, StoredEvent,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn event(source_key: i64, message_id: &str, payload: &str) -> EventRecord {
    EventRecord {
        source_key,
        message_id: message_id.to_string(),
        received_at_ms: 1_000,
        payload: payload.to_string(),
    }
}

fn batch(events: Vec<EventRecord>) -> AppendBatch {
    AppendBatch {
        events,
        rejections: Vec::new(),
    }
}

fn outcome(appended: usize, duplicates: usize) -> AppendOutcome {
    AppendOutcome {
        appended,
        duplicates,
    }
}

fn scan_all(log: &dyn EventLog, filter: &EventFilter) -> Result<Vec<StoredEvent>, String> {
    let mut events = Vec::new();
    let counted = log
        .scan(filter, &mut |e| {
            events.push(e);
            Ok(())
        })
        .ctx("scan")?;
    ensure_eq!(
        counted,
        events.len() as u64,
        "scan returns how many events it visited"
    );
    Ok(events)
}

fn payloads(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.payload.as_str()).collect()
}

fn ensure_ascending(events: &[StoredEvent], what: &str) -> Outcome {
    for pair in events.windows(2) {
        ensure!(
            pair[0].seq < pair[1].seq,
            "{what}: seqs not strictly ascending ({} then {})",
            pair[0].seq,
            pair[1].seq
        );
    }
    Ok(())
}

/// `append` returns one outcome per batch, in batch order; the events are stored in
/// request order (batches in order, events in order within each), with strictly
/// ascending `seq`s, and a later append gets higher `seq`s than every earlier one.
pub fn append_reports_each_batch_and_keeps_log_order<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let outcomes = log
        .append(&[
            batch(vec![event(1, "a", "p1"), event(1, "b", "p2")]),
            batch(vec![]),
            batch(vec![event(2, "a", "p3")]),
        ])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(2, 0), outcome(0, 0), outcome(1, 0)],
        "append returns one outcome per batch, in batch order"
    );
    let first = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        payloads(&first),
        vec!["p1", "p2", "p3"],
        "log order is request order"
    );
    ensure_ascending(&first, "one append")?;
    ensure_eq!(
        (
            first[0].source_key,
            first[2].source_key,
            first[0].received_at_ms
        ),
        (1, 2, 1_000),
        "stored events keep their source and receive time"
    );
    log.append(&[batch(vec![event(1, "c", "p4")])])
        .ctx("append")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        payloads(&all),
        vec!["p1", "p2", "p3", "p4"],
        "a later append follows"
    );
    ensure_ascending(&all, "two appends")?;
    Ok(())
}

/// `scan` visits matching events in log order, paging through logs longer than any
/// page, honouring `after_seq`, `received_since_ms`, `source_key` and `limit`, and
/// returns how many it visited; an error from `visit` stops it and is returned.
pub fn scan_filters_and_pages_in_log_order<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let total = 5_000usize;
    let events: Vec<EventRecord> = (0..total)
        .map(|i| EventRecord {
            source_key: (i % 2) as i64 + 1,
            message_id: format!("m{i}"),
            received_at_ms: i as i64,
            payload: format!("{i}"),
        })
        .collect();
    log.append(&[batch(events)]).ctx("append")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(all.len(), total, "scan visits every event");
    ensure_ascending(&all, "scan")?;
    for (i, e) in all.iter().enumerate() {
        ensure_eq!(e.payload, i.to_string(), "scan visits events in log order");
    }
    let after = all[2_999].seq;
    let tail = scan_all(
        log.as_ref(),
        &EventFilter {
            after_seq: Some(after),
            ..EventFilter::default()
        },
    )?;
    ensure_eq!(
        tail.len(),
        total - 3_000,
        "after_seq keeps only later events"
    );
    ensure_eq!(tail[0].payload, "3000", "after_seq starts right after it");
    let limited = scan_all(
        log.as_ref(),
        &EventFilter {
            limit: Some(4_321),
            ..EventFilter::default()
        },
    )?;
    ensure_eq!(limited.len(), 4_321, "limit caps the events visited");
    ensure_eq!(
        limited[4_320].payload,
        "4320",
        "limit keeps the first events"
    );
    let filtered = scan_all(
        log.as_ref(),
        &EventFilter {
            after_seq: Some(all[9].seq),
            received_since_ms: Some(100),
            source_key: Some(2),
            limit: Some(3),
        },
    )?;
    ensure_eq!(
        payloads(&filtered),
        vec!["101", "103", "105"],
        "after_seq, received_since_ms, source_key and limit combine"
    );
    let mut visited = 0;
    let stopped = log.scan(&EventFilter::default(), &mut |_| {
        visited += 1;
        if visited == 10 {
            Err(crate::StoreError::Engine("stop".into()))
        } else {
            Ok(())
        }
    });
    ensure!(stopped.is_err(), "an error from visit is returned by scan");
    ensure_eq!(visited, 10, "an error from visit stops the scan");
    Ok(())
}

/// `get` returns the events with the given `seq`s in log order whatever the order
/// asked, each once, skipping `seq`s that do not exist.
pub fn get_returns_log_order_once_each<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    log.append(&[batch(
        (0..5)
            .map(|i| event(1, &format!("m{i}"), &format!("p{i}")))
            .collect(),
    )])
    .ctx("append")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    let missing = all[4].seq + 1_000;
    let got = log
        .get(&[all[3].seq, missing, all[0].seq, all[3].seq, all[1].seq])
        .ctx("get")?;
    ensure_eq!(
        payloads(&got),
        vec!["p0", "p1", "p3"],
        "get: log order, each once, missing skipped"
    );
    ensure_eq!(got[0], all[0], "get returns the event as scan does");
    ensure!(
        log.get(&[]).ctx("get")?.is_empty(),
        "get of nothing is empty"
    );
    Ok(())
}

/// `last_seq` is 0 for an empty log and the highest `seq` in the log otherwise (after
/// the newest events are deleted, the highest remaining one).
pub fn last_seq_is_the_highest_seq<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    ensure_eq!(
        log.last_seq().ctx("last_seq")?,
        0,
        "last_seq of an empty log"
    );
    log.append(&[batch(vec![
        event(1, "a", "1"),
        event(1, "b", "2"),
        event(1, "c", "3"),
    ])])
    .ctx("append")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        log.last_seq().ctx("last_seq")?,
        all[2].seq,
        "last_seq is the newest seq"
    );
    log.delete_events(&[all[2].seq]).ctx("delete_events")?;
    ensure_eq!(
        log.last_seq().ctx("last_seq")?,
        all[1].seq,
        "last_seq after deleting the newest event is the highest remaining seq"
    );
    Ok(())
}

/// Durability: every event whose `append` returned is there after the handle is
/// dropped and the place opened again (with or without a `checkpoint` between).
pub fn acknowledged_events_survive_reopen<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let before = {
        let log = engine.event_log(&place).ctx("open the event log")?;
        log.append(&[batch(vec![event(1, "a", "p1"), event(1, "b", "p2")])])
            .ctx("append")?;
        log.checkpoint().ctx("checkpoint")?;
        log.append(&[batch(vec![event(1, "c", "p3")])])
            .ctx("append")?;
        scan_all(log.as_ref(), &EventFilter::default())?
    };
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    let after = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        after,
        before,
        "every acknowledged event is there after reopening"
    );
    ensure_eq!(
        log.last_seq().ctx("last_seq")?,
        before[2].seq,
        "last_seq after reopening"
    );
    Ok(())
}

/// `append_unsynced` then `sync`: the events are readable and survive reopening, and
/// `durable_seq`, when the engine tracks it, covers them.
pub fn unsynced_appends_are_durable_after_sync<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let log = engine.event_log(&place).ctx("open the event log")?;
        let outcomes = log
            .append_unsynced(&[batch(vec![event(1, "a", "p1"), event(1, "a", "dup")])])
            .ctx("append_unsynced")?;
        ensure_eq!(
            outcomes,
            vec![outcome(1, 1)],
            "append_unsynced reports like append"
        );
        log.sync().ctx("sync")?;
        let all = scan_all(log.as_ref(), &EventFilter::default())?;
        ensure_eq!(payloads(&all), vec!["p1"], "synced events are readable");
        if let Some(durable) = log.durable_seq() {
            ensure!(
                durable >= all[0].seq,
                "durable_seq {durable} covers what sync made durable"
            );
        }
    }
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        payloads(&all),
        vec!["p1"],
        "synced events survive reopening"
    );
    Ok(())
}

/// `seq` is never reused: after `delete_events` removed the newest events, the next
/// append gets a higher `seq` than any handed out before — also when the log was
/// emptied, when another handle (process) appends, and after reopening.
pub fn seq_is_never_reused_after_deleting_the_newest<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let highest = {
        let log = engine.event_log(&place).ctx("open the event log")?;
        log.append(&[batch(vec![
            event(1, "a", "1"),
            event(1, "b", "2"),
            event(1, "c", "3"),
        ])])
        .ctx("append")?;
        let all = scan_all(log.as_ref(), &EventFilter::default())?;
        ensure_eq!(
            log.delete_events(&[all[2].seq]).ctx("delete_events")?,
            1,
            "one deleted"
        );
        log.append(&[batch(vec![event(1, "d", "4"), event(1, "e", "5")])])
            .ctx("append")?;
        let now = scan_all(log.as_ref(), &EventFilter::default())?;
        ensure_eq!(
            payloads(&now),
            vec!["1", "2", "4", "5"],
            "the log after delete and append"
        );
        ensure!(
            now[2].seq > all[2].seq,
            "append after deleting the newest event reused seq: got {} after {} was deleted",
            now[2].seq,
            all[2].seq
        );
        ensure_ascending(&now, "append after delete")?;
        let seqs: Vec<i64> = now.iter().map(|e| e.seq).collect();
        log.delete_events(&seqs).ctx("delete_events")?;
        seqs[3]
    };
    // Emptied, then reopened.
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    log.append(&[batch(vec![event(1, "f", "6")])])
        .ctx("append")?;
    let now = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure!(
        now.len() == 1 && now[0].seq > highest,
        "after emptying the log and reopening, an append reused seq: {:?} (highest before {highest})",
        now.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    // Newest deleted by one handle, the next append made by another (a process
    // opened before the deletion).
    let other = engine.event_log(&place).ctx("open a second handle")?;
    let deleted = now[0].seq;
    log.delete_events(&[deleted]).ctx("delete_events")?;
    other
        .append(&[batch(vec![event(1, "g2", "6b")])])
        .ctx("append")?;
    let now = scan_all(other.as_ref(), &EventFilter::default())?;
    ensure!(
        now.len() == 1 && now[0].seq > deleted,
        "another handle's append after this one deleted the newest event reused seq {deleted}"
    );
    drop(other);
    // Newest deleted, then reopened before the next append.
    let deleted = now[0].seq;
    log.delete_events(&[deleted]).ctx("delete_events")?;
    drop(log);
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    log.append(&[batch(vec![event(1, "g", "7")])])
        .ctx("append")?;
    let now = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure!(
        now.len() == 1 && now[0].seq > deleted,
        "after deleting the newest event and reopening, an append reused seq {deleted}"
    );
    Ok(())
}

/// Within the engine's dedup window, a repeated `(source, messageId)` is stored once
/// and counted as a duplicate — within a batch, across batches of one call, and across
/// calls; the first message is the one kept; the same `messageId` from another
/// source is a different message.
pub fn dedup_within_window<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let outcomes = log
        .append(&[
            batch(vec![event(1, "m", "first"), event(1, "m", "same batch")]),
            batch(vec![
                event(1, "m", "next batch"),
                event(2, "m", "other source"),
            ]),
        ])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(1, 1), outcome(1, 1)],
        "repeats within a call are duplicates, another source's is not"
    );
    let outcomes = log
        .append(&[batch(vec![
            event(1, "m", "later call"),
            event(1, "n", "new"),
        ])])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(1, 1)],
        "a repeat in a later call is a duplicate"
    );
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        payloads(&all),
        vec!["first", "other source", "new"],
        "each message stored once, the first kept"
    );
    Ok(())
}

/// Dedup holds across a restart (drop and reopen) and between two handles open on
/// one place at once (two processes appending).
pub fn dedup_across_reopen_and_second_handle<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let log = engine.event_log(&place).ctx("open the event log")?;
        log.append(&[batch(vec![event(1, "m", "first")])])
            .ctx("append")?;
    }
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    let outcomes = log
        .append(&[batch(vec![event(1, "m", "again")])])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(0, 1)],
        "a repeat after reopening is a duplicate"
    );
    let other = engine.event_log(&place).ctx("open a second handle")?;
    let outcomes = other
        .append(&[batch(vec![event(1, "o", "other")])])
        .ctx("append")?;
    ensure_eq!(outcomes, vec![outcome(1, 0)], "the second handle appends");
    let outcomes = log
        .append(&[batch(vec![event(1, "o", "again")])])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(0, 1)],
        "a message appended by another handle is a duplicate here"
    );
    let outcomes = other
        .append(&[batch(vec![event(1, "m", "again")])])
        .ctx("append")?;
    ensure_eq!(outcomes, vec![outcome(0, 1)], "and the other way round");
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        payloads(&all),
        vec!["first", "other"],
        "each message stored once"
    );
    Ok(())
}

/// Physical deletion: after `delete_events`, the deleted events are gone from reads
/// (of a second handle too) and no file of the engine holds their bytes — while
/// another handle that read them is open, and after reopening; the other events are
/// untouched; it returns how many existed.
pub fn deleted_events_leave_no_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let marker = "erase-me-7f3c91d2@example.com";
    {
        let log = engine.event_log(&place).ctx("open the event log")?;
        log.append(&[batch(vec![
            event(1, "keep", "{\"userId\":\"someone-else\"}"),
            event(1, "gone", &format!("{{\"email\":\"{marker}\"}}")),
            event(1, "keep2", "{\"userId\":\"a third\"}"),
        ])])
        .ctx("append")?;
        log.checkpoint().ctx("checkpoint")?;
        ensure_stored(engine, &place, marker)?;
        // A second handle (another process) that has read the events stays open.
        let other = engine.event_log(&place).ctx("open a second handle")?;
        ensure_eq!(
            scan_all(other.as_ref(), &EventFilter::default())?.len(),
            3,
            "the second handle reads the events"
        );
        let all = scan_all(log.as_ref(), &EventFilter::default())?;
        let deleted = log
            .delete_events(&[all[1].seq, all[2].seq + 1_000])
            .ctx("delete_events")?;
        ensure_eq!(deleted, 1, "delete_events counts the events that existed");
        ensure!(
            log.get(&[all[1].seq]).ctx("get")?.is_empty(),
            "a deleted event is not read"
        );
        let left = scan_all(log.as_ref(), &EventFilter::default())?;
        ensure_eq!(
            left,
            vec![all[0].clone(), all[2].clone()],
            "other events untouched"
        );
        ensure_gone(engine, &place, marker, "delete_events returned")?;
        ensure_eq!(
            scan_all(other.as_ref(), &EventFilter::default())?.len(),
            2,
            "the second handle no longer reads the deleted event"
        );
    }
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    ensure_eq!(
        scan_all(log.as_ref(), &EventFilter::default())?.len(),
        2,
        "a deleted event stays deleted after reopening"
    );
    ensure_gone(engine, &place, marker, "reopening")?;
    Ok(())
}

/// `rewrite_events` replaces stored messages keeping their `seq`, returns how many
/// existed, and leaves no file holding the old bytes.
pub fn rewritten_events_leave_no_old_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let marker = "rewrite-me-0b5e44a1@example.com";
    let log = engine.event_log(&place).ctx("open the event log")?;
    log.append(&[batch(vec![
        event(1, "a", &format!("{{\"cc\":\"{marker}\",\"n\":1}}")),
        event(1, "b", "{\"n\":2}"),
    ])])
    .ctx("append")?;
    log.checkpoint().ctx("checkpoint")?;
    ensure_stored(engine, &place, marker)?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    let rewritten = log
        .rewrite_events(&[
            RewrittenEvent {
                seq: all[0].seq,
                payload: "{\"cc\":null,\"n\":1}".into(),
            },
            RewrittenEvent {
                seq: all[1].seq + 1_000,
                payload: "{}".into(),
            },
        ])
        .ctx("rewrite_events")?;
    ensure_eq!(
        rewritten,
        1,
        "rewrite_events counts the events that existed"
    );
    let now = scan_all(log.as_ref(), &EventFilter::default())?;
    ensure_eq!(
        (now[0].seq, now[0].payload.as_str(), now.len()),
        (all[0].seq, "{\"cc\":null,\"n\":1}", 2),
        "the rewritten event keeps its seq and has the new message"
    );
    ensure_gone(engine, &place, marker, "rewrite_events returned")?;
    drop(log);
    let _log = engine.event_log(&place).ctx("reopen the event log")?;
    ensure_gone(engine, &place, marker, "reopening")?;
    Ok(())
}

/// `find_containing`: the `seq`s, ascending, of events containing any needle, ASCII
/// case-insensitively; needles are literal text (no wildcards); no needles, or only
/// empty ones, find nothing.
pub fn find_containing_is_case_insensitive_and_literal<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    log.append(&[batch(vec![
        event(1, "a", "{\"email\":\"Ann@Example.com\"}"),
        event(1, "b", "{\"email\":\"bob@example.com\"}"),
        event(1, "c", "{\"id\":\"a_b\",\"share\":\"100%\"}"),
        event(1, "d", "{\"id\":\"axb\",\"share\":\"1000\"}"),
    ])])
    .ctx("append")?;
    let all = scan_all(log.as_ref(), &EventFilter::default())?;
    let seq = |i: usize| all[i].seq;
    let find = |needles: &[&str]| {
        let needles: Vec<String> = needles.iter().map(|n| n.to_string()).collect();
        log.find_containing(&needles).ctx("find_containing")
    };
    ensure_eq!(
        find(&["ann@example.COM"])?,
        vec![seq(0)],
        "ASCII case-insensitive"
    );
    ensure_eq!(
        find(&["bob@", "ANN@"])?,
        vec![seq(0), seq(1)],
        "any of the needles, seqs ascending"
    );
    ensure_eq!(find(&["a_b"])?, vec![seq(2)], "'_' in a needle is literal");
    ensure_eq!(find(&["100%"])?, vec![seq(2)], "'%' in a needle is literal");
    ensure_eq!(find(&["nobody"])?, Vec::<i64>::new(), "no match");
    ensure_eq!(find(&[])?, Vec::<i64>::new(), "no needles find nothing");
    ensure_eq!(
        find(&[""])?,
        Vec::<i64>::new(),
        "an empty needle finds nothing"
    );
    Ok(())
}

/// While one thread appends, readers on other threads always see a prefix of the
/// appended events in log order — never a gap or a reordering — and at least every
/// event whose append had returned before the read began.
pub fn readers_see_an_ordered_prefix_while_appending<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let log: &dyn EventLog = log.as_ref();
    let (appends, per_append) = (150usize, 20usize);
    let acknowledged = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| -> Outcome {
        let writer = scope.spawn(|| -> Outcome {
            let result = (|| {
                for a in 0..appends {
                    let events = (0..per_append)
                        .map(|i| {
                            let n = a * per_append + i;
                            event(1, &format!("m{n}"), &n.to_string())
                        })
                        .collect();
                    log.append(&[batch(events)]).ctx("append")?;
                    acknowledged.store((a + 1) * per_append, Ordering::SeqCst);
                }
                Ok(())
            })();
            done.store(true, Ordering::SeqCst);
            result
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| -> Outcome {
                    let mut reads = 0;
                    while !done.load(Ordering::SeqCst) || reads < 3 {
                        reads += 1;
                        let acked = acknowledged.load(Ordering::SeqCst);
                        let seen = scan_all(log, &EventFilter::default())?;
                        ensure!(
                            seen.len() >= acked,
                            "a read began after {acked} events were acknowledged but saw {}",
                            seen.len()
                        );
                        ensure_ascending(&seen, "a read during appends")?;
                        for (i, e) in seen.iter().enumerate() {
                            ensure!(
                                e.payload == i.to_string(),
                                "a read during appends saw event {} at position {i}: a gap or reordering",
                                e.payload
                            );
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let mut outcome = writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string())?;
        for reader in readers {
            let read = reader
                .join()
                .map_err(|_| "a reader thread panicked".to_string())?;
            outcome = outcome.and(read);
        }
        outcome
    })?;
    ensure_eq!(
        scan_all(log, &EventFilter::default())?.len(),
        appends * per_append,
        "every appended event is there"
    );
    Ok(())
}

/// Appends from several threads at once: every event is stored exactly once with a
/// unique `seq`, and each thread's events keep their order.
pub fn concurrent_appends_are_each_stored_once<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let log: &dyn EventLog = log.as_ref();
    let (threads, appends) = (4usize, 25usize);
    std::thread::scope(|scope| -> Outcome {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Outcome {
                    for a in 0..appends {
                        let events = (0..4)
                            .map(|i| {
                                event(
                                    1,
                                    &format!("t{t}-{a}-{i}"),
                                    &format!("t{t}:{:04}", a * 4 + i),
                                )
                            })
                            .collect();
                        let outcomes = log.append(&[batch(events)]).ctx("append")?;
                        ensure_eq!(
                            outcomes,
                            vec![outcome(4, 0)],
                            "concurrent append stores all"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| "an appending thread panicked".to_string())?
        })
    })?;
    let all = scan_all(log, &EventFilter::default())?;
    ensure_eq!(all.len(), threads * appends * 4, "every event stored once");
    ensure_ascending(&all, "after concurrent appends")?;
    for t in 0..threads {
        let mine: Vec<&str> = all
            .iter()
            .map(|e| e.payload.as_str())
            .filter(|p| p.starts_with(&format!("t{t}:")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        ensure_eq!(mine, sorted, "one thread's events keep their order");
    }
    Ok(())
}

/// Rejections are stored with the append (also in a batch without events), kept
/// across reopening, and listed newest first, at most `limit`.
pub fn rejections_are_kept_newest_first<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let rejection = |code: &str| RejectionRecord {
        source_key: Some(1),
        received_at_ms: 5,
        code: code.to_string(),
        message: format!("{code} happened"),
        message_type: Some("track".into()),
        message_id: Some(format!("id-{code}")),
    };
    {
        let log = engine.event_log(&place).ctx("open the event log")?;
        ensure!(
            log.recent_rejections(10)
                .ctx("recent_rejections")?
                .is_empty(),
            "none at first"
        );
        log.append(&[
            AppendBatch {
                events: vec![event(1, "a", "p")],
                rejections: vec![rejection("first")],
            },
            AppendBatch {
                events: vec![],
                rejections: vec![rejection("second"), rejection("third")],
            },
        ])
        .ctx("append")?;
        log.append(&[AppendBatch {
            events: vec![],
            rejections: vec![RejectionRecord {
                source_key: None,
                message_type: None,
                message_id: None,
                ..rejection("fourth")
            }],
        }])
        .ctx("append")?;
    }
    let log = engine.event_log(&place).ctx("reopen the event log")?;
    let listed = log.recent_rejections(3).ctx("recent_rejections")?;
    let codes: Vec<&str> = listed.iter().map(|r| r.record.code.as_str()).collect();
    ensure_eq!(
        codes,
        vec!["fourth", "third", "second"],
        "newest first, at most limit"
    );
    ensure!(
        listed[0].id > listed[1].id && listed[1].id > listed[2].id,
        "rejection ids descend newest first"
    );
    ensure_eq!(
        listed[1].record,
        rejection("third"),
        "a rejection is kept whole"
    );
    ensure_eq!(
        (
            listed[0].record.source_key,
            listed[0].record.message_id.clone()
        ),
        (None, None),
        "unknown source and messageId stay unknown"
    );
    Ok(())
}

/// `size_bytes` counts what the log holds: it is at least the payload bytes appended.
pub fn size_bytes_counts_what_is_stored<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    let payload = "x".repeat(10_000);
    log.append(&[batch(
        (0..100)
            .map(|i| event(1, &format!("m{i}"), &payload))
            .collect(),
    )])
    .ctx("append")?;
    let size = log.size_bytes().ctx("size_bytes")?;
    ensure!(
        size >= 1_000_000,
        "size_bytes {size} is below the 1 MB of payloads stored"
    );
    log.checkpoint().ctx("checkpoint")?;
    let size = log.size_bytes().ctx("size_bytes")?;
    ensure!(
        size >= 1_000_000,
        "after checkpoint, size_bytes {size} is below the 1 MB stored"
    );
    Ok(())
}

/// Durability on return, against a crash of the process: a copy of the files taken
/// right after `append` and `delete_events` returned, with the log still open, holds
/// every acknowledged event and none of the deleted ones, and an append there gets a
/// `seq` above every one handed out before.
pub fn acknowledged_events_and_deletions_survive_a_crash<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let log = engine.event_log(&place).ctx("open the event log")?;
    log.append(&[batch(vec![event(1, "a", "p1"), event(1, "b", "p2")])])
        .ctx("append")?;
    log.append(&[batch(vec![event(1, "c", "p3")])])
        .ctx("append")?;
    let before = scan_all(log.as_ref(), &EventFilter::default())?;
    let crashed = crash_copy(engine, &place)?;
    {
        let copy = engine
            .event_log(&crashed)
            .ctx("open the event log after a crash")?;
        ensure_eq!(
            scan_all(copy.as_ref(), &EventFilter::default())?,
            before,
            "every acknowledged event is in the files when append returns"
        );
    }
    log.delete_events(&[before[2].seq]).ctx("delete_events")?;
    let crashed = crash_copy(engine, &place)?;
    let copy = engine
        .event_log(&crashed)
        .ctx("open the event log after a crash")?;
    ensure_eq!(
        payloads(&scan_all(copy.as_ref(), &EventFilter::default())?),
        vec!["p1", "p2"],
        "a deletion is in the files when delete_events returns"
    );
    copy.append(&[batch(vec![event(1, "d", "p4")])])
        .ctx("append")?;
    let after = scan_all(copy.as_ref(), &EventFilter::default())?;
    ensure!(
        after.last().is_some_and(|e| e.seq > before[2].seq),
        "after a crash, an append reused the deleted newest seq {}",
        before[2].seq
    );
    let outcomes = copy
        .append(&[batch(vec![event(1, "a", "again")])])
        .ctx("append")?;
    ensure_eq!(
        outcomes,
        vec![outcome(0, 1)],
        "a repeated messageId is a duplicate after a crash"
    );
    Ok(())
}
