//! `tessera`: the customer data platform in one binary — the server and the operator CLI.
#![allow(clippy::print_stdout)]

mod activation_cli;
mod audiences_cli;
mod cli_error;
mod dedupe_cli;
mod export;
mod identity_cli;
mod import;
mod insights_cli;
mod options;
mod plans_cli;
mod privacy_cli;
mod profiles_cli;
mod serve;
mod sources_cli;
mod tokens_cli;

use clap::{Parser, Subcommand};
use options::{ServeArgs, Settings, StoreArgs};

use std::process::ExitCode;

/// mimalloc: the ingest path allocates many small JSON values per event; measured
/// faster than the system allocator for it (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tessera: an open-source customer data platform. Speaks Segment's Tracking API.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (tracking API, admin API, metrics) on the embedded store
    Serve(ServeArgs),
    /// Manage sources and their write keys
    Sources {
        #[command(subcommand)]
        command: sources_cli::SourcesCommand,
    },
    /// Tracking plans per source: set, get, delete, violations, infer
    Plans {
        #[command(subcommand)]
        command: plans_cli::PlansCommand,
    },
    /// Scoped API tokens (admin, read:profiles): create, list, revoke
    Tokens {
        #[command(subcommand)]
        command: tokens_cli::TokensCommand,
    },
    /// Write stored data as JSONL on stdout
    Export {
        #[command(subcommand)]
        what: export::ExportCommand,
    },
    /// Import Segment messages from a JSONL or CSV file through the same validation
    Import(import::ImportArgs),
    /// Rebuild all derived state (profiles, identity graph) from the event log
    Replay,
    /// Identity rules, unlinking a wrong identifier, profile lookup
    Identity {
        #[command(subcommand)]
        command: identity_cli::IdentityCommand,
    },
    /// Profiles: list and search (identifier prefix, traits, text), newest first
    Profiles {
        #[command(subcommand)]
        command: profiles_cli::ProfilesCommand,
    },
    /// Audiences: define, preview, list members
    Audiences {
        #[command(subcommand)]
        command: audiences_cli::AudiencesCommand,
    },
    /// Insights: trends, funnels and retention, as tables, CSV or JSON
    Insights {
        #[command(subcommand)]
        command: insights_cli::InsightsCommand,
    },
    /// Computed traits (total_orders, lifetime_value, ...): list, define, delete
    ComputedTraits {
        #[command(subcommand)]
        command: audiences_cli::ComputedCommand,
    },
    /// Find duplicate people in a CSV by probabilistic matching; writes record_id,cluster_id
    Dedupe(dedupe_cli::DedupeArgs),
    /// Destinations (webhook, email, SMS, CRM, file): list, create, delete
    Destinations {
        #[command(subcommand)]
        command: activation_cli::DestinationsCommand,
    },
    /// The delivery outbox: list, retry dead deliveries
    Deliveries {
        #[command(subcommand)]
        command: activation_cli::DeliveriesCommand,
    },
    /// Journeys: list, create, delete, a profile's runs
    Journeys {
        #[command(subcommand)]
        command: activation_cli::JourneysCommand,
    },
    /// Privacy requests: access export, erasure, erasure status
    Privacy {
        #[command(subcommand)]
        command: privacy_cli::PrivacyCommand,
    },
}

/// Who runs a CLI command, for the audit log: `cli:<login>`.
pub(crate) fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Serve(args) => run_serve(&cli.store, &args),
        Command::Sources { command } => {
            settings(&cli.store).and_then(|s| sources_cli::run(&s.data_dir, command))
        }
        Command::Plans { command } => {
            settings(&cli.store).and_then(|s| plans_cli::run(&s.data_dir, command))
        }
        Command::Tokens { command } => {
            settings(&cli.store).and_then(|s| tokens_cli::run(&s.data_dir, command))
        }
        Command::Export { what } => {
            settings(&cli.store).and_then(|s| export::run(&s.data_dir, what))
        }
        Command::Import(args) => {
            settings(&cli.store).and_then(|s| import::run(&s.data_dir, s.dedup, &s.privacy, &args))
        }
        Command::Replay => settings(&cli.store).and_then(|s| identity_cli::replay(&s.data_dir)),
        Command::Identity { command } => {
            settings(&cli.store).and_then(|s| identity_cli::run(&s.data_dir, command))
        }
        Command::Profiles { command } => {
            settings(&cli.store).and_then(|s| profiles_cli::run(&s.data_dir, command))
        }
        Command::Audiences { command } => {
            settings(&cli.store).and_then(|s| audiences_cli::run(&s.data_dir, command))
        }
        Command::Insights { command } => {
            settings(&cli.store).and_then(|s| insights_cli::run(&s, command))
        }
        Command::ComputedTraits { command } => {
            settings(&cli.store).and_then(|s| audiences_cli::run_computed(&s.data_dir, command))
        }
        Command::Dedupe(args) => dedupe_cli::run(&args),
        Command::Destinations { command } => settings(&cli.store).and_then(|s| {
            activation_cli::destinations(
                &s.data_dir,
                s.privacy.purposes.clone(),
                s.reach()?,
                command,
            )
        }),
        Command::Deliveries { command } => {
            settings(&cli.store).and_then(|s| activation_cli::deliveries(&s.data_dir, command))
        }
        Command::Journeys { command } => settings(&cli.store).and_then(|s| {
            activation_cli::journeys(&s.data_dir, s.privacy.purposes.clone(), command)
        }),
        Command::Privacy { command } => {
            settings(&cli.store).and_then(|s| privacy_cli::run(&s, command))
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn settings(store: &StoreArgs) -> anyhow::Result<Settings> {
    Settings::resolve(store, &ServeArgs::default())
}

fn run_serve(store: &StoreArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(store, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve::serve(settings))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr (stdout carries command output such as exports).
fn init_logging(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
