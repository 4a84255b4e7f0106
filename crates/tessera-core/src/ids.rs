//! The one place identifiers and secrets are generated and hashed.
//!
//! Secrets (write keys, admin tokens) are random base62 strings with at least 190 bits
//! of entropy, so a plain SHA-256 is a safe at-rest form: there is nothing to brute-force
//! and lookups by hash stay O(1). Plaintext secrets are shown once and never stored.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// A new `messageId` for a message that arrived without one (a UUID v4).
pub fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new public source id, e.g. `src_4f9XkQ2m7Rb1LcZt`.
pub fn new_source_id() -> String {
    format!("src_{}", random_base62(16))
}

/// A new write key: 32 base62 characters, like Segment's.
pub fn new_write_key() -> String {
    random_base62(32)
}

/// A new admin token, prefixed so that secret scanners can recognise it.
pub fn new_admin_token() -> String {
    format!("tsa_{}", random_base62(40))
}

/// A new public API token id, e.g. `tok_4f9XkQ2m7Rb1LcZt`.
pub fn new_token_id() -> String {
    format!("tok_{}", random_base62(16))
}

/// A new scoped API token, prefixed so that secret scanners can recognise it.
pub fn new_api_token() -> String {
    format!("tsk_{}", random_base62(40))
}

/// A new privacy request id, e.g. `prq_4f9XkQ2m7Rb1LcZt`.
pub fn new_privacy_request_id() -> String {
    format!("prq_{}", random_base62(16))
}

/// A new random salt (for suppression hashes): 32 base62 characters.
pub fn new_salt() -> String {
    random_base62(32)
}

/// Salted SHA-256 of a value (lowercase hex): how erased identifiers are kept
/// for suppression, so the stored hash cannot be checked against a list of
/// known emails without the installation's salt.
pub fn salted_hash(salt: &str, value: &str) -> String {
    hash_secret(&format!("{salt}\u{0}{value}"))
}

/// The at-rest form of a secret: lowercase hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    hex
}

fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_distinct() {
        let a = new_write_key();
        let b = new_write_key();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(new_admin_token().starts_with("tsa_"));
        assert!(new_source_id().starts_with("src_"));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
