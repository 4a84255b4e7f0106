//! The `events` table: its columns, the file's page size, the multi-row inserts and
//! the upgrade of a first-schema file.

use crate::connection::{engine, open_connection};
use crate::private;
use rusqlite::Connection;
use std::path::Path;
use tessera_store::{EventRecord, StoreResult};

/// The columns of `events` (created at open, and by the upgrade of a first-schema file).
pub(crate) const EVENTS_COLUMNS: &str = "(
    seq            INTEGER PRIMARY KEY,
    source_key     INTEGER NOT NULL,
    message_id     TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    appended_at_ms INTEGER NOT NULL,
    payload        TEXT    NOT NULL
)";

/// Page size of `events.db` (set when the file is created).
pub(crate) const EVENTS_PAGE_SIZE: i64 = 65_536;

/// The event log uses 64 KB pages: appends are sequential, and big pages mean a
/// fraction of the WAL frames and write calls per megabyte.
pub(crate) fn open_events_connection(path: &Path) -> StoreResult<Connection> {
    let fresh = !path.exists();
    if fresh {
        private::create_private_file(path)?;
        let conn = Connection::open(path).map_err(engine)?;
        conn.execute_batch(&format!("PRAGMA page_size = {EVENTS_PAGE_SIZE}; VACUUM;"))
            .map_err(engine)?;
    }
    open_connection(path)
}

/// Events inserted by one statement (5 values each: far below SQLite's limit of 32,766).
pub(crate) const ROWS_PER_INSERT: usize = 32;

/// Values bound per event row (`seq` is left to SQLite, see [`insert_events_sql`]).
pub(crate) const EVENT_COLUMNS: usize = 5;

/// How the rows of an insert statement get their `seq`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqFrom {
    /// SQLite's next rowid: one above the newest event.
    Rowid,
    /// Bound as the first value (after erasure deleted the newest events, see
    /// [`append_unsynced`](EventLog::append_unsynced)).
    Bound,
}

/// `INSERT INTO events ... VALUES (...), (...)` for `rows` rows (built once per kind).
///
/// `OR ROLLBACK`: a failing row rolls back the whole transaction (the append fails
/// as a whole anyway). With the default `ABORT`, SQLite must be able to undo just the
/// failed statement, so a statement of many rows keeps a statement journal: a copy of
/// every 64 KB page it touches, in a temporary file (measured: 3 times the WAL's bytes).
/// Binding `seq` does that too (measured: 3.3 KB per event), so the usual statements
/// leave it to SQLite.
pub(crate) fn insert_events_sql(rows: usize, seq: SeqFrom) -> &'static str {
    static ONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static ONE_WITH_SEQ: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static CHUNK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let build = || {
        let (seq_column, seq_value) = match seq {
            SeqFrom::Rowid => ("", ""),
            SeqFrom::Bound => ("seq, ", "?, "),
        };
        let row = format!("({seq_value}{})", ["?"; EVENT_COLUMNS].join(", "));
        format!(
            "INSERT OR ROLLBACK INTO events ({seq_column}source_key, message_id, received_at_ms,
                                             appended_at_ms, payload)
             VALUES {}",
            vec![row; rows].join(", ")
        )
    };
    match (rows, seq) {
        (1, SeqFrom::Rowid) => ONE.get_or_init(build),
        (1, SeqFrom::Bound) => ONE_WITH_SEQ.get_or_init(build),
        _ => {
            debug_assert_eq!((rows, seq == SeqFrom::Rowid), (ROWS_PER_INSERT, true));
            CHUNK.get_or_init(build)
        }
    }
}

/// The values of one event row, in the column order of [`insert_events_sql`].
pub(crate) fn push_event_values<'a>(
    values: &mut Vec<&'a dyn rusqlite::ToSql>,
    event: &'a EventRecord,
    appended_at_ms: &'a i64,
) {
    values.extend_from_slice(&[
        &event.source_key,
        &event.message_id,
        &event.received_at_ms,
        appended_at_ms,
        &event.payload,
    ]);
}

/// The newest event's seq, and the highest seq ever handed out: higher when erasure
/// deleted the newest events (it keeps the mark in `log_state`). Read inside the
/// append's transaction, so another process appending is accounted for.
pub(crate) fn newest_and_high_water(conn: &Connection) -> StoreResult<(i64, i64)> {
    conn.prepare_cached(
        "SELECT coalesce((SELECT max(seq) FROM events), 0),
                coalesce((SELECT value FROM log_state WHERE name = 'seq_high_water'), 0)",
    )
    .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
    .map_err(engine)
}

/// Upgrades an `events` table of the first schema (an `AUTOINCREMENT` seq, and
/// `type`, `user_id`, `anonymous_id`, `timestamp_ms` columns that nothing read) to the
/// current one: the rows are copied in one transaction, and the last seq handed out
/// (`sqlite_sequence`) becomes the high-water mark, so no seq is reused.
pub(crate) fn migrate_events_table(conn: &Connection) -> StoreResult<()> {
    let first_schema = |conn: &Connection| -> StoreResult<bool> {
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                [],
                |row| row.get(0),
            )
            .map_err(engine)?;
        Ok(sql.contains("AUTOINCREMENT"))
    };
    if !first_schema(conn)? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(engine)?;
    // Another process may have upgraded the file while this one waited for the lock.
    let result = first_schema(conn).and_then(|needed| {
        if !needed {
            return Ok(0);
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .map_err(engine)?;
        tracing::info!(
            rows,
            "upgrading the event log's table (once; the rows are copied)"
        );
        conn.execute_batch(&format!(
            "CREATE TABLE events_upgraded {EVENTS_COLUMNS};
             INSERT INTO events_upgraded
                 SELECT seq, source_key, message_id, received_at_ms, appended_at_ms, payload
                 FROM events ORDER BY seq;
             INSERT INTO log_state (name, value)
                 SELECT 'seq_high_water', seq FROM sqlite_sequence WHERE name = 'events'
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);
             DROP TABLE events;
             ALTER TABLE events_upgraded RENAME TO events;"
        ))
        .map_err(engine)?;
        Ok(rows)
    });
    match result {
        Ok(_) => conn.execute_batch("COMMIT").map_err(engine),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}
