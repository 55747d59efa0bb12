//! Bearer tokens: one random token per attempt (workers) and an optional admin token
//! (clients). Only SHA-256 hashes of attempt tokens are stored.

use sha2::{Digest, Sha256};

/// A fresh 256-bit token, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Extracts the token from `authorization: Bearer <token>` metadata.
pub fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Constant-time equality of two hex hashes.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(same(&hash_token(&a), &hash_token(&a)));
        assert!(!same(&hash_token(&a), &hash_token(&b)));
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", format!("Bearer {a}").parse().unwrap());
        assert_eq!(bearer(&m), Some(a.as_str()));
    }
}
