//! Where file destinations may write: inside one directory (`[activation] file_dir`,
//! by default `<data dir>/exports`).
//!
//! A file destination's `path` is relative to that directory, or an absolute path
//! inside it. `..` is refused, and so is a path whose existing part leads outside
//! through a symbolic link. The check runs when the destination is saved and again
//! before each write, which goes to the resolved path: a link added later that leads
//! outside makes the delivery fail instead of writing there.

use std::path::{Component, Path, PathBuf};

/// The directory file destinations write in (created, mode 0700, by the first write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDir {
    /// As configured (absolute).
    configured: PathBuf,
}

impl FileDir {
    /// The directory `root` (relative: to the working directory).
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let configured = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()?.join(root)
        };
        Ok(Self { configured })
    }

    /// The directory with links resolved (as configured while it does not exist).
    fn real(&self) -> PathBuf {
        self.configured
            .canonicalize()
            .unwrap_or_else(|_| self.configured.clone())
    }

    /// The directory, as configured.
    pub fn root(&self) -> &Path {
        &self.configured
    }

    /// The file `path` names, if it is inside the directory; else what to fix.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let text = path.trim();
        let outside = || {
            format!(
                "settings.path {text:?} is outside {}, the directory file destinations write in ([activation] file_dir): give a path relative to it",
                self.configured.display()
            )
        };
        if text.is_empty() || text.contains('\0') {
            return Err("settings.path must name a file, e.g. \"events.jsonl\"".into());
        }
        let given = Path::new(text);
        if given
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(format!(
                "settings.path {text:?} must not contain \"..\": give a path inside {} ([activation] file_dir)",
                self.configured.display()
            ));
        }
        let real_root = self.real();
        let relative = if given.is_absolute() {
            given
                .strip_prefix(&self.configured)
                .or_else(|_| given.strip_prefix(&real_root))
                .map_err(|_| outside())?
        } else {
            given
        };
        let relative: PathBuf = relative
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if !matches!(
            relative.components().next_back(),
            Some(Component::Normal(_))
        ) {
            return Err("settings.path must name a file, e.g. \"events.jsonl\"".into());
        }
        let target = real_root.join(&relative);
        if !real_root.is_dir() {
            // Nothing inside exists yet (the first write creates it).
            return Ok(target);
        }
        // The deepest part that exists, with links resolved, must still be inside.
        let mut existing = target.as_path();
        loop {
            match existing.canonicalize() {
                Ok(real) => {
                    if !real.starts_with(&real_root) {
                        return Err(format!("{} (a symbolic link leads out of it)", outside()));
                    }
                    if existing == target {
                        if real.is_dir() {
                            return Err(format!("settings.path {text:?} is a directory"));
                        }
                        return Ok(real);
                    }
                    return Ok(real.join(target.strip_prefix(existing).unwrap_or(&relative)));
                }
                // A link whose target does not exist (yet): writing would create it.
                Err(_) if std::fs::symlink_metadata(existing).is_ok() => {
                    return Err(format!("{} (a symbolic link leads out of it)", outside()));
                }
                Err(_) => match existing.parent() {
                    Some(parent) if parent.starts_with(&real_root) => existing = parent,
                    _ => return Err(outside()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = FileDir::open(&base.path().join("exports")).unwrap_or_else(|e| panic!("{e}"));
        // Before the directory exists, paths are checked as written.
        assert!(dir.resolve("first.jsonl").is_ok());
        assert!(dir.resolve("../first.jsonl").is_err());
        assert!(dir.resolve("/etc/first.jsonl").is_err());
        std::fs::create_dir(base.path().join("exports")).unwrap_or_else(|e| panic!("{e}"));
        let real = dir.real();
        let ok = |p: &str| dir.resolve(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(ok("events.jsonl"), real.join("events.jsonl"));
        assert_eq!(
            ok("./sub/new/events.jsonl"),
            real.join("sub/new/events.jsonl")
        );
        let inside = base.path().join("exports").join("x.jsonl");
        assert_eq!(ok(&inside.to_string_lossy()), real.join("x.jsonl"));
        for bad in [
            "/etc/passwd",
            "../escape.jsonl",
            "sub/../../escape.jsonl",
            "",
            "   ",
            ".",
            "/",
        ] {
            assert!(dir.resolve(bad).is_err(), "{bad:?}");
        }
        let outside = base.path().join("elsewhere.jsonl");
        let error = dir
            .resolve(&outside.to_string_lossy())
            .err()
            .unwrap_or_default();
        assert!(error.contains("file_dir"), "{error}");
        #[cfg(unix)]
        {
            let secret = base.path().join("secret");
            std::fs::create_dir(&secret).unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(&secret, real.join("link"))
                .unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(base.path().join("f"), real.join("file-link"))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::create_dir(real.join("sub")).unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(real.join("sub"), real.join("inner"))
                .unwrap_or_else(|e| panic!("{e}"));
            for bad in ["link/events.jsonl", "file-link"] {
                let error = dir.resolve(bad).err().unwrap_or_default();
                assert!(error.contains("symbolic link"), "{bad}: {error}");
            }
            assert_eq!(ok("inner/e.jsonl"), real.join("sub/e.jsonl"));
        }
    }
}
