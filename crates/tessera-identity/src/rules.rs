//! Identity rules: which identifiers count, their priority and per-profile limits,
//! blocked values, caps, and which source is the truth for a trait.
//!
//! Defaults follow Segment Unify: `user_id` has priority 1 and limit 1 (a profile
//! never holds two user ids), every other type limit 5; blocked values `null`,
//! `undefined`, `anonymous`, `0`, `-1` and the pattern `^[0-]*$`; at most 100 merges
//! and 1,000 identifiers per profile. Rules are configuration: they are stored in
//! the catalog, changed through the admin API or CLI, and apply to new events (run
//! `tessera replay` to apply them to history).

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tessera_core::{ErrorCode, UserError};

/// How an identifier's value is cleaned before matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Trimmed, case kept (user ids, device ids).
    Trim,
    /// Trimmed and lowercased.
    Lowercase,
    /// Trimmed, lowercased and checked to look like an address.
    Email,
    /// Parsed and written as E.164 (`+4915112345678`), with the default region.
    Phone,
}

/// One identifier type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentifierType {
    /// The type's name, e.g. `email` or `crm_id` (lowercase).
    pub name: String,
    /// 1 is the strongest; when a message would break a limit, the identifier with
    /// the largest number is dropped first.
    pub priority: u32,
    /// Most distinct values of this type one profile may hold.
    pub limit: u32,
    /// Message paths read for it, e.g. `userId`, `traits.email`, `context.device.id`.
    /// `context.externalIds` entries whose `type` equals `name` always count too.
    #[serde(default)]
    pub fields: Vec<String>,
    /// How values are cleaned.
    pub normalization: Normalization,
}

/// The identity rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityRules {
    /// Identifier types.
    pub identifier_types: Vec<IdentifierType>,
    /// Values never used to link (compared after normalization, case-insensitively).
    pub blocked_values: Vec<String>,
    /// Regular expressions of values never used to link.
    pub blocked_patterns: Vec<String>,
    /// Region for phone numbers written without a country code (ISO 3166, e.g. `DE`).
    pub default_region: String,
    /// Most merges into one profile.
    pub max_merges_per_profile: u32,
    /// Most identifiers on one profile.
    pub max_identifiers_per_profile: u32,
    /// Per trait, source names in order of authority (`{"email": ["crm", "web"]}`):
    /// a value from an earlier source wins over a later source's, whatever the time.
    /// Traits not listed, and sources not listed, follow last-write-wins by event time.
    #[serde(default)]
    pub trait_sources: BTreeMap<String, Vec<String>>,
}

fn builtin(
    name: &str,
    priority: u32,
    limit: u32,
    fields: &[&str],
    normalization: Normalization,
) -> IdentifierType {
    IdentifierType {
        name: name.into(),
        priority,
        limit,
        fields: fields.iter().map(|f| (*f).to_string()).collect(),
        normalization,
    }
}

impl Default for IdentityRules {
    fn default() -> Self {
        use Normalization::*;
        Self {
            identifier_types: vec![
                builtin("user_id", 1, 1, &["userId"], Trim),
                builtin(
                    "email",
                    2,
                    5,
                    &["traits.email", "context.traits.email"],
                    Email,
                ),
                builtin(
                    "phone",
                    3,
                    5,
                    &["traits.phone", "context.traits.phone"],
                    Phone,
                ),
                builtin(
                    "advertising_id",
                    4,
                    5,
                    &["context.device.advertisingId"],
                    Trim,
                ),
                builtin("anonymous_id", 5, 5, &["anonymousId"], Trim),
                builtin("device_id", 6, 5, &["context.device.id"], Trim),
            ],
            blocked_values: ["null", "undefined", "anonymous", "0", "-1", "none", "n/a"]
                .into_iter()
                .map(String::from)
                .collect(),
            blocked_patterns: vec!["^[0-]*$".into()],
            default_region: "US".into(),
            max_merges_per_profile: 100,
            max_identifiers_per_profile: 1_000,
            trait_sources: BTreeMap::new(),
        }
    }
}

