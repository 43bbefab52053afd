//! Getting an operation to the leader from any member: forwarding (batched for writes),
//! retrying while leadership moves, and read-your-writes on the member that forwarded.

use std::sync::Weak;
use std::time::{Duration, Instant};

use cluster::peer::{ForwardError, ForwardRequest, ForwardResponse, PeerError};
use cluster::Command;

use super::{ClusterError, ClusterHandle, Inner, Written, COMMIT_TIMEOUT, LEADER_WAIT};

impl ClusterHandle {
    /// Sends `request` to the leader (itself included), retrying while leadership moves.
    pub(super) async fn through_leader(
        &self,
        request: ForwardRequest,
    ) -> Result<ForwardResponse, ClusterError> {
        let this = self.clone();
        self.run(async move { this.through_leader_on_runtime(request).await })
            .await?
    }

    pub(super) async fn through_leader_on_runtime(
        &self,
        request: ForwardRequest,
    ) -> Result<ForwardResponse, ClusterError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut metrics_changes = self.inner.raft.metrics();
        loop {
            let (leader, leader_addr) = {
                let metrics = metrics_changes.borrow_and_update();
                let leader = metrics.current_leader;
                let addr = leader.and_then(|id| {
                    metrics
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .map(|node| node.addr.clone())
                });
                (leader, addr)
            };
            match (leader, leader_addr) {
                (Some(leader), _) if leader == self.inner.id => {
                    match self.perform_as_leader(request.clone()).await {
                        Err(ForwardError::NotLeader { .. }) => {}
                        outcome => return outcome.map_err(ClusterError::from),
                    }
                }
                (Some(_), Some(addr)) => {
                    let remaining = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(100));
                    let client = self
                        .inner
                        .peers
                        .client(&addr)
                        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
                    let timeout = remaining + self.leader_work_bound(&request);
                    match client.forward(&request, timeout).await {
                        Ok(Err(ForwardError::NotLeader { .. })) => {}
                        Ok(outcome) => return outcome.map_err(ClusterError::from),
                        Err(PeerError::Unreachable { .. }) => {}
                        Err(error)
                            if matches!(
                                request,
                                ForwardRequest::ReadIndex | ForwardRequest::ConfirmApplied { .. }
                            ) =>
                        {
                            tracing::debug!(%error, "read-only request to the leader failed; retrying");
                        }
                        Err(error) => return Err(ClusterError::OutcomeUnknown(error.to_string())),
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NoLeader);
            }
            // Wake on the next metrics change (a new leader), or re-check shortly.
            let changed = tokio::time::timeout(Duration::from_millis(100), metrics_changes.changed()).await;
            if let Ok(Err(_)) = changed {
                return Err(ClusterError::Unavailable("raft has stopped".into()));
            }
        }
    }

    /// Waits (bounded) until this replica has applied `index`, so that a client reading
    /// its own write from the node it wrote through finds it.
    pub(super) async fn wait_applied_locally(&self, index: u64) {
        if !self
            .inner
            .shared
            .applied_index()
            .wait(index, COMMIT_TIMEOUT)
            .await
        {
            tracing::debug!(index, "write committed but not yet applied on this replica");
        }
    }

    /// How long the leader may legitimately work on `request` once it has it.
    fn leader_work_bound(&self, request: &ForwardRequest) -> Duration {
        match request {
            // Catching up a new member can take the whole catch-up timeout, then a
            // membership change is committed.
            ForwardRequest::AddMember { .. } => self.inner.catch_up_timeout + COMMIT_TIMEOUT * 2,
            ForwardRequest::ConfirmApplied { wait_ms, .. } => {
                Duration::from_millis(*wait_ms) + COMMIT_TIMEOUT
            }
            _ => COMMIT_TIMEOUT,
        }
    }
}

/// Forwards a follower's batch of writes to the leader in one peer request.
pub(super) async fn forward_batch(
    inner: Weak<Inner>,
    commands: Vec<Command>,
) -> Vec<Result<Written, ClusterError>> {
    let count = commands.len();
    let Some(inner) = inner.upgrade() else {
        return vec![Err(ClusterError::Unavailable("the node is shutting down".into())); count];
    };
    let handle = ClusterHandle { inner };
    match handle
        .through_leader_on_runtime(ForwardRequest::WriteBatch(commands))
        .await
    {
        Ok(ForwardResponse::Batch(outcomes)) if outcomes.len() == count => outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok((response, log_index)) => Ok(Written { response, log_index }),
                Err(error) => Err(ClusterError::from(error)),
            })
            .collect(),
        // The leader answered, so the writes may have been applied: their fate is unknown.
        Ok(_) => vec![
            Err(ClusterError::OutcomeUnknown(
                "the leader's answer did not match the batch".into()
            ));
            count
        ],
        Err(error) => vec![Err(error); count],
    }
}

/// A peer answered with a message of the wrong kind (a protocol mismatch between versions).
pub(super) fn unexpected_answer() -> ClusterError {
    ClusterError::Unavailable("the leader answered with an unexpected message".into())
}
