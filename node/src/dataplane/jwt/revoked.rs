//! The replicated token revocation list, indexed for the hot path.

use std::collections::{HashMap, HashSet};

use cluster::revocation::RevokedTokens;
use cluster::State;

use super::Verified;

/// Revoked `jti`s, and per subject the moment before which its tokens are revoked.
#[derive(Debug, Default)]
pub struct RevokedTokenIndex {
    jtis: HashSet<String>,
    subjects: HashMap<String, i64>,
}

impl RevokedTokenIndex {
    /// Indexes the state's list.
    pub fn build(state: &State) -> Self {
        let mut index = Self::default();
        for entry in state.token_revocations().values() {
            match &entry.tokens {
                RevokedTokens::Jti(jti) => {
                    index.jtis.insert(jti.clone());
                }
                RevokedTokens::Subject {
                    sub,
                    issued_before_ms,
                } => {
                    index.subjects.insert(sub.clone(), *issued_before_ms);
                }
            }
        }
        index
    }

    /// Whether a revocation covers the token: its `jti` is listed, or its subject is and the
    /// token was issued before the subject's cut-off (or does not say when it was issued).
    pub fn covers(&self, token: &Verified) -> bool {
        let by_jti = token.jti.as_ref().is_some_and(|jti| self.jtis.contains(jti));
        let by_subject = token
            .subject
            .as_ref()
            .and_then(|sub| self.subjects.get(sub))
            .is_some_and(|&before| token.issued_at_ms.is_none_or(|iat| iat < before));
        by_jti || by_subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> Verified {
        Verified {
            subject: sub.map(str::to_owned),
            jti: jti.map(str::to_owned),
            issued_at_ms: iat,
            expires_at_ms: i64::MAX,
            not_before_ms: None,
            scopes: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn jtis_and_subjects_before_their_cut_off_are_covered() {
        let index = RevokedTokenIndex {
            jtis: ["t1".to_owned()].into(),
            subjects: [("alice".to_owned(), 1_000)].into(),
        };
        assert!(index.covers(&token(Some("t1"), None, None)));
        assert!(!index.covers(&token(Some("t2"), None, None)));
        assert!(index.covers(&token(None, Some("alice"), Some(999))));
        assert!(index.covers(&token(None, Some("alice"), None)));
        assert!(!index.covers(&token(None, Some("alice"), Some(1_000))));
        assert!(!index.covers(&token(None, Some("bob"), Some(1))));
    }
}