/// Rules checked and compiled for use.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    /// The rules as given.
    pub rules: IdentityRules,
    /// Identifier types sorted by priority (strongest first).
    pub types: Vec<IdentifierType>,
    /// Blocked patterns, compiled.
    pub patterns: Vec<Regex>,
    /// Default phone region, parsed.
    pub region: phonenumber::country::Id,
}

impl IdentityRules {
    /// Checks the rules and compiles them; errors say what to fix.
    pub fn compile(&self) -> Result<CompiledRules, UserError> {
        let invalid = |message: String| UserError::new(ErrorCode::InvalidRequest, message);
        let mut types = self.identifier_types.clone();
        if types.is_empty() {
            return Err(invalid(
                "\"identifierTypes\" must list at least one type".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &types {
            let valid_name = !t.name.is_empty()
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(invalid(format!(
                    "identifier type {:?}: names are lowercase letters, digits and _",
                    t.name
                )));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(format!(
                    "identifier type {:?} is listed twice",
                    t.name
                )));
            }
            if t.limit == 0 {
                return Err(invalid(format!(
                    "identifier type {:?}: \"limit\" must be at least 1",
                    t.name
                )));
            }
        }
        types.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        let patterns = self
            .blocked_patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| {
                    invalid(format!(
                        "blocked pattern {p:?} is not a valid regular expression: {e}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let region = self
            .default_region
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| {
                invalid(format!(
                    "\"defaultRegion\" {:?} is not an ISO 3166 country code such as US or DE",
                    self.default_region
                ))
            })?;
        if self.max_merges_per_profile == 0 || self.max_identifiers_per_profile == 0 {
            return Err(invalid(
                "merge and identifier caps must be at least 1".into(),
            ));
        }
        Ok(CompiledRules {
            rules: self.clone(),
            types,
            patterns,
            region,
        })
    }
}

impl CompiledRules {
    /// The type named `name`.
    pub fn identifier_type(&self, name: &str) -> Option<&IdentifierType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Whether a normalized value is blocked from linking.
    pub fn is_blocked(&self, value: &str) -> bool {
        self.rules
            .blocked_values
            .iter()
            .any(|b| b.eq_ignore_ascii_case(value))
            || self.patterns.iter().any(|p| p.is_match(value))
    }

    /// Authority rank of `source_name` for `trait_name` (0 is the highest), or `None`
    /// when the trait or the source has no configured order.
    pub fn source_rank(&self, trait_name: &str, source_name: &str) -> Option<usize> {
        self.rules
            .trait_sources
            .get(trait_name)
            .and_then(|order| order.iter().position(|s| s == source_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile_and_block_segments_values() {
        let rules = IdentityRules::default()
            .compile()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.types[0].name, "user_id");
        for value in [
            "null",
            "NULL",
            "undefined",
            "anonymous",
            "0",
            "-1",
            "000",
            "--0-",
            "",
        ] {
            assert!(rules.is_blocked(value), "{value}");
        }
        for value in ["u-100", "10", "jane@example.com"] {
            assert!(!rules.is_blocked(value), "{value}");
        }
    }

    #[test]
    fn bad_rules_say_what_to_fix() {
        let mut rules = IdentityRules::default();
        rules.blocked_patterns.push("([".into());
        assert!(
            rules
                .compile()
                .is_err_and(|e| e.message.contains("regular expression"))
        );
        let rules = IdentityRules {
            default_region: "Germany".into(),
            ..IdentityRules::default()
        };
        assert!(
            rules
                .compile()
                .is_err_and(|e| e.message.contains("defaultRegion"))
        );
        let mut rules = IdentityRules::default();
        rules
            .identifier_types
            .push(rules.identifier_types[0].clone());
        assert!(rules.compile().is_err_and(|e| e.message.contains("twice")));
    }

    #[test]
    fn rules_round_trip_as_json() {
        let rules = IdentityRules::default();
        let text = serde_json::to_string(&rules).unwrap_or_default();
        assert!(text.contains("\"identifierTypes\""));
        let back: IdentityRules = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, rules);
    }
}
