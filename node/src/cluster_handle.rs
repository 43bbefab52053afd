//! The node's handle on its Raft group: writes (forwarded to the leader when needed),
//! membership changes, linearizable read barriers and the cluster view.
//!
//! - this file: start-up and bootstrap, the cluster view, the write entry point;
//! - [`routing`]: getting operations to the leader from any member;
//! - [`leader`]: what only the leader does (proposing, read index, membership);
//! - [`snapshot_pacer`]: when to snapshot;
//! - [`split_votes`]: a random hold-back after each candidacy, which openraft 0.9 lacks.

mod leader;
mod routing;
mod snapshot_pacer;
mod split_votes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cluster::peer::{ForwardError, ForwardRequest, ForwardResponse, LeaderContact, PeerRegistry};
use cluster::types::{Node, NodeId, Raft};
use cluster::Command;
use openraft::{RaftMetrics, ServerState, SnapshotPolicy};
use storage::{ApplyObserver, SharedState};
use tokio::runtime::Handle;

use crate::config::{Bootstrap, NodeConfig};
pub use crate::proposer::Written;
use crate::proposer::{propose_to_raft, BatchError, Batcher, FORWARDS_IN_FLIGHT, PROPOSALS_IN_FLIGHT};
use crate::raft_runtime::RaftRuntime;

/// How long a client operation may wait for a leader before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long a proposal may take to commit before its outcome is reported unknown.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest snapshot chunk sent per InstallSnapshot RPC.
const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Why a cluster operation failed. Each variant maps to one API error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("no leader is reachable; the cluster is electing one or has lost its majority")]
    NoLeader,
    #[error("the write was sent but its outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
    #[error("node {id} did not catch up within {waited_ms} ms; it stays a learner")]
    CatchUpTimeout { id: NodeId, waited_ms: u64 },
    #[error("node {id} is not a member")]
    NotMember { id: NodeId },
    #[error("the node is shutting down or failed: {0}")]
    Unavailable(String),
}

impl BatchError for ClusterError {
    fn not_sent(reason: &str) -> Self {
        ClusterError::Unavailable(reason.to_owned())
    }

    fn unknown(reason: &str) -> Self {
        ClusterError::OutcomeUnknown(reason.to_owned())
    }
}

impl From<ForwardError> for ClusterError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::NotLeader { .. } => ClusterError::NoLeader,
            ForwardError::MembershipRefused(reason) => ClusterError::MembershipRefused(reason),
            ForwardError::NotMember { id } => ClusterError::NotMember { id },
            ForwardError::OutcomeUnknown(reason) => ClusterError::OutcomeUnknown(reason),
            ForwardError::CatchUpTimeout { id, waited_ms } => ClusterError::CatchUpTimeout { id, waited_ms },
            ForwardError::Unavailable(reason) => ClusterError::Unavailable(reason),
        }
    }
}

/// Why the Raft node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage: {0}")]
    Storage(#[from] storage::StorageOpenError),
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("peer TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// One member as seen by this node.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: NodeId,
    pub peer_addr: String,
    pub voter: bool,
}

/// This node's view of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub state: ServerState,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader: the highest index a majority of voters holds (openraft 0.9 does not
    /// report it; it is derived from the replication progress). `None` elsewhere.
    pub commit_index: Option<u64>,
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// Returns whether this node is a member with a known leader and has applied what it
    /// holds (within `max_lag` entries).
    pub fn is_ready(&self, max_lag: u64) -> bool {
        let member = self.members.iter().any(|m| m.id == self.node_id);
        let applied = self.last_applied.unwrap_or(0);
        let held = self.last_log_index.unwrap_or(0);
        member && self.leader_id.is_some() && applied + max_lag >= held
    }
}

/// Which members confirmed applying an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedReport {
    pub applied_on: Vec<NodeId>,
    pub pending: Vec<NodeId>,
}

/// A cheap, cloneable handle on the running Raft node.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    runtime: Handle,
    peers: PeerRegistry,
    shared: SharedState,
    membership_lock: tokio::sync::Mutex<()>,
    catch_up_timeout: Duration,
    /// Group commit of writes proposed on this node while it leads.
    proposer: Batcher<ForwardError>,
    /// Group forwarding of writes received while another node leads.
    forwarder: Batcher<ClusterError>,
    /// When this node last heard from a leader (the data plane's staleness check).
    contact: Arc<LeaderContact>,
}

