//! The delivery outbox and journey runs in `activation.db`.
//!
//! Its own file: deliveries are written at the pace of fan-out and attempts, never
//! behind the event-log writer, and replay (which resets `profiles.db`) must keep
//! them — what was sent stays sent.

use crate::{engine, lock, open_writer_and_reader, query_rows as query};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::Path;
use std::sync::Mutex;
use tessera_store::StoreResult;
use tessera_store::activation::{
    ActivationStore, Delivery, DeliveryFilter, DeliveryOutcome, DeliveryStatus, JourneyRun,
    NewDelivery,
};
use tessera_store::profiles::ProfileId;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS deliveries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        destination     TEXT    NOT NULL,
        profile_id      INTEGER,
        idempotency_key TEXT    NOT NULL UNIQUE,
        channel         TEXT    NOT NULL,
        purpose         TEXT,
        payload         TEXT    NOT NULL,
        origin_ms       INTEGER NOT NULL,
        status          TEXT    NOT NULL,
        reason          TEXT,
        journey         TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_error      TEXT,
        created_ms      INTEGER NOT NULL,
        delivered_ms    INTEGER
    );
    -- Due deliveries are read in id order per destination; the pending ones of one
    -- person are probed for per-profile order. Both indexes hold only pending rows,
    -- so they stay small however long the history grows.
    CREATE INDEX IF NOT EXISTS deliveries_pending
        ON deliveries (destination, id) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS deliveries_pending_by_profile
        ON deliveries (destination, profile_id, id) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS deliveries_by_profile ON deliveries (profile_id, channel, created_ms);
    CREATE TABLE IF NOT EXISTS cursors (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS journey_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        journey       TEXT    NOT NULL,
        profile_id    INTEGER NOT NULL,
        state         TEXT    NOT NULL,
        step          INTEGER NOT NULL,
        wake_at_ms    INTEGER,
        waiting_event TEXT,
        entered_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL,
        trigger_key   TEXT    NOT NULL,
        trigger_json  TEXT    NOT NULL,
        history_json  TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS journey_runs_one_active
        ON journey_runs (journey, profile_id) WHERE state = 'active';
    CREATE UNIQUE INDEX IF NOT EXISTS journey_runs_one_per_trigger
        ON journey_runs (journey, profile_id, trigger_key);
    CREATE INDEX IF NOT EXISTS journey_runs_by_profile ON journey_runs (profile_id, id);
    CREATE INDEX IF NOT EXISTS journey_runs_due ON journey_runs (state, wake_at_ms);
    CREATE INDEX IF NOT EXISTS journey_runs_by_trigger ON journey_runs (trigger_key);
";

const DELIVERY_COLUMNS: &str = "id, destination, profile_id, idempotency_key, channel, purpose, \
    payload, origin_ms, status, reason, journey, attempts, next_attempt_ms, last_error, \
    created_ms, delivered_ms";
const RUN_COLUMNS: &str = "id, journey, profile_id, state, step, wake_at_ms, waiting_event, \
    entered_ms, updated_ms, trigger_key, trigger_json, history_json";

/// The outbox and journey runs in `activation.db`.
pub struct SqliteActivationStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteActivationStore {
    /// Opens (or creates) the activation store of a data directory.
    pub fn open_in(data_dir: &Path) -> StoreResult<Self> {
        let (writer, reader) = open_writer_and_reader(data_dir, "activation.db", SCHEMA)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(8)?;
    Ok(Delivery {
        id: row.get(0)?,
        new: NewDelivery {
            destination: row.get(1)?,
            profile_id: row.get(2)?,
            idempotency_key: row.get(3)?,
            channel: row.get(4)?,
            purpose: row.get(5)?,
            payload: row.get(6)?,
            origin_ms: row.get(7)?,
            // An unknown stored status is never treated as sendable.
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Dead),
            reason: row.get(9)?,
            journey: row.get(10)?,
            queued_ms: row.get(14)?,
        },
        attempts: row.get(11)?,
        next_attempt_ms: row.get(12)?,
        last_error: row.get(13)?,
        created_ms: row.get(14)?,
        delivered_ms: row.get(15)?,
    })
}

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JourneyRun> {
    Ok(JourneyRun {
        id: row.get(0)?,
        journey: row.get(1)?,
        profile_id: row.get(2)?,
        state: row.get(3)?,
        step: row.get(4)?,
        wake_at_ms: row.get(5)?,
        waiting_event: row.get(6)?,
        entered_ms: row.get(7)?,
        updated_ms: row.get(8)?,
        trigger_key: row.get(9)?,
        trigger_json: row.get(10)?,
        history_json: row.get(11)?,
    })
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn insert_deliveries(tx: &Transaction<'_>, deliveries: &[NewDelivery]) -> StoreResult<usize> {
    let mut statement = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO deliveries (destination, profile_id, idempotency_key, channel,
                 purpose, payload, origin_ms, status, reason, journey, next_attempt_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
        )
        .map_err(engine)?;
    let mut inserted = 0;
    for d in deliveries {
        inserted += statement
            .execute(params![
                d.destination,
                d.profile_id,
                d.idempotency_key,
                d.channel,
                d.purpose,
                d.payload,
                d.origin_ms,
                d.status.as_str(),
                d.reason,
                d.journey,
                d.queued_ms
            ])
            .map_err(engine)?;
    }
    Ok(inserted)
}

/// Rewrites `column` of the rows of `table` matching any LIKE pattern.
fn rewrite_column(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    patterns: &[String],
    rewrite: &mut dyn FnMut(&str) -> Option<String>,
) -> StoreResult<u64> {
    let condition = crate::like_condition(column, patterns.len());
    let rows: Vec<(i64, String)> = {
        let mut statement = tx
            .prepare(&format!(
                "SELECT id, {column} FROM {table} WHERE {condition}"
            ))
            .map_err(engine)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(patterns.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)?
    };
    let mut changed = 0;
    for (id, text) in rows {
        if let Some(next) = rewrite(&text) {
            changed += tx
                .execute(
                    &format!("UPDATE {table} SET {column} = ?2 WHERE id = ?1"),
                    params![id, next],
                )
                .map_err(engine)? as u64;
        }
    }
    Ok(changed)
}

impl ActivationStore for SqliteActivationStore {
    fn enqueue(&self, deliveries: &[NewDelivery], cursors: &[(&str, i64)]) -> StoreResult<usize> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        let inserted = insert_deliveries(&tx, deliveries)?;
        for (name, value) in cursors {
            tx.execute(
                "INSERT INTO cursors (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                params![name, value],
            )
            .map_err(engine)?;
        }
        tx.commit().map_err(engine)?;
        Ok(inserted)
    }

    fn cursor(&self, name: &str) -> StoreResult<i64> {
        let conn = lock(&self.reader);
        conn.query_row("SELECT value FROM cursors WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map(|v| v.unwrap_or(0))
        .map_err(engine)
    }

    fn due(&self, destination: &str, now_ms: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        let conn = lock(&self.reader);
        // The oldest pending delivery of each profile, when it is due: a profile's
        // later deliveries wait behind its earlier ones (per-profile order).
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d
             WHERE destination = ?1 AND status = 'pending' AND next_attempt_ms <= ?2
               AND (profile_id IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries e
                   WHERE e.destination = d.destination AND e.status = 'pending'
                     AND e.profile_id = d.profile_id AND e.id < d.id))
             ORDER BY id LIMIT ?3"
        );
        query(
            &conn,
            &sql,
            &[&destination, &now_ms, &limit_param(limit)],
            delivery_row,
        )
    }

    fn next_due(&self, destination: &str) -> StoreResult<Option<i64>> {
        let conn = lock(&self.reader);
        // Only each profile's oldest pending delivery can be next: the ones queued
        // behind it (created in the past, so "due") must not make the worker spin.
        conn.query_row(
            "SELECT min(next_attempt_ms) FROM deliveries d
             WHERE destination = ?1 AND status = 'pending'
               AND (profile_id IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries e
                   WHERE e.destination = d.destination AND e.status = 'pending'
                     AND e.profile_id = d.profile_id AND e.id < d.id))",
            [destination],
            |r| r.get(0),
        )
        .map_err(engine)
    }

    fn record(&self, outcomes: &[DeliveryOutcome]) -> StoreResult<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        {
            let mut statement = tx
                .prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_ms = ?4,
                         last_error = coalesce(?5, last_error), delivered_ms = ?6
                     WHERE id = ?1",
                )
                .map_err(engine)?;
            for o in outcomes {
                statement
                    .execute(params![
                        o.id,
                        o.status.as_str(),
                        o.attempts,
                        o.next_attempt_ms,
                        o.error,
                        o.delivered_ms
                    ])
                    .map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE id > ?1 AND (?2 IS NULL OR destination = ?2) AND (?3 IS NULL OR status = ?3)
               AND (?4 IS NULL OR profile_id = ?4)
             ORDER BY id LIMIT ?5"
        );
        query(
            &conn,
            &sql,
            &[
                &filter.after_id,
                &filter.destination,
                &filter.status.map(DeliveryStatus::as_str),
                &filter.profile_id,
                &limit_param(filter.limit),
            ],
            delivery_row,
        )
    }

    fn counts(&self, destination: &str) -> StoreResult<Vec<(DeliveryStatus, i64)>> {
        let conn = lock(&self.reader);
        let rows: Vec<(String, i64)> = query(
            &conn,
            "SELECT status, count(*) FROM deliveries WHERE destination = ?1 GROUP BY status",
            &[&destination],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| DeliveryStatus::parse(&s).map(|s| (s, n)))
            .collect())
    }

    fn retry_dead(
        &self,
        destination: Option<&str>,
        ids: &[i64],
        now_ms: i64,
    ) -> StoreResult<usize> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        let mut changed = 0;
        if ids.is_empty() {
            changed += tx
                .execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = ?2
                     WHERE status = 'dead' AND (?1 IS NULL OR destination = ?1)",
                    params![destination, now_ms],
                )
                .map_err(engine)?;
        } else {
            for id in ids {
                changed += tx
                    .execute(
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = ?2
                         WHERE status = 'dead' AND id = ?1 AND (?3 IS NULL OR destination = ?3)",
                        params![id, now_ms, destination],
                    )
                    .map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)?;
        Ok(changed)
    }

    fn recent_sends(&self, profile: ProfileId, channel: &str, since_ms: i64) -> StoreResult<i64> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT count(*) FROM deliveries
             WHERE profile_id = ?1 AND channel = ?2 AND created_ms >= ?3 AND status != 'blocked'",
            params![profile, channel, since_ms],
            |r| r.get(0),
        )
        .map_err(engine)
    }

    fn start_run(&self, run: &JourneyRun, sends: &[NewDelivery]) -> StoreResult<Option<i64>> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO journey_runs (journey, profile_id, state, step, wake_at_ms,
                     waiting_event, entered_ms, updated_ms, trigger_key, trigger_json, history_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run.journey,
                    run.profile_id,
                    run.state,
                    run.step,
                    run.wake_at_ms,
                    run.waiting_event,
                    run.entered_ms,
                    run.updated_ms,
                    run.trigger_key,
                    run.trigger_json,
                    run.history_json
                ],
            )
            .map_err(engine)?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        insert_deliveries(&tx, sends)?;
        tx.commit().map_err(engine)?;
        Ok(Some(id))
    }

    fn update_run(&self, run: &JourneyRun, sends: &[NewDelivery]) -> StoreResult<bool> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        let saved = tx.execute(
            "UPDATE journey_runs SET state = ?2, step = ?3, wake_at_ms = ?4, waiting_event = ?5,
                 updated_ms = ?6, history_json = ?7
             WHERE id = ?1 AND state = 'active'",
            params![
                run.id,
                run.state,
                run.step,
                run.wake_at_ms,
                run.waiting_event,
                run.updated_ms,
                run.history_json
            ],
        )
        .map_err(engine)?;
        if saved == 0 {
            return Ok(false);
        }
        insert_deliveries(&tx, sends)?;
        tx.commit().map_err(engine)?;
        Ok(true)
    }

    fn due_runs(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<JourneyRun>> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM journey_runs
             WHERE state = 'active' AND wake_at_ms IS NOT NULL AND wake_at_ms <= ?1
             ORDER BY wake_at_ms, id LIMIT ?2"
        );
        query(&conn, &sql, &[&now_ms, &limit_param(limit)], run_row)
    }

    fn active_runs(&self, profile: ProfileId) -> StoreResult<Vec<JourneyRun>> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM journey_runs
             WHERE profile_id = ?1 AND state = 'active' ORDER BY id"
        );
        query(&conn, &sql, &[&profile], run_row)
    }

    fn profile_runs(&self, profile: ProfileId) -> StoreResult<Vec<JourneyRun>> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM journey_runs WHERE profile_id = ?1 ORDER BY id DESC"
        );
        query(&conn, &sql, &[&profile], run_row)
    }

    fn last_run(&self, journey: &str, profile: ProfileId) -> StoreResult<Option<JourneyRun>> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM journey_runs
             WHERE journey = ?1 AND profile_id = ?2 ORDER BY id DESC LIMIT 1"
        );
        Ok(query(&conn, &sql, &[&journey, &profile], run_row)?
            .into_iter()
            .next())
    }

    fn exit_runs(&self, journey: &str, now_ms: i64, reason: &str) -> StoreResult<usize> {
        let conn = lock(&self.writer);
        conn.execute(
            "UPDATE journey_runs SET state = 'exited', wake_at_ms = NULL, waiting_event = NULL,
                 updated_ms = ?2,
                 history_json = json_insert(history_json, '$[#]',
                     json_object('action', 'exit', 'reason', ?3, 'at', ?2))
             WHERE journey = ?1 AND state = 'active'",
            params![journey, now_ms, reason],
        )
        .map_err(engine)
    }

    fn run_counts(&self, journey: &str) -> StoreResult<Vec<(String, i64)>> {
        let conn = lock(&self.reader);
        query(
            &conn,
            "SELECT state, count(*) FROM journey_runs WHERE journey = ?1 GROUP BY state",
            &[&journey],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn rewrite_payloads(
        &self,
        needles: &[String],
        payload: &mut dyn FnMut(&str) -> Option<String>,
        trigger: &mut dyn FnMut(&str) -> Option<String>,
    ) -> StoreResult<u64> {
        let patterns = crate::like_patterns(needles);
        if patterns.is_empty() {
            return Ok(0);
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        let changed = rewrite_column(&tx, "deliveries", "payload", &patterns, payload)?
            + rewrite_column(&tx, "journey_runs", "trigger_json", &patterns, trigger)?;
        tx.commit().map_err(engine)?;
        Ok(changed)
    }

    fn erase_events(&self, seqs: &[i64]) -> StoreResult<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        for seq in seqs {
            // Keys of an event's deliveries are `e<seq>:<destination>`: a range of the
            // unique index (':' + 1 is ';').
            tx.execute(
                "DELETE FROM deliveries WHERE idempotency_key >= ?1 AND idempotency_key < ?2",
                params![format!("e{seq}:"), format!("e{seq};")],
            )
            .map_err(engine)?;
            tx.execute(
                "DELETE FROM journey_runs WHERE trigger_key = ?1",
                [format!("event:{seq}")],
            )
            .map_err(engine)?;
        }
        tx.commit().map_err(engine)
    }

    fn erase_profiles(&self, profiles: &[ProfileId]) -> StoreResult<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        for profile in profiles {
            for sql in [
                "DELETE FROM deliveries WHERE profile_id = ?1",
                "DELETE FROM journey_runs WHERE profile_id = ?1",
            ] {
                tx.execute(sql, [profile]).map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)
    }

    fn purge_deleted(&self) -> StoreResult<()> {
        crate::vacuum_and_truncate_wal(&mut lock(&self.writer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delivery(key: &str, profile: i64) -> NewDelivery {
        NewDelivery {
            destination: "hook".into(),
            profile_id: Some(profile),
            idempotency_key: key.into(),
            channel: "webhook".into(),
            purpose: None,
            payload: "{}".into(),
            origin_ms: 0,
            status: DeliveryStatus::Pending,
            reason: None,
            journey: None,
            queued_ms: 0,
        }
    }

    #[test]
    fn enqueue_is_idempotent_and_due_keeps_per_profile_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteActivationStore::open_in(dir.path()).unwrap();
        let batch = [delivery("a1", 1), delivery("a2", 1), delivery("b1", 2)];
        assert_eq!(store.enqueue(&batch, &[("events", 10)]).unwrap(), 3);
        assert_eq!(store.enqueue(&batch, &[("events", 5)]).unwrap(), 0);
        assert_eq!(store.cursor("events").unwrap(), 10);
        let due = store.due("hook", i64::MAX, 10).unwrap();
        let keys: Vec<&str> = due.iter().map(|d| d.new.idempotency_key.as_str()).collect();
        assert_eq!(keys, ["a1", "b1"]);
        // a1 fails and waits: a2 stays behind it.
        store
            .record(&[DeliveryOutcome {
                id: due[0].id,
                status: DeliveryStatus::Pending,
                attempts: 1,
                next_attempt_ms: i64::MAX / 2,
                error: Some("503".into()),
                delivered_ms: None,
            }])
            .unwrap();
        let keys: Vec<String> = store
            .due("hook", i64::MAX / 4, 10)
            .unwrap()
            .into_iter()
            .map(|d| d.new.idempotency_key)
            .collect();
        assert_eq!(keys, ["b1"]);
        assert!(
            store
                .next_due("hook")
                .unwrap()
                .is_some_and(|t| t < i64::MAX / 4)
        );
        // Once b1 is delivered, the next due time is a1's retry, not a2's creation
        // (a2 waits behind a1).
        let b1 = store.due("hook", i64::MAX / 4, 10).unwrap()[0].id;
        store
            .record(&[DeliveryOutcome {
                id: b1,
                status: DeliveryStatus::Delivered,
                attempts: 1,
                next_attempt_ms: 0,
                error: None,
                delivered_ms: Some(1),
            }])
            .unwrap();
        assert_eq!(store.next_due("hook").unwrap(), Some(i64::MAX / 2));
    }

    #[test]
    fn one_active_run_per_journey_and_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteActivationStore::open_in(dir.path()).unwrap();
        let mut run = JourneyRun {
            id: 0,
            journey: "cart".into(),
            profile_id: 7,
            state: "active".into(),
            step: 0,
            wake_at_ms: Some(5),
            waiting_event: None,
            entered_ms: 1,
            updated_ms: 1,
            trigger_key: "event:1".into(),
            trigger_json: "{}".into(),
            history_json: "[]".into(),
        };
        let id = store.start_run(&run, &[]).unwrap().unwrap();
        assert_eq!(store.start_run(&run, &[]).unwrap(), None);
        assert_eq!(store.due_runs(5, 10).unwrap().len(), 1);
        run.id = id;
        run.state = "completed".into();
        store.update_run(&run, &[delivery("j1", 7)]).unwrap();
        // The same trigger never starts a second run; another one does.
        assert!(store.start_run(&run_active(&run), &[]).unwrap().is_none());
        let again = JourneyRun {
            trigger_key: "event:2".into(),
            ..run_active(&run)
        };
        assert!(store.start_run(&again, &[]).unwrap().is_some());
        assert_eq!(store.exit_runs("cart", 9, "journey changed").unwrap(), 1);
        assert_eq!(store.recent_sends(7, "webhook", 0).unwrap(), 1);
        store.erase_profiles(&[7]).unwrap();
        assert!(store.profile_runs(7).unwrap().is_empty());
    }

    fn run_active(run: &JourneyRun) -> JourneyRun {
        JourneyRun {
            state: "active".into(),
            ..run.clone()
        }
    }
}
