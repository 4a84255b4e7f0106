//! Promises of [`Catalog`].

use super::{Ctx, Engine, Outcome, crash_copy, ensure, ensure_eq, ensure_gone, ensure_stored};
use crate::{
    ApiToken, AuditEntry, Catalog, NewApiToken, NewSource, PrivacyRequest, PrivacyRequestKind,
    StoreErrorKind,
};

fn new_source(id: &str, name: &str, hash: &str) -> NewSource {
    NewSource {
        id: id.to_string(),
        name: name.to_string(),
        write_key_hash: hash.to_string(),
        write_key_prefix: format!("{id}-pre"),
        created_at_ms: 100,
    }
}

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at_ms: 7,
        actor: "admin-token".into(),
        action: action.to_string(),
        target: target.to_string(),
        before: None,
        after: Some(format!("{{\"target\":\"{target}\"}}")),
    }
}

fn request(id: &str, identifier: &str, requested_at_ms: i64) -> PrivacyRequest {
    PrivacyRequest {
        id: id.to_string(),
        kind: PrivacyRequestKind::Erasure,
        identifier: Some(identifier.to_string()),
        identifier_hash: format!("hash-of-{id}"),
        status: "pending".into(),
        actor: "admin-token".into(),
        requested_at_ms,
        completed_at_ms: None,
        result_json: None,
        plan_json: None,
    }
}

