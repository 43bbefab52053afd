//! The announcer: makes sure the replicated node info lists this node's listeners, so every
//! member can show where the others serve.

use std::time::Duration;

use actix::prelude::*;
use cluster::{Command, NodeInfo, State};

use crate::clock::now_ms;
use crate::cluster_handle::ClusterHandle;

/// How often the announcer checks.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Returns whether the replicated info differs from `mine` (ignoring the timestamp).
pub fn needs_announcement(state: &State, mine: &NodeInfo) -> bool {
    match state.nodes().get(&mine.id) {
        None => true,
        Some(known) => {
            NodeInfo {
                registered_at_ms: mine.registered_at_ms,
                ..known.clone()
            } != *mine
        }
    }
}

/// The actor shell around [`needs_announcement`].
pub struct Announcer {
    cluster: ClusterHandle,
    mine: NodeInfo,
    announcing: bool,
}

impl Announcer {
    pub fn new(cluster: ClusterHandle, mine: NodeInfo) -> Self {
        Self {
            cluster,
            mine,
            announcing: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.announcing || self.cluster.current_leader().is_none() {
            return;
        }
        let view = self.cluster.view();
        if !view.members.iter().any(|m| m.id == self.mine.id) {
            return;
        }
        if !needs_announcement(&self.cluster.shared().read().state, &self.mine) {
            return;
        }
        self.announcing = true;
        let info = NodeInfo {
            registered_at_ms: now_ms(),
            ..self.mine.clone()
        };
        let cluster = self.cluster.clone();
        ctx.spawn(
            async move { cluster.write(Command::RegisterNode(info)).await }
                .into_actor(self)
                .map(|outcome, actor, _| {
                    actor.announcing = false;
                    if let Err(error) = outcome {
                        tracing::debug!(%error, "node announcement failed; will retry");
                    }
                }),
        );
    }
}

impl Actor for Announcer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(CHECK_INTERVAL, |actor, ctx| actor.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use cluster::apply;

    use super::*;

    fn info(admin_addr: &str, at: i64) -> NodeInfo {
        NodeInfo {
            id: 1,
            peer_addr: "p".into(),
            admin_addr: admin_addr.into(),
            proxy_addr: "x".into(),
            version: "v".into(),
            registered_at_ms: at,
        }
    }

    #[test]
    fn announces_until_the_replicated_info_matches() {
        let mut state = State::default();
        assert!(needs_announcement(&state, &info("a", 0)));
        apply(&mut state, &Command::RegisterNode(info("a", 5)));
        assert!(!needs_announcement(&state, &info("a", 0)));
        assert!(needs_announcement(&state, &info("b", 0)));
    }
}
