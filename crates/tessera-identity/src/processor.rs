//! The processor: reads the event log in order and folds each event into the
//! derived profile state — identity graph, traits with provenance, timeline, groups.
//!
//! Invariants:
//! - Each chunk of events is applied in one transaction together with the checkpoint,
//!   so after a crash the processor resumes exactly where the last commit ended: no
//!   event is applied twice or skipped.
//! - [`apply_event`] depends only on the event, the state and the rules — never on
//!   the wall clock — so `replay` (reset, then process the whole log) rebuilds the
//!   same profiles, ids included (a profile's id is the `seq` of its first event).

use crate::identifiers::{Identifier, extract, raw_texts_of, redact_identifiers, scalar_text};
use crate::resolution::{Target, resolve};
use crate::rules::{CompiledRules, IdentityRules};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use tessera_core::time::parse_timestamp;
use tessera_core::{ErrorCode, UserError};
use tessera_store::profiles::{
    ConflictRecord, ConsentRecord, GroupMembership, IdentityLink, MergeRecord, ProfileId,
    ProfileStore, ProfileTxn, StoredTrait,
};
use tessera_store::{
    Catalog, EventFilter, EventLog, RewrittenEvent, StoreError, StoreResult, StoredEvent,
};

/// Rules plus the operator's unlinked identifiers: what [`apply_event`] needs.
#[derive(Debug, Clone)]
pub struct ProcessingRules {
    /// Compiled identity rules.
    pub rules: CompiledRules,
    /// Identifiers that must not link anything.
    pub unlinked: HashSet<Identifier>,
    /// Source names by source key (for per-trait source priority).
    pub source_names: HashMap<i64, String>,
    /// The catalog settings these were loaded from, to notice changes.
    pub stored_text: (Option<String>, Option<String>),
}

/// Applies one event to the profile state.
pub fn apply_event(
    rules: &ProcessingRules,
    txn: &mut dyn ProfileTxn,
    event: &StoredEvent,
) -> StoreResult<Option<ProfileId>> {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&event.payload) else {
        tracing::warn!(
            seq = event.seq,
            "stored event is not a JSON object; skipped"
        );
        return Ok(None);
    };
    let message_id = message
        .get("messageId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let timestamp_ms = message
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .map_or(event.received_at_ms, |t| t.timestamp_millis());
    let message_type = message.get("type").and_then(Value::as_str).unwrap_or("");

    let mut identifiers = extract(&rules.rules, &message);
    if message_type == "alias"
        && let Some(previous) = previous_id(rules, txn, &message)?
        && !identifiers.contains(&previous)
    {
        identifiers.push(previous);
    }
    identifiers.retain(|identifier| !rules.unlinked.contains(identifier));
    let priority = |identifier: &Identifier| {
        rules
            .rules
            .identifier_type(&identifier.id_type)
            .map_or(u32::MAX, |t| t.priority)
    };
    identifiers.sort_by_key(|identifier| priority(identifier));

    let resolution = resolve(&rules.rules, txn, identifiers)?;
    let profile = match resolution.target {
        Target::Unidentified => return Ok(None),
        Target::Existing(profile) => profile,
        Target::New => {
            txn.create_profile(event.seq, timestamp_ms)?;
            event.seq
        }
    };
    for (loser, shared_types) in &resolution.merge {
        for loser_trait in txn.traits(*loser)? {
            set_trait_if_wins(rules, txn, profile, loser_trait)?;
        }
        txn.merge(&MergeRecord {
            winner: profile,
            loser: *loser,
            seq: event.seq,
            message_id: message_id.clone(),
            rule: format!("shared identifier {}", shared_types.join(", ")),
            timestamp_ms,
        })?;
    }
    for identifier in &resolution.link {
        txn.link(&IdentityLink {
            id_type: identifier.id_type.clone(),
            value: identifier.value.clone(),
            profile_id: profile,
            first_seen_ms: timestamp_ms,
            source_key: event.source_key,
            message_id: message_id.clone(),
        })?;
    }
    for dropped in &resolution.dropped {
        txn.record_conflict(&ConflictRecord {
            seq: event.seq,
            message_id: message_id.clone(),
            profile_id: Some(profile),
            dropped_type: dropped.identifier.id_type.clone(),
            detail: format!(
                "{} not linked: {}",
                dropped.identifier.id_type, dropped.reason
            ),
        })?;
    }
    txn.add_event(profile, event.seq, timestamp_ms)?;

    let provenance = |name: &str, value: &Value| StoredTrait {
        name: name.to_string(),
        value_json: value.to_string(),
        source_key: event.source_key,
        message_id: message_id.clone(),
        timestamp_ms,
        seq: event.seq,
    };
    let mut trait_sets: Vec<&Map<String, Value>> = Vec::new();
    if let Some(Value::Object(context_traits)) =
        message.get("context").and_then(|c| c.get("traits"))
    {
        trait_sets.push(context_traits);
    }
    if message_type == "identify"
        && let Some(Value::Object(traits)) = message.get("traits")
    {
        trait_sets.push(traits);
    }
    for traits in trait_sets {
        for (name, value) in traits {
            set_trait_if_wins(rules, txn, profile, provenance(name, value))?;
        }
    }
    for (purpose, granted) in tessera_core::consent::decisions(&message) {
        txn.record_consent(
            profile,
            &ConsentRecord {
                purpose,
                granted,
                source_key: event.source_key,
                message_id: message_id.clone(),
                timestamp_ms,
                seq: event.seq,
            },
        )?;
    }
    if message_type == "group"
        && let Some(group_id) = message.get("groupId").and_then(scalar_text)
    {
        let traits = message
            .get("traits")
            .filter(|t| t.is_object())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        txn.set_group(
            profile,
            &GroupMembership {
                group_id,
                traits_json: traits.to_string(),
                timestamp_ms,
            },
        )?;
    }
    Ok(Some(profile))
}

