//! The storage boundary: capability traits and plain data, no engine.
//!
//! Engines live in their own crates (`tessera-store-sqlite`, later PostgreSQL) and
//! implement these traits with the same behaviour; only the binary picks one. The
//! domain crates and the server see nothing but these traits.
//!
//! Invariants every engine keeps:
//! - [`EventLog::append`] returns only after the appended events are durable (they
//!   survive `kill -9` and power loss to the extent the OS honours `fsync`).
//! - Events are read back in log order (`seq` ascending), and `seq` is never reused,
//!   even after deletions, so a consumer's checkpoint stays valid.
//! - A repeated `(source, messageId)` is stored once when it arrives within the
//!   engine's dedup window (SQLite: `DedupConfig`, 7 days by default, also across a
//!   restart and between processes); a repeat arriving later may be stored again.
//! - [`EventLog::delete_events`] removes events physically, and once
//!   [`EventLog::purge_deleted`] returned no file of the engine holds their bytes,
//!   not even in free or unallocated space (needed for erasure, docs/privacy.md).
//!
//! The store contract suite (`testkit`, feature `testkit`) checks these and every
//! other promise of the traits against an engine.

use std::fmt;

pub mod activation;
pub mod audiences;
pub mod fault;
pub mod keys;
pub mod profiles;
#[cfg(feature = "testkit")]
pub mod testkit;

/// What went wrong inside a store.
///
/// The variants are what a caller can act on: [`StoreError::Unavailable`] may
/// succeed when retried later, [`StoreError::Conflict`] lost to a concurrent change
/// (re-read and retry), [`StoreError::Corrupt`] needs an operator, and
/// [`StoreError::Engine`] is anything else the engine reported.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed in a way it cannot classify; the detail is for the log.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The store cannot answer now — busy, locked, a full disk, an I/O error, a lost
    /// connection — and may later: retry with backoff.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A concurrent change or a uniqueness rule refused the write: re-read and retry,
    /// or report the conflict.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// Stored data is damaged or not what this version understands: an operator must
    /// restore or repair it; retrying does not help.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The kind of a [`StoreError`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// [`StoreError::Engine`].
    Engine,
    /// [`StoreError::NotFound`].
    NotFound,
    /// [`StoreError::Unavailable`].
    Unavailable,
    /// [`StoreError::Conflict`].
    Conflict,
    /// [`StoreError::Corrupt`].
    Corrupt,
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Engine(_) => StoreErrorKind::Engine,
            StoreError::NotFound(_) => StoreErrorKind::NotFound,
            StoreError::Unavailable(_) => StoreErrorKind::Unavailable,
            StoreError::Conflict(_) => StoreErrorKind::Conflict,
            StoreError::Corrupt(_) => StoreErrorKind::Corrupt,
        }
    }

    /// Whether the same call may succeed when repeated (later, or after re-reading).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            StoreErrorKind::Unavailable | StoreErrorKind::Conflict
        )
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// One event to append: the normalized message and what the log keeps beside it.
///
/// Nothing else is stored in columns: readers parse the payload, and erasure finds a
/// person's events by searching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Internal key of the source that sent it.
    pub source_key: i64,
    /// The message's `messageId` (unique per source).
    pub message_id: String,
    /// When it was received, Unix milliseconds.
    pub received_at_ms: i64,
    /// The stored message as JSON text.
    pub payload: String,
}

/// A message that was refused, kept (without PII) so operators can see why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRecord {
    /// Internal key of the source, when the request was authenticated.
    pub source_key: Option<i64>,
    /// When it was received, Unix milliseconds.
    pub received_at_ms: i64,
    /// The stable error code.
    pub code: String,
    /// The explanation (never a field value).
    pub message: String,
    /// The message type, when known.
    pub message_type: Option<String>,
    /// The `messageId`, when known.
    pub message_id: Option<String>,
}

