//! The store contract suite (`tessera_store::testkit`) run against the SQLite engine.

use tessera_store::activation::ActivationStore;
use tessera_store::audiences::AudienceStore;
use tessera_store::profiles::ProfileStore;
use tessera_store::testkit::Engine;
use tessera_store::{Catalog, EventLog, StoreResult};
use tessera_store_sqlite::{
    DedupConfig, SqliteActivationStore, SqliteAudienceStore, SqliteProfileStore, open_data_dir_with,
};

/// The SQLite engine: a place is a temporary data directory.
struct Sqlite;

impl Engine for Sqlite {
    type Place = tempfile::TempDir;

    fn fresh_place(&self) -> Result<Self::Place, String> {
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))
    }

    fn event_log(&self, place: &Self::Place) -> StoreResult<Box<dyn EventLog>> {
        let (log, _) = open_data_dir_with(place.path(), DedupConfig::default())?;
        Ok(Box::new(log))
    }

    fn catalog(&self, place: &Self::Place) -> StoreResult<Box<dyn Catalog>> {
        let (_, catalog) = open_data_dir_with(place.path(), DedupConfig::default())?;
        Ok(Box::new(catalog))
    }

    fn profiles(&self, place: &Self::Place) -> StoreResult<Box<dyn ProfileStore>> {
        Ok(Box::new(SqliteProfileStore::open_in(place.path())?))
    }

    fn audiences(&self, place: &Self::Place) -> StoreResult<Box<dyn AudienceStore>> {
        Ok(Box::new(SqliteAudienceStore::open_in(place.path())?))
    }

    fn activation(&self, place: &Self::Place) -> StoreResult<Box<dyn ActivationStore>> {
        Ok(Box::new(SqliteActivationStore::open_in(place.path())?))
    }

    /// Every file of the data directory: each database with its -wal and -shm files.
    fn stored_files(&self, place: &Self::Place) -> Result<Vec<(String, Vec<u8>)>, String> {
        let read_dir = std::fs::read_dir(place.path())
            .map_err(|e| format!("cannot list {}: {e}", place.path().display()))?;
        let mut files = Vec::new();
        for entry in read_dir {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_file() {
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                files.push((path.display().to_string(), bytes));
            }
        }
        Ok(files)
    }

    fn place_from_files(&self, files: Vec<(String, Vec<u8>)>) -> Result<Self::Place, String> {
        let place = self.fresh_place()?;
        for (name, bytes) in files {
            let file_name = std::path::Path::new(&name)
                .file_name()
                .ok_or_else(|| format!("{name} names no file"))?;
            let path = place.path().join(file_name);
            std::fs::write(&path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(place)
    }
}

tessera_store::store_contract_tests!(Sqlite);
