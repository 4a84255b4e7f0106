//! [`Runtime`]: everything that runs, assembled once from the [`Stores`].
//!
//! `serve` builds a runtime, [`Runtime::start`]s its threads (the group committer,
//! the processing loop, the activation fan-out) and stops them with
//! [`Running::shutdown`]; a CLI command builds the same runtime and does its one-shot
//! work on it without starting anything.

use crate::committer::{Committer, CommitterConfig, CommitterThreads};
use crate::fanout::FanoutThread;
use crate::metrics::Metrics;
use crate::privacy::{Privacy, PrivacyConfig};
use crate::processing::ProcessorThread;
use crate::stores::Stores;
use std::sync::Arc;
use tessera_activation::config::Destination;
use tessera_activation::{Activation, Stores as ActivationStores};
use tessera_audience::computed::ComputedTrait;
use tessera_audience::engine::{AudienceEngine, EngineOptions};
use tessera_core::time::Clock;
use tessera_identity::processor::{Processor, ProcessorError};
use tessera_store::activation::ActivationStore;
use tessera_store::profiles::ProfileStore;
use tessera_store::{Catalog, EventLog, StoreError};

/// What a runtime is configured with (the store options are the [`Stores`]').
#[derive(Debug, Default)]
pub struct RuntimeConfig {
    /// The group committer's queue and batch sizes.
    pub committer: CommitterConfig,
    /// The audience engine's options.
    pub audiences: EngineOptions,
    /// Computed traits of the configuration file, stored like those of the API.
    pub computed_traits: Vec<ComputedTrait>,
    /// Suppression and consent purposes.
    pub privacy: PrivacyConfig,
    /// Destinations of the configuration file, stored like those of the API.
    pub destinations: Vec<Destination>,
    /// Where destinations may send and write (networks, the file directory).
    pub reach: tessera_activation::Reach,
}

/// Why a runtime could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A store failed to open or answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity processor refused its stored rules.
    #[error("identity: {0}")]
    Identity(#[from] ProcessorError),
    /// A definition of the configuration file is invalid.
    #[error("{0}")]
    Configuration(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Everything that runs, sharing one set of stores, one clock and one metrics
/// registry.
pub struct Runtime {
    /// The event log of record (reads; the running server appends through the
    /// committer).
    pub events: Arc<dyn EventLog>,
    /// Sources, settings, tokens, definitions, audit.
    pub catalog: Arc<dyn Catalog>,
    /// Profiles and the identity graph.
    pub profiles: Arc<dyn ProfileStore>,
    /// The activation outbox and journeys' state.
    pub activation_store: Arc<dyn ActivationStore>,
    /// Identity resolution.
    pub processor: Arc<Processor>,
    /// Computed traits and audiences.
    pub audiences: Arc<AudienceEngine>,
    /// Suppression of erased identifiers, consent purposes.
    pub privacy: Arc<Privacy>,
    /// Destinations, the outbox, journeys.
    pub activation: Arc<Activation>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The clock every part reads.
    pub clock: Arc<dyn Clock>,
    committer_config: CommitterConfig,
}

/// The threads of a started runtime.
pub struct Running {
    /// The group-committing writer that HTTP handlers submit to.
    pub committer: Committer,
    committer_threads: CommitterThreads,
    processor_thread: ProcessorThread,
    fanout: FanoutThread,
}

impl Runtime {
    /// Builds every part on `stores`, storing the configuration file's computed
    /// traits and destinations. `tokio` is the runtime delivery workers run on (the
    /// server's); with `None` no worker runs (one-shot CLI work). Every part reads
    /// time from `clock`.
    pub fn build(
        stores: &Stores,
        config: RuntimeConfig,
        clock: Arc<dyn Clock>,
        tokio: Option<tokio::runtime::Handle>,
    ) -> Result<Self, RuntimeError> {
        let events = stores.events()?;
        let catalog = stores.catalog()?;
        let profiles = stores.profiles()?;
        let processor = Arc::new(Processor::new(
            Arc::clone(&events),
            Arc::clone(&profiles),
            Arc::clone(&catalog),
        )?);
        let metrics = Arc::new(Metrics::new());
        let audiences = Arc::new(AudienceEngine::new(
            Arc::clone(&catalog),
            stores.audiences()?,
            Arc::clone(&profiles),
            Arc::clone(&events),
            Arc::clone(&clock),
            config.audiences,
        ));
        audiences
            .load_definitions()
            .and_then(|()| {
                config
                    .computed_traits
                    .iter()
                    .try_for_each(|definition| audiences.save_computed(definition))
            })
            .map_err(|e| {
                RuntimeError::Configuration(format!(
                    "computed traits of the configuration file: {e}"
                ))
            })?;
        let privacy = Arc::new(Privacy::open(Arc::clone(&catalog), config.privacy.clone())?);
        let activation_store = stores.activation()?;
        let activation = Activation::with_reach(
            ActivationStores {
                log: Arc::clone(&events),
                profiles: Arc::clone(&profiles),
                catalog: Arc::clone(&catalog),
                store: Arc::clone(&activation_store),
                audiences: Arc::clone(&audiences),
            },
            config.privacy.purposes.clone(),
            config.reach,
            Arc::clone(&metrics) as Arc<dyn tessera_activation::delivery::Observer>,
            tokio,
            Arc::clone(&clock),
        )
        .map_err(|e| RuntimeError::Configuration(format!("activation: {e}")))?;
        for destination in &config.destinations {
            let exists = activation.destination(&destination.id).is_some();
            activation
                .save_destination(destination.clone(), !exists)
                .map_err(|e| {
                    use tessera_core::CodedError;
                    RuntimeError::Configuration(format!(
                        "[[activation.destinations]] {:?}: [{}] {}",
                        destination.id,
                        e.code(),
                        e.user_message()
                    ))
                })?;
        }
        Ok(Self {
            events,
            catalog,
            profiles,
            activation_store,
            processor,
            audiences,
            privacy,
            activation,
            metrics,
            clock,
            committer_config: config.committer,
        })
    }

    /// Starts the group committer, the processing loop and the activation fan-out.
    pub fn start(&self) -> Result<Running, RuntimeError> {
        let (committer, committer_threads) = Committer::start(
            Arc::clone(&self.events),
            Arc::clone(&self.metrics),
            self.committer_config,
        )?;
        let resolver = Arc::clone(&self.processor);
        let fanout = FanoutThread::start(
            Arc::clone(&self.activation),
            Arc::new(
                move |message: &serde_json::Map<String, serde_json::Value>| {
                    resolver.resolve_owner(message)
                },
            ),
        )?;
        let processor_thread = ProcessorThread::start(
            Arc::clone(&self.processor),
            Arc::clone(&self.audiences),
            Arc::clone(&self.metrics),
            Arc::clone(&self.privacy),
            Arc::clone(&self.activation),
        )?;
        Ok(Running {
            committer,
            committer_threads,
            processor_thread,
            fanout,
        })
    }
}

impl Running {
    /// Commits everything queued, then stops the processing loop and the fan-out.
    /// Blocks; call it from a blocking context.
    pub fn shutdown(self) {
        self.committer_threads.shutdown();
        self.processor_thread.shutdown();
        self.fanout.shutdown();
    }
}
