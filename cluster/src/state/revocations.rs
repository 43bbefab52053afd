//! Token revocations in the replicated state.

use std::collections::BTreeMap;

use super::{invalid, State};
use crate::command::{Rejection, Response};
use crate::revocation::{validate_revocation, RevokedTokens, TokenRevocation};

/// Most entries the list holds; more are refused until old ones expire.
pub const MAX_TOKEN_REVOCATIONS: usize = 1_000_000;

impl State {
    /// Returns every revocation entry by key.
    pub fn token_revocations(&self) -> &BTreeMap<String, TokenRevocation> {
        &self.token_revocations
    }

    pub(super) fn revoke_tokens(&mut self, entry: &TokenRevocation) -> Result<Response, Rejection> {
        validate_revocation(entry, entry.created_at_ms).map_err(invalid)?;
        let key = entry.key();
        let stored = match self.token_revocations.get(&key) {
            // Repeating a revocation only ever widens it.
            Some(old) => TokenRevocation {
                tokens: match (&old.tokens, &entry.tokens) {
                    (
                        RevokedTokens::Subject {
                            issued_before_ms: before,
                            ..
                        },
                        RevokedTokens::Subject {
                            sub,
                            issued_before_ms,
                        },
                    ) => RevokedTokens::Subject {
                        sub: sub.clone(),
                        issued_before_ms: (*before).max(*issued_before_ms),
                    },
                    (_, tokens) => tokens.clone(),
                },
                expires_at_ms: old.expires_at_ms.max(entry.expires_at_ms),
                created_at_ms: old.created_at_ms,
            },
            None if self.token_revocations.len() >= MAX_TOKEN_REVOCATIONS => {
                return Err(Rejection::Invalid {
                    field: "revocations".into(),
                    reason: format!(
                        "the list holds {MAX_TOKEN_REVOCATIONS} entries; wait for some to expire"
                    ),
                })
            }
            None => entry.clone(),
        };
        self.token_revocations.insert(key, stored.clone());
        Ok(Response::TokenRevocation(Box::new(stored)))
    }

    /// Drops entries whose tokens have all expired; returns how many.
    pub(super) fn expire_token_revocations(&mut self, now_ms: i64) -> u64 {
        let before = self.token_revocations.len();
        self.token_revocations
            .retain(|_, entry| entry.expires_at_ms > now_ms);
        (before - self.token_revocations.len()) as u64
    }
}
