//! Model providers in the replicated state.

use std::collections::BTreeMap;

use super::{invalid, State};
use crate::command::{Rejection, Response};
use crate::provider::{validate_provider, Provider};

impl State {
    /// Returns every provider by id.
    pub fn providers(&self) -> &BTreeMap<String, Provider> {
        &self.providers
    }

    pub(super) fn put_provider(&mut self, provider: &Provider) -> Result<Response, Rejection> {
        if let Some(problem) = validate_provider(provider).into_iter().next() {
            return Err(invalid(problem));
        }
        let created_at_ms = self
            .providers
            .get(&provider.id)
            .map_or(provider.updated_at_ms, |old| old.created_at_ms);
        let stored = Provider {
            created_at_ms,
            ..provider.clone()
        };
        self.providers.insert(stored.id.clone(), stored.clone());
        Ok(Response::Provider(Box::new(stored)))
    }

    pub(super) fn delete_provider(&mut self, id: &str) -> Result<Response, Rejection> {
        self.providers
            .remove(id)
            .map(|provider| Response::ProviderDeleted { id: provider.id })
            .ok_or_else(|| Rejection::ProviderNotFound { id: id.to_owned() })
    }
}