/// The identifier an alias's `previousId` names: a known user id, else an anonymous id.
fn previous_id(
    rules: &ProcessingRules,
    txn: &mut dyn ProfileTxn,
    message: &Map<String, Value>,
) -> StoreResult<Option<Identifier>> {
    let Some(raw) = message.get("previousId").and_then(scalar_text) else {
        return Ok(None);
    };
    for type_name in ["user_id", "anonymous_id"] {
        let Some(id_type) = rules.rules.identifier_type(type_name) else {
            continue;
        };
        let Some(value) = crate::identifiers::normalize_value(&rules.rules, id_type, &raw) else {
            continue;
        };
        if type_name == "anonymous_id" || txn.profile_of(type_name, &value)?.is_some() {
            return Ok(Some(Identifier::new(type_name, value)));
        }
    }
    Ok(None)
}

/// Sets a trait when the candidate beats the stored value: a source ranked higher for
/// this trait wins; otherwise the later event (time, then log position) wins.
fn set_trait_if_wins(
    rules: &ProcessingRules,
    txn: &mut dyn ProfileTxn,
    profile: ProfileId,
    candidate: StoredTrait,
) -> StoreResult<()> {
    let current = txn.trait_value(profile, &candidate.name)?;
    let wins = match &current {
        None => true,
        Some(current) => {
            let rank = |source_key: i64| {
                rules
                    .source_names
                    .get(&source_key)
                    .and_then(|name| rules.rules.source_rank(&candidate.name, name))
            };
            match (rank(candidate.source_key), rank(current.source_key)) {
                (Some(new), Some(old)) if new != old => new < old,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                _ => (candidate.timestamp_ms, candidate.seq) >= (current.timestamp_ms, current.seq),
            }
        }
    };
    if wins {
        txn.set_trait(profile, &candidate)?;
    }
    Ok(())
}

/// What one chunk changed.
#[derive(Debug, Default)]
pub struct ChunkReport {
    /// Events applied (attributed or not).
    pub applied: usize,
    /// Each attributed event with the profile it went to.
    pub events: Vec<(ProfileId, StoredEvent)>,
    /// Merges (winner, loser), in order.
    pub merges: Vec<(ProfileId, ProfileId)>,
    /// Events of the chunk with no identifier (attributed to no profile).
    pub unattributed: Vec<StoredEvent>,
    /// The checkpoint the chunk started from: its events are the log's `seq`s in
    /// `(after_seq, through_seq]`.
    pub after_seq: i64,
    /// The checkpoint after the chunk.
    pub through_seq: i64,
}

