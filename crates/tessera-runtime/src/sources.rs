//! Sources and their write keys, and the admin token.
//!
//! Write keys and the admin token are shown once, when created, and stored only as
//! SHA-256 hashes. The [`SourceResolver`] caches key lookups for a couple of seconds so
//! the hot ingest path does not query the catalog per request, while a source disabled
//! from another process (the CLI) is refused within that time.

use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::ids::{hash_secret, new_admin_token, new_source_id, new_write_key};
use tessera_core::{ErrorCode, UserError};
use tessera_store::{Catalog, NewSource, Source, StoreError};

/// How long a write-key lookup is trusted.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Longest accepted source name.
const MAX_SOURCE_NAME_CHARS: usize = 100;

/// A source just created, with the only copy of its write key.
#[derive(Debug, Clone)]
pub struct CreatedSource {
    /// The stored source.
    pub source: Source,
    /// The plaintext write key; not recoverable later.
    pub write_key: String,
}

/// Errors of source management.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The caller's input was wrong.
    #[error(transparent)]
    User(#[from] UserError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl tessera_core::CodedError for SourceError {
    fn code(&self) -> tessera_core::ErrorCode {
        match self {
            SourceError::User(user) => user.code,
            SourceError::Store(_) => tessera_core::ErrorCode::InternalError,
        }
    }

    fn user_message(&self) -> String {
        match self {
            SourceError::User(user) => user.message.clone(),
            SourceError::Store(store) => store.to_string(),
        }
    }
}

impl From<StoreError> for SourceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => SourceError::User(UserError::new(
                ErrorCode::SourceNotFound,
                format!("{what} does not exist: list sources to see their ids"),
            )),
            other => SourceError::Store(other),
        }
    }
}

/// Creates a source with a new write key.
pub fn create_source(catalog: &dyn Catalog, name: &str) -> Result<CreatedSource, SourceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_SOURCE_NAME_CHARS {
        return Err(UserError::new(
            ErrorCode::InvalidRequest,
            format!("\"name\" must be 1 to {MAX_SOURCE_NAME_CHARS} characters"),
        )
        .into());
    }
    // Names are shown in logs, terminals and metrics labels: no line breaks, escape
    // sequences or other control characters.
    if name.chars().any(char::is_control) {
        return Err(UserError::new(
            ErrorCode::InvalidRequest,
            "\"name\" must not contain control characters (line breaks, tabs, escapes)",
        )
        .into());
    }
    if catalog.list_sources()?.iter().any(|s| s.name == name) {
        return Err(UserError::new(
            ErrorCode::SourceExists,
            format!(
                "a source named {name:?} exists already: names are unique, so choose another \
                 (GET /api/v1/sources or `tessera sources list` shows them)"
            ),
        )
        .into());
    }
    let write_key = new_write_key();
    let source = catalog.create_source(&NewSource {
        id: new_source_id(),
        name: name.to_string(),
        write_key_hash: hash_secret(&write_key),
        write_key_prefix: write_key.chars().take(4).collect(),
        created_at_ms: Utc::now().timestamp_millis(),
    })?;
    Ok(CreatedSource { source, write_key })
}

/// The source with this public id or, failing that, this name. A name that several
/// sources share (created before names were unique) is refused: the id says which.
/// An unknown one is answered with the closest existing name.
pub fn resolve_source(catalog: &dyn Catalog, id_or_name: &str) -> Result<Source, SourceError> {
    let sources = catalog.list_sources()?;
    if let Some(source) = sources.iter().find(|s| s.id == id_or_name) {
        return Ok(source.clone());
    }
    let named: Vec<&Source> = sources.iter().filter(|s| s.name == id_or_name).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            Err(UserError::new(
                ErrorCode::SourceNotFound,
                format!(
                    "no source has the id or name {id_or_name:?}{}: list sources to see them",
                    tessera_core::suggest::did_you_mean(id_or_name, names.iter().copied())
                ),
            )
            .into())
        }
        several => Err(UserError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} sources are named {id_or_name:?}; name one by its id ({})",
                several.len(),
                several
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into()),
    }
}

/// Disables a source by public id or name.
pub fn disable_source(catalog: &dyn Catalog, id_or_name: &str) -> Result<Source, SourceError> {
    let source = resolve_source(catalog, id_or_name)?;
    Ok(catalog.disable_source(&source.id)?)
}

/// How the admin token was set up at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// From `TESSERA_ADMIN_TOKEN`.
    FromEnvironment,
    /// Generated now; the plaintext is to be shown once and saved by the operator.
    Generated(String),
    /// Set up on an earlier start; only its hash is known.
    Existing,
}

/// Establishes the admin token hash: the environment's token wins; else the stored
/// hash; else a new token is generated and stored hashed. Returns the hash to check
/// against and how it came about.
pub fn establish_admin_token(
    catalog: &dyn Catalog,
    from_env: Option<&str>,
) -> Result<(String, AdminToken), StoreError> {
    if let Some(token) = from_env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok((hash_secret(token), AdminToken::FromEnvironment));
    }
    if let Some(hash) = catalog.setting(tessera_store::keys::ADMIN_TOKEN_SHA256)? {
        return Ok((hash, AdminToken::Existing));
    }
    let token = new_admin_token();
    let hash = hash_secret(&token);
    catalog.set_setting(tessera_store::keys::ADMIN_TOKEN_SHA256, &hash)?;
    Ok((hash, AdminToken::Generated(token)))
}

/// Finds the source of a write key, with a short-lived cache.
pub struct SourceResolver {
    catalog: Arc<dyn Catalog>,
    cache: RwLock<HashMap<String, (Option<Source>, Instant)>>,
}

impl SourceResolver {
    /// A resolver over the catalog.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The enabled source of `write_key`, or why the key is refused.
    pub fn resolve(&self, write_key: &str) -> Result<Source, SourceLookupError> {
        let hash = hash_secret(write_key);
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(&hash).cloned())
            .filter(|(_, at)| at.elapsed() < CACHE_TTL);
        let source = match cached {
            Some((source, _)) => source,
            None => {
                let source = self
                    .catalog
                    .source_by_key_hash(&hash)
                    .map_err(SourceLookupError::Store)?;
                if let Ok(mut cache) = self.cache.write() {
                    if cache.len() > 10_000 {
                        // Unknown keys are cached too; bound what a key-guessing client can fill.
                        cache.clear();
                    }
                    cache.insert(hash, (source.clone(), Instant::now()));
                }
                source
            }
        };
        match source {
            None => Err(SourceLookupError::User(UserError::new(
                ErrorCode::InvalidWriteKey,
                "the write key does not belong to any source: check the key, or create a source",
            ))),
            Some(source) if !source.enabled => Err(SourceLookupError::User(UserError::new(
                ErrorCode::SourceDisabled,
                format!(
                    "source {} is disabled; its write key is no longer accepted",
                    source.id
                ),
            ))),
            Some(source) => Ok(source),
        }
    }

    /// Forgets cached lookups (after a change made through this process).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }
}

/// Why a write key was refused.
#[derive(Debug)]
pub enum SourceLookupError {
    /// Unknown or disabled.
    User(UserError),
    /// The catalog failed.
    Store(StoreError),
}
