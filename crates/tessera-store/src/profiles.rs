//! Derived profile state: the identity graph, traits with provenance, each profile's
//! events and group memberships, merges and conflicts.
//!
//! All of it is derived from the event log by the processor and can be rebuilt by
//! replay. The processor writes through [`ProfileTxn`] inside [`ProfileStore::apply`],
//! one transaction per chunk of events together with the checkpoint, so a chunk is
//! applied exactly once even across crashes.

use crate::StoreResult;

/// A profile's id. It is the log `seq` of the event that created the profile, so
/// replaying the same log gives the same ids.
pub type ProfileId = i64;

/// One identifier attached to a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    /// Identifier type, e.g. `email`.
    pub id_type: String,
    /// Normalized value.
    pub value: String,
    /// The profile it belongs to.
    pub profile_id: ProfileId,
    /// Event time it was first seen (Unix ms).
    pub first_seen_ms: i64,
    /// Source that first sent it.
    pub source_key: i64,
    /// Message that first carried it.
    pub message_id: String,
}

/// A trait value with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrait {
    /// Trait name.
    pub name: String,
    /// The value as JSON text.
    pub value_json: String,
    /// Source that set it.
    pub source_key: i64,
    /// Message that set it.
    pub message_id: String,
    /// Event time of that message (Unix ms).
    pub timestamp_ms: i64,
    /// Log position of that message (breaks ties between equal times).
    pub seq: i64,
}

/// A merge of two profiles, kept forever as the profile's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    /// The surviving profile.
    pub winner: ProfileId,
    /// The profile merged into it.
    pub loser: ProfileId,
    /// Log position of the message that caused it.
    pub seq: i64,
    /// That message's id.
    pub message_id: String,
    /// The rule, e.g. `shared identifier email`.
    pub rule: String,
    /// Event time (Unix ms).
    pub timestamp_ms: i64,
}

/// A link the rules refused (e.g. two user ids on one profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    /// Log position of the message.
    pub seq: i64,
    /// That message's id.
    pub message_id: String,
    /// The profile the message was attributed to, if any.
    pub profile_id: Option<ProfileId>,
    /// Identifier type that was dropped.
    pub dropped_type: String,
    /// What happened, without identifier values.
    pub detail: String,
}

/// One consent decision of a person for a purpose, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The purpose (lowercase), e.g. `marketing`.
    pub purpose: String,
    /// Whether consent was granted (`false`: refused or withdrawn).
    pub granted: bool,
    /// Source that sent it.
    pub source_key: i64,
    /// Message that carried it.
    pub message_id: String,
    /// Event time of that message (Unix ms).
    pub timestamp_ms: i64,
    /// Log position of that message (breaks ties between equal times).
    pub seq: i64,
}

/// A group (account) membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    /// The group id.
    pub group_id: String,
    /// The group's traits as JSON text (latest wins).
    pub traits_json: String,
    /// Event time of the latest group call (Unix ms).
    pub timestamp_ms: i64,
}

/// Summary of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSummary {
    /// Its id.
    pub id: ProfileId,
    /// The profile it was merged into, when it is no longer canonical.
    pub merged_into: Option<ProfileId>,
    /// Earliest event time (Unix ms).
    pub first_seen_ms: i64,
    /// Latest event time (Unix ms).
    pub last_seen_ms: i64,
    /// How many profiles were merged into it.
    pub merge_count: i64,
    /// How many events it has.
    pub event_count: i64,
}

/// Which canonical profiles [`ProfileStore::search`] lists, in what order, from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSearch {
    /// Only profiles with an identifier (of any type) whose value starts with one of
    /// these (e.g. the text as typed and its lowercase form).
    pub identifier_prefixes: Vec<String>,
    /// Only profiles whose trait `name` has one of these JSON texts (`"pro"`, `42`);
    /// every entry must hold.
    pub traits: Vec<(String, Vec<String>)>,
    /// Only profiles with an identifier value or a trait value containing this text
    /// (ASCII case-insensitive).
    pub text: Option<String>,
    /// Oldest last-seen first (`false`: newest first).
    pub ascending: bool,
    /// Continue after this `(last_seen_ms, id)` (a previous page's `next`).
    pub after: Option<(i64, ProfileId)>,
    /// At most this many.
    pub limit: usize,
    /// A filtered page examines at most this many profiles (in last-seen order) and
    /// then ends, possibly short or empty, with `next` where the scan stopped — so a
    /// rare match never costs a scan of every profile in one request.
    pub scan_budget: usize,
}

