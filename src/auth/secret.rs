//! Token secrets: how they are made, what is kept of them, and how a
//! presented one is read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// What every secret starts with, so that one pasted somewhere it should
/// not be is easy to recognise (and to search for).
pub const SECRET_PREFIX: &str = "trk_";

/// Random bytes in a secret: 256 bits.
const SECRET_BYTES: usize = 32;

/// Characters of a secret: the prefix and the bytes in unpadded base64url.
const SECRET_CHARS: usize = SECRET_PREFIX.len() + (SECRET_BYTES * 4).div_ceil(3);

/// Characters of a secret kept in `api_tokens.prefix`, for telling tokens
/// apart in a list: the marker and 8 random characters (48 bits of 256).
pub const SHOWN_PREFIX_CHARS: usize = SECRET_PREFIX.len() + 8;

/// The SHA-256 of a secret: all that is stored of it. A plain hash is
/// enough: a secret is 256 random bits, so there is nothing to guess from it
/// and no need for a slow password hash.
pub type SecretHash = [u8; 32];

/// A new token's secret, shown once to whoever made it.
pub struct Secret(String);

impl Secret {
    /// A fresh secret of 256 bits from the operating system's RNG.
    pub fn generate() -> Result<Secret, rand::rand_core::OsError> {
        let mut bytes = [0u8; SECRET_BYTES];
        OsRng.try_fill_bytes(&mut bytes)?;
        Ok(Secret(format!(
            "{SECRET_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// The secret itself, to print once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored of it.
    pub fn hash(&self) -> SecretHash {
        hash(&self.0)
    }

    /// The start shown in lists.
    pub fn shown_prefix(&self) -> &str {
        self.0.get(..SHOWN_PREFIX_CHARS).unwrap_or(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}…)", self.shown_prefix())
    }
}

/// The hash of `secret`.
pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `candidate` has the shape of a secret this server makes. Anything
/// else is refused without a database lookup.
pub fn is_well_formed(candidate: &str) -> bool {
    candidate.len() == SECRET_CHARS
        && candidate.starts_with(SECRET_PREFIX)
        && candidate[SECRET_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_well_formed_distinct_and_hashed() {
        let one = Secret::generate().unwrap();
        let two = Secret::generate().unwrap();
        assert!(is_well_formed(one.expose()), "{}", one.expose());
        assert_ne!(one.expose(), two.expose());
        assert_ne!(one.hash(), two.hash());
        assert_eq!(one.hash(), hash(one.expose()));
        assert_eq!(one.shown_prefix().len(), SHOWN_PREFIX_CHARS);
        assert!(one.expose().starts_with(one.shown_prefix()));
        assert!(!format!("{one:?}").contains(&one.expose()[SHOWN_PREFIX_CHARS..]));
    }

    #[test]
    fn other_shapes_are_not_secrets() {
        let secret = Secret::generate().unwrap();
        let valid = secret.expose();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&valid[1..]));
        assert!(!is_well_formed(&format!("{valid}a")));
        assert!(!is_well_formed(&valid.replace("trk_", "tok_")));
        assert!(!is_well_formed(&format!("{}é", &valid[..valid.len() - 2])));
        assert!(!is_well_formed(&format!("{}=", &valid[..valid.len() - 1])));
    }
}
