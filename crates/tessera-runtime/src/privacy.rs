//! Privacy requests: access exports, erasures, and the suppression of erased
//! identifiers — shared by the HTTP API and the CLI.
//!
//! - An **export** (GDPR art. 15) reads everything held about the person who owns
//!   an identifier into one JSON document: identities, traits with provenance,
//!   consent history, events, audience memberships and their history, groups,
//!   merges.
//! - An **erasure** (GDPR art. 17) is queued in the catalog and carried out by the
//!   processor thread once it has applied the whole log (or by the CLI when no
//!   server runs): the identifiers are suppressed first, then the person's events
//!   are deleted from the log and their identifiers removed from other people's
//!   events, their merged profile is deleted from every store, and the write-ahead
//!   files are truncated so no file keeps the bytes. The request keeps only a
//!   salted hash of the identifier once it completed.
//! - **Suppression**: new messages carrying an erased identifier (compared by salted
//!   hash) are dropped before they are stored, or stored anonymized, per
//!   `[privacy] suppressed_events`.

use crate::audit::record_audit;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tessera_audience::engine::AudienceEngine;
use tessera_core::{ErrorCode, UserError, ids};
use tessera_identity::identifiers::{
    Identifier, extract, normalize_value, raw_texts_of, redact_identifiers,
};
use tessera_identity::processor::{ErasureOutcome, ErasurePlan, Processor, ProcessorError};
use tessera_identity::rules::CompiledRules;
use tessera_store::activation::{ActivationStore, DeliveryFilter};
use tessera_store::audiences::AudienceStore;
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{
    Catalog, EventLog, PrivacyRequest, PrivacyRequestKind, StoreError, StoreResult,
};

/// Events read per page while exporting.
const EXPORT_PAGE: usize = 1_000;

/// What happens to a new message that carries an erased identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuppressionMode {
    /// Not stored (the sender still gets a success answer, so it does not retry).
    #[default]
    Drop,
    /// `track`, `page` and `screen` are stored without any identifier, trait or
    /// context beyond the library and page, under a fresh random `anonymousId`
    /// (they still count in aggregate analytics); other types are dropped.
    Anonymize,
}

/// The `[privacy]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyConfig {
    /// Purposes the consent API accepts (lowercase).
    pub purposes: Vec<String>,
    /// What happens to new messages carrying an erased identifier.
    pub suppressed_events: SuppressionMode,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            purposes: tessera_core::consent::DEFAULT_PURPOSES
                .iter()
                .map(|p| (*p).to_string())
                .collect(),
            suppressed_events: SuppressionMode::Drop,
        }
    }
}

/// What screening a message decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Nothing erased in it.
    Keep,
    /// Carries an erased identifier: do not store it.
    Drop,
    /// Carries an erased identifier: store this anonymized message instead.
    Anonymized(Map<String, Value>),
}

/// Suppression of erased identifiers and the configuration of privacy features.
pub struct Privacy {
    catalog: Arc<dyn Catalog>,
    config: PrivacyConfig,
    salt: String,
    hashes: RwLock<HashSet<String>>,
    /// Held (shared) by each ingest request from its screening until its append
    /// returned; an erasure takes it exclusively to add suppressions, so once that
    /// returns no message screened before is still on its way to the log.
    pub gate: tokio::sync::RwLock<()>,
    woken: std::sync::atomic::AtomicBool,
}