/// The events and rejections of one request; appended together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendBatch {
    /// Valid events, in request order.
    pub events: Vec<EventRecord>,
    /// Rejected messages of the same request.
    pub rejections: Vec<RejectionRecord>,
}

/// What one [`AppendBatch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events newly stored.
    pub appended: usize,
    /// Events whose `(source, messageId)` was already stored within the engine's
    /// dedup window, or came earlier in the same append.
    pub duplicates: usize,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log (ascending, never reused).
    pub seq: i64,
    /// Internal key of the source.
    pub source_key: i64,
    /// When it was received, Unix milliseconds.
    pub received_at_ms: i64,
    /// The stored message as JSON text.
    pub payload: String,
}

/// A stored event's new message (see [`EventLog::rewrite_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenEvent {
    /// The event's position in the log.
    pub seq: i64,
    /// Its new message as JSON text.
    pub payload: String,
}

/// Which events a scan returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events with `seq` greater than this.
    pub after_seq: Option<i64>,
    /// Only events received at or after this time (Unix ms).
    pub received_since_ms: Option<i64>,
    /// Only events of this source.
    pub source_key: Option<i64>,
    /// At most this many events.
    pub limit: Option<usize>,
}

/// A stored rejection, newest first when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRejection {
    /// Row id.
    pub id: i64,
    /// The rejection.
    pub record: RejectionRecord,
}

/// The append-only event log: the single source of truth.
pub trait EventLog: Send + Sync {
    /// Appends the batches in one durable commit; returns one outcome per batch.
    fn append(&self, batches: &[AppendBatch]) -> StoreResult<Vec<AppendOutcome>>;

    /// Appends the batches in one commit that need not be durable yet: nothing of it
    /// may be acknowledged before a later [`EventLog::sync`] returned. Lets a group
    /// commit prepare the next group while this one is fsynced. Readers of this log
    /// see the events only once they are durable.
    fn append_unsynced(&self, batches: &[AppendBatch]) -> StoreResult<Vec<AppendOutcome>> {
        self.append(batches)
    }

    /// Makes every [`EventLog::append_unsynced`] that returned before this call durable.
    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The highest `seq` known to be durable, when the engine tracks it without a
    /// read (after [`EventLog::sync`] returned, it covers what that sync made
    /// durable); `None` when it does not. Latency metrics only.
    fn durable_seq(&self) -> Option<i64> {
        None
    }

    /// Calls `visit` for each matching event in log order; returns how many matched.
    /// Reads in pages, so a long export holds no long transaction.
    fn scan(
        &self,
        filter: &EventFilter,
        visit: &mut dyn FnMut(StoredEvent) -> StoreResult<()>,
    ) -> StoreResult<u64>;

    /// The events with these `seq`s, in log order, each once (missing ones are
    /// skipped).
    fn get(&self, seqs: &[i64]) -> StoreResult<Vec<StoredEvent>>;

    /// The highest `seq` in the log (0 when empty). Deleting the newest events lowers
    /// it to the highest remaining one; the next append still gets a higher `seq`
    /// than any handed out before.
    fn last_seq(&self) -> StoreResult<i64>;

    /// Physically deletes the events with these `seq`s; returns how many were deleted.
    fn delete_events(&self, seqs: &[i64]) -> StoreResult<u64>;

    /// Replaces stored events' messages (erasure of another person's identifiers
    /// they carry); the events keep their `seq`. Returns how many were rewritten.
    fn rewrite_events(&self, events: &[RewrittenEvent]) -> StoreResult<u64>;

    /// Makes what [`EventLog::delete_events`] deleted and [`EventLog::rewrite_events`]
    /// replaced unrecoverable from every file of the engine, whatever copies its page
    /// layout left behind (erasure calls it once, after both). May take as long as a
    /// copy of the whole log.
    fn purge_deleted(&self) -> StoreResult<()>;

    /// `seq`s of events whose stored message contains any of `needles`
    /// (ASCII case-insensitive, literal text: no wildcards), ascending; empty needles
    /// match nothing. Reads the whole log.
    fn find_containing(&self, needles: &[String]) -> StoreResult<Vec<i64>>;