fn open_ids(catalog: &dyn Catalog) -> Result<Vec<String>, String> {
    Ok(catalog
        .open_privacy_requests()
        .ctx("open_privacy_requests")?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// Settings: unset is `None`; `set_setting` stores and overwrites; `delete_setting`
/// answers whether it existed; `settings_with_prefix` lists the names starting with
/// the prefix (taken literally, `_` and `%` included), sorted by name.
pub fn settings_set_overwrite_delete_and_prefix<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    ensure_eq!(
        catalog.setting("rfm").ctx("setting")?,
        None,
        "an unset setting"
    );
    catalog.set_setting("rfm", "one").ctx("set_setting")?;
    ensure_eq!(
        catalog.setting("rfm").ctx("setting")?,
        Some("one".into()),
        "set"
    );
    catalog.set_setting("rfm", "two").ctx("set_setting")?;
    ensure_eq!(
        catalog.setting("rfm").ctx("setting")?,
        Some("two".into()),
        "overwritten"
    );
    for (name, value) in [
        ("audience/b", "B"),
        ("audience/a", "A"),
        ("audiences", "not under the prefix"),
        ("audience_x", "underscore"),
        ("journey/a", "J"),
    ] {
        catalog.set_setting(name, value).ctx("set_setting")?;
    }
    ensure_eq!(
        catalog
            .settings_with_prefix("audience/")
            .ctx("settings_with_prefix")?,
        vec![
            ("audience/a".to_string(), "A".to_string()),
            ("audience/b".into(), "B".into())
        ],
        "settings_with_prefix: the prefix's settings, by name"
    );
    ensure_eq!(
        catalog
            .settings_with_prefix("audience_")
            .ctx("settings_with_prefix")?,
        vec![("audience_x".to_string(), "underscore".to_string())],
        "'_' in a prefix is literal"
    );
    ensure_eq!(
        catalog
            .settings_with_prefix("audience%")
            .ctx("settings_with_prefix")?,
        Vec::<(String, String)>::new(),
        "'%' in a prefix is literal"
    );
    ensure!(
        catalog.delete_setting("audience/a").ctx("delete_setting")?,
        "deleting an existing setting answers true"
    );
    ensure!(
        !catalog.delete_setting("audience/a").ctx("delete_setting")?,
        "deleting a missing setting answers false"
    );
    ensure_eq!(
        catalog.setting("audience/a").ctx("setting")?,
        None,
        "a deleted setting is gone"
    );
    Ok(())
}

/// `setting_or_insert` answers the stored value, storing the given one only when
/// there is none; threads racing on one handle and on separate handles (processes)
/// all get the same answer, which is the stored value.
pub fn setting_or_insert_race_has_one_winner<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    catalog.set_setting("salt", "kept").ctx("set_setting")?;
    ensure_eq!(
        catalog
            .setting_or_insert("salt", "other")
            .ctx("setting_or_insert")?,
        "kept".to_string(),
        "an existing value is answered and kept"
    );
    let shared: &dyn Catalog = catalog.as_ref();
    let answers = std::thread::scope(|scope| -> Result<Vec<String>, String> {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let place = &place;
                scope.spawn(move || -> Result<String, String> {
                    let value = format!("value-{t}");
                    if t % 2 == 0 {
                        shared
                            .setting_or_insert("race", &value)
                            .ctx("setting_or_insert")
                    } else {
                        let own = engine.catalog(place).ctx("open a second catalog handle")?;
                        own.setting_or_insert("race", &value)
                            .ctx("setting_or_insert")
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a racing thread panicked".to_string())?
            })
            .collect()
    })?;
    let stored = catalog.setting("race").ctx("setting")?;
    for answer in &answers {
        ensure_eq!(
            Some(answer.clone()),
            stored,
            "every racer gets the stored value"
        );
    }
    Ok(())
}

/// Sources: created enabled with a fresh key; a write key hash or id already taken
/// is refused with `Conflict`; listed oldest first; found by id, then by exact name
/// (an id wins over another source's equal name), and by key hash; disabling keeps
/// the source (found by its key hash, `enabled` false); disabling an unknown id is
/// `NotFound`.
pub fn sources_unique_found_and_disabled<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    let a = catalog
        .create_source(&new_source("src_a", "web", "hash-a"))
        .ctx("create_source")?;
    let b = catalog
        .create_source(&new_source("src_b", "src_a", "hash-b"))
        .ctx("create_source")?;
    ensure!(a.enabled && b.enabled, "a new source is enabled");
    ensure!(a.key != b.key, "sources get distinct keys");
    ensure_eq!(
        (
            a.id.as_str(),
            a.name.as_str(),
            a.created_at_ms,
            a.write_key_prefix.as_str()
        ),
        ("src_a", "web", 100, "src_a-pre"),
        "create_source returns the source"
    );
    let taken_hash = catalog.create_source(&new_source("src_c", "c", "hash-a"));
    ensure!(
        taken_hash
            .as_ref()
            .is_err_and(|e| e.kind() == StoreErrorKind::Conflict),
        "a write key hash already taken is refused with Conflict, got {taken_hash:?}"
    );
    let taken_id = catalog.create_source(&new_source("src_a", "d", "hash-d"));
    ensure!(
        taken_id
            .as_ref()
            .is_err_and(|e| e.kind() == StoreErrorKind::Conflict),
        "an id already taken is refused with Conflict, got {taken_id:?}"
    );
    ensure_eq!(
        catalog.list_sources().ctx("list_sources")?,
        vec![a.clone(), b.clone()],
        "listed oldest first"
    );
    ensure_eq!(
        catalog.find_source("src_a").ctx("find_source")?,
        Some(a.clone()),
        "found by id before another's name"
    );
    ensure_eq!(
        catalog.find_source("web").ctx("find_source")?,
        Some(a.clone()),
        "found by exact name"
    );
    ensure_eq!(
        catalog.find_source("WEB").ctx("find_source")?,
        None,
        "names match exactly"
    );
    ensure_eq!(
        catalog
            .source_by_key_hash("hash-b")
            .ctx("source_by_key_hash")?,
        Some(b.clone()),
        "found by key hash"
    );
    ensure_eq!(
        catalog
            .source_by_key_hash("nope")
            .ctx("source_by_key_hash")?,
        None,
        "unknown hash"
    );
    let disabled = catalog.disable_source("src_b").ctx("disable_source")?;
    ensure_eq!(
        disabled,
        crate::Source {
            enabled: false,
            ..b
        },
        "disable_source returns it disabled"
    );
    ensure_eq!(
        catalog
            .source_by_key_hash("hash-b")
            .ctx("source_by_key_hash")?
            .map(|s| s.enabled),
        Some(false),
        "a disabled source is still found, disabled"
    );
    let unknown = catalog.disable_source("src_zzz");
    ensure!(
        unknown
            .as_ref()
            .is_err_and(|e| e.kind() == StoreErrorKind::NotFound),
        "disabling an unknown source is NotFound, got {unknown:?}"
    );
    Ok(())
}

