//! The embedded store: SQLite files in the data directory.
//!
//! Two files, so configuration writes never queue behind the ingest writer:
//! - `events.db` — the event log (`events`) and the rejected-message view
//!   (`rejections`). WAL mode. An append is acknowledged only after the write-ahead
//!   log is fsynced, which is what makes an acknowledged event survive `kill -9` and
//!   power loss. The ingest writer commits with `synchronous=NORMAL` and fsyncs the
//!   WAL itself in [`EventLog::sync`], so the next group's inserts overlap this
//!   group's fsync (see `EventLog::append_unsynced`); rows not yet fsynced are hidden
//!   from this process's readers until they are. `secure_delete` is on, so deleted
//!   events are overwritten with zeros where they lie, and erasure's
//!   [`EventLog::purge_deleted`] then rewrites the file from its live rows (`VACUUM`:
//!   rebalanced pages keep stale copies of moved rows in their unallocated space)
//!   and truncates the WAL, so no file keeps an erased person's bytes.
//! - `tessera.db` — sources and settings.
//!
//! Duplicate `messageId`s are caught by an in-memory window index ([`DedupConfig`];
//! see the `dedup` module for why), so the log itself is append-only.
//!
//! `seq` is the rowid, handed out by the writer above a high-water mark that erasure
//! keeps when it deletes the newest events (`log_state`), so a value is never reused
//! and consumers' checkpoints stay valid. (The first schema used `AUTOINCREMENT`,
//! which rewrites a 64 KB `sqlite_sequence` page in every commit; such files are
//! upgraded when opened.) See
//! `docs/decisions/0001-embedded-store.md` for why SQLite, with the measurements.

mod activation;
mod audiences;
mod catalog;
mod connection;
mod dedup;
mod event_log;
mod private;
mod profiles;

pub use activation::SqliteActivationStore;
pub use audiences::SqliteAudienceStore;
pub use dedup::DedupConfig;
pub use private::secure_data_dir;
pub use profiles::SqliteProfileStore;

pub use catalog::SqliteCatalog;
pub use event_log::SqliteEventLog;

pub(crate) use connection::{
    engine, like_condition, like_patterns, lock, open_writer_and_reader, query_rows,
    vacuum_and_truncate_wal,
};

use std::path::Path;
use tessera_store::StoreResult;

/// The event log's file in the data directory.
pub const EVENTS_FILE: &str = "events.db";

/// The catalog's file (sources, settings, tokens, definitions, audit) in the data
/// directory.
pub const CATALOG_FILE: &str = "tessera.db";

/// Opens both stores of a data directory with the default dedup window, creating
/// it and the schema when missing.
pub fn open_data_dir(dir: &Path) -> StoreResult<(SqliteEventLog, SqliteCatalog)> {
    open_data_dir_with(dir, DedupConfig::default())
}

/// Opens both stores of a data directory with a given dedup window.
pub fn open_data_dir_with(
    dir: &Path,
    dedup: DedupConfig,
) -> StoreResult<(SqliteEventLog, SqliteCatalog)> {
    secure_data_dir(dir)?;
    Ok((
        SqliteEventLog::open(&dir.join(EVENTS_FILE), dedup)?,
        SqliteCatalog::open(&dir.join(CATALOG_FILE))?,
    ))
}
