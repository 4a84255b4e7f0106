//! `tessera serve`: open the store, start the ingest pipeline, serve HTTP, and shut
//! down gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight requests,
//! commit everything queued, checkpoint).

use crate::options::Settings;
use anyhow::Context;
use std::sync::Arc;
use tessera_core::time::SystemClock;
use tessera_runtime::committer::CommitterConfig;
use tessera_runtime::sources::{AdminToken, SourceResolver, establish_admin_token};
use tessera_runtime::{Runtime, RuntimeConfig, StoreOptions, open_stores};
use tessera_server::AppState;

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
/// Shortest admin token accepted from the environment: it unlocks everything.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The file, in the data directory, that holds a generated admin token (mode 0600).
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Runs the server until a shutdown signal.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // First, so a port in use stops us before anything is opened, generated or printed.
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: another program (or another Tessera) may use that port; choose another with --listen 127.0.0.1:PORT or TESSERA_LISTEN",
                settings.listen
            )
        })?;
    // While it runs, the CLI hands privacy requests to it instead of doing them itself.
    let _serving = crate::privacy_cli::ServeLock::hold(&settings.data_dir)?;
    let stores = open_stores(StoreOptions::writer(&settings.data_dir, settings.dedup))
        .with_context(|| {
            format!(
                "cannot open the data directory {}",
                settings.data_dir.display()
            )
        })?;
    let catalog = stores.catalog()?;

    let env_token = std::env::var("TESSERA_ADMIN_TOKEN").ok();
    if let Some(token) = env_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN_CHARS {
            anyhow::bail!(
                "TESSERA_ADMIN_TOKEN is {length} characters; use at least {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -hex 16`), or unset it to use the generated token"
            );
        }
    }
    let (admin_token_hash, how) = establish_admin_token(catalog.as_ref(), env_token.as_deref())?;
    // Which token is in force, never its value.
    match &how {
        AdminToken::FromEnvironment => {
            tracing::info!("admin token: TESSERA_ADMIN_TOKEN from the environment");
        }
        AdminToken::Existing => tracing::info!(
            file = %settings.data_dir.join(ADMIN_TOKEN_FILE).display(),
            "admin token: the one generated on the first start (TESSERA_ADMIN_TOKEN is not set)"
        ),
        AdminToken::Generated(_) => {}
    }
    if let AdminToken::Generated(token) = &how {
        let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
        write_private_file(&path, token)?;
        // Printed once, on the first start; afterwards only its hash is kept in the store.
        eprintln!(
            "Generated the admin token (saved to {}, mode 0600; shown only now):\n\n    {token}\n",
            path.display()
        );
    }

    let runtime = Runtime::build(
        &stores,
        RuntimeConfig {
            committer: CommitterConfig {
                queue_capacity: settings.queue_capacity,
                max_events_per_commit: settings.max_events_per_commit,
                ..CommitterConfig::default()
            },
            audiences: settings.audiences,
            computed_traits: settings.computed_traits.clone(),
            privacy: settings.privacy.clone(),
            destinations: settings.destinations.clone(),
            reach: settings.reach()?,
        },
        Arc::new(SystemClock),
        Some(tokio::runtime::Handle::current()),
    )
    .map_err(|error| match (&error, &settings.config_file) {
        (tessera_runtime::RuntimeError::Configuration(_), Some(file)) => {
            anyhow::anyhow!("configuration file {}: {error}", file.display())
        }
        _ => anyhow::Error::new(error),
    })?;
    let running = runtime.start()?;
    let state = AppState {
        events: Arc::clone(&runtime.events),
        profiles: Arc::clone(&runtime.profiles),
        processor: Arc::clone(&runtime.processor),
        catalog: Arc::clone(&catalog),
        webhooks: Arc::new(tessera_runtime::webhooks::WebhookSources::new(Arc::clone(
            &catalog,
        ))),
        plans: Arc::new(tessera_runtime::plans::Plans::new(Arc::clone(&catalog))),
        committer: running.committer.clone(),
        metrics: Arc::clone(&runtime.metrics),
        sources: Arc::new(SourceResolver::new(catalog)),
        admin_token_hash,
        clock: Arc::clone(&runtime.clock),
        audiences: Arc::clone(&runtime.audiences),
        rate_limiter: Arc::new(tessera_server::rate_limit::RateLimiter::new(
            settings.rate_limit,
        )),
        privacy: Arc::clone(&runtime.privacy),
        activation: Arc::clone(&runtime.activation),
        bodies: Arc::new(tessera_server::connections::BodyGate::new(
            &settings.connection_limits,
        )),
        auth_backoff: Arc::new(tessera_server::auth_backoff::AuthBackoff::new(
            settings.auth_failures,
        )),
        metrics_token_hash: settings
            .metrics_token
            .as_deref()
            .map(tessera_core::ids::hash_secret),
        web_sdk: Arc::new(tessera_server::web_sdk::WebSdkConfig {
            public_url: settings.public_url.clone(),
        }),
    };

    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        "Tessera is listening"
    );
    // On a signal, stop accepting and let in-flight requests finish — but not forever:
    // a client that stalls mid-body must not hold the shutdown hostage.
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signalled.send(true);
    });
    let mut graceful = on_signal.clone();
    let limits = tessera_server::connections::fit_to_file_limit(settings.connection_limits);
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        max_connections_per_client = limits.max_connections_per_client,
        metrics_token = settings.metrics_token.is_some(),
        "connection limits"
    );
    let plans = Arc::clone(&state.plans);
    // Recorded tracking-plan violations reach the catalog within a second also when no
    // further request comes (the CLI reads them there).
    let flusher = Arc::clone(&plans);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            let plans = Arc::clone(&flusher);
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || plans.flush(false)).await {
                tracing::warn!(%error, "could not store tracking plan violations");
            }
        }
    });
    let server = tessera_server::connections::serve(listener, state, limits, async move {
        let _ = graceful.changed().await;
    });
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = async {
            let _ = on_signal.changed().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "requests still in flight after the grace period were cut off (none was acknowledged)"
        ),
    }

    tracing::info!("HTTP stopped; committing what is queued");
    if let Err(error) = plans.flush(true) {
        tracing::warn!(%error, "could not store the last tracking plan violations");
    }
    tokio::task::spawn_blocking(move || running.shutdown())
        .await
        .context("the ingest pipeline did not shut down cleanly")?;
    tracing::info!("shutdown complete");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

fn write_private_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{contents}")?;
    file.sync_all()?;
    Ok(())
}
