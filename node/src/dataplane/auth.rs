//! Who is calling: the API key from `Authorization: Bearer …` or `X-API-Key`, checked
//! against the local read model.

use std::sync::Arc;

use cluster::{secret, KeyStatus};

use super::error::ProxyError;
use super::incoming::Headers;
use super::read_model::{KeyAuth, View};

/// The header that may carry an API key instead of `Authorization`.
pub const X_API_KEY: &str = "x-api-key";
const AUTHORIZATION: &str = "authorization";

/// Returns the presented credential, if any. `Authorization: Bearer` wins over `X-API-Key`.
///
/// A key is base58 after its prefix, so a token with any other byte fails its check anyway;
/// only an `Authorization` value that is not a bearer token needs checking here, because an
/// `X-API-Key` beside it would otherwise be taken.
fn presented(headers: Headers<'_>) -> Result<&str, ProxyError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        if let Some(token) = bearer(value) {
            return std::str::from_utf8(token).map_err(|_| ProxyError::InvalidCredential);
        }
        if !is_text(value) || headers.get(X_API_KEY).is_none() {
            return Err(ProxyError::InvalidCredential);
        }
    }
    match headers.get(X_API_KEY) {
        Some(value) => std::str::from_utf8(value.trim_ascii()).map_err(|_| ProxyError::InvalidCredential),
        None => Err(ProxyError::MissingCredential),
    }
}

/// Returns the bearer token of `Authorization: Bearer …` (JWT routes take no other form).
pub fn bearer_token(headers: Headers<'_>) -> Result<&str, ProxyError> {
    let value = headers.get(AUTHORIZATION).ok_or(ProxyError::MissingCredential)?;
    let token = bearer(value).ok_or(ProxyError::InvalidToken)?;
    std::str::from_utf8(token).map_err(|_| ProxyError::InvalidToken)
}

/// Whether a header value is text: visible ASCII, spaces and tabs.
fn is_text(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The token of a `Bearer` credential (the scheme in any case), trimmed.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii())
}

/// Authenticates the request's API key at `now_ms`: checksum first (a malformed key never
/// reaches the lookup), then the hash in the read model, then the key's life cycle.
pub fn authenticate(view: &View, headers: Headers<'_>, now_ms: i64) -> Result<Arc<KeyAuth>, ProxyError> {
    let token = presented(headers)?;
    let hash = secret::verify(token).map_err(|_| ProxyError::InvalidCredential)?;
    let key = view
        .keys
        .pin()
        .get(&hash)
        .cloned()
        .ok_or(ProxyError::InvalidCredential)?;
    match key.status {
        KeyStatus::Revoked => return Err(ProxyError::Revoked),
        KeyStatus::Expired => return Err(ProxyError::Expired),
        KeyStatus::Active => {}
    }
    if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Err(ProxyError::Expired);
    }
    if key.secret_valid_until_ms.is_some_and(|until| until <= now_ms) {
        return Err(ProxyError::Expired);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;
    use crate::dataplane::read_model::Scopes;

    fn headers<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value.as_ref()).expect("value"),
            );
        }
        map
    }

    fn view_with(plaintext: &str, auth: KeyAuth) -> View {
        let view = View::default();
        view.keys.pin().insert(secret::hash(plaintext), Arc::new(auth));
        view
    }

    fn key(status: KeyStatus, expires: Option<i64>, until: Option<i64>) -> KeyAuth {
        KeyAuth {
            key_id: http1::HeaderValue::from_static("key_a"),
            tenant: None,
            scopes: Scopes::All,
            status,
            expires_at_ms: expires,
            secret_valid_until_ms: until,
            usage: Arc::default(),
            meters: Arc::new([]),
            ai_meters: Arc::new([]),
        }
    }

    #[test]
    fn credential_headers_must_be_visible_ascii() {
        let secret = secret::generate(&mut rand::thread_rng()).plaintext;
        let view = view_with(&secret, key(KeyStatus::Active, None, None));
        let nbsp_around = [&b"\xC2\xA0"[..], secret.as_bytes(), b"\xC2\xA0"].concat();
        for (what, headers) in [
            (
                "a non-ASCII Authorization beside a good X-API-Key",
                headers(&[
                    ("authorization", "Basic caf\u{e9}".as_bytes()),
                    ("x-api-key", secret.as_bytes()),
                ]),
            ),
            (
                "a key wrapped in no-break spaces",
                headers(&[("x-api-key", &nbsp_around[..])]),
            ),
        ] {
            assert_eq!(
                authenticate(&view, Headers::Map(&headers), 100).map(|_| ()),
                Err(ProxyError::InvalidCredential),
                "{what}"
            );
        }
    }

    #[test]
    fn each_refusal_has_its_own_code() {
        let secret = secret::generate(&mut rand::thread_rng()).plaintext;
        let bearer = format!("Bearer {secret}");
        let check = |auth: KeyAuth, h: &HeaderMap| {
            authenticate(&view_with(&secret, auth), Headers::Map(h), 100).map(|_| ())
        };
        let by_bearer = headers(&[("authorization", &bearer)]);
        let by_header = headers(&[("x-api-key", &secret)]);
        assert_eq!(check(key(KeyStatus::Active, None, None), &by_bearer), Ok(()));
        assert_eq!(check(key(KeyStatus::Active, None, None), &by_header), Ok(()));
        assert_eq!(
            check(key(KeyStatus::Revoked, None, None), &by_bearer),
            Err(ProxyError::Revoked)
        );
        assert_eq!(
            check(key(KeyStatus::Expired, None, None), &by_bearer),
            Err(ProxyError::Expired)
        );
        assert_eq!(
            check(key(KeyStatus::Active, Some(100), None), &by_bearer),
            Err(ProxyError::Expired)
        );
        assert_eq!(
            check(key(KeyStatus::Active, None, Some(50)), &by_bearer),
            Err(ProxyError::Expired)
        );
        assert_eq!(check(key(KeyStatus::Active, None, Some(500)), &by_bearer), Ok(()));
        assert_eq!(
            check(key(KeyStatus::Active, None, None), &headers::<&str>(&[])),
            Err(ProxyError::MissingCredential)
        );
        assert_eq!(
            check(
                key(KeyStatus::Active, None, None),
                &headers(&[("authorization", "Basic abc")])
            ),
            Err(ProxyError::InvalidCredential)
        );
        let other = secret::generate(&mut rand::thread_rng()).plaintext;
        assert_eq!(
            check(
                key(KeyStatus::Active, None, None),
                &headers(&[("x-api-key", &other)])
            ),
            Err(ProxyError::InvalidCredential),
            "a well-formed but unknown key"
        );
        let mut corrupted = secret.clone();
        corrupted.pop();
        corrupted.push(if secret.ends_with('x') { 'y' } else { 'x' });
        assert_eq!(
            check(
                key(KeyStatus::Active, None, None),
                &headers(&[("x-api-key", &corrupted)])
            ),
            Err(ProxyError::InvalidCredential)
        );
    }
}
