//! JSON Web Token verification on `auth: "jwt"` routes, with `jsonwebtoken`.
//!
//! A token is checked in this order: size and shape; its `alg` against the route's list
//! (never `none`, which `jsonwebtoken` cannot even parse); a key of the kind that `alg`
//! needs, from the route's static keys or its issuer's JWKS (so a public key can never
//! serve as an HMAC secret); the signature; `iss`, `aud`, `exp` and `nbf` with the route's
//! leeway; the route's required claims. What a valid token says (subject, scopes, claims
//! to forward, lifetime) is cached by the token's SHA-256 until it expires, so a token
//! seen before costs a hash and a map lookup. Revocation is checked on every request,
//! against the replicated list, cached or not.
//!
//! - [`keys`]: verification keys and what each may verify;
//! - [`jwks`]: the per-node cache of issuers' published keys;
//! - [`revoked`]: the replicated revocation list, indexed.

pub mod jwks;
pub mod keys;
pub mod revoked;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use cluster::jwt::JwtSettings;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::ProxyError;
use super::hop_by_hop::is_configurable;
use jwks::{JwksRegistry, JwksSource, Location};
use keys::VerifyKey;

/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens remembered per route; when full the cache starts over.
const CACHE_CAPACITY: usize = 10_000;

/// The upstream header carrying the token's subject.
pub const SUBJECT_HEADER: http1::HeaderName = http1::HeaderName::from_static("x-credentialflow-subject");

/// What a valid token says, as the proxy uses it.
#[derive(Debug)]
pub struct Verified {
    /// `sub`, for the revocation list.
    pub subject: Option<String>,
    pub jti: Option<String>,
    pub issued_at_ms: Option<i64>,
    pub expires_at_ms: i64,
    pub not_before_ms: Option<i64>,
    /// The route ids the token may call; `None` when the route maps no scopes.
    pub scopes: Option<Vec<String>>,
    /// Headers set on the upstream request: the subject and the route's forwarded claims.
    pub headers: Vec<(http1::HeaderName, http1::HeaderValue)>,
}

impl Verified {
    /// Returns whether the token may call `route_id`.
    pub fn allows(&self, route_id: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|scopes| scopes.iter().any(|s| s == route_id || s == "*"))
    }
}

