//! `tessera destinations|deliveries|journeys …`: the activation API's operations on
//! the data directory. A running server picks up definition changes within a second
//! and retried deliveries on its next look at the outbox.

use anyhow::{Context, anyhow};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tessera_activation::config::{Destination, Journey};
use tessera_activation::delivery::NoObserver;
use tessera_activation::{Activation, Stores, run_json};
use tessera_audience::engine::{AudienceEngine, EngineOptions};
use tessera_core::time::SystemClock;
use tessera_runtime::audit::record_audit;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_server::activation_api::{delivery_json, redacted};
use tessera_store::Catalog;
use tessera_store::activation::{DeliveryFilter, DeliveryStatus};

/// Destination subcommands.
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// List destinations with their delivery counts (secrets hidden)
    List,
    /// Create (or with --replace, replace) a destination from a JSON file
    Create {
        /// The definition, as for POST /api/v1/destinations
        file: PathBuf,
        /// Replace the destination with the same id
        #[arg(long)]
        replace: bool,
    },
    /// Delete a destination
    Delete {
        /// Its id
        id: String,
    },
}

/// Delivery subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries (JSON lines), oldest first
    List {
        /// Only this destination
        #[arg(long)]
        destination: Option<String>,
        /// Only this status: pending, delivered, dead, blocked
        #[arg(long)]
        status: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead deliveries again: all of a destination, or the given ids
    Retry {
        /// All dead deliveries of this destination
        #[arg(long)]
        destination: Option<String>,
        /// These deliveries (repeat for several)
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

/// Journey subcommands.
#[derive(Debug, Subcommand)]
pub enum JourneysCommand {
    /// List journeys
    List,
    /// Create (or with --replace, replace) a journey from a JSON file
    Create {
        /// The definition, as for POST /api/v1/journeys
        file: PathBuf,
        /// Replace the journey with the same key (its active runs end)
        #[arg(long)]
        replace: bool,
    },
    /// Delete a journey (its active runs end)
    Delete {
        /// Its key
        key: String,
    },
    /// A profile's journey runs with their history
    Runs {
        /// The profile id
        #[arg(long)]
        profile: i64,
    },
}

fn open(
    data_dir: &Path,
    purposes: Vec<String>,
    reach: tessera_activation::Reach,
) -> anyhow::Result<Arc<Activation>> {
    // Activation reads the log and never appends to it.
    let stores = open_stores(StoreOptions::read_only(data_dir))
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let log = stores.events()?;
    let catalog = stores.catalog()?;
    let profiles = stores.profiles()?;
    let audiences = Arc::new(AudienceEngine::new(
        Arc::clone(&catalog),
        stores.audiences()?,
        Arc::clone(&profiles),
        Arc::clone(&log),
        Arc::new(SystemClock),
        EngineOptions::default(),
    ));
    // The audiences and computed traits definitions name (checked when saved); the
    // index of observed names is not built, so the CLI does not warn about them.
    audiences
        .load_definitions()
        .map_err(crate::cli_error::coded)?;
    Activation::with_reach(
        Stores {
            log,
            profiles,
            catalog,
            store: stores.activation()?,
            audiences,
        },
        purposes,
        reach,
        Arc::new(NoObserver),
        None,
        Arc::new(SystemClock),
    )
    .map_err(|e| anyhow!("{e}"))
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("[invalid_activation] {}: {e}", file.display()))
}

/// Runs a destinations subcommand; `reach` says where destinations may send and write.
pub fn destinations(
    data_dir: &Path,
    purposes: Vec<String>,
    reach: tessera_activation::Reach,
    command: DestinationsCommand,
) -> anyhow::Result<ExitCode> {
    let activation = open(data_dir, purposes, reach)?;
    let catalog = activation_catalog(data_dir)?;
    let catalog = catalog.as_ref();
    match command {
        DestinationsCommand::List => {
            for d in activation.destinations() {
                let mut value = redacted(&d);
                let counts: serde_json::Map<String, serde_json::Value> = activation
                    .store()
                    .counts(&d.id)?
                    .into_iter()
                    .map(|(s, n)| (s.as_str().to_string(), json!(n)))
                    .collect();
                value["deliveries"] = serde_json::Value::Object(counts);
                println!("{value}");
            }
        }
        DestinationsCommand::Create { file, replace } => {
            let destination: Destination = read_json(&file)?;
            let previous = activation
                .save_destination(destination.clone(), !replace)
                .map_err(crate::cli_error::coded)?;
            record_audit(
                catalog,
                &crate::cli_actor(),
                if replace {
                    "destination.update"
                } else {
                    "destination.create"
                },
                &destination.id,
                previous.as_deref().map(redacted).as_ref(),
                Some(&redacted(&destination)),
            );
            eprintln!("saved destination {}", destination.id);
        }
        DestinationsCommand::Delete { id } => {
            let previous = activation
                .delete_destination(&id)
                .map_err(crate::cli_error::coded)?;
            record_audit(
                catalog,
                &crate::cli_actor(),
                "destination.delete",
                &id,
                Some(&redacted(&previous)),
                None,
            );
            eprintln!("deleted destination {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn activation_catalog(data_dir: &Path) -> anyhow::Result<Arc<dyn Catalog>> {
    Ok(open_stores(StoreOptions::read_only(data_dir))?.catalog()?)
}

/// Runs a deliveries subcommand.
pub fn deliveries(data_dir: &Path, command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let store = open_stores(StoreOptions::read_only(data_dir))?.activation()?;
    match command {
        DeliveriesCommand::List {
            destination,
            status,
            limit,
        } => {
            let status = status
                .map(|s| {
                    DeliveryStatus::parse(&s).ok_or_else(|| {
                        anyhow!(
                            "[invalid_request] --status is one of pending, delivered, dead, blocked"
                        )
                    })
                })
                .transpose()?;
            for d in store.deliveries(&DeliveryFilter {
                destination,
                status,
                profile_id: None,
                after_id: 0,
                limit,
            })? {
                println!("{}", delivery_json(&d));
            }
        }
        DeliveriesCommand::Retry { destination, ids } => {
            if destination.is_none() && ids.is_empty() {
                return Err(anyhow!(
                    "[invalid_request] name a --destination or the deliveries to retry with --id"
                ));
            }
            let retried = store.retry_dead(
                destination.as_deref(),
                &ids,
                chrono::Utc::now().timestamp_millis(),
            )?;
            record_audit(
                activation_catalog(data_dir)?.as_ref(),
                &crate::cli_actor(),
                "deliveries.retry",
                destination.as_deref().unwrap_or("ids"),
                None,
                Some(&json!({"ids": ids, "retried": retried})),
            );
            eprintln!("{retried} dead deliveries queued again");
            println!("{}", json!({ "retried": retried }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a journeys subcommand.
pub fn journeys(
    data_dir: &Path,
    purposes: Vec<String>,
    command: JourneysCommand,
) -> anyhow::Result<ExitCode> {
    // Journeys name destinations but send nowhere themselves.
    let activation = open(data_dir, purposes, tessera_activation::Reach::default())?;
    match command {
        JourneysCommand::List => {
            for j in activation.journeys() {
                println!("{}", serde_json::to_value(&j.journey)?);
            }
        }
        JourneysCommand::Create { file, replace } => {
            let journey: Journey = read_json(&file)?;
            let saved = activation
                .save_journey(journey.clone(), !replace)
                .map_err(crate::cli_error::coded)?;
            for warning in &saved.warnings {
                eprintln!("warning [{}]: {}", warning.code, warning.message);
            }
            record_audit(
                activation_catalog(data_dir)?.as_ref(),
                &crate::cli_actor(),
                if replace {
                    "journey.update"
                } else {
                    "journey.create"
                },
                &journey.key,
                saved
                    .previous
                    .map(|p| serde_json::to_value(&p.journey).unwrap_or_default())
                    .as_ref(),
                Some(&serde_json::to_value(&journey)?),
            );
            eprintln!("saved journey {}", journey.key);
        }
        JourneysCommand::Delete { key } => {
            let previous = activation
                .delete_journey(&key)
                .map_err(crate::cli_error::coded)?;
            record_audit(
                activation_catalog(data_dir)?.as_ref(),
                &crate::cli_actor(),
                "journey.delete",
                &key,
                Some(&serde_json::to_value(&previous.journey)?),
                None,
            );
            eprintln!("deleted journey {key}");
        }
        JourneysCommand::Runs { profile } => {
            for run in activation.store().profile_runs(profile)? {
                println!("{}", run_json(&run));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
