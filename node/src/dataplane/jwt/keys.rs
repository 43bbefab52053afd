//! Verification keys: parsed from a route's static keys (PEM or JWK) and from JWKS
//! documents, each tagged with what it may verify so that no token can choose a key of
//! another kind (an RSA public key used as an HMAC secret, say).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The kinds of key; an algorithm verifies with one kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

impl KeyKind {
    /// The kind of key `algorithm` needs.
    pub fn of(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => KeyKind::Ec,
            Algorithm::EdDSA => KeyKind::Ed,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyKind::Hmac,
        }
    }
}

/// One key a token may be verified with.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// Set when the key's publisher pinned its algorithm (`alg` of a JWK).
    pub algorithm: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `algorithm` and naming `kid`.
    pub fn fits(&self, algorithm: Algorithm, kid: Option<&str>) -> bool {
        self.kind == KeyKind::of(algorithm)
            && self.algorithm.is_none_or(|pinned| pinned == algorithm)
            && match (kid, &self.kid) {
                (Some(wanted), Some(own)) => wanted == own,
                _ => true,
            }
    }
}

/// Reads one kind of PEM public key.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// Parses a route's static key: a PEM public key (RSA, EC or Ed25519) or a JWK.
pub fn parse_static(text: &str) -> Result<VerifyKey, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let jwk: Jwk = serde_json::from_str(trimmed).map_err(|e| format!("not a JWK: {e}"))?;
        return from_jwk(&jwk);
    }
    let pem = trimmed.as_bytes();
    let attempts: [(KeyKind, PemParser); 3] = [
        (KeyKind::Rsa, DecodingKey::from_rsa_pem),
        (KeyKind::Ec, DecodingKey::from_ec_pem),
        (KeyKind::Ed, DecodingKey::from_ed_pem),
    ];
    for (kind, parse) in attempts {
        if let Ok(key) = parse(pem) {
            return Ok(VerifyKey {
                kid: None,
                kind,
                algorithm: None,
                key,
            });
        }
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

/// Converts one JWK. Keys for encryption (`use: enc`) are refused.
pub fn from_jwk(jwk: &Jwk) -> Result<VerifyKey, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("the key is for encryption".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyKind::Ed,
        AlgorithmParameters::OctetKey(_) => KeyKind::Hmac,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => None,
        Some(pinned) => Some(signing_algorithm(pinned).ok_or("the key's alg is not a signature algorithm")?),
    };
    if algorithm.is_some_and(|a| KeyKind::of(a) != kind) {
        return Err("the key's alg does not fit its type".into());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}"))?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        kind,
        algorithm,
        key,
    })
}

/// Converts every usable key of a JWKS document; keys it cannot use are skipped (an IdP
/// may publish encryption keys or types this gateway does not verify with).
pub fn from_jwks(document: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(set.keys.iter().filter_map(|jwk| from_jwk(jwk).ok()).collect())
}

fn signing_algorithm(algorithm: KeyAlgorithm) -> Option<Algorithm> {
    Some(match algorithm {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    #[test]
    fn pem_keys_are_recognised_by_kind() {
        for (name, kind) in [
            ("rsa1.pub.pem", KeyKind::Rsa),
            ("ec1.pub.pem", KeyKind::Ec),
            ("ed1.pub.pem", KeyKind::Ed),
        ] {
            assert_eq!(parse_static(&fixture(name)).expect(name).kind, kind, "{name}");
        }
        assert!(parse_static("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
    }

    #[test]
    fn jwks_keep_their_kid_and_skip_what_they_cannot_use() {
        let document = format!(
            r#"{{"keys": [{}, {}, {{"kty":"RSA","use":"enc","kid":"x","n":"AQAB","e":"AQAB"}}]}}"#,
            fixture("rsa1.jwk.json"),
            fixture("ec1.jwk.json")
        );
        let keys = from_jwks(document.as_bytes()).expect("jwks");
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("rsa1"), Some("ec1")]);
        assert!(keys[0].fits(Algorithm::RS256, Some("rsa1")));
        assert!(keys[0].fits(Algorithm::PS256, None));
        assert!(
            !keys[0].fits(Algorithm::HS256, Some("rsa1")),
            "no algorithm confusion"
        );
        assert!(!keys[0].fits(Algorithm::RS256, Some("other")));
    }
}
