//! `tessera tokens create|list|revoke`: scoped API tokens, as the admin API's
//! `/api/v1/tokens` routes. Works on the data directory directly, with or without a
//! running server (a revoked token is refused from its next request on).

use anyhow::anyhow;
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;
use tessera_runtime::audit::record_audit;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_server::admin::{create_token, token_json};

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print its secret (shown only this once)
    Create {
        /// What it is for, e.g. "support desk"
        name: String,
        /// A scope: admin or read:profiles (repeat for several)
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token: it, and every token it created, is refused from then on
    Revoke {
        /// The token id (tok_...)
        id: String,
    },
}

/// Runs a token subcommand.
pub fn run(data_dir: &Path, command: TokensCommand) -> anyhow::Result<ExitCode> {
    let catalog = open_stores(StoreOptions::read_only(data_dir))?.catalog()?;
    match command {
        TokensCommand::Create { name, scopes } => {
            let (token, secret) = create_token(catalog.as_ref(), &name, &scopes, None)
                .map_err(|e| anyhow!("[{}] {}", e.code(), e.message()))?;
            let after = token_json(&token);
            record_audit(
                catalog.as_ref(),
                &crate::cli_actor(),
                "token.create",
                &token.id,
                None,
                Some(&after),
            );
            eprintln!(
                "created token {} ({}) with scopes [{}]; the secret is shown only now:",
                token.id,
                token.name,
                token.scopes.join(", ")
            );
            println!("{secret}");
        }
        TokensCommand::List => {
            for token in catalog.list_tokens()? {
                println!("{}", token_json(&token));
            }
        }
        TokensCommand::Revoke { id } => {
            let revoked = catalog
                .revoke_token(&id, chrono::Utc::now().timestamp_millis())?
                .ok_or_else(|| anyhow!("[token_not_found] no API token has the id {id:?}"))?;
            let token = revoked.token;
            let mut after = token_json(&token);
            after["revokedDescendants"] = serde_json::json!(revoked.descendants);
            record_audit(
                catalog.as_ref(),
                &crate::cli_actor(),
                "token.revoke",
                &token.id,
                None,
                Some(&after),
            );
            eprintln!("revoked token {} ({})", token.id, token.name);
            if !revoked.descendants.is_empty() {
                eprintln!(
                    "also revoked the tokens it created: {}",
                    revoked.descendants.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
