//! How a route verifies JSON Web Tokens: the issuer, audience and keys an operator
//! configured, and the rules they must follow. The data plane compiles these into
//! verifiers; the checks here are the ones `apply` and the admin API share.

use serde::{Deserialize, Serialize};

use crate::validate::FieldError;

/// Signature algorithms a route may accept. `none` is not one of them.
pub const ALGORITHMS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384",
    "HS512",
];
/// Accepted when a route lists none: every asymmetric algorithm. Shared-secret HMAC must be
/// asked for, so a public key can never be used as an HMAC secret.
pub const DEFAULT_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
/// Clock skew allowed on `exp` and `nbf` when a route names none.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Largest allowed clock skew.
pub const MAX_LEEWAY_SECS: u64 = 3_600;
/// Most static keys, audiences, required claims or forwarded claims on one route.
pub const MAX_JWT_ITEMS: usize = 16;
/// Longest issuer, URL, key or claim name.
pub const MAX_JWT_TEXT: usize = 16 * 1024;

/// A route's token verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSettings {
    /// Required `iss`; also where OIDC discovery starts when no keys or JWKS URL are given.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audience: Vec<String>,
    /// Where the issuer publishes its signing keys.
    pub jwks_url: Option<String>,
    /// Static verification keys: PEM public keys or JWKs; HMAC secrets (`oct` JWKs) are
    /// stored sealed with the master key (`sealed:v1:…`).
    pub keys: Vec<String>,
    /// Accepted `alg` values; empty means [`DEFAULT_ALGORITHMS`].
    pub algorithms: Vec<String>,
    pub leeway_secs: u64,
    /// Claim holding the route ids the token may call (a space-separated string or an
    /// array, as OAuth's `scope`); `None` lets every valid token call the route.
    pub scopes_claim: Option<String>,
    /// Claims a token must carry besides `exp`.
    pub required_claims: Vec<String>,
    /// Claims forwarded upstream, as (claim, header name); `sub` always is, as
    /// `X-Credentialflow-Subject`.
    pub forward_claims: Vec<(String, String)>,
}

impl JwtSettings {
    /// The algorithms the route accepts.
    pub fn accepted_algorithms(&self) -> Vec<&str> {
        if self.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.to_vec()
        } else {
            self.algorithms.iter().map(String::as_str).collect()
        }
    }
}

