//! `/v1/cluster`: the cluster view and membership changes.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::AdminContext;
use crate::cluster_handle::{ClusterError, ClusterView};
use cluster::activity::AuditRecord;
use cluster::Command;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MemberBody {
    id: u64,
    peer_addr: String,
    voter: bool,
    admin_addr: Option<String>,
    proxy_addr: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterBody {
    node_id: u64,
    leader_id: Option<u64>,
    term: u64,
    state: String,
    last_applied: Option<u64>,
    last_log_index: Option<u64>,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
    members: Vec<MemberBody>,
}

fn body(view: ClusterView, ctx: &AdminContext) -> ClusterBody {
    let applied = ctx.cluster.shared().read();
    let nodes = applied.state.nodes();
    let members = view
        .members
        .into_iter()
        .map(|m| {
            let info = nodes.get(&m.id);
            MemberBody {
                id: m.id,
                peer_addr: m.peer_addr,
                voter: m.voter,
                admin_addr: info.map(|i| i.admin_addr.clone()),
                proxy_addr: info.map(|i| i.proxy_addr.clone()),
            }
        })
        .collect();
    ClusterBody {
        node_id: view.node_id,
        leader_id: view.leader_id,
        term: view.term,
        state: format!("{:?}", view.state).to_lowercase(),
        last_applied: view.last_applied,
        last_log_index: view.last_log_index,
        snapshot_index: view.snapshot_index,
        purged_index: view.purged_index,
        members,
    }
}

/// `GET /v1/cluster`: this node's view.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    responses(
        (status = 200, description = "This node's view of the cluster", body = ClusterBody),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn show(_: Admin, ctx: web::Data<AdminContext>) -> HttpResponse {
    let view = ctx.cluster.view();
    HttpResponse::Ok().json(body(view, &ctx))
}

fn default_voter() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    id: u64,
    peer_addr: String,
    #[serde(default = "default_voter")]
    voter: bool,
}

/// `POST /v1/cluster/members`: adds a learner, waits for it to catch up, promotes it.
#[utoipa::path(
    post,
    path = "/v1/cluster/members",
    request_body = AddMemberRequest,
    responses(
        (status = 200, description = "Member added", body = crate::admin::openapi::MemberAdded),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn add_member(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    request: AdminJson<AddMemberRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.0;
    let mut problems = Vec::new();
    if request.id == 0 {
        problems.push(cluster::validate::FieldError::new("id", "must be at least 1"));
    }
    if crate::config::parse_initial_cluster(&format!("1={}", request.peer_addr)).is_err()
        || request.peer_addr.contains([',', '=', '/', ' '])
    {
        problems.push(cluster::validate::FieldError::new(
            "peer_addr",
            "must be host:port",
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let added = ctx
        .cluster
        .add_member(request.id, request.peer_addr.clone(), request.voter)
        .await;
    record_membership_change(&ctx, &admin, "add_member", request.id, &added).await;
    let log_index = added?;
    tracing::info!(node = request.id, voter = request.voter, "member added");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": request.id,
        "peer_addr": request.peer_addr,
        "voter": request.voter,
        "log_index": log_index,
    })))
}

/// `DELETE /v1/cluster/members/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/cluster/members/{id}",
    params(("id" = u64, Path, description = "Node id")),
    responses(
        (status = 200, description = "Member removed", body = crate::admin::openapi::MemberRemoved),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn remove_member(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = id.into_inner();
    let id: u64 = raw
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::InvalidId(raw.chars().take(40).collect()))?;
    let removed = ctx.cluster.remove_member(id).await;
    record_membership_change(&ctx, &admin, "remove_member", id, &removed).await;
    let log_index = removed?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "removed": true, "log_index": log_index })))
}

/// Appends a membership change to the audit log. Membership entries are not commands, so
/// the record is a separate write; if it fails the change stands and a warning is logged.
async fn record_membership_change(
    ctx: &AdminContext,
    admin: &Admin,
    action: &str,
    id: u64,
    outcome: &Result<u64, ClusterError>,
) {
    let outcome = match outcome {
        Ok(_) => "ok".to_owned(),
        Err(error) => ApiError::Cluster(error.clone()).code().to_owned(),
    };
    let record = AuditRecord {
        at_ms: crate::clock::now_ms(),
        actor: admin.actor.clone(),
        action: action.to_owned(),
        target: id.to_string(),
        outcome,
        details: String::new(),
    };
    if let Err(error) = ctx.cluster.write(Command::RecordAudit(Box::new(record))).await {
        tracing::warn!(%error, action, node = id, "membership change not recorded in the audit log");
    }
}
