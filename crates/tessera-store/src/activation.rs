//! Activation state: the delivery outbox and journey runs.
//!
//! The outbox is durable: a delivery is written before anything is sent, keyed by an
//! idempotency key (unique), so fan-out can be repeated after a crash without
//! sending twice, and the key is what receivers use to de-duplicate retries.

use crate::StoreResult;
use crate::profiles::ProfileId;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Accepted by the receiver.
    Delivered,
    /// Given up (attempts exhausted or a non-retryable answer); can be retried by hand.
    Dead,
    /// Never sent: no consent for its purpose, or a frequency cap.
    Blocked,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Delivered, Self::Dead, Self::Blocked];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Blocked => "blocked",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A delivery to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Destination id.
    pub destination: String,
    /// The person it is about (`None` for deliveries about no one).
    pub profile_id: Option<ProfileId>,
    /// Unique per delivery; repeated fan-out of the same thing is ignored.
    pub idempotency_key: String,
    /// `webhook`, `email`, `sms`, `crm` or `file` (frequency caps count per channel).
    pub channel: String,
    /// The consent purpose it needs.
    pub purpose: Option<String>,
    /// What to send, as JSON (rendered when enqueued).
    pub payload: String,
    /// When the event that caused it was acknowledged (Unix ms), for latency.
    pub origin_ms: i64,
    /// `Pending`, or `Blocked` with `reason`.
    pub status: DeliveryStatus,
    /// Why it is blocked.
    pub reason: Option<String>,
    /// The journey that sent it, if any.
    pub journey: Option<String>,
    /// When it was queued (Unix ms, activation's clock): its first due time, and
    /// what frequency caps count from.
    pub queued_ms: i64,
}

/// A delivery in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id (ascending in enqueue order).
    pub id: i64,
    /// What was enqueued.
    pub new: NewDelivery,
    /// Attempts made.
    pub attempts: u32,
    /// Earliest next attempt (Unix ms).
    pub next_attempt_ms: i64,
    /// The last error (status code and reason; never the payload).
    pub last_error: Option<String>,
    /// When it was enqueued (Unix ms).
    pub created_ms: i64,
    /// When it was delivered (Unix ms).
    pub delivered_ms: Option<i64>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this destination.
    pub destination: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this profile.
    pub profile_id: Option<ProfileId>,
    /// Only ids above this.
    pub after_id: i64,
    /// At most this many.
    pub limit: usize,
}

/// One person's run through a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyRun {
    /// Row id.
    pub id: i64,
    /// Journey key.
    pub journey: String,
    /// The person.
    pub profile_id: ProfileId,
    /// `active`, `completed` or `exited`.
    pub state: String,
    /// Position in the journey's compiled program.
    pub step: u32,
    /// When a wait ends (Unix ms).
    pub wake_at_ms: Option<i64>,
    /// The event a `wait until` step waits for.
    pub waiting_event: Option<String>,
    /// When the person entered (Unix ms).
    pub entered_ms: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
    /// What triggered it (`event:<seq>`, `change:<seq>`): one run per trigger, so
    /// fan-out repeated after a crash never starts a second run.
    pub trigger_key: String,
    /// The triggering event (JSON), for templates.
    pub trigger_json: String,
    /// Steps taken, as a JSON array of `{"step", "action", "at", …}`.
    pub history_json: String,
}

