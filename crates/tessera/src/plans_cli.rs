//! `tessera plans set|get|delete|violations|infer`: tracking plans per source, on the
//! data directory directly (a running server applies a changed plan within two
//! seconds).

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_core::{ErrorCode, UserError};
use tessera_runtime::audit::record_audit;
use tessera_runtime::plans::{self, PlanError, violations};
use tessera_runtime::sources::resolve_source;
use tessera_runtime::{StoreOptions, open_stores};

/// Tracking plan subcommands.
#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Store a source's tracking plan from a JSON file ("-" reads stdin)
    Set {
        /// The source id (src_...) or name
        #[arg(long)]
        source: String,
        /// The plan: {"mode": "allow|flag|block", "events": {...}, "identify": {...}}
        file: PathBuf,
    },
    /// Print a source's tracking plan as JSON
    Get {
        /// The source id or name
        #[arg(long)]
        source: String,
    },
    /// Remove a source's tracking plan
    Delete {
        /// The source id or name
        #[arg(long)]
        source: String,
    },
    /// Recorded violations: counts per event and property, with an example each
    Violations {
        /// The source id or name
        #[arg(long)]
        source: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Propose a plan from the source's events (names, property types, required
    /// fields) as JSON to edit and `plans set`
    Infer {
        /// The source id or name
        #[arg(long)]
        source: String,
        /// How far back to look: 7d, 24h, 30m
        #[arg(long, default_value = "7d")]
        since: String,
    },
}

/// Runs a plans subcommand.
pub fn run(data_dir: &Path, command: PlansCommand) -> anyhow::Result<ExitCode> {
    let stores = open_stores(StoreOptions::read_only(data_dir))?;
    let catalog = stores.catalog()?;
    let catalog = catalog.as_ref();
    match command {
        PlansCommand::Set { source, file } => {
            let source = resolve_source(catalog, &source).map_err(crate::cli_error::coded)?;
            let mut text = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .take(plans::MAX_PLAN_BYTES as u64 + 1)
                    .read_to_end(&mut text)?;
            } else {
                text = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
            }
            let plan = plans::parse_plan(&text).map_err(crate::cli_error::coded)?;
            plans::set_plan(catalog, &source.id, &plan).map_err(crate::cli_error::coded)?;
            let summary = json!({"mode": plan["mode"], "events": plan.get("events").and_then(|e| e.as_object()).map_or(0, |e| e.len())});
            record_audit(
                catalog,
                &crate::cli_actor(),
                "source.plan.set",
                &source.id,
                None,
                Some(&summary),
            );
            println!(
                "Stored the tracking plan of {} ({}): mode {}, {} events",
                source.name, source.id, summary["mode"], summary["events"]
            );
        }
        PlansCommand::Get { source } => {
            let source = resolve_source(catalog, &source).map_err(crate::cli_error::coded)?;
            let plan = plans::plan(catalog, &source.id).map_err(crate::cli_error::coded)?.ok_or_else(|| {
                crate::cli_error::coded(PlanError::User(UserError::new(
                    ErrorCode::TrackingPlanNotFound,
                    format!("source {} has no tracking plan: `tessera plans infer --source {}` proposes one", source.id, source.id),
                )))
            })?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        PlansCommand::Delete { source } => {
            let source = resolve_source(catalog, &source).map_err(crate::cli_error::coded)?;
            if !plans::delete_plan(catalog, &source.id).map_err(crate::cli_error::coded)? {
                return Err(crate::cli_error::coded(PlanError::User(UserError::new(
                    ErrorCode::TrackingPlanNotFound,
                    format!("source {} has no tracking plan", source.id),
                ))));
            }
            record_audit(
                catalog,
                &crate::cli_actor(),
                "source.plan.delete",
                &source.id,
                None,
                None,
            );
            println!(
                "Removed the tracking plan of {} ({})",
                source.name, source.id
            );
        }
        PlansCommand::Violations { source, json } => {
            let source = resolve_source(catalog, &source).map_err(crate::cli_error::coded)?;
            let stored = violations::stored(catalog, &source.id)?;
            let report = violations::report(&source.id, &stored);
            if json {
                println!("{report}");
            } else if stored.rows.is_empty() {
                println!(
                    "No violations recorded for {} ({}).",
                    source.name, source.id
                );
            } else {
                println!(
                    "{:<32} {:<24} {:<16} {:>8}  EXAMPLE",
                    "EVENT", "PROPERTY", "RULE", "COUNT"
                );
                for event in report["events"].as_array().into_iter().flatten() {
                    for row in event["properties"].as_array().into_iter().flatten() {
                        println!(
                            "{:<32} {:<24} {:<16} {:>8}  {}",
                            event["event"].as_str().unwrap_or(""),
                            row["property"].as_str().unwrap_or(""),
                            row["rule"].as_str().unwrap_or(""),
                            row["count"],
                            row["example"]["messageId"].as_str().unwrap_or(""),
                        );
                    }
                }
            }
        }
        PlansCommand::Infer { source, since } => {
            let source = resolve_source(catalog, &source).map_err(crate::cli_error::coded)?;
            let since = plans::infer::parse_since(&since).map_err(crate::cli_error::coded)?;
            let since_ms = chrono::Utc::now().timestamp_millis() - since.as_millis() as i64;
            let events = stores.events()?;
            let proposal = plans::infer::propose(events.as_ref(), source.key, since_ms)?;
            eprintln!(
                "Read {} events of {} ({}).",
                proposal.scanned, source.name, source.id
            );
            println!("{}", serde_json::to_string_pretty(&proposal.plan)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
