//! Derived profile state in `profiles.db`: the identity graph, traits with
//! provenance, profile events, group memberships, merges and conflicts.
//!
//! Everything here is rebuilt by replay, so it lives in its own file: `tessera
//! replay` may wipe it without touching the log or the catalog. Identities always
//! point at the canonical profile (a merge repoints them), so a lookup is one
//! index probe however many merges a profile went through.

use crate::{engine, lock, open_writer_and_reader, query_rows};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use tessera_store::profiles::{
    ConflictRecord, ConsentRecord, GroupMembership, IdentityLink, MergeRecord, ProfileId,
    ProfilePage, ProfileSearch, ProfileStore, ProfileSummary, ProfileTxn, RebuildWork, StoredTrait,
};
use tessera_store::{StoreError, StoreResult};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS processor_state (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS profiles (
        id            INTEGER PRIMARY KEY,
        merged_into   INTEGER,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        merge_count   INTEGER NOT NULL DEFAULT 0,
        event_count   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS profiles_by_merged_into ON profiles (merged_into);
    CREATE INDEX IF NOT EXISTS profiles_by_last_seen
        ON profiles (last_seen_ms, id) WHERE merged_into IS NULL;
    CREATE TABLE IF NOT EXISTS identities (
        id_type       TEXT    NOT NULL,
        value         TEXT    NOT NULL,
        profile_id    INTEGER NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        source_key    INTEGER NOT NULL,
        message_id    TEXT    NOT NULL,
        PRIMARY KEY (id_type, value)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS identities_by_profile ON identities (profile_id, id_type);
    CREATE TABLE IF NOT EXISTS traits (
        profile_id   INTEGER NOT NULL,
        name         TEXT    NOT NULL,
        value_json   TEXT    NOT NULL,
        source_key   INTEGER NOT NULL,
        message_id   TEXT    NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        PRIMARY KEY (profile_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS profile_events (
        profile_id INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        PRIMARY KEY (profile_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS profile_groups (
        profile_id   INTEGER NOT NULL,
        group_id     TEXT    NOT NULL,
        traits_json  TEXT    NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        PRIMARY KEY (profile_id, group_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS merges (
        id           INTEGER PRIMARY KEY,
        winner       INTEGER NOT NULL,
        loser        INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        message_id   TEXT    NOT NULL,
        rule         TEXT    NOT NULL,
        timestamp_ms INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS merges_by_winner ON merges (winner);
    CREATE TABLE IF NOT EXISTS consent (
        profile_id   INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        purpose      TEXT    NOT NULL,
        granted      INTEGER NOT NULL,
        source_key   INTEGER NOT NULL,
        message_id   TEXT    NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        PRIMARY KEY (profile_id, seq, purpose)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS conflicts (
        id           INTEGER PRIMARY KEY,
        seq          INTEGER NOT NULL,
        message_id   TEXT    NOT NULL,
        profile_id   INTEGER,
        dropped_type TEXT    NOT NULL,
        detail       TEXT    NOT NULL
    );
";

const CHECKPOINT: &str = "checkpoint";

/// Profiles and the identity graph in `profiles.db`.
pub struct SqliteProfileStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteProfileStore {
    /// Opens (or creates) the profile store of a data directory.
    pub fn open_in(data_dir: &Path) -> StoreResult<Self> {
        let (writer, reader) = open_writer_and_reader(
            data_dir,
            "profiles.db",
            &format!("PRAGMA cache_size = -65536;{SCHEMA}"),
        )?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

struct SqliteTxn<'a> {
    tx: &'a Transaction<'a>,
    /// Each touched profile's latest event time not yet written to `last_seen_ms`.
    /// Written once per profile per transaction ([`SqliteTxn::flush_last_seen`]), not
    /// once per event: `last_seen_ms` is indexed (`profiles_by_last_seen`), and
    /// rewriting an index entry for every event would slow the processor down.
    last_seen: HashMap<ProfileId, i64>,
    /// Identifier → owner as this transaction knows it: read from the store once,
    /// then kept current by [`ProfileTxn::link`] and [`ProfileTxn::merge`] (a chunk
    /// sees the same person's identifiers again and again).
    owners: HashMap<(String, String), Option<ProfileId>>,
    /// Each touched profile's traits, read once per transaction; changed traits are
    /// written when the transaction's work is done (or before the profile is merged).
    traits: HashMap<ProfileId, TraitCache>,
    /// Each touched profile's attributed events and earliest event time not yet added
    /// to `profiles` (one `UPDATE` per profile per transaction, not per event).
    counts: HashMap<ProfileId, PendingCounts>,
}

/// A profile's traits within one transaction.
#[derive(Default)]
struct TraitCache {
    values: BTreeMap<String, StoredTrait>,
    /// Names set in this transaction and not yet written.
    dirty: BTreeSet<String>,
}

/// Counters of `profiles` a transaction has yet to write.
struct PendingCounts {
    first_seen_ms: i64,
    events: i64,
}

impl<'a> SqliteTxn<'a> {
    fn new(tx: &'a Transaction<'a>) -> Self {
        Self {
            tx,
            last_seen: HashMap::new(),
            owners: HashMap::new(),
            traits: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// Writes everything pending (the end of the transaction's work).
    fn flush(&mut self) -> StoreResult<()> {
        let profiles: Vec<ProfileId> = self.traits.keys().copied().collect();
        self.flush_traits(&profiles)?;
        self.flush_counts(None)?;
        self.flush_last_seen(None)
    }

    /// Writes the pending counters of `only` (every profile when `None`).
    fn flush_counts(&mut self, only: Option<&[ProfileId]>) -> StoreResult<()> {
        let pending = take_pending(&mut self.counts, only);
        if pending.is_empty() {
            return Ok(());
        }
        let mut statement = self
            .tx
            .prepare_cached(
                "UPDATE profiles SET first_seen_ms = min(first_seen_ms, ?2),
                                     event_count = event_count + ?3
                 WHERE id = ?1",
            )
            .map_err(engine)?;
        for (id, counts) in pending {
            statement
                .execute(params![id, counts.first_seen_ms, counts.events])
                .map_err(engine)?;
        }
        Ok(())
    }

    /// Writes the traits `profiles` changed in this transaction.
    fn flush_traits(&mut self, profiles: &[ProfileId]) -> StoreResult<()> {
        let mut statement = self
            .tx
            .prepare_cached(
                "INSERT INTO traits (profile_id, name, value_json, source_key, message_id, timestamp_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (profile_id, name) DO UPDATE SET
                    value_json = excluded.value_json, source_key = excluded.source_key,
                    message_id = excluded.message_id, timestamp_ms = excluded.timestamp_ms,
                    seq = excluded.seq",
            )
            .map_err(engine)?;
        for profile in profiles {
            let Some(cache) = self.traits.get_mut(profile) else {
                continue;
            };
            for name in std::mem::take(&mut cache.dirty) {
                let Some(value) = cache.values.get(&name) else {
                    continue;
                };
                statement
                    .execute(params![
                        profile,
                        value.name,
                        value.value_json,
                        value.source_key,
                        value.message_id,
                        value.timestamp_ms,
                        value.seq
                    ])
                    .map_err(engine)?;
            }
        }
        Ok(())
    }

    /// A profile's traits, read from the store on first use in the transaction.
    fn trait_cache(&mut self, profile: ProfileId) -> StoreResult<&mut TraitCache> {
        match self.traits.entry(profile) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let values = read_traits(self.tx, profile)?
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect();
                Ok(entry.insert(TraitCache {
                    values,
                    dirty: BTreeSet::new(),
                }))
            }
        }
    }

    /// Writes the pending last-seen times of `only` (every profile when `None`).
    fn flush_last_seen(&mut self, only: Option<&[ProfileId]>) -> StoreResult<()> {
        let pending = take_pending(&mut self.last_seen, only);
        if pending.is_empty() {
            return Ok(());
        }
        let mut statement = self
            .tx
            .prepare_cached(
                "UPDATE profiles SET last_seen_ms = ?2 WHERE id = ?1 AND last_seen_ms < ?2",
            )
            .map_err(engine)?;
        for (id, seen) in pending {
            statement.execute(params![id, seen]).map_err(engine)?;
        }
        Ok(())
    }
}

/// Takes the pending writes of `only` (of every profile when `None`) out of `pending`.
fn take_pending<T>(
    pending: &mut HashMap<ProfileId, T>,
    only: Option<&[ProfileId]>,
) -> Vec<(ProfileId, T)> {
    match only {
        None => pending.drain().collect(),
        Some(ids) => ids
            .iter()
            .filter_map(|id| pending.remove_entry(id))
            .collect(),
    }
}

fn summary_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProfileSummary> {
    Ok(ProfileSummary {
        id: row.get(0)?,
        merged_into: row.get(1)?,
        first_seen_ms: row.get(2)?,
        last_seen_ms: row.get(3)?,
        merge_count: row.get(4)?,
        event_count: row.get(5)?,
    })
}

/// Reads shared by the processor's transaction and the query side (a `Transaction`
/// is a `Connection`), so each query is written once.
fn read_owner(conn: &Connection, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>> {
    conn.prepare_cached("SELECT profile_id FROM identities WHERE id_type = ?1 AND value = ?2")
        .and_then(|mut s| s.query_row([id_type, value], |r| r.get(0)).optional())
        .map_err(engine)
}

fn read_summary(conn: &Connection, id: ProfileId) -> StoreResult<Option<ProfileSummary>> {
    conn.prepare_cached(SUMMARY_SQL)
        .and_then(|mut s| s.query_row([id], summary_row).optional())
        .map_err(engine)
}

fn read_traits(conn: &Connection, id: ProfileId) -> StoreResult<Vec<StoredTrait>> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {TRAIT_COLUMNS} FROM traits WHERE profile_id = ?1 ORDER BY name"
        ))
        .map_err(engine)?;
    let rows = statement.query_map([id], trait_row).map_err(engine)?;
    rows.collect::<Result<_, _>>().map_err(engine)
}

const SUMMARY_SQL: &str =
    "SELECT id, merged_into, first_seen_ms, last_seen_ms, merge_count, event_count
                           FROM profiles WHERE id = ?1";

fn trait_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTrait> {
    Ok(StoredTrait {
        name: row.get(0)?,
        value_json: row.get(1)?,
        source_key: row.get(2)?,
        message_id: row.get(3)?,
        timestamp_ms: row.get(4)?,
        seq: row.get(5)?,
    })
}

const TRAIT_COLUMNS: &str = "name, value_json, source_key, message_id, timestamp_ms, seq";

impl ProfileTxn for SqliteTxn<'_> {
    fn profile_of(&mut self, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>> {
        let key = (id_type.to_string(), value.to_string());
        if let Some(owner) = self.owners.get(&key) {
            return Ok(*owner);
        }
        let owner = read_owner(self.tx, id_type, value)?;
        self.owners.insert(key, owner);
        Ok(owner)
    }

    fn identifier_counts(&mut self, profile: ProfileId) -> StoreResult<Vec<(String, u32)>> {
        // Counted here rather than with GROUP BY: SQLite re-prepares that aggregate
        // on every call (seen in profiles), which cost a tenth of the processor's time.
        let mut statement = self
            .tx
            .prepare_cached("SELECT id_type FROM identities WHERE profile_id = ?1")
            .map_err(engine)?;
        let mut rows = statement.query([profile]).map_err(engine)?;
        let mut counts: Vec<(String, u32)> = Vec::new();
        while let Some(row) = rows.next().map_err(engine)? {
            let id_type = row
                .get_ref(0)
                .map_err(engine)?
                .as_str()
                .map_err(|e| StoreError::Engine(e.to_string()))?;
            match counts.iter_mut().find(|(t, _)| t == id_type) {
                Some((_, n)) => *n += 1,
                None => counts.push((id_type.to_string(), 1)),
            }
        }
        Ok(counts)
    }

    fn summary(&mut self, profile: ProfileId) -> StoreResult<Option<ProfileSummary>> {
        self.flush_counts(Some(&[profile]))?;
        self.flush_last_seen(Some(&[profile]))?;
        read_summary(self.tx, profile)
    }

    fn create_profile(&mut self, profile: ProfileId, seen_ms: i64) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO profiles (id, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?2)",
            )
            .and_then(|mut s| s.execute(params![profile, seen_ms]))
            .map_err(engine)?;
        // A new profile has no traits: nothing to read.
        self.traits.insert(profile, TraitCache::default());
        Ok(())
    }

    fn link(&mut self, link: &IdentityLink) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identities (id_type, value, profile_id, first_seen_ms, source_key, message_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id_type, value) DO UPDATE SET profile_id = excluded.profile_id",
            )
            .and_then(|mut s| {
                s.execute(params![
                    link.id_type,
                    link.value,
                    link.profile_id,
                    link.first_seen_ms,
                    link.source_key,
                    link.message_id
                ])
            })
            .map_err(engine)?;
        self.owners.insert(
            (link.id_type.clone(), link.value.clone()),
            Some(link.profile_id),
        );
        Ok(())
    }

    fn merge(&mut self, record: &MergeRecord) -> StoreResult<()> {
        let (winner, loser) = (record.winner, record.loser);
        self.flush_traits(&[winner, loser])?;
        self.flush_counts(Some(&[winner, loser]))?;
        self.flush_last_seen(Some(&[winner, loser]))?;
        // The loser's traits are deleted below; its identifiers become the winner's.
        self.traits.remove(&loser);
        for owner in self.owners.values_mut() {
            if *owner == Some(loser) {
                *owner = Some(winner);
            }
        }
        let statements: [(&str, &[&dyn rusqlite::ToSql]); 8] = [
            ("UPDATE OR IGNORE consent SET profile_id = ?1 WHERE profile_id = ?2", &[&winner, &loser]),
            ("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2", &[&winner, &loser]),
            (
                "INSERT OR IGNORE INTO profile_events (profile_id, seq)
                 SELECT ?1, seq FROM profile_events WHERE profile_id = ?2",
                &[&winner, &loser],
            ),
            ("DELETE FROM profile_events WHERE profile_id = ?1", &[&loser]),
            (
                "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, traits_json, timestamp_ms)
                 SELECT ?1, group_id, traits_json, timestamp_ms FROM profile_groups WHERE profile_id = ?2",
                &[&winner, &loser],
            ),
            ("DELETE FROM profile_groups WHERE profile_id = ?1", &[&loser]),
            ("DELETE FROM traits WHERE profile_id = ?1", &[&loser]),
            ("UPDATE profiles SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2", &[&winner, &loser]),
        ];
        for (sql, args) in statements {
            self.tx
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(args))
                .map_err(engine)?;
        }
        self.tx
            .prepare_cached(
                "UPDATE profiles SET
                    first_seen_ms = min(first_seen_ms, (SELECT first_seen_ms FROM profiles WHERE id = ?2)),
                    last_seen_ms = max(last_seen_ms, (SELECT last_seen_ms FROM profiles WHERE id = ?2)),
                    merge_count = merge_count + 1 + (SELECT merge_count FROM profiles WHERE id = ?2),
                    event_count = (SELECT count(*) FROM profile_events WHERE profile_id = ?1)
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![winner, loser]))
            .map_err(engine)?;
        self.tx
            .prepare_cached(
                "INSERT INTO merges (winner, loser, seq, message_id, rule, timestamp_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    winner,
                    loser,
                    record.seq,
                    record.message_id,
                    record.rule,
                    record.timestamp_ms
                ])
            })
            .map_err(engine)?;
        // The loser's own merge history now belongs to the winner's.
        self.tx
            .prepare_cached("UPDATE merges SET winner = ?1 WHERE winner = ?2")
            .and_then(|mut s| s.execute(params![winner, loser]))
            .map_err(engine)?;
        Ok(())
    }

    fn traits(&mut self, profile: ProfileId) -> StoreResult<Vec<StoredTrait>> {
        // In name order, as the store reads them (BTreeMap order is byte order).
        Ok(self
            .trait_cache(profile)?
            .values
            .values()
            .cloned()
            .collect())
    }

    fn trait_value(&mut self, profile: ProfileId, name: &str) -> StoreResult<Option<StoredTrait>> {
        Ok(self.trait_cache(profile)?.values.get(name).cloned())
    }

    fn set_trait(&mut self, profile: ProfileId, value: &StoredTrait) -> StoreResult<()> {
        let cache = self.trait_cache(profile)?;
        cache.values.insert(value.name.clone(), value.clone());
        cache.dirty.insert(value.name.clone());
        Ok(())
    }

    fn add_event(&mut self, profile: ProfileId, seq: i64, timestamp_ms: i64) -> StoreResult<()> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO profile_events (profile_id, seq) VALUES (?1, ?2)",
            )
            .and_then(|mut s| s.execute(params![profile, seq]))
            .map_err(engine)?;
        // first_seen_ms, event_count and last_seen_ms are written when the
        // transaction's work is done (or before the profile is read or merged).
        let counts = self.counts.entry(profile).or_insert(PendingCounts {
            first_seen_ms: timestamp_ms,
            events: 0,
        });
        counts.first_seen_ms = counts.first_seen_ms.min(timestamp_ms);
        counts.events += inserted as i64;
        let seen = self.last_seen.entry(profile).or_insert(timestamp_ms);
        *seen = (*seen).max(timestamp_ms);
        Ok(())
    }

    fn set_group(&mut self, profile: ProfileId, group: &GroupMembership) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO profile_groups (profile_id, group_id, traits_json, timestamp_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (profile_id, group_id) DO UPDATE SET
                    traits_json = CASE WHEN excluded.timestamp_ms >= timestamp_ms
                                       THEN excluded.traits_json ELSE traits_json END,
                    timestamp_ms = max(timestamp_ms, excluded.timestamp_ms)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    profile,
                    group.group_id,
                    group.traits_json,
                    group.timestamp_ms
                ])
            })
            .map_err(engine)?;
        Ok(())
    }

    fn record_consent(&mut self, profile: ProfileId, record: &ConsentRecord) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO consent
                     (profile_id, seq, purpose, granted, source_key, message_id, timestamp_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    profile,
                    record.seq,
                    record.purpose,
                    record.granted,
                    record.source_key,
                    record.message_id,
                    record.timestamp_ms
                ])
            })
            .map_err(engine)?;
        Ok(())
    }

    fn record_conflict(&mut self, conflict: &ConflictRecord) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO conflicts (seq, message_id, profile_id, dropped_type, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    conflict.seq,
                    conflict.message_id,
                    conflict.profile_id,
                    conflict.dropped_type,
                    conflict.detail
                ])
            })
            .map_err(engine)?;
        Ok(())
    }
}

