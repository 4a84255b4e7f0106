//! Merge suggestions: the probabilistic matcher ([`crate::dedupe`]) run over stored
//! profiles that share no identifier, and the explicit merge an operator applies.
//!
//! Suggestions are only suggestions: nothing merges until someone applies one. An
//! applied merge is written to the event log as an `identify` message whose
//! `context.externalIds` carry one identifier of each profile, so the processor
//! merges them under the usual rules (two user ids still never merge) and a replay
//! repeats it — the log stays the single source of truth.

use crate::dedupe::{
    DedupeConfig, DedupeError, FieldKind, FieldSpec, PairExplanation, Record, Schema,
    dedupe_records,
};
use crate::rules::CompiledRules;
use serde_json::{Value, json};
use tessera_core::{ErrorCode, UserError};
use tessera_store::profiles::{IdentityLink, ProfileId, ProfileStore};
use tessera_store::{EventRecord, StoreError};

/// Source key of events Tessera writes itself (applied merges); no source has it.
pub const INTERNAL_SOURCE_KEY: i64 = 0;

/// Profiles read per page while building records.
const PAGE: usize = 5_000;

/// Trait names (or `address.*` paths) read for each field of the matcher.
const FIELDS: [(&str, FieldKind, &[&str]); 10] = [
    (
        "first_name",
        FieldKind::FirstName,
        &["first_name", "firstName"],
    ),
    ("last_name", FieldKind::LastName, &["last_name", "lastName"]),
    ("full_name", FieldKind::FullName, &["name"]),
    ("email", FieldKind::Email, &["email"]),
    ("phone", FieldKind::Phone, &["phone"]),
    (
        "date_of_birth",
        FieldKind::DateOfBirth,
        &["birthday", "date_of_birth", "dob"],
    ),
    ("street", FieldKind::Street, &["street", "address.street"]),
    ("city", FieldKind::City, &["city", "address.city"]),
    (
        "postcode",
        FieldKind::Postcode,
        &[
            "postcode",
            "zip",
            "address.postalCode",
            "address.postal_code",
        ],
    ),
    (
        "country",
        FieldKind::Country,
        &["country", "address.country"],
    ),
];

/// One suggested merge.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// One profile.
    pub left: ProfileId,
    /// The other.
    pub right: ProfileId,
    /// Field-by-field explanation of the score.
    pub explanation: PairExplanation,
    /// Whether the identity rules allow the merge (two user ids never merge).
    pub mergeable: bool,
}

/// Why suggestions could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SuggestionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The matcher refused the data.
    #[error(transparent)]
    Dedupe(#[from] DedupeError),
    /// The caller's input was wrong.
    #[error(transparent)]
    User(#[from] UserError),
}

impl tessera_core::CodedError for SuggestionError {
    fn code(&self) -> tessera_core::ErrorCode {
        match self {
            SuggestionError::User(user) => user.code,
            SuggestionError::Store(_) | SuggestionError::Dedupe(_) => {
                tessera_core::ErrorCode::InternalError
            }
        }
    }

    fn user_message(&self) -> String {
        match self {
            SuggestionError::User(user) => user.message.clone(),
            other => other.to_string(),
        }
    }
}

fn trait_text(traits: &serde_json::Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = traits.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Suggests merges among canonical profiles; `threshold` defaults to the model's
/// (posterior probability one half). Profiles with fewer than two matchable traits
/// are skipped. Returns the suggestions, strongest first, at most `limit`.
pub fn suggest_merges(
    profiles: &dyn ProfileStore,
    threshold: Option<f64>,
    limit: usize,
) -> Result<Vec<Suggestion>, SuggestionError> {
    let schema = Schema::new(
        FIELDS
            .iter()
            .map(|(name, kind, _)| FieldSpec::new(*name, *kind))
            .collect(),
    )?;
    let mut records = Vec::new();
    let mut has_user_id = Vec::new();
    let mut after = 0;
    loop {
        let page = profiles.canonical_profiles(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = *last;
        for id in page {
            let traits: serde_json::Map<String, Value> = profiles
                .traits(id)?
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        serde_json::from_str(&t.value_json).unwrap_or(Value::Null),
                    )
                })
                .collect();
            let mut record = Record::new(id.to_string());
            let mut filled = 0;
            for (field, _, paths) in FIELDS {
                if let Some(text) = paths.iter().find_map(|p| trait_text(&traits, p)) {
                    record = record.with(field, text);
                    filled += 1;
                }
            }
            if filled >= 2 {
                records.push(record);
                has_user_id.push(
                    profiles
                        .identities(id)?
                        .iter()
                        .any(|l| l.id_type == "user_id"),
                );
            }
        }
    }
    if records.len() < 2 {
        return Ok(Vec::new());
    }
    let config = DedupeConfig {
        threshold,
        ..DedupeConfig::default()
    };
    let (data, outcome) = dedupe_records(schema, &records, &config)?;
    let mut links = outcome.links.clone();
    links.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut suggestions = Vec::new();
    for link in links.into_iter().take(limit) {
        let (i, j) = (link.left as usize, link.right as usize);
        let explanation = outcome.model.explain(&data, i, &data, j);
        let parse = |k: usize| data.id(k).parse::<ProfileId>().unwrap_or_default();
        suggestions.push(Suggestion {
            left: parse(i),
            right: parse(j),
            explanation,
            mergeable: !(has_user_id[i] && has_user_id[j]),
        });
    }
    Ok(suggestions)
}