impl Privacy {
    /// Loads (or creates) the installation's salt and the suppression hashes.
    pub fn open(catalog: Arc<dyn Catalog>, config: PrivacyConfig) -> StoreResult<Self> {
        // The server, an import and the CLI may start together on a fresh directory:
        // whoever stores the salt first, everyone uses that one.
        let salt = match catalog.setting(tessera_store::keys::PRIVACY_SUPPRESSION_SALT)? {
            Some(salt) => salt,
            None => catalog.setting_or_insert(
                tessera_store::keys::PRIVACY_SUPPRESSION_SALT,
                &ids::new_salt(),
            )?,
        };
        let hashes = catalog.suppressions()?.into_iter().collect();
        Ok(Self {
            catalog,
            config,
            salt,
            hashes: RwLock::new(hashes),
            gate: tokio::sync::RwLock::new(()),
            woken: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Tells the processor thread a request is waiting (it also looks every second,
    /// for requests the CLI queued).
    pub fn wake(&self) {
        self.woken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Self::wake`] was called since the last time this was asked.
    pub fn take_wake(&self) -> bool {
        self.woken.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The configuration.
    pub fn config(&self) -> &PrivacyConfig {
        &self.config
    }

    /// The salted hash an identifier is kept as.
    pub fn hash(&self, identifier: &Identifier) -> String {
        ids::salted_hash(&self.salt, &identifier.to_string())
    }

    /// Whether any identifier is suppressed (when not, screening is skipped).
    pub fn is_suppressing(&self) -> bool {
        self.hashes.read().map(|h| !h.is_empty()).unwrap_or(true)
    }

    fn is_suppressed(&self, identifier: &Identifier) -> bool {
        let hash = self.hash(identifier);
        self.hashes
            .read()
            .map(|h| h.contains(&hash))
            .unwrap_or(false)
    }

    /// Decides what to do with a new message.
    pub fn screen(&self, rules: &CompiledRules, message: &Map<String, Value>) -> Screened {
        let mut identifiers = extract(rules, message);
        if let Some(previous) = message
            .get("previousId")
            .and_then(tessera_identity::identifiers::scalar_text)
        {
            // An alias's previous id is a user or an anonymous id: both are checked,
            // normalized as those types are.
            for name in ["user_id", "anonymous_id"] {
                if let Some(kind) = rules.identifier_type(name)
                    && let Some(value) = normalize_value(rules, kind, &previous)
                {
                    identifiers.push(Identifier::new(name, value));
                }
            }
        }
        let erased: Vec<Identifier> = identifiers
            .into_iter()
            .filter(|i| self.is_suppressed(i))
            .collect();
        if erased.is_empty() {
            return Screened::Keep;
        }
        match (
            self.config.suppressed_events,
            message.get("type").and_then(Value::as_str),
        ) {
            (SuppressionMode::Anonymize, Some("track" | "page" | "screen")) => {
                Screened::Anonymized(anonymize(rules, message, &erased))
            }
            _ => Screened::Drop,
        }
    }

    /// Whether a message Tessera writes itself (consent, merge) carries an erased
    /// identifier. Call it holding [`Self::gate`] (shared) until the append returned.
    pub fn carries_erased(&self, rules: &CompiledRules, payload: &str) -> bool {
        if !self.is_suppressing() {
            return false;
        }
        match serde_json::from_str::<Value>(payload) {
            Ok(Value::Object(message)) => self.screen(rules, &message) != Screened::Keep,
            _ => false,
        }
    }

    /// Re-reads the suppression hashes (another process may have added some).
    pub fn refresh(&self) -> StoreResult<()> {
        let hashes: HashSet<String> = self.catalog.suppressions()?.into_iter().collect();
        if let Ok(mut set) = self.hashes.write() {
            *set = hashes;
        }
        Ok(())
    }

    /// Suppresses identifiers from now on (kept in the catalog as salted hashes).
    /// Blocks until no ingest request screened before is still being appended.
    pub fn suppress(&self, identifiers: &[Identifier], request_id: &str) -> StoreResult<()> {
        let hashes: Vec<String> = identifiers.iter().map(|i| self.hash(i)).collect();
        self.catalog.add_suppressions(
            &hashes,
            request_id,
            chrono::Utc::now().timestamp_millis(),
        )?;
        let _exclusive = self.gate.blocking_write();
        if let Ok(mut set) = self.hashes.write() {
            set.extend(hashes);
        }
        Ok(())
    }
}

/// A stored message reduced to what carries no identity.
fn anonymize(
    rules: &CompiledRules,
    message: &Map<String, Value>,
    erased: &[Identifier],
) -> Map<String, Value> {
    let mut out = Map::new();
    for key in [
        "type",
        "event",
        "name",
        "category",
        "properties",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "messageId",
    ] {
        if let Some(value) = message.get(key) {
            out.insert(key.to_string(), value.clone());
        }
    }
    let mut context = Map::new();
    if let Some(Value::Object(original)) = message.get("context") {
        if let Some(library) = original.get("library") {
            context.insert("library".into(), library.clone());
        }
        // The page's path and title only: URLs, search strings and referrers often
        // carry an email or a token in their query.
        if let Some(Value::Object(page)) = original.get("page") {
            let kept: Map<String, Value> = page
                .iter()
                .filter(|(k, _)| *k == "path" || *k == "title")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            context.insert("page".into(), Value::Object(kept));
        }
    }
    out.insert("context".into(), Value::Object(context));
    // Identifier values may also sit in properties or the page (a URL parameter).
    let mut needles: Vec<String> = raw_texts_of(rules, message, erased)
        .into_iter()
        .map(|raw| raw.trim().to_ascii_lowercase())
        .collect();
    needles.extend(erased.iter().map(|i| i.value.to_ascii_lowercase()));
    tessera_identity::erasure::redact(&mut out, &needles);
    out.insert(
        "anonymousId".into(),
        Value::String(format!("anonymized-{}", ids::new_message_id())),
    );
    out
}

/// Parses `type:value` with a configured identifier type and normalizes the value
/// the way the processor does.
pub fn parse_identifier(rules: &CompiledRules, text: &str) -> Result<Identifier, UserError> {
    let types = || {
        rules
            .types
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((id_type, raw)) = text.split_once(':') else {
        return Err(UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "give the identifier as type:value, e.g. email:jane@example.com (types: {})",
                types()
            ),
        ));
    };
    let Some(kind) = rules.identifier_type(id_type.trim()) else {
        return Err(UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "{:?} is not an identifier type; the types are {}",
                id_type.trim(),
                types()
            ),
        ));
    };
    let value = normalize_value(rules, kind, raw).ok_or_else(|| {
        UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "the value is not a valid {} (after normalization it is empty, blocked or malformed)",
                kind.name
            ),
        )
    })?;
    Ok(Identifier::new(kind.name.clone(), value))
}

/// The stores a privacy request reads and changes.
pub struct PrivacyStores<'a> {
    /// The event log.
    pub log: &'a dyn EventLog,
    /// Profiles.
    pub profiles: &'a dyn ProfileStore,
    /// Memberships and the change feed.
    pub audiences: &'a dyn AudienceStore,
    /// Sources, settings, requests, audit.
    pub catalog: &'a dyn Catalog,
    /// The outbox and journey runs.
    pub activation: &'a dyn ActivationStore,
}

fn format_millis(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

/// The access document of the person holding `identifier`; `None` when no profile
/// holds it. `computed` adds computed traits when the caller has them.
pub fn export_document(
    stores: &PrivacyStores<'_>,
    identifier: &Identifier,
    request_id: &str,
    computed: Option<&dyn Fn(ProfileId) -> Map<String, Value>>,
) -> StoreResult<Option<Value>> {
    let Some(profile) = stores
        .profiles
        .find(&identifier.id_type, &identifier.value)?
    else {
        return Ok(None);
    };
    let Some(summary) = stores.profiles.profile(profile)? else {
        return Ok(None);
    };
    let sources: HashMap<i64, (String, String)> = stores
        .catalog
        .list_sources()?
        .into_iter()
        .map(|s| (s.key, (s.id, s.name)))
        .collect();
    let source = |key: i64| match sources.get(&key) {
        Some((id, name)) => json!({"id": id, "name": name}),
        None => json!({"id": null, "name": "tessera"}),
    };
    let identities: Vec<Value> = stores
        .profiles
        .identities(profile)?
        .into_iter()
        .map(|l| {
            json!({"type": l.id_type, "value": l.value, "firstSeen": format_millis(l.first_seen_ms),
                   "source": source(l.source_key), "messageId": l.message_id})
        })
        .collect();
    let traits: Map<String, Value> = stores
        .profiles
        .traits(profile)?
        .into_iter()
        .map(|t| {
            let value: Value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
            let provenance = json!({"value": value, "source": source(t.source_key),
                "messageId": t.message_id, "timestamp": format_millis(t.timestamp_ms)});
            (t.name, provenance)
        })
        .collect();
    let consent = consent_json(stores.profiles, profile, &|key| source(key))?;
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let seqs = stores.profiles.event_seqs(profile, before, EXPORT_PAGE)?;
        let Some(last) = seqs.last().copied() else {
            break;
        };
        for event in stores.log.get(&seqs)? {
            let message: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
            events.push(json!({"seq": event.seq, "source": source(event.source_key),
                "receivedAt": format_millis(event.received_at_ms), "message": message}));
        }
        before = Some(last);
    }
    let memberships: Vec<Value> = stores
        .audiences
        .memberships(profile)?
        .into_iter()
        .map(|m| json!({"audience": m.audience, "since": format_millis(m.since_ms)}))
        .collect();
    let history: Vec<Value> = stores
        .audiences
        .profile_changes(profile)?
        .into_iter()
        .map(|c| {
            json!({"audience": c.change.audience,
                "event": if c.change.entered { "Audience Entered" } else { "Audience Exited" },
                "at": format_millis(c.change.at_ms), "reason": c.change.reason})
        })
        .collect();
    let groups: Vec<Value> = stores
        .profiles
        .groups(profile)?
        .into_iter()
        .map(|g| {
            json!({"groupId": g.group_id, "timestamp": format_millis(g.timestamp_ms),
                "traits": serde_json::from_str::<Value>(&g.traits_json).unwrap_or(Value::Null)})
        })
        .collect();
    let merges: Vec<Value> = stores
        .profiles
        .merges(profile)?
        .into_iter()
        .map(|m| {
            json!({"merged": m.loser, "rule": m.rule, "messageId": m.message_id,
                "timestamp": format_millis(m.timestamp_ms)})
        })
        .collect();
    let mut members = vec![profile];
    members.extend(stores.profiles.merged_members(profile)?);
    let mut journeys = Vec::new();
    let mut deliveries = Vec::new();
    for member in &members {
        journeys.extend(
            stores
                .activation
                .profile_runs(*member)?
                .iter()
                .map(tessera_activation::run_json),
        );
        let mut after = 0;
        loop {
            let page = stores.activation.deliveries(&DeliveryFilter {
                profile_id: Some(*member),
                after_id: after,
                limit: EXPORT_PAGE,
                ..DeliveryFilter::default()
            })?;
            let Some(last) = page.last().map(|d| d.id) else {
                break;
            };
            deliveries.extend(page.iter().map(|d| {
                json!({"destination": d.new.destination, "channel": d.new.channel,
                    "status": d.new.status.as_str(), "reason": d.new.reason,
                    "journey": d.new.journey, "attempts": d.attempts,
                    "createdAt": format_millis(d.created_ms),
                    "deliveredAt": d.delivered_ms.map(format_millis),
                    "payload": serde_json::from_str::<Value>(&d.new.payload).unwrap_or(Value::Null)})
            }));
            after = last;
        }
    }
    Ok(Some(json!({
        "requestId": request_id,
        "generatedAt": format_millis(chrono::Utc::now().timestamp_millis()),
        "subject": identifier.to_string(),
        "profile": {
            "id": profile,
            "mergedProfiles": stores.profiles.merged_members(profile)?,
            "firstSeen": format_millis(summary.first_seen_ms),
            "lastSeen": format_millis(summary.last_seen_ms),
            "eventCount": summary.event_count,
        },
        "identities": identities,
        "traits": traits,
        "computedTraits": computed.map(|f| f(profile)),
        "consent": consent,
        "audiences": {"current": memberships, "history": history},
        "groups": groups,
        "merges": merges,
        "events": events,
        "journeys": journeys,
        "deliveries": deliveries,
    })))
}

/// A profile's consent: the latest decision per purpose and the whole history.
pub fn consent_json(
    profiles: &dyn ProfileStore,
    profile: ProfileId,
    source: &dyn Fn(i64) -> Value,
) -> StoreResult<Value> {
    let history = profiles.consent(profile)?;
    let mut current = Map::new();
    for record in &history {
        current.insert(
            record.purpose.clone(),
            json!({"granted": record.granted, "timestamp": format_millis(record.timestamp_ms),
                "source": source(record.source_key), "messageId": record.message_id}),
        );
    }
    let history: Vec<Value> = history
        .into_iter()
        .map(|r| {
            json!({"purpose": r.purpose, "granted": r.granted,
                "timestamp": format_millis(r.timestamp_ms), "source": source(r.source_key),
                "messageId": r.message_id})
        })
        .collect();
    Ok(json!({"current": current, "history": history}))
}

/// Creates an erasure request for `identifier`; the processor carries it out.
pub fn request_erasure(
    privacy: &Privacy,
    identifier: &Identifier,
    actor: &str,
) -> StoreResult<PrivacyRequest> {
    let request = PrivacyRequest {
        id: ids::new_privacy_request_id(),
        kind: PrivacyRequestKind::Erasure,
        identifier: Some(identifier.to_string()),
        identifier_hash: privacy.hash(identifier),
        status: "pending".into(),
        actor: actor.to_string(),
        requested_at_ms: chrono::Utc::now().timestamp_millis(),
        completed_at_ms: None,
        result_json: None,
        plan_json: None,
    };
    privacy.catalog.create_privacy_request(&request)?;
    record_audit(
        privacy.catalog.as_ref(),
        actor,
        "privacy.erasure.request",
        &request.id,
        None,
        Some(
            &json!({"identifier": format!("{}:salted-sha256:{}", identifier.id_type, request.identifier_hash)}),
        ),
    );
    Ok(request)
}

/// Records a completed access export (request row and audit entry; a salted hash
/// of the identifier only).
pub fn record_export(
    privacy: &Privacy,
    identifier: &Identifier,
    actor: &str,
    request_id: &str,
    found: bool,
) -> StoreResult<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let hash = privacy.hash(identifier);
    privacy.catalog.create_privacy_request(&PrivacyRequest {
        id: request_id.to_string(),
        kind: PrivacyRequestKind::Export,
        identifier: None,
        identifier_hash: hash.clone(),
        status: "completed".into(),
        actor: actor.to_string(),
        requested_at_ms: now,
        completed_at_ms: Some(now),
        result_json: Some(json!({"found": found}).to_string()),
        plan_json: None,
    })?;
    record_audit(
        privacy.catalog.as_ref(),
        actor,
        "privacy.export",
        request_id,
        None,
        Some(
            &json!({"identifier": format!("{}:salted-sha256:{hash}", identifier.id_type), "found": found}),
        ),
    );
    Ok(())
}

/// The request as the API shows it.
pub fn request_json(request: &PrivacyRequest) -> Value {
    json!({
        "id": request.id,
        "kind": request.kind.as_str(),
        // `purging` (only the catalog's write-ahead file left) is still running.
        "status": if request.status == "purging" { "running" } else { request.status.as_str() },
        "requestedAt": format_millis(request.requested_at_ms),
        "completedAt": request.completed_at_ms.map(format_millis),
        "result": request.result_json.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
    })
}

/// Where erased profiles leave the audience state: the live engine (server) or
/// the store alone (CLI; the index is rebuilt when the server starts).
pub enum AudienceSide<'a> {
    /// The running engine: index, memberships and store.
    Engine(&'a AudienceEngine),
    /// Only the stored memberships and change feed.
    Store(&'a dyn AudienceStore),
}

/// Why an erasure could not complete (it stays open and is retried).
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The processor failed.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// The audience engine failed.
    #[error("{0}")]
    Audiences(String),
}

/// Rounds of "suppress what is known, then apply the log" before an erasure trusts
/// that it knows every identifier of the person.
const MAX_SETTLE_ROUNDS: usize = 5;

/// The live activation side of an erasure: the outbox, and the fan-out to pause.
pub struct ActivationSide<'a> {
    /// The outbox and journey runs.
    pub store: &'a dyn ActivationStore,
    /// Excludes fan-out rounds while held (`None` when no fan-out runs: the CLI).
    pub pause: Option<&'a std::sync::Mutex<()>>,
}

/// Carries out every open erasure request. `catch_up(seq)` applies the log at least
/// up to `seq` (so every event stored before the suppression is attributed).
/// Returns how many requests completed.
///
/// Each request: (1) suppress the identifiers known, apply the log up to what was
/// stored meanwhile, and repeat until no new identifier turns up; (2) keep the plan
/// (profiles, identifiers, events) with the request, so a retry after a crash erases
/// the whole person even though the profile is gone; (3) with fan-out paused, delete
/// the derived copies (outbox, journey runs, memberships, index), then the log and
/// the profiles; (4) clear the request's identifier and plan, truncate the catalog's
/// write-ahead file, and only then mark it completed.
pub fn run_open_erasures(
    processor: &Processor,
    privacy: &Privacy,
    audiences: &AudienceSide<'_>,
    activation: Option<&ActivationSide<'_>>,
    catch_up: &mut dyn FnMut(i64) -> Result<(), ErasureError>,
) -> Result<usize, ErasureError> {
    let mut completed = 0;
    for request in privacy.catalog.open_privacy_requests()? {
        if request.kind != PrivacyRequestKind::Erasure {
            continue;
        }
        if request.status == "purging" {
            // Everything but the catalog's write-ahead file was done.
            privacy.catalog.purge_deleted()?;
            privacy.catalog.update_privacy_request(
                &request.id,
                "completed",
                None,
                request.completed_at_ms,
            )?;
            completed += 1;
            continue;
        }
        let Some(text) = request.identifier.clone() else {
            continue;
        };
        let rules = processor.compiled_rules();
        let identifier = match parse_identifier(&rules, &text) {
            Ok(identifier) => identifier,
            Err(error) => {
                // Rules changed since it was accepted: it can never run.
                let result = json!({"error": error.message});
                privacy.catalog.update_privacy_request(
                    &request.id,
                    "failed",
                    Some(&result.to_string()),
                    Some(chrono::Utc::now().timestamp_millis()),
                )?;
                continue;
            }
        };
        privacy
            .catalog
            .update_privacy_request(&request.id, "running", None, None)?;

        // (1) + (2): settle the plan under suppression; a retry starts from the plan
        // of the earlier attempt.
        let mut plan: ErasurePlan = request
            .plan_json
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let mut suppressed: Vec<Identifier> = Vec::new();
        let mut wanted = vec![identifier.clone()];
        wanted.extend(plan.identifiers());
        for _ in 0..MAX_SETTLE_ROUNDS {
            let new: Vec<Identifier> = wanted
                .iter()
                .filter(|i| !suppressed.contains(i))
                .cloned()
                .collect();
            if new.is_empty() {
                break;
            }
            privacy.suppress(&new, &request.id)?;
            suppressed.extend(new);
            catch_up(processor_fence(processor)?)?;
            let fresh = processor.plan_erasure(&identifier)?;
            plan.merge(fresh);
            wanted = plan.identifiers();
        }
        privacy.suppress(&plan.identifiers(), &request.id)?;
        let plan_text =
            serde_json::to_string(&plan).map_err(|e| StoreError::Engine(e.to_string()))?;
        privacy.catalog.set_privacy_plan(&request.id, &plan_text)?;

        // (3) derived copies first, then the log and the profiles.
        let identifiers = plan.identifiers();
        let outcome = {
            let _paused = activation
                .and_then(|a| a.pause)
                .map(|lock| lock.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(side) = activation {
                let store = side.store;
                store.erase_profiles(&plan.profiles)?;
                store.erase_events(&plan.seqs)?;
                // Other people's queued deliveries that copied an identifier field.
                store.rewrite_payloads(
                    &plan.needles,
                    &mut |payload| {
                        let mut value: Value = serde_json::from_str(payload).ok()?;
                        let mut changed = false;
                        for key in ["body", "line"] {
                            if let Some(message) = value.get_mut(key).and_then(Value::as_object_mut)
                            {
                                changed |= redact_identifiers(&rules, message, &identifiers);
                            }
                        }
                        changed.then(|| value.to_string())
                    },
                    &mut |trigger| {
                        let mut value: Value = serde_json::from_str(trigger).ok()?;
                        let message = value.as_object_mut()?;
                        redact_identifiers(&rules, message, &identifiers).then(|| value.to_string())
                    },
                )?;
                store.purge_deleted()?;
            }
            match audiences {
                AudienceSide::Engine(engine) => engine
                    .erase_profiles(&plan.profiles)
                    .map_err(|e| ErasureError::Audiences(e.to_string()))?,
                AudienceSide::Store(store) => {
                    store.erase_profiles(&plan.profiles)?;
                    store.purge_deleted()?;
                }
            }
            processor.apply_erasure(&plan)?
        };
        if let AudienceSide::Engine(engine) = audiences
            && !outcome.rebuilt.is_empty()
        {
            engine
                .reload_profiles(&outcome.rebuilt)
                .map_err(|e| ErasureError::Audiences(e.to_string()))?;
        }

        // (4) the catalog last: identifier and plan cleared, then its WAL truncated.
        let result = outcome_json(&plan, &outcome);
        let now = chrono::Utc::now().timestamp_millis();
        privacy.catalog.update_privacy_request(
            &request.id,
            "purging",
            Some(&result.to_string()),
            Some(now),
        )?;
        record_audit(
            privacy.catalog.as_ref(),
            &request.actor,
            "privacy.erasure.complete",
            &request.id,
            None,
            Some(&result),
        );
        privacy.catalog.purge_deleted()?;
        privacy
            .catalog
            .update_privacy_request(&request.id, "completed", None, Some(now))?;
        tracing::info!(
            request = %request.id,
            profiles = plan.profiles.len(),
            events_deleted = outcome.events_deleted,
            events_redacted = outcome.events_redacted,
            "erasure completed"
        );
        completed += 1;
    }
    Ok(completed)
}

/// The log position the processor must reach: everything stored so far.
fn processor_fence(processor: &Processor) -> Result<i64, ErasureError> {
    Ok(processor.log_last_seq()?)
}

fn outcome_json(plan: &ErasurePlan, outcome: &ErasureOutcome) -> Value {
    let identifiers = plan.identifiers();
    let mut types: Vec<&str> = identifiers.iter().map(|i| i.id_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    json!({
        "profilesErased": plan.profiles.len(),
        "identifiersSuppressed": identifiers.len(),
        "identifierTypes": types,
        "eventsDeleted": plan.seqs.len(),
        "eventsRedacted": outcome.events_redacted,
        "profilesRebuilt": outcome.rebuilt.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_identity::rules::IdentityRules;

    fn rules() -> CompiledRules {
        IdentityRules::default()
            .compile()
            .unwrap_or_else(|e| panic!("default rules compile: {e}"))
    }

    #[test]
    fn identifiers_parse_and_normalize_like_the_processor() {
        let rules = rules();
        assert_eq!(
            parse_identifier(&rules, "email: Ada@Example.COM ").ok(),
            Some(Identifier::new("email", "ada@example.com"))
        );
        for bad in [
            "ada@example.com",
            "shoe:1",
            "email:not-an-email",
            "user_id:  ",
        ] {
            let error = parse_identifier(&rules, bad).err();
            assert_eq!(
                error.map(|e| e.code),
                Some(ErrorCode::InvalidIdentifier),
                "{bad}"
            );
        }
    }
}
