//! Privacy requests: access exports, erasures, and the suppression of erased
//! identifiers — shared by the HTTP API and the CLI.
//!
//! - An **export** (GDPR art. 15) reads everything held about the person who owns
//!   an identifier into one JSON document: identities, traits with provenance,
//!   consent history, events, audience memberships and their history, groups,
//!   merges.
//! - An **erasure** (GDPR art. 17) is queued in the catalog and carried out by the
//!   processor thread once it has applied the whole log (or by the CLI when no
//!   server runs): the identifiers are suppressed first, then the person's events
//!   are deleted from the log and their identifiers removed from other people's
//!   events, their merged profile is deleted from every store, and the write-ahead
//!   files are truncated so no file keeps the bytes. The request keeps only a
//!   salted hash of the identifier once it completed.
//! - **Suppression**: new messages carrying an erased identifier (compared by salted
//!   hash) are dropped before they are stored, or stored anonymized, per
//!   `[privacy] suppressed_events`.

mod erasure;
mod export;
mod suppression;

pub use erasure::*;
pub use export::*;
pub use suppression::*;

use crate::audit::record_audit;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tessera_audience::engine::AudienceEngine;
use tessera_core::{ErrorCode, UserError, ids};
use tessera_identity::identifiers::{
    Identifier, extract, normalize_value, raw_texts_of, redact_identifiers,
};
use tessera_identity::processor::{ErasureOutcome, ErasurePlan, Processor, ProcessorError};
use tessera_identity::rules::CompiledRules;
use tessera_store::activation::{ActivationStore, DeliveryFilter};
use tessera_store::audiences::AudienceStore;
use tessera_store::profiles::{ProfileId, ProfileStore};
use tessera_store::{
    Catalog, EventLog, PrivacyRequest, PrivacyRequestKind, StoreError, StoreResult,
};

/// What happens to a new message that carries an erased identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuppressionMode {
    /// Not stored (the sender still gets a success answer, so it does not retry).
    #[default]
    Drop,
    /// `track`, `page` and `screen` are stored without any identifier, trait or
    /// context beyond the library and page, under a fresh random `anonymousId`
    /// (they still count in aggregate analytics); other types are dropped.
    Anonymize,
}

/// The `[privacy]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyConfig {
    /// Purposes the consent API accepts (lowercase).
    pub purposes: Vec<String>,
    /// What happens to new messages carrying an erased identifier.
    pub suppressed_events: SuppressionMode,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            purposes: tessera_core::consent::DEFAULT_PURPOSES
                .iter()
                .map(|p| (*p).to_string())
                .collect(),
            suppressed_events: SuppressionMode::Drop,
        }
    }
}

/// Parses `type:value` with a configured identifier type and normalizes the value
/// the way the processor does.
pub fn parse_identifier(rules: &CompiledRules, text: &str) -> Result<Identifier, UserError> {
    let types = || {
        rules
            .types
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((id_type, raw)) = text.split_once(':') else {
        return Err(UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "give the identifier as type:value, e.g. email:jane@example.com (types: {})",
                types()
            ),
        ));
    };
    let Some(kind) = rules.identifier_type(id_type.trim()) else {
        return Err(UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "{:?} is not an identifier type; the types are {}",
                id_type.trim(),
                types()
            ),
        ));
    };
    let value = normalize_value(rules, kind, raw).ok_or_else(|| {
        UserError::new(
            ErrorCode::InvalidIdentifier,
            format!(
                "the value is not a valid {} (after normalization it is empty, blocked or malformed)",
                kind.name
            ),
        )
    })?;
    Ok(Identifier::new(kind.name.clone(), value))
}

/// The request as the API shows it.
pub fn request_json(request: &PrivacyRequest) -> Value {
    json!({
        "id": request.id,
        "kind": request.kind.as_str(),
        // `purging` (only the catalog's write-ahead file left) is still running.
        "status": if request.status == "purging" { "running" } else { request.status.as_str() },
        "requestedAt": format_millis(request.requested_at_ms),
        "completedAt": request.completed_at_ms.map(format_millis),
        "result": request.result_json.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_identity::rules::IdentityRules;

    fn rules() -> CompiledRules {
        IdentityRules::default()
            .compile()
            .unwrap_or_else(|e| panic!("default rules compile: {e}"))
    }

    #[test]
    fn identifiers_parse_and_normalize_like_the_processor() {
        let rules = rules();
        assert_eq!(
            parse_identifier(&rules, "email: Ada@Example.COM ").ok(),
            Some(Identifier::new("email", "ada@example.com"))
        );
        for bad in [
            "ada@example.com",
            "shoe:1",
            "email:not-an-email",
            "user_id:  ",
        ] {
            let error = parse_identifier(&rules, bad).err();
            assert_eq!(
                error.map(|e| e.code),
                Some(ErrorCode::InvalidIdentifier),
                "{bad}"
            );
        }
    }
}
