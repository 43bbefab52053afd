//! The provider monitor: the single writer of [`ProviderHealth`]. AI requests send it
//! what each attempt at a provider took and whether it failed; it folds them into the
//! standings that order candidates (`lowest_latency`) and hold failing providers down.

use std::sync::Arc;

use actix::prelude::*;

use crate::clock::now_ms;
use crate::dataplane::ai::health::{Observation, ProviderHealth};

pub struct ProviderMonitor {
    health: Arc<ProviderHealth>,
}

impl ProviderMonitor {
    pub fn new(health: Arc<ProviderHealth>) -> Self {
        Self { health }
    }
}

impl Actor for ProviderMonitor {
    type Context = Context<Self>;
}

impl Handler<Observation> for ProviderMonitor {
    type Result = ();

    fn handle(&mut self, observation: Observation, _: &mut Context<Self>) {
        self.health.observe(&observation, now_ms());
    }
}
