//! The openraft type configuration shared by the storage, the network and the node.

use std::io::Cursor;

use crate::command::{Outcome, Proposal};

/// Identifies a cluster member; stable for the life of its data directory.
pub type NodeId = u64;

/// The address book entry openraft keeps in the membership: the member's peer listener.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The Raft type configuration of credentialflow: commands in, responses out,
    /// snapshots as in-memory byte buffers.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of this configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// The membership as stored with a log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