/// Tokens: listed oldest first, revoked ones included; found by secret hash;
/// `revoke_token` answers the token as it now is (a second revocation keeps the
/// first time), `None` for an unknown id.
pub fn tokens_created_listed_and_revoked<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    let token = |id: &str, at: i64| ApiToken {
        id: id.to_string(),
        name: format!("{id} name"),
        scopes: vec!["admin".into(), "read:profiles".into()],
        prefix: format!("{id}-p"),
        created_at_ms: at,
        revoked_at_ms: None,
        parent_id: None,
    };
    let (newer, older) = (token("tok_2", 20), token("tok_1", 10));
    for (t, hash) in [(&newer, "secret-2"), (&older, "secret-1")] {
        catalog
            .create_token(&NewApiToken {
                token: t.clone(),
                secret_hash: hash.to_string(),
            })
            .ctx("create_token")?;
    }
    ensure_eq!(
        catalog.list_tokens().ctx("list_tokens")?,
        vec![older.clone(), newer.clone()],
        "tokens oldest first"
    );
    ensure_eq!(
        catalog.token_by_hash("secret-2").ctx("token_by_hash")?,
        Some(newer.clone()),
        "found by secret hash"
    );
    ensure_eq!(
        catalog.token_by_hash("secret-3").ctx("token_by_hash")?,
        None,
        "unknown hash"
    );
    let revoked = ApiToken {
        revoked_at_ms: Some(30),
        ..older.clone()
    };
    ensure_eq!(
        catalog
            .revoke_token("tok_1", 30)
            .ctx("revoke_token")?
            .map(|r| r.token),
        Some(revoked.clone()),
        "revoked"
    );
    ensure_eq!(
        catalog
            .revoke_token("tok_1", 40)
            .ctx("revoke_token")?
            .map(|r| r.token),
        Some(revoked.clone()),
        "revoking again keeps the first revocation"
    );
    ensure_eq!(
        catalog
            .revoke_token("tok_9", 30)
            .ctx("revoke_token")?
            .map(|r| r.token),
        None,
        "unknown id"
    );
    ensure_eq!(
        catalog.list_tokens().ctx("list_tokens")?,
        vec![revoked, newer],
        "revoked ones are listed"
    );
    Ok(())
}

/// The audit log: each append gets a higher id; `audit_entries` lists entries above
/// `after_id`, oldest first, at most `limit`, only actions starting with the prefix
/// when one is given.
pub fn audit_log_in_order_with_filters<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    for (action, target) in [
        ("source.create", "s1"),
        ("audience.update", "a1"),
        ("source.disable", "s1"),
        ("sourcex.other", "x"),
    ] {
        catalog
            .append_audit(&audit(action, target))
            .ctx("append_audit")?;
    }
    let all = catalog.audit_entries(0, None, 100).ctx("audit_entries")?;
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    ensure_eq!(
        actions,
        vec![
            "source.create",
            "audience.update",
            "source.disable",
            "sourcex.other"
        ],
        "every entry, oldest first"
    );
    ensure!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    ensure_eq!(
        all[1],
        AuditEntry {
            id: all[1].id,
            ..audit("audience.update", "a1")
        },
        "entries kept whole"
    );
    let sources = catalog
        .audit_entries(0, Some("source."), 100)
        .ctx("audit_entries")?;
    let targets: Vec<&str> = sources.iter().map(|e| e.action.as_str()).collect();
    ensure_eq!(
        targets,
        vec!["source.create", "source.disable"],
        "action prefix filter"
    );
    let after = catalog
        .audit_entries(all[1].id, None, 1)
        .ctx("audit_entries")?;
    ensure_eq!(after.len(), 1, "limit");
    ensure_eq!(after[0].id, all[2].id, "after_id starts after it");
    catalog
        .append_audit(&audit("source.create", "s2"))
        .ctx("append_audit")?;
    let newest = catalog
        .audit_entries(all[3].id, None, 10)
        .ctx("audit_entries")?;
    ensure!(
        newest.len() == 1 && newest[0].id > all[3].id,
        "a later entry gets a higher id"
    );
    Ok(())
}