/// The outbox and journey runs.
pub trait ActivationStore: Send + Sync {
    /// Writes deliveries (those whose idempotency key exists, or came earlier in the
    /// call, are ignored) and moves the named cursors, in one transaction: a reader
    /// that sees a cursor moved sees its deliveries. A cursor never moves back (a
    /// lower value is ignored). Returns how many deliveries were new.
    fn enqueue(&self, deliveries: &[NewDelivery], cursors: &[(&str, i64)]) -> StoreResult<usize>;
    /// A fan-out cursor (0 when never set).
    fn cursor(&self, name: &str) -> StoreResult<i64>;
    /// Pending deliveries of a destination due at `now_ms`, oldest first, at most
    /// `limit`, never two of one profile and never one behind an earlier pending
    /// delivery of its profile (per-profile order).
    fn due(&self, destination: &str, now_ms: i64, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// The earliest next attempt among the deliveries [`Self::due`] could return
    /// (the oldest pending one of each profile).
    fn next_due(&self, destination: &str) -> StoreResult<Option<i64>>;
    /// Records the outcome of attempts.
    fn record(&self, outcomes: &[DeliveryOutcome]) -> StoreResult<()>;
    /// Deliveries matching a filter, by id.
    fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    /// Count per status of a destination's deliveries.
    fn counts(&self, destination: &str) -> StoreResult<Vec<(DeliveryStatus, i64)>>;
    /// Dead deliveries back to pending (all of a destination, or the given ids);
    /// returns how many.
    fn retry_dead(&self, destination: Option<&str>, ids: &[i64], now_ms: i64)
    -> StoreResult<usize>;
    /// Deliveries of a channel to a profile enqueued since `since_ms`, not blocked
    /// (frequency caps).
    fn recent_sends(&self, profile: ProfileId, channel: &str, since_ms: i64) -> StoreResult<i64>;
    /// Starts a run with the deliveries of its first steps; `None` (nothing written)
    /// when the person already has an active run of the journey or this trigger
    /// already started one.
    fn start_run(&self, run: &JourneyRun, sends: &[NewDelivery]) -> StoreResult<Option<i64>>;
    /// Saves a run's new state together with the deliveries its step enqueued —
    /// only while the stored run is still active (a journey edit may have ended it
    /// meanwhile); returns whether it was saved.
    fn update_run(&self, run: &JourneyRun, sends: &[NewDelivery]) -> StoreResult<bool>;
    /// Active runs whose wait ended by `now_ms`.
    fn due_runs(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<JourneyRun>>;
    /// Active runs of a profile (any journey).
    fn active_runs(&self, profile: ProfileId) -> StoreResult<Vec<JourneyRun>>;
    /// Every run of a profile, newest first.
    fn profile_runs(&self, profile: ProfileId) -> StoreResult<Vec<JourneyRun>>;
    /// The newest run of a journey for a profile.
    fn last_run(&self, journey: &str, profile: ProfileId) -> StoreResult<Option<JourneyRun>>;
    /// Ends every active run of a journey (it was changed or deleted).
    fn exit_runs(&self, journey: &str, now_ms: i64, reason: &str) -> StoreResult<usize>;
    /// Count per state of a journey's runs.
    fn run_counts(&self, journey: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Rewrites the payloads of deliveries, and the trigger messages of journey runs,
    /// that contain any of `needles` (ASCII case-insensitive): `payload` and
    /// `trigger` return the new text, or `None` to keep it. Returns how many changed
    /// (erasure of another person's identifiers).
    fn rewrite_payloads(
        &self,
        needles: &[String],
        payload: &mut dyn FnMut(&str) -> Option<String>,
        trigger: &mut dyn FnMut(&str) -> Option<String>,
    ) -> StoreResult<u64>;
    /// Deletes the deliveries made from these events and the runs they triggered
    /// (erasure of the events, whoever they were attributed to). The fan-out's keys
    /// say which: an event's deliveries have the idempotency key
    /// `e<seq>:<destination>`, the runs it triggered the trigger key `event:<seq>`.
    fn erase_events(&self, seqs: &[i64]) -> StoreResult<()>;
    /// Deletes every delivery and run of these profiles (erasure).
    fn erase_profiles(&self, profiles: &[ProfileId]) -> StoreResult<()>;
    /// Makes deleted rows unrecoverable from the files.
    fn purge_deleted(&self) -> StoreResult<()>;
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The delivery.
    pub id: i64,
    /// Its new status.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Next attempt (pending) in Unix ms.
    pub next_attempt_ms: i64,
    /// The error, when it failed.
    pub error: Option<String>,
    /// When it was delivered.
    pub delivered_ms: Option<i64>,
}
