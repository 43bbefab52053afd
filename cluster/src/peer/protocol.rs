//! Paths and message types of the peer listener.

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::types::NodeId;

/// Raft AppendEntries.
pub const PATH_APPEND: &str = "/raft/append";
/// Raft RequestVote.
pub const PATH_VOTE: &str = "/raft/vote";
/// Raft InstallSnapshot (one chunk per call).
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
/// An admin operation forwarded by a follower to the leader.
pub const PATH_FORWARD: &str = "/cluster/forward";

/// Asks a member whether it has applied the log up to an index (waiting a little).
pub const PATH_APPLIED: &str = "/cluster/applied";

/// Content type of every peer body.
pub const CONTENT_TYPE: &str = "application/x-credentialflow-bincode";

/// Largest peer request body accepted (snapshot chunks stay well below).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An operation only the leader can perform, sent to it by the member that received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose a follower's batch of concurrent writes; each gets its own outcome once
    /// committed and applied.
    WriteBatch(Vec<Command>),
    /// Add a member as a learner, wait for it to catch up, then promote it if `voter`.
    AddMember {
        id: NodeId,
        peer_addr: String,
        voter: bool,
    },
    /// Remove a member (voter or learner).
    RemoveMember { id: NodeId },
    /// Confirm leadership with a quorum and return the index a linearizable read must
    /// wait for.
    ReadIndex,
    /// Find out which members have applied the log up to `index`, waiting up to
    /// `wait_ms` for each one.
    ConfirmApplied { index: u64, wait_ms: u64 },
}

/// A member's answer to "have you applied `index`?", after waiting up to `wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedQuery {
    pub index: u64,
    pub wait_ms: u64,
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// The outcomes of a [`ForwardRequest::WriteBatch`], in order: each command's response
    /// and log index. (Not recursive, so no peer can nest answers.)
    Batch(Vec<Result<(Response, u64), ForwardError>>),
    /// The membership change is complete.
    MembershipChanged { log_index: u64 },
    /// Reads that wait for this index are linearizable.
    ReadIndex { index: u64 },
    /// Which members have applied the index of a [`ForwardRequest::ConfirmApplied`].
    Applied {
        applied_on: Vec<NodeId>,
        pending: Vec<NodeId>,
    },
}

/// Why the leader could not perform a forwarded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader (any more); `leader` is who it believes is.
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    /// The membership change was refused (in progress, would remove the last voter, …).
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
    /// The write was proposed but its fate is unknown (commit timed out, or the leader
    /// stopped): it may or may not be applied, so it must not be retried blindly.
    #[error("the write's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// The node named is not a member.
    #[error("node {id} is not a member")]
    NotMember { id: NodeId },
    /// The new member did not catch up in time; it stays a learner.
    #[error("node {id} did not catch up within {waited_ms} ms")]
    CatchUpTimeout { id: NodeId, waited_ms: u64 },
    /// The node is member of no cluster, or shutting down, or failed internally.
    #[error("unavailable: {0}")]
    Unavailable(String),
}
