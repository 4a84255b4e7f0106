//! The Profile API (Segment's shape) and Tessera's own profile and identity routes.
//!
//! Segment-compatible, for support tools and SDK users:
//! `GET /v1/spaces/{space}/collections/users/profiles/{type}:{value}/traits|events|external_ids`.
//! The token is the admin token, as `Authorization: Bearer` or as the HTTP Basic user
//! (Segment's Profile API takes its access token as the Basic user).
//!
//! Tessera's own, richer: `/api/v1/profiles?identifier=type:value`,
//! `/api/v1/profiles/{id}` (traits with provenance, identities, merge history,
//! groups), `/api/v1/profiles/{id}/timeline`, and the identity operations
//! (`/api/v1/identity/rules`, `/unlink`, `/conflicts`).

use crate::AppState;
use crate::admin::{Admin, ProfileReader};
use crate::api_error::ApiError;
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tessera_core::ErrorCode;
use tessera_core::time::format_millis;
use tessera_identity::identifiers::{Identifier, normalize_value};
use tessera_identity::processor::ProcessorError;
use tessera_identity::rules::IdentityRules;
use tessera_identity::suggestions::{INTERNAL_SOURCE_KEY, merge_message, suggest_merges};
use tessera_runtime::audit::record_audit;
use tessera_store::profiles::{ProfileId, ProfileSummary};

/// The profile and identity routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/spaces/{space}/collections/users/profiles/{key}/traits",
            get(segment_traits),
        )
        .route(
            "/v1/spaces/{space}/collections/users/profiles/{key}/events",
            get(segment_events),
        )
        .route(
            "/v1/spaces/{space}/collections/users/profiles/{key}/external_ids",
            get(segment_external_ids),
        )
        .route("/api/v1/profiles", get(find_profile))
        .route("/api/v1/profiles/{id}", get(profile_detail))
        .route("/api/v1/profiles/{id}/timeline", get(timeline))
        .route("/api/v1/identity/rules", get(get_rules).put(put_rules))
        .route("/api/v1/identity/unlink", post(unlink))
        .route("/api/v1/identity/conflicts", get(conflicts))
        .route("/api/v1/identity/suggestions", get(suggestions))
        .route("/api/v1/identity/merge", post(merge))
}

/// Parses `type:value` and normalizes the value as the processor does, so
/// `email:Jane@Example.com` finds `jane@example.com`.
fn parse_identifier(state: &AppState, key: &str) -> Result<Identifier, ApiError> {
    let Some((id_type, raw)) = key.split_once(':') else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "identify the profile as type:value, e.g. email:jane@example.com or user_id:42",
        ));
    };
    let rules = state.processor.compiled_rules();
    let value = match rules.identifier_type(id_type) {
        Some(t) => normalize_value(&rules, t, raw).unwrap_or_else(|| raw.trim().to_string()),
        None => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{id_type:?} is not an identifier type; the types are {}",
                    rules
                        .types
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    Ok(Identifier::new(id_type, value))
}

fn profile_by_identifier(state: &AppState, key: &str) -> Result<ProfileId, ApiError> {
    let identifier = parse_identifier(state, key)?;
    state
        .profiles
        .find(&identifier.id_type, &identifier.value)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ProfileNotFound,
                format!(
                    "no profile holds that {} (events are attributed within moments of arriving)",
                    identifier.id_type
                ),
            )
        })
}

/// A profile by id, following merges to the surviving profile.
fn canonical_summary(state: &AppState, id: ProfileId) -> Result<ProfileSummary, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::ProfileNotFound,
            format!("no profile has the id {id}"),
        )
    };
    let mut summary = state
        .profiles
        .profile(id)
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    if let Some(winner) = summary.merged_into {
        summary = state
            .profiles
            .profile(winner)
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)?;
    }
    Ok(summary)
}

fn source_ids(state: &AppState) -> Result<HashMap<i64, String>, ApiError> {
    Ok(state
        .catalog
        .list_sources()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|s| (s.key, s.id))
        .collect())
}