fn set_checkpoint(tx: &Transaction<'_>, seq: i64) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO processor_state (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![CHECKPOINT, seq],
    )
    .map_err(engine)?;
    Ok(())
}

impl ProfileStore for SqliteProfileStore {
    fn checkpoint(&self) -> StoreResult<i64> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT value FROM processor_state WHERE name = ?1",
            [CHECKPOINT],
            |r| r.get(0),
        )
        .optional()
        .map(|v| v.unwrap_or(0))
        .map_err(engine)
    }

    fn apply(
        &self,
        after_seq: i64,
        through_seq: i64,
        work: &mut dyn FnMut(&mut dyn ProfileTxn) -> StoreResult<()>,
    ) -> StoreResult<bool> {
        let mut conn = lock(&self.writer);
        // IMMEDIATE takes the write lock first, so the checkpoint read below cannot
        // change before this transaction commits (another process waits).
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(engine)?;
        let current: i64 = tx
            .query_row(
                "SELECT value FROM processor_state WHERE name = ?1",
                [CHECKPOINT],
                |r| r.get(0),
            )
            .optional()
            .map_err(engine)?
            .unwrap_or(0);
        if current != after_seq {
            return Ok(false);
        }
        let mut txn = SqliteTxn::new(&tx);
        work(&mut txn)?;
        txn.flush()?;
        set_checkpoint(&tx, through_seq)?;
        tx.commit().map_err(engine)?;
        Ok(true)
    }

    fn rebuild(&self, profiles: &[ProfileId], work: &mut RebuildWork<'_>) -> StoreResult<()> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(engine)?;
        let mut seqs = Vec::new();
        for profile in profiles {
            let mut members: Vec<ProfileId> = {
                let mut statement = tx
                    .prepare_cached("SELECT id FROM profiles WHERE merged_into = ?1")
                    .map_err(engine)?;
                let rows = statement
                    .query_map([profile], |r| r.get(0))
                    .map_err(engine)?;
                rows.collect::<Result<_, _>>().map_err(engine)?
            };
            members.push(*profile);
            {
                let mut statement = tx
                    .prepare_cached("SELECT seq FROM profile_events WHERE profile_id = ?1")
                    .map_err(engine)?;
                let rows = statement
                    .query_map([profile], |r| r.get(0))
                    .map_err(engine)?;
                for seq in rows {
                    seqs.push(seq.map_err(engine)?);
                }
            }
            for member in members {
                for sql in [
                    "DELETE FROM identities WHERE profile_id = ?1",
                    "DELETE FROM traits WHERE profile_id = ?1",
                    "DELETE FROM profile_events WHERE profile_id = ?1",
                    "DELETE FROM profile_groups WHERE profile_id = ?1",
                    "DELETE FROM consent WHERE profile_id = ?1",
                    "DELETE FROM merges WHERE winner = ?1",
                    // `work` records the conflicts that still hold again.
                    "DELETE FROM conflicts WHERE profile_id = ?1",
                    "DELETE FROM profiles WHERE id = ?1",
                ] {
                    tx.execute(sql, [member]).map_err(engine)?;
                }
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        let mut txn = SqliteTxn::new(&tx);
        work(&mut txn, &seqs)?;
        txn.flush()?;
        tx.commit().map_err(engine)
    }

    fn reset(&self) -> StoreResult<()> {
        let conn = lock(&self.writer);
        conn.execute_batch(
            "BEGIN;
             DELETE FROM identities; DELETE FROM traits; DELETE FROM profile_events;
             DELETE FROM profile_groups; DELETE FROM merges; DELETE FROM conflicts;
             DELETE FROM consent;
             DELETE FROM profiles; DELETE FROM processor_state;
             COMMIT;",
        )
        .map_err(engine)
    }

    fn find(&self, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>> {
        read_owner(&lock(&self.reader), id_type, value)
    }

    fn profile(&self, id: ProfileId) -> StoreResult<Option<ProfileSummary>> {
        read_summary(&lock(&self.reader), id)
    }

    fn identities(&self, id: ProfileId) -> StoreResult<Vec<IdentityLink>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT id_type, value, profile_id, first_seen_ms, source_key, message_id
                 FROM identities WHERE profile_id = ?1 ORDER BY first_seen_ms, id_type, value",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map([id], |r| {
                Ok(IdentityLink {
                    id_type: r.get(0)?,
                    value: r.get(1)?,
                    profile_id: r.get(2)?,
                    first_seen_ms: r.get(3)?,
                    source_key: r.get(4)?,
                    message_id: r.get(5)?,
                })
            })
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn identifier_types(&self, id: ProfileId) -> StoreResult<Vec<String>> {
        // Answered from `identities_by_profile` (profile_id, id_type) alone.
        query_rows(
            &lock(&self.reader),
            "SELECT DISTINCT id_type FROM identities WHERE profile_id = ?1 ORDER BY id_type",
            &[&id],
            |r| r.get(0),
        )
    }

    fn traits(&self, id: ProfileId) -> StoreResult<Vec<StoredTrait>> {
        read_traits(&lock(&self.reader), id)
    }

    fn event_seqs(
        &self,
        id: ProfileId,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT seq FROM profile_events WHERE profile_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![
                    id,
                    before_seq.unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| r.get(0),
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn merges(&self, id: ProfileId) -> StoreResult<Vec<MergeRecord>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT winner, loser, seq, message_id, rule, timestamp_ms FROM merges
                 WHERE winner = ?1 ORDER BY id",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map([id], |r| {
                Ok(MergeRecord {
                    winner: r.get(0)?,
                    loser: r.get(1)?,
                    seq: r.get(2)?,
                    message_id: r.get(3)?,
                    rule: r.get(4)?,
                    timestamp_ms: r.get(5)?,
                })
            })
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn groups(&self, id: ProfileId) -> StoreResult<Vec<GroupMembership>> {
        query_rows(
            &lock(&self.reader),
            "SELECT group_id, traits_json, timestamp_ms FROM profile_groups
             WHERE profile_id = ?1 ORDER BY group_id",
            &[&id],
            |r| {
                Ok(GroupMembership {
                    group_id: r.get(0)?,
                    traits_json: r.get(1)?,
                    timestamp_ms: r.get(2)?,
                })
            },
        )
    }

    fn consent(&self, id: ProfileId) -> StoreResult<Vec<ConsentRecord>> {
        query_rows(
            &lock(&self.reader),
            "SELECT purpose, granted, source_key, message_id, timestamp_ms, seq FROM consent
             WHERE profile_id = ?1 ORDER BY timestamp_ms, seq, purpose",
            &[&id],
            |r| {
                Ok(ConsentRecord {
                    purpose: r.get(0)?,
                    granted: r.get(1)?,
                    source_key: r.get(2)?,
                    message_id: r.get(3)?,
                    timestamp_ms: r.get(4)?,
                    seq: r.get(5)?,
                })
            },
        )
    }

    fn merged_members(&self, id: ProfileId) -> StoreResult<Vec<ProfileId>> {
        query_rows(
            &lock(&self.reader),
            "SELECT id FROM profiles WHERE merged_into = ?1 ORDER BY id",
            &[&id],
            |r| r.get(0),
        )
    }

    fn erase(&self, profiles: &[ProfileId]) -> StoreResult<Vec<ProfileId>> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(engine)?;
        let mut removed = Vec::new();
        for profile in profiles {
            let mut members: Vec<ProfileId> = {
                let mut statement = tx
                    .prepare_cached("SELECT id FROM profiles WHERE merged_into = ?1")
                    .map_err(engine)?;
                let rows = statement
                    .query_map([profile], |r| r.get(0))
                    .map_err(engine)?;
                rows.collect::<Result<_, _>>().map_err(engine)?
            };
            members.push(*profile);
            for member in &members {
                for sql in [
                    "DELETE FROM identities WHERE profile_id = ?1",
                    "DELETE FROM traits WHERE profile_id = ?1",
                    "DELETE FROM profile_events WHERE profile_id = ?1",
                    "DELETE FROM profile_groups WHERE profile_id = ?1",
                    "DELETE FROM consent WHERE profile_id = ?1",
                    "DELETE FROM merges WHERE winner = ?1 OR loser = ?1",
                    "DELETE FROM conflicts WHERE profile_id = ?1",
                    "DELETE FROM profiles WHERE id = ?1",
                ] {
                    tx.execute(sql, [member]).map_err(engine)?;
                }
            }
            removed.extend(members);
        }
        tx.commit().map_err(engine)?;
        removed.sort_unstable();
        removed.dedup();
        Ok(removed)
    }

    fn owners_of_events(&self, seqs: &[i64]) -> StoreResult<Vec<ProfileId>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::HashSet<i64> = seqs.iter().copied().collect();
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached("SELECT profile_id, seq FROM profile_events")
            .map_err(engine)?;
        let mut rows = statement.query([]).map_err(engine)?;
        let mut owners = Vec::new();
        while let Some(row) = rows.next().map_err(engine)? {
            let seq: i64 = row.get(1).map_err(engine)?;
            if wanted.contains(&seq) {
                owners.push(row.get(0).map_err(engine)?);
            }
        }
        owners.sort_unstable();
        owners.dedup();
        Ok(owners)
    }

    fn purge_deleted(&self) -> StoreResult<()> {
        crate::vacuum_and_truncate_wal(&mut lock(&self.writer))
    }

    fn conflicts(&self, limit: usize) -> StoreResult<Vec<ConflictRecord>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT seq, message_id, profile_id, dropped_type, detail FROM conflicts
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(ConflictRecord {
                    seq: r.get(0)?,
                    message_id: r.get(1)?,
                    profile_id: r.get(2)?,
                    dropped_type: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn canonical_profiles(&self, after: ProfileId, limit: usize) -> StoreResult<Vec<ProfileId>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT id FROM profiles WHERE merged_into IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn event_owner_page(
        &self,
        after: (ProfileId, i64),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, i64)>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT profile_id, seq FROM profile_events WHERE (profile_id, seq) > (?1, ?2)
                 ORDER BY profile_id, seq LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![after.0, after.1, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn trait_page(
        &self,
        after: (ProfileId, &str),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, String, String)>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT profile_id, name, value_json FROM traits WHERE (profile_id, name) > (?1, ?2)
                 ORDER BY profile_id, name LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![after.0, after.1, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn identifier_type_page(
        &self,
        after: (ProfileId, &str),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, String)>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT DISTINCT profile_id, id_type FROM identities
                 WHERE (profile_id, id_type) > (?1, ?2) ORDER BY profile_id, id_type LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![after.0, after.1, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn search(&self, query: &ProfileSearch) -> StoreResult<ProfilePage> {
        /// An identifier prefix with at most this many identifiers is looked up
        /// first; a broader one is checked profile by profile in last-seen order.
        const FEW: i64 = 2_000;
        type Args = Vec<rusqlite::types::Value>;
        let conn = lock(&self.reader);
        let (order, past) = if query.ascending {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        let mut cursor = String::new();
        let mut cursor_args: Args = Vec::new();
        if let Some((last_seen, id)) = query.after {
            cursor = format!(" AND (last_seen_ms, id) {past} (?, ?)");
            cursor_args.push(last_seen.into());
            cursor_args.push(id.into());
        }
        // Filters on a profile row named `profiles`, with their arguments.
        let mut filters = String::new();
        let mut filter_args: Args = Vec::new();
        let mut lookup: Option<(String, Args)> = None;
        let prefixes: Vec<&String> = query
            .identifier_prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .collect();
        if !prefixes.is_empty() {
            // The distinct identifier types, one probe each through the key.
            let mut types: Vec<String> = Vec::new();
            let mut next = conn
                .prepare_cached(
                    "SELECT id_type FROM identities WHERE id_type > ?1 ORDER BY id_type LIMIT 1",
                )
                .map_err(engine)?;
            let mut after = String::new();
            while let Some(t) = next
                .query_row([&after], |r| r.get::<_, String>(0))
                .optional()
                .map_err(engine)?
            {
                after.clone_from(&t);
                types.push(t);
            }
            let mut ranges = Vec::new();
            let mut range_args: Args = Vec::new();
            let mut found = 0i64;
            let mut count = conn
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM identities
                     WHERE id_type = ?1 AND value >= ?2 AND value < ?3 LIMIT ?4)",
                )
                .map_err(engine)?;
            for t in &types {
                for prefix in &prefixes {
                    let end = format!("{prefix}\u{10FFFF}");
                    if found <= FEW {
                        found += count
                            .query_row(params![t, prefix, end, FEW + 1], |r| r.get::<_, i64>(0))
                            .map_err(engine)?;
                    }
                    ranges.push(
                        "SELECT profile_id FROM identities WHERE id_type = ? AND value >= ? AND value < ?",
                    );
                    range_args.push(t.clone().into());
                    range_args.push((*prefix).clone().into());
                    range_args.push(end.into());
                }
            }
            if found == 0 {
                return Ok(ProfilePage::default());
            }
            if found <= FEW {
                lookup = Some((
                    format!(" AND id IN ({})", ranges.join(" UNION ")),
                    range_args,
                ));
            } else {
                let any: Vec<&str> = prefixes
                    .iter()
                    .map(|_| "(i.value >= ? AND i.value < ?)")
                    .collect();
                filters.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM identities i WHERE i.profile_id = profiles.id \
                     AND ({}))",
                    any.join(" OR ")
                ));
                for prefix in &prefixes {
                    filter_args.push((*prefix).clone().into());
                    filter_args.push(format!("{prefix}\u{10FFFF}").into());
                }
            }
        }
        for (name, values) in &query.traits {
            let marks = vec!["?"; values.len().max(1)].join(", ");
            let push_values = |args: &mut Args| {
                if values.is_empty() {
                    args.push(rusqlite::types::Value::Null);
                }
                for value in values {
                    args.push(value.clone().into());
                }
            };
            // The trait of that very name, or — for a dotted name — the value at the
            // rest of the path inside a trait named by its first segments
            // (`address.city`: `city` of the object trait `address`).
            let mut any = vec![format!("(t.name = ? AND t.value_json IN ({marks}))")];
            filter_args.push(name.clone().into());
            push_values(&mut filter_args);
            for (trait_name, path) in nested_trait_paths(name) {
                any.push(format!(
                    "(t.name = ? AND json_valid(t.value_json) \
                     AND (t.value_json -> ?) IN ({marks}))"
                ));
                filter_args.push(trait_name.into());
                filter_args.push(path.into());
                push_values(&mut filter_args);
            }
            filters.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM traits t WHERE t.profile_id = profiles.id \
                 AND ({}))",
                any.join(" OR ")
            ));
        }
        if let Some(text) = query.text.as_deref().filter(|t| !t.is_empty()) {
            let pattern = crate::like_patterns(&[text.to_owned()])
                .pop()
                .unwrap_or_default();
            filters.push_str(
                " AND (EXISTS (SELECT 1 FROM identities i WHERE i.profile_id = profiles.id \
                 AND i.value LIKE ? ESCAPE '\\') \
                 OR EXISTS (SELECT 1 FROM traits t WHERE t.profile_id = profiles.id \
                 AND t.value_json LIKE ? ESCAPE '\\'))",
            );
            filter_args.push(pattern.clone().into());
            filter_args.push(pattern.into());
        }
        let limit = query.limit.max(1);
        let columns = "id, merged_into, first_seen_ms, last_seen_ms, merge_count, event_count";
        let ordering = format!(" ORDER BY last_seen_ms {order}, id {order}");
        let run = |sql: &str, args: Args| -> StoreResult<Vec<ProfileSummary>> {
            let mut statement = conn.prepare(sql).map_err(engine)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), summary_row)
                .map_err(engine)?;
            rows.collect::<Result<_, _>>().map_err(engine)
        };
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut rows;
        let mut scan_ended_at = None;
        if let Some((lookup, lookup_args)) = lookup {
            // Few candidates: fetch them by id, then order them.
            let sql = format!(
                "SELECT {columns} FROM profiles WHERE merged_into IS NULL{cursor}{lookup}{filters}{ordering} LIMIT ?"
            );
            let mut args = cursor_args;
            args.extend(lookup_args);
            args.extend(filter_args);
            args.push(as_i64(limit + 1).into());
            rows = run(&sql, args)?;
        } else {
            // Walk the last-seen index, examining at most the scan budget.
            let budget = query.scan_budget.max(limit + 1);
            let window = format!(
                "SELECT * FROM profiles INDEXED BY profiles_by_last_seen \
                 WHERE merged_into IS NULL{cursor}{ordering} LIMIT ?"
            );
            let sql = format!(
                "SELECT {columns} FROM ({window}) AS profiles WHERE 1{filters}{ordering} LIMIT ?"
            );
            let mut args = cursor_args.clone();
            args.push(as_i64(budget).into());
            args.extend(filter_args);
            args.push(as_i64(limit + 1).into());
            rows = run(&sql, args)?;
            if rows.len() <= limit && !filters.is_empty() {
                // A short page: did the scan stop at the budget rather than the end?
                let sql = format!(
                    "SELECT {columns} FROM profiles INDEXED BY profiles_by_last_seen \
                     WHERE merged_into IS NULL{cursor}{ordering} LIMIT 1 OFFSET ?"
                );
                let mut args = cursor_args;
                args.push(as_i64(budget - 1).into());
                scan_ended_at = run(&sql, args)?.pop().map(|p| (p.last_seen_ms, p.id));
            }
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|p| (p.last_seen_ms, p.id))
        } else {
            scan_ended_at
        };
        Ok(ProfilePage {
            profiles: rows,
            next,
        })
    }

    fn profile_count(&self) -> StoreResult<i64> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT count(*) FROM profiles WHERE merged_into IS NULL",
            [],
            |r| r.get(0),
        )
        .map_err(engine)
    }
}

