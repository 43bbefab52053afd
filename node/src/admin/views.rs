//! JSON shapes of the admin API. Secret hashes never leave the node; the plaintext secret
//! appears only in the answer that created it.

pub use crate::clock::{now_ms, rfc3339};
use cluster::{KeyRecord, RateLimit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A rate limit as the API reads and writes it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    pub requests: u64,
    pub window_secs: u64,
}

impl From<RateLimitBody> for RateLimit {
    fn from(body: RateLimitBody) -> Self {
        RateLimit {
            requests: body.requests,
            window_secs: body.window_secs,
        }
    }
}

/// One secret of a key, without the secret.
#[derive(Debug, Serialize)]
pub struct SecretView {
    pub prefix: String,
    pub created_at: String,
    pub valid_until: Option<String>,
}

/// A key as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateLimitBody>,
    pub expires_at: Option<String>,
    /// The stored metadata JSON, emitted as is (it was validated as an object on the way in).
    pub metadata: Box<RawValue>,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub secrets: Vec<SecretView>,
}

impl KeyView {
    pub fn new(key: &KeyRecord, now_ms: i64) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.current_secret().map(|s| s.prefix.clone()).unwrap_or_default(),
            tenant: key.tenant.clone(),
            scopes: key.scopes.clone(),
            rate_limit: key.rate_limit.map(|l| RateLimitBody {
                requests: l.requests,
                window_secs: l.window_secs,
            }),
            expires_at: key.expires_at_ms.map(rfc3339),
            metadata: RawValue::from_string(key.metadata_json.clone())
                .or_else(|_| RawValue::from_string("{}".to_owned()))
                .unwrap_or_default(),
            status: key.status_at(now_ms).as_str(),
            created_at: rfc3339(key.created_at_ms),
            updated_at: rfc3339(key.updated_at_ms),
            secrets: key
                .secrets
                .iter()
                .filter(|s| s.is_valid_at(now_ms))
                .map(|s| SecretView {
                    prefix: s.prefix.clone(),
                    created_at: rfc3339(s.created_at_ms),
                    valid_until: s.valid_until_ms.map(rfc3339),
                })
                .collect(),
        }
    }
}

/// The answer to creating or rotating a key: the view plus the secret, shown this once.
#[derive(Debug, Serialize)]
pub struct KeyWithSecret {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}
