//! `/v1/cluster/settings`: cluster-wide behaviour, replicated.

use actix_web::{web, HttpResponse};
use cluster::{ClusterSettings, Command, Response, StalePolicy};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, rfc3339};
use super::{expect_outcome, AdminContext};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicyBody {
    FailClosed,
    FailOpen,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    stale_policy: StalePolicyBody,
}

fn view(settings: &ClusterSettings) -> serde_json::Value {
    serde_json::json!({
        "stale_policy": settings.stale_policy.as_str(),
        "updated_at": (settings.updated_at_ms > 0).then(|| rfc3339(settings.updated_at_ms)),
    })
}

/// `GET /v1/cluster/settings`.
#[utoipa::path(
    get,
    path = "/v1/cluster/settings",
    responses(
        (status = 200, description = "Cluster settings", body = crate::admin::openapi::Settings),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn show(_: Admin, ctx: web::Data<AdminContext>) -> HttpResponse {
    let settings = ctx.cluster.shared().read().state.settings().clone();
    HttpResponse::Ok().json(view(&settings))
}

/// `PUT /v1/cluster/settings`.
#[utoipa::path(
    put,
    path = "/v1/cluster/settings",
    request_body = SettingsRequest,
    responses(
        (status = 200, description = "Settings after the change", body = crate::admin::openapi::Settings),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn replace(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    body: AdminJson<SettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let settings = ClusterSettings {
        stale_policy: match body.0.stale_policy {
            StalePolicyBody::FailClosed => StalePolicy::FailClosed,
            StalePolicyBody::FailOpen => StalePolicy::FailOpen,
        },
        updated_at_ms: 0,
    };
    let command = Command::SetSettings {
        settings,
        now_ms: now_ms(),
    };
    let written = ctx.audited_write(&admin, command).await?;
    let settings = expect_outcome(written.response, |response| match response {
        Response::Settings(settings) => Some(settings),
        _ => None,
    })?;
    tracing::info!(
        stale_policy = settings.stale_policy.as_str(),
        "cluster settings changed"
    );
    Ok(HttpResponse::Ok().json(view(&settings)))
}
