//! Routes in the replicated state.

use std::collections::BTreeMap;

use super::{invalid, State};
use crate::command::{Rejection, Response};
use crate::route::{validate_route, Route};

impl State {
    /// Returns a route by id.
    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.get(id)
    }

    /// Returns every route by id.
    pub fn routes(&self) -> &BTreeMap<String, Route> {
        &self.routes
    }

    pub(super) fn put_route(&mut self, route: &Route, now_ms: i64) -> Result<Response, Rejection> {
        if let Some(problem) = validate_route(route).into_iter().next() {
            return Err(invalid(problem));
        }
        let created_at_ms = self.routes.get(&route.id).map_or(now_ms, |old| old.created_at_ms);
        let stored = Route {
            created_at_ms,
            updated_at_ms: now_ms,
            ..route.clone()
        };
        self.routes.insert(stored.id.clone(), stored.clone());
        Ok(Response::Route(Box::new(stored)))
    }

    pub(super) fn delete_route(&mut self, id: &str) -> Result<Response, Rejection> {
        self.routes
            .remove(id)
            .map(|route| Response::RouteDeleted { id: route.id })
            .ok_or_else(|| Rejection::RouteNotFound { id: id.to_owned() })
    }
}