#[derive(Deserialize, Default)]
struct PageQuery {
    limit: Option<usize>,
    include: Option<String>,
    class: Option<String>,
    next: Option<String>,
    before: Option<i64>,
}

fn page_query(
    query: Result<Query<PageQuery>, QueryRejection>,
    default_limit: usize,
    max_limit: usize,
) -> Result<(PageQuery, usize), ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "query parameters: limit (a number), include (names separated by commas), next (a cursor)",
        )
    })?;
    let limit = query.limit.unwrap_or(default_limit);
    if !(1..=max_limit).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("\"limit\" must be from 1 to {max_limit}"),
        ));
    }
    Ok((query, limit))
}

async fn segment_traits(
    State(state): State<AppState>,
    _: ProfileReader,
    Path((_space, key)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (query, limit) = page_query(query, 10, 200)?;
    let profile = profile_by_identifier(&state, &key)?;
    let wanted: Option<Vec<&str>> = query.include.as_deref().map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let mut traits = Map::new();
    // Segment's `class`: `audience` gives audience memberships as boolean traits,
    // `computed_trait` the computed traits; without it, the profile's own traits.
    let all: Vec<(String, Value)> = match query.class.as_deref() {
        None | Some("") => state
            .profiles
            .traits(profile)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|t| {
                let value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
                (t.name, value)
            })
            .collect(),
        Some("audience") => state
            .audiences
            .memberships(profile)
            .map_err(ApiError::from)?
            .into_iter()
            .map(|m| (m.audience, Value::Bool(true)))
            .collect(),
        Some("computed_trait") => state
            .audiences
            .computed_values(profile)
            .into_iter()
            .collect(),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("\"class\" is audience or computed_trait, not \"{other}\""),
            ));
        }
    };
    let mut matching = all
        .into_iter()
        .filter(|(name, _)| wanted.as_ref().is_none_or(|w| w.contains(&name.as_str())));
    for (name, value) in matching.by_ref().take(limit) {
        traits.insert(name, value);
    }
    let has_more = matching.next().is_some();
    Ok(Json(json!({
        "traits": traits,
        "cursor": {"url": "", "has_more": has_more, "next": "", "limit": limit},
    })))
}

async fn segment_events(
    State(state): State<AppState>,
    _: ProfileReader,
    Path((space, key)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (query, limit) = page_query(query, 10, 100)?;
    let profile = profile_by_identifier(&state, &key)?;
    let before = match query.next.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "\"next\" must be a cursor from a previous answer",
            )
        })?),
    };
    let EventsPage { events, next } = events_page(&state, profile, before, limit)?;
    let sources = source_ids(&state)?;
    let data: Vec<Value> = events
        .into_iter()
        .map(|(source_key, mut message)| {
            if let Value::Object(map) = &mut message {
                map.insert(
                    "source_id".into(),
                    sources
                        .get(&source_key)
                        .cloned()
                        .map_or(Value::Null, Value::String),
                );
            }
            message
        })
        .collect();
    let url = format!("/v1/spaces/{space}/collections/users/profiles/{key}/events");
    Ok(Json(json!({
        "data": data,
        "cursor": {
            "url": url,
            "has_more": next.is_some(),
            "next": next.map(|n| n.to_string()).unwrap_or_default(),
            "limit": limit,
        },
    })))
}

/// A page of a profile's events, newest first: (source key, message) pairs, and the
/// cursor (a `seq`) of the next page.
struct EventsPage {
    events: Vec<(i64, Value)>,
    next: Option<i64>,
}