impl ClusterHandle {
    /// Opens storage, starts openraft on `runtime` and bootstraps as configured.
    pub async fn start(
        config: &NodeConfig,
        runtime: Handle,
        observer: Arc<dyn ApplyObserver>,
    ) -> Result<Self, StartError> {
        let raft_dir = config.data_dir.join("raft");
        std::fs::create_dir_all(&raft_dir)
            .map_err(|e| StartError::Raft(format!("cannot create {}: {e}", raft_dir.display())))?;
        let (log_store, mut state_machine) = storage::open_as(&raft_dir, config.id)?;
        state_machine.set_observer(observer);
        let shared = state_machine.shared();
        let pacing = state_machine.pacing();
        let raft_config = openraft::Config {
            cluster_name: "credentialflow".to_owned(),
            heartbeat_interval: millis(config.raft.heartbeat_interval),
            election_timeout_min: millis(config.raft.election_timeout_min),
            // openraft 0.9 draws each node's timeout once, and a follower of a live leader
            // waits `election_timeout_max` (its leader lease) on top of it before it stands,
            // so a failover can take three maximum timeouts (lease, timeout, a split vote's
            // retry): 3 s for a 500 ms minimum at twice the minimum, 2.25 s at 1.5 times.
            election_timeout_max: millis(config.raft.election_timeout_min * 3 / 2),
            // `snapshot_pacer` decides, on entries and bytes.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.raft.snapshot_keep_logs,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let contact = Arc::new(LeaderContact::default());
        let peer_tls = config
            .peer_tls
            .as_ref()
            .map(crate::tls::peer_client)
            .transpose()?;
        let peers = PeerRegistry::with_contact(contact.clone(), peer_tls);
        let id = config.id;
        let network = peers.clone();
        let raft = RaftRuntime::run(&runtime, async move {
            Raft::new(id, Arc::new(raft_config), network, log_store, state_machine).await
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let proposer = {
            let raft = raft.clone();
            Batcher::start(&runtime, PROPOSALS_IN_FLIGHT, move |commands| {
                propose_to_raft(raft.clone(), commands, COMMIT_TIMEOUT)
            })
        };
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let forwarder = Batcher::start(&runtime, FORWARDS_IN_FLIGHT, move |commands| {
                routing::forward_batch(weak.clone(), commands)
            });
            Inner {
                id,
                raft,
                runtime: runtime.clone(),
                peers,
                shared,
                membership_lock: tokio::sync::Mutex::new(()),
                catch_up_timeout: config.raft.catch_up_timeout,
                proposer,
                forwarder,
                contact,
            }
        });
        let handle = Self { inner };
        runtime.spawn(track_leader_contact(Arc::downgrade(&handle.inner)));
        runtime.spawn(split_votes::part_split_votes(
            Arc::downgrade(&handle.inner),
            config.raft.election_timeout_min,
        ));
        runtime.spawn(snapshot_pacer::pace_snapshots(
            Arc::downgrade(&handle.inner),
            pacing,
            config.raft.snapshot_threshold,
        ));
        handle.bootstrap(config).await?;
        Ok(handle)
    }

    async fn bootstrap(&self, config: &NodeConfig) -> Result<(), StartError> {
        let members: BTreeMap<NodeId, Node> = match &config.bootstrap {
            Bootstrap::Join => return Ok(()),
            Bootstrap::SingleNode => {
                BTreeMap::from([(config.id, Node::new(config.advertised_peer_addr.clone()))])
            }
            Bootstrap::InitialCluster(members) => members
                .iter()
                .map(|(id, addr)| (*id, Node::new(addr.clone())))
                .collect(),
        };
        let raft = self.inner.raft.clone();
        let outcome = self
            .run(async move {
                if raft.is_initialized().await.map_err(|e| e.to_string())? {
                    return Ok(false);
                }
                raft.initialize(members).await.map_err(|e| e.to_string())?;
                Ok::<bool, String>(true)
            })
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(StartError::Raft)?;
        if outcome {
            tracing::info!("cluster initialised on first start");
        } else {
            tracing::info!("existing cluster state found; rejoining without bootstrap");
        }
        Ok(())
    }

    /// Runs `future` on the Raft runtime.
    async fn run<F>(&self, future: F) -> Result<F::Output, ClusterError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        RaftRuntime::run(&self.inner.runtime, future)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))
    }

    /// Returns this node's id.
    /// Uses new peer TLS material for connections made from now on (SIGHUP).
    pub fn reload_peer_tls(&self, tls: cluster::peer::PeerTls) {
        self.inner.peers.set_tls(tls);
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Returns the applied state for local reads.
    pub fn shared(&self) -> &SharedState {
        &self.inner.shared
    }

    /// Returns the Raft handle, for the peer listener.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Returns the Raft runtime handle, for the peer listener.
    pub fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    /// Returns the current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, Node> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Returns the leader this node knows of, without copying the rest of the metrics.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Returns this node's view of the cluster.
    pub fn view(&self) -> ClusterView {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberView {
                id: *id,
                peer_addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        ClusterView {
            node_id: self.inner.id,
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            state: metrics.state,
            last_applied: metrics.last_applied.map(|id| id.index),
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            commit_index: commit_index(&metrics, &voters),
            members,
        }
    }

    /// Proposes `command` through the leader and returns its applied outcome. Concurrent
    /// writes are batched: into one log entry on the leader, into one peer request on a
    /// follower.
    pub async fn write(&self, command: Command) -> Result<Written, ClusterError> {
        let leading = self.current_leader() == Some(self.inner.id);
        let proposed_here = if leading {
            match self.inner.proposer.submit(command.clone()).await {
                // Leadership moved while the write queued: nothing was proposed, so take the
                // path that finds the leader.
                Err(ForwardError::NotLeader { .. }) => None,
                outcome => Some(outcome.map_err(ClusterError::from)),
            }
        } else {
            None
        };
        match proposed_here {
            Some(written) => written,
            None => {
                let written = self.inner.forwarder.submit(command).await?;
                self.wait_applied_locally(written.log_index).await;
                Ok(written)
            }
        }
    }

    /// Adds a member (learner first, voter once caught up when `voter`).
    pub async fn add_member(&self, id: NodeId, peer_addr: String, voter: bool) -> Result<u64, ClusterError> {
        match self
            .through_leader(ForwardRequest::AddMember { id, peer_addr, voter })
            .await?
        {
            ForwardResponse::MembershipChanged { log_index } => Ok(log_index),
            _ => Err(routing::unexpected_answer()),
        }
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: NodeId) -> Result<u64, ClusterError> {
        let log_index = match self.through_leader(ForwardRequest::RemoveMember { id }).await? {
            ForwardResponse::MembershipChanged { log_index } => log_index,
            _ => return Err(routing::unexpected_answer()),
        };
        if let Err(error) = self.write(Command::ForgetNode { id }).await {
            tracing::warn!(node = id, %error, "member removed but its node info was not cleared");
        }
        Ok(log_index)
    }

    /// Waits until this node has applied everything the leader had committed when the call
    /// was made, so that a following local read is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), ClusterError> {
        let index = match self.through_leader(ForwardRequest::ReadIndex).await? {
            ForwardResponse::ReadIndex { index } => index,
            _ => return Err(routing::unexpected_answer()),
        };
        let raft = self.inner.raft.clone();
        self.run(async move {
            raft.wait(Some(COMMIT_TIMEOUT))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
        })
        .await?
        .map(|_| ())
        .map_err(|e| ClusterError::Unavailable(format!("replica did not catch up: {e}")))
    }

    /// Returns whether this node has applied the log up to `index`, waiting up to `wait`.
    pub async fn applied_locally(&self, index: u64, wait: Duration) -> bool {
        self.inner.shared.applied_index().wait(index, wait).await
    }

    /// Returns which members have applied the log up to `index` (asked by the leader, so
    /// "members in contact with the leader"), and which did not confirm within `wait`.
    pub async fn confirm_applied(&self, index: u64, wait: Duration) -> Result<AppliedReport, ClusterError> {
        let wait_ms = millis(wait);
        match self
            .through_leader(ForwardRequest::ConfirmApplied { index, wait_ms })
            .await?
        {
            ForwardResponse::Applied { applied_on, pending } => Ok(AppliedReport { applied_on, pending }),
            _ => Err(routing::unexpected_answer()),
        }
    }

    /// Returns when this node last heard from a leader.
    pub fn leader_contact(&self) -> &Arc<LeaderContact> {
        &self.inner.contact
    }

    /// Stops Raft; in-flight proposals fail, storage is closed when the last handle drops.
    pub async fn shutdown(&self) {
        let raft = self.inner.raft.clone();
        if let Err(error) = self.run(async move { raft.shutdown().await }).await {
            tracing::warn!(%error, "raft shutdown did not complete cleanly");
        }
    }
}

