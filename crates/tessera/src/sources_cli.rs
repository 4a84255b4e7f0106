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
    /// Make a source a webhook source (POST /v1/webhooks/{id}): preset and secret;
    /// with --show print its configuration, with --remove remove it
    Webhook {
        /// The source id (src_...) or name
        id: String,
        /// shopify, woocommerce, stripe or generic
        #[arg(long, required_unless_present_any = ["show", "remove"])]
        preset: Option<String>,
        /// The sender's signing secret (or the environment variable)
        #[arg(long, env = "TESSERA_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The generic preset's mapping: a JSON file of field → JSON pointer
        #[arg(long)]
        mapping: Option<std::path::PathBuf>,
        /// The generic preset's signature header (default X-Signature-256)
        #[arg(long)]
        signature_header: Option<String>,
        /// Print the configuration (never the secret)
        #[arg(long, conflicts_with_all = ["preset", "remove"])]
        show: bool,
        /// Remove the configuration
        #[arg(long, conflicts_with = "preset")]
        remove: bool,
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
        SourcesCommand::Webhook {
            id,
            preset,
            secret,
            mapping,
            signature_header,
            show,
            remove,
        } => {
            webhook(
                catalog.as_ref(),
                &id,
                WebhookArgs {
                    preset,
                    secret,
                    mapping,
                    signature_header,
                    show,
                    remove,
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct WebhookArgs {
    preset: Option<String>,
    secret: Option<String>,
    mapping: Option<std::path::PathBuf>,
    signature_header: Option<String>,
    show: bool,
    remove: bool,
}

fn webhook(catalog: &dyn Catalog, id: &str, args: WebhookArgs) -> anyhow::Result<()> {
    use tessera_runtime::webhooks;
    let source =
        tessera_runtime::sources::resolve_source(catalog, id).map_err(crate::cli_error::coded)?;
    let missing = || {
        crate::cli_error::coded(webhooks::WebhookError::User(tessera_core::UserError::new(
            tessera_core::ErrorCode::WebhookNotConfigured,
            format!("source {} has no webhook configuration", source.id),
        )))
    };
    if args.show {
        let config = webhooks::config(catalog, &source.id)
            .map_err(crate::cli_error::coded)?
            .ok_or_else(missing)?;
        println!("{}", config.public_json(&source.id));
        return Ok(());
    }
    if args.remove {
        if !webhooks::delete_config(catalog, &source.id).map_err(crate::cli_error::coded)? {
            return Err(missing());
        }
        record_audit(
            catalog,
            &crate::cli_actor(),
            "source.webhook.delete",
            &source.id,
            None,
            None,
        );
        println!(
            "Removed the webhook configuration of {} ({})",
            source.name, source.id
        );
        return Ok(());
    }
    let mut body = json!({
        "preset": args.preset.unwrap_or_default(),
        "secret": args.secret.unwrap_or_default(),
    });
    if let Some(file) = &args.mapping {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        body["mapping"] = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "[invalid_webhook_config] {} is not JSON: {e}",
                file.display()
            )
        })?;
    }
    if let Some(header) = args.signature_header {
        body["signatureHeader"] = header.into();
    }
    let config =
        webhooks::parse_config(body.to_string().as_bytes()).map_err(crate::cli_error::coded)?;
    webhooks::set_config(catalog, &source, &config).map_err(crate::cli_error::coded)?;
    let shown = config.public_json(&source.id);
    record_audit(
        catalog,
        &crate::cli_actor(),
        "source.webhook.set",
        &source.id,
        None,
        Some(&shown),
    );
    println!(
        "Source {} ({}) takes {} webhooks at POST /v1/webhooks/{}",
        source.name,
        source.id,
        config.preset.as_str(),
        source.id
    );
    Ok(())
}
