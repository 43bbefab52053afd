//! The peer listener: Raft RPCs and forwarded admin operations, bincode bodies.
//!
//! Every call runs on the Raft runtime, so a flood on the public listeners cannot delay it.

use actix_web::{web, HttpResponse};
use cluster::peer::protocol::{
    ForwardError, ForwardRequest, CONTENT_TYPE, MAX_BODY_BYTES, PATH_APPEND, PATH_FORWARD, PATH_SNAPSHOT, PATH_VOTE,
};
use cluster::types::TypeConfig;
use cluster::wire;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster_handle::ClusterHandle;
use crate::raft_runtime::RaftRuntime;

/// Registers the peer routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route(PATH_APPEND, web::post().to(append))
        .route(PATH_VOTE, web::post().to(vote))
        .route(PATH_SNAPSHOT, web::post().to(snapshot))
        .route(PATH_FORWARD, web::post().to(forward))
        .default_service(web::to(|| async { HttpResponse::NotFound().body("unknown peer endpoint") }));
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    wire::decode(body).map_err(|e| HttpResponse::BadRequest().body(format!("malformed peer request: {e}")))
}

fn encode<T: Serialize>(value: &T) -> HttpResponse {
    match wire::encode(value) {
        Ok(bytes) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(bytes),
        Err(e) => HttpResponse::InternalServerError().body(format!("cannot encode answer: {e}")),
    }
}

async fn on_runtime<F>(cluster: &ClusterHandle, future: F) -> Result<F::Output, HttpResponse>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    RaftRuntime::run(cluster.runtime(), future)
        .await
        .map_err(|e| HttpResponse::ServiceUnavailable().body(format!("raft runtime unavailable: {e}")))
}

async fn append(cluster: web::Data<ClusterHandle>, body: web::Bytes) -> HttpResponse {
    let request: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let raft = cluster.raft().clone();
    match on_runtime(&cluster, async move { raft.append_entries(request).await }).await {
        Ok(answer) => encode(&answer),
        Err(response) => response,
    }
}

async fn vote(cluster: web::Data<ClusterHandle>, body: web::Bytes) -> HttpResponse {
    let request: VoteRequest<u64> = match decode(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let raft = cluster.raft().clone();
    match on_runtime(&cluster, async move { raft.vote(request).await }).await {
        Ok(answer) => encode(&answer),
        Err(response) => response,
    }
}

async fn snapshot(cluster: web::Data<ClusterHandle>, body: web::Bytes) -> HttpResponse {
    let request: InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let raft = cluster.raft().clone();
    match on_runtime(&cluster, async move { raft.install_snapshot(request).await }).await {
        Ok(answer) => encode(&answer),
        Err(response) => response,
    }
}

async fn forward(cluster: web::Data<ClusterHandle>, body: web::Bytes) -> HttpResponse {
    let request: ForwardRequest = match decode(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let handle = cluster.get_ref().clone();
    let answer = on_runtime(&cluster, async move {
        if handle.metrics().current_leader != Some(handle.id()) {
            return Err(ForwardError::NotLeader {
                leader: handle.metrics().current_leader,
            });
        }
        handle.perform_as_leader(request).await
    })
    .await;
    match answer {
        Ok(answer) => encode(&answer),
        Err(response) => response,
    }
}
