//! `/healthz` and `/readyz`: unauthenticated probes for load balancers and orchestrators.

use actix_web::{web, HttpResponse};

use super::AdminContext;

/// Entries a replica may trail its own log by and still count as caught up.
const READY_MAX_LAG: u64 = 100;

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz(ctx: web::Data<AdminContext>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok", "node_id": ctx.cluster.id() }))
}

/// `GET /readyz`: a member of a cluster with a known leader, caught up.
pub async fn readyz(ctx: web::Data<AdminContext>) -> HttpResponse {
    let view = ctx.cluster.view();
    let ready = view.is_ready(READY_MAX_LAG);
    let body = serde_json::json!({
        "ready": ready,
        "node_id": view.node_id,
        "leader_id": view.leader_id,
        "last_applied": view.last_applied,
        "last_log_index": view.last_log_index,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
