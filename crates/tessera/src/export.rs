//! `tessera export events`: the stored messages as JSONL on stdout, in log order.

use anyhow::{Context, bail};
use clap::Subcommand;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::process::ExitCode;
use tessera_core::time::parse_timestamp;
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::{EventFilter, StoreError};

/// What to export.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every stored event: one Segment message per line, with its messageId
    Events {
        /// Only events received at or after this time (ISO-8601, e.g. 2026-11-23T00:00:00Z)
        #[arg(long)]
        since: Option<String>,
        /// Only events of this source (id or name)
        #[arg(long)]
        source: Option<String>,
    },
}

/// Runs an export.
pub fn run(data_dir: &Path, command: ExportCommand) -> anyhow::Result<ExitCode> {
    let ExportCommand::Events { since, source } = command;
    if !data_dir.is_dir() {
        bail!(
            "no data directory at {}: pass --data-dir (or TESSERA_DATA_DIR) pointing at Tessera's data",
            data_dir.display()
        );
    }
    let stores = open_stores(StoreOptions::read_only(data_dir))?;
    let (log, catalog) = (stores.events()?, stores.catalog()?);
    let received_since_ms = match since {
        None => None,
        Some(text) => Some(
            parse_timestamp(&text)
                .with_context(|| {
                    format!("--since {text:?} is not an ISO-8601 time such as 2026-11-23T00:00:00Z")
                })?
                .timestamp_millis(),
        ),
    };
    let source_key = match source {
        None => None,
        Some(name) => Some(
            catalog
                .find_source(&name)?
                .with_context(|| format!("no source has the id or name {name:?}"))?
                .key,
        ),
    };
    let filter = EventFilter {
        after_seq: None,
        received_since_ms,
        source_key,
        limit: None,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = log.scan(&filter, &mut |event| {
        out.write_all(event.payload.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| StoreError::Engine(format!("stdout: {e}")))
    });
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(_), Ok(())) => Ok(ExitCode::SUCCESS),
        // `tessera export events | head` closes the pipe early: not an error.
        (Err(StoreError::Engine(e)), _) if e.contains("Broken pipe") => Ok(ExitCode::SUCCESS),
        (_, Err(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        (Err(e), _) => Err(e.into()),
        (_, Err(e)) => Err(e.into()),
    }
}
