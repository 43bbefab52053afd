//! The expiry janitor: on the leader, periodically proposes `ExpireKeys` so that expired
//! keys are recorded as such and rotated-out secrets past their grace are dropped.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cluster::Command;

use crate::clock::now_ms;
use crate::cluster_handle::ClusterHandle;
use crate::dataplane::read_model::ReadModel;

/// Returns whether a sweep at `now_ms` may change anything: whether a key's deadline (an
/// active key's expiry, a rotated-out secret's end of grace) has passed. The read model
/// keeps these in order, so this is one look at the earliest instead of a walk over every
/// key under the state's lock. A deadline gone stale (its key deleted or changed) makes
/// one sweep that changes nothing, and that sweep drops it.
pub fn sweep_due(read_model: &ReadModel, now_ms: i64) -> bool {
    read_model.next_key_deadline().is_some_and(|at| at <= now_ms)
}

/// The actor shell around [`sweep_due`].
pub struct ExpiryJanitor {
    cluster: ClusterHandle,
    read_model: Arc<ReadModel>,
    interval: Duration,
    sweeping: bool,
}

impl ExpiryJanitor {
    pub fn new(cluster: ClusterHandle, read_model: Arc<ReadModel>, interval: Duration) -> Self {
        Self {
            cluster,
            read_model,
            interval,
            sweeping: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.cluster.current_leader() != Some(self.cluster.id()) {
            return;
        }
        let now = now_ms();
        if !sweep_due(&self.read_model, now) {
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
    use cluster::State;

    use super::*;
    use crate::dataplane::read_model::tests::{apply, create, expiring, rotate, T0};

    #[test]
    fn a_sweep_is_due_only_once_a_deadline_has_passed() {
        let model = ReadModel::default();
        let mut state = State::default();
        apply(&model, &mut state, expiring("key_a", 1, T0 + 1_000));
        apply(&model, &mut state, create("key_b", 2));
        assert!(!sweep_due(&model, T0 + 999));
        assert!(sweep_due(&model, T0 + 1_000));
        apply(&model, &mut state, Command::ExpireKeys { now_ms: T0 + 1_000 });
        assert!(!sweep_due(&model, T0 + 5_000));

        // Rotated at T0: the old secret's grace ends at T0 + 6,000.
        apply(&model, &mut state, rotate("key_b", 3, 6_000));
        assert!(!sweep_due(&model, T0 + 5_999));
        assert!(sweep_due(&model, T0 + 6_000));
    }

    #[test]
    fn a_stale_deadline_costs_one_sweep() {
        let model = ReadModel::default();
        let mut state = State::default();
        apply(&model, &mut state, expiring("key_a", 1, T0 + 1_000));
        let delete = Command::DeleteKey {
            id: "key_a".into(),
            now_ms: T0,
        };
        apply(&model, &mut state, delete);
        assert!(sweep_due(&model, T0 + 1_000));
        apply(&model, &mut state, Command::ExpireKeys { now_ms: T0 + 1_000 });
        assert!(!sweep_due(&model, T0 + 1_000));
    }
}
