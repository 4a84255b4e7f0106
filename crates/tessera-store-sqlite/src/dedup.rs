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
    /// At most this many are remembered (about 60 bytes each); when the window holds
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

/// The set is split into this many hash tables by the keys' top bits, so that no
/// single step of its upkeep touches more than a small share of it: a hash table
/// doubles by rehashing every entry, and one table of millions of keys stalled the
/// event-log writer for 0.7–0.9 s each time it grew (docs/BENCHMARKS.md).
const SHARDS: usize = 256;
/// Shards swept for forgotten keys per [`DedupIndex::maintain`] call.
const SWEEP_PER_CALL: usize = 4;
/// Keys rehashed per [`DedupIndex::maintain`] call at most when growing shards
/// ahead of need (a few ms; at least one shard is grown): enough to stay ahead of
/// commits of 20,000 keys at millions of keys.
const GROW_BUDGET_KEYS: usize = 131_072;

type Shard = HashMap<u128, u32, BuildHasherDefault<PrehashedKey>>;

/// The shard of a key: its top 8 bits (the tables hash by the low 64).
fn shard_of(key: u128) -> usize {
    usize::from((key >> 120) as u8)
}

/// The remembered keys, with the minute each was appended.
pub(crate) struct DedupIndex {
    config: DedupConfig,
    shards: Vec<Shard>,
    /// Keys held by all shards (forgotten ones not yet swept included).
    len: usize,
    /// Keys appended per minute, for minutes not yet forgotten.
    per_minute: BTreeMap<u32, usize>,
    /// Keys appended before this minute are forgotten, shard by shard.
    forget_before: u32,
    /// Shards still to sweep for `forget_before`.
    sweeps_pending: usize,
    /// The next shard to sweep.
    sweep_cursor: usize,
    /// The highest log `seq` whose key has been considered.
    pub(crate) last_seq: i64,
}

impl DedupIndex {
    pub(crate) fn new(config: DedupConfig) -> Self {
        Self {
            config,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
            per_minute: BTreeMap::new(),
            forget_before: 0,
            sweeps_pending: 0,
            sweep_cursor: 0,
            last_seq: 0,
        }
    }

