//! `/v1/admin-tokens`: managed admin credentials with a role (`admin`, `operator`,
//! `auditor`). The token is shown once, in the answer that created it; the cluster keeps
//! its SHA-256. Revoking keeps the record (the audit log names it) and stops the token.

use actix_web::{web, HttpResponse};
use cluster::admin_token::{AdminRole, AdminTokenRecord};
use cluster::{secret, Command, Response};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, rfc3339};
use super::{expect_outcome, path_id, read_state, AdminContext, Consistency};

/// Managed admin tokens start with this, so they are recognisable in a secret scanner.
const TOKEN_PREFIX: &str = "cfat_";

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleBody {
    Admin,
    Operator,
    Auditor,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    role: RoleBody,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// A token as the API shows it: never the token itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenView {
    id: String,
    name: String,
    role: &'static str,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<&AdminTokenRecord> for TokenView {
    fn from(record: &AdminTokenRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            role: record.role.as_str(),
            prefix: record.prefix.clone(),
            created_at: rfc3339(record.created_at_ms),
            revoked_at: record.revoked_at_ms.map(rfc3339),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedView {
    token: String,
    #[serde(flatten)]
    view: TokenView,
}

/// `POST /v1/admin-tokens`: the only answer that shows the token.
#[utoipa::path(
    post,
    path = "/v1/admin-tokens",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The token, shown this once", body = CreatedView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn create(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    body: AdminJson<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    cluster::validate::name(&request.name).map_err(|p| ApiError::Validation(vec![p]))?;
    let mut rng = rand::thread_rng();
    let mut raw = [0u8; 32];
    rng.fill_bytes(&mut raw);
    let token = format!("{TOKEN_PREFIX}{}", bs58::encode(raw).into_string());
    let created_at_ms = now_ms();
    let record = AdminTokenRecord {
        id: secret::generate_id("tok_", created_at_ms, &mut rng),
        name: request.name,
        role: match request.role {
            RoleBody::Admin => AdminRole::Admin,
            RoleBody::Operator => AdminRole::Operator,
            RoleBody::Auditor => AdminRole::Auditor,
        },
        hash: Sha256::digest(token.as_bytes()).into(),
        prefix: token.chars().take(12).collect(),
        created_at_ms,
        revoked_at_ms: None,
    };
    let written = ctx
        .audited_write(&admin, Command::CreateAdminToken(Box::new(record)))
        .await?;
    let view = expect_outcome(written.response, |response| match response {
        Response::AdminToken(record) => Some(TokenView::from(&*record)),
        _ => None,
    })?;
    Ok(HttpResponse::Created().json(CreatedView { token, view }))
}

/// `GET /v1/admin-tokens`.
#[utoipa::path(
    get,
    path = "/v1/admin-tokens",
    params(ListQuery),
    responses(
        (status = 200, description = "Every admin token, without secrets", body = crate::admin::openapi::AdminTokenList),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let tokens = read_state(&ctx, query.consistency, |state| {
        state
            .admin_tokens()
            .values()
            .map(TokenView::from)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "admin_tokens": tokens })))
}

/// `DELETE /v1/admin-tokens/{id}`: revokes the token on every node as it applies.
#[utoipa::path(
    delete,
    path = "/v1/admin-tokens/{id}",
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The token, revoked", body = TokenView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn revoke(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let written = ctx
        .audited_write(&admin, Command::RevokeAdminToken { id, now_ms: now_ms() })
        .await?;
    let view = expect_outcome(written.response, |response| match response {
        Response::AdminToken(record) => Some(TokenView::from(&*record)),
        _ => None,
    })?;
    Ok(HttpResponse::Ok().json(view))
}
