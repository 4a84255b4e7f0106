//! The data directory holds personal data and destination credentials, so it is
//! private to the user Tessera runs as: the directory is created with mode 0700 and
//! every file Tessera creates in it with mode 0600 (SQLite gives a database's `-wal`
//! and `-shm` files the mode of the database file). A directory, or a file in it,
//! that is readable or writable by the group or by others is narrowed when it is
//! opened, and a warning names what was changed.

use std::path::Path;
use tessera_store::{StoreError, StoreResult};

/// Creates `dir` with mode 0700 when missing (its missing parents get the usual
/// mode), and removes the group and other permission bits from an existing `dir` and
/// from each file and directory directly in it. Returns one line per change, each
/// also logged as a warning.
pub fn secure_data_dir(dir: &Path) -> StoreResult<Vec<String>> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::Engine(format!("cannot {what} {}: {e}", path.display()))
    };
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail("create", parent, e))?;
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(dir) {
            Ok(()) => {}
            // Another process created it first: it is narrowed below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("create data directory", dir, e)),
        }
    }
    let mut changes = Vec::new();
    #[cfg(unix)]
    {
        if let Some(change) = narrow(dir).map_err(|e| fail("narrow the mode of", dir, e))? {
            changes.push(change);
        }
        let entries = std::fs::read_dir(dir).map_err(|e| fail("read", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| fail("read", dir, e))?.path();
            if let Some(change) = narrow(&path).map_err(|e| fail("narrow the mode of", &path, e))? {
                changes.push(change);
            }
        }
    }
    for change in &changes {
        tracing::warn!("the data directory must be private to Tessera's user: narrowed {change}");
    }
    Ok(changes)
}

/// Removes the group and other bits of a file or directory (never following a
/// symbolic link); describes the change, if any.
#[cfg(unix)]
fn narrow(path: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        // Removed meanwhile (a SQLite -shm or -journal file, say): nothing to narrow.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if metadata.file_type().is_symlink() {
        return Ok(None);
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let narrowed = mode & 0o7700;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed))?;
    Ok(Some(format!(
        "{} from {:04o} to {:04o}",
        path.display(),
        mode,
        narrowed
    )))
}

/// Creates an empty file with mode 0600 when `path` does not exist (an empty file is
/// an empty SQLite database, so SQLite opens it and gives its `-wal` and `-shm`
/// files the same mode).
pub(crate) fn create_private_file(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Engine(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn a_new_data_directory_and_its_databases_are_private() -> StoreResult<()> {
        let root = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let dir = root.path().join("nested").join("data");
        let (log, catalog) = crate::open_data_dir(&dir)?;
        let _profiles = crate::SqliteProfileStore::open_in(&dir)?;
        let _audiences = crate::SqliteAudienceStore::open_in(&dir)?;
        let _activation = crate::SqliteActivationStore::open_in(&dir)?;
        // A write, so the write-ahead logs and shared-memory files exist.
        tessera_store::Catalog::set_setting(&catalog, "probe", "1")?;
        drop(log);
        assert_eq!(mode(&dir), 0o700);
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::Engine(e.to_string()))? {
            let path = entry.map_err(|e| StoreError::Engine(e.to_string()))?.path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 7, "only {seen} files");
        assert!(dir.join("tessera.db-wal").exists());
        Ok(())
    }

    #[test]
    fn an_open_data_directory_is_narrowed_with_a_note_of_each_change() -> StoreResult<()> {
        let root = tempfile::tempdir().map_err(|e| StoreError::Engine(e.to_string()))?;
        let dir = root.path().join("data");
        let io = |e: std::io::Error| StoreError::Engine(e.to_string());
        std::fs::create_dir(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        let token = dir.join("admin-token");
        std::fs::write(&token, "t\n").map_err(io)?;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        let private = dir.join("private");
        std::fs::write(&private, "p\n").map_err(io)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).map_err(io)?;

        let changes = secure_data_dir(&dir)?;
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].ends_with("from 0755 to 0700"), "{changes:?}");
        assert!(changes[1].contains("admin-token"), "{changes:?}");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&token), 0o600);
        assert_eq!(mode(&private), 0o600);
        // Narrowed once: the next open changes nothing.
        assert!(secure_data_dir(&dir)?.is_empty());
        Ok(())
    }
}