    pub(crate) fn window_start_ms(&self, now_ms: i64) -> i64 {
        now_ms - i64::try_from(self.config.window.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn contains(&self, key: u128) -> bool {
        self.shards[shard_of(key)].contains_key(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.config.max_entries
    }

    pub(crate) fn insert(&mut self, key: u128, appended_at_ms: i64) {
        // A key stamped before the minutes being forgotten would be swept at once
        // while still counted: it counts from the first kept minute instead.
        let minute = minute_of(appended_at_ms).max(self.forget_before);
        match self.shards[shard_of(key)].insert(key, minute) {
            None => self.len += 1,
            Some(old) if old == minute => return,
            Some(old) => {
                // Seen again (another process's append): it moves to its new minute.
                if let Some(count) = self.per_minute.get_mut(&old) {
                    *count -= 1;
                    if *count == 0 {
                        self.per_minute.remove(&old);
                    }
                }
            }
        }
        *self.per_minute.entry(minute).or_default() += 1;
    }

    /// Upkeep after an append, in bounded steps: decides which minutes to forget
    /// (older than the window, and the oldest beyond the size cap), sweeps a few
    /// shards for them, and grows a few shards that are nearly full before they
    /// would grow by themselves, so the shards, which fill evenly, do not all
    /// rehash in the same append. A key may outlive its minute until its shard is swept:
    /// it is then still answered as a duplicate, which it is.
    pub(crate) fn maintain(&mut self, now_ms: i64) {
        let mut cutoff = minute_of(self.window_start_ms(now_ms));
        let remembered: usize = self.per_minute.values().sum();
        if remembered > self.config.max_entries {
            // Drop whole minutes, oldest first, until 90 % of the cap remains.
            let target = self.config.max_entries / 10 * 9;
            let mut remaining = remembered;
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
        if cutoff > self.forget_before
            && self
                .per_minute
                .first_key_value()
                .is_some_and(|(oldest, _)| *oldest < cutoff)
        {
            self.forget_before = cutoff;
            self.per_minute = self.per_minute.split_off(&cutoff);
            self.sweeps_pending = SHARDS;
        }
        for _ in 0..SWEEP_PER_CALL.min(self.sweeps_pending) {
            let forget_before = self.forget_before;
            let shard = &mut self.shards[self.sweep_cursor];
            let before = shard.len();
            shard.retain(|_, minute| *minute >= forget_before);
            self.len -= before - shard.len();
            self.sweep_cursor = (self.sweep_cursor + 1) % SHARDS;
            self.sweeps_pending -= 1;
        }
        // A table grows by itself when 7/8 full; grow the fullest from 3/4 on.
        let mut nearly_full: Vec<usize> = (0..SHARDS)
            .filter(|&i| {
                let shard = &self.shards[i];
                shard.len() >= 1024 && shard.len() * 4 >= shard.capacity() * 3
            })
            .collect();
        nearly_full.sort_unstable_by_key(|&i| std::cmp::Reverse(self.shards[i].len()));
        let mut rehashed = 0;
        for i in nearly_full {
            if rehashed > 0 && rehashed + self.shards[i].len() > GROW_BUDGET_KEYS {
                break;
            }
            let shard = &mut self.shards[i];
            rehashed += shard.len();
            shard.reserve(shard.capacity());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the upkeep until every shard has been swept.
    fn settle(index: &mut DedupIndex, now_ms: i64) {
        for _ in 0..SHARDS {
            index.maintain(now_ms);
        }
    }

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
        settle(&mut index, 61 * 60_000);
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
        settle(&mut index, 12 * 60_000);
        assert!(index.len() <= 9);
        assert!(index.contains(11) && !index.contains(0));
    }

    #[test]
    fn forgotten_keys_leave_every_shard_and_the_count() {
        let mut index = DedupIndex::new(DedupConfig {
            window: Duration::from_secs(3600),
            max_entries: 1_000_000,
        });
        // Keys spread over all shards: old ones at minute 0, new ones at minute 50.
        let spread = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        for i in 0..10_000u128 {
            index.insert(spread(i), if i % 2 == 0 { 0 } else { 50 * 60_000 });
        }
        assert_eq!(index.len(), 10_000);
        let now = 61 * 60_000;
        index.maintain(now);
        // One call sweeps only a few shards: some old keys are still there...
        assert!(index.len() > 5_000);
        for _ in 0..SHARDS {
            index.maintain(now);
        }
        // ...and after a full round none is, while every new key stays.
        assert_eq!(index.len(), 5_000);
        for i in 0..10_000u128 {
            assert_eq!(index.contains(spread(i)), i % 2 == 1, "key {i}");
        }
    }

    #[test]
    fn shards_grow_a_few_at_a_time_ahead_of_need() {
        let mut index = DedupIndex::new(DedupConfig::default());
        let spread = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        let capacities = |index: &DedupIndex| -> Vec<usize> {
            index.shards.iter().map(|shard| shard.capacity()).collect()
        };
        let mut grown_total = 0;
        for batch in 0..2_000u128 {
            let before_inserts = capacities(&index);
            for i in 0..1_000u128 {
                index.insert(spread(batch * 1_000 + i), 0);
            }
            // Once the tables hold over 1,024 keys each, none grows while keys go in...
            if batch >= 400 {
                assert_eq!(capacities(&index), before_inserts, "batch {batch}");
            }
            let before_upkeep = capacities(&index);
            index.maintain(0);
            // ...only in the upkeep, a few at a time.
            let grown: Vec<usize> = (0..SHARDS)
                .filter(|&i| index.shards[i].capacity() > before_upkeep[i])
                .collect();
            let rehashed: usize = grown.iter().map(|&i| index.shards[i].len()).sum();
            assert!(grown.len() <= 1 || rehashed <= GROW_BUDGET_KEYS);
            grown_total += grown.len();
        }
        assert!(
            grown_total >= SHARDS,
            "every shard grew at least once ahead of need"
        );
        assert_eq!(index.len(), 2_000_000);
    }

    #[test]
    fn keys_added_while_their_minute_is_forgotten_are_kept_and_counted() {
        let mut index = DedupIndex::new(DedupConfig {
            window: Duration::from_secs(3600),
            max_entries: 10,
        });
        let minute = 5 * 60_000;
        for key in 0..20u128 {
            index.insert(key << 120 | key, minute);
        }
        // Over the cap within one minute: that whole minute is forgotten.
        index.maintain(minute);
        index.insert(99, minute);
        settle(&mut index, minute);
        assert!(index.contains(99), "a key added after the cut stays");
        assert!(!index.contains(3 << 120 | 3));
        assert_eq!(index.len(), 1);
        // A key seen again (another process's append) moves to its new minute.
        index.insert(99, 30 * 60_000);
        settle(&mut index, 30 * 60_000);
        assert!(index.contains(99) && index.len() == 1);
        assert_eq!(index.per_minute.values().sum::<usize>(), 1);
    }
}