/// The strongest identifier of a profile (by rule priority).
fn strongest(rules: &CompiledRules, links: &[IdentityLink]) -> Option<IdentityLink> {
    links
        .iter()
        .min_by_key(|l| {
            rules
                .identifier_type(&l.id_type)
                .map_or(u32::MAX, |t| t.priority)
        })
        .cloned()
}

/// Builds the log message that merges two profiles. It fails with a code when a
/// profile does not exist or when the rules would refuse the merge (both have a
/// user id), so an operator learns it at once instead of finding a conflict later.
pub fn merge_message(
    rules: &CompiledRules,
    profiles: &dyn ProfileStore,
    left: ProfileId,
    right: ProfileId,
    reason: &str,
    source_key: i64,
    now_ms: i64,
) -> Result<EventRecord, SuggestionError> {
    let canonical = |id: ProfileId| -> Result<ProfileId, SuggestionError> {
        let summary = profiles.profile(id)?.ok_or_else(|| {
            UserError::new(
                ErrorCode::ProfileNotFound,
                format!("no profile has the id {id}"),
            )
        })?;
        Ok(summary.merged_into.unwrap_or(summary.id))
    };
    let (left, right) = (canonical(left)?, canonical(right)?);
    if left == right {
        return Err(UserError::new(
            ErrorCode::InvalidRequest,
            "the two profiles are already one",
        )
        .into());
    }
    let (left_ids, right_ids) = (profiles.identities(left)?, profiles.identities(right)?);
    let user_ids = |links: &[IdentityLink]| links.iter().filter(|l| l.id_type == "user_id").count();
    if user_ids(&left_ids) > 0 && user_ids(&right_ids) > 0 {
        return Err(UserError::new(
            ErrorCode::MergeConflict,
            "both profiles have a user_id; the identity rules never merge two user ids",
        )
        .into());
    }
    let ids: Vec<IdentityLink> = [strongest(rules, &left_ids), strongest(rules, &right_ids)]
        .into_iter()
        .flatten()
        .collect();
    if ids.len() < 2 {
        return Err(UserError::new(
            ErrorCode::InvalidRequest,
            "a profile without identifiers cannot be merged",
        )
        .into());
    }
    let message_id = format!(
        "tessera-merge-{left}-{right}-{}",
        tessera_core::ids::new_message_id()
    );
    let time = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(tessera_core::time::format_timestamp)
        .unwrap_or_default();
    let external: Vec<Value> = ids
        .iter()
        .map(|l| json!({"id": l.value, "type": l.id_type, "collection": "users", "encoding": "none"}))
        .collect();
    let payload = json!({
        "type": "identify",
        "messageId": message_id,
        "timestamp": time,
        "receivedAt": time,
        "traits": {},
        "context": {"externalIds": external, "tessera": {"merge": {"profiles": [left, right], "reason": reason}}},
    });
    Ok(EventRecord {
        source_key,
        message_id,
        received_at_ms: now_ms,
        payload: payload.to_string(),
    })
}