/// Checks a route's JWT settings, returning every problem found (fields under `jwt.`).
pub fn validate_jwt(settings: &JwtSettings) -> Vec<FieldError> {
    let mut problems = Vec::new();
    let issuer = settings.issuer.trim();
    if issuer.is_empty() || issuer.len() > MAX_JWT_TEXT || issuer != settings.issuer {
        problems.push(FieldError::new(
            "jwt.issuer",
            "must be a non-empty string without surrounding spaces",
        ));
    }
    let discovers = settings.jwks_url.is_none() && settings.keys.is_empty();
    if discovers && !is_http_url(&settings.issuer) {
        problems.push(FieldError::new(
            "jwt.issuer",
            "needs keys or a jwks_url, or must be an http(s) URL to discover them from",
        ));
    }
    if settings.audience.is_empty() || settings.audience.len() > MAX_JWT_ITEMS {
        problems.push(FieldError::new(
            "jwt.audience",
            format!("must list 1 to {MAX_JWT_ITEMS} values"),
        ));
    }
    if settings
        .audience
        .iter()
        .any(|a| a.is_empty() || a.len() > MAX_JWT_TEXT)
    {
        problems.push(FieldError::new("jwt.audience", "values must be non-empty"));
    }
    if let Some(url) = &settings.jwks_url {
        if !is_http_url(url) {
            problems.push(FieldError::new("jwt.jwks_url", "must be an http(s) URL"));
        }
    }
    if settings.keys.len() > MAX_JWT_ITEMS {
        problems.push(FieldError::new(
            "jwt.keys",
            format!("at most {MAX_JWT_ITEMS} keys"),
        ));
    }
    for (index, key) in settings.keys.iter().enumerate() {
        let trimmed = key.trim();
        let shaped = trimmed.starts_with("-----BEGIN ")
            || trimmed.starts_with('{')
            || trimmed.starts_with(crate::sealed::SEALED_TEXT_PREFIX);
        if !shaped || key.len() > MAX_JWT_TEXT {
            problems.push(FieldError::new(
                format!("jwt.keys[{index}]"),
                "must be a PEM public key or a JWK",
            ));
        }
    }
    for (index, algorithm) in settings.algorithms.iter().enumerate() {
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            problems.push(FieldError::new(
                format!("jwt.algorithms[{index}]"),
                format!("must be one of {}", ALGORITHMS.join(", ")),
            ));
        }
    }
    let hmac = settings.algorithms.iter().any(|a| a.starts_with("HS"));
    let asymmetric = settings
        .accepted_algorithms()
        .iter()
        .any(|a| !a.starts_with("HS"));
    if hmac && asymmetric {
        problems.push(FieldError::new(
            "jwt.algorithms",
            "HMAC and public-key algorithms cannot be mixed on one route (algorithm confusion)",
        ));
    }
    if hmac && (settings.jwks_url.is_some() || settings.keys.is_empty()) {
        problems.push(FieldError::new(
            "jwt.keys",
            "HMAC needs its secret as an oct JWK in keys",
        ));
    }
    if settings.leeway_secs > MAX_LEEWAY_SECS {
        problems.push(FieldError::new(
            "jwt.leeway_secs",
            format!("must be at most {MAX_LEEWAY_SECS}"),
        ));
    }
    let claims = settings
        .required_claims
        .iter()
        .chain(settings.scopes_claim.iter())
        .chain(settings.forward_claims.iter().map(|(claim, _)| claim));
    if claims.clone().any(|c| c.is_empty() || c.len() > 256) {
        problems.push(FieldError::new("jwt", "claim names must be 1 to 256 characters"));
    }
    if settings.required_claims.len() > MAX_JWT_ITEMS || settings.forward_claims.len() > MAX_JWT_ITEMS {
        problems.push(FieldError::new(
            "jwt",
            format!("at most {MAX_JWT_ITEMS} required or forwarded claims"),
        ));
    }
    for (index, (_, header)) in settings.forward_claims.iter().enumerate() {
        if !crate::validate::is_header_name(header, 256) {
            problems.push(FieldError::new(
                format!("jwt.forward_claims[{index}]"),
                "the header name must be an HTTP token",
            ));
        }
    }
    problems
}

fn is_http_url(value: &str) -> bool {
    url::Url::parse(value)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JwtSettings {
        JwtSettings {
            issuer: "https://idp.example".into(),
            audience: vec!["api".into()],
            jwks_url: None,
            keys: Vec::new(),
            algorithms: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            scopes_claim: Some("scope".into()),
            required_claims: vec!["sub".into()],
            forward_claims: vec![("email".into(), "X-User-Email".into())],
        }
    }

    fn fields(settings: &JwtSettings) -> Vec<String> {
        validate_jwt(settings).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_discovering_issuer_is_valid() {
        assert!(fields(&settings()).is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut JwtSettings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("jwt.issuer", Box::new(|s| s.issuer = "not a url".into())),
            ("jwt.audience", Box::new(|s| s.audience.clear())),
            ("jwt.jwks_url", Box::new(|s| s.jwks_url = Some("ftp://x".into()))),
            ("jwt.keys[0]", Box::new(|s| s.keys = vec!["garbage".into()])),
            (
                "jwt.algorithms[0]",
                Box::new(|s| s.algorithms = vec!["none".into()]),
            ),
            (
                "jwt.algorithms",
                Box::new(|s| {
                    s.algorithms = vec!["HS256".into(), "RS256".into()];
                    s.keys = vec!["{\"kty\":\"oct\"}".into()];
                }),
            ),
            ("jwt.keys", Box::new(|s| s.algorithms = vec!["HS256".into()])),
            (
                "jwt.leeway_secs",
                Box::new(|s| s.leeway_secs = MAX_LEEWAY_SECS + 1),
            ),
            (
                "jwt.forward_claims[0]",
                Box::new(|s| s.forward_claims = vec![("email".into(), "Bad Header".into())]),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = settings();
            mutate(&mut s);
            assert!(
                fields(&s).contains(&field.to_owned()),
                "{field}: {:?}",
                fields(&s)
            );
        }
    }
}
