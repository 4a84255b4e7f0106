//! One way to open the stores: [`open_stores`] for `serve`, every CLI command and
//! the benchmarks.
//!
//! Each store is opened on first use and shared afterwards, so a command that only
//! needs the catalog (creating a source while the server runs, say) does not open
//! the event log, and a command that needs everything gets one instance of each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tessera_store::activation::ActivationStore;
use tessera_store::audiences::AudienceStore;
use tessera_store::profiles::ProfileStore;
use tessera_store::{Catalog, EventLog, StoreError, StoreResult};
use tessera_store_sqlite::{
    DedupConfig, SqliteActivationStore, SqliteAudienceStore, SqliteCatalog, SqliteEventLog,
    SqliteProfileStore,
};

/// Where the stores live and how the event log remembers `messageId`s.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data directory of the embedded engine.
    pub data_dir: PathBuf,
    /// The event log's duplicate window; [`DedupConfig::READ_ONLY`] for commands
    /// that never append.
    pub dedup: DedupConfig,
}

impl StoreOptions {
    /// Options for a command that only reads the event log.
    pub fn read_only(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            dedup: DedupConfig::READ_ONLY,
        }
    }

    /// Options for a command that appends to the event log.
    pub fn writer(data_dir: &Path, dedup: DedupConfig) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            dedup,
        }
    }
}

/// Every store of one installation, each opened on first use.
pub struct Stores {
    options: StoreOptions,
    events: Mutex<Option<Arc<dyn EventLog>>>,
    catalog: Mutex<Option<Arc<dyn Catalog>>>,
    profiles: Mutex<Option<Arc<dyn ProfileStore>>>,
    audiences: Mutex<Option<Arc<dyn AudienceStore>>>,
    activation: Mutex<Option<Arc<dyn ActivationStore>>>,
}

/// Opens the stores of a data directory (creating it, private, when missing).
/// Nothing else is opened until it is first asked for.
pub fn open_stores(options: StoreOptions) -> StoreResult<Stores> {
    // Narrowing a too-open directory is logged there.
    tessera_store_sqlite::secure_data_dir(&options.data_dir)?;
    Ok(Stores {
        options,
        events: Mutex::new(None),
        catalog: Mutex::new(None),
        profiles: Mutex::new(None),
        audiences: Mutex::new(None),
        activation: Mutex::new(None),
    })
}

/// The instance in `slot`, opened by `open` the first time.
fn shared<T: ?Sized>(
    slot: &Mutex<Option<Arc<T>>>,
    open: impl FnOnce() -> StoreResult<Arc<T>>,
) -> StoreResult<Arc<T>> {
    let mut slot = slot
        .lock()
        .map_err(|_| StoreError::Engine("a store failed to open in another thread".into()))?;
    if let Some(store) = slot.as_ref() {
        return Ok(Arc::clone(store));
    }
    let store = open()?;
    *slot = Some(Arc::clone(&store));
    Ok(store)
}

impl Stores {
    /// The options the stores were opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The event log of record.
    pub fn events(&self) -> StoreResult<Arc<dyn EventLog>> {
        shared(&self.events, || {
            let log = SqliteEventLog::open(
                &self
                    .options
                    .data_dir
                    .join(tessera_store_sqlite::EVENTS_FILE),
                self.options.dedup,
            )?;
            Ok(Arc::new(log) as Arc<dyn EventLog>)
        })
    }

    /// Sources, settings, tokens, definitions and the audit log.
    pub fn catalog(&self) -> StoreResult<Arc<dyn Catalog>> {
        shared(&self.catalog, || {
            let catalog = SqliteCatalog::open(
                &self
                    .options
                    .data_dir
                    .join(tessera_store_sqlite::CATALOG_FILE),
            )?;
            Ok(Arc::new(catalog) as Arc<dyn Catalog>)
        })
    }

    /// Profiles and the identity graph.
    pub fn profiles(&self) -> StoreResult<Arc<dyn ProfileStore>> {
        shared(&self.profiles, || {
            Ok(
                Arc::new(SqliteProfileStore::open_in(&self.options.data_dir)?)
                    as Arc<dyn ProfileStore>,
            )
        })
    }

    /// Audience definitions' state: memberships and the change feed.
    pub fn audiences(&self) -> StoreResult<Arc<dyn AudienceStore>> {
        shared(&self.audiences, || {
            Ok(
                Arc::new(SqliteAudienceStore::open_in(&self.options.data_dir)?)
                    as Arc<dyn AudienceStore>,
            )
        })
    }

    /// The activation outbox, journeys and their state.
    pub fn activation(&self) -> StoreResult<Arc<dyn ActivationStore>> {
        shared(&self.activation, || {
            Ok(
                Arc::new(SqliteActivationStore::open_in(&self.options.data_dir)?)
                    as Arc<dyn ActivationStore>,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_is_opened_once_and_shared() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let stores = open_stores(StoreOptions::read_only(&dir.path().join("data")))?;
        let first = stores.catalog()?;
        let second = stores.catalog()?;
        assert!(Arc::ptr_eq(&first, &second));
        // Nothing but what was asked for exists yet.
        assert!(!dir.path().join("data").join("events.db").exists());
        stores.events()?;
        assert!(dir.path().join("data").join("events.db").exists());
        Ok(())
    }
}
