//! Activation: Tessera's events, traits and audience changes sent out — reliably, in
//! order, only with consent — and journeys.
//!
//! - [`config`]: destinations (webhook, email, SMS, CRM, file) and journeys as JSON.
//! - [`fanout`]: a thread reads the event log (behind the processor, so each event's
//!   profile is known) and the audience change feed, and writes deliveries to the
//!   durable outbox ([`tessera_store::activation`]) — each with an idempotency key, so
//!   repeating fan-out after a crash sends nothing twice — and starts and advances
//!   journeys.
//! - [`delivery`]: one worker per destination sends from the outbox with retries,
//!   backoff, `Retry-After`, rate limit, concurrency, batching, per-profile order, a
//!   circuit breaker and a dead-letter state.
//! - The consent gate: every delivery declares a purpose (from its destination); a
//!   person without a granted decision for it gets a `blocked` delivery — counted and
//!   listed, never sent — checked when queued and again before each attempt.

pub mod config;
pub mod delivery;
pub mod engagement;
pub mod error;
pub mod fanout;
pub mod files;
pub mod network;
pub mod references;
pub mod render;
pub mod senders;

use crate::config::{CompiledJourney, ConfigError, Destination, Journey};
use crate::delivery::Observer;
use crate::senders::Clients;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tessera_audience::engine::AudienceEngine;
use tessera_core::time::Clock;
use tessera_store::activation::ActivationStore;
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{Catalog, EventLog, StoreError};

/// An activation error.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A definition is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No destination or journey has that key.
    #[error("{1}")]
    NotFound(Definition, String),
    /// It exists already.
    #[error("{1}")]
    Exists(Definition, String),
    /// A template's render of a sample context exceeds the render budget (fuel,
    /// output size or nesting).
    #[error("{0}")]
    TemplateBudget(ConfigError),
    /// A masked secret (`"***"`) was kept while the place it is sent to changed.
    #[error("{0}")]
    SecretRequired(String),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Activation::save_journey`] answers.
#[derive(Debug)]
pub struct SavedJourney {
    /// The definition it replaced.
    pub previous: Option<Arc<CompiledJourney>>,
    /// Event, trait and property names the journey uses that were never seen in the
    /// data, each with the closest observed name.
    pub warnings: Vec<tessera_audience::names::NameWarning>,
}

/// Which kind of definition an [`ActivationError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    /// A destination.
    Destination,
    /// A journey.
    Journey,
}

impl tessera_core::CodedError for ActivationError {
    fn code(&self) -> tessera_core::ErrorCode {
        use tessera_core::ErrorCode;
        match self {
            ActivationError::Config(_) => ErrorCode::InvalidActivation,
            ActivationError::NotFound(Definition::Journey, _) => ErrorCode::JourneyNotFound,
            ActivationError::NotFound(Definition::Destination, _) => ErrorCode::DestinationNotFound,
            ActivationError::Exists(Definition::Journey, _) => ErrorCode::JourneyExists,
            ActivationError::Exists(Definition::Destination, _) => ErrorCode::DestinationConflict,
            ActivationError::TemplateBudget(_) => ErrorCode::TemplateOverBudget,
            ActivationError::SecretRequired(_) => ErrorCode::SecretRequired,
            ActivationError::Store(_) => ErrorCode::InternalError,
        }
    }
}

/// Everything activation reads and writes.
pub struct Stores {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Profiles (owners, traits, consent).
    pub profiles: Arc<dyn ProfileStore>,
    /// Sources and definitions.
    pub catalog: Arc<dyn Catalog>,
    /// The outbox and journey runs.
    pub store: Arc<dyn ActivationStore>,
    /// The audience engine (change feed, branch conditions, computed traits).
    pub audiences: Arc<AudienceEngine>,
}

/// Where destinations may send and write (configuration: `[activation]`).
#[derive(Debug, Default)]
pub struct Reach {
    /// The networks webhook, SMS and CRM destinations may reach.
    pub networks: Arc<network::NetworkPolicy>,
    /// The directory file destinations write in (`None`: file destinations are
    /// refused).
    pub files: Option<files::FileDir>,
    /// The address recipients reach Tessera at (`[http] public_url`); when
    /// set, emails carry an open pixel and tracked links pointing there
    /// ([`engagement`]). `None`: emails are sent as written.
    pub public_url: Option<String>,
}

