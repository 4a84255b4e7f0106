//! The catalog in `tessera.db`: sources, settings, API tokens, privacy requests and
//! the audit log.

use crate::connection::*;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use tessera_store::keys;
use tessera_store::{
    ApiToken, AuditEntry, Catalog, NewApiToken, NewSource, PrivacyRequest, PrivacyRequestKind,
    RevokedToken, Source, StoreError, StoreResult,
};

const TOKEN_COLUMNS: &str = "id, name, scopes, prefix, created_at_ms, revoked_at_ms, parent_id";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    let scopes: String = row.get(2)?;
    Ok(ApiToken {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        prefix: row.get(3)?,
        created_at_ms: row.get(4)?,
        revoked_at_ms: row.get(5)?,
        parent_id: row.get(6)?,
    })
}

/// Sources and settings in `tessera.db`.
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

const SOURCE_COLUMNS: &str = "key, id, name, enabled, created_at_ms, write_key_prefix";

fn source_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        key: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        enabled: row.get(3)?,
        created_at_ms: row.get(4)?,
        write_key_prefix: row.get(5)?,
    })
}

/// Renames settings written under an earlier key prefix ([`keys::RENAMED`]); a key
/// already present under today's name wins.
fn rename_settings(conn: &Connection) -> StoreResult<()> {
    for (old, new) in keys::RENAMED {
        let pattern = format!("{}%", old.replace('%', "\\%").replace('_', "\\_"));
        let count: i64 = conn
            .query_row(
                "SELECT count(*) FROM settings WHERE name LIKE ?1 ESCAPE '\\'",
                [&pattern],
                |r| r.get(0),
            )
            .map_err(engine)?;
        if count == 0 {
            continue;
        }
        let tx = conn.unchecked_transaction().map_err(engine)?;
        tx.execute(
            "INSERT OR IGNORE INTO settings (name, value)
             SELECT ?2 || substr(name, length(?3) + 1), value FROM settings
             WHERE name LIKE ?1 ESCAPE '\\'",
            rusqlite::params![pattern, new, old],
        )
        .map_err(engine)?;
        tx.execute(
            "DELETE FROM settings WHERE name LIKE ?1 ESCAPE '\\'",
            [&pattern],
        )
        .map_err(engine)?;
        tx.commit().map_err(engine)?;
    }
    Ok(())
}