/// Passes writes through and notes merges.
struct RecordingTxn<'a, 'b> {
    inner: &'a mut dyn ProfileTxn,
    merges: &'b mut Vec<(ProfileId, ProfileId)>,
}

impl ProfileTxn for RecordingTxn<'_, '_> {
    fn profile_of(&mut self, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>> {
        self.inner.profile_of(id_type, value)
    }
    fn identifier_counts(&mut self, profile: ProfileId) -> StoreResult<Vec<(String, u32)>> {
        self.inner.identifier_counts(profile)
    }
    fn summary(
        &mut self,
        profile: ProfileId,
    ) -> StoreResult<Option<tessera_store::profiles::ProfileSummary>> {
        self.inner.summary(profile)
    }
    fn create_profile(&mut self, profile: ProfileId, seen_ms: i64) -> StoreResult<()> {
        self.inner.create_profile(profile, seen_ms)
    }
    fn link(&mut self, link: &IdentityLink) -> StoreResult<()> {
        self.inner.link(link)
    }
    fn merge(&mut self, record: &MergeRecord) -> StoreResult<()> {
        self.merges.push((record.winner, record.loser));
        self.inner.merge(record)?;
        // Tests: the merge is written in the transaction, not committed.
        tessera_store::fault::crash_point(tessera_store::fault::points::MERGE_BEFORE_COMMIT);
        Ok(())
    }
    fn traits(&mut self, profile: ProfileId) -> StoreResult<Vec<StoredTrait>> {
        self.inner.traits(profile)
    }
    fn trait_value(&mut self, profile: ProfileId, name: &str) -> StoreResult<Option<StoredTrait>> {
        self.inner.trait_value(profile, name)
    }
    fn set_trait(&mut self, profile: ProfileId, value: &StoredTrait) -> StoreResult<()> {
        self.inner.set_trait(profile, value)
    }
    fn add_event(&mut self, profile: ProfileId, seq: i64, timestamp_ms: i64) -> StoreResult<()> {
        self.inner.add_event(profile, seq, timestamp_ms)
    }
    fn set_group(&mut self, profile: ProfileId, group: &GroupMembership) -> StoreResult<()> {
        self.inner.set_group(profile, group)
    }
    fn record_conflict(&mut self, conflict: &ConflictRecord) -> StoreResult<()> {
        self.inner.record_conflict(conflict)
    }
    fn record_consent(&mut self, profile: ProfileId, record: &ConsentRecord) -> StoreResult<()> {
        self.inner.record_consent(profile, record)
    }
}

/// Runs the processor over stores.
pub struct Processor {
    log: Arc<dyn EventLog>,
    profiles: Arc<dyn ProfileStore>,
    catalog: Arc<dyn Catalog>,
    rules: RwLock<Arc<ProcessingRules>>,
    /// One writer at a time: the background loop, replay and unlink share it.
    running: Mutex<()>,
}

/// Events applied per transaction.
pub const CHUNK_EVENTS: usize = 2_000;

impl Processor {
    /// A processor with the rules stored in the catalog (or the defaults).
    pub fn new(
        log: Arc<dyn EventLog>,
        profiles: Arc<dyn ProfileStore>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, ProcessorError> {
        let rules = load_rules(catalog.as_ref())?;
        Ok(Self {
            log,
            profiles,
            catalog,
            rules: RwLock::new(Arc::new(rules)),
            running: Mutex::new(()),
        })
    }

    /// Reloads the rules when another process (the CLI) changed them in the catalog.
    fn refresh_rules(&self) -> Result<(), ProcessorError> {
        let current = self.current_rules();
        let stored = (
            self.catalog.setting(tessera_store::keys::IDENTITY_RULES)?,
            self.catalog
                .setting(tessera_store::keys::IDENTITY_UNLINKED)?,
        );
        if stored != current.stored_text {
            let reloaded = load_rules(self.catalog.as_ref())?;
            if let Ok(mut slot) = self.rules.write() {
                *slot = Arc::new(reloaded);
            }
        }
        Ok(())
    }

    fn current_rules(&self) -> Arc<ProcessingRules> {
        self.rules
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    fn rules_with_sources(
        &self,
        events: &[StoredEvent],
    ) -> Result<Arc<ProcessingRules>, ProcessorError> {
        let rules = self.current_rules();
        // Tessera's own events (applied merges) have no source to look up.
        if events.iter().all(|e| {
            e.source_key == crate::suggestions::INTERNAL_SOURCE_KEY
                || rules.source_names.contains_key(&e.source_key)
        }) {
            return Ok(rules);
        }
        // A new source appeared: refresh the names once.
        let mut refreshed = (*rules).clone();
        refreshed.source_names = self
            .catalog
            .list_sources()?
            .into_iter()
            .map(|s| (s.key, s.name))
            .collect();
        let refreshed = Arc::new(refreshed);
        if let Ok(mut slot) = self.rules.write() {
            *slot = Arc::clone(&refreshed);
        }
        Ok(refreshed)
    }

    /// Applies the next chunk of at most `max_events`; returns how many were applied.
    pub fn run_chunk(&self, max_events: usize) -> Result<usize, ProcessorError> {
        Ok(self.run_chunk_reporting(max_events)?.applied)
    }

    /// Applies the next chunk of at most `max_events` and reports what changed, for
    /// the stages after identity (computed traits, audiences).
    pub fn run_chunk_reporting(&self, max_events: usize) -> Result<ChunkReport, ProcessorError> {
        let _guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let checkpoint = self.profiles.checkpoint()?;
        let mut events = Vec::new();
        self.log.scan(
            &EventFilter {
                after_seq: Some(checkpoint),
                limit: Some(max_events),
                ..EventFilter::default()
            },
            &mut |event| {
                events.push(event);
                Ok(())
            },
        )?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(ChunkReport::default());
        };
        self.refresh_rules()?;
        let rules = self.rules_with_sources(&events)?;
        let mut owners = Vec::with_capacity(events.len());
        let mut merges = Vec::new();
        let applied = self.profiles.apply(checkpoint, last, &mut |txn| {
            // A retried transaction starts over.
            owners.clear();
            merges.clear();
            let mut recording = RecordingTxn {
                inner: txn,
                merges: &mut merges,
            };
            for event in &events {
                owners.push(apply_event(&rules, &mut recording, event)?);
            }
            Ok(())
        })?;
        // Another process (a CLI replay, say) moved the checkpoint: start over from it.
        if !applied {
            return Ok(ChunkReport::default());
        }
        let applied = events.len();
        let mut attributed = Vec::with_capacity(events.len());
        let mut unattributed = Vec::new();
        for (owner, event) in owners.into_iter().zip(events) {
            match owner {
                Some(owner) => attributed.push((owner, event)),
                None => unattributed.push(event),
            }
        }
        Ok(ChunkReport {
            applied,
            events: attributed,
            merges,
            unattributed,
            after_seq: checkpoint,
            through_seq: last,
        })
    }

    /// Applies everything up to the end of the log; `progress(applied, target_seq)`
    /// is called after each chunk. Returns how many events were applied.
    pub fn catch_up(&self, progress: &mut dyn FnMut(u64, i64)) -> Result<u64, ProcessorError> {
        let target = self.log.last_seq()?;
        let mut applied = 0u64;
        loop {
            let n = self.run_chunk(CHUNK_EVENTS)?;
            applied += n as u64;
            progress(applied, target);
            if n == 0 {
                return Ok(applied);
            }
        }
    }

    /// Deletes all derived state and rebuilds it from the whole log.
    pub fn replay(&self, progress: &mut dyn FnMut(u64, i64)) -> Result<u64, ProcessorError> {
        {
            let _guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
            self.profiles.reset()?;
        }
        let mut chunks = 0u32;
        self.catch_up(&mut |applied, target| {
            chunks += 1;
            if chunks == 2 {
                // Tests: a chunk or two is committed, the rest of the log is not.
                tessera_store::fault::crash_point(tessera_store::fault::points::REPLAY_MIDWAY);
            }
            progress(applied, target);
        })
    }

    /// The canonical profile a message belongs to (its strongest identifier that
    /// resolves), as far as the processor has applied the log.
    pub fn resolve_owner(&self, message: &Map<String, Value>) -> StoreResult<Option<ProfileId>> {
        let rules = self.current_rules();
        let mut identifiers = extract(&rules.rules, message);
        identifiers.retain(|identifier| !rules.unlinked.contains(identifier));
        identifiers.sort_by_key(|identifier| {
            rules
                .rules
                .identifier_type(&identifier.id_type)
                .map_or(u32::MAX, |t| t.priority)
        });
        // A store failure is the caller's to retry, never "nobody owns it".
        for identifier in &identifiers {
            if let Some(profile) = self.profiles.find(&identifier.id_type, &identifier.value)? {
                return Ok(Some(profile));
            }
        }
        Ok(None)
    }

    /// The profile store it writes.
    pub fn profiles(&self) -> &dyn ProfileStore {
        self.profiles.as_ref()
    }

    /// Events in the log not yet applied.
    pub fn lag(&self) -> Result<i64, ProcessorError> {
        Ok((self.log.last_seq()? - self.profiles.checkpoint()?).max(0))
    }

    /// The compiled rules in force (to normalize identifiers the way the processor does).
    pub fn compiled_rules(&self) -> CompiledRules {
        self.current_rules().rules.clone()
    }

    /// The rules in force.
    pub fn rules(&self) -> IdentityRules {
        self.current_rules().rules.rules.clone()
    }

    /// Replaces the rules (they apply to events processed from now on).
    pub fn set_rules(&self, rules: IdentityRules) -> Result<(), ProcessorError> {
        let compiled = rules.compile()?;
        let text = serde_json::to_string(&rules).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.catalog
            .set_setting(tessera_store::keys::IDENTITY_RULES, &text)?;
        let mut next = (*self.current_rules()).clone();
        next.rules = compiled;
        next.stored_text.0 = Some(text);
        if let Ok(mut slot) = self.rules.write() {
            *slot = Arc::new(next);
        }
        Ok(())
    }

    /// Removes a wrong identifier link: the identifier will no longer link anything,
    /// and the profile that held it is rebuilt from its events, so its traits,
    /// timeline and merges follow. Returns the profiles that now hold those events.
    pub fn unlink(&self, identifier: &Identifier) -> Result<Vec<ProfileId>, ProcessorError> {
        let _guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let profile = self
            .profiles
            .find(&identifier.id_type, &identifier.value)?
            .ok_or_else(|| {
                ProcessorError::User(UserError::new(
                    ErrorCode::ProfileNotFound,
                    format!(
                        "no profile holds the {} identifier given",
                        identifier.id_type
                    ),
                ))
            })?;
        let mut next = (*self.current_rules()).clone();
        next.unlinked.insert(identifier.clone());
        let mut list: Vec<String> = next.unlinked.iter().map(ToString::to_string).collect();
        list.sort();
        let text = serde_json::to_string(&list).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.catalog
            .set_setting(tessera_store::keys::IDENTITY_UNLINKED, &text)?;
        next.stored_text.1 = Some(text);
        let next = Arc::new(next);
        if let Ok(mut slot) = self.rules.write() {
            *slot = Arc::clone(&next);
        }
        let mut owners = Vec::new();
        let log = Arc::clone(&self.log);
        self.profiles.rebuild(&[profile], &mut |txn, seqs| {
            for chunk in seqs.chunks(CHUNK_EVENTS) {
                for event in log.get(chunk)? {
                    if let Some(owner) = apply_event(&next, txn, &event)?
                        && !owners.contains(&owner)
                    {
                        owners.push(owner);
                    }
                }
            }
            Ok(())
        })?;
        owners.sort_unstable();
        Ok(owners)
    }
}

/// What an erasure will remove: worked out before anything is deleted, and kept
/// with the request, so a retry after a crash still knows the whole person.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasurePlan {
    /// The canonical profile and every profile merged into it.
    pub profiles: Vec<ProfileId>,
    /// The person's identifiers (`type:value`); the one asked for included.
    pub identifiers: Vec<String>,
    /// Their events in the log.
    pub seqs: Vec<i64>,
    /// Every spelling of the identifiers seen (lowercase), to find copies.
    pub needles: Vec<String>,
}

impl ErasurePlan {
    /// Adds what another plan found (a retry finds less than the first attempt).
    pub fn merge(&mut self, other: ErasurePlan) {
        fn union<T: Ord>(into: &mut Vec<T>, from: Vec<T>) {
            into.extend(from);
            into.sort();
            into.dedup();
        }
        union(&mut self.profiles, other.profiles);
        union(&mut self.identifiers, other.identifiers);
        union(&mut self.seqs, other.seqs);
        union(&mut self.needles, other.needles);
    }

