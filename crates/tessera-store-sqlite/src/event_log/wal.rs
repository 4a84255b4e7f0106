//! The write-ahead log as a file: fsynced by the writer, its checkpoints' writeback
//! started early.

use crate::connection::engine;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use tessera_store::{StoreError, StoreResult};

/// SQLite's write-ahead log file of the database at `path`.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// An open handle on the WAL file, and which file it is.
pub(crate) struct WalFile {
    pub(crate) file: std::fs::File,
    device: u64,
    inode: u64,
}

impl WalFile {
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(path)
            .map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
        Ok(Self {
            file,
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    pub(crate) fn is(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.device == meta.dev() && self.inode == meta.ino()
    }
}

/// Starts writeback of the pages checkpoints copy into the main file, round by round.
///
/// A PASSIVE checkpoint that does not reach the WAL's end copies pages without an
/// fsync; the round that does reach it fsyncs the main file, which then flushes
/// everything the rounds before it copied (measured: 60-130 MB in one `fdatasync` of
/// 50-150 ms, and every WAL fsync queued behind it). Asking the kernel to start
/// writing what each round appended spreads those bytes over the rounds.
pub(crate) struct EarlyWriteback {
    pub(crate) file: std::fs::File,
    /// The main file's size at the last call: what lies past it is new.
    pub(crate) started_to: u64,
}

impl EarlyWriteback {
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
        let started_to = file.metadata().map_or(0, |m| m.len());
        Ok(Self { file, started_to })
    }

    /// Starts writeback of what was appended to the main file since the last call.
    /// `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages without
    /// waiting for it (pages still dirty or being written stay cached). Best effort:
    /// the checkpoint's fsync makes the copy durable either way.
    pub(crate) fn start(&mut self) {
        let Ok(size) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        let from = self.started_to.min(size);
        if size > from {
            let length = std::num::NonZeroU64::new(size - from);
            let _ = rustix::fs::fadvise(&self.file, from, length, rustix::fs::Advice::DontNeed);
        }
        self.started_to = size;
    }
}

/// Runs a PASSIVE checkpoint; answers the WAL's frames and how many of them are
/// copied into the main file.
pub(crate) fn passive_checkpoint(conn: &Connection) -> StoreResult<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
    .map_err(engine)
}