/// One page of [`ProfileStore::search`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePage {
    /// The matching profiles.
    pub profiles: Vec<ProfileSummary>,
    /// `(last_seen_ms, id)` to continue after; `None` once every match was listed.
    pub next: Option<(i64, ProfileId)>,
}

/// Writes of the processor, inside one transaction.
pub trait ProfileTxn {
    /// The profile owning an identifier.
    fn profile_of(&mut self, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>>;
    /// A profile's identifier counts by type.
    fn identifier_counts(&mut self, profile: ProfileId) -> StoreResult<Vec<(String, u32)>>;
    /// A profile's summary.
    fn summary(&mut self, profile: ProfileId) -> StoreResult<Option<ProfileSummary>>;
    /// Creates a profile.
    fn create_profile(&mut self, profile: ProfileId, seen_ms: i64) -> StoreResult<()>;
    /// Attaches an identifier to a profile.
    fn link(&mut self, link: &IdentityLink) -> StoreResult<()>;
    /// Moves everything of `record.loser` into `record.winner` and records the merge.
    /// Traits are not moved: the caller reconciles them first with [`ProfileTxn::traits`].
    fn merge(&mut self, record: &MergeRecord) -> StoreResult<()>;
    /// Every trait of a profile.
    fn traits(&mut self, profile: ProfileId) -> StoreResult<Vec<StoredTrait>>;
    /// One trait of a profile.
    fn trait_value(&mut self, profile: ProfileId, name: &str) -> StoreResult<Option<StoredTrait>>;
    /// Sets a trait.
    fn set_trait(&mut self, profile: ProfileId, value: &StoredTrait) -> StoreResult<()>;
    /// Attributes an event to a profile and widens its first/last seen.
    fn add_event(&mut self, profile: ProfileId, seq: i64, timestamp_ms: i64) -> StoreResult<()>;
    /// Sets a group membership.
    fn set_group(&mut self, profile: ProfileId, group: &GroupMembership) -> StoreResult<()>;
    /// Records a refused link.
    fn record_conflict(&mut self, conflict: &ConflictRecord) -> StoreResult<()>;
    /// Appends a consent decision to the profile's consent history.
    fn record_consent(&mut self, profile: ProfileId, record: &ConsentRecord) -> StoreResult<()>;
}

/// Work run inside [`ProfileStore::rebuild`]: re-applies the given event `seq`s.
pub type RebuildWork<'a> = dyn FnMut(&mut dyn ProfileTxn, &[i64]) -> StoreResult<()> + 'a;

/// Derived profile state.
pub trait ProfileStore: Send + Sync {
    /// The last log `seq` applied.
    fn checkpoint(&self) -> StoreResult<i64>;
    /// Runs `work` in one transaction and, with it, moves the checkpoint from
    /// `after_seq` to `through_seq`. Returns `false`, applying nothing, when the
    /// checkpoint is no longer `after_seq` (another processor got there first), so
    /// no event is ever applied twice, even by two processes.
    fn apply(
        &self,
        after_seq: i64,
        through_seq: i64,
        work: &mut dyn FnMut(&mut dyn ProfileTxn) -> StoreResult<()>,
    ) -> StoreResult<bool>;
    /// Deletes the given profiles (and those merged into them) with everything
    /// attached (identities, traits, events, groups, consent, merges, conflicts), in
    /// one transaction with `work`, which rebuilds them; hands `work` the `seq`s of
    /// their events in log order, read before deleting, to re-apply.
    fn rebuild(&self, profiles: &[ProfileId], work: &mut RebuildWork<'_>) -> StoreResult<()>;
    /// Deletes all derived state and resets the checkpoint to 0.
    fn reset(&self) -> StoreResult<()>;
    /// The canonical profile owning an identifier.
    fn find(&self, id_type: &str, value: &str) -> StoreResult<Option<ProfileId>>;
    /// A profile (canonical or merged).
    fn profile(&self, id: ProfileId) -> StoreResult<Option<ProfileSummary>>;
    /// A profile's identifiers.
    fn identities(&self, id: ProfileId) -> StoreResult<Vec<IdentityLink>>;
    /// The distinct types of a profile's identifiers, sorted (what audiences need:
    /// "has an email"), without reading each identifier. The default derives them
    /// from [`ProfileStore::identities`]; engines answer from an index.
    fn identifier_types(&self, id: ProfileId) -> StoreResult<Vec<String>> {
        let mut types: Vec<String> = self
            .identities(id)?
            .into_iter()
            .map(|link| link.id_type)
            .collect();
        types.sort();
        types.dedup();
        Ok(types)
    }
    /// A profile's traits.
    fn traits(&self, id: ProfileId) -> StoreResult<Vec<StoredTrait>>;
    /// A profile's event `seq`s, newest first, below `before_seq`.
    fn event_seqs(
        &self,
        id: ProfileId,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<i64>>;
    /// Merges into a profile, oldest first.
    fn merges(&self, id: ProfileId) -> StoreResult<Vec<MergeRecord>>;
    /// A profile's group memberships.
    fn groups(&self, id: ProfileId) -> StoreResult<Vec<GroupMembership>>;
    /// A profile's consent history, oldest first (by event time, then log position).
    fn consent(&self, id: ProfileId) -> StoreResult<Vec<ConsentRecord>>;
    /// Profiles merged into a canonical profile.
    fn merged_members(&self, id: ProfileId) -> StoreResult<Vec<ProfileId>>;
    /// Erases canonical profiles and every profile merged into them, with all that
    /// is attached (identities, traits, events, groups, consent, merges, conflicts),
    /// in one transaction. Returns the ids removed.
    fn erase(&self, profiles: &[ProfileId]) -> StoreResult<Vec<ProfileId>>;
    /// The profiles the events with these `seq`s are attributed to (reads every
    /// profile's timeline: meant for rare work such as erasure).
    fn owners_of_events(&self, seqs: &[i64]) -> StoreResult<Vec<ProfileId>>;
    /// Makes deleted rows unrecoverable from the files (checkpoints and truncates
    /// any write-ahead file; deleted content is overwritten by the engine).
    fn purge_deleted(&self) -> StoreResult<()>;
    /// The newest conflicts.
    fn conflicts(&self, limit: usize) -> StoreResult<Vec<ConflictRecord>>;
    /// Ids of canonical profiles greater than `after`, ascending, at most `limit`.
    fn canonical_profiles(&self, after: ProfileId, limit: usize) -> StoreResult<Vec<ProfileId>>;
    /// Number of canonical profiles.
    fn profile_count(&self) -> StoreResult<i64>;
    /// Canonical profiles matching `query`, by last-seen time (ties by id), one page.
    /// Walks an index on the last-seen time; an identifier prefix few identifiers
    /// have is looked up in the identifier index first.
    fn search(&self, query: &ProfileSearch) -> StoreResult<ProfilePage>;
    /// Bulk read for rebuilding in-memory indexes: `(profile, seq)` of every attributed
    /// event after `after`, in `(profile, seq)` order, at most `limit`.
    fn event_owner_page(
        &self,
        after: (ProfileId, i64),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, i64)>>;
    /// Bulk read: `(profile, name, value_json)` of every trait after `after`, in
    /// `(profile, name)` order, at most `limit`.
    fn trait_page(
        &self,
        after: (ProfileId, &str),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, String, String)>>;
    /// Bulk read: distinct `(profile, identifier type)` after `after`, in that order,
    /// at most `limit`.
    fn identifier_type_page(
        &self,
        after: (ProfileId, &str),
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, String)>>;
}
