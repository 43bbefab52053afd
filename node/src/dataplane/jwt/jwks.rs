//! Signing keys published by an issuer, fetched and cached per node. A route names a JWKS
//! URL, or only its issuer, whose OIDC discovery document says where the keys are.
//!
//! The cache is refreshed when it expires (the document's `max-age`, bounded) and when a
//! token names a key id the cache does not hold, which is how a key rotated at the IdP is
//! picked up without a restart. That second kind of refresh runs at most once per
//! [`UNKNOWN_KID_REFRESH`], so tokens with forged key ids cannot make the gateway hammer the
//! IdP. A failed refresh keeps the keys it had.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;

use super::keys::{self, VerifyKey};

/// Shortest interval between refreshes forced by unknown key ids.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(10);
/// How long keys are trusted when the document says nothing.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// Bounds on a document's own `max-age`.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an issuer's keys are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Jwks(String),
    /// The issuer's `/.well-known/openid-configuration` names the JWKS URL.
    Discover(String),
}

#[derive(Debug, Default)]
struct Cached {
    keys: Vec<VerifyKey>,
    fresh_until: Option<Instant>,
}

/// Why keys could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    #[error("the issuer's keys could not be fetched: {0}")]
    Unavailable(String),
}

/// One issuer's keys on this node.
#[derive(Debug)]
pub struct JwksSource {
    location: Location,
    client: reqwest::Client,
    cached: ArcSwap<Cached>,
    /// Held while fetching, so concurrent misses share one fetch; remembers the last
    /// refresh an unknown key id forced.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksSource {
    fn new(location: Location, client: reqwest::Client) -> Self {
        Self {
            location,
            client,
            cached: ArcSwap::default(),
            refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// Returns the keys fitting a token's `alg` and `kid`, fetching when the cache is stale
    /// or (rate-limited) when it holds no such key. An empty answer means no key fits.
    pub async fn keys_for(
        &self,
        algorithm: jsonwebtoken::Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<VerifyKey>, JwksError> {
        let fitting = |cached: &Cached| -> Vec<VerifyKey> {
            cached
                .keys
                .iter()
                .filter(|k| k.fits(algorithm, kid))
                .cloned()
                .collect()
        };
        let cached = self.cached.load_full();
        let fresh = cached.fresh_until.is_some_and(|until| Instant::now() < until);
        let found = fitting(&cached);
        if fresh && !found.is_empty() {
            return Ok(found);
        }
        let mut last_forced = self.refresh.lock().await;
        // Someone else may have refreshed while this request waited.
        let current = self.cached.load_full();
        if !Arc::ptr_eq(&current, &cached) {
            let found = fitting(&current);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        let stale = current.fresh_until.is_none_or(|until| Instant::now() >= until);
        let may_force = last_forced.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_REFRESH);
        if !stale && !may_force {
            return Ok(Vec::new());
        }
        if !stale {
            *last_forced = Some(Instant::now());
        }
        match self.fetch().await {
            Ok((keys, max_age)) => {
                let refreshed = Arc::new(Cached {
                    keys,
                    fresh_until: Some(Instant::now() + max_age),
                });
                let found = fitting(&refreshed);
                self.cached.store(refreshed);
                Ok(found)
            }
            Err(error) if !current.keys.is_empty() => {
                tracing::warn!(location = ?self.location, %error, "JWKS refresh failed; keeping the keys held");
                Ok(fitting(&current))
            }
            Err(error) => {
                tracing::warn!(location = ?self.location, %error, "JWKS fetch failed");
                Err(JwksError::Unavailable(error))
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<VerifyKey>, Duration), String> {
        let url = match &self.location {
            Location::Jwks(url) => url.clone(),
            Location::Discover(issuer) => self.discover(issuer).await?,
        };
        let (body, max_age) = self.get(&url).await?;
        Ok((keys::from_jwks(&body)?, max_age))
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("discovery document is not JSON: {e}"))?;
        let jwks_uri = document["jwks_uri"]
            .as_str()
            .ok_or("the discovery document has no jwks_uri")?;
        let parsed = url::Url::parse(jwks_uri).map_err(|e| format!("jwks_uri is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("jwks_uri is not an http(s) URL".into());
        }
        Ok(jwks_uri.to_owned())
    }

    /// GETs `url`, reading at most [`MAX_DOCUMENT_BYTES`]; returns the body and its max-age.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Duration), String> {
        let response = self
            .client
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map_or(DEFAULT_MAX_AGE, |age| age.clamp(MIN_MAX_AGE, MAX_MAX_AGE));
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("GET {url}: {e}"))?;
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// Parses `max-age=N` out of a Cache-Control value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| value.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

/// Every issuer's key cache on this node, shared by the routes that name the same one, so
/// a route change keeps what was fetched.
#[derive(Debug)]
pub struct JwksRegistry {
    client: reqwest::Client,
    sources: Mutex<HashMap<Location, Arc<JwksSource>>>,
}

impl Default for JwksRegistry {
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            client,
            sources: Mutex::default(),
        }
    }
}

impl JwksRegistry {
    /// Returns the cache for `location`, creating it on first use.
    pub fn source(&self, location: Location) -> Arc<JwksSource> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources
            .entry(location.clone())
            .or_insert_with(|| Arc::new(JwksSource::new(location, self.client.clone())))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