impl SqliteCatalog {
    /// Opens (or creates) the catalog file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = open_connection(path)?;
        conn.execute_batch(
            "PRAGMA secure_delete = ON;
             CREATE TABLE IF NOT EXISTS sources (
                 key              INTEGER PRIMARY KEY AUTOINCREMENT,
                 id               TEXT    NOT NULL UNIQUE,
                 name             TEXT    NOT NULL,
                 write_key_hash   TEXT    NOT NULL UNIQUE,
                 write_key_prefix TEXT    NOT NULL,
                 enabled          INTEGER NOT NULL DEFAULT 1,
                 created_at_ms    INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS settings (
                 name  TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS api_tokens (
                 id            TEXT PRIMARY KEY,
                 name          TEXT    NOT NULL,
                 scopes        TEXT    NOT NULL,
                 secret_hash   TEXT    NOT NULL UNIQUE,
                 prefix        TEXT    NOT NULL,
                 created_at_ms INTEGER NOT NULL,
                 revoked_at_ms INTEGER,
                 parent_id     TEXT
             );
             CREATE TABLE IF NOT EXISTS audit_log (
                 id          INTEGER PRIMARY KEY AUTOINCREMENT,
                 at_ms       INTEGER NOT NULL,
                 actor       TEXT    NOT NULL,
                 action      TEXT    NOT NULL,
                 target      TEXT    NOT NULL,
                 before_json TEXT,
                 after_json  TEXT
             );
             CREATE TABLE IF NOT EXISTS privacy_requests (
                 id              TEXT PRIMARY KEY,
                 kind            TEXT    NOT NULL,
                 identifier      TEXT,
                 identifier_hash TEXT    NOT NULL,
                 status          TEXT    NOT NULL,
                 actor           TEXT    NOT NULL,
                 requested_at_ms INTEGER NOT NULL,
                 completed_at_ms INTEGER,
                 result_json     TEXT,
                 plan_json       TEXT
             );
             CREATE TABLE IF NOT EXISTS suppressions (
                 hash          TEXT PRIMARY KEY,
                 request_id    TEXT    NOT NULL,
                 created_at_ms INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TRIGGER IF NOT EXISTS audit_log_append_only_update
                 BEFORE UPDATE ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
             CREATE TRIGGER IF NOT EXISTS audit_log_append_only_delete
                 BEFORE DELETE ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
        )
        .map_err(engine)?;
        // Catalogs created before privacy requests kept a plan.
        let has_plan: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('privacy_requests') WHERE name = 'plan_json'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(engine)?
            > 0;
        if !has_plan {
            conn.execute_batch("ALTER TABLE privacy_requests ADD COLUMN plan_json TEXT;")
                .map_err(engine)?;
        }
        // Catalogs created before tokens recorded the token that created them.
        let has_parent: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('api_tokens') WHERE name = 'parent_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(engine)?
            > 0;
        if !has_parent {
            conn.execute_batch("ALTER TABLE api_tokens ADD COLUMN parent_id TEXT;")
                .map_err(engine)?;
        }
        rename_settings(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn source_where(&self, condition: &str, value: &str) -> StoreResult<Option<Source>> {
        let conn = lock(&self.conn);
        conn.query_row(
            &format!(
                "SELECT {SOURCE_COLUMNS} FROM sources WHERE {condition} = ?1 ORDER BY key LIMIT 1"
            ),
            [value],
            source_from_row,
        )
        .optional()
        .map_err(engine)
    }
}

const PRIVACY_COLUMNS: &str = "id, kind, identifier, identifier_hash, status, actor, \
     requested_at_ms, completed_at_ms, result_json, plan_json";

fn privacy_request_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PrivacyRequest> {
    let kind: String = row.get(1)?;
    Ok(PrivacyRequest {
        id: row.get(0)?,
        kind: PrivacyRequestKind::parse(&kind).unwrap_or(PrivacyRequestKind::Erasure),
        identifier: row.get(2)?,
        identifier_hash: row.get(3)?,
        status: row.get(4)?,
        actor: row.get(5)?,
        requested_at_ms: row.get(6)?,
        completed_at_ms: row.get(7)?,
        result_json: row.get(8)?,
        plan_json: row.get(9)?,
    })
}

impl Catalog for SqliteCatalog {
    fn create_source(&self, source: &NewSource) -> StoreResult<Source> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO sources (id, name, write_key_hash, write_key_prefix, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                source.id,
                source.name,
                source.write_key_hash,
                source.write_key_prefix,
                source.created_at_ms
            ],
        )
        .map_err(engine)?;
        Ok(Source {
            key: conn.last_insert_rowid(),
            id: source.id.clone(),
            name: source.name.clone(),
            enabled: true,
            created_at_ms: source.created_at_ms,
            write_key_prefix: source.write_key_prefix.clone(),
        })
    }

    fn list_sources(&self) -> StoreResult<Vec<Source>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare(&format!(
                "SELECT {SOURCE_COLUMNS} FROM sources ORDER BY key"
            ))
            .map_err(engine)?;
        let rows = statement.query_map([], source_from_row).map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn find_source(&self, id_or_name: &str) -> StoreResult<Option<Source>> {
        match self.source_where("id", id_or_name)? {
            Some(source) => Ok(Some(source)),
            None => self.source_where("name", id_or_name),
        }
    }

    fn source_by_key_hash(&self, write_key_hash: &str) -> StoreResult<Option<Source>> {
        self.source_where("write_key_hash", write_key_hash)
    }

    fn disable_source(&self, id: &str) -> StoreResult<Source> {
        let changed = {
            let conn = lock(&self.conn);
            conn.execute("UPDATE sources SET enabled = 0 WHERE id = ?1", [id])
                .map_err(engine)?
        };
        if changed == 0 {
            return Err(StoreError::NotFound(format!("source {id}")));
        }
        self.source_where("id", id)?
            .ok_or_else(|| StoreError::NotFound(format!("source {id}")))
    }

    fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        let conn = lock(&self.conn);
        conn.query_row(
            "SELECT value FROM settings WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()
        .map_err(engine)
    }

    fn set_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [name, value],
        )
        .map_err(engine)?;
        Ok(())
    }

    fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare_cached(
                "SELECT name, value FROM settings WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn create_token(&self, token: &NewApiToken) -> StoreResult<()> {
        let conn = lock(&self.conn);
        let t = &token.token;
        // One statement: a parent revoked in between leaves no child behind.
        let stored = conn
            .execute(
                "INSERT INTO api_tokens (id, name, scopes, secret_hash, prefix, created_at_ms, parent_id)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE ?7 IS NULL
                    OR EXISTS (SELECT 1 FROM api_tokens WHERE id = ?7 AND revoked_at_ms IS NULL)",
                params![
                    t.id,
                    t.name,
                    t.scopes.join(" "),
                    token.secret_hash,
                    t.prefix,
                    t.created_at_ms,
                    t.parent_id
                ],
            )
            .map_err(engine)?;
        if stored == 0 {
            return Err(StoreError::NotFound(format!(
                "token {} (revoked), which was creating this token",
                t.parent_id.as_deref().unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at_ms, id"
            ))
            .map_err(engine)?;
        let rows = statement.query_map([], token_from_row).map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
        let conn = lock(&self.conn);
        conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?1"
        ))
        .and_then(|mut s| s.query_row([secret_hash], token_from_row).optional())
        .map_err(engine)
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> StoreResult<Option<RevokedToken>> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(engine)?;
        let Some(token) = tx
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                [id],
                token_from_row,
            )
            .optional()
            .map_err(engine)?
        else {
            return Ok(None);
        };
        // The token and its descendants (also those under an already revoked child:
        // a child revoked earlier may still have live children of older catalogs).
        let family: Vec<(String, bool)> = {
            let mut statement = tx
                .prepare(
                    "WITH RECURSIVE family(id) AS (
                         SELECT ?1
                         UNION SELECT t.id FROM api_tokens t JOIN family f ON t.parent_id = f.id
                     )
                     SELECT t.id, t.revoked_at_ms IS NULL FROM api_tokens t
                     WHERE t.id IN (SELECT id FROM family) AND t.id <> ?1 ORDER BY t.created_at_ms, t.id",
                )
                .map_err(engine)?;
            let rows = statement
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(engine)?;
            rows.collect::<Result<_, _>>().map_err(engine)?
        };
        let descendants: Vec<String> = family
            .into_iter()
            .filter_map(|(id, live)| live.then_some(id))
            .collect();
        for revoked in std::iter::once(id).chain(descendants.iter().map(String::as_str)) {
            tx.execute(
                "UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![revoked, at_ms],
            )
            .map_err(engine)?;
        }
        tx.commit().map_err(engine)?;
        Ok(Some(RevokedToken {
            token: ApiToken {
                revoked_at_ms: token.revoked_at_ms.or(Some(at_ms)),
                ..token
            },
            descendants,
        }))
    }

    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO audit_log (at_ms, actor, action, target, before_json, after_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.at_ms,
                entry.actor,
                entry.action,
                entry.target,
                entry.before,
                entry.after
            ],
        )
        .map_err(engine)?;
        Ok(())
    }

    fn audit_entries(
        &self,
        after_id: i64,
        action_prefix: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare_cached(
                "SELECT id, at_ms, actor, action, target, before_json, after_json FROM audit_log
                 WHERE id > ?1 AND substr(action, 1, length(?2)) = ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(
                params![
                    after_id,
                    action_prefix.unwrap_or(""),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        before: r.get(5)?,
                        after: r.get(6)?,
                    })
                },
            )
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn create_privacy_request(&self, request: &PrivacyRequest) -> StoreResult<()> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO privacy_requests (id, kind, identifier, identifier_hash, status, actor,
                 requested_at_ms, completed_at_ms, result_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                request.id,
                request.kind.as_str(),
                request.identifier,
                request.identifier_hash,
                request.status,
                request.actor,
                request.requested_at_ms,
                request.completed_at_ms,
                request.result_json
            ],
        )
        .map_err(engine)?;
        Ok(())
    }

    fn privacy_request(&self, id: &str) -> StoreResult<Option<PrivacyRequest>> {
        let conn = lock(&self.conn);
        conn.query_row(
            &format!("SELECT {PRIVACY_COLUMNS} FROM privacy_requests WHERE id = ?1"),
            [id],
            privacy_request_from_row,
        )
        .optional()
        .map_err(engine)
    }

    fn open_privacy_requests(&self) -> StoreResult<Vec<PrivacyRequest>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {PRIVACY_COLUMNS} FROM privacy_requests
                 WHERE status IN ('pending', 'running', 'purging') ORDER BY requested_at_ms, id"
            ))
            .map_err(engine)?;
        let rows = statement
            .query_map([], privacy_request_from_row)
            .map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn update_privacy_request(
        &self,
        id: &str,
        status: &str,
        result_json: Option<&str>,
        completed_at_ms: Option<i64>,
    ) -> StoreResult<()> {
        let conn = lock(&self.conn);
        conn.execute(
            "UPDATE privacy_requests SET status = ?2, result_json = coalesce(?3, result_json),
                 completed_at_ms = ?4,
                 identifier = CASE WHEN ?4 IS NULL THEN identifier ELSE NULL END,
                 plan_json = CASE WHEN ?4 IS NULL THEN plan_json ELSE NULL END
             WHERE id = ?1",
            params![id, status, result_json, completed_at_ms],
        )
        .map_err(engine)?;
        Ok(())
    }

    fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map_err(engine)?;
        conn.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .map_err(engine)
    }

    fn set_privacy_plan(&self, id: &str, plan_json: &str) -> StoreResult<()> {
        let conn = lock(&self.conn);
        conn.execute(
            "UPDATE privacy_requests SET plan_json = ?2 WHERE id = ?1",
            params![id, plan_json],
        )
        .map_err(engine)?;
        Ok(())
    }

    fn add_suppressions(&self, hashes: &[String], request_id: &str, at_ms: i64) -> StoreResult<()> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(engine)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO suppressions (hash, request_id, created_at_ms)
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(engine)?;
            for hash in hashes {
                insert
                    .execute(params![hash, request_id, at_ms])
                    .map_err(engine)?;
            }
        }
        tx.commit().map_err(engine)
    }

    fn suppressions(&self) -> StoreResult<Vec<String>> {
        let conn = lock(&self.conn);
        let mut statement = conn
            .prepare_cached("SELECT hash FROM suppressions ORDER BY hash")
            .map_err(engine)?;
        let rows = statement.query_map([], |r| r.get(0)).map_err(engine)?;
        rows.collect::<Result<_, _>>().map_err(engine)
    }

    fn purge_deleted(&self) -> StoreResult<()> {
        vacuum_and_truncate_wal(&mut lock(&self.conn))
    }

    fn delete_setting(&self, name: &str) -> StoreResult<bool> {
        let conn = lock(&self.conn);
        let deleted = conn
            .execute("DELETE FROM settings WHERE name = ?1", [name])
            .map_err(engine)?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open_data_dir;

    #[test]
    fn revoking_a_token_revokes_the_tokens_it_created() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let (_, catalog) = open_data_dir(dir.path())?;
        let token = |id: &str, parent: Option<&str>| NewApiToken {
            token: ApiToken {
                id: id.into(),
                name: id.into(),
                scopes: vec!["admin".into()],
                prefix: "tsk_".into(),
                created_at_ms: 1,
                revoked_at_ms: None,
                parent_id: parent.map(str::to_owned),
            },
            secret_hash: format!("hash-{id}"),
        };
        catalog.create_token(&token("root", None))?;
        catalog.create_token(&token("child", Some("root")))?;
        catalog.create_token(&token("grandchild", Some("child")))?;
        catalog.create_token(&token("other", None))?;
        let revoked = catalog.revoke_token("root", 5)?;
        let revoked = revoked.ok_or_else(|| StoreError::NotFound("root".into()))?;
        assert_eq!(revoked.token.revoked_at_ms, Some(5));
        assert_eq!(revoked.descendants, vec!["child", "grandchild"]);
        let live: Vec<String> = catalog
            .list_tokens()?
            .into_iter()
            .filter(|t| t.revoked_at_ms.is_none())
            .map(|t| t.id)
            .collect();
        assert_eq!(live, vec!["other"]);
        // A revoked token's child is never stored.
        assert!(matches!(
            catalog.create_token(&token("late", Some("root"))),
            Err(StoreError::NotFound(_))
        ));
        assert!(catalog.token_by_hash("hash-late")?.is_none());
        assert!(catalog.revoke_token("nobody", 6)?.is_none());
        Ok(())
    }
    #[test]
    fn settings_under_an_earlier_prefix_are_renamed_when_the_catalog_opens() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let path = dir.path().join("tessera.db");
        {
            let catalog = SqliteCatalog::open(&path)?;
            catalog.set_setting("destination:hook", "old")?;
            catalog.set_setting("journey:welcome", "old journey")?;
            catalog.set_setting("destination/kept", "new")?;
            catalog.set_setting("destination:kept", "stale")?;
        }
        let catalog = SqliteCatalog::open(&path)?;
        assert_eq!(catalog.setting("destination/hook")?, Some("old".into()));
        assert_eq!(
            catalog.setting("journey/welcome")?,
            Some("old journey".into())
        );
        assert_eq!(catalog.setting("destination/kept")?, Some("new".into()));
        assert!(catalog.settings_with_prefix("destination:")?.is_empty());
        assert!(catalog.settings_with_prefix("journey:")?.is_empty());
        Ok(())
    }
    #[test]
    fn sources_are_found_by_key_hash_and_disabled() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let (_, catalog) = open_data_dir(dir.path())?;
        let created = catalog.create_source(&NewSource {
            id: "src_a".into(),
            name: "web".into(),
            write_key_hash: "h1".into(),
            write_key_prefix: "abcd".into(),
            created_at_ms: 5,
        })?;
        assert_eq!(catalog.source_by_key_hash("h1")?, Some(created.clone()));
        assert_eq!(
            catalog.find_source("web")?.map(|s| s.id),
            Some("src_a".into())
        );
        assert!(!catalog.disable_source("src_a")?.enabled);
        assert!(matches!(
            catalog.disable_source("src_zz"),
            Err(StoreError::NotFound(_))
        ));
        catalog.set_setting("k", "v1")?;
        catalog.set_setting("k", "v2")?;
        assert_eq!(catalog.setting("k")?, Some("v2".into()));
        Ok(())
    }
}