fn events_page(
    state: &AppState,
    profile: ProfileId,
    before: Option<i64>,
    limit: usize,
) -> Result<EventsPage, ApiError> {
    let mut seqs = state
        .profiles
        .event_seqs(profile, before, limit + 1)
        .map_err(ApiError::internal)?;
    let next = (seqs.len() > limit).then(|| seqs[limit - 1]);
    seqs.truncate(limit);
    let mut events = state.events.get(&seqs).map_err(ApiError::internal)?;
    events.reverse();
    Ok(EventsPage {
        events: events
            .into_iter()
            .map(|e| {
                let mut message: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut message {
                    map.insert("seq".into(), Value::from(e.seq));
                }
                (e.source_key, message)
            })
            .collect(),
        next,
    })
}

async fn segment_external_ids(
    State(state): State<AppState>,
    _: ProfileReader,
    Path((space, key)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (_, limit) = page_query(query, 25, 1_000)?;
    let profile = profile_by_identifier(&state, &key)?;
    let sources = source_ids(&state)?;
    let links = state
        .profiles
        .identities(profile)
        .map_err(ApiError::internal)?;
    let has_more = links.len() > limit;
    let data: Vec<Value> = links
        .into_iter()
        .take(limit)
        .map(|l| {
            json!({
                "id": l.value,
                "type": l.id_type,
                "source_id": sources.get(&l.source_key),
                "collection": "users",
                "created_at": format_millis(l.first_seen_ms),
                "encoding": "none",
            })
        })
        .collect();
    let url = format!("/v1/spaces/{space}/collections/users/profiles/{key}/external_ids");
    Ok(Json(json!({
        "data": data,
        "cursor": {"url": url, "has_more": has_more, "next": "", "limit": limit},
    })))
}

/// `GET /api/v1/profiles`: with `identifier=type:value`, that person's profile;
/// otherwise a page of profiles (see [`list_profiles`]).
async fn find_profile(
    State(state): State<AppState>,
    _: ProfileReader,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{e}; use ?identifier=type:value, or ?q=&trait.NAME=&text=&sort=&limit=&cursor="
            ),
        )
    })?;
    if let Some((_, identifier)) = params.iter().find(|(k, _)| k == "identifier") {
        let profile = profile_by_identifier(&state, identifier)?;
        return profile_json_blocking(state, profile).await.map(Json);
    }
    let search = profile_search(&params)?;
    tokio::task::spawn_blocking(move || list_profiles(&state, &search))
        .await
        .map_err(ApiError::internal)?
        .map(Json)
}

/// Default and largest page of `GET /api/v1/profiles`.
const PROFILE_PAGE: (usize, usize) = (50, 200);
/// Profiles a filtered page of `GET /api/v1/profiles` examines at most.
const PROFILE_SCAN_BUDGET: usize = 20_000;

/// Reads the listing's query: `q` (identifier prefix), `trait.NAME=VALUE` (`NAME`
/// may be a dotted path into a nested trait: `trait.address.city=Paris`), `text`,
/// `sort` (`-lastSeen`, the default, or `lastSeen`), `limit`, `cursor`. The CLI's
/// `tessera profiles` reads its flags through it too.
pub fn profile_search(
    params: &[(String, String)],
) -> Result<tessera_store::profiles::ProfileSearch, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidRequest, m);
    let mut search = tessera_store::profiles::ProfileSearch {
        limit: PROFILE_PAGE.0,
        scan_budget: PROFILE_SCAN_BUDGET,
        ..Default::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "q" => {
                let typed = value.trim().to_owned();
                let lower = typed.to_lowercase();
                search.identifier_prefixes = if lower == typed {
                    vec![typed]
                } else {
                    vec![typed, lower]
                };
            }
            "text" => search.text = Some(value.clone()),
            "limit" => {
                search.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=PROFILE_PAGE.1).contains(n))
                    .ok_or_else(|| {
                        invalid(format!("\"limit\" must be from 1 to {}", PROFILE_PAGE.1))
                    })?;
            }
            "sort" => {
                search.ascending = match value.as_str() {
                    "-lastSeen" => false,
                    "lastSeen" => true,
                    _ => {
                        return Err(invalid(
                            "\"sort\" is -lastSeen (newest first, the default) or lastSeen".into(),
                        ));
                    }
                }
            }
            "cursor" => {
                search.after = Some(
                    value
                        .split_once('_')
                        .and_then(|(t, id)| Some((t.parse().ok()?, id.parse().ok()?)))
                        .ok_or_else(|| {
                            invalid("\"cursor\" is the nextCursor of a previous page".into())
                        })?,
                );
            }
            _ => {
                let Some(name) = key.strip_prefix("trait.").filter(|n| !n.is_empty()) else {
                    return Err(invalid(format!(
                        "unknown parameter {key:?}: the profile list takes q, trait.NAME, text, sort, limit and cursor"
                    )));
                };
                // The value as a JSON string, and as JSON itself when it is a number,
                // a boolean or null (`trait.age=42`, `trait.vip=true`).
                let mut texts = vec![Value::String(value.clone()).to_string()];
                if let Ok(parsed) = serde_json::from_str::<Value>(value)
                    && !parsed.is_string()
                    && !parsed.is_object()
                    && !parsed.is_array()
                {
                    let canonical = parsed.to_string();
                    if value.trim() != canonical {
                        texts.push(value.trim().to_owned());
                    }
                    texts.push(canonical);
                }
                search.traits.push((name.to_owned(), texts));
            }
        }
    }
    Ok(search)
}

