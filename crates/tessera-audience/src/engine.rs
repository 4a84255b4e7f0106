//! The audience engine: definitions, the index, memberships and their changes.
//!
//! - Definitions (audiences, computed traits, RFM settings) are configuration in the
//!   catalog (`audience/<key>`, `computed_trait/<key>`, `rfm`), so the CLI and the
//!   server share them; the engine notices changes on its next tick.
//! - [`AudienceEngine::load`] builds the index from the profile store at start.
//! - [`AudienceEngine::apply`] folds the processor's changes into the index and
//!   re-evaluates the touched profiles' memberships at once (realtime); changes are
//!   written to the [`AudienceStore`] feed as `Audience Entered` / `Audience Exited`.
//! - [`AudienceEngine::tick`] runs batch work: new or edited audiences over every
//!   profile (with progress), and audiences whose conditions depend on time, which
//!   can change with no new event (windows expiring), on a schedule.
//!
//! Memberships only change through [`AudienceEngine::commit_memberships`], which
//! diffs against the current members, so repeating an evaluation announces nothing.

use crate::ast::{Condition, Test, TimeRef, Window};
use crate::batch::{Parallelism, evaluate};
use crate::bitset::Bitset;
use crate::computed::ComputedTrait;
use crate::eval::{Context, Plan};
use crate::index::{EventInput, ProfileIndex, ProfileInput, Slot};
use crate::language::{ParseError, parse_definition, print};
use crate::rfm::{RFM_TRAITS, RfmConfig, RfmModel};
use crate::scalar::to_json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use tessera_core::time::Clock;
use tessera_store::audiences::{AudienceStore, MembershipChange};
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{Catalog, EventLog, StoreError, StoredEvent};

/// A stored audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceDefinition {
    /// Its key (in URLs, conditions and the change feed).
    pub key: String,
    /// Its display name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The condition.
    pub condition: Condition,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Last edited (Unix ms).
    pub updated_at_ms: i64,
}

impl AudienceDefinition {
    /// The condition in the text form.
    pub fn text(&self) -> String {
        print(&self.condition)
    }
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The definition does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The definition is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// No such audience or computed trait.
    #[error("{0}")]
    NotFound(String),
    /// The key is taken.
    #[error("{0}")]
    Exists(String),
    /// An insight query is not acceptable.
    #[error(transparent)]
    Insight(#[from] crate::insights::InsightError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl tessera_core::CodedError for EngineError {
    fn code(&self) -> tessera_core::ErrorCode {
        use tessera_core::ErrorCode;
        match self {
            EngineError::Parse(_) | EngineError::Invalid(_) => ErrorCode::InvalidDefinition,
            EngineError::NotFound(_) => ErrorCode::AudienceNotFound,
            EngineError::Exists(_) => ErrorCode::AudienceExists,
            EngineError::Insight(e) => tessera_core::CodedError::code(e),
            EngineError::Store(_) => ErrorCode::InternalError,
        }
    }
}

/// Where an audience's batch computation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceStatus {
    /// `computing` (a batch computation is pending or running) or `ready`.
    pub state: &'static str,
    /// Profiles evaluated in the running computation.
    pub evaluated: u64,
    /// Profiles to evaluate.
    pub total: u64,
    /// Current members (in memory; the store agrees once `ready`).
    pub members: u64,
    /// When it was last fully computed (Unix ms).
    pub computed_at_ms: Option<i64>,
}

/// What the processor changed in one chunk.
#[derive(Debug, Clone, Default)]
pub struct ProfileChanges {
    /// Events applied, with the profile each was attributed to.
    pub events: Vec<(ProfileId, StoredEvent)>,
    /// Merges (winner, loser), in order.
    pub merges: Vec<(ProfileId, ProfileId)>,
}

/// An audience preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// Members now.
    pub count: u64,
    /// A few of them.
    pub sample: Vec<ProfileSample>,
}

/// A profile in a preview or a member list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSample {
    /// The profile id.
    pub profile_id: ProfileId,
    /// Its traits.
    pub traits: Map<String, Value>,
}

/// One row of a top-values answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    /// The group (the trait's value), when grouped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Value>,
    /// The property's value.
    pub value: Value,
    /// Matching events.
    pub events: u64,
    /// Distinct profiles.
    pub profiles: u64,
}

/// A "top values" question: which values of an event property are most frequent,
/// optionally among profiles matching a condition and grouped by a trait.
#[derive(Debug, Clone, PartialEq)]
pub struct TopQuery {
    /// The event name.
    pub event: String,
    /// The property counted.
    pub property: String,
    /// Only profiles for which this holds.
    pub filter: Option<Condition>,
    /// Group by this trait.
    pub group_by: Option<String>,
    /// Only events this recent.
    pub within: Option<crate::ast::Duration>,
    /// Rows per group.
    pub limit: usize,
}

struct Compiled {
    definition: AudienceDefinition,
    /// Whether memberships can change with time alone.
    scheduled: bool,
}

#[derive(Default)]
struct State {
    index: ProfileIndex,
    audiences: Vec<Compiled>,
    computed: HashMap<String, ComputedTrait>,
    rfm: Option<RfmModel>,
    rfm_config: RfmConfig,
    memberships: HashMap<String, Bitset>,
    /// Audiences waiting for a batch computation.
    pending: Vec<String>,
    computed_at: HashMap<String, i64>,
    /// Settings text the definitions were loaded from (`None`: not loaded yet).
    loaded_from: Option<Vec<(String, String)>>,
    last_schedule_ms: i64,
    /// Exits found while loading, written by the first tick.
    stale_exits: Vec<(String, ProfileId, &'static str)>,
}

impl State {
    /// What conditions are evaluated against, at `now_ms`.
    fn context(&self, now_ms: i64) -> Context<'_> {
        Context {
            index: &self.index,
            now_ms,
            computed: &self.computed,
            rfm: self.rfm.as_ref(),
            memberships: &self.memberships,
        }
    }
}

/// Settings of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Time-dependent audiences and the RFM model are refreshed this often (ms).
    pub schedule_interval_ms: i64,
    /// Threads of batch scans.
    pub parallelism: Parallelism,
    /// The time zone insights count days, weeks and months in.
    pub time_zone: crate::insights::ReportingZone,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            schedule_interval_ms: 60_000,
            parallelism: Parallelism::threads(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            time_zone: crate::insights::ReportingZone::UTC,
        }
    }
}

