//! `tessera audiences ...` and `tessera computed-traits ...`: define audiences and
//! computed traits, preview a definition, list members.
//!
//! Definitions go to the catalog, which a running server reads on its next tick
//! (within a second) and computes; memberships are the server's to write, so this
//! CLI only reads them. `preview` builds the audience index from the data
//! directory itself (with a progress bar), so it works with or without a server.

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tessera_audience::computed::ComputedTrait;
use tessera_audience::engine::{AudienceEngine, EngineOptions};
use tessera_core::time::{SystemClock, format_millis};
use tessera_runtime::audit::record_audit;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::Catalog;

/// Audience subcommands.
#[derive(Debug, Subcommand)]
pub enum AudiencesCommand {
    /// List audiences with their definitions and member counts
    List,
    /// Show one audience as JSON
    Show {
        /// The audience key
        key: String,
    },
    /// Create an audience; a running server computes its members within a second
    Create {
        /// The key (a-z, 0-9, _ and -), e.g. cart-abandoners
        key: String,
        /// The definition (text form or JSON), e.g. 'trait plan = "pro"'
        #[arg(long, conflicts_with = "file")]
        definition: Option<String>,
        /// Read the definition from a file instead
        #[arg(long)]
        file: Option<PathBuf>,
        /// Display name [default: the key]
        #[arg(long, default_value = "")]
        name: String,
        /// What it is for
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change an audience's definition, name or description
    Update {
        /// The audience key
        key: String,
        /// The new definition (text form or JSON)
        #[arg(long)]
        definition: Option<String>,
        /// The new display name
        #[arg(long)]
        name: Option<String>,
        /// The new description
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an audience (its members exit)
    Delete {
        /// The audience key
        key: String,
    },
    /// Count the profiles a definition matches now, with a sample (builds the index
    /// from the data directory)
    Preview {
        /// The definition (text form or JSON)
        definition: String,
        /// Profiles to print
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
    /// Print an audience's members (profile ids, one per line)
    Members {
        /// The audience key
        key: String,
    },
}

/// Computed trait subcommands.
#[derive(Debug, Subcommand)]
pub enum ComputedCommand {
    /// List computed traits (presets included) as JSON lines
    List,
    /// Create or replace a computed trait from a JSON file, e.g.
    /// {"key": "orders_30d", "aggregate": "count", "event": "Order Completed", "window": "30d"}
    Set {
        /// The JSON file
        file: PathBuf,
    },
    /// Delete a stored computed trait (a preset with the same key comes back)
    Delete {
        /// The key
        key: String,
    },
}

/// The stored destinations and journeys that name the audience `key`.
fn audience_users(catalog: &dyn Catalog, key: &str) -> anyhow::Result<Vec<String>> {
    use tessera_activation::config::{Destination, Journey};
    use tessera_store::keys::{DESTINATION_PREFIX, JOURNEY_PREFIX};
    // A definition that does not read is skipped here, as activation skips it.
    let destinations: Vec<Destination> = catalog
        .settings_with_prefix(DESTINATION_PREFIX)?
        .iter()
        .filter_map(|(_, text)| serde_json::from_str(text).ok())
        .collect();
    let journeys: Vec<Journey> = catalog
        .settings_with_prefix(JOURNEY_PREFIX)?
        .iter()
        .filter_map(|(_, text)| serde_json::from_str(text).ok())
        .collect();
    Ok(tessera_activation::references::audience_users(
        key,
        &destinations,
        &journeys,
    ))
}

fn engine(data_dir: &Path) -> anyhow::Result<(AudienceEngine, Arc<dyn Catalog>)> {
    engine_with(data_dir, EngineOptions::default())
}

/// The audience engine over a data directory (read-only stores), its definitions
/// loaded but not its index, and the catalog.
pub(crate) fn engine_with(
    data_dir: &Path,
    options: EngineOptions,
) -> anyhow::Result<(AudienceEngine, Arc<dyn Catalog>)> {
    if !data_dir.is_dir() {
        bail!(
            "no data directory at {}: pass --data-dir (or TESSERA_DATA_DIR)",
            data_dir.display()
        );
    }
    let stores = open_stores(StoreOptions::read_only(data_dir))?;
    let catalog = stores.catalog()?;
    let engine = AudienceEngine::new(
        Arc::clone(&catalog),
        stores.audiences()?,
        stores.profiles()?,
        stores.events()?,
        Arc::new(SystemClock),
        options,
    );
    engine.load_definitions().map_err(crate::cli_error::coded)?;
    Ok((engine, catalog))
}

/// An audience's definition as the audit log keeps it.
fn definition_json(audience: &tessera_audience::engine::AudienceDefinition) -> serde_json::Value {
    serde_json::json!({"key": audience.key, "name": audience.name,
                       "description": audience.description, "definition": audience.text()})
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs an audience subcommand.
pub fn run(data_dir: &Path, command: AudiencesCommand) -> anyhow::Result<ExitCode> {
    let (engine, catalog) = engine(data_dir)?;
    let actor = crate::cli_actor();
    match command {
        AudiencesCommand::List => {
            for audience in engine.list().map_err(crate::cli_error::coded)? {
                let members = engine.status(&audience.key).members;
                println!(
                    "{}\t{}\t{} members\t{}",
                    audience.key,
                    audience.name,
                    members,
                    audience.text()
                );
            }
        }
        AudiencesCommand::Show { key } => {
            let audience = engine.get(&key).map_err(crate::cli_error::coded)?;
            print_json(&serde_json::json!({
                "key": audience.key, "name": audience.name, "description": audience.description,
                "definition": audience.text(), "condition": audience.condition,
                "createdAt": format_millis(audience.created_at_ms), "updatedAt": format_millis(audience.updated_at_ms),
            }));
        }
        AudiencesCommand::Create {
            key,
            definition,
            file,
            name,
            description,
        } => {
            let text = match (definition, file) {
                (Some(text), _) => text,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => bail!("give the definition with --definition TEXT or --file PATH"),
            };
            let audience = engine
                .create(&key, &name, &description, &text)
                .map_err(crate::cli_error::coded)?;
            let after = definition_json(&audience);
            record_audit(
                catalog.as_ref(),
                &actor,
                "audience.create",
                &key,
                None,
                Some(&after),
            );
            eprintln!(
                "created audience {} ({}): {}",
                audience.key,
                audience.name,
                audience.text()
            );
        }
        AudiencesCommand::Update {
            key,
            definition,
            name,
            description,
        } => {
            let before = engine.get(&key).ok().map(|a| definition_json(&a));
            let audience = engine
                .update(
                    &key,
                    name.as_deref(),
                    description.as_deref(),
                    definition.as_deref(),
                )
                .map_err(crate::cli_error::coded)?;
            let after = definition_json(&audience);
            record_audit(
                catalog.as_ref(),
                &actor,
                "audience.update",
                &key,
                before.as_ref(),
                Some(&after),
            );
            eprintln!("updated audience {}: {}", audience.key, audience.text());
        }
        AudiencesCommand::Delete { key } => {
            let before = engine.get(&key).ok().map(|a| definition_json(&a));
            let users = audience_users(catalog.as_ref(), &key)?;
            if !users.is_empty() {
                anyhow::bail!(
                    "[invalid_definition] {}",
                    tessera_activation::references::audience_in_use(&key, &users)
                );
            }
            let report = engine.delete(&key).map_err(crate::cli_error::coded)?;
            record_audit(
                catalog.as_ref(),
                &actor,
                "audience.delete",
                &key,
                before.as_ref(),
                None,
            );
            eprintln!("deleted audience {key}; {} members exited", report.exited);
        }
        AudiencesCommand::Preview { definition, sample } => {
            let condition = engine
                .check_definition(&definition, None)
                .map_err(crate::cli_error::coded)?;
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} events")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message("loading");
            engine
                .load(&mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .map_err(crate::cli_error::coded)?;
            bar.finish_and_clear();
            let preview = engine.preview(&condition, sample);
            // Names never seen in the data, as the preview route answers them.
            let warnings = engine.unknown_names(&condition);
            for warning in &warnings {
                eprintln!("warning [{}]: {}", warning.code, warning.message);
            }
            print_json(&tessera_server::audiences::with_warnings(
                serde_json::json!({"count": preview.count, "sample": preview.sample}),
                &warnings,
            ));
        }
        AudiencesCommand::Members { key } => {
            engine.get(&key).map_err(crate::cli_error::coded)?;
            let mut after = i64::MIN;
            loop {
                let page = engine
                    .members(&key, after, 10_000)
                    .map_err(crate::cli_error::coded)?;
                let Some(last) = page.last() else { break };
                after = last.profile_id;
                for m in page {
                    println!("{}", m.profile_id);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a computed-trait subcommand.
pub fn run_computed(data_dir: &Path, command: ComputedCommand) -> anyhow::Result<ExitCode> {
    let (engine, catalog) = engine(data_dir)?;
    let actor = crate::cli_actor();
    match command {
        ComputedCommand::List => {
            for definition in engine.computed_traits() {
                println!("{}", serde_json::to_string(&definition).unwrap_or_default());
            }
        }
        ComputedCommand::Set { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let definition: ComputedTrait = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a computed trait definition", file.display())
            })?;
            engine
                .save_computed(&definition)
                .map_err(crate::cli_error::coded)?;
            let after = serde_json::json!(definition);
            record_audit(
                catalog.as_ref(),
                &actor,
                "computed_trait.put",
                &definition.key,
                None,
                Some(&after),
            );
            eprintln!("saved computed trait {}", definition.key);
        }
        ComputedCommand::Delete { key } => {
            engine
                .delete_computed(&key)
                .map_err(crate::cli_error::coded)?;
            record_audit(
                catalog.as_ref(),
                &actor,
                "computed_trait.delete",
                &key,
                None,
                None,
            );
            eprintln!("deleted computed trait {key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