/// One page of profiles, newest (or oldest) last-seen first, each with its
/// identifiers and trait values.
fn list_profiles(
    state: &AppState,
    search: &tessera_store::profiles::ProfileSearch,
) -> Result<Value, ApiError> {
    profiles_page(state.profiles.as_ref(), search).map_err(ApiError::internal)
}

/// The answer of the profile listing for `search`: `{"profiles": […],
/// "nextCursor": …}` (also what `tessera profiles … --json` prints).
pub fn profiles_page(
    store: &dyn tessera_store::profiles::ProfileStore,
    search: &tessera_store::profiles::ProfileSearch,
) -> Result<Value, tessera_store::StoreError> {
    let page = store.search(search)?;
    let mut profiles = Vec::with_capacity(page.profiles.len());
    for summary in &page.profiles {
        let identities: Vec<Value> = store
            .identities(summary.id)?
            .into_iter()
            .map(|l| json!({"type": l.id_type, "value": l.value}))
            .collect();
        let traits: Map<String, Value> = store
            .traits(summary.id)?
            .into_iter()
            .map(|t| {
                let value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
                (t.name, value)
            })
            .collect();
        profiles.push(json!({
            "id": summary.id,
            "firstSeen": format_millis(summary.first_seen_ms),
            "lastSeen": format_millis(summary.last_seen_ms),
            "eventCount": summary.event_count,
            "identities": identities,
            "traits": traits,
        }));
    }
    let next = page.next.map(|(t, id)| format!("{t}_{id}"));
    Ok(json!({"profiles": profiles, "nextCursor": next}))
}

fn parse_profile_id(text: &str) -> Result<ProfileId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "a profile id is a number; to look up by identifier use /api/v1/profiles?identifier=type:value",
        )
    })
}

async fn profile_detail(
    State(state): State<AppState>,
    _: ProfileReader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_profile_id(&id)?;
    profile_json_blocking(state, id).await.map(Json)
}

/// The full profile: traits with provenance, identities, merges, groups.
/// [`profile_json`] off the async workers: computed traits wait for the audience
/// index, which a batch computation may hold for a while.
async fn profile_json_blocking(state: AppState, id: ProfileId) -> Result<Value, ApiError> {
    tokio::task::spawn_blocking(move || profile_json(&state, id))
        .await
        .map_err(ApiError::internal)?
}