/// A route's compiled token verification.
pub struct JwtVerifier {
    issuer: String,
    /// One validation per accepted algorithm, built when the route is compiled.
    validations: Vec<(Algorithm, Validation)>,
    leeway_secs: u64,
    static_keys: Vec<VerifyKey>,
    jwks: Option<Arc<JwksSource>>,
    scopes_claim: Option<String>,
    required_claims: Vec<String>,
    forward_claims: Vec<(String, http1::HeaderName)>,
    /// Every header name the route sets from claims, removed from what clients send.
    pub owned_headers: Vec<http1::HeaderName>,
    cache: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field(
                "algorithms",
                &self.validations.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Compiles a route's settings. Fails on a key that does not parse (the admin API
    /// refuses such a route before proposing it).
    pub fn compile(
        settings: &JwtSettings,
        registry: &JwksRegistry,
        route_id: &str,
        master_key: Option<&crate::master_key::MasterKey>,
    ) -> Result<Self, String> {
        let algorithms = settings
            .accepted_algorithms()
            .into_iter()
            .map(|name| {
                name.parse::<Algorithm>()
                    .map_err(|_| format!("unknown algorithm {name}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let static_keys = settings
            .keys
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let opened;
                let text = if text.starts_with(cluster::sealed::SEALED_TEXT_PREFIX) {
                    let key =
                        master_key.ok_or_else(|| format!("keys[{index}]: sealed, and no master key"))?;
                    opened = key
                        .open_text(text, &sealed_key_place(route_id, index))
                        .map_err(|e| format!("keys[{index}]: {e}"))?;
                    opened.as_str()
                } else {
                    text.as_str()
                };
                keys::parse_static(text).map_err(|e| format!("keys[{index}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = match (&settings.jwks_url, static_keys.is_empty()) {
            (Some(url), _) => Some(registry.source(Location::Jwks(url.clone()))),
            (None, true) => Some(registry.source(Location::Discover(settings.issuer.clone()))),
            (None, false) => None,
        };
        let forward_claims = settings
            .forward_claims
            .iter()
            .map(|(claim, header)| {
                http1::HeaderName::from_bytes(header.as_bytes())
                    .map(|name| (claim.clone(), name))
                    .map_err(|_| format!("{header} is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut owned_headers = vec![SUBJECT_HEADER];
        owned_headers.extend(forward_claims.iter().map(|(_, name)| name.clone()));
        // A claim is not sent in a header the gateway keeps to itself.
        let forward_claims: Vec<_> = forward_claims
            .into_iter()
            .filter(|(_, name)| is_configurable(name.as_str().as_bytes()))
            .collect();
        let validations = algorithms
            .into_iter()
            .map(|algorithm| (algorithm, validation(settings, algorithm)))
            .collect();
        Ok(Self {
            issuer: settings.issuer.clone(),
            validations,
            leeway_secs: settings.leeway_secs,
            static_keys,
            jwks,
            scopes_claim: settings.scopes_claim.clone(),
            required_claims: settings.required_claims.clone(),
            forward_claims,
            owned_headers,
            cache: Mutex::default(),
        })
    }

    /// Verifies `token` at `now_ms`.
    pub async fn verify(&self, token: &str, now_ms: i64) -> Result<Arc<Verified>, ProxyError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(ProxyError::InvalidToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let leeway_ms = i64::try_from(self.leeway_secs).unwrap_or(0).saturating_mul(1000);
        if let Some(verified) = self.cached(&digest) {
            if now_ms >= verified.expires_at_ms.saturating_add(leeway_ms) {
                return Err(ProxyError::TokenExpired);
            }
            if verified
                .not_before_ms
                .is_some_and(|nbf| now_ms < nbf.saturating_sub(leeway_ms))
            {
                return Err(ProxyError::TokenNotYetValid);
            }
            return Ok(verified);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ProxyError::InvalidToken)?;
        let validation = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .map(|(_, validation)| validation)
            .ok_or(ProxyError::UnsupportedAlgorithm)?;
        let kid = header.kid.as_deref();
        let mut candidates: Vec<VerifyKey> = self
            .static_keys
            .iter()
            .filter(|k| k.fits(header.alg, kid))
            .cloned()
            .collect();
        if let Some(jwks) = &self.jwks {
            let published = jwks
                .keys_for(header.alg, kid)
                .await
                .map_err(|_| ProxyError::JwksUnavailable)?;
            candidates.extend(published);
        }
        if candidates.is_empty() {
            return Err(ProxyError::UnknownSigningKey);
        }
        let mut outcome = Err(ProxyError::InvalidSignature);
        for key in &candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {}
                Err(error) => return Err(refusal(error.kind())),
            }
        }
        let claims = outcome?;
        if self
            .required_claims
            .iter()
            .any(|claim| !claims.contains_key(claim))
        {
            return Err(ProxyError::MissingClaim);
        }
        let verified = Arc::new(self.read_claims(&claims)?);
        self.remember(digest, verified.clone());
        Ok(verified)
    }

    fn read_claims(&self, claims: &Map<String, Value>) -> Result<Verified, ProxyError> {
        let seconds = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_f64)
                .map(|s| (s * 1000.0) as i64)
        };
        let expires_at_ms = seconds("exp").ok_or(ProxyError::MissingClaim)?;
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        let mut headers = Vec::with_capacity(1 + self.forward_claims.len());
        if let Some(value) = subject
            .as_deref()
            .and_then(|s| http1::HeaderValue::from_str(s).ok())
        {
            headers.push((SUBJECT_HEADER, value));
        }
        for (claim, name) in &self.forward_claims {
            let text = match claims.get(claim) {
                None | Some(Value::Null) => continue,
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            };
            if let Ok(value) = http1::HeaderValue::from_str(&text) {
                headers.push((name.clone(), value));
            }
        }
        let scopes = self.scopes_claim.as_ref().map(|claim| match claims.get(claim) {
            Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        });
        Ok(Verified {
            subject,
            jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            issued_at_ms: seconds("iat"),
            expires_at_ms,
            not_before_ms: seconds("nbf"),
            scopes,
            headers,
        })
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Arc<Verified>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn remember(&self, digest: [u8; 32], verified: Arc<Verified>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(digest, verified);
    }
}

/// What `jsonwebtoken` checks for a token signed with `algorithm` on a route: only that
/// algorithm (its key kind is checked against it), `exp` (required), `nbf`, `iss` and
/// `aud`, with the route's leeway.
fn validation(settings: &JwtSettings, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = settings.leeway_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&settings.audience);
    validation.required_spec_claims = ["exp", "iss", "aud"]
        .into_iter()
        .map(String::from)
        .collect::<HashSet<_>>();
    validation
}

/// The associated data of a route's sealed JWT key.
pub fn sealed_key_place(route_id: &str, index: usize) -> String {
    format!("route:{route_id}:jwt.keys[{index}]")
}

/// Maps a `jsonwebtoken` refusal onto the proxy's stable codes.
fn refusal(kind: &ErrorKind) -> ProxyError {
    match kind {
        ErrorKind::ExpiredSignature => ProxyError::TokenExpired,
        ErrorKind::ImmatureSignature => ProxyError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => ProxyError::InvalidIssuer,
        ErrorKind::InvalidAudience => ProxyError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(_) => ProxyError::MissingClaim,
        ErrorKind::InvalidSignature => ProxyError::InvalidSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => ProxyError::UnsupportedAlgorithm,
        _ => ProxyError::InvalidToken,
    }
}
