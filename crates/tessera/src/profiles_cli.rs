//! `tessera profiles list|search`: the profile listing of `GET /api/v1/profiles` on
//! the data directory — the same filters (identifier prefix, `NAME=VALUE` traits,
//! text), order and cursor — as a table, or with `--json` as the API answers.

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_server::profiles::{profile_search, profiles_page};

/// Profile subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List profiles, newest last seen first (filters as `search`)
    List(ListArgs),
    /// Profiles with an identifier (email, user id, …) starting with QUERY
    Search {
        /// The identifier prefix (compared as typed and in lowercase)
        query: String,
        #[command(flatten)]
        args: ListArgs,
    },
}

/// Filters, order and paging of a profile listing.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only profiles whose trait NAME equals VALUE (repeat: all must hold); NAME may
    /// be a dotted path into a nested trait (`address.city=Paris`); VALUE is text, or
    /// a number, true, false or null
    #[arg(long = "trait", value_name = "NAME=VALUE")]
    traits: Vec<String>,
    /// Only profiles with an identifier or a trait value containing this text
    #[arg(long)]
    text: Option<String>,
    /// `-lastSeen` (newest first, the default) or `lastSeen`
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// At most this many (1 to 200; default 50)
    #[arg(long)]
    limit: Option<String>,
    /// Continue after a previous page (its "next page" cursor)
    #[arg(long)]
    cursor: Option<String>,
    /// Print the answer of GET /api/v1/profiles (JSON) instead of a table
    #[arg(long)]
    json: bool,
}

/// Runs a profiles subcommand.
pub fn run(data_dir: &Path, command: ProfilesCommand) -> anyhow::Result<ExitCode> {
    let (query, args) = match command {
        ProfilesCommand::List(args) => (None, args),
        ProfilesCommand::Search { query, args } => (Some(query), args),
    };
    let mut params: Vec<(String, String)> = Vec::new();
    if let Some(q) = query {
        params.push(("q".into(), q));
    }
    for pair in &args.traits {
        let (name, value) = pair.split_once('=').filter(|(n, _)| !n.is_empty()).ok_or_else(|| {
            anyhow!("[invalid_request] --trait takes NAME=VALUE (e.g. --trait plan=pro), not {pair:?}")
        })?;
        params.push((format!("trait.{name}"), value.to_owned()));
    }
    for (key, value) in [
        ("text", &args.text),
        ("sort", &args.sort),
        ("limit", &args.limit),
        ("cursor", &args.cursor),
    ] {
        if let Some(value) = value {
            params.push((key.into(), value.clone()));
        }
    }
    let search = profile_search(&params).map_err(|e| anyhow!("[{}] {}", e.code(), e.message()))?;
    let stores = open_stores(StoreOptions::read_only(data_dir))
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let page = profiles_page(stores.profiles()?.as_ref(), &search)?;
    if args.json {
        println!("{page}");
    } else {
        print!("{}", table(&page));
        if let Some(next) = page["nextCursor"].as_str() {
            eprintln!("more: add --cursor {next}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Longest cell of the identifiers and traits columns, in characters.
const CELL: usize = 60;

fn cell(text: String) -> String {
    if text.chars().count() <= CELL {
        return text;
    }
    let mut short: String = text.chars().take(CELL - 1).collect();
    short.push('…');
    short
}

/// The page as an aligned table: id, last seen, events, identifiers, traits.
fn table(page: &Value) -> String {
    let empty = Vec::new();
    let profiles = page["profiles"].as_array().unwrap_or(&empty);
    if profiles.is_empty() {
        return "no profiles match\n".into();
    }
    let mut rows = vec![[
        "ID".to_string(),
        "LAST SEEN".into(),
        "EVENTS".into(),
        "IDENTIFIERS".into(),
        "TRAITS".into(),
    ]];
    for p in profiles {
        let identities: Vec<String> = p["identities"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|i| {
                format!(
                    "{}:{}",
                    i["type"].as_str().unwrap_or(""),
                    i["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        let traits: Vec<String> = p["traits"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push([
            p["id"].to_string(),
            p["lastSeen"].as_str().unwrap_or("").to_owned(),
            p["eventCount"].to_string(),
            cell(identities.join(", ")),
            cell(traits.join(", ")),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