fn profile_json(state: &AppState, id: ProfileId) -> Result<Value, ApiError> {
    let summary = canonical_summary(state, id)?;
    let sources = source_ids(state)?;
    let source = |key: i64| sources.get(&key).cloned();
    let traits: Map<String, Value> = state
        .profiles
        .traits(summary.id)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|t| {
            let value: Value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
            (
                t.name,
                json!({
                    "value": value,
                    "sourceId": source(t.source_key),
                    "messageId": t.message_id,
                    "timestamp": format_millis(t.timestamp_ms),
                }),
            )
        })
        .collect();
    let identities: Vec<Value> = state
        .profiles
        .identities(summary.id)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|l| {
            json!({
                "type": l.id_type, "value": l.value, "firstSeen": format_millis(l.first_seen_ms),
                "sourceId": source(l.source_key), "messageId": l.message_id,
            })
        })
        .collect();
    let merges: Vec<Value> = state
        .profiles
        .merges(summary.id)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|m| {
            json!({
                "merged": m.loser, "rule": m.rule, "messageId": m.message_id,
                "timestamp": format_millis(m.timestamp_ms),
            })
        })
        .collect();
    let groups: Vec<Value> = state
        .profiles
        .groups(summary.id)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|g| {
            json!({
                "groupId": g.group_id,
                "traits": serde_json::from_str::<Value>(&g.traits_json).unwrap_or(Value::Null),
                "timestamp": format_millis(g.timestamp_ms),
            })
        })
        .collect();
    let audiences: Vec<Value> = state
        .audiences
        .memberships(summary.id)
        .map_err(ApiError::from)?
        .into_iter()
        .map(|m| json!({"key": m.audience, "since": format_millis(m.since_ms)}))
        .collect();
    let consent =
        tessera_runtime::privacy::consent_json(state.profiles.as_ref(), summary.id, &|key| {
            json!(source(key))
        })
        .map_err(ApiError::internal)?;
    Ok(json!({
        "id": summary.id,
        "requestedId": (id != summary.id).then_some(id),
        // Null until the audience index is built after start (not "no values").
        "computedTraits": state
            .audiences
            .is_ready()
            .then(|| state.audiences.computed_values(summary.id)),
        "audiences": audiences,
        "consent": consent,
        "firstSeen": format_millis(summary.first_seen_ms),
        "lastSeen": format_millis(summary.last_seen_ms),
        "eventCount": summary.event_count,
        "traits": traits,
        "identities": identities,
        "merges": merges,
        "groups": groups,
    }))
}

async fn timeline(
    State(state): State<AppState>,
    _: ProfileReader,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (query, limit) = page_query(query, 50, 500)?;
    let summary = canonical_summary(&state, parse_profile_id(&id)?)?;
    let EventsPage { events, next } = events_page(&state, summary.id, query.before, limit)?;
    let sources = source_ids(&state)?;
    let items: Vec<Value> = events
        .into_iter()
        .map(|(source_key, message)| json!({"sourceId": sources.get(&source_key), "message": message}))
        .collect();
    Ok(Json(
        json!({"profileId": summary.id, "events": items, "nextBefore": next}),
    ))
}

async fn get_rules(State(state): State<AppState>, _: Admin) -> Json<Value> {
    Json(serde_json::to_value(state.processor.rules()).unwrap_or(Value::Null))
}

async fn put_rules(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let rules: IdentityRules = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("identity rules: {e} (GET /api/v1/identity/rules shows the shape)"),
        )
    })?;
    let before = serde_json::to_value(state.processor.rules()).unwrap_or(Value::Null);
    state.processor.set_rules(rules).map_err(ApiError::from)?;
    let after = serde_json::to_value(state.processor.rules()).unwrap_or(Value::Null);
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "identity.rules.update",
        "identity_rules",
        Some(&before),
        Some(&after),
    );
    Ok(Json(after))
}

#[derive(Deserialize)]
struct UnlinkRequest {
    r#type: String,
    value: String,
}