    /// The newest rejections, newest first.
    fn recent_rejections(&self, limit: usize) -> StoreResult<Vec<StoredRejection>>;

    /// Bytes the log occupies on disk.
    fn size_bytes(&self) -> StoreResult<u64>;

    /// Moves committed data from any write-ahead file into the main file.
    /// Engines without one do nothing.
    fn checkpoint(&self) -> StoreResult<()>;

    /// Writes (and commits, without waiting for an fsync) a few bytes that hold no
    /// event, to learn whether the storage takes writes again after a commit failed
    /// (a full disk). Engines that cannot fail a write answer `Ok`.
    fn probe_write(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// A source: one app or system that sends events with its own write key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Internal key (events reference it).
    pub key: i64,
    /// Public id, e.g. `src_4f9XkQ2m7Rb1LcZt`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Whether its write key is accepted.
    pub enabled: bool,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// First characters of the write key, to tell keys apart without revealing them.
    pub write_key_prefix: String,
}

/// A source to create; the write key arrives already hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSource {
    /// Public id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// SHA-256 of the write key.
    pub write_key_hash: String,
    /// First characters of the write key.
    pub write_key_prefix: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
}

/// A scoped API token (its secret is only ever stored hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public id (`tok_...`).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Scopes, e.g. `admin`, `read:profiles`.
    pub scopes: Vec<String>,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Revoked (Unix ms), when it was.
    pub revoked_at_ms: Option<i64>,
    /// The API token that created it (`None`: created with the admin token or the
    /// CLI). Revoking a token revokes every token it created, and theirs.
    pub parent_id: Option<String>,
}

/// A token just revoked, with the tokens revoked with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedToken {
    /// The token as it now is.
    pub token: ApiToken,
    /// Ids of the tokens it created, directly or through others, revoked by this
    /// revocation (those revoked before are not listed).
    pub descendants: Vec<String>,
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    /// The token's public fields.
    pub token: ApiToken,
    /// SHA-256 of the secret.
    pub secret_hash: String,
}

/// One entry of the audit log: who did what to what, when, with the state before and
/// after (JSON, secrets and identifier values never included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub id: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who: `admin-token`, `token:tok_…`, `cli:<user>`.
    pub actor: String,
    /// What, e.g. `source.create`, `audience.update`.
    pub action: String,
    /// The object acted on, e.g. a source id or an audience key.
    pub target: String,
    /// The object before, as JSON.
    pub before: Option<String>,
    /// The object after, as JSON.
    pub after: Option<String>,
}

