//! Suppression of erased identifiers: new messages carrying one (compared by salted
//! hash) are dropped before they are stored, or stored anonymized.

use super::*;

/// What screening a message decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Nothing erased in it.
    Keep,
    /// Carries an erased identifier: do not store it.
    Drop,
    /// Carries an erased identifier: store this anonymized message instead.
    Anonymized(Map<String, Value>),
}

/// Suppression of erased identifiers and the configuration of privacy features.
pub struct Privacy {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) config: PrivacyConfig,
    pub(super) salt: String,
    pub(super) hashes: RwLock<HashSet<String>>,
    /// Held (shared) by each ingest request from its screening until its append
    /// returned; an erasure takes it exclusively to add suppressions, so once that
    /// returns no message screened before is still on its way to the log.
    pub gate: tokio::sync::RwLock<()>,
    pub(super) woken: std::sync::atomic::AtomicBool,
}

impl Privacy {
    /// Loads (or creates) the installation's salt and the suppression hashes.
    pub fn open(catalog: Arc<dyn Catalog>, config: PrivacyConfig) -> StoreResult<Self> {
        // The server, an import and the CLI may start together on a fresh directory:
        // whoever stores the salt first, everyone uses that one.
        let salt = match catalog.setting(tessera_store::keys::PRIVACY_SUPPRESSION_SALT)? {
            Some(salt) => salt,
            None => catalog.setting_or_insert(
                tessera_store::keys::PRIVACY_SUPPRESSION_SALT,
                &ids::new_salt(),
            )?,
        };
        let hashes = catalog.suppressions()?.into_iter().collect();
        Ok(Self {
            catalog,
            config,
            salt,
            hashes: RwLock::new(hashes),
            gate: tokio::sync::RwLock::new(()),
            woken: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Tells the processor thread a request is waiting (it also looks every second,
    /// for requests the CLI queued).
    pub fn wake(&self) {
        self.woken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Self::wake`] was called since the last time this was asked.
    pub fn take_wake(&self) -> bool {
        self.woken.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The configuration.
    pub fn config(&self) -> &PrivacyConfig {
        &self.config
    }

    /// The salted hash an identifier is kept as.
    pub fn hash(&self, identifier: &Identifier) -> String {
        ids::salted_hash(&self.salt, &identifier.to_string())
    }

    /// Whether any identifier is suppressed (when not, screening is skipped).
    pub fn is_suppressing(&self) -> bool {
        self.hashes.read().map(|h| !h.is_empty()).unwrap_or(true)
    }

    fn is_suppressed(&self, identifier: &Identifier) -> bool {
        let hash = self.hash(identifier);
        self.hashes
            .read()
            .map(|h| h.contains(&hash))
            .unwrap_or(false)
    }

    /// Decides what to do with a new message.
    pub fn screen(&self, rules: &CompiledRules, message: &Map<String, Value>) -> Screened {
        let mut identifiers = extract(rules, message);
        if let Some(previous) = message
            .get("previousId")
            .and_then(tessera_identity::identifiers::scalar_text)
        {
            // An alias's previous id is a user or an anonymous id: both are checked,
            // normalized as those types are.
            for name in ["user_id", "anonymous_id"] {
                if let Some(kind) = rules.identifier_type(name)
                    && let Some(value) = normalize_value(rules, kind, &previous)
                {
                    identifiers.push(Identifier::new(name, value));
                }
            }
        }
        let erased: Vec<Identifier> = identifiers
            .into_iter()
            .filter(|i| self.is_suppressed(i))
            .collect();
        if erased.is_empty() {
            return Screened::Keep;
        }
        match (
            self.config.suppressed_events,
            message.get("type").and_then(Value::as_str),
        ) {
            (SuppressionMode::Anonymize, Some("track" | "page" | "screen")) => {
                Screened::Anonymized(anonymize(rules, message, &erased))
            }
            _ => Screened::Drop,
        }
    }

    /// Whether a message Tessera writes itself (consent, merge) carries an erased
    /// identifier. Call it holding [`Self::gate`] (shared) until the append returned.
    pub fn carries_erased(&self, rules: &CompiledRules, payload: &str) -> bool {
        if !self.is_suppressing() {
            return false;
        }
        match serde_json::from_str::<Value>(payload) {
            Ok(Value::Object(message)) => self.screen(rules, &message) != Screened::Keep,
            _ => false,
        }
    }

    /// Re-reads the suppression hashes (another process may have added some).
    pub fn refresh(&self) -> StoreResult<()> {
        let hashes: HashSet<String> = self.catalog.suppressions()?.into_iter().collect();
        if let Ok(mut set) = self.hashes.write() {
            *set = hashes;
        }
        Ok(())
    }

    /// Suppresses identifiers from now on (kept in the catalog as salted hashes).
    /// Blocks until no ingest request screened before is still being appended.
    pub fn suppress(&self, identifiers: &[Identifier], request_id: &str) -> StoreResult<()> {
        let hashes: Vec<String> = identifiers.iter().map(|i| self.hash(i)).collect();
        self.catalog.add_suppressions(
            &hashes,
            request_id,
            chrono::Utc::now().timestamp_millis(),
        )?;
        let _exclusive = self.gate.blocking_write();
        if let Ok(mut set) = self.hashes.write() {
            set.extend(hashes);
        }
        Ok(())
    }
}

/// A stored message reduced to what carries no identity.
pub(super) fn anonymize(
    rules: &CompiledRules,
    message: &Map<String, Value>,
    erased: &[Identifier],
) -> Map<String, Value> {
    let mut out = Map::new();
    for key in [
        "type",
        "event",
        "name",
        "category",
        "properties",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "messageId",
    ] {
        if let Some(value) = message.get(key) {
            out.insert(key.to_string(), value.clone());
        }
    }
    let mut context = Map::new();
    if let Some(Value::Object(original)) = message.get("context") {
        if let Some(library) = original.get("library") {
            context.insert("library".into(), library.clone());
        }
        // The page's path and title only: URLs, search strings and referrers often
        // carry an email or a token in their query.
        if let Some(Value::Object(page)) = original.get("page") {
            let kept: Map<String, Value> = page
                .iter()
                .filter(|(k, _)| *k == "path" || *k == "title")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            context.insert("page".into(), Value::Object(kept));
        }
    }
    out.insert("context".into(), Value::Object(context));
    // Identifier values may also sit in properties or the page (a URL parameter).
    let mut needles: Vec<String> = raw_texts_of(rules, message, erased)
        .into_iter()
        .map(|raw| raw.trim().to_ascii_lowercase())
        .collect();
    needles.extend(erased.iter().map(|i| i.value.to_ascii_lowercase()));
    tessera_identity::erasure::redact(&mut out, &needles);
    out.insert(
        "anonymousId".into(),
        Value::String(format!("anonymized-{}", ids::new_message_id())),
    );
    out
}
