//! `tessera privacy export|erase|status`: access and erasure requests, as the
//! `/api/v1/privacy/...` routes.
//!
//! An erasure is queued in the catalog. When a server runs on the data directory
//! (it holds `serve.lock`), the server carries it out and the CLI waits for it;
//! otherwise the CLI carries it out itself, holding the lock so no server starts
//! meanwhile.

use crate::options::Settings;
use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_identity::processor::Processor;
use tessera_runtime::privacy::{
    ActivationSide, AudienceSide, ErasureError, Privacy, PrivacyStores, export_document,
    parse_identifier, record_export, request_erasure, request_json, run_open_erasures,
};
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::activation::ActivationStore;
use tessera_store::audiences::AudienceStore;
use tessera_store::profiles::ProfileStore;
use tessera_store::{Catalog, EventLog, PrivacyRequestKind};

/// The lock file a running server holds in its data directory.
const SERVE_LOCK: &str = "serve.lock";
/// How long `erase` waits for a running server to complete the request.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// Privacy subcommands.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Access request: write everything held about a person as one JSON document
    Export {
        /// The person, as type:value (email:ada@example.com, user_id:42, phone:+4915...)
        #[arg(long)]
        identifier: String,
        /// Write the document to this file (created with mode 0600) instead of stdout
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Erasure: delete a person's events, profile and memberships from every file
    Erase {
        /// The person, as type:value
        #[arg(long)]
        identifier: String,
        /// Only queue it (a running server carries it out); print the request id
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an erasure request's status
    Status {
        /// The request id (prq_...)
        id: String,
    },
}

/// An exclusive lock on `serve.lock` in the data directory, released on drop (and
/// by the OS when the process dies, `kill -9` included).
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    /// Takes the lock for `tessera serve`; fails when another server (or a replay)
    /// holds it.
    pub fn hold(data_dir: &Path) -> anyhow::Result<Self> {
        Self::try_hold(data_dir)?.ok_or_else(|| {
            anyhow!(
                "another `tessera serve` (or a `tessera replay`) is using the data directory {} \
                 (it holds {SERVE_LOCK}); stop it or give this one its own --data-dir",
                data_dir.display()
            )
        })
    }

    /// Takes the lock if no server holds it.
    pub fn try_hold(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        tessera_store_sqlite::secure_data_dir(data_dir)?;
        let path = data_dir.join(SERVE_LOCK);
        let mut options = File::options();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

struct Stores {
    log: Arc<dyn EventLog>,
    catalog: Arc<dyn Catalog>,
    profiles: Arc<dyn ProfileStore>,
    audiences: Arc<dyn AudienceStore>,
    activation: Arc<dyn ActivationStore>,
    processor: Processor,
    privacy: Privacy,
}

fn open(settings: &Settings) -> anyhow::Result<Stores> {
    let dir = &settings.data_dir;
    let stores = open_stores(StoreOptions::writer(dir, settings.dedup))
        .with_context(|| format!("cannot open the data directory {}", dir.display()))?;
    let log = stores.events()?;
    let catalog = stores.catalog()?;
    let profiles = stores.profiles()?;
    let processor = Processor::new(
        Arc::clone(&log),
        Arc::clone(&profiles),
        Arc::clone(&catalog),
    )?;
    let privacy = Privacy::open(Arc::clone(&catalog), settings.privacy.clone())?;
    Ok(Stores {
        log,
        catalog,
        profiles,
        audiences: stores.audiences()?,
        activation: stores.activation()?,
        processor,
        privacy,
    })
}

/// Runs a privacy subcommand.
pub fn run(settings: &Settings, command: PrivacyCommand) -> anyhow::Result<ExitCode> {
    let stores = open(settings)?;
    let user_error = |e: tessera_core::UserError| anyhow!("[{}] {}", e.code.as_str(), e.message);
    match command {
        PrivacyCommand::Export { identifier, output } => {
            let identifier = parse_identifier(&stores.processor.compiled_rules(), &identifier)
                .map_err(user_error)?;
            let request_id = tessera_core::ids::new_privacy_request_id();
            let document = export_document(
                &PrivacyStores {
                    log: stores.log.as_ref(),
                    profiles: stores.profiles.as_ref(),
                    audiences: stores.audiences.as_ref(),
                    catalog: stores.catalog.as_ref(),
                    activation: stores.activation.as_ref(),
                },
                &identifier,
                &request_id,
                None,
            )?;
            record_export(
                &stores.privacy,
                &identifier,
                &crate::cli_actor(),
                &request_id,
                document.is_some(),
            )?;
            let Some(document) = document else {
                bail!(
                    "[profile_not_found] no profile holds the {} identifier given: Tessera keeps no data about it",
                    identifier.id_type
                );
            };
            let text = serde_json::to_string_pretty(&document)?;
            match output {
                Some(path) => {
                    write_private(&path, &text)?;
                    eprintln!(
                        "wrote the access document {request_id} to {}",
                        path.display()
                    );
                }
                None => println!("{text}"),
            }
        }
        PrivacyCommand::Erase {
            identifier,
            no_wait,
        } => {
            let identifier = parse_identifier(&stores.processor.compiled_rules(), &identifier)
                .map_err(user_error)?;
            let request = request_erasure(&stores.privacy, &identifier, &crate::cli_actor())?;
            match ServeLock::try_hold(&settings.data_dir)? {
                Some(_lock) => {
                    eprintln!("erasing ({}) ...", request.id);
                    let processor = &stores.processor;
                    let mut catch_up = |_fence: i64| {
                        processor
                            .catch_up(&mut |_, _| {})
                            .map(|_| ())
                            .map_err(ErasureError::from)
                    };
                    run_open_erasures(
                        processor,
                        &stores.privacy,
                        &AudienceSide::Store(stores.audiences.as_ref()),
                        Some(&ActivationSide {
                            store: stores.activation.as_ref(),
                            pause: None,
                            forget_handed: None,
                        }),
                        &mut catch_up,
                    )?;
                }
                None if no_wait => {
                    eprintln!("queued; the running server carries it out");
                    println!("{}", request_json(&request));
                    return Ok(ExitCode::SUCCESS);
                }
                None => {
                    eprintln!(
                        "queued {}; waiting for the running server to carry it out ...",
                        request.id
                    );
                    wait_for(stores.catalog.as_ref(), &request.id)?;
                }
            }
            return print_status(stores.catalog.as_ref(), &request.id);
        }
        PrivacyCommand::Status { id } => return print_status(stores.catalog.as_ref(), &id),
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_for(catalog: &dyn Catalog, id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < WAIT_LIMIT {
        let done = catalog
            .privacy_request(id)?
            .is_some_and(|r| r.status == "completed" || r.status == "failed");
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the server has not completed {id} after {} s; `tessera privacy status {id}` shows its progress",
        WAIT_LIMIT.as_secs()
    )
}

fn print_status(catalog: &dyn Catalog, id: &str) -> anyhow::Result<ExitCode> {
    let request = catalog
        .privacy_request(id)?
        .filter(|r| r.kind == PrivacyRequestKind::Erasure)
        .ok_or_else(|| {
            anyhow!("[privacy_request_not_found] no erasure request has the id {id:?}")
        })?;
    println!("{}", request_json(&request));
    Ok(if request.status == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // An existing file keeps its mode on open: narrow it too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}
