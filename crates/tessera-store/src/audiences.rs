//! Audience memberships and their change feed.
//!
//! Memberships are derived (the audience engine computes them from profiles), but
//! they are kept across `tessera replay`: a replay that yields the same members
//! must not announce them again. The change feed (`Audience Entered` /
//! `Audience Exited`) is append-only with increasing `seq`s, never reused (also after
//! erasure deleted the newest rows), for activation to consume in order.

use crate::StoreResult;
use crate::profiles::ProfileId;

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The audience key.
    pub audience: String,
    /// The profile.
    pub profile_id: ProfileId,
    /// Entered (`true`) or exited.
    pub entered: bool,
    /// When it was decided (Unix ms).
    pub at_ms: i64,
    /// Why: `event` (realtime), `schedule` (a window expired), `computed` (batch
    /// computation of a new or edited audience), `merged` (the profile was merged
    /// into another), `deleted` (the audience was deleted).
    pub reason: String,
}

/// A change as stored, with its position in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// Position in the feed (increasing).
    pub seq: i64,
    /// The change.
    pub change: MembershipChange,
}

/// One membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The audience key.
    pub audience: String,
    /// The profile.
    pub profile_id: ProfileId,
    /// Member since (Unix ms).
    pub since_ms: i64,
}

/// Memberships and the change feed.
pub trait AudienceStore: Send + Sync {
    /// Applies changes in one transaction: members added or removed, and each change
    /// that changed a membership appended to the feed (entering twice, or leaving an
    /// audience one is not in, announces nothing).
    fn apply_changes(&self, changes: &[MembershipChange]) -> StoreResult<()>;
    /// Members of an audience with a profile id above `after`, ascending.
    fn members(
        &self,
        audience: &str,
        after: ProfileId,
        limit: usize,
    ) -> StoreResult<Vec<Membership>>;
    /// Audiences that have at least one stored member.
    fn audiences_with_members(&self) -> StoreResult<Vec<String>>;
    /// Number of members of an audience.
    fn member_count(&self, audience: &str) -> StoreResult<i64>;
    /// The audiences a profile is in.
    fn memberships(&self, profile: ProfileId) -> StoreResult<Vec<Membership>>;
    /// A profile's change-feed rows, oldest first.
    fn profile_changes(&self, profile: ProfileId) -> StoreResult<Vec<StoredChange>>;
    /// Deletes every membership and change-feed row of these profiles (erasure).
    fn erase_profiles(&self, profiles: &[ProfileId]) -> StoreResult<()>;
    /// Makes deleted rows unrecoverable from the files.
    fn purge_deleted(&self) -> StoreResult<()>;
    /// Changes after `after_seq`, oldest first; with `audience`, only its own.
    fn changes(
        &self,
        after_seq: i64,
        audience: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<StoredChange>>;
}
