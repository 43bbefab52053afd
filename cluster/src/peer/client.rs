//! One pooled HTTP client per peer, and the openraft network on top of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::contact::{LeaderContact, QUORUM_ACK_AGE_HEADER};
use super::protocol::{
    AppliedQuery, ForwardError, ForwardRequest, ForwardResponse, CONTENT_TYPE, PATH_APPEND, PATH_APPLIED,
    PATH_FORWARD, PATH_SNAPSHOT, PATH_VOTE,
};
use crate::types::{Node, NodeId, TypeConfig};
use crate::wire::{self, WireError};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle pooled connections are kept this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before retrying a peer that could not be reached.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made (refused, reset, timed out while connecting).
    #[error("peer {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was sent but failed in flight or timed out.
    #[error("request to peer {addr} failed: {source}")]
    Transport {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The peer answered with a non-success status (it could not parse our request).
    #[error("peer {addr} answered HTTP {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    /// A body could not be encoded or decoded.
    #[error("peer body: {0}")]
    Wire(#[from] WireError),
}

/// Mutual TLS towards peers: the cluster CA is the only root trusted, and this node's
/// certificate is its client identity.
#[derive(Clone)]
pub struct PeerTls {
    /// PEM of the cluster CA.
    pub ca_pem: Vec<u8>,
    /// PEM of this node's certificate chain followed by its private key.
    pub identity_pem: Vec<u8>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

/// A client bound to one peer's listener, with its own connection pool.
#[derive(Clone, Debug)]
pub struct PeerClient {
    addr: String,
    scheme: &'static str,
    http: reqwest::Client,
}

impl PeerClient {
    /// Builds a client for the peer listener at `addr` (`host:port`), over mutual TLS when
    /// `tls` is given.
    pub fn new(addr: &str, tls: Option<&PeerTls>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(tls) = tls {
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&tls.ca_pem)?)
                .identity(reqwest::Identity::from_pem(&tls.identity_pem)?)
                .https_only(true);
        }
        Ok(Self {
            addr: addr.to_owned(),
            scheme: if tls.is_some() { "https" } else { "http" },
            http: builder.build()?,
        })
    }

    /// Returns the peer address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` to `path` and decodes the answer.
    pub async fn call<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.call_with_quorum_age(path, request, timeout, None).await
    }

    /// Like [`call`](Self::call), telling the peer how long ago this node (as leader) last
    /// heard from a quorum.
    async fn call_with_quorum_age<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
        quorum_ack_age: Option<Duration>,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = wire::encode(request)?;
        let url = format!("{}://{}{}", self.scheme, self.addr, path);
        let mut builder = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .timeout(timeout)
            .body(body);
        if let Some(age) = quorum_ack_age {
            builder = builder.header(QUORUM_ACK_AGE_HEADER, age.as_millis().to_string());
        }
        let sent = builder.send().await;
        let response = sent.map_err(|source| {
            let addr = self.addr.clone();
            if source.is_connect() {
                PeerError::Unreachable { addr, source }
            } else {
                PeerError::Transport { addr, source }
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| PeerError::Transport {
            addr: self.addr.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(PeerError::Status {
                addr: self.addr.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
            });
        }
        Ok(wire::decode(&bytes)?)
    }

    /// Forwards an admin operation to this peer, which should be the leader.
    pub async fn forward(
        &self,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<Result<ForwardResponse, ForwardError>, PeerError> {
        self.call(PATH_FORWARD, request, timeout).await
    }

    /// Asks this peer whether it has applied the log up to `query.index`.
    pub async fn applied(&self, query: AppliedQuery) -> Result<bool, PeerError> {
        let timeout = Duration::from_millis(query.wait_ms) + CONNECT_TIMEOUT;
        self.call(PATH_APPLIED, &query, timeout).await
    }
}

/// The pooled clients of every peer this node talks to, created on first use.
#[derive(Clone, Debug, Default)]
pub struct PeerRegistry {
    clients: Arc<Mutex<HashMap<String, PeerClient>>>,
    contact: Arc<LeaderContact>,
    tls: Arc<Mutex<Option<PeerTls>>>,
}

impl PeerRegistry {
    /// A registry whose AppendEntries carry the age of `contact`, the node's evidence of a
    /// quorum-backed leader (itself, while it leads), over mutual TLS when `tls` is given.
    pub fn with_contact(contact: Arc<LeaderContact>, tls: Option<PeerTls>) -> Self {
        Self {
            clients: Arc::default(),
            contact,
            tls: Arc::new(Mutex::new(tls)),
        }
    }

    /// Replaces the TLS material (a certificate reload); connections made from now on use
    /// it.
    pub fn set_tls(&self, tls: PeerTls) {
        *self.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tls);
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Returns the client for `addr`, creating it the first time.
    pub fn client(&self, addr: &str) -> Result<PeerClient, reqwest::Error> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let tls = self
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let client = PeerClient::new(addr, tls.as_ref())?;
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }
}

/// The openraft network of one target peer.
pub struct PeerNetwork {
    target: NodeId,
    client: Result<PeerClient, String>,
    contact: Arc<LeaderContact>,
}

impl RaftNetworkFactory<TypeConfig> for PeerRegistry {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        PeerNetwork {
            target,
            client: self.client(&node.addr).map_err(|e| e.to_string()),
            contact: self.contact.clone(),
        }
    }
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

impl PeerNetwork {
    /// Sends one RPC. `entries` is the number of log entries carried, so that a body the
    /// peer refuses as too large (HTTP 413) makes openraft send fewer at a time.
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
        entries: u64,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .client
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone()))))?;
        // Only a leader sends AppendEntries: tell the follower how fresh its quorum is.
        let quorum_ack_age = (path == PATH_APPEND).then(|| self.contact.age()).flatten();
        let answer: Result<Resp, RaftError<NodeId, E>> = client
            .call_with_quorum_age(path, request, option.hard_ttl(), quorum_ack_age)
            .await
            .map_err(|e| match e {
                PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                PeerError::Status { status: 413, .. } if entries > 1 => {
                    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let entries = rpc.entries.len() as u64;
        self.rpc(PATH_APPEND, &rpc, &option, entries).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.rpc(PATH_SNAPSHOT, &rpc, &option, 0).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.rpc(PATH_VOTE, &rpc, &option, 0).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
