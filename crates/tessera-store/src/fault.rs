//! Fault injection for tests of what Tessera promises under failure (a full disk,
//! a failed fsync, a crash in the middle of erasure, replay, merge or a send).
//!
//! Inert unless the environment variable `TESSERA_FAULT_INJECT` is set when the
//! process starts: every point then costs one load of an already-initialised
//! value. The variable holds comma-separated faults (docs/operations.md, "Fault
//! injection"):
//!
//! - `crash_at:<point>` — the process aborts (as `kill -9` would stop it: no
//!   destructor, no flush) the first time it reaches the named point;
//! - `fsync_fail_after:<n>` — after `n` successful fsyncs of the event log's
//!   write-ahead log, the next one fails as an I/O error would make it;
//! - `disk_full_while:<path>` — while the file at `path` exists, the event log's
//!   commits fail as SQLite fails them on a full disk (`database or disk is full`).
//!
//! Never set it in production: it exists so end-to-end tests can hit these moments
//! reliably against the real binary.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable holding the faults.
pub const ENV: &str = "TESSERA_FAULT_INJECT";

/// Points where `crash_at:<point>` aborts the process.
pub mod points {
    /// Erasure: the person's events were deleted from the log, their profile is
    /// still in the profile store (and the request not yet completed).
    pub const ERASURE_AFTER_EVENTS: &str = "erasure_after_events";
    /// Replay: the profile store was cleared and part of the log re-applied, the
    /// replay not finished.
    pub const REPLAY_MIDWAY: &str = "replay_midway";
    /// Merge: the merge of two profiles is written in the transaction, not yet
    /// committed.
    pub const MERGE_BEFORE_COMMIT: &str = "merge_before_commit";
    /// Activation: a delivery was sent and the receiver answered 2xx, its outcome
    /// is not recorded yet.
    pub const SEND_AFTER_DELIVERY: &str = "send_after_delivery";
}

#[derive(Default)]
struct Faults {
    crash_at: Vec<String>,
    fsync_fail_after: Option<u64>,
    disk_full_while: Option<std::path::PathBuf>,
}

fn faults() -> Option<&'static Faults> {
    static FAULTS: OnceLock<Option<Faults>> = OnceLock::new();
    FAULTS
        .get_or_init(|| {
            let text = std::env::var(ENV).ok()?;
            let mut faults = Faults::default();
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.split_once(':') {
                    Some(("crash_at", point)) => faults.crash_at.push(point.to_string()),
                    Some(("fsync_fail_after", n)) => {
                        faults.fsync_fail_after = n.parse().ok();
                    }
                    Some(("disk_full_while", path)) => {
                        faults.disk_full_while = Some(path.into());
                    }
                    _ => tracing::warn!(fault = item, "unknown {ENV} entry ignored"),
                }
            }
            tracing::warn!("{ENV} is set: fault injection is active ({text}); for tests only");
            Some(faults)
        })
        .as_ref()
}

/// Whether any fault is configured (logs a warning the first time it is asked).
pub fn active() -> bool {
    faults().is_some()
}

/// Aborts the process when `crash_at:<point>` names this point.
pub fn crash_point(point: &str) {
    if let Some(faults) = faults()
        && faults.crash_at.iter().any(|p| p == point)
    {
        tracing::error!(point, "fault injection: aborting at {point}");
        std::process::abort();
    }
}

/// Whether the event log's next fsync should fail (`fsync_fail_after:<n>`); counts
/// the fsyncs that did not.
pub fn fsync_fails() -> bool {
    static DONE: AtomicU64 = AtomicU64::new(0);
    match faults().and_then(|f| f.fsync_fail_after) {
        Some(limit) => DONE.fetch_add(1, Ordering::SeqCst) >= limit,
        None => false,
    }
}

/// Whether the event log's commits should fail as on a full disk now
/// (`disk_full_while:<path>` and that file exists).
pub fn disk_full() -> bool {
    faults()
        .and_then(|f| f.disk_full_while.as_ref())
        .is_some_and(|path| path.exists())
}