    /// The identifiers, parsed.
    pub fn identifiers(&self) -> Vec<Identifier> {
        self.identifiers
            .iter()
            .filter_map(|text| text.split_once(':'))
            .map(|(t, v)| Identifier::new(t, v))
            .collect()
    }
}

/// What [`Processor::apply_erasure`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureOutcome {
    /// Events deleted from the log.
    pub events_deleted: u64,
    /// Other people's events from which the person's identifiers were removed.
    pub events_redacted: u64,
    /// Other profiles rebuilt because such an event of theirs changed.
    pub rebuilt: Vec<ProfileId>,
}

impl Processor {
    /// Works out what erasing the person holding `identifier` removes, without
    /// changing anything. Call it when the processor has applied the log (events
    /// not yet applied are not attributed to anyone).
    pub fn plan_erasure(&self, identifier: &Identifier) -> Result<ErasurePlan, ProcessorError> {
        let _guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_rules()?;
        let rules = self.current_rules();
        let mut identifiers = vec![identifier.clone()];
        let mut plan = ErasurePlan::default();
        if let Some(profile) = self.profiles.find(&identifier.id_type, &identifier.value)? {
            for link in self.profiles.identities(profile)? {
                let linked = Identifier::new(link.id_type, link.value);
                if !identifiers.contains(&linked) {
                    identifiers.push(linked);
                }
            }
            plan.profiles.push(profile);
            plan.profiles.extend(self.profiles.merged_members(profile)?);
            plan.seqs = self.profiles.event_seqs(profile, None, usize::MAX)?;
            plan.seqs.sort_unstable();
        }
        let mut needles: Vec<String> = identifiers
            .iter()
            .map(|i| i.value.to_ascii_lowercase())
            .collect();
        for chunk in plan.seqs.chunks(CHUNK_EVENTS) {
            for event in self.log.get(chunk)? {
                if let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&event.payload) {
                    needles.extend(
                        raw_texts_of(&rules.rules, &message, &identifiers)
                            .into_iter()
                            .map(|raw| raw.trim().to_ascii_lowercase()),
                    );
                }
            }
        }
        needles.retain(|n| !n.is_empty());
        needles.sort();
        needles.dedup();
        plan.needles = needles;
        plan.identifiers = identifiers.iter().map(ToString::to_string).collect();
        plan.identifiers.sort();
        plan.profiles.sort_unstable();
        Ok(plan)
    }

    /// Erases what a plan names: deletes the person's events from the log, removes
    /// their identifiers from the identifier fields of other people's events (and
    /// rebuilds those profiles), deletes their profiles from the profile store,
    /// drops them from the unlinked identifiers, and truncates the write-ahead
    /// files. Repeating it changes nothing more.
    pub fn apply_erasure(&self, plan: &ErasurePlan) -> Result<ErasureOutcome, ProcessorError> {
        let _guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_rules()?;
        let rules = self.current_rules();
        let identifiers = plan.identifiers();

        // Other people's events that name them: the identifier fields only (a value
        // such as "42" elsewhere in a message is someone's data, not this person).
        let own: HashSet<i64> = plan.seqs.iter().copied().collect();
        let others: Vec<i64> = self
            .log
            .find_containing(&plan.needles)?
            .into_iter()
            .filter(|seq| !own.contains(seq))
            .collect();
        let mut rewritten = Vec::new();
        for chunk in others.chunks(CHUNK_EVENTS) {
            for event in self.log.get(chunk)? {
                let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(&event.payload)
                else {
                    continue;
                };
                if redact_identifiers(&rules.rules, &mut message, &identifiers) {
                    rewritten.push(RewrittenEvent {
                        seq: event.seq,
                        payload: Value::Object(message.clone()).to_string(),
                    });
                }
            }
        }
        let rewritten_seqs: Vec<i64> = rewritten.iter().map(|e| e.seq).collect();
        let events_redacted = self.log.rewrite_events(&rewritten)?;
        let events_deleted = self.log.delete_events(&plan.seqs)?;
        // Stale copies of their rows (in pages' free space, freelist pages, the WAL)
        // go with a rewrite of the whole file.
        self.log.purge_deleted()?;
        // Tests: the events are gone, the profile is not; a restart re-runs the plan.
        tessera_store::fault::crash_point(tessera_store::fault::points::ERASURE_AFTER_EVENTS);

        let canonical: Vec<ProfileId> = plan
            .profiles
            .iter()
            .copied()
            .filter(|p| {
                self.profiles
                    .profile(*p)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.merged_into.is_none())
            })
            .collect();
        self.profiles.erase(&canonical)?;
        let mut owners = self.profiles.owners_of_events(&rewritten_seqs)?;
        owners.retain(|owner| !plan.profiles.contains(owner));
        let mut rebuilt = Vec::new();
        if !owners.is_empty() {
            let log = Arc::clone(&self.log);
            self.profiles.rebuild(&owners, &mut |txn, seqs| {
                for chunk in seqs.chunks(CHUNK_EVENTS) {
                    for event in log.get(chunk)? {
                        if let Some(owner) = apply_event(&rules, txn, &event)?
                            && !rebuilt.contains(&owner)
                        {
                            rebuilt.push(owner);
                        }
                    }
                }
                Ok(())
            })?;
            rebuilt.extend(owners);
            rebuilt.sort_unstable();
            rebuilt.dedup();
        }

        if identifiers.iter().any(|i| rules.unlinked.contains(i)) {
            let mut next = (*rules).clone();
            next.unlinked.retain(|i| !identifiers.contains(i));
            let mut list: Vec<String> = next.unlinked.iter().map(ToString::to_string).collect();
            list.sort();
            let text =
                serde_json::to_string(&list).map_err(|e| StoreError::Engine(e.to_string()))?;
            self.catalog
                .set_setting(tessera_store::keys::IDENTITY_UNLINKED, &text)?;
            next.stored_text.1 = Some(text);
            if let Ok(mut slot) = self.rules.write() {
                *slot = Arc::new(next);
            }
            self.catalog.purge_deleted()?;
        }
        self.profiles.purge_deleted()?;
        Ok(ErasureOutcome {
            events_deleted,
            events_redacted,
            rebuilt,
        })
    }

    /// The highest position in the log.
    pub fn log_last_seq(&self) -> Result<i64, ProcessorError> {
        Ok(self.log.last_seq()?)
    }

    /// The compiled rules in force, shared (no copy).
    pub fn rules_snapshot(&self) -> Arc<ProcessingRules> {
        self.current_rules()
    }
}

