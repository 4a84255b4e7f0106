//! File destinations: JSON lines appended to a file under the configured directory.

use super::{Attempt, Clients};
use crate::config::FileSettings;
use serde_json::{Value, json};

/// What a file destination stores in the outbox for one event: the event itself.
pub(super) fn render(message: &Value) -> Value {
    json!({ "line": message })
}

/// Appends a group of deliveries' lines in one write: one result for all of them.
pub(super) async fn send(
    clients: &Clients,
    settings: &FileSettings,
    payloads: &[Value],
) -> Attempt {
    let lines: Vec<String> = payloads
        .iter()
        .map(|p| p.get("line").cloned().unwrap_or(Value::Null).to_string())
        .collect();
    // Checked again before each write: the directory may have changed.
    let path = match clients.reach.file_path(&settings.path) {
        Ok(path) => path,
        Err(why) => return Attempt::Fail { error: why },
    };
    let written = tokio::task::spawn_blocking(move || append_lines(&path, &lines)).await;
    let error = match written {
        Ok(Ok(())) => return Attempt::Delivered,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    Attempt::Retry {
        error: format!("cannot write the file: {error}"),
        after: None,
    }
}

/// Appends to `path` (created with mode 0600, with its directories): never through a
/// symbolic link put there since the path was checked.
fn append_lines(path: &std::path::Path, lines: &[String]) -> Result<(), std::io::Error> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let mut file = options.open(path)?;
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_data()
}
