//! Secrets sealed with the cluster master key. The replicated state (and so every snapshot
//! and log entry) holds them only in this form; sealing and opening happen at the edges,
//! in the admin API and where the data plane compiles routes, never in `apply`.

use serde::{Deserialize, Serialize};

/// Prefix of a sealed secret written as text (inside JWT key lists).
pub const SEALED_TEXT_PREFIX: &str = "sealed:v1:";
/// Largest sealed secret.
pub const MAX_SEALED_BYTES: usize = 8 * 1024;

/// An AES-256-GCM ciphertext with its nonce; the associated data names what the secret
/// belongs to (`route:<id>:upstream_auth`), so a sealed value cannot be moved elsewhere.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.ciphertext.len())
    }
}

/// A credential a route sends upstream: `header: <secret>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamAuth {
    pub header: String,
    pub secret: SealedSecret,
}

impl UpstreamAuth {
    /// The associated data of a route's upstream credential.
    pub fn associated_data(route_id: &str) -> String {
        format!("route:{route_id}:upstream_auth")
    }
}
