//! Managed admin credentials: tokens with a role, replicated as SHA-256 hashes, so any
//! node can check them and the plaintext exists only in the answer that created it.

use serde::{Deserialize, Serialize};

use crate::model::SecretHash;
use crate::validate::{self, FieldError};

/// Most managed admin tokens the cluster keeps (revoked ones included).
pub const MAX_ADMIN_TOKENS: usize = 1_000;

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRole {
    /// Everything: members, settings, admin tokens, and what an operator may do.
    Admin,
    /// Keys, tenants, routes and token revocations, and every read but admin tokens.
    Operator,
    /// Reads only.
    Auditor,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Operator => "operator",
            AdminRole::Auditor => "auditor",
        }
    }
}

/// A managed admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenRecord {
    /// `tok_…`, chosen by the proposer.
    pub id: String,
    pub name: String,
    pub role: AdminRole,
    /// SHA-256 of the token.
    pub hash: SecretHash,
    /// The first characters of the token, safe to display.
    pub prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Checks a token record before it is stored.
pub fn validate_admin_token(record: &AdminTokenRecord) -> Result<(), FieldError> {
    validate::id("id", &record.id)?;
    validate::name(&record.name)?;
    if record.prefix.is_empty() || record.prefix.len() > 32 {
        return Err(FieldError::new("prefix", "must be 1 to 32 characters"));
    }
    Ok(())
}