impl Reach {
    /// Why `destination` may not send where it says, if it may not.
    pub fn check(&self, destination: &Destination) -> Result<(), ConfigError> {
        if let Some(url) = destination
            .kind
            .url()
            .and_then(|u| reqwest::Url::parse(u).ok())
            && let Some(why) = self.networks.denied_host(&url)
        {
            return Err(ConfigError(format!("settings.url: {why}")));
        }
        if let config::Kind::File(settings) = &destination.kind {
            self.file_path(&settings.path).map_err(ConfigError)?;
        }
        Ok(())
    }

    /// Where a file destination's `path` writes, or why it may not.
    pub fn file_path(&self, path: &str) -> Result<std::path::PathBuf, String> {
        match &self.files {
            Some(dir) => dir.resolve(path),
            None => Err(
                "file destinations are not enabled here: configure [activation] file_dir".into(),
            ),
        }
    }
}

/// The running activation: definitions, workers, fan-out.
pub struct Activation {
    pub(crate) stores: Stores,
    pub(crate) store: Arc<dyn ActivationStore>,
    pub(crate) clients: Arc<Clients>,
    pub(crate) observer: Arc<dyn Observer>,
    destinations: RwLock<HashMap<String, Arc<Destination>>>,
    journeys: RwLock<HashMap<String, Arc<CompiledJourney>>>,
    notifiers: RwLock<HashMap<String, Arc<tokio::sync::Notify>>>,
    purposes: Vec<String>,
    runtime: Option<tokio::runtime::Handle>,
    /// The clock of journeys' waits, frequency caps, retries and the breaker.
    clock: Arc<dyn Clock>,
    stopping: AtomicBool,
    /// Held by each fan-out round; an erasure takes it to exclude rounds.
    round_lock: std::sync::Mutex<()>,
    /// The running worker generation of each destination: a worker whose
    /// generation is no longer current stops (deleted and re-created destinations).
    workers: std::sync::Mutex<HashMap<String, u64>>,
    /// Wakes the fan-out thread (the processor applied something).
    pub(crate) fanout_wake: (std::sync::Mutex<bool>, std::sync::Condvar),
    /// Chunks the processor applied, with each event's profile, not yet taken by the
    /// fan-out ([`Activation::hand_applied`]).
    pub(crate) applied: std::sync::Mutex<fanout::AppliedQueue>,
}

