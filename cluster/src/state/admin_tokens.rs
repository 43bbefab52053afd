//! Managed admin tokens in the replicated state.

use std::collections::BTreeMap;

use super::{invalid, State};
use crate::admin_token::{validate_admin_token, AdminTokenRecord, MAX_ADMIN_TOKENS};
use crate::command::{Rejection, Response};
use crate::model::SecretHash;

impl State {
    /// Returns every managed admin token by id.
    pub fn admin_tokens(&self) -> &BTreeMap<String, AdminTokenRecord> {
        &self.admin_tokens
    }

    /// Returns the token a hash belongs to (revoked or not).
    pub fn admin_token_by_hash(&self, hash: &SecretHash) -> Option<&AdminTokenRecord> {
        self.admin_tokens.values().find(|t| &t.hash == hash)
    }

    pub(super) fn create_admin_token(&mut self, record: &AdminTokenRecord) -> Result<Response, Rejection> {
        validate_admin_token(record).map_err(invalid)?;
        if self.admin_tokens.contains_key(&record.id) {
            return Err(Rejection::KeyExists {
                id: record.id.clone(),
            });
        }
        if self.admin_token_by_hash(&record.hash).is_some() {
            return Err(Rejection::SecretCollision);
        }
        if self.admin_tokens.len() >= MAX_ADMIN_TOKENS {
            return Err(Rejection::Invalid {
                field: "admin_tokens".into(),
                reason: format!("at most {MAX_ADMIN_TOKENS} admin tokens"),
            });
        }
        let stored = AdminTokenRecord {
            revoked_at_ms: None,
            ..record.clone()
        };
        self.admin_tokens.insert(stored.id.clone(), stored.clone());
        Ok(Response::AdminToken(Box::new(stored)))
    }

    pub(super) fn revoke_admin_token(&mut self, id: &str, now_ms: i64) -> Result<Response, Rejection> {
        let token = self
            .admin_tokens
            .get_mut(id)
            .ok_or_else(|| Rejection::AdminTokenNotFound { id: id.to_owned() })?;
        token.revoked_at_ms.get_or_insert(now_ms);
        Ok(Response::AdminToken(Box::new(token.clone())))
    }
}
