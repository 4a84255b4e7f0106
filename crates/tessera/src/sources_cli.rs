//! `tessera sources create|list|disable`: the admin API's source routes, for operators.
//! Works on the data directory directly, with or without a running server.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tessera_runtime::audit::record_audit;
use tessera_runtime::sources::{create_source, disable_source};
use tessera_runtime::{StoreOptions, open_stores};
use tessera_server::admin::source_json;
use tessera_store::Catalog;

/// Source subcommands.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Create a source and print its write key (shown only this once)
    Create {
        /// A name for the source, e.g. "web" or "shop backend"
        name: String,
        /// Print JSON {"id","name","writeKey"} instead of text
        #[arg(long)]
        json: bool,
    },
    /// List sources
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Disable a source: its write key is refused from then on
    Disable {
        /// The source id (src_...) or name
        id: String,
    },
}

fn open_catalog(data_dir: &Path) -> anyhow::Result<Arc<dyn Catalog>> {
    Ok(open_stores(StoreOptions::read_only(data_dir))?.catalog()?)
}

/// Runs a source subcommand.
pub fn run(data_dir: &Path, command: SourcesCommand) -> anyhow::Result<ExitCode> {
    let catalog = open_catalog(data_dir)?;
    match command {
        SourcesCommand::Create { name, json } => {
            let created =
                create_source(catalog.as_ref(), &name).map_err(crate::cli_error::coded)?;
            record_audit(
                catalog.as_ref(),
                &crate::cli_actor(),
                "source.create",
                &created.source.id,
                None,
                Some(&source_json(&created.source)),
            );
            if json {
                let mut body = source_json(&created.source);
                body["writeKey"] = created.write_key.into();
                println!("{body}");
            } else {
                println!(
                    "Created source {} ({})",
                    created.source.name, created.source.id
                );
                println!("Write key (shown only now): {}", created.write_key);
            }
        }
        SourcesCommand::List { json } => {
            let sources = catalog.list_sources()?;
            if json {
                let items: Vec<_> = sources.iter().map(source_json).collect();
                println!("{}", json!({"sources": items}));
            } else if sources.is_empty() {
                println!("No sources yet: create one with `tessera sources create NAME`.");
            } else {
                println!("{:<22} {:<9} {:<10} NAME", "ID", "ENABLED", "KEY");
                for source in &sources {
                    println!(
                        "{:<22} {:<9} {:<10} {}",
                        source.id,
                        if source.enabled { "yes" } else { "no" },
                        format!("{}…", source.write_key_prefix),
                        source.name
                    );
                }
            }
        }
        SourcesCommand::Disable { id } => {
            if id.trim().is_empty() {
                bail!("give the id or name of the source to disable");
            }
            let source = disable_source(catalog.as_ref(), &id).map_err(crate::cli_error::coded)?;
            record_audit(
                catalog.as_ref(),
                &crate::cli_actor(),
                "source.disable",
                &source.id,
                None,
                Some(&source_json(&source)),
            );
            println!("Disabled source {} ({})", source.name, source.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
