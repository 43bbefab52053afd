//! The expiry janitor: on the leader, periodically proposes `ExpireKeys` so that expired
//! keys are recorded as such and rotated-out secrets past their grace are dropped.

use std::time::Duration;

use actix::prelude::*;
use cluster::{Command, KeyStatus, State};

use crate::clock::now_ms;
use crate::cluster_handle::ClusterHandle;

/// Returns whether a sweep at `now_ms` would change anything.
pub fn sweep_due(state: &State, now_ms: i64) -> bool {
    state.keys().any(|key| {
        (key.status == KeyStatus::Active && key.status_at(now_ms) == KeyStatus::Expired)
            || key.secrets.iter().any(|s| !s.is_valid_at(now_ms))
    })
}

/// The actor shell around [`sweep_due`].
pub struct ExpiryJanitor {
    cluster: ClusterHandle,
    interval: Duration,
    sweeping: bool,
}

impl ExpiryJanitor {
    pub fn new(cluster: ClusterHandle, interval: Duration) -> Self {
        Self {
            cluster,
            interval,
            sweeping: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.cluster.metrics().current_leader != Some(self.cluster.id()) {
            return;
        }
        let now = now_ms();
        if !sweep_due(&self.cluster.shared().read().state, now) {
            return;
        }
        self.sweeping = true;
        let cluster = self.cluster.clone();
        ctx.spawn(
            async move { cluster.write(Command::ExpireKeys { now_ms: now }).await }
                .into_actor(self)
                .map(|outcome, actor, _| {
                    actor.sweeping = false;
                    match outcome {
                        Ok(written) => tracing::info!(outcome = ?written.response, "expiry sweep applied"),
                        Err(error) => tracing::warn!(%error, "expiry sweep failed; will retry"),
                    }
                }),
        );
    }
}

impl Actor for ExpiryJanitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |actor, ctx| actor.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use cluster::command::NewKey;
    use cluster::{apply, KeySecret};

    use super::*;

    fn key(id: &str, byte: u8, expires_at_ms: Option<i64>) -> Command {
        Command::CreateKey(Box::new(NewKey {
            id: id.into(),
            name: id.into(),
            tenant: None,
            scopes: vec![],
            limits: Vec::new(),
            expires_at_ms,
            metadata_json: "{}".into(),
            secret: KeySecret {
                hash: [byte; 32],
                prefix: "cf_x".into(),
                created_at_ms: 0,
                valid_until_ms: None,
            },
            now_ms: 0,
        }))
    }

    #[test]
    fn a_sweep_is_due_only_when_it_would_change_something() {
        let mut state = State::default();
        apply(&mut state, &key("key_a", 1, Some(1_000)));
        assert!(!sweep_due(&state, 999));
        assert!(sweep_due(&state, 1_000));
        apply(&mut state, &Command::ExpireKeys { now_ms: 1_000 });
        assert!(!sweep_due(&state, 5_000));
    }
}
