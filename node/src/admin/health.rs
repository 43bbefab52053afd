//! `/healthz` and `/readyz`: unauthenticated probes for load balancers and orchestrators.

use actix_web::{web, HttpResponse};

use ::cluster::StalePolicy;

use super::AdminContext;

/// Entries a replica may trail its own log by and still count as caught up.
const READY_MAX_LAG: u64 = 100;

/// `GET /healthz`: the process is alive and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, description = "Process alive", body = crate::admin::openapi::Health),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    ),
    security(())
)]
pub async fn healthz(ctx: web::Data<AdminContext>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok", "node_id": ctx.cluster.id() }))
}

/// `GET /readyz`: a member of a cluster with a known leader, caught up, and (unless the
/// cluster fails open) not stale, so a load balancer stops sending traffic that the proxy
/// would refuse with `stale_replica`.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = crate::admin::openapi::Ready),
        (status = 503, description = "Not ready", body = crate::admin::openapi::Ready),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    ),
    security(())
)]
pub async fn readyz(ctx: web::Data<AdminContext>) -> HttpResponse {
    let view = ctx.cluster.view();
    let contact = ctx.cluster.leader_contact();
    let fail_open = ctx.cluster.shared().read().state.settings().stale_policy == StalePolicy::FailOpen;
    let stale = contact.is_stale(ctx.max_staleness);
    let ready = view.is_ready(READY_MAX_LAG) && (fail_open || !stale);
    let body = serde_json::json!({
        "ready": ready,
        "stale": stale,
        "leader_contact_ms": contact.age().map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
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

/// `GET /metrics`: Prometheus text format. Needs an admin credential (any role); point
/// Prometheus at it with `authorization: {credentials: <auditor token>}`.
pub async fn metrics(_: super::auth::Admin, ctx: web::Data<AdminContext>) -> HttpResponse {
    crate::telemetry::observe(&ctx.cluster.view(), &ctx.read_model.target_health());
    let body = ctx
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