/// The engine.
pub struct AudienceEngine {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn AudienceStore>,
    profiles: Arc<dyn ProfileStore>,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
    state: RwLock<State>,
    progress: Mutex<HashMap<String, (u64, u64)>>,
    ready: std::sync::atomic::AtomicBool,
}

/// Changes written by one [`AudienceEngine::tick`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Profiles that entered an audience.
    pub entered: u64,
    /// Profiles that exited one.
    pub exited: u64,
}

/// Keys an audience cannot have (they are routes under `/api/v1/audiences/`).
const RESERVED_KEYS: [&str; 2] = ["preview", "changes"];

/// Rows per store round trip while building the index.
const LOAD_PAGE: usize = 10_000;
/// Membership changes per store transaction.
const WRITE_CHUNK: usize = 20_000;

impl AudienceEngine {
    /// An engine over the stores; call [`AudienceEngine::load`] before use.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn AudienceStore>,
        profiles: Arc<dyn ProfileStore>,
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> Self {
        Self {
            catalog,
            store,
            profiles,
            log,
            clock,
            options,
            state: RwLock::new(State::default()),
            progress: Mutex::new(HashMap::new()),
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads the definitions only, without building the index (for tools that edit
    /// definitions while a server owns the memberships).
    pub fn load_definitions(&self) -> Result<(), EngineError> {
        let mut state = self.write();
        self.reload_definitions(&mut state)?;
        Ok(())
    }

    /// Whether [`AudienceEngine::load`] has completed (before, the index is empty).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Members of an audience with a profile id above `after` (from the store).
    pub fn members(
        &self,
        key: &str,
        after: ProfileId,
        limit: usize,
    ) -> Result<Vec<tessera_store::audiences::Membership>, EngineError> {
        Ok(self.store.members(key, after, limit)?)
    }

    /// The audiences a profile is in (from the store).
    pub fn memberships(
        &self,
        profile: ProfileId,
    ) -> Result<Vec<tessera_store::audiences::Membership>, EngineError> {
        Ok(self.store.memberships(profile)?)
    }

    /// The change feed after `after_seq`.
    pub fn changes(
        &self,
        after_seq: i64,
        audience: Option<&str>,
        limit: usize,
    ) -> Result<Vec<tessera_store::audiences::StoredChange>, EngineError> {
        Ok(self.store.changes(after_seq, audience, limit)?)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Builds the index from the profile store, reads the definitions and current
    /// members, and queues every audience for a batch computation (which reconciles
    /// whatever changed while Tessera was down). `progress(done, total)` reports
    /// log positions read.
    pub fn load(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), EngineError> {
        let index = self.build_index(progress)?;
        let mut state = self.write();
        state.index = index;
        self.reload_definitions(&mut state)?;
        let keys: Vec<String> = state
            .audiences
            .iter()
            .map(|a| a.definition.key.clone())
            .collect();
        let mut stale = Vec::new();
        for key in &keys {
            let (members, gone) = self.stored_members(&state.index, key)?;
            state.memberships.insert(key.clone(), members);
            // Stored members that are no profile any more (merged away while the
            // engine was not running) leave on the first tick: loading writes nothing,
            // so a CLI preview never touches the server's members.
            stale.extend(gone.into_iter().map(|id| (key.clone(), id, "merged")));
        }
        // Audiences deleted while their members were being written (a CLI delete
        // racing the server) leave no member behind.
        for key in self.store.audiences_with_members()? {
            if !keys.contains(&key) {
                let mut after = i64::MIN;
                loop {
                    let page = self.store.members(&key, after, WRITE_CHUNK)?;
                    let Some(last) = page.last() else { break };
                    after = last.profile_id;
                    stale.extend(page.iter().map(|m| (key.clone(), m.profile_id, "deleted")));
                }
            }
        }
        state.stale_exits = stale;
        state.pending = keys;
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Builds the index with bulk reads: which profile owns each log position (one
    /// pass over the profile store), then the log once in order (so events arrive
    /// mostly in time order), then traits and identifier types page by page.
    /// `progress(done, total)` counts events of the log.
    fn build_index(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ProfileIndex, EngineError> {
        let mut index = ProfileIndex::new();
        for id in self.all_canonical_profiles()? {
            index.add_profile(id);
        }
        let last_seq = self.log.last_seq()?.max(0);
        let mut owners: Vec<ProfileId> = vec![0; last_seq as usize + 1];
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let page = self.profiles.event_owner_page(after, LOAD_PAGE)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = last;
            for (profile, seq) in page {
                if let Some(owner) = owners.get_mut(seq as usize) {
                    *owner = profile;
                }
            }
        }
        let mut after_seq = 0;
        loop {
            let mut events = Vec::new();
            self.log.scan(
                &tessera_store::EventFilter {
                    after_seq: Some(after_seq),
                    limit: Some(LOAD_PAGE),
                    ..tessera_store::EventFilter::default()
                },
                &mut |event| {
                    events.push(event);
                    Ok(())
                },
            )?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            after_seq = last;
            for event in &events {
                let owner = owners.get(event.seq as usize).copied().unwrap_or(0);
                if owner != 0
                    && let Some(input) = event_input(&event.payload)
                {
                    index.add_event(owner, &input);
                }
            }
            progress(after_seq as u64, last_seq as u64);
        }
        drop(owners);
        let mut traits: Vec<(ProfileId, Map<String, Value>)> = Vec::new();
        let mut after: (ProfileId, String) = (i64::MIN, String::new());
        loop {
            let page = self.profiles.trait_page((after.0, &after.1), LOAD_PAGE)?;
            let Some((id, name, _)) = page.last() else {
                break;
            };
            after = (*id, name.clone());
            for (id, name, value) in page {
                let Ok(value) = serde_json::from_str::<Value>(&value) else {
                    continue;
                };
                match traits.last_mut() {
                    Some((last, map)) if *last == id => {
                        map.insert(name, value);
                    }
                    _ => traits.push((id, Map::from_iter([(name, value)]))),
                }
            }
        }
        for (id, map) in traits {
            if let Some(slot) = index.slot(id) {
                index.set_traits(slot, &map);
            }
        }
        let mut types: Vec<(ProfileId, Vec<String>)> = Vec::new();
        let mut after: (ProfileId, String) = (i64::MIN, String::new());
        loop {
            let page = self
                .profiles
                .identifier_type_page((after.0, &after.1), LOAD_PAGE)?;
            let Some((id, id_type)) = page.last() else {
                break;
            };
            after = (*id, id_type.clone());
            for (id, id_type) in page {
                match types.last_mut() {
                    Some((last, list)) if *last == id => list.push(id_type),
                    _ => types.push((id, vec![id_type])),
                }
            }
        }
        for (id, list) in types {
            if let Some(slot) = index.slot(id) {
                index.set_identifier_types(slot, &list);
            }
        }
        index.compact();
        Ok(index)
    }

    fn all_canonical_profiles(&self) -> Result<Vec<ProfileId>, EngineError> {
        let mut ids = Vec::new();
        let mut after = i64::MIN;
        loop {
            let page = self.profiles.canonical_profiles(after, LOAD_PAGE)?;
            let Some(last) = page.last().copied() else {
                return Ok(ids);
            };
            after = last;
            ids.extend(page);
        }
    }

    /// An audience's stored members as slots, and those the index does not have.
    fn stored_members(
        &self,
        index: &ProfileIndex,
        key: &str,
    ) -> Result<(Bitset, Vec<ProfileId>), EngineError> {
        let mut members = Bitset::new(index.slot_count());
        let mut gone = Vec::new();
        let mut after = i64::MIN;
        loop {
            let page = self.store.members(key, after, 10_000)?;
            let Some(last) = page.last() else {
                return Ok((members, gone));
            };
            after = last.profile_id;
            for m in &page {
                match index.slot(m.profile_id) {
                    Some(slot) => members.insert(slot),
                    None => gone.push(m.profile_id),
                }
            }
        }
    }

    /// Everything the index needs of one profile, from the stores.
    fn profile_input(&self, id: ProfileId) -> Result<ProfileInput, EngineError> {
        let (traits, identifier_types) = self.traits_and_identifier_types(id)?;
        let seqs = self.profiles.event_seqs(id, None, usize::MAX)?;
        let events = self
            .log
            .get(&seqs)?
            .iter()
            .filter_map(|e| event_input(&e.payload))
            .collect();
        Ok(ProfileInput {
            id,
            traits,
            identifier_types,
            events,
        })
    }

    /// A profile's traits and the types of its identifiers, from the profile store.
    fn traits_and_identifier_types(
        &self,
        id: ProfileId,
    ) -> Result<(Map<String, Value>, Vec<String>), EngineError> {
        let traits = self
            .profiles
            .traits(id)?
            .into_iter()
            .filter_map(|t| {
                serde_json::from_str(&t.value_json)
                    .ok()
                    .map(|v| (t.name, v))
            })
            .collect();
        let types = self.profiles.identifier_types(id)?;
        Ok((traits, types))
    }

    /// Reads the definitions from the catalog when they changed there.
    fn reload_definitions(&self, state: &mut State) -> Result<bool, EngineError> {
        let mut stored = self
            .catalog
            .settings_with_prefix(tessera_store::keys::AUDIENCE_PREFIX)?;
        stored.extend(
            self.catalog
                .settings_with_prefix(tessera_store::keys::COMPUTED_TRAIT_PREFIX)?,
        );
        if let Some(rfm) = self.catalog.setting(tessera_store::keys::RFM)? {
            stored.push((tessera_store::keys::RFM.into(), rfm));
        }
        if state.loaded_from.as_ref() == Some(&stored) {
            return Ok(false);
        }
        let mut computed: HashMap<String, ComputedTrait> = ComputedTrait::presets()
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let mut audiences = Vec::new();
        let mut rfm_config = RfmConfig::default();
        for (name, text) in &stored {
            if name.starts_with(tessera_store::keys::COMPUTED_TRAIT_PREFIX) {
                match serde_json::from_str::<ComputedTrait>(text) {
                    Ok(c) => {
                        computed.insert(c.key.clone(), c);
                    }
                    Err(error) => {
                        tracing::error!(%name, %error, "stored computed trait unreadable; ignored")
                    }
                }
            } else if name.starts_with(tessera_store::keys::AUDIENCE_PREFIX) {
                match serde_json::from_str::<AudienceDefinition>(text) {
                    Ok(a) => audiences.push(a),
                    Err(error) => {
                        tracing::error!(%name, %error, "stored audience unreadable; ignored")
                    }
                }
            } else if let Ok(config) = serde_json::from_str::<RfmConfig>(text) {
                rfm_config = config;
            }
        }
        let order = dependency_order(&audiences);
        let previous: HashMap<String, Condition> = state
            .audiences
            .iter()
            .map(|a| (a.definition.key.clone(), a.definition.condition.clone()))
            .collect();
        let computed_changed = computed != state.computed || rfm_config != state.rfm_config;
        state.audiences = order
            .into_iter()
            .map(|definition| Compiled {
                scheduled: needs_schedule(&definition.condition, &computed),
                definition,
            })
            .collect();
        // New or edited audiences (or all of them when computed traits changed) get a
        // batch computation; deleted ones lose their members.
        for audience in &state.audiences {
            let key = &audience.definition.key;
            let edited = previous.get(key) != Some(&audience.definition.condition);
            if (edited || computed_changed) && !state.pending.contains(key) {
                state.pending.push(key.clone());
            }
        }
        let live: HashSet<&str> = state
            .audiences
            .iter()
            .map(|a| a.definition.key.as_str())
            .collect();
        state.pending.retain(|k| live.contains(k.as_str()));
        // An audience deleted elsewhere (the CLI) may have gained members here since its
        // members were exited there: exit whatever the store still holds.
        let gone: Vec<String> = previous
            .keys()
            .filter(|k| !live.contains(k.as_str()))
            .cloned()
            .collect();
        state.memberships.retain(|k, _| live.contains(k.as_str()));
        for key in gone {
            self.exit_stored_members(&key, "deleted")?;
        }
        state.computed = computed;
        if rfm_config != state.rfm_config || state.rfm.is_none() {
            state.rfm_config = rfm_config;
            self.refresh_rfm(state);
        }
        state.loaded_from = Some(stored);
        Ok(true)
    }

    fn refresh_rfm(&self, state: &mut State) {
        for text in RfmModel::strings() {
            state.index.symbols.intern(&text);
        }
        state.rfm = Some(RfmModel::compute(
            &state.index,
            state.rfm_config.clone(),
            self.now(),
        ));
    }

    /// Folds one processor chunk into the index and re-evaluates the touched
    /// profiles at once; returns the membership changes written.
    pub fn apply(&self, changes: &ProfileChanges) -> Result<Vec<MembershipChange>, EngineError> {
        if changes.events.is_empty() && changes.merges.is_empty() {
            return Ok(Vec::new());
        }
        // Traits and identifiers come from the profile store, which the processor has
        // just committed; read them before taking the index, so queries (preview, the
        // Profile API) are not held up by the store.
        // An event of the chunk may belong to a profile merged later in the same chunk:
        // it goes where the store put it, to the end of the merge chain.
        let merged_into: HashMap<ProfileId, ProfileId> = changes
            .merges
            .iter()
            .map(|(winner, loser)| (*loser, *winner))
            .collect();
        let canonical = |mut id: ProfileId| {
            let mut hops = 0;
            while let Some(next) = merged_into.get(&id) {
                id = *next;
                hops += 1;
                if hops > merged_into.len() {
                    break;
                }
            }
            id
        };
        let touched: HashSet<ProfileId> = changes
            .merges
            .iter()
            .map(|(winner, _)| canonical(*winner))
            .chain(
                changes
                    .events
                    .iter()
                    .map(|(profile, _)| canonical(*profile)),
            )
            .collect();
        let mut fresh = Vec::with_capacity(touched.len());
        for id in &touched {
            let (traits, types) = self.traits_and_identifier_types(*id)?;
            fresh.push((*id, traits, types));
        }
        let inputs: Vec<(ProfileId, Option<EventInput>)> = changes
            .events
            .iter()
            .map(|(profile, event)| (canonical(*profile), event_input(&event.payload)))
            .collect();
        let mut state = self.write();
        let mut merged_away: Vec<(ProfileId, Slot)> = Vec::new();
        // Merges first: events of the chunk are attributed to the winners already.
        for (winner, loser) in &changes.merges {
            if let Some(slot) = state.index.slot(*loser) {
                merged_away.push((*loser, slot));
            }
            state.index.merge(*winner, *loser);
        }
        for (profile, input) in &inputs {
            match input {
                Some(input) => {
                    state.index.add_event(*profile, input);
                }
                None => {
                    state.index.add_profile(*profile);
                }
            }
        }
        for (id, traits, types) in &fresh {
            if let Some(slot) = state.index.slot(*id) {
                state.index.set_traits(slot, traits);
                state.index.set_identifier_types(slot, types);
            }
        }
        state.index.maybe_compact();
        let slots: Vec<Slot> = touched
            .iter()
            .filter_map(|id| state.index.slot(*id))
            .collect();
        let now = self.now();
        let mut written = Vec::new();
        // Profiles merged away leave their audiences.
        for (loser, slot) in merged_away {
            for (key, members) in state.memberships.iter_mut() {
                if members.contains(slot) {
                    members.remove(slot);
                    written.push(change(key, loser, false, now, "merged"));
                }
            }
        }
        written.extend(self.reevaluate(&mut state, &slots, now, "event"));
        if let Err(error) = self.store.apply_changes(&written) {
            // Memory is ahead of the store: every audience starts again from the store.
            let keys: Vec<String> = state.memberships.keys().cloned().collect();
            for key in keys {
                self.resync_from_store(&mut state, &key)?;
            }
            return Err(error.into());
        }
        Ok(written)
    }

    /// Re-evaluates every audience for some profiles, in dependency order, updating
    /// the in-memory members; returns the changes (not yet stored).
    fn reevaluate(
        &self,
        state: &mut State,
        slots: &[Slot],
        now: i64,
        reason: &str,
    ) -> Vec<MembershipChange> {
        let mut out = Vec::new();
        for i in 0..state.audiences.len() {
            let key = state.audiences[i].definition.key.clone();
            if state.pending.contains(&key) {
                // Its batch computation will decide everyone.
                continue;
            }
            let verdicts: Vec<(Slot, bool)> = {
                let context = state.context(now);
                let plan = Plan::compile(&state.audiences[i].definition.condition, &context);
                slots
                    .iter()
                    .map(|s| (*s, plan.holds(&state.index, *s, now)))
                    .collect()
            };
            let index = &state.index;
            let members = state.memberships.entry(key.clone()).or_default();
            for (slot, member) in verdicts {
                if member != members.contains(slot) {
                    if member {
                        members.insert(slot);
                    } else {
                        members.remove(slot);
                    }
                    out.push(change(&key, index.profile_id(slot), member, now, reason));
                }
            }
        }
        out
    }

    /// Runs batch work: refreshed definitions, pending computations, scheduled
    /// re-evaluation of time-dependent audiences.
    pub fn tick(&self) -> Result<TickReport, EngineError> {
        let mut report = TickReport::default();
        {
            let mut state = self.write();
            if !state.stale_exits.is_empty() {
                let now = self.now();
                let exits: Vec<MembershipChange> = state
                    .stale_exits
                    .iter()
                    .map(|(key, id, reason)| change(key, *id, false, now, reason))
                    .collect();
                self.store.apply_changes(&exits)?;
                report.exited += exits.len() as u64;
                state.stale_exits.clear();
            }
            self.reload_definitions(&mut state)?;
            let now = self.now();
            if now - state.last_schedule_ms >= self.options.schedule_interval_ms {
                state.last_schedule_ms = now;
                self.refresh_rfm(&mut state);
                let scheduled: Vec<String> = state
                    .audiences
                    .iter()
                    .filter(|a| a.scheduled)
                    .map(|a| a.definition.key.clone())
                    .collect();
                for key in scheduled {
                    report.add(self.compute(&mut state, &key, "schedule")?);
                }
            }
        }
        loop {
            let mut state = self.write();
            let Some(key) = state.pending.first().cloned() else {
                break;
            };
            report.add(self.compute(&mut state, &key, "computed")?);
            state.pending.retain(|k| *k != key);
        }
        Ok(report)
    }

    /// Computes one audience over every profile and commits the difference.
    fn compute(
        &self,
        state: &mut State,
        key: &str,
        reason: &str,
    ) -> Result<TickReport, EngineError> {
        let Some(position) = state.audiences.iter().position(|a| a.definition.key == key) else {
            return Ok(TickReport::default());
        };
        let now = self.now();
        let members = {
            let context = state.context(now);
            let plan = Plan::compile(&state.audiences[position].definition.condition, &context);
            evaluate(&plan, &state.index, now, self.options.parallelism)
        };
        let written = self.commit_memberships(state, key, members, now, reason)?;
        state.computed_at.insert(key.to_owned(), now);
        // Audiences built on this one follow.
        for dependent in state
            .audiences
            .iter()
            .filter(|a| a.definition.condition.referenced_audiences().contains(&key))
            .map(|a| a.definition.key.clone())
            .collect::<Vec<_>>()
        {
            if !state.pending.contains(&dependent) {
                state.pending.push(dependent);
            }
        }
        Ok(written)
    }

    /// Replaces an audience's members, writing the difference to the feed in chunks
    /// (progress visible in [`AudienceEngine::status`]).
    fn commit_memberships(
        &self,
        state: &mut State,
        key: &str,
        members: Bitset,
        now: i64,
        reason: &str,
    ) -> Result<TickReport, EngineError> {
        let previous = state.memberships.remove(key).unwrap_or_default();
        let entered = members.minus(&previous);
        let exited = previous.minus(&members);
        let index = &state.index;
        let changes: Vec<MembershipChange> = entered
            .iter()
            .map(|s| change(key, index.profile_id(s), true, now, reason))
            .chain(
                exited
                    .iter()
                    .map(|s| change(key, index.profile_id(s), false, now, reason)),
            )
            .collect();
        let total = changes.len() as u64;
        for (i, chunk) in changes.chunks(WRITE_CHUNK).enumerate() {
            if let Err(error) = self.store.apply_changes(chunk) {
                // Some chunks may be written: start again from what the store holds.
                self.clear_progress(key);
                self.resync_from_store(state, key)?;
                return Err(error.into());
            }
            self.set_progress(
                key,
                ((i + 1) * WRITE_CHUNK).min(changes.len()) as u64,
                total,
            );
        }
        self.clear_progress(key);
        state.memberships.insert(key.to_owned(), members);
        Ok(TickReport {
            entered: entered.count() as u64,
            exited: exited.count() as u64,
        })
    }

    /// After a failed write: the in-memory members become the stored ones again and
    /// the audience is queued for a batch computation, which diffs against them.
    fn resync_from_store(&self, state: &mut State, key: &str) -> Result<(), EngineError> {
        let (members, _) = self.stored_members(&state.index, key)?;
        state.memberships.insert(key.to_owned(), members);
        if !state.pending.iter().any(|k| k == key) {
            state.pending.push(key.to_owned());
        }
        Ok(())
    }

    fn set_progress(&self, key: &str, done: u64, total: u64) {
        if let Ok(mut p) = self.progress.lock() {
            p.insert(key.to_owned(), (done, total));
        }
    }

    fn clear_progress(&self, key: &str) {
        if let Ok(mut p) = self.progress.lock() {
            p.remove(key);
        }
    }

    /// Reloads profiles from the store (after an unlink rebuilt them): those still
    /// canonical are re-indexed, the others removed; memberships follow.
    pub fn reload_profiles(&self, ids: &[ProfileId]) -> Result<usize, EngineError> {
        // Read under the index's lock, so no chunk applied meanwhile is overwritten by
        // an older snapshot of these profiles.
        let mut state = self.write();
        let mut inputs = Vec::new();
        for id in ids {
            let canonical = self
                .profiles
                .profile(*id)?
                .is_some_and(|p| p.merged_into.is_none());
            inputs.push((*id, canonical.then(|| self.profile_input(*id)).transpose()?));
        }
        let now = self.now();
        let mut changes = Vec::new();
        let mut slots = Vec::new();
        for (id, input) in inputs {
            match input {
                Some(input) => slots.push(state.index.upsert_profile(&input)),
                None => {
                    if let Some(slot) = state.index.slot(id) {
                        for (key, members) in state.memberships.iter_mut() {
                            if members.contains(slot) {
                                members.remove(slot);
                                changes.push(change(key, id, false, now, "rebuilt"));
                            }
                        }
                    }
                    state.index.remove(id);
                }
            }
        }
        changes.extend(self.reevaluate(&mut state, &slots, now, "event"));
        self.store.apply_changes(&changes)?;
        Ok(changes.len())
    }

    /// The store of memberships and the change feed.
    pub fn store(&self) -> &dyn AudienceStore {
        self.store.as_ref()
    }

    /// Forgets erased profiles: out of the index and every membership, and their
    /// memberships and change-feed rows deleted from the store (an erased person
    /// leaves no trace, so no `Audience Exited` is announced for them either).
    pub fn erase_profiles(&self, ids: &[ProfileId]) -> Result<(), EngineError> {
        let mut state = self.write();
        for id in ids {
            if let Some(slot) = state.index.slot(*id) {
                for members in state.memberships.values_mut() {
                    members.remove(slot);
                }
            }
            state.index.remove(*id);
        }
        self.store.erase_profiles(ids)?;
        self.store.purge_deleted()?;
        Ok(())
    }

    /// Parses and checks a definition (text or JSON) against the known audiences.
    pub fn check_definition(
        &self,
        text: &str,
        own_key: Option<&str>,
    ) -> Result<Condition, EngineError> {
        let condition = parse_definition(text)?;
        let state = self.read();
        for referenced in condition.referenced_audiences() {
            if Some(referenced) == own_key {
                return Err(EngineError::Invalid(format!(
                    "audience \"{referenced}\" cannot refer to itself"
                )));
            }
            if !state
                .audiences
                .iter()
                .any(|a| a.definition.key == referenced)
            {
                let keys: Vec<&str> = state
                    .audiences
                    .iter()
                    .map(|a| a.definition.key.as_str())
                    .collect();
                return Err(EngineError::Invalid(format!(
                    "no audience \"{referenced}\"{}: create it first (GET /api/v1/audiences lists them)",
                    tessera_core::suggest::did_you_mean(referenced, keys.iter().copied())
                )));
            }
        }
        let mut unknown_computed = None;
        condition.walk(&mut |c| {
            if let Condition::Computed(test) = c
                && unknown_computed.is_none()
                && !state.computed.contains_key(&test.name)
                && !RFM_TRAITS.contains(&test.name.as_str())
            {
                unknown_computed = Some(test.name.clone());
            }
        });
        if let Some(name) = unknown_computed {
            let keys: Vec<&str> = state
                .computed
                .keys()
                .map(String::as_str)
                .chain(RFM_TRAITS.iter().copied())
                .collect();
            return Err(EngineError::Invalid(format!(
                "no computed trait \"{name}\"{}: GET /api/v1/computed-traits lists them (RFM traits: {})",
                tessera_core::suggest::did_you_mean(&name, keys.iter().copied()),
                RFM_TRAITS.join(", ")
            )));
        }
        if let Some(own) = own_key {
            // An edit must not close a cycle through other audiences.
            let mut stack: Vec<&str> = condition.referenced_audiences();
            let mut seen = HashSet::new();
            while let Some(key) = stack.pop() {
                if key == own {
                    return Err(EngineError::Invalid(format!(
                        "audience \"{own}\" would depend on itself through \"{key}\""
                    )));
                }
                if seen.insert(key.to_owned())
                    && let Some(a) = state.audiences.iter().find(|a| a.definition.key == key)
                {
                    stack.extend(a.definition.condition.referenced_audiences());
                }
            }
        }
        Ok(condition)
    }

    /// The event, trait and property names of `condition` never seen in the data,
    /// each with the closest observed name (see [`crate::names`]).
    pub fn unknown_names(&self, condition: &Condition) -> Vec<crate::names::NameWarning> {
        crate::names::unknown_names(&self.read().index, condition)
    }

    /// A warning when no event has the name `name` (journey triggers, insights).
    pub fn unknown_event(&self, name: &str) -> Option<crate::names::NameWarning> {
        crate::names::unknown_event(&self.read().index, name)
    }

    /// A warning when no event has the property `name` (insights).
    pub fn unknown_property(&self, name: &str) -> Option<crate::names::NameWarning> {
        crate::names::unknown_property(&self.read().index, name)
    }

    /// A warning when no profile has the trait `name` (insights).
    pub fn unknown_trait(&self, name: &str) -> Option<crate::names::NameWarning> {
        crate::names::unknown_trait(&self.read().index, name)
    }

    /// The keys of every audience, sorted (for "did you mean" answers).
    pub fn audience_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .read()
            .audiences
            .iter()
            .map(|a| a.definition.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Creates an audience; its members are computed by the next tick.
    pub fn create(
        &self,
        key: &str,
        name: &str,
        description: &str,
        definition: &str,
    ) -> Result<AudienceDefinition, EngineError> {
        crate::validate_key(key).map_err(EngineError::Invalid)?;
        if RESERVED_KEYS.contains(&key) {
            return Err(EngineError::Invalid(format!(
                "\"{key}\" names an API route; choose another key"
            )));
        }
        if self
            .catalog
            .setting(&format!("{}{key}", tessera_store::keys::AUDIENCE_PREFIX))?
            .is_some()
        {
            return Err(EngineError::Exists(format!(
                "an audience with key \"{key}\" exists: choose another key or PUT to edit it"
            )));
        }
        let condition = self.check_definition(definition, Some(key))?;
        let now = self.now();
        let audience = AudienceDefinition {
            key: key.into(),
            name: if name.is_empty() {
                key.into()
            } else {
                name.into()
            },
            description: description.into(),
            condition,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.save(&audience)?;
        Ok(audience)
    }

    /// Edits an audience (name, description, definition); members are recomputed.
    pub fn update(
        &self,
        key: &str,
        name: Option<&str>,
        description: Option<&str>,
        definition: Option<&str>,
    ) -> Result<AudienceDefinition, EngineError> {
        let mut audience = self.get(key)?;
        if let Some(text) = definition {
            audience.condition = self.check_definition(text, Some(key))?;
        }
        if let Some(name) = name {
            audience.name = name.into();
        }
        if let Some(description) = description {
            audience.description = description.into();
        }
        audience.updated_at_ms = self.now();
        self.save(&audience)?;
        Ok(audience)
    }

    fn save(&self, audience: &AudienceDefinition) -> Result<(), EngineError> {
        self.store_definition(
            &format!("{}{}", tessera_store::keys::AUDIENCE_PREFIX, audience.key),
            audience,
        )
    }

    /// Stores a definition in the catalog and reloads every definition from it.
    fn store_definition(&self, name: &str, value: &impl Serialize) -> Result<(), EngineError> {
        let text = serde_json::to_string(value).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.catalog.set_setting(name, &text)?;
        let mut state = self.write();
        self.reload_definitions(&mut state)?;
        Ok(())
    }

    /// Deletes an audience: its members exit (reason `deleted`).
    pub fn delete(&self, key: &str) -> Result<TickReport, EngineError> {
        let mut state = self.write();
        if let Some(user) = state
            .audiences
            .iter()
            .find(|a| a.definition.condition.referenced_audiences().contains(&key))
        {
            return Err(EngineError::Invalid(format!(
                "audience \"{}\" uses \"{key}\": change or delete it first",
                user.definition.key
            )));
        }
        if !self
            .catalog
            .delete_setting(&format!("{}{key}", tessera_store::keys::AUDIENCE_PREFIX))?
        {
            return Err(not_found(key));
        }
        // The stored members exit, whoever runs this (the CLI has no memberships in
        // memory; a running server drops its own on the next tick).
        let exited = self.exit_stored_members(key, "deleted")?;
        state.memberships.remove(key);
        self.reload_definitions(&mut state)?;
        Ok(TickReport { entered: 0, exited })
    }

    /// Writes an exit for every stored member of an audience; returns how many.
    fn exit_stored_members(&self, key: &str, reason: &str) -> Result<u64, EngineError> {
        let now = self.now();
        let mut exited = 0u64;
        loop {
            let page = self.store.members(key, i64::MIN, WRITE_CHUNK)?;
            if page.is_empty() {
                return Ok(exited);
            }
            let exits: Vec<MembershipChange> = page
                .iter()
                .map(|m| change(key, m.profile_id, false, now, reason))
                .collect();
            self.store.apply_changes(&exits)?;
            exited += exits.len() as u64;
        }
    }

    /// One audience.
    pub fn get(&self, key: &str) -> Result<AudienceDefinition, EngineError> {
        let text = self
            .catalog
            .setting(&format!("{}{key}", tessera_store::keys::AUDIENCE_PREFIX))?
            .ok_or_else(|| not_found(key))?;
        serde_json::from_str(&text)
            .map_err(|e| EngineError::Store(StoreError::Engine(e.to_string())))
    }

    /// Every audience, by key.
    pub fn list(&self) -> Result<Vec<AudienceDefinition>, EngineError> {
        Ok(self
            .catalog
            .settings_with_prefix(tessera_store::keys::AUDIENCE_PREFIX)?
            .into_iter()
            .filter_map(|(_, text)| serde_json::from_str(&text).ok())
            .collect())
    }

    /// Where an audience's computation stands.
    pub fn status(&self, key: &str) -> AudienceStatus {
        // Progress and the stored count are read without the index's lock, which a
        // batch computation holds while it runs.
        let progress = self.progress.lock().ok().and_then(|p| p.get(key).copied());
        let members = self.store.member_count(key).unwrap_or(0).max(0) as u64;
        let (pending, computed_at_ms) = match self.state.try_read() {
            Ok(state) => (
                state.pending.iter().any(|k| k == key),
                state.computed_at.get(key).copied(),
            ),
            Err(_) => (true, None),
        };
        AudienceStatus {
            state: if pending || progress.is_some() {
                "computing"
            } else {
                "ready"
            },
            evaluated: progress.map_or(0, |p| p.0),
            total: progress.map_or(0, |p| p.1),
            members,
            computed_at_ms,
        }
    }

    /// Members of a condition now, without storing anything.
    pub fn preview(&self, condition: &Condition, sample: usize) -> Preview {
        let state = self.read();
        let now = self.now();
        let members = {
            let context = state.context(now);
            evaluate(
                &Plan::compile(condition, &context),
                &state.index,
                now,
                self.options.parallelism,
            )
        };
        Preview {
            count: members.count() as u64,
            sample: members
                .iter()
                .take(sample)
                .map(|slot| ProfileSample {
                    profile_id: state.index.profile_id(slot),
                    traits: slot_traits(&state.index, slot),
                })
                .collect(),
        }
    }

    /// Whether a condition holds for one profile now (journey branches); `None`
    /// until the index is built or when the profile is not in it.
    pub fn holds_for(&self, condition: &Condition, id: ProfileId) -> Option<bool> {
        if !self.is_ready() {
            return None;
        }
        let state = self.read();
        let slot = state.index.slot(id)?;
        let now = self.now();
        let context = state.context(now);
        Some(Plan::compile(condition, &context).holds(&state.index, slot, now))
    }

    /// Computed traits (presets included) by key.
    pub fn computed_traits(&self) -> Vec<ComputedTrait> {
        let state = self.read();
        let mut all: Vec<ComputedTrait> = state.computed.values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Stores a computed trait (a preset's key overrides the preset).
    pub fn save_computed(&self, definition: &ComputedTrait) -> Result<(), EngineError> {
        definition.validate().map_err(EngineError::Invalid)?;
        if RFM_TRAITS.contains(&definition.key.as_str()) {
            return Err(EngineError::Invalid(format!(
                "\"{}\" is an RFM trait; choose another key",
                definition.key
            )));
        }
        self.store_definition(
            &format!(
                "{}{}",
                tessera_store::keys::COMPUTED_TRAIT_PREFIX,
                definition.key
            ),
            definition,
        )
    }

    /// Deletes a stored computed trait (a preset comes back).
    pub fn delete_computed(&self, key: &str) -> Result<(), EngineError> {
        if !self.catalog.delete_setting(&format!(
            "{}{key}",
            tessera_store::keys::COMPUTED_TRAIT_PREFIX
        ))? {
            return Err(EngineError::NotFound(format!(
                "no stored computed trait \"{key}\""
            )));
        }
        let mut state = self.write();
        self.reload_definitions(&mut state)?;
        Ok(())
    }

    /// The RFM settings.
    pub fn rfm_config(&self) -> RfmConfig {
        self.read().rfm_config.clone()
    }

    /// Stores the RFM settings; the model is recomputed at once.
    pub fn set_rfm_config(&self, config: &RfmConfig) -> Result<(), EngineError> {
        let text = serde_json::to_string(config).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.catalog.set_setting(tessera_store::keys::RFM, &text)?;
        let mut state = self.write();
        self.reload_definitions(&mut state)?;
        Ok(())
    }

    /// A profile's computed traits and RFM traits, now.
    pub fn computed_values(&self, id: ProfileId) -> Map<String, Value> {
        let state = self.read();
        let mut out = Map::new();
        let Some(slot) = state.index.slot(id) else {
            return out;
        };
        let now = self.now();
        let mut keys: Vec<&String> = state.computed.keys().collect();
        keys.sort();
        for key in keys {
            let compiled =
                crate::computed::CompiledComputed::compile(&state.computed[key], &state.index, now);
            if let Some(v) = compiled.value(&state.index, slot) {
                out.insert(key.clone(), to_json(&state.index.symbols, &v));
            }
        }
        if let Some(model) = &state.rfm {
            for name in RFM_TRAITS {
                if let Some(v) = model.trait_value(&state.index, slot, name, now) {
                    out.insert(name.into(), to_json(&state.index.symbols, &v));
                }
            }
        }
        out
    }

    /// The index's memory use.
    pub fn memory(&self) -> crate::index::MemoryReport {
        self.read().index.memory()
    }

    /// The reporting time zone and the "now" insight requests are compiled for.
    pub fn insight_clock(&self) -> (crate::insights::ReportingZone, i64) {
        (self.options.time_zone, self.now())
    }

    /// Runs an insight over the index among the people `filter` holds for (everyone
    /// without one). It holds the index's read lock throughout, as [`Self::top`]
    /// does: the processor's next chunk waits for it, which the insights' limits
    /// (range, buckets, steps, breakdown values) keep short.
    pub fn insight<R>(
        &self,
        filter: Option<&Condition>,
        run: impl FnOnce(&crate::insights::InsightInput<'_>) -> R,
    ) -> R {
        let state = self.read();
        let now = self.now();
        let members = filter.map(|condition| {
            let context = state.context(now);
            evaluate(
                &Plan::compile(condition, &context),
                &state.index,
                now,
                self.options.parallelism,
            )
        });
        run(&crate::insights::InsightInput {
            index: &state.index,
            members: members.as_ref(),
            now_ms: now,
        })
    }

    /// Most frequent values of an event property, optionally among the profiles a
    /// condition holds for, and per value of a trait.
    pub fn top(&self, query: &TopQuery) -> Vec<TopRow> {
        let state = self.read();
        let now = self.now();
        let index = &state.index;
        let profiles = {
            let context = state.context(now);
            let filter = query.filter.clone().unwrap_or(Condition::And(Vec::new()));
            evaluate(
                &Plan::compile(&filter, &context),
                index,
                now,
                self.options.parallelism,
            )
        };
        let (Some(name), Some(property)) = (
            index.symbols.get(&query.event),
            index.symbols.get(&query.property),
        ) else {
            return Vec::new();
        };
        let from = query
            .within
            .map_or(i64::MIN, |d| now.saturating_sub(d.millis));
        let group_column = query.group_by.as_deref().map(|g| index.trait_column(g));
        // (group, value) -> (events, profiles)
        let mut counts: HashMap<(Option<Value>, Value), (u64, u64)> = HashMap::new();
        for slot in profiles.iter() {
            let group = group_column.map(|column| {
                column
                    .and_then(|c| c.get(slot as usize))
                    .and_then(Option::as_ref)
                    .map_or(Value::Null, |v| to_json(&index.symbols, v))
            });
            let mut seen: HashSet<Value> = HashSet::new();
            for event in index.profile_events(slot).between(from, now).named(name) {
                let Some(value) = index.property(&event, property) else {
                    continue;
                };
                let value = to_json(&index.symbols, value);
                let entry = counts.entry((group.clone(), value.clone())).or_default();
                entry.0 += 1;
                if seen.insert(value) {
                    entry.1 += 1;
                }
            }
        }
        let mut rows: Vec<TopRow> = counts
            .into_iter()
            .map(|((group, value), (events, profiles))| TopRow {
                group,
                value,
                events,
                profiles,
            })
            .collect();
        rows.sort_by(|a, b| {
            group_key(&a.group)
                .cmp(&group_key(&b.group))
                .then(b.events.cmp(&a.events))
                .then(value_key(&a.value).cmp(&value_key(&b.value)))
        });
        let mut per_group: HashMap<String, usize> = HashMap::new();
        rows.retain(|row| {
            let n = per_group.entry(group_key(&row.group)).or_default();
            *n += 1;
            *n <= query.limit
        });
        rows
    }
}

fn group_key(group: &Option<Value>) -> String {
    group.as_ref().map(value_key).unwrap_or_default()
}

fn value_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl TickReport {
    fn add(&mut self, other: TickReport) {
        self.entered += other.entered;
        self.exited += other.exited;
    }
}

fn not_found(key: &str) -> EngineError {
    EngineError::NotFound(format!(
        "no audience \"{key}\" (GET /api/v1/audiences lists them)"
    ))
}

fn change(
    key: &str,
    profile_id: ProfileId,
    entered: bool,
    at_ms: i64,
    reason: &str,
) -> MembershipChange {
    MembershipChange {
        audience: key.to_owned(),
        profile_id,
        entered,
        at_ms,
        reason: reason.to_owned(),
    }
}

/// The index's input for a stored message.
pub fn event_input(payload: &str) -> Option<EventInput> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(message)) => EventInput::from_message(&message),
        _ => None,
    }
}

/// A slot's traits as JSON (top-level paths only: nested objects come back whole
/// from their dotted children).
fn slot_traits(index: &ProfileIndex, slot: Slot) -> Map<String, Value> {
    let mut out = Map::new();
    let mut paths: Vec<&str> = index.trait_paths().filter(|p| !p.contains('.')).collect();
    paths.sort_unstable();
    for path in paths {
        if let Some(value) = index.trait_json(slot, path) {
            let value = if value.as_object().is_some_and(Map::is_empty) {
                nested_object(index, slot, path)
            } else {
                value
            };
            out.insert(path.to_owned(), value);
        }
    }
    out
}

fn nested_object(index: &ProfileIndex, slot: Slot, prefix: &str) -> Value {
    let mut object = Map::new();
    let start = format!("{prefix}.");
    let mut children: Vec<&str> = index
        .trait_paths()
        .filter(|p| p.starts_with(&start) && !p[start.len()..].contains('.'))
        .collect();
    children.sort_unstable();
    for child in children {
        if let Some(value) = index.trait_json(slot, child) {
            let value = if value.as_object().is_some_and(Map::is_empty) {
                nested_object(index, slot, child)
            } else {
                value
            };
            object.insert(child[start.len()..].to_owned(), value);
        }
    }
    Value::Object(object)
}

/// Orders audiences so every audience comes after those it refers to (cycles,
/// which creation refuses, are broken arbitrarily).
fn dependency_order(audiences: &[AudienceDefinition]) -> Vec<AudienceDefinition> {
    let mut placed: HashSet<&str> = HashSet::new();
    let mut out: Vec<AudienceDefinition> = Vec::new();
    let mut remaining: Vec<&AudienceDefinition> = audiences.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|a| {
            let ready = a
                .condition
                .referenced_audiences()
                .iter()
                .all(|r| placed.contains(r) || !audiences.iter().any(|x| x.key == *r));
            if ready {
                placed.insert(a.key.as_str());
                out.push((*a).clone());
            }
            !ready
        });
        if remaining.len() == before {
            out.extend(remaining.drain(..).cloned());
        }
    }
    out
}

/// Whether an audience's members can change with time alone: relative windows and
/// dates, computed traits with sliding windows or of time, RFM.
fn needs_schedule(condition: &Condition, computed: &HashMap<String, ComputedTrait>) -> bool {
    if condition.depends_on_time() {
        return true;
    }
    let mut timed = false;
    condition.walk(&mut |c| match c {
        Condition::Computed(test) => {
            let windowed = computed.get(&test.name).is_some_and(|d| {
                d.window.is_some()
                    || d.filters.iter().any(|f| {
                        matches!(
                            f.test,
                            Test::Within(_)
                                | Test::Before(TimeRef::Ago(_))
                                | Test::After(TimeRef::Ago(_))
                        )
                    })
            });
            let rfm = RFM_TRAITS.contains(&test.name.as_str());
            let time_test = matches!(
                test.test,
                Test::Within(_) | Test::Before(_) | Test::After(_)
            );
            timed |= windowed || rfm || time_test;
        }
        Condition::Event(e) => timed |= matches!(e.window, Window::Within(_)),
        _ => {}
    });
    timed
}
