//! The cluster master key: AES-256-GCM over upstream credentials and HMAC secrets, so the
//! replicated state, its snapshots and the Raft log hold them only sealed. Every node of a
//! cluster is given the same key (`--master-key-file` or `CREDENTIALFLOW_MASTER_KEY`, 32
//! bytes as 64 hex digits or base64). It is never logged.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use cluster::sealed::{SealedSecret, SEALED_TEXT_PREFIX};
use rand::RngCore;

/// The key. `Debug` shows nothing of it.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("the secret does not open with this master key (another key, or moved from elsewhere)")]
    Open,
    #[error("the secret could not be sealed")]
    Seal,
}

impl MasterKey {
    /// Parses the key from its text form (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| SealError::BadKey))
                .collect::<Result<Vec<u8>, _>>()?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| SealError::BadKey)?
        };
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self { cipher })
    }

    /// Seals `plaintext` for the place named by `associated_data`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &str) -> Result<SealedSecret, SealError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(SealedSecret { nonce, ciphertext })
    }

    /// Opens a secret sealed for `associated_data`.
    pub fn open(&self, sealed: &SealedSecret, associated_data: &str) -> Result<Vec<u8>, SealError> {
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }

    /// Seals text into its `sealed:v1:…` form.
    pub fn seal_text(&self, plaintext: &str, associated_data: &str) -> Result<String, SealError> {
        let sealed = self.seal(plaintext.as_bytes(), associated_data)?;
        let mut raw = sealed.nonce.to_vec();
        raw.extend_from_slice(&sealed.ciphertext);
        Ok(format!(
            "{SEALED_TEXT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        ))
    }

    /// Opens a `sealed:v1:…` text.
    pub fn open_text(&self, text: &str, associated_data: &str) -> Result<String, SealError> {
        let encoded = text.strip_prefix(SEALED_TEXT_PREFIX).ok_or(SealError::Open)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Open)?;
        if raw.len() <= 12 {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let sealed = SealedSecret {
            nonce: nonce.try_into().map_err(|_| SealError::Open)?,
            ciphertext: ciphertext.to_vec(),
        };
        String::from_utf8(self.open(&sealed, associated_data)?).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_place() {
        let key = MasterKey::parse(KEY).expect("key");
        let sealed = key
            .seal(b"upstream-secret", "route:a:upstream_auth")
            .expect("seal");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open(&sealed, "route:a:upstream_auth").expect("open"),
            b"upstream-secret"
        );
        assert!(
            key.open(&sealed, "route:b:upstream_auth").is_err(),
            "moved to another route"
        );
        let other = MasterKey::parse(&"ab".repeat(32)).expect("key");
        assert!(other.open(&sealed, "route:a:upstream_auth").is_err());
        let text = key.seal_text("hmac", "route:a:jwt.keys[0]").expect("seal");
        assert_eq!(key.open_text(&text, "route:a:jwt.keys[0]").expect("open"), "hmac");
        assert!(format!("{key:?}").contains(".."));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(MasterKey::parse("abc").is_err());
        assert!(MasterKey::parse(&"ab".repeat(31)).is_err());
        let base64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(MasterKey::parse(&base64).is_ok());
    }
}
