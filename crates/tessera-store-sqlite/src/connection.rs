//! SQLite connections: opening them private, waiting for locks, classifying errors,
//! and rewriting a file so deleted rows leave no copy behind.

use crate::private::{self, secure_data_dir};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tessera_store::{StoreError, StoreResult};

/// How long a connection waits for another process's write lock (CLI vs server).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a connection waiting for a lock looks again. SQLite's own busy timeout
/// sleeps in growing steps (up to 100 ms), so the event-log writer could sleep long
/// past the moment a checkpoint released the lock; polling every millisecond keeps
/// that overshoot out of ingest latency.
pub(crate) const LOCK_POLL: Duration = Duration::from_millis(1);

/// Makes `conn` wait up to `limit` for a lock held by another connection, looking
/// again every [`LOCK_POLL`].
pub(crate) fn wait_for_locks(conn: &mut Connection, limit: Duration) -> StoreResult<()> {
    let attempts = limit.as_millis() / LOCK_POLL.as_millis();
    conn.busy_handler(Some(move |attempt: i32| {
        std::thread::sleep(LOCK_POLL);
        u128::try_from(attempt).is_ok_and(|attempt| attempt < attempts)
    }))
    .map_err(engine)
}

/// A SQLite error as a [`StoreError`] of the kind a caller can act on.
pub(crate) fn engine(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as Code;
    let text = error.to_string();
    match error.sqlite_error_code() {
        Some(
            Code::DatabaseBusy
            | Code::DatabaseLocked
            | Code::DiskFull
            | Code::SystemIoFailure
            | Code::CannotOpen
            | Code::OutOfMemory
            | Code::FileLockingProtocolFailed,
        ) => StoreError::Unavailable(text),
        Some(Code::ConstraintViolation) => StoreError::Conflict(text),
        Some(Code::DatabaseCorrupt | Code::NotADatabase) => StoreError::Corrupt(text),
        _ => StoreError::Engine(text),
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite half-written (the transaction
    // rolls back on drop), so a poisoned mutex is safe to keep using.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Like [`lock`], but waits at most `limit`, looking every 100 µs.
pub(crate) fn lock_within<T>(mutex: &Mutex<T>, limit: Duration) -> Option<MutexGuard<'_, T>> {
    let started = std::time::Instant::now();
    loop {
        if let Some(guard) = try_lock(mutex) {
            return Some(guard);
        }
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Like [`lock`], but answers `None` instead of waiting when the mutex is held.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Runs a cached query and maps every row.
pub(crate) fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(engine)?;
    let rows = statement.query_map(args, map).map_err(engine)?;
    rows.collect::<Result<_, _>>().map_err(engine)
}

/// `LIKE` patterns finding any of `needles` inside a text column (ASCII
/// case-insensitive, and unlike `lower()` it copies nothing per row); empty needles
/// are left out. Use with [`like_condition`].
pub(crate) fn like_patterns(needles: &[String]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| {
            let escaped = n
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
        .collect()
}

/// `column LIKE ? ESCAPE '\' OR …` for `count` patterns of [`like_patterns`].
pub(crate) fn like_condition(column: &str, count: usize) -> String {
    vec![format!("{column} LIKE ? ESCAPE '\\'"); count].join(" OR ")
}

/// How long one WAL truncation attempt waits for readers and writers.
pub(crate) const TRUNCATE_WAIT: Duration = Duration::from_millis(100);

/// Attempts at a full WAL truncation before giving up (each waits for readers).
pub(crate) const TRUNCATE_ATTEMPTS: u32 = 50;

/// Checkpoints the whole WAL into the main file and truncates it to zero bytes, so
/// the old page images it held (deleted rows included) are gone from every file.
/// SQLite reports a checkpoint that readers kept from finishing as `busy` rather
/// than failing; this retries until it completed.
pub(crate) fn truncate_wal(conn: &mut Connection) -> StoreResult<()> {
    truncate_wal_holding(conn, || ())
}

/// Rewrites the whole database file from its live rows (`VACUUM`), then truncates
/// the WAL: afterwards no page of any file holds a deleted row, wherever SQLite had
/// left copies of it. `secure_delete` alone zeroes a deleted cell, but not the stale
/// copies of a row that page splits and rebalancing leave in the unallocated space
/// of other pages, nor what the WAL and freelist pages still hold. The cost is a
/// copy of the file (measured in docs/BENCHMARKS.md, Erasure); the connection's
/// writes wait meanwhile, readers do not.
pub(crate) fn vacuum_and_truncate_wal(conn: &mut Connection) -> StoreResult<()> {
    // The WAL may hold old page images the VACUUM copies nothing from: the
    // truncation removes them with the rest.
    vacuum(conn)?;
    truncate_wal(conn)
}

/// `VACUUM`, logged with its duration (it is the cost of an erasure).
pub(crate) fn vacuum(conn: &Connection) -> StoreResult<()> {
    let started = std::time::Instant::now();
    let file = conn.path().unwrap_or("?").to_string();
    conn.execute_batch("VACUUM")
        .map_err(|e| StoreError::Engine(format!("rewriting {file} (VACUUM): {e}")))?;
    tracing::info!(
        file,
        seconds = started.elapsed().as_secs_f64(),
        "rewrote the file from its live rows (erasure)"
    );
    Ok(())
}

/// [`truncate_wal`], holding what `hold` answers during each attempt (not while it
/// sleeps between attempts).
pub(crate) fn truncate_wal_holding<G>(
    conn: &mut Connection,
    mut hold: impl FnMut() -> G,
) -> StoreResult<()> {
    // Each attempt waits briefly for readers and writers (a TRUNCATE holds new
    // writers off while it waits, so a long wait would stall ingestion).
    wait_for_locks(conn, TRUNCATE_WAIT)?;
    let mut outcome = Err(StoreError::Engine(
        "the write-ahead log could not be truncated: readers kept it busy".into(),
    ));
    for attempt in 0..TRUNCATE_ATTEMPTS {
        let held = hold();
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        drop(held);
        match busy {
            Ok(0) => {
                outcome = Ok(());
                break;
            }
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
            Err(e) => {
                outcome = Err(engine(e));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20 * u64::from(attempt + 1)));
    }
    wait_for_locks(conn, BUSY_TIMEOUT)?;
    outcome
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A writer and a reader connection to `file` in `data_dir` (created with the
/// directory when missing); `setup` (schema, pragmas) runs on the writer first.
pub(crate) fn open_writer_and_reader(
    data_dir: &Path,
    file: &str,
    setup: &str,
) -> StoreResult<(Connection, Connection)> {
    secure_data_dir(data_dir)?;
    let path = data_dir.join(file);
    let writer = open_connection(&path)?;
    // Erasure must leave no trace in the file: deleted content is overwritten.
    writer
        .execute_batch("PRAGMA secure_delete = ON;")
        .map_err(engine)?;
    writer.execute_batch(setup).map_err(engine)?;
    Ok((writer, open_connection(&path)?))
}

pub(crate) fn open_connection(path: &Path) -> StoreResult<Connection> {
    // Created private before SQLite creates it (and its -wal and -shm files) 0644.
    private::create_private_file(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Engine(format!("cannot open {}: {e}", path.display())))?;
    wait_for_locks(&mut conn, BUSY_TIMEOUT)?;
    // The processor alone uses a few dozen distinct statements per transaction;
    // rusqlite's default cache of 16 would re-parse SQL on every event.
    conn.set_prepared_statement_cache_capacity(128);
    // Plans never depend on bound values. SQLite is built with STAT4, under which a
    // statement comparing a parameter with an indexed column is marked expired each
    // time its parameter changes and compiled again on its next step — even with no
    // statistics to use. Measured in a soak: 23 % of the processor thread re-preparing
    // `identities WHERE profile_id = ?` for every changed profile.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(engine)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(engine)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_not_compiled_again_when_only_their_parameters_change() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let path = dir.path().join("t.db");
        let conn = open_connection(&path)?;
        conn.execute_batch(
            "CREATE TABLE links (kind TEXT, value TEXT, owner INTEGER,
                 PRIMARY KEY (kind, value)) WITHOUT ROWID;
             CREATE INDEX links_by_owner ON links (owner, kind);
             INSERT INTO links VALUES ('email', 'a', 1), ('email', 'b', 2), ('phone', 'c', 2);",
        )
        .map_err(engine)?;
        let sql = "SELECT kind, value FROM links WHERE owner = ?1 ORDER BY value";
        for owner in 1..=3i64 {
            let mut statement = conn.prepare_cached(sql).map_err(engine)?;
            let rows = statement
                .query_map([owner], |_| Ok(()))
                .map_err(engine)?
                .count();
            assert_eq!(rows, usize::from(owner < 3) * owner as usize);
            let reprepared = statement.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(reprepared, 0, "compiled again for owner {owner}");
        }
        Ok(())
    }

    #[test]
    fn sqlite_errors_have_kinds_callers_can_act_on() {
        use rusqlite::ffi;
        let of = |code: i32| engine(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        assert_eq!(
            of(ffi::SQLITE_BUSY).kind(),
            tessera_store::StoreErrorKind::Unavailable
        );
        assert_eq!(
            of(ffi::SQLITE_FULL).kind(),
            tessera_store::StoreErrorKind::Unavailable
        );
        assert_eq!(
            of(ffi::SQLITE_CONSTRAINT).kind(),
            tessera_store::StoreErrorKind::Conflict
        );
        assert_eq!(
            of(ffi::SQLITE_CORRUPT).kind(),
            tessera_store::StoreErrorKind::Corrupt
        );
        assert!(of(ffi::SQLITE_BUSY).is_retryable());
        assert!(!of(ffi::SQLITE_CORRUPT).is_retryable());
    }
}
