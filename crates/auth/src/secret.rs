//! Token secrets: 256 random bits, written `lsm_` + 43 base64url characters so that secret
//! scanners (GitHub's, gitleaks) can recognise a leaked one, and stored only as a SHA-256.
//!
//! Why SHA-256 and not a password hash: the secret is 256 bits from the OS's random source, not
//! something a person chose; no dictionary or brute force reaches it, so a slow hash would only
//! slow every request down.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "lsm_";

/// Characters after the prefix: 32 bytes in unpadded base64url.
const ENCODED_LEN: usize = 43;

/// A token's secret, as handed to its holder once. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(lsm_…)")
    }
}

impl Secret {
    /// The secret made of `random` (32 bytes from the OS's random source).
    pub fn from_random(random: [u8; 32]) -> Self {
        Secret(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
    }

    /// Parses a presented secret: the prefix and exactly 43 base64url characters, else `None`
    /// (so a truncated, padded or 10 KB string is refused before it is hashed).
    pub fn parse(text: &str) -> Option<Self> {
        Self::well_formed(text).then(|| Secret(text.to_owned()))
    }

    /// Whether `text` has a secret's form (what [`Secret::parse`] checks), without copying it.
    pub fn well_formed(text: &str) -> bool {
        text.strip_prefix(SECRET_PREFIX).is_some_and(|rest| {
            rest.len() == ENCODED_LEN
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    /// The text to hand over (printed once, written to `admin.token`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash, what the table stores.
    pub fn hash(&self) -> SecretHash {
        hash_secret(&self.0)
    }
}

/// The SHA-256 of a secret.
#[derive(Clone, Copy, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl std::hash::Hash for SecretHash {
    /// By value, as equality is (in constant time): the table's index finds a token by it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for SecretHash {
    /// In constant time: how long a comparison takes says nothing about where it differed.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({})", self.to_hex())
    }
}

impl SecretHash {
    /// Lower-case hex, as stored.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the stored hex form.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SecretHash(out))
    }
}

/// The SHA-256 of `secret`'s text.
pub fn hash_secret(secret: &str) -> SecretHash {
    SecretHash(Sha256::digest(secret.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_prefix_and_43_base64url_characters_and_parses_back() {
        let secret = Secret::from_random([7; 32]);
        assert!(secret.expose().starts_with("lsm_"));
        assert_eq!(secret.expose().len(), 4 + 43);
        assert_eq!(Secret::parse(secret.expose()), Some(secret.clone()));
        assert!(!format!("{secret:?}").contains(&secret.expose()[4..]));
    }

    #[test]
    fn malformed_secrets_are_refused_before_hashing() {
        let good = Secret::from_random([1; 32]);
        let text = good.expose();
        for bad in [
            "",
            "lsm_",
            &text[..text.len() - 1],
            &format!("{text}="),
            &text.replace("lsm_", "lsk_"),
            &format!("lsm_{}", "a".repeat(10_000)),
            &format!("lsm_{}", "!".repeat(43)),
        ] {
            assert_eq!(Secret::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hashes_round_trip_through_hex_and_compare_by_value() {
        let h = hash_secret("lsm_x");
        assert_eq!(SecretHash::from_hex(&h.to_hex()), Some(h));
        assert_ne!(hash_secret("lsm_y"), h);
        assert_eq!(SecretHash::from_hex("zz"), None);
    }
}
