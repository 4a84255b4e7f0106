//! Audience memberships and their change feed in `audiences.db`.
//!
//! Its own file because replay resets `profiles.db` but must keep memberships (a
//! replay that yields the same members announces nothing).

use crate::{engine, lock, open_writer_and_reader};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Mutex;
use tessera_store::StoreResult;
use tessera_store::audiences::{AudienceStore, Membership, MembershipChange, StoredChange};
use tessera_store::profiles::ProfileId;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS audience_members (
        audience   TEXT    NOT NULL,
        profile_id INTEGER NOT NULL,
        since_ms   INTEGER NOT NULL,
        PRIMARY KEY (audience, profile_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS audience_members_by_profile ON audience_members (profile_id);
    CREATE TABLE IF NOT EXISTS audience_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        audience   TEXT    NOT NULL,
        profile_id INTEGER NOT NULL,
        entered    INTEGER NOT NULL,
        at_ms      INTEGER NOT NULL,
        reason     TEXT    NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audience_changes_by_audience ON audience_changes (audience, seq);
    CREATE INDEX IF NOT EXISTS audience_changes_by_profile ON audience_changes (profile_id);
";

/// Memberships and the change feed in `audiences.db`.
pub struct SqliteAudienceStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteAudienceStore {
    /// Opens (or creates) the audience store of a data directory.
    pub fn open_in(data_dir: &Path) -> StoreResult<Self> {
        let (writer, reader) = open_writer_and_reader(data_dir, "audiences.db", SCHEMA)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn membership_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Membership> {
    Ok(Membership {
        audience: row.get(0)?,
        profile_id: row.get(1)?,
        since_ms: row.get(2)?,
    })
}

fn change_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredChange> {
    Ok(StoredChange {
        seq: row.get(0)?,
        change: MembershipChange {
            audience: row.get(1)?,
            profile_id: row.get(2)?,
            entered: row.get::<_, i64>(3)? != 0,
            at_ms: row.get(4)?,
            reason: row.get(5)?,
        },
    })
}

impl AudienceStore for SqliteAudienceStore {
    fn erase_profiles(&self, profiles: &[ProfileId]) -> StoreResult<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        for profile in profiles {
            for sql in [
                "DELETE FROM audience_members WHERE profile_id = ?1",
                "DELETE FROM audience_changes WHERE profile_id = ?1",
            ] {
                tx.execute(sql, [profile]).map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)
    }

    fn profile_changes(&self, profile: ProfileId) -> StoreResult<Vec<StoredChange>> {
        crate::query_rows(
            &lock(&self.reader),
            "SELECT seq, audience, profile_id, entered, at_ms, reason FROM audience_changes
             WHERE profile_id = ?1 ORDER BY seq",
            &[&profile],
            change_row,
        )
    }

    fn purge_deleted(&self) -> StoreResult<()> {
        crate::vacuum_and_truncate_wal(&mut lock(&self.writer))
    }

    fn apply_changes(&self, changes: &[MembershipChange]) -> StoreResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(engine)?;
        {
            let mut enter = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO audience_members (audience, profile_id, since_ms)
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(engine)?;
            let mut exit = tx
                .prepare_cached(
                    "DELETE FROM audience_members WHERE audience = ?1 AND profile_id = ?2",
                )
                .map_err(engine)?;
            let mut feed = tx
                .prepare_cached(
                    "INSERT INTO audience_changes (audience, profile_id, entered, at_ms, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(engine)?;
            for c in changes {
                let changed = if c.entered {
                    enter.execute(params![c.audience, c.profile_id, c.at_ms])
                } else {
                    exit.execute(params![c.audience, c.profile_id])
                }
                .map_err(engine)?;
                if changed == 0 {
                    continue;
                }
                feed.execute(params![
                    c.audience,
                    c.profile_id,
                    i64::from(c.entered),
                    c.at_ms,
                    c.reason
                ])
                .map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)
    }

    fn members(
        &self,
        audience: &str,
        after: ProfileId,
        limit: usize,
    ) -> StoreResult<Vec<Membership>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT audience, profile_id, since_ms FROM audience_members
                 WHERE audience = ?1 AND profile_id > ?2 ORDER BY profile_id LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(params![audience, after, limit_param(limit)], membership_row)
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn audiences_with_members(&self) -> StoreResult<Vec<String>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached("SELECT DISTINCT audience FROM audience_members ORDER BY audience")
            .map_err(engine)?;
        let rows = statement.query_map([], |r| r.get(0)).map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn member_count(&self, audience: &str) -> StoreResult<i64> {
        let conn = lock(&self.reader);
        conn.prepare_cached("SELECT count(*) FROM audience_members WHERE audience = ?1")
            .and_then(|mut s| s.query_row([audience], |r| r.get(0)))
            .map_err(engine)
    }

    fn memberships(&self, profile: ProfileId) -> StoreResult<Vec<Membership>> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT audience, profile_id, since_ms FROM audience_members
                 WHERE profile_id = ?1 ORDER BY audience",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map([profile], membership_row)
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn changes(
        &self,
        after_seq: i64,
        audience: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<StoredChange>> {
        let conn = lock(&self.reader);
        let columns = "seq, audience, profile_id, entered, at_ms, reason";
        let rows: Vec<StoredChange> = match audience {
            Some(audience) => {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM audience_changes
                         WHERE audience = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                    ))
                    .map_err(engine)?;
                let rows = statement
                    .query_map(params![audience, after_seq, limit_param(limit)], change_row)
                    .map_err(engine)?;
                rows.collect::<Result<_, _>>().map_err(engine)?
            }
            None => {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM audience_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ))
                    .map_err(engine)?;
                let rows = statement
                    .query_map(params![after_seq, limit_param(limit)], change_row)
                    .map_err(engine)?;
                rows.collect::<Result<_, _>>().map_err(engine)?
            }
        };
        Ok(rows)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(audience: &str, profile_id: i64, entered: bool) -> MembershipChange {
        MembershipChange {
            audience: audience.into(),
            profile_id,
            entered,
            at_ms: 5,
            reason: "event".into(),
        }
    }

    #[test]
    fn changes_move_members_and_append_to_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteAudienceStore::open_in(dir.path()).unwrap();
        store
            .apply_changes(&[
                change("vip", 1, true),
                change("vip", 2, true),
                change("new", 1, true),
            ])
            .unwrap();
        store.apply_changes(&[change("vip", 1, false)]).unwrap();
        assert_eq!(store.member_count("vip").unwrap(), 1);
        assert_eq!(store.members("vip", 0, 10).unwrap()[0].profile_id, 2);
        let of_one: Vec<String> = store
            .memberships(1)
            .unwrap()
            .into_iter()
            .map(|m| m.audience)
            .collect();
        assert_eq!(of_one, ["new"]);
        let feed = store.changes(0, None, 10).unwrap();
        assert_eq!(feed.len(), 4);
        assert!(!feed[3].change.entered);
        assert_eq!(
            store.changes(feed[1].seq, Some("vip"), 10).unwrap().len(),
            1
        );
    }
}