/// Configuration state: sources and settings.
pub trait Catalog: Send + Sync {
    /// Stores a new source; [`StoreError::Conflict`] when its id or write key hash is
    /// already taken.
    fn create_source(&self, source: &NewSource) -> StoreResult<Source>;
    /// Every source, oldest first.
    fn list_sources(&self) -> StoreResult<Vec<Source>>;
    /// The source with this public id or, failing that, this exact name.
    fn find_source(&self, id_or_name: &str) -> StoreResult<Option<Source>>;
    /// The source whose write key hashes to this.
    fn source_by_key_hash(&self, write_key_hash: &str) -> StoreResult<Option<Source>>;
    /// Disables a source; its key is refused from then on (the source is kept,
    /// `enabled` false). [`StoreError::NotFound`] for an unknown id.
    fn disable_source(&self, id: &str) -> StoreResult<Source>;
    /// A setting's value.
    fn setting(&self, name: &str) -> StoreResult<Option<String>>;
    /// Sets a setting.
    fn set_setting(&self, name: &str, value: &str) -> StoreResult<()>;
    /// A setting's value, storing `value` first when it has none (atomic: two
    /// processes racing get the same answer).
    fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String>;
    /// Every setting whose name starts with `prefix` (literal text), by name.
    fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, String)>>;
    /// Deletes a setting; returns whether it existed.
    fn delete_setting(&self, name: &str) -> StoreResult<bool>;
    /// Stores a new API token. One whose parent does not exist or is revoked is not
    /// stored: `NotFound` (its parent was revoked while it was being created).
    fn create_token(&self, token: &NewApiToken) -> StoreResult<()>;
    /// Every API token, oldest first (revoked ones included).
    fn list_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// The token whose secret hashes to this.
    fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>>;
    /// Revokes a token and every token it created (recursively), at once; the token
    /// as it now is with those revoked along, or `None` when no token has that id.
    /// Revoking a revoked token keeps its first revocation time.
    fn revoke_token(&self, id: &str, at_ms: i64) -> StoreResult<Option<RevokedToken>>;
    /// Appends to the audit log (its `id` is assigned; the log is append-only).
    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Stores a new privacy request.
    fn create_privacy_request(&self, request: &PrivacyRequest) -> StoreResult<()>;
    /// A privacy request by id.
    fn privacy_request(&self, id: &str) -> StoreResult<Option<PrivacyRequest>>;
    /// Requests still open (`pending`, `running`, `purging`), oldest first.
    fn open_privacy_requests(&self) -> StoreResult<Vec<PrivacyRequest>>;
    /// Updates a request's status and result (`None` keeps the stored result);
    /// `completed_at_ms` set clears its identifier and plan.
    fn update_privacy_request(
        &self,
        id: &str,
        status: &str,
        result_json: Option<&str>,
        completed_at_ms: Option<i64>,
    ) -> StoreResult<()>;
    /// Stores a running request's plan (see [`PrivacyRequest::plan_json`]).
    fn set_privacy_plan(&self, id: &str, plan_json: &str) -> StoreResult<()>;
    /// Adds suppression hashes (new events carrying them are suppressed).
    fn add_suppressions(&self, hashes: &[String], request_id: &str, at_ms: i64) -> StoreResult<()>;
    /// Every suppression hash.
    fn suppressions(&self) -> StoreResult<Vec<String>>;
    /// Makes deleted rows unrecoverable from the files.
    fn purge_deleted(&self) -> StoreResult<()>;
    /// Audit entries with an id above `after_id`, oldest first; with `action_prefix`,
    /// only actions starting with it.
    fn audit_entries(
        &self,
        after_id: i64,
        action_prefix: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>>;
}

/// Kind of a privacy request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivacyRequestKind {
    /// Access request (GDPR art. 15): a copy of the person's data.
    Export,
    /// Erasure (GDPR art. 17): the person's data deleted.
    Erasure,
}

impl PrivacyRequestKind {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Erasure => "erasure",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "export" => Some(Self::Export),
            "erasure" => Some(Self::Erasure),
            _ => None,
        }
    }
}

/// A privacy request (access or erasure) and its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyRequest {
    /// Its id (`prq_…`).
    pub id: String,
    /// What was asked.
    pub kind: PrivacyRequestKind,
    /// The identifier (`type:value`) while the request is pending; `None` once it
    /// completed (an erasure must not keep what it erased).
    pub identifier: Option<String>,
    /// Salted hash of the identifier, kept to match later questions about it.
    pub identifier_hash: String,
    /// `pending`, `running`, `purging` (completed, the catalog's deleted bytes not
    /// yet purged: still open), `completed` or `failed`.
    pub status: String,
    /// Who asked (`admin-token`, `token:tok_…`, `cli:<user>`).
    pub actor: String,
    /// When it was asked (Unix ms).
    pub requested_at_ms: i64,
    /// When it completed (Unix ms).
    pub completed_at_ms: Option<i64>,
    /// What was done, as JSON (counts, never values).
    pub result_json: Option<String>,
    /// While it runs: what it will remove (identifiers, profiles, events), kept so a
    /// retry after a crash erases the whole person; cleared on completion.
    pub plan_json: Option<String>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.id)
    }
}
