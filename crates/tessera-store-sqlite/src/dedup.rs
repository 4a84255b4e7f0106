//! The `messageId` de-duplication index: an in-memory set of 128-bit hashes of
//! `(source, messageId)` for everything appended within the dedup window.
//!
//! Why in memory and not a unique index in SQLite: SDK message ids are random
//! UUIDs, so every insert into a B-tree index dirties a different page, and each
//! dirty page is written whole to the WAL at every commit and again at checkpoint —
//! measured at 3–4× the writer's cost per event and falling further as the index
//! outgrows the cache (docs/decisions/0002-message-id-dedup.md). With the set in
//! memory the log itself is append-only and sequential.
//!
//! It is exact within the window: the set is rebuilt from the log's tail on open,
//! and before every append the writer adds whatever other processes (a CLI import)
//! appended since it last looked, inside the same write transaction. 128-bit hashes
//! make a false "duplicate" practically impossible (about 10⁻²⁴ for 10⁷ keys).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// How far back duplicates are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Messages appended within this time are remembered.
    pub window: Duration,
    /// At most this many are remembered (about 40 bytes each); when the window holds
    /// more, the oldest are forgotten first and a warning is logged.
    pub max_entries: usize,
}

impl DedupConfig {
    /// For readers that never append (export, replay): nothing is loaded.
    pub const READ_ONLY: DedupConfig = DedupConfig {
        window: Duration::ZERO,
        max_entries: 0,
    };
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(7 * 24 * 3600),
            max_entries: 20_000_000,
        }
    }
}

/// The dedup key of a message.
pub(crate) fn dedup_key(source_key: i64, message_id: &str) -> u128 {
    let mut bytes = Vec::with_capacity(8 + message_id.len());
    bytes.extend_from_slice(&source_key.to_le_bytes());
    bytes.extend_from_slice(message_id.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

/// The keys are already uniform hashes: use their low bits as the table hash.
#[derive(Default)]
pub(crate) struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// Minutes since the Unix epoch (the set's time resolution).
fn minute_of(millis: i64) -> u32 {
    u32::try_from(millis.max(0) / 60_000).unwrap_or(u32::MAX)
}

/// The remembered keys, with the minute each was appended.
pub(crate) struct DedupIndex {
    config: DedupConfig,
    keys: HashMap<u128, u32, BuildHasherDefault<PrehashedKey>>,
    per_minute: BTreeMap<u32, usize>,
    /// The highest log `seq` whose key has been considered.
    pub(crate) last_seq: i64,
}

impl DedupIndex {
    pub(crate) fn new(config: DedupConfig) -> Self {
        Self {
            config,
            keys: HashMap::default(),
            per_minute: BTreeMap::new(),
            last_seq: 0,
        }
    }

    pub(crate) fn window_start_ms(&self, now_ms: i64) -> i64 {
        now_ms - i64::try_from(self.config.window.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn contains(&self, key: u128) -> bool {
        self.keys.contains_key(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.keys.len() >= self.config.max_entries
    }

    pub(crate) fn insert(&mut self, key: u128, appended_at_ms: i64) {
        let minute = minute_of(appended_at_ms);
        if self.keys.insert(key, minute).is_none() {
            *self.per_minute.entry(minute).or_default() += 1;
        }
    }

    /// Forgets keys older than the window, and the oldest beyond the size cap.
    pub(crate) fn evict(&mut self, now_ms: i64) {
        let mut cutoff = minute_of(self.window_start_ms(now_ms));
        if self.keys.len() > self.config.max_entries {
            // Drop whole minutes, oldest first, until 90 % of the cap remains.
            let target = self.config.max_entries / 10 * 9;
            let mut remaining = self.keys.len();
            for (minute, count) in &self.per_minute {
                if remaining <= target {
                    break;
                }
                remaining -= count;
                cutoff = cutoff.max(minute + 1);
            }
            tracing::warn!(
                max_entries = self.config.max_entries,
                "the messageId dedup window holds more messages than its cap; the oldest are forgotten early (raise dedup max_entries)"
            );
        }
        match self.per_minute.first_key_value() {
            Some((oldest, _)) if *oldest < cutoff => {}
            _ => return,
        }
        self.keys.retain(|_, minute| *minute >= cutoff);
        self.per_minute = self.per_minute.split_off(&cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_source() {
        assert_ne!(dedup_key(1, "m"), dedup_key(2, "m"));
        assert_eq!(dedup_key(1, "m"), dedup_key(1, "m"));
    }

    #[test]
    fn old_keys_leave_the_window() {
        let mut index = DedupIndex::new(DedupConfig {
            window: Duration::from_secs(3600),
            max_entries: 100,
        });
        index.insert(1, 0);
        index.insert(2, 30 * 60_000);
        index.evict(61 * 60_000);
        assert!(!index.contains(1));
        assert!(index.contains(2));
    }

    #[test]
    fn the_cap_forgets_the_oldest_minutes_first() {
        let mut index = DedupIndex::new(DedupConfig {
            window: Duration::from_secs(24 * 3600),
            max_entries: 10,
        });
        for key in 0..12u128 {
            index.insert(key, i64::try_from(key).unwrap_or(0) * 60_000);
        }
        index.evict(12 * 60_000);
        assert!(index.len() <= 9);
        assert!(index.contains(11) && !index.contains(0));
    }
}
