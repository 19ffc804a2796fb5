//! API tokens: random secrets shown once, stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "tlk_";

/// A new raw token: the prefix and 32 random bytes in hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// `sha256:` + lowercase hex of the trimmed token: the only form that is stored or compared.
pub fn hash(raw: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(raw.trim().as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = generate();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a, generate());
        assert_eq!(hash(&a), hash(&format!(" {a} ")));
        assert!(hash(&a).starts_with("sha256:"));
        assert_eq!(hash(&a).len(), 7 + 64);
    }
}
