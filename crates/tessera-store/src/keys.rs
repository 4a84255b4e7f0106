//! Every key of the catalog's settings ([`crate::Catalog::setting`]), in one place.
//!
//! Single settings are `snake_case` names; definitions are `kind/id`, listed with
//! [`crate::Catalog::settings_with_prefix`] and the kind's prefix. Engines rename
//! keys written under an earlier name when they open a catalog ([`RENAMED`]).

/// SHA-256 of the admin token generated on the first start.
pub const ADMIN_TOKEN_SHA256: &str = "admin_token_sha256";
/// The identity rules (JSON).
pub const IDENTITY_RULES: &str = "identity_rules";
/// Identifiers an operator unlinked from their profile (JSON list).
pub const IDENTITY_UNLINKED: &str = "identity_unlinked";
/// The salt of the suppression list's hashes.
pub const PRIVACY_SUPPRESSION_SALT: &str = "privacy_suppression_salt";
/// The secret that signs the tokens of emails' open pixels and tracked links.
pub const ENGAGEMENT_SECRET: &str = "engagement_secret";
/// The RFM model's configuration (JSON).
pub const RFM: &str = "rfm";

/// Audience definitions: `audience/<key>`.
pub const AUDIENCE_PREFIX: &str = "audience/";
/// Computed trait definitions: `computed_trait/<name>`.
pub const COMPUTED_TRAIT_PREFIX: &str = "computed_trait/";
/// Destination definitions: `destination/<id>`.
pub const DESTINATION_PREFIX: &str = "destination/";
/// Journey definitions: `journey/<id>`.
pub const JOURNEY_PREFIX: &str = "journey/";

/// Prefixes of earlier versions, renamed to today's when a catalog is opened.
pub const RENAMED: [(&str, &str); 2] = [
    ("destination:", DESTINATION_PREFIX),
    ("journey:", JOURNEY_PREFIX),
];

/// The key of one definition: `prefix` (one of the `*_PREFIX` constants) and its id.
pub fn definition(prefix: &str, id: &str) -> String {
    format!("{prefix}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_uses_one_separator_and_no_prefix_contains_another() {
        let prefixes = [
            AUDIENCE_PREFIX,
            COMPUTED_TRAIT_PREFIX,
            DESTINATION_PREFIX,
            JOURNEY_PREFIX,
        ];
        for prefix in prefixes {
            assert!(prefix.ends_with('/') && prefix.matches('/').count() == 1);
            for other in prefixes {
                assert!(prefix == other || !other.starts_with(prefix));
            }
        }
        for (old, new) in RENAMED {
            assert!(prefixes.contains(&new) && !prefixes.contains(&old));
        }
        assert_eq!(definition(JOURNEY_PREFIX, "j1"), "journey/j1");
    }
}