impl Activation {
    /// Loads the definitions. With a runtime, a delivery worker per destination runs
    /// on it (the CLI passes none: it only reads and edits). Every time activation
    /// acts on — journey waits, frequency caps, when a delivery is due, the circuit
    /// breaker — is read from `clock`; only what talks to other systems (a webhook's
    /// signature timestamp, an HTTP-date `Retry-After`) uses the machine's time.
    /// File destinations are refused and the default networks apply; see
    /// [`Self::with_reach`].
    pub fn new(
        stores: Stores,
        purposes: Vec<String>,
        observer: Arc<dyn Observer>,
        runtime: Option<tokio::runtime::Handle>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ActivationError> {
        Self::with_reach(stores, purposes, Reach::default(), observer, runtime, clock)
    }

    /// As [`Self::new`], with where destinations may send and write.
    pub fn with_reach(
        stores: Stores,
        purposes: Vec<String>,
        reach: Reach,
        observer: Arc<dyn Observer>,
        runtime: Option<tokio::runtime::Handle>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ActivationError> {
        let store = Arc::clone(&stores.store);
        let engagement = match &reach.public_url {
            Some(url) => {
                // Whoever stores the secret first (server, CLI), everyone uses it.
                let secret = match stores
                    .catalog
                    .setting(tessera_store::keys::ENGAGEMENT_SECRET)?
                {
                    Some(secret) => secret,
                    None => stores.catalog.setting_or_insert(
                        tessera_store::keys::ENGAGEMENT_SECRET,
                        &tessera_core::ids::new_salt(),
                    )?,
                };
                Some(Arc::new(
                    engagement::Engagement::new(url, secret.as_bytes())
                        .map_err(|e| ActivationError::Config(ConfigError(e)))?,
                ))
            }
            None => None,
        };
        let activation = Arc::new(Self {
            stores,
            store,
            clients: Arc::new(Clients::new(Arc::new(reach), engagement)),
            observer,
            destinations: RwLock::new(HashMap::new()),
            journeys: RwLock::new(HashMap::new()),
            notifiers: RwLock::new(HashMap::new()),
            purposes,
            runtime,
            clock,
            stopping: AtomicBool::new(false),
            round_lock: std::sync::Mutex::new(()),
            workers: std::sync::Mutex::new(HashMap::new()),
            fanout_wake: (std::sync::Mutex::new(false), std::sync::Condvar::new()),
            applied: std::sync::Mutex::new(fanout::AppliedQueue::default()),
        });
        activation.reload()?;
        Ok(activation)
    }

    /// Signs and checks the tokens of emails' open pixels and tracked links; `None`
    /// when no public URL is configured (emails are sent as written).
    pub fn engagement(&self) -> Option<&engagement::Engagement> {
        self.clients.engagement.as_deref()
    }

    /// The current time of the injected clock, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Re-reads the definitions from the catalog (another process may have changed
    /// them) and starts workers for new destinations.
    pub fn reload(self: &Arc<Self>) -> Result<(), ActivationError> {
        let mut destinations = HashMap::new();
        for (_, text) in self
            .stores
            .catalog
            .settings_with_prefix(tessera_store::keys::DESTINATION_PREFIX)?
        {
            match serde_json::from_str::<Destination>(&text) {
                Ok(d) => {
                    destinations.insert(d.id.clone(), Arc::new(d));
                }
                Err(error) => {
                    tracing::error!(%error, "a stored destination does not parse; skipped")
                }
            }
        }
        let ids: Vec<String> = destinations.keys().cloned().collect();
        let mut journeys = HashMap::new();
        for (_, text) in self
            .stores
            .catalog
            .settings_with_prefix(tessera_store::keys::JOURNEY_PREFIX)?
        {
            match serde_json::from_str::<Journey>(&text).map(|j| j.compile(&ids)) {
                Ok(Ok(j)) => {
                    journeys.insert(j.journey.key.clone(), Arc::new(j));
                }
                _ => tracing::error!("a stored journey does not compile; skipped"),
            }
        }
        let started: Vec<String> = {
            let mut slot = self.destinations.write().unwrap_or_else(|p| p.into_inner());
            let new: Vec<String> = ids
                .iter()
                .filter(|id| !slot.contains_key(*id))
                .cloned()
                .collect();
            *slot = destinations;
            new
        };
        *self.journeys.write().unwrap_or_else(|p| p.into_inner()) = journeys;
        for id in started {
            self.start_worker(&id);
        }
        Ok(())
    }

    fn start_worker(self: &Arc<Self>, id: &str) {
        if let Some(runtime) = &self.runtime {
            let generation = {
                let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
                let generation = workers.get(id).copied().unwrap_or(0) + 1;
                workers.insert(id.to_string(), generation);
                generation
            };
            runtime.spawn(delivery::run_worker(
                Arc::clone(self),
                id.to_string(),
                generation,
            ));
        }
    }

    /// Whether a worker of this generation is still the destination's worker.
    pub(crate) fn is_current_worker(&self, id: &str, generation: u64) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            == Some(&generation)
    }

    /// Excludes fan-out rounds while held (erasure deletes a person's rows under it).
    pub fn pause(&self) -> std::sync::MutexGuard<'_, ()> {
        self.round_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock [`Self::pause`] takes, for callers that hold it across other work.
    pub fn round_lock(&self) -> &std::sync::Mutex<()> {
        &self.round_lock
    }

    /// Asks workers and the fan-out thread to stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for notify in self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            notify.notify_one();
        }
        self.wake_fanout();
    }

    /// Whether [`Activation::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Tells the fan-out thread new events were applied.
    pub fn wake_fanout(&self) {
        let (flag, signal) = &self.fanout_wake;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        signal.notify_one();
    }

    pub(crate) fn notifier(&self, id: &str) -> Arc<tokio::sync::Notify> {
        if let Some(n) = self
            .notifiers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Arc::clone(n);
        }
        let mut slot = self.notifiers.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slot.entry(id.to_string()).or_default())
    }

    pub(crate) fn notify(&self, id: &str) {
        self.notifier(id).notify_one();
    }

    /// Wakes a destination's worker (deliveries were retried by hand).
    pub fn wake_destination(&self, id: &str) {
        self.notify(id);
    }

    /// A destination by id.
    pub fn destination(&self, id: &str) -> Option<Arc<Destination>> {
        self.destinations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every destination, by id.
    pub fn destinations(&self) -> Vec<Arc<Destination>> {
        let mut all: Vec<_> = self
            .destinations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Creates or replaces a destination; returns the previous definition.
    pub fn save_destination(
        self: &Arc<Self>,
        destination: Destination,
        create: bool,
    ) -> Result<Option<Arc<Destination>>, ActivationError> {
        references::check_destination(&self.stores.audiences, &destination)?;
        destination.validate(&self.purposes)?;
        self.clients.reach.check(&destination)?;
        destination
            .check_budgets()
            .map_err(ActivationError::TemplateBudget)?;
        let previous = self.destination(&destination.id);
        match (&previous, create) {
            (Some(_), true) => {
                return Err(ActivationError::Exists(
                    Definition::Destination,
                    format!(
                        "a destination with the id {:?} exists; PUT /api/v1/destinations/{0} replaces it",
                        destination.id
                    ),
                ));
            }
            (None, false) => {
                return Err(ActivationError::NotFound(
                    Definition::Destination,
                    format!("no destination has the id {:?}", destination.id),
                ));
            }
            _ => {}
        }
        let text =
            serde_json::to_string(&destination).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.stores.catalog.set_setting(
            &format!(
                "{}{}",
                tessera_store::keys::DESTINATION_PREFIX,
                destination.id
            ),
            &text,
        )?;
        self.reload()?;
        self.notify(&destination.id);
        Ok(previous)
    }

    /// Deletes a destination (its outbox rows stay, for the record); journeys that
    /// send through it must be changed first.
    pub fn delete_destination(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Arc<Destination>, ActivationError> {
        let previous = self.destination(id).ok_or_else(|| {
            ActivationError::NotFound(
                Definition::Destination,
                format!("no destination has the id {id:?}"),
            )
        })?;
        let users: Vec<String> = self
            .journeys()
            .iter()
            .filter(|j| {
                j.program
                    .iter()
                    .any(|i| matches!(i, config::Instruction::Send(s) if s.destination == id))
            })
            .map(|j| j.journey.key.clone())
            .collect();
        if !users.is_empty() {
            return Err(ActivationError::Exists(
                Definition::Destination,
                format!(
                    "journeys send through {id:?}: {}; change or delete them first",
                    users.join(", ")
                ),
            ));
        }
        self.stores
            .catalog
            .delete_setting(&format!("{}{id}", tessera_store::keys::DESTINATION_PREFIX))?;
        self.reload()?;
        self.notify(id);
        // What it had queued is not sent by a later destination reusing the id.
        let now = self.now_ms();
        loop {
            let pending = self
                .store
                .deliveries(&tessera_store::activation::DeliveryFilter {
                    destination: Some(id.to_string()),
                    status: Some(tessera_store::activation::DeliveryStatus::Pending),
                    limit: 1_000,
                    ..Default::default()
                })?;
            if pending.is_empty() {
                break;
            }
            let outcomes: Vec<_> = pending
                .iter()
                .map(|d| tessera_store::activation::DeliveryOutcome {
                    id: d.id,
                    status: tessera_store::activation::DeliveryStatus::Dead,
                    attempts: d.attempts,
                    next_attempt_ms: now,
                    error: Some("destination deleted".into()),
                    delivered_ms: None,
                })
                .collect();
            self.store.record(&outcomes)?;
        }
        Ok(previous)
    }

    /// Every journey, by key.
    pub fn journeys(&self) -> Vec<Arc<CompiledJourney>> {
        let mut all: Vec<_> = self
            .journeys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.journey.key.cmp(&b.journey.key));
        all
    }

    /// A journey by key.
    pub fn journey(&self, key: &str) -> Option<Arc<CompiledJourney>> {
        self.journeys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Creates or replaces a journey. Replacing one ends its active runs (their
    /// position would mean something else in the new steps). Audiences, computed
    /// traits and destinations it names must exist ([`references`]); names never
    /// seen in the data come back as warnings.
    pub fn save_journey(
        self: &Arc<Self>,
        journey: Journey,
        create: bool,
    ) -> Result<SavedJourney, ActivationError> {
        let warnings = references::check_journey(&self.stores.audiences, &journey)?;
        let ids: Vec<String> = self.destinations().iter().map(|d| d.id.clone()).collect();
        let compiled = journey.compile(&ids)?;
        compiled
            .check_budgets()
            .map_err(ActivationError::TemplateBudget)?;
        let previous = self.journey(&journey.key);
        match (&previous, create) {
            (Some(_), true) => {
                return Err(ActivationError::Exists(
                    Definition::Journey,
                    format!(
                        "a journey with the key {:?} exists; PUT /api/v1/journeys/{0} replaces it",
                        journey.key
                    ),
                ));
            }
            (None, false) => {
                return Err(ActivationError::NotFound(
                    Definition::Journey,
                    format!("no journey has the key {:?}", journey.key),
                ));
            }
            _ => {}
        }
        let text = serde_json::to_string(&compiled.journey)
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        if previous.is_some() {
            self.store
                .exit_runs(&journey.key, self.now_ms(), "journey changed")?;
        }
        self.stores.catalog.set_setting(
            &format!("{}{}", tessera_store::keys::JOURNEY_PREFIX, journey.key),
            &text,
        )?;
        self.reload()?;
        Ok(SavedJourney { previous, warnings })
    }

    /// Deletes a journey; its active runs end.
    pub fn delete_journey(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<Arc<CompiledJourney>, ActivationError> {
        let previous = self.journey(key).ok_or_else(|| {
            ActivationError::NotFound(
                Definition::Journey,
                format!("no journey has the key {key:?}"),
            )
        })?;
        self.store
            .exit_runs(key, self.now_ms(), "journey deleted")?;
        self.stores
            .catalog
            .delete_setting(&format!("{}{key}", tessera_store::keys::JOURNEY_PREFIX))?;
        self.reload()?;
        Ok(previous)
    }

    /// Whether a delivery may go out now: the person still exists (an erased person's
    /// rows read before the erasure are not sent) and their consent allows its purpose.
    pub fn may_send(
        &self,
        profile: Option<ProfileId>,
        purpose: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let Some(profile) = profile
            && self.stores.profiles.profile(profile)?.is_none()
        {
            return Ok(false);
        }
        self.consent_allows(profile, purpose)
    }

    /// Whether a person's consent allows a purpose: no purpose needs nothing; a
    /// purpose needs their latest decision for it to be a grant.
    pub fn consent_allows(
        &self,
        profile: Option<ProfileId>,
        purpose: Option<&str>,
    ) -> Result<bool, StoreError> {
        let Some(purpose) = purpose else {
            return Ok(true);
        };
        let Some(profile) = profile else {
            return Ok(false);
        };
        // A merge may have moved the profile: follow it to the canonical one.
        let canonical = match self.stores.profiles.profile(profile)? {
            Some(summary) => summary.merged_into.unwrap_or(profile),
            None => return Ok(false),
        };
        Ok(self
            .stores
            .profiles
            .consent(canonical)?
            .into_iter()
            .rev()
            .find(|r| r.purpose == purpose)
            .is_some_and(|r| r.granted))
    }

    /// Erased people: their deliveries and journey runs are deleted.
    pub fn erase_profiles(&self, profiles: &[ProfileId]) -> Result<(), StoreError> {
        self.store.erase_profiles(profiles)?;
        self.store.purge_deleted()
    }

    /// The outbox and runs store.
    pub fn store(&self) -> &dyn ActivationStore {
        self.store.as_ref()
    }
}

/// A run as the API shows it.
pub fn run_json(run: &tessera_store::activation::JourneyRun) -> Value {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    serde_json::json!({
        "id": run.id,
        "journey": run.journey,
        "profileId": run.profile_id,
        "state": run.state,
        "step": run.step,
        "waitingFor": run.waiting_event,
        "wakeAt": run.wake_at_ms.and_then(at),
        "enteredAt": at(run.entered_ms),
        "updatedAt": at(run.updated_ms),
        "history": serde_json::from_str::<Value>(&run.history_json).unwrap_or(Value::Null),
    })
}