/// The identity rules stored in the catalog (or the defaults), compiled — for tools
/// that normalize identifiers without running a processor (import).
pub fn stored_rules(catalog: &dyn Catalog) -> Result<CompiledRules, ProcessorError> {
    Ok(load_rules(catalog)?.rules)
}

fn load_rules(catalog: &dyn Catalog) -> Result<ProcessingRules, ProcessorError> {
    let stored_text = (
        catalog.setting(tessera_store::keys::IDENTITY_RULES)?,
        catalog.setting(tessera_store::keys::IDENTITY_UNLINKED)?,
    );
    let rules: IdentityRules = match &stored_text.0 {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Engine(format!("stored identity rules are unreadable: {e}"))
        })?,
        None => IdentityRules::default(),
    };
    let unlinked: Vec<String> = match &stored_text.1 {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Engine(format!("stored unlinked identifiers are unreadable: {e}"))
        })?,
        None => Vec::new(),
    };
    Ok(ProcessingRules {
        rules: rules.compile()?,
        unlinked: unlinked
            .iter()
            .filter_map(|s| s.split_once(':'))
            .map(|(t, v)| Identifier::new(t, v))
            .collect(),
        source_names: catalog
            .list_sources()?
            .into_iter()
            .map(|s| (s.key, s.name))
            .collect(),
        stored_text,
    })
}

/// Why the processor could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The caller's input was wrong.
    #[error(transparent)]
    User(#[from] UserError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl tessera_core::CodedError for ProcessorError {
    fn code(&self) -> tessera_core::ErrorCode {
        match self {
            ProcessorError::User(user) => user.code,
            ProcessorError::Store(_) => tessera_core::ErrorCode::InternalError,
        }
    }

    fn user_message(&self) -> String {
        match self {
            ProcessorError::User(user) => user.message.clone(),
            ProcessorError::Store(store) => store.to_string(),
        }
    }
}
