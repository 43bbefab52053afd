//! The peer listener: Raft RPCs and forwarded admin operations, bincode bodies.
//!
//! The listener has its own workers, so a flood on the public listeners cannot delay it.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use std::time::Duration;

use cluster::peer::contact::QUORUM_ACK_AGE_HEADER;
use cluster::peer::protocol::{
    AppliedQuery, ForwardError, ForwardRequest, CONTENT_TYPE, MAX_BODY_BYTES, PATH_APPEND, PATH_APPLIED,
    PATH_FORWARD, PATH_SNAPSHOT, PATH_VOTE,
};
use cluster::types::{NodeId, TypeConfig};
use cluster::wire::{self, WireError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster_handle::ClusterHandle;
use crate::raft_runtime::RaftRuntime;

/// Why a peer request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PeerServeError {
    #[error("malformed peer request: {0}")]
    Malformed(WireError),
    #[error("cannot encode the answer: {0}")]
    Encode(WireError),
    #[error("raft runtime unavailable: {0}")]
    Runtime(#[from] tokio::task::JoinError),
}

impl ResponseError for PeerServeError {
    fn status_code(&self) -> StatusCode {
        match self {
            PeerServeError::Malformed(_) => StatusCode::BAD_REQUEST,
            PeerServeError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PeerServeError::Runtime(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Registers the peer routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route(PATH_APPEND, web::post().to(append))
        .route(PATH_VOTE, web::post().to(vote))
        .route(PATH_SNAPSHOT, web::post().to(snapshot))
        .route(PATH_FORWARD, web::post().to(forward))
        .route(PATH_APPLIED, web::post().to(applied))
        .default_service(web::to(|| async {
            HttpResponse::NotFound().body("unknown peer endpoint")
        }));
}

/// Decodes the body, runs `call` and encodes its answer.
///
/// Raft RPCs are awaited right on this listener's own workers: openraft's API only passes
/// messages to its core, which runs on the Raft runtime, and this listener's workers serve
/// nothing else, so data-plane load cannot delay them. Forwarded operations, which drive
/// peer clients and batching, run on the Raft runtime.
async fn serve<Req, Fut>(
    cluster: web::Data<ClusterHandle>,
    body: web::Bytes,
    on_raft_runtime: bool,
    call: impl FnOnce(ClusterHandle, Req) -> Fut,
) -> Result<HttpResponse, PeerServeError>
where
    Req: DeserializeOwned,
    Fut: Future + Send + 'static,
    Fut::Output: Serialize + Send + 'static,
{
    let request: Req = wire::decode(&body).map_err(PeerServeError::Malformed)?;
    let handle = cluster.get_ref().clone();
    let answer = if on_raft_runtime {
        RaftRuntime::run(cluster.runtime(), call(handle, request)).await?
    } else {
        call(handle, request).await
    };
    let bytes = wire::encode(&answer).map_err(PeerServeError::Encode)?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(bytes))
}

async fn append(
    req: HttpRequest,
    cluster: web::Data<ClusterHandle>,
    body: web::Bytes,
) -> Result<HttpResponse, PeerServeError> {
    let quorum_ack_age = req
        .headers()
        .get(QUORUM_ACK_AGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    serve(
        cluster,
        body,
        false,
        move |c, request: AppendEntriesRequest<TypeConfig>| async move {
            let leader_commit = request.leader_commit.map_or(0, |id| id.index);
            let answer = c.raft().append_entries(request).await;
            // Accepted entries come from the current leader, which heard from a quorum
            // `quorum_ack_age` ago; that moment becomes this node's contact once it has
            // applied what that leader had committed.
            if let (Ok(AppendEntriesResponse::Success), Some(age)) = (&answer, quorum_ack_age) {
                c.leader_contact().offer(leader_commit, age);
            }
            answer
        },
    )
    .await
}

async fn vote(cluster: web::Data<ClusterHandle>, body: web::Bytes) -> Result<HttpResponse, PeerServeError> {
    serve(
        cluster,
        body,
        false,
        |c, request: VoteRequest<NodeId>| async move { c.raft().vote(request).await },
    )
    .await
}

async fn snapshot(
    cluster: web::Data<ClusterHandle>,
    body: web::Bytes,
) -> Result<HttpResponse, PeerServeError> {
    serve(cluster, body, false, |c, request: InstallSnapshotRequest<TypeConfig>| async move {
        c.raft().install_snapshot(request).await
    })
    .await
}

async fn forward(
    cluster: web::Data<ClusterHandle>,
    body: web::Bytes,
) -> Result<HttpResponse, PeerServeError> {
    serve(cluster, body, true, |c, request: ForwardRequest| async move {
        let leader = c.current_leader();
        if leader != Some(c.id()) {
            return Err(ForwardError::NotLeader { leader });
        }
        c.perform_as_leader(request).await
    })
    .await
}

async fn applied(
    cluster: web::Data<ClusterHandle>,
    body: web::Bytes,
) -> Result<HttpResponse, PeerServeError> {
    serve(cluster, body, false, |c, query: AppliedQuery| async move {
        let wait = Duration::from_millis(query.wait_ms.min(MAX_APPLIED_WAIT_MS));
        c.applied_locally(query.index, wait).await
    })
    .await
}

/// Longest a member holds an "applied yet?" question before answering no.
const MAX_APPLIED_WAIT_MS: u64 = 10_000;
