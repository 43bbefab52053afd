//! The cluster admin API on the admin listener: JSON under `/v1/`, bearer-token protected,
//! plus the unauthenticated health probes.

mod activity;
mod admin_tokens;
mod auth;
mod body;
mod cluster;
mod error;
mod health;
mod keys;
mod limits;
pub mod openapi;
mod providers;
mod revocations;
mod routes;
mod settings;
mod views;

use std::time::Duration;

use ::cluster::command::Audited;
use ::cluster::Command;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use auth::Admin;
pub use auth::{AdminTokenDigest, AuthFailures, DEFAULT_MAX_FAILURES};
pub use error::ApiError;

use crate::cluster_handle::{ClusterHandle, Written};

/// What admin handlers share.
pub struct AdminContext {
    pub cluster: ClusterHandle,
    /// How long a revoke waits for members to confirm they applied it.
    pub revoke_wait: Duration,
    /// How long without a leader before this node's replica is stale.
    pub max_staleness: Duration,
    /// Renders `/metrics`; `None` when the recorder could not be installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Seals upstream credentials and HMAC secrets on their way into the state.
    pub master_key: Option<std::sync::Arc<crate::master_key::MasterKey>>,
    /// For the upstream health gauges.
    pub read_model: std::sync::Arc<crate::dataplane::read_model::ReadModel>,
}

impl AdminContext {
    /// Proposes an admin write, recorded in the audit log under the caller's name in the
    /// same log entry.
    async fn audited_write(&self, admin: &Admin, command: Command) -> Result<Written, ApiError> {
        let audited = Audited {
            actor: admin.actor.clone(),
            at_ms: crate::clock::now_ms(),
            command,
        };
        Ok(self.cluster.write(Command::Audited(Box::new(audited))).await?)
    }

    /// Proposes an audited delete and answers `{"id", "deleted": true}` with the id that
    /// `deleted` finds in the outcome.
    async fn audited_delete(
        &self,
        admin: &Admin,
        command: Command,
        deleted: fn(::cluster::Response) -> Option<String>,
    ) -> Result<HttpResponse, ApiError> {
        let kind = command.kind();
        let written = self.audited_write(admin, command).await?;
        let id = expect_outcome(written.response, deleted)?;
        tracing::info!(%id, action = kind, "deleted");
        Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "deleted": true })))
    }
}

/// Read consistency of a GET: the local replica (default) or through the leader's read index.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    #[default]
    Local,
    Linearizable,
}

/// Checks a path id (key or route) before it reaches a lookup or a command.
fn path_id(id: String) -> Result<String, ApiError> {
    ::cluster::validate::id("id", &id).map_err(|_| ApiError::InvalidId(id.chars().take(80).collect()))?;
    Ok(id)
}

/// Takes the outcome an admin write expects from `apply`: a rejection becomes its API
/// error, anything else unexpected an internal one.
fn expect_outcome<T>(
    response: ::cluster::Response,
    expected: impl FnOnce(::cluster::Response) -> Option<T>,
) -> Result<T, ApiError> {
    match response {
        ::cluster::Response::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
        other => expected(other).ok_or_else(|| ApiError::Internal("unexpected apply outcome".into())),
    }
}

/// Reads the local replica with `read`, after waiting for the leader's read index when the
/// caller asked for a linearizable read. The state is locked only while `read` runs.
async fn read_state<T>(
    ctx: &AdminContext,
    consistency: Consistency,
    read: impl FnOnce(&::cluster::State) -> T,
) -> Result<T, ApiError> {
    if consistency == Consistency::Linearizable {
        ctx.cluster.linearizable_barrier().await?;
    }
    let applied = ctx.cluster.shared().read();
    Ok(read(&applied.state))
}

/// Registers every admin route on `config`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|error, _| ApiError::InvalidId(error.to_string()).into()),
        )
        .service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/v1/openapi.json").route(web::get().to(openapi::document)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/v1/cluster").route(web::get().to(cluster::show)))
        .service(resource("/v1/cluster/members").route(web::post().to(cluster::add_member)))
        .service(resource("/v1/cluster/members/{id}").route(web::delete().to(cluster::remove_member)))
        .service(
            resource("/v1/keys")
                .route(web::post().to(keys::create))
                .route(web::get().to(keys::list)),
        )
        .service(
            resource("/v1/keys/{id}")
                .route(web::get().to(keys::get))
                .route(web::patch().to(limits::patch_key))
                .route(web::delete().to(keys::delete)),
        )
        .service(resource("/v1/keys/{id}/rotate").route(web::post().to(keys::rotate)))
        .service(resource("/v1/keys/{id}/revoke").route(web::post().to(keys::revoke)))
        .service(resource("/v1/keys/{id}/usage").route(web::get().to(activity::usage)))
        .service(resource("/v1/keys/{id}/limits").route(web::get().to(limits::key_limits)))
        .service(resource("/v1/tenants").route(web::get().to(limits::list_tenants)))
        .service(resource("/v1/tenants/{id}/usage").route(web::get().to(activity::tenant_usage)))
        .service(
            resource("/v1/tenants/{id}")
                .route(web::get().to(limits::get_tenant))
                .route(web::put().to(limits::put_tenant))
                .route(web::delete().to(limits::delete_tenant)),
        )
        .service(resource("/v1/audit").route(web::get().to(activity::audit)))
        .service(
            resource("/v1/admin-tokens")
                .route(web::post().to(admin_tokens::create))
                .route(web::get().to(admin_tokens::list)),
        )
        .service(resource("/v1/admin-tokens/{id}").route(web::delete().to(admin_tokens::revoke)))
        .service(
            resource("/v1/revocations")
                .route(web::post().to(revocations::revoke))
                .route(web::get().to(revocations::list)),
        )
        .service(
            resource("/v1/cluster/settings")
                .route(web::get().to(settings::show))
                .route(web::put().to(settings::replace)),
        )
        .service(resource("/v1/routes").route(web::get().to(routes::list)))
        .service(resource("/v1/providers").route(web::get().to(providers::list)))
        .service(
            resource("/v1/providers/{id}")
                .route(web::get().to(providers::get))
                .route(web::put().to(providers::put))
                .route(web::delete().to(providers::delete)),
        )
        .service(resource("/v1/providers/{id}/usage").route(web::get().to(activity::provider_usage)))
        .service(
            resource("/v1/routes/{id}")
                .route(web::get().to(routes::get))
                .route(web::put().to(routes::put))
                .route(web::delete().to(routes::delete)),
        )
        .default_service(web::to(not_found));
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such endpoint: {}",
        req.path().chars().take(200).collect::<String>()
    )))
}