/// Dotted trait names split into a stored trait and a JSON path inside it:
/// `a.b.c` → `("a", "$.\"b\".\"c\"")`, `("a.b", "$.\"c\"")`. Segments are quoted, so
/// keys with spaces or other punctuation match; a name with an empty segment or a
/// `"` in the path yields nothing (it can only be a top-level trait).
fn nested_trait_paths(name: &str) -> Vec<(String, String)> {
    /// Nested levels looked into at most.
    const MAX_SEGMENTS: usize = 16;
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() < 2 || segments.len() > MAX_SEGMENTS || segments.iter().any(|s| s.is_empty())
    {
        return Vec::new();
    }
    (1..segments.len())
        .filter(|&split| segments[split..].iter().all(|s| !s.contains('"')))
        .map(|split| {
            let path: String = segments[split..]
                .iter()
                .map(|s| format!(".\"{s}\""))
                .collect();
            (segments[..split].join("."), format!("${path}"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Profiles 1..=n, profile i last seen at i ms, with a user id `user-i`, an email
    /// `p{i}@example.com` and the trait `plan` = `"pro"` for every tenth.
    fn store(n: i64) -> (tempfile::TempDir, SqliteProfileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteProfileStore::open_in(dir.path()).unwrap();
        store
            .apply(0, 1, &mut |txn| {
                for i in 1..=n {
                    txn.create_profile(i, i)?;
                    for (id_type, value) in [
                        ("user_id", format!("user-{i}")),
                        ("email", format!("p{i}@example.com")),
                    ] {
                        txn.link(&IdentityLink {
                            id_type: id_type.into(),
                            value,
                            profile_id: i,
                            first_seen_ms: i,
                            source_key: 1,
                            message_id: format!("m{i}"),
                        })?;
                    }
                    let plan = if i % 10 == 0 { "\"pro\"" } else { "\"free\"" };
                    txn.set_trait(
                        i,
                        &StoredTrait {
                            name: "plan".into(),
                            value_json: plan.into(),
                            source_key: 1,
                            message_id: format!("m{i}"),
                            timestamp_ms: i,
                            seq: i,
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn ids(page: &ProfilePage) -> Vec<ProfileId> {
        page.profiles.iter().map(|p| p.id).collect()
    }

    fn query(limit: usize) -> ProfileSearch {
        ProfileSearch {
            limit,
            scan_budget: 10_000,
            ..ProfileSearch::default()
        }
    }

    #[test]
    fn pages_go_newest_first_and_end() {
        let (_dir, store) = store(5);
        let first = store.search(&query(2)).unwrap();
        assert_eq!(ids(&first), vec![5, 4]);
        assert_eq!(first.next, Some((4, 4)));
        let second = store
            .search(&ProfileSearch {
                after: first.next,
                ..query(2)
            })
            .unwrap();
        assert_eq!(ids(&second), vec![3, 2]);
        let last = store
            .search(&ProfileSearch {
                after: second.next,
                ..query(2)
            })
            .unwrap();
        assert_eq!((ids(&last), last.next), (vec![1], None));
        let oldest = store
            .search(&ProfileSearch {
                ascending: true,
                ..query(2)
            })
            .unwrap();
        assert_eq!(ids(&oldest), vec![1, 2]);
    }

    #[test]
    fn a_dotted_trait_name_looks_into_nested_traits() {
        let (_dir, store) = store(3);
        let nested = [
            (1, "address", r#"{"city":"Paris","geo":{"zip":75001}}"#),
            (2, "address", r#"{"city":"Lyon"}"#),
            // A top-level trait whose name holds a dot matches as itself.
            (3, "address.city", r#""Paris""#),
        ];
        store
            .apply(1, 2, &mut |txn| {
                for (profile, name, value_json) in nested {
                    txn.set_trait(
                        profile,
                        &StoredTrait {
                            name: name.into(),
                            value_json: value_json.into(),
                            source_key: 1,
                            message_id: format!("n{profile}"),
                            timestamp_ms: profile,
                            seq: profile,
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let by = |name: &str, value: &str| {
            ids(&store
                .search(&ProfileSearch {
                    traits: vec![(name.into(), vec![value.into()])],
                    ..query(10)
                })
                .unwrap())
        };
        assert_eq!(by("address.city", r#""Paris""#), vec![3, 1]);
        assert_eq!(by("address.city", r#""Lyon""#), vec![2]);
        assert_eq!(by("address.geo.zip", "75001"), vec![1]);
        assert_eq!(by("address.geo.zip", r#""75001""#), Vec::<i64>::new());
        assert_eq!(by("address.country", r#""Paris""#), Vec::<i64>::new());
        // Not JSON objects (plan is a string): no match, no error.
        assert_eq!(by("plan.tier", r#""pro""#), Vec::<i64>::new());
        assert_eq!(by("address..city", r#""Paris""#), Vec::<i64>::new());
    }

    #[test]
    fn prefixes_traits_and_text_filter() {
        let (_dir, store) = store(30);
        let by_prefix = |prefix: &str| {
            ids(&store
                .search(&ProfileSearch {
                    identifier_prefixes: vec![prefix.into()],
                    ..query(50)
                })
                .unwrap())
        };
        assert_eq!(
            by_prefix("user-2"),
            vec![29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 2]
        );
        assert_eq!(by_prefix("p7@"), vec![7]);
        assert_eq!(by_prefix("nobody"), Vec::<ProfileId>::new());
        let pro = store
            .search(&ProfileSearch {
                traits: vec![("plan".into(), vec!["\"pro\"".into()])],
                ..query(50)
            })
            .unwrap();
        assert_eq!((ids(&pro), pro.next), (vec![30, 20, 10], None));
        let text = store
            .search(&ProfileSearch {
                text: Some("P13@EXAMPLE".into()),
                ..query(50)
            })
            .unwrap();
        assert_eq!(ids(&text), vec![13]);
    }

    #[test]
    fn a_filtered_scan_stops_at_its_budget_with_a_cursor() {
        let (_dir, store) = store(30);
        let pro = |after| {
            store
                .search(&ProfileSearch {
                    traits: vec![("plan".into(), vec!["\"pro\"".into()])],
                    after,
                    scan_budget: 8,
                    ..query(5)
                })
                .unwrap()
        };
        // 30..=23 examined: only 30 matches; the scan resumes after 23.
        let first = pro(None);
        assert_eq!((ids(&first), first.next), (vec![30], Some((23, 23))));
        let second = pro(first.next);
        assert_eq!((ids(&second), second.next), (vec![20], Some((15, 15))));
        let third = pro(second.next);
        assert_eq!((ids(&third), third.next), (vec![10], Some((7, 7))));
        let fourth = pro(third.next);
        assert_eq!((ids(&fourth), fourth.next), (vec![], None));
    }
}
