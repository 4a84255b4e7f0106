//! `tessera replay` and `tessera identity ...`: rebuild derived state from the log,
//! show and change the identity rules, unlink a wrong identifier, look up a profile.

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tessera_identity::identifiers::{Identifier, normalize_value};
use tessera_identity::processor::Processor;
use tessera_identity::rules::IdentityRules;
use tessera_identity::suggestions::{INTERNAL_SOURCE_KEY, merge_message, suggest_merges};
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::AppendBatch;
use tessera_store::profiles::ProfileStore;
use tessera_store_sqlite::DedupConfig;

/// Identity subcommands.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the identity rules as JSON
    Rules,
    /// Replace the identity rules with a JSON file (see `tessera identity rules` for the shape)
    SetRules {
        /// The JSON file
        file: PathBuf,
    },
    /// Remove a wrong identifier link (type:value): it stops linking, and the profile
    /// that held it is rebuilt from its events
    Unlink {
        /// The identifier, e.g. email:family@example.com
        identifier: String,
    },
    /// Suggest merges of profiles that share no identifier but look like one person
    /// (probabilistic matching over their traits); prints JSON lines, strongest first
    Suggest {
        /// Match-weight threshold [default: where the match probability is one half]
        #[arg(long)]
        threshold: Option<f64>,
        /// Most suggestions to print
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Merge two profiles (by id), e.g. after reviewing a suggestion; the merge is
    /// written to the event log, so replays repeat it
    Merge {
        /// One profile id
        left: i64,
        /// The other profile id
        right: i64,
        /// Why (kept with the merge)
        #[arg(long, default_value = "merged by an operator")]
        reason: String,
    },
    /// Show the profile holding an identifier (type:value), with traits and identities
    Show {
        /// The identifier, e.g. user_id:42
        identifier: String,
    },
}

fn open(data_dir: &Path) -> anyhow::Result<(Arc<Processor>, Arc<dyn ProfileStore>)> {
    if !data_dir.is_dir() {
        bail!(
            "no data directory at {}: pass --data-dir (or TESSERA_DATA_DIR)",
            data_dir.display()
        );
    }
    let stores = open_stores(StoreOptions::read_only(data_dir))?;
    let profiles = stores.profiles()?;
    let processor = Processor::new(stores.events()?, Arc::clone(&profiles), stores.catalog()?)
        .map_err(crate::cli_error::coded)?;
    Ok((Arc::new(processor), profiles))
}

fn parse_identifier(processor: &Processor, text: &str) -> anyhow::Result<Identifier> {
    let Some((id_type, raw)) = text.split_once(':') else {
        bail!("write the identifier as type:value, e.g. email:jane@example.com");
    };
    let rules = processor.compiled_rules();
    let Some(kind) = rules.identifier_type(id_type) else {
        bail!("{id_type:?} is not an identifier type (see `tessera identity rules`)");
    };
    let value = normalize_value(&rules, kind, raw).unwrap_or_else(|| raw.trim().to_string());
    Ok(Identifier::new(id_type, value))
}

/// `tessera replay`: deletes all derived state and rebuilds it from the whole log.
///
/// Refused while a server runs on the data directory: its audience index and
/// computed traits, kept in memory, would count the replayed events a second time.
/// The server's lock is held meanwhile, so no server starts halfway through.
pub fn replay(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(_no_server) = crate::privacy_cli::ServeLock::try_hold(data_dir)? else {
        bail!(
            "[{}] a `tessera serve` is running on the data directory {} (it holds serve.lock): \
             replaying beside it would count events twice in its audiences and computed traits. \
             Stop the server, run `tessera replay`, then start the server again",
            tessera_core::ErrorCode::ServerRunning.as_str(),
            data_dir.display()
        );
    };
    let (processor, profiles) = open(data_dir)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} replaying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let applied = processor
        .replay(&mut |applied, target| {
            bar.set_length(u64::try_from(target).unwrap_or(0));
            bar.set_position(applied);
        })
        .map_err(crate::cli_error::coded)?;
    bar.finish_and_clear();
    eprintln!(
        "Replayed {applied} events into {} profiles in {:.1} s",
        profiles.profile_count()?,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs an identity subcommand.
pub fn run(data_dir: &Path, command: IdentityCommand) -> anyhow::Result<ExitCode> {
    let (processor, profiles) = open(data_dir)?;
    match command {
        IdentityCommand::Rules => {
            println!("{}", serde_json::to_string_pretty(&processor.rules())?);
        }
        IdentityCommand::SetRules { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let rules: IdentityRules = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid identity rules", file.display()))?;
            processor
                .set_rules(rules)
                .map_err(crate::cli_error::coded)?;
            eprintln!(
                "Identity rules updated; they apply to new events (run `tessera replay` to apply them to history)."
            );
        }
        IdentityCommand::Unlink { identifier } => {
            let identifier = parse_identifier(&processor, &identifier)?;
            let owners = processor
                .unlink(&identifier)
                .map_err(crate::cli_error::coded)?;
            eprintln!(
                "Unlinked {}; its events now belong to profiles {:?}",
                identifier.id_type, owners
            );
        }
        IdentityCommand::Suggest { threshold, limit } => {
            let found = suggest_merges(profiles.as_ref(), threshold, limit)
                .map_err(crate::cli_error::coded)?;
            for s in &found {
                println!(
                    "{}",
                    serde_json::json!({
                        "profiles": [s.left, s.right], "weight": s.explanation.weight,
                        "probability": s.explanation.probability, "mergeable": s.mergeable,
                        "fields": s.explanation.fields,
                    })
                );
            }
            eprintln!("{} suggestions", found.len());
        }
        IdentityCommand::Merge {
            left,
            right,
            reason,
        } => {
            // A second handle on the log that remembers messageIds, for the append.
            let log =
                open_stores(StoreOptions::writer(data_dir, DedupConfig::default()))?.events()?;
            let event = merge_message(
                &processor.compiled_rules(),
                profiles.as_ref(),
                left,
                right,
                &reason,
                INTERNAL_SOURCE_KEY,
                chrono::Utc::now().timestamp_millis(),
            )
            .map_err(crate::cli_error::coded)?;
            log.append(&[AppendBatch {
                events: vec![event],
                rejections: vec![],
            }])?;
            processor
                .catch_up(&mut |_, _| {})
                .map_err(crate::cli_error::coded)?;
            let merged = profiles
                .profile(left)?
                .and_then(|p| p.merged_into)
                .unwrap_or(left);
            eprintln!("Merged profiles {left} and {right} into {merged}");
        }
        IdentityCommand::Show { identifier } => {
            let identifier = parse_identifier(&processor, &identifier)?;
            let Some(id) = profiles.find(&identifier.id_type, &identifier.value)? else {
                bail!(
                    "[profile_not_found] no profile holds that {}",
                    identifier.id_type
                );
            };
            let summary = profiles.profile(id)?.context("profile vanished")?;
            println!(
                "profile {id}: {} events, {} merges",
                summary.event_count, summary.merge_count
            );
            println!("identities:");
            for link in profiles.identities(id)? {
                println!("  {}:{}", link.id_type, link.value);
            }
            println!("traits:");
            for t in profiles.traits(id)? {
                println!("  {} = {}", t.name, t.value_json);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
