//! API key secrets: `cf_` followed by base58 of 32 random bytes and their CRC-32.
//!
//! The checksum lets the data plane reject a mistyped or forged-looking key before any
//! lookup; only the SHA-256 of the whole string is ever stored or replicated.

mod base58;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::SecretHash;

/// The recognisable start of every credentialflow key (secret scanners can match it).
pub const KEY_PREFIX: &str = "cf_";
/// Random bytes in a secret: 256 bits of entropy.
const ENTROPY_BYTES: usize = 32;
/// Characters of the secret shown in listings.
const DISPLAY_PREFIX_CHARS: usize = 12;
/// Longest string worth decoding; anything longer is malformed.
const MAX_ENCODED_LEN: usize = 64;

// The fast decoder is built for exactly the encoded size of a secret.
const _: () = assert!(ENTROPY_BYTES + 4 == base58::DECODED_LEN);

/// A freshly generated secret: the plaintext (shown once) and what the cluster keeps.
pub struct GeneratedSecret {
    /// The full secret; returned to the caller once, never stored.
    pub plaintext: String,
    /// SHA-256 of `plaintext`.
    pub hash: SecretHash,
    /// A displayable prefix of `plaintext`.
    pub display_prefix: String,
}

impl std::fmt::Debug for GeneratedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedSecret")
            .field("display_prefix", &self.display_prefix)
            .finish_non_exhaustive()
    }
}

/// Why a presented string is not a well-formed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("the key does not start with {KEY_PREFIX}")]
    MissingPrefix,
    #[error("the key has the wrong length or alphabet")]
    Malformed,
    #[error("the key's checksum does not match")]
    BadChecksum,
}

/// Generates a new secret from `rng`.
pub fn generate(rng: &mut impl RngCore) -> GeneratedSecret {
    let mut raw = [0u8; ENTROPY_BYTES + 4];
    rng.fill_bytes(&mut raw[..ENTROPY_BYTES]);
    let checksum = crc32fast::hash(&raw[..ENTROPY_BYTES]);
    raw[ENTROPY_BYTES..].copy_from_slice(&checksum.to_be_bytes());
    let plaintext = format!("{KEY_PREFIX}{}", bs58::encode(raw).into_string());
    GeneratedSecret {
        hash: hash(&plaintext),
        display_prefix: plaintext.chars().take(DISPLAY_PREFIX_CHARS).collect(),
        plaintext,
    }
}

/// Verifies the shape and checksum of a presented key and returns its hash.
pub fn verify(candidate: &str) -> Result<SecretHash, SecretFormatError> {
    let body = candidate
        .strip_prefix(KEY_PREFIX)
        .ok_or(SecretFormatError::MissingPrefix)?;
    if body.is_empty() || candidate.len() > MAX_ENCODED_LEN {
        return Err(SecretFormatError::Malformed);
    }
    let raw = base58::decode(body.as_bytes()).ok_or(SecretFormatError::Malformed)?;
    let expected = crc32fast::hash(&raw[..ENTROPY_BYTES]).to_be_bytes();
    if raw[ENTROPY_BYTES..] != expected {
        return Err(SecretFormatError::BadChecksum);
    }
    Ok(hash(candidate))
}

/// Returns the SHA-256 of a secret string.
pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Bits of creation time at the front of a generated id: milliseconds until the year 10889.
const ID_TIME_BITS: u32 = 48;
/// Random bits after the time: two ids drawn in the same millisecond collide with
/// probability 2^-64, and a collision is refused by `apply`, never overwritten.
const ID_RANDOM_BITS: u32 = 64;
/// Base58 digits of an id's body: 58^20 > 2^112.
const ID_DIGITS: usize = 20;
const _: () = assert!(ID_TIME_BITS + ID_RANDOM_BITS <= 128);

/// Generates an identifier such as `key_1Bz3…`: the prefix, then 20 base58 digits of the
/// creation time in milliseconds followed by 64 random bits.
///
/// Ids sort in creation order (up to the proposing nodes' clock skew), which is what makes
/// listings page in creation order and puts a key created while a client pages after its
/// cursor. It also places a new key at the right edge of the state's ordered key tree,
/// whose path stays in cache, instead of at a random leaf. With a four-character prefix
/// the id is 24 bytes, short enough to be stored inline in that tree.
pub fn generate_id(prefix: &str, now_ms: i64, rng: &mut impl RngCore) -> String {
    let time = u128::from(now_ms.max(0) as u64) & ((1 << ID_TIME_BITS) - 1);
    let value = (time << ID_RANDOM_BITS) | u128::from(rng.next_u64());
    let mut id = String::with_capacity(prefix.len() + ID_DIGITS);
    id.push_str(prefix);
    base58::encode_fixed::<ID_DIGITS>(value, &mut id);
    id
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn generated_ids_sort_by_creation_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let ids: Vec<String> = [0, 1, 999, 1_700_000_000_000, 1_700_000_000_001, (1 << 48) - 1]
            .into_iter()
            .map(|now_ms| generate_id("key_", now_ms, &mut rng))
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        for id in &ids {
            assert_eq!(id.len(), 24, "{id}");
            assert!(crate::validate::id("id", id).is_ok(), "{id}");
        }
    }

    #[test]
    fn ids_of_one_millisecond_differ_and_a_time_before_1970_counts_as_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        let now_ms = 1_700_000_000_000;
        assert_ne!(
            generate_id("key_", now_ms, &mut rng),
            generate_id("key_", now_ms, &mut rng)
        );
        // A zero time leaves only the 64 random bits, at most 11 digits: the first 9 are zeros.
        let before_epoch = generate_id("key_", -5, &mut rng);
        assert!(before_epoch.starts_with("key_111111111"), "{before_epoch}");
    }

    #[test]
    fn a_generated_secret_verifies_to_its_hash() {
        let mut rng = StdRng::seed_from_u64(7);
        let secret = generate(&mut rng);
        assert!(secret.plaintext.starts_with(KEY_PREFIX));
        assert!(secret.plaintext.starts_with(&secret.display_prefix));
        assert_eq!(verify(&secret.plaintext), Ok(secret.hash));
    }

    #[test]
    fn secrets_differ_between_draws() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_ne!(generate(&mut rng).plaintext, generate(&mut rng).plaintext);
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let mut rng = StdRng::seed_from_u64(9);
        let secret = generate(&mut rng).plaintext;
        let last = secret.chars().last().unwrap_or('1');
        let replacement = if last == '2' { '3' } else { '2' };
        let tampered = format!("{}{replacement}", &secret[..secret.len() - 1]);
        assert!(matches!(
            verify(&tampered),
            Err(SecretFormatError::BadChecksum | SecretFormatError::Malformed)
        ));
    }

    #[test]
    fn malformed_keys_are_rejected_without_lookup() {
        assert_eq!(verify("sk_live_abc"), Err(SecretFormatError::MissingPrefix));
        assert_eq!(verify("cf_"), Err(SecretFormatError::Malformed));
        assert_eq!(verify("cf_0OIl"), Err(SecretFormatError::Malformed));
        assert_eq!(
            verify(&format!("cf_{}", "z".repeat(80))),
            Err(SecretFormatError::Malformed)
        );
        assert_eq!(verify("cf_2222"), Err(SecretFormatError::Malformed));
    }

    #[test]
    fn debug_output_never_shows_the_plaintext() {
        let mut rng = StdRng::seed_from_u64(1);
        let secret = generate(&mut rng);
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&secret.plaintext));
    }
}
