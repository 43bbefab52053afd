//! Revoked tokens: the replicated list the data plane checks every verified JWT against.
//! An entry names one token (`jti`) or every token of a subject issued before a moment,
//! and lasts until the tokens it covers have expired anyway.

use serde::{Deserialize, Serialize};

use crate::validate::FieldError;

/// Longest `jti` or subject.
pub const MAX_TOKEN_ID_LEN: usize = 1024;
/// Longest an entry may be kept: tokens live shorter than this.
pub const MAX_REVOCATION_MS: i64 = 366 * 24 * 3600 * 1000;

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RevokedTokens {
    /// The token with this `jti`.
    Jti(String),
    /// Every token with this `sub` whose `iat` is before `issued_before_ms` (tokens
    /// without `iat` included).
    Subject { sub: String, issued_before_ms: i64 },
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevocation {
    pub tokens: RevokedTokens,
    /// When the covered tokens have all expired and the entry can go.
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

impl TokenRevocation {
    /// The key an entry is stored under: one entry per `jti` and per subject.
    pub fn key(&self) -> String {
        match &self.tokens {
            RevokedTokens::Jti(jti) => format!("jti:{jti}"),
            RevokedTokens::Subject { sub, .. } => format!("sub:{sub}"),
        }
    }
}

/// Checks an entry proposed at `now_ms`.
pub fn validate_revocation(entry: &TokenRevocation, now_ms: i64) -> Result<(), FieldError> {
    let (field, value) = match &entry.tokens {
        RevokedTokens::Jti(jti) => ("jti", jti),
        RevokedTokens::Subject { sub, .. } => ("sub", sub),
    };
    if value.is_empty() || value.len() > MAX_TOKEN_ID_LEN || value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_TOKEN_ID_LEN} characters without control characters"),
        ));
    }
    if entry.expires_at_ms <= now_ms || entry.expires_at_ms > now_ms.saturating_add(MAX_REVOCATION_MS) {
        return Err(FieldError::new(
            "expires_at",
            "must be in the future and within a year",
        ));
    }
    Ok(())
}
