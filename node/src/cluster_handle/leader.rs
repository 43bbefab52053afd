//! Work only the leader does: proposing forwarded writes, confirming read indexes and
//! changing the membership (one change at a time).

use std::collections::BTreeSet;

use std::time::Duration;

use cluster::peer::protocol::AppliedQuery;
use cluster::peer::{ForwardError, ForwardRequest, ForwardResponse};
use cluster::types::{Node, NodeId};
use cluster::Command;
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ChangeMembers;

use super::{millis, ClusterHandle, COMMIT_TIMEOUT};
use crate::proposer::write_error;

/// Longest time the leader waits for members to confirm they applied an entry.
pub(super) const MAX_APPLIED_WAIT_MS: u64 = 10_000;

impl ClusterHandle {
    /// Performs a forwarded operation on this node, which must be the leader.
    pub async fn perform_as_leader(&self, request: ForwardRequest) -> Result<ForwardResponse, ForwardError> {
        match request {
            ForwardRequest::WriteBatch(commands) => self.propose_batch(commands).await,
            ForwardRequest::AddMember { id, peer_addr, voter } => {
                self.add_as_leader(id, peer_addr, voter).await
            }
            ForwardRequest::RemoveMember { id } => self.remove_as_leader(id).await,
            ForwardRequest::ReadIndex => self.read_index_as_leader().await,
            ForwardRequest::ConfirmApplied { index, wait_ms } => {
                Ok(self.confirm_applied_as_leader(index, wait_ms).await)
            }
        }
    }

    /// Asks every member, in parallel, whether it has applied `index`. A member that does
    /// not confirm within `wait_ms` (unreachable, partitioned, far behind) is pending.
    async fn confirm_applied_as_leader(&self, index: u64, wait_ms: u64) -> ForwardResponse {
        let wait_ms = wait_ms.min(MAX_APPLIED_WAIT_MS);
        let members: Vec<(NodeId, String)> = self
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let checks = members.into_iter().map(|(id, addr)| async move {
            let applied = if id == self.inner.id {
                self.applied_locally(index, Duration::from_millis(wait_ms)).await
            } else {
                match self.inner.peers.client(&addr) {
                    Ok(client) => client
                        .applied(AppliedQuery { index, wait_ms })
                        .await
                        .unwrap_or_else(|error| {
                            tracing::debug!(node = id, %error, "member did not confirm applying");
                            false
                        }),
                    Err(_) => false,
                }
            };
            (id, applied)
        });
        let (applied, pending): (Vec<_>, Vec<_>) = futures::future::join_all(checks)
            .await
            .into_iter()
            .partition(|(_, applied)| *applied);
        ForwardResponse::Applied {
            applied_on: applied.into_iter().map(|(id, _)| id).collect(),
            pending: pending.into_iter().map(|(id, _)| id).collect(),
        }
    }

    async fn propose_batch(&self, commands: Vec<Command>) -> Result<ForwardResponse, ForwardError> {
        let proposals = commands
            .into_iter()
            .map(|command| self.inner.proposer.submit(command));
        let outcomes = futures::future::join_all(proposals).await;
        // Leadership was lost before any of them was proposed: let the sender find the leader.
        if let Some(Err(ForwardError::NotLeader { leader })) = outcomes.first() {
            if outcomes
                .iter()
                .all(|o| matches!(o, Err(ForwardError::NotLeader { .. })))
            {
                return Err(ForwardError::NotLeader { leader: *leader });
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(written) => Ok((written.response, written.log_index)),
                Err(error) => Err(error),
            })
            .collect();
        Ok(ForwardResponse::Batch(outcomes))
    }

    async fn read_index_as_leader(&self) -> Result<ForwardResponse, ForwardError> {
        let read = tokio::time::timeout(COMMIT_TIMEOUT, self.inner.raft.ensure_linearizable())
            .await
            .map_err(|_| ForwardError::Unavailable("leadership could not be confirmed in time".into()))?;
        match read {
            Ok(log_id) => Ok(ForwardResponse::ReadIndex {
                index: log_id.map_or(0, |id| id.index),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(ForwardError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(error) => Err(ForwardError::Unavailable(error.to_string())),
        }
    }

    async fn add_as_leader(
        &self,
        id: NodeId,
        peer_addr: String,
        voter: bool,
    ) -> Result<ForwardResponse, ForwardError> {
        let _serialised = self.inner.membership_lock.lock().await;
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.inner.id) {
            return Err(ForwardError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        let membership = metrics.membership_config.membership().clone();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if let Some(existing) = membership.get_node(&id) {
            if existing.addr != peer_addr {
                return Err(ForwardError::MembershipRefused(format!(
                    "node {id} is already a member at {}",
                    existing.addr
                )));
            }
            if is_voter || !voter {
                let index = metrics.membership_config.log_id().map_or(0, |l| l.index);
                return Ok(ForwardResponse::MembershipChanged { log_index: index });
            }
        } else {
            let added = self
                .inner
                .raft
                .add_learner(id, Node::new(peer_addr), false)
                .await
                .map_err(write_error)?;
            tracing::info!(node = id, log_index = added.log_id.index, "learner added");
        }

        let target = self.metrics().last_log_index.unwrap_or(0);
        let caught_up = self
            .inner
            .raft
            .wait(Some(self.inner.catch_up_timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .is_some_and(|matched| matched.index >= target)
                },
                "new member caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(ForwardError::CatchUpTimeout {
                id,
                waited_ms: millis(self.inner.catch_up_timeout),
            });
        }
        if !voter {
            return Ok(ForwardResponse::MembershipChanged { log_index: target });
        }
        let promoted = self
            .inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        tracing::info!(
            node = id,
            log_index = promoted.log_id.index,
            "member promoted to voter"
        );
        Ok(ForwardResponse::MembershipChanged {
            log_index: promoted.log_id.index,
        })
    }

    async fn remove_as_leader(&self, id: NodeId) -> Result<ForwardResponse, ForwardError> {
        let _serialised = self.inner.membership_lock.lock().await;
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.inner.id) {
            return Err(ForwardError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ForwardError::MembershipRefused(
                    "cannot remove the last voter".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.get_node(&id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(ForwardError::NotMember { id });
        };
        let changed = self
            .inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        tracing::info!(node = id, log_index = changed.log_id.index, "member removed");
        Ok(ForwardResponse::MembershipChanged {
            log_index: changed.log_id.index,
        })
    }
}