/// While this node leads, stamps the time of its last quorum acknowledgement; while it
/// follows, promotes the contact its leader offered (on the peer listener) once the state
/// machine has applied that leader's commit index. Ends with the node.
async fn track_leader_contact(inner: Weak<Inner>) {
    let Some(mut changes) = inner.upgrade().map(|inner| inner.raft.metrics()) else {
        return;
    };
    loop {
        // Re-check on every metrics change (becoming leader, a new quorum ack) and at
        // least every 50 ms.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await {
            return; // Raft has stopped.
        }
        let Some(inner) = inner.upgrade() else { return };
        let metrics = changes.borrow_and_update();
        if metrics.state != ServerState::Leader {
            inner
                .contact
                .applied(metrics.last_applied.map_or(0, |id| id.index));
            continue;
        }
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        if voters.len() == 1 && voters.contains(&inner.id) {
            inner.contact.touch(Duration::ZERO);
        } else if let Some(age_ms) = metrics.millis_since_quorum_ack {
            inner.contact.touch(Duration::from_millis(age_ms));
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The index a majority of `voters` has matched, from the leader's replication progress
/// (its own log counts as matched up to its last index).
fn commit_index(metrics: &openraft::RaftMetrics<NodeId, Node>, voters: &BTreeSet<NodeId>) -> Option<u64> {
    let replication = metrics.replication.as_ref()?;
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|voter| {
            if *voter == metrics.id {
                metrics.last_log_index.unwrap_or(0)
            } else {
                replication
                    .get(voter)
                    .and_then(|matched| matched.as_ref().map(|id| id.index))
                    .unwrap_or(0)
            }
        })
        .collect();
    if matched.is_empty() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied()
}