async fn unlink(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: UnlinkRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send {\"type\": \"email\", \"value\": \"shared@example.com\"}",
        )
    })?;
    let identifier = parse_identifier(&state, &format!("{}:{}", request.r#type, request.value))?;
    // The audit log names the identifier by type and a hash: it holds no PII.
    let audit_target = format!(
        "{}:salted-sha256:{}",
        identifier.id_type,
        state.privacy.hash(&identifier)
    );
    let processor = std::sync::Arc::clone(&state.processor);
    let engine = std::sync::Arc::clone(&state.audiences);
    let before = state
        .profiles
        .find(&identifier.id_type, &identifier.value)
        .map_err(ApiError::internal)?;
    let profiles = tokio::task::spawn_blocking(move || {
        let owners = processor.unlink(&identifier)?;
        // The audience index follows the rebuilt profiles.
        let mut reload: Vec<ProfileId> = owners.clone();
        reload.extend(before);
        if let Err(error) = engine.reload_profiles(&reload) {
            tracing::error!(%error, "audience index could not reload unlinked profiles");
        }
        Ok::<_, ProcessorError>(owners)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "identity.unlink",
        &audit_target,
        None,
        Some(&json!({"profiles": profiles})),
    );
    Ok(Json(json!({"profiles": profiles})))
}

async fn conflicts(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (_, limit) = page_query(query, 100, 1_000)?;
    let items: Vec<Value> = state
        .profiles
        .conflicts(limit)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|c| {
            json!({
                "seq": c.seq, "messageId": c.message_id, "profileId": c.profile_id,
                "droppedType": c.dropped_type, "detail": c.detail,
            })
        })
        .collect();
    Ok(Json(json!({"conflicts": items})))
}

#[derive(Deserialize)]
struct SuggestionsQuery {
    threshold: Option<f64>,
    limit: Option<usize>,
}

async fn suggestions(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<SuggestionsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "query parameters: threshold (a number), limit (1 to 1000)",
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"limit\" must be from 1 to 1000",
        ));
    }
    if query.threshold.is_some_and(|t| !t.is_finite()) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "\"threshold\" must be a finite number (a match weight, e.g. 12.5)",
        ));
    }
    let profiles = std::sync::Arc::clone(&state.profiles);
    let found = tokio::task::spawn_blocking(move || {
        suggest_merges(profiles.as_ref(), query.threshold, limit)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)?;
    let items: Vec<Value> = found
        .into_iter()
        .map(|s| {
            json!({
                "profiles": [s.left, s.right],
                "weight": s.explanation.weight,
                "probability": s.explanation.probability,
                "mergeable": s.mergeable,
                "fields": s.explanation.fields,
            })
        })
        .collect();
    Ok(Json(json!({"suggestions": items})))
}

#[derive(Deserialize)]
struct MergeRequest {
    profiles: [ProfileId; 2],
    reason: Option<String>,
}

async fn merge(
    State(state): State<AppState>,
    admin: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: MergeRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send {\"profiles\": [123, 456], \"reason\": \"same person\"}",
        )
    })?;
    let [left, right] = request.profiles;
    let event = merge_message(
        &state.processor.compiled_rules(),
        state.profiles.as_ref(),
        left,
        right,
        request.reason.as_deref().unwrap_or("merged by an operator"),
        INTERNAL_SOURCE_KEY,
        state.clock.now().timestamp_millis(),
    )
    .map_err(ApiError::from)?;
    let message_id = event.message_id.clone();
    let _screened = state.privacy.gate.read().await;
    if state
        .privacy
        .carries_erased(&state.processor.compiled_rules(), &event.payload)
    {
        return Err(crate::privacy_api::erased_error());
    }
    state
        .committer
        .append(tessera_store::AppendBatch {
            events: vec![event],
            rejections: vec![],
        })
        .await
        .map_err(ApiError::from)?;
    record_audit(
        state.catalog.as_ref(),
        &admin.actor,
        "identity.merge",
        &format!("{left}+{right}"),
        None,
        Some(
            &json!({"messageId": message_id, "profiles": [left, right], "reason": request.reason}),
        ),
    );
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"messageId": message_id, "profiles": [left, right]})),
    )
        .into_response())
}
