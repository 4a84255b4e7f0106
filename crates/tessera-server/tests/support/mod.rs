//! The application state over a real SQLite store in a temporary directory, shared by
//! the in-process HTTP tests (no socket, no background processor or fan-out).

use std::path::Path;
use std::sync::Arc;
use tessera_core::time::SystemClock;
use tessera_identity::processor::Processor;
use tessera_runtime::committer::{Committer, CommitterConfig, CommitterThreads};
use tessera_runtime::metrics::Metrics;
use tessera_runtime::sources::SourceResolver;
use tessera_server::AppState;
use tessera_store::profiles::ProfileStore;
use tessera_store::{Catalog, EventLog};
use tessera_store_sqlite::SqliteProfileStore;

/// Every store of `dir` wired as `serve` wires them, with `events` and `catalog`
/// already open (a test may wrap the log), the committer started with `config`, and
/// `admin_token` as the admin token.
pub fn app_state(
    dir: &Path,
    events: Arc<dyn EventLog>,
    catalog: Arc<dyn Catalog>,
    config: CommitterConfig,
    admin_token: &str,
) -> (AppState, CommitterThreads) {
    let metrics = Arc::new(Metrics::new());
    let profiles: Arc<dyn ProfileStore> =
        Arc::new(SqliteProfileStore::open_in(dir).expect("profiles"));
    let processor = Arc::new(
        Processor::new(
            Arc::clone(&events),
            Arc::clone(&profiles),
            Arc::clone(&catalog),
        )
        .expect("processor"),
    );
    let (committer, threads) =
        Committer::start(Arc::clone(&events), Arc::clone(&metrics), config).expect("start");
    let audiences = Arc::new(tessera_audience::engine::AudienceEngine::new(
        Arc::clone(&catalog),
        Arc::new(tessera_store_sqlite::SqliteAudienceStore::open_in(dir).expect("audiences")),
        Arc::clone(&profiles),
        Arc::clone(&events),
        Arc::new(SystemClock),
        tessera_audience::engine::EngineOptions::default(),
    ));
    let activation = tessera_activation::Activation::new(
        tessera_activation::Stores {
            log: Arc::clone(&events),
            profiles: Arc::clone(&profiles),
            catalog: Arc::clone(&catalog),
            store: Arc::new(
                tessera_store_sqlite::SqliteActivationStore::open_in(dir).expect("activation"),
            ),
            audiences: Arc::clone(&audiences),
        },
        vec!["marketing".into()],
        Arc::new(tessera_activation::delivery::NoObserver),
        None,
        Arc::new(SystemClock),
    )
    .expect("activation");
    let state = AppState {
        events,
        profiles,
        processor,
        catalog: Arc::clone(&catalog),
        committer,
        metrics,
        sources: Arc::new(SourceResolver::new(Arc::clone(&catalog))),
        admin_token_hash: tessera_core::ids::hash_secret(admin_token),
        clock: Arc::new(SystemClock),
        audiences,
        rate_limiter: Arc::new(tessera_server::rate_limit::RateLimiter::new(None)),
        privacy: Arc::new(
            tessera_runtime::privacy::Privacy::open(
                Arc::clone(&catalog),
                tessera_runtime::privacy::PrivacyConfig::default(),
            )
            .expect("privacy"),
        ),
        activation,
        bodies: Arc::new(tessera_server::connections::BodyGate::default()),
        auth_backoff: Arc::default(),
        metrics_token_hash: None,
        web_sdk: Arc::default(),
        webhooks: Arc::new(tessera_runtime::webhooks::WebhookSources::new(Arc::clone(
            &catalog,
        ))),
        plans: Arc::new(tessera_runtime::plans::Plans::new(Arc::clone(&catalog))),
    };
    (state, threads)
}