/// Privacy requests: stored and read back whole; open ones (pending, running, and
/// purging — completed, its catalog's deleted bytes not yet purged) are listed oldest
/// first; an update with `completed_at_ms` clears the identifier and plan; an update
/// without a result keeps the stored one; completed and failed ones are not open.
pub fn privacy_request_lifecycle<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    let later = request("prq_b", "email:b@example.com", 20);
    let earlier = PrivacyRequest {
        kind: PrivacyRequestKind::Export,
        ..request("prq_a", "email:a@example.com", 10)
    };
    let failing = request("prq_c", "email:c@example.com", 30);
    for r in [&later, &earlier, &failing] {
        catalog
            .create_privacy_request(r)
            .ctx("create_privacy_request")?;
    }
    ensure_eq!(
        catalog.privacy_request("prq_a").ctx("privacy_request")?,
        Some(earlier.clone()),
        "read back whole"
    );
    ensure_eq!(
        catalog.privacy_request("prq_z").ctx("privacy_request")?,
        None,
        "unknown id"
    );
    ensure_eq!(
        open_ids(catalog.as_ref())?,
        vec!["prq_a", "prq_b", "prq_c"],
        "open requests oldest first"
    );
    catalog
        .set_privacy_plan("prq_b", "{\"profiles\":[1]}")
        .ctx("set_privacy_plan")?;
    catalog
        .update_privacy_request("prq_b", "running", Some("{\"step\":1}"), None)
        .ctx("update_privacy_request")?;
    let running = catalog.privacy_request("prq_b").ctx("privacy_request")?;
    ensure_eq!(
        running,
        Some(PrivacyRequest {
            status: "running".into(),
            result_json: Some("{\"step\":1}".into()),
            plan_json: Some("{\"profiles\":[1]}".into()),
            ..later.clone()
        }),
        "a running request keeps its identifier and plan"
    );
    catalog
        .update_privacy_request("prq_b", "purging", Some("{\"events\":2}"), Some(50))
        .ctx("update_privacy_request")?;
    let purging = catalog.privacy_request("prq_b").ctx("privacy_request")?;
    ensure_eq!(
        purging
            .as_ref()
            .map(|r| (r.identifier.clone(), r.plan_json.clone(), r.completed_at_ms)),
        Some((None, None, Some(50))),
        "completed_at_ms clears the identifier and the plan"
    );
    ensure_eq!(
        open_ids(catalog.as_ref())?,
        vec!["prq_a", "prq_b", "prq_c"],
        "a purging request is still open"
    );
    catalog
        .update_privacy_request("prq_b", "completed", None, Some(50))
        .ctx("update_privacy_request")?;
    ensure_eq!(
        catalog
            .privacy_request("prq_b")
            .ctx("privacy_request")?
            .and_then(|r| r.result_json),
        Some("{\"events\":2}".to_string()),
        "an update without a result keeps the stored result"
    );
    catalog
        .update_privacy_request("prq_c", "failed", Some("{\"error\":\"x\"}"), None)
        .ctx("update_privacy_request")?;
    ensure_eq!(
        open_ids(catalog.as_ref())?,
        vec!["prq_a"],
        "completed and failed requests are not open"
    );
    Ok(())
}

/// A completed erasure request keeps no identifier: after the update that completes
/// it and `purge_deleted`, and after `delete_setting` and `purge_deleted`, no file
/// holds the old bytes.
pub fn privacy_identifier_leaves_no_bytes<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let identifier = "email:forget-me-5d2a77@example.com";
    let setting = "secret-setting-value-91be02";
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    catalog
        .create_privacy_request(&request("prq_x", identifier, 1))
        .ctx("create_privacy_request")?;
    catalog.set_setting("doomed", setting).ctx("set_setting")?;
    ensure_stored(engine, &place, identifier)?;
    ensure_stored(engine, &place, setting)?;
    catalog
        .update_privacy_request("prq_x", "completed", Some("{}"), Some(2))
        .ctx("update_privacy_request")?;
    catalog.delete_setting("doomed").ctx("delete_setting")?;
    catalog.purge_deleted().ctx("purge_deleted")?;
    ensure_gone(
        engine,
        &place,
        identifier,
        "completing the request and purge_deleted",
    )?;
    ensure_gone(engine, &place, setting, "delete_setting and purge_deleted")?;
    Ok(())
}

