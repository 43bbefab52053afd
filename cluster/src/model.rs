//! The records the cluster replicates.
//!
//! These types are encoded with bincode (on disk and between peers), so they use no serde
//! attribute that needs a self-describing format (`flatten`, `untagged`, `skip_serializing_if`).

use serde::{Deserialize, Serialize};

use crate::limits::Limit;
use crate::types::NodeId;

/// A SHA-256 digest of an API key secret; the only form in which a secret is replicated.
pub type SecretHash = [u8; 32];

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    /// Accepted by the data plane (subject to `expires_at_ms` and scopes).
    Active,
    /// Refused for good; kept so that audits and lookups can say why.
    Revoked,
    /// Past its expiry, as recorded by the expiry janitor.
    Expired,
}

impl KeyStatus {
    /// Returns the lowercase name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }
}

/// One secret of a key. A key has one current secret and, during a rotation grace period,
/// older ones that still authenticate until `valid_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySecret {
    /// SHA-256 of the full secret string.
    pub hash: SecretHash,
    /// The first characters of the secret, safe to display (`cf_AbCdEfGhJ`).
    pub prefix: String,
    /// When this secret was issued (Unix milliseconds, stamped by the proposer).
    pub created_at_ms: i64,
    /// `None` for the current secret; the end of the grace period for a rotated-out one.
    pub valid_until_ms: Option<i64>,
}

impl KeySecret {
    /// Returns whether this secret authenticates at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_none_or(|until| now_ms < until)
    }
}

/// An API key as the cluster knows it. The plaintext secret is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable identifier (`key_…`), chosen by the proposer.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Owning tenant, if any; tenant-wide limits and reports group by it.
    pub tenant: Option<String>,
    /// Route ids this key may call; `["*"]` means every route, an empty list none.
    pub scopes: Vec<String>,
    /// Rate limits and quotas on the key's own requests, at most one per period; the
    /// tenant's limits apply on top.
    pub limits: Vec<Limit>,
    /// Absolute expiry (Unix milliseconds).
    pub expires_at_ms: Option<i64>,
    /// Caller-supplied metadata, a JSON object kept as compact JSON text (bincode cannot
    /// carry a self-describing JSON value).
    pub metadata_json: String,
    /// Current and grace-period secrets, newest first.
    pub secrets: Vec<KeySecret>,
    /// Lifecycle status.
    pub status: KeyStatus,
    /// Creation time (Unix milliseconds).
    pub created_at_ms: i64,
    /// Time of the last change (Unix milliseconds).
    pub updated_at_ms: i64,
}

impl KeyRecord {
    /// Returns the current (newest) secret.
    pub fn current_secret(&self) -> Option<&KeySecret> {
        self.secrets.first()
    }

    /// Returns the status as observed at `now_ms`: an active key past its expiry is
    /// expired even before the janitor records it.
    pub fn status_at(&self, now_ms: i64) -> KeyStatus {
        match self.status {
            KeyStatus::Active if self.expires_at_ms.is_some_and(|at| at <= now_ms) => KeyStatus::Expired,
            status => status,
        }
    }
}

/// A tenant: the limits that cover all its keys together. Keys name their tenant freely;
/// a tenant record exists only once limits are set for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub limits: Vec<Limit>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a member tells the cluster about itself, so any node can show every member's
/// listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The member's Raft id.
    pub id: NodeId,
    /// Peer listener (Raft RPCs, forwarding).
    pub peer_addr: String,
    /// Admin listener.
    pub admin_addr: String,
    /// Proxy listener.
    pub proxy_addr: String,
    /// Version of the binary the member runs.
    pub version: String,
    /// When the member last registered (Unix milliseconds).
    pub registered_at_ms: i64,
}