/// Suppressions: every hash added is listed once, whatever request added it.
pub fn suppressions_are_a_set<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    ensure!(
        catalog.suppressions().ctx("suppressions")?.is_empty(),
        "none at first"
    );
    catalog
        .add_suppressions(&["h2".into(), "h1".into(), "h2".into()], "prq_a", 1)
        .ctx("add_suppressions")?;
    catalog
        .add_suppressions(&["h1".into(), "h3".into()], "prq_b", 2)
        .ctx("add_suppressions")?;
    let mut listed = catalog.suppressions().ctx("suppressions")?;
    listed.sort();
    ensure_eq!(listed, vec!["h1", "h2", "h3"], "each hash once");
    Ok(())
}

/// Everything the catalog stores survives dropping the handle and reopening.
pub fn catalog_survives_reopen<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    {
        let catalog = engine.catalog(&place).ctx("open the catalog")?;
        catalog
            .set_setting("identity_rules", "{}")
            .ctx("set_setting")?;
        catalog
            .create_source(&new_source("src_a", "web", "hash-a"))
            .ctx("create_source")?;
        catalog
            .append_audit(&audit("source.create", "src_a"))
            .ctx("append_audit")?;
        catalog
            .create_privacy_request(&request("prq_a", "email:a@x", 1))
            .ctx("create_privacy_request")?;
        catalog
            .add_suppressions(&["h".into()], "prq_a", 1)
            .ctx("add_suppressions")?;
    }
    let catalog = engine.catalog(&place).ctx("reopen the catalog")?;
    ensure_eq!(
        catalog.setting("identity_rules").ctx("setting")?,
        Some("{}".into()),
        "a setting after reopening"
    );
    ensure_eq!(
        catalog.list_sources().ctx("list_sources")?.len(),
        1,
        "a source after reopening"
    );
    ensure_eq!(
        catalog
            .audit_entries(0, None, 10)
            .ctx("audit_entries")?
            .len(),
        1,
        "the audit log after reopening"
    );
    ensure_eq!(
        open_ids(catalog.as_ref())?,
        vec!["prq_a"],
        "a request after reopening"
    );
    ensure_eq!(
        catalog.suppressions().ctx("suppressions")?,
        vec!["h"],
        "suppressions after reopening"
    );
    Ok(())
}

/// Catalog writes are in the files when the call returns: a copy taken with the
/// catalog still open (a crash) holds them.
pub fn catalog_survives_a_crash<E: Engine>(engine: &E) -> Outcome {
    let place = engine.fresh_place()?;
    let catalog = engine.catalog(&place).ctx("open the catalog")?;
    catalog
        .setting_or_insert("privacy_suppression_salt", "salt")
        .ctx("setting_or_insert")?;
    catalog
        .create_source(&new_source("src_a", "web", "hash-a"))
        .ctx("create_source")?;
    catalog
        .append_audit(&audit("source.create", "src_a"))
        .ctx("append_audit")?;
    let crashed = crash_copy(engine, &place)?;
    let copy = engine
        .catalog(&crashed)
        .ctx("open the catalog after a crash")?;
    ensure_eq!(
        copy.setting("privacy_suppression_salt").ctx("setting")?,
        Some("salt".to_string()),
        "a setting after a crash"
    );
    ensure_eq!(
        copy.source_by_key_hash("hash-a")
            .ctx("source_by_key_hash")?
            .map(|s| s.id),
        Some("src_a".to_string()),
        "a source after a crash"
    );
    ensure_eq!(
        copy.audit_entries(0, None, 10).ctx("audit_entries")?.len(),
        1,
        "the audit log after a crash"
    );
    Ok(())
}
