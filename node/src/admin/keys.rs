//! `/v1/keys`: create, list, get, rotate, revoke, delete.

use actix_web::{web, HttpResponse};
use chrono::DateTime;
use cluster::command::NewKey;
use cluster::validate::{self, FieldError};
use cluster::{secret, Command, KeySecret, Response};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, BudgetBody, KeyView, KeyWithSecret, LimitBody, TokenLimitBody};
use super::{expect_outcome, path_id, read_state, AdminContext, Consistency};

/// Default and largest page sizes of `GET /v1/keys`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    name: String,
    tenant: Option<String>,
    scopes: Option<Vec<String>>,
    limits: Option<Vec<LimitBody>>,
    token_limit: Option<TokenLimitBody>,
    budget: Option<BudgetBody>,
    expires_at: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    grace_secs: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// Validates the request, reporting every problem, and builds the command to propose.
fn new_key_command(request: CreateKeyRequest, now_ms: i64) -> Result<(Command, String), ApiError> {
    let mut problems: Vec<FieldError> = Vec::new();
    let mut check = |result: Result<(), FieldError>| {
        if let Err(problem) = result {
            problems.push(problem);
        }
    };
    check(validate::name(&request.name));
    if let Some(tenant) = &request.tenant {
        check(validate::id("tenant", tenant));
    }
    let scopes = request.scopes.unwrap_or_else(|| vec!["*".to_owned()]);
    check(validate::scopes(&scopes));
    let mut limit_problems = Vec::new();
    let (limits, _) = super::limits::parse_limits(
        request.limits.as_deref(),
        Some(request.token_limit.as_ref()),
        Some(request.budget.as_ref()),
        &mut limit_problems,
    );
    for problem in limit_problems {
        check(Err(problem));
    }
    let expires_at_ms = match request.expires_at.as_deref().map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(at)) => {
            let ms = at.timestamp_millis();
            check(validate::expires_at(ms, now_ms));
            Some(ms)
        }
        Some(Err(_)) => {
            check(Err(FieldError::new(
                "expires_at",
                "must be an RFC 3339 timestamp",
            )));
            None
        }
    };
    let metadata_json = serde_json::Value::Object(request.metadata.unwrap_or_default()).to_string();
    check(validate::metadata(&metadata_json));
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }

    let mut rng = rand::thread_rng();
    let generated = secret::generate(&mut rng);
    let id = secret::generate_id("key_", now_ms, &mut rng);
    let command = Command::CreateKey(Box::new(NewKey {
        id,
        name: request.name,
        tenant: request.tenant,
        scopes,
        limits,
        expires_at_ms,
        metadata_json,
        secret: KeySecret {
            hash: generated.hash,
            prefix: generated.display_prefix,
            created_at_ms: now_ms,
            valid_until_ms: None,
        },
        now_ms,
    }));
    Ok((command, generated.plaintext))
}

/// `POST /v1/keys`: creates a key; the answer is the only time its secret is shown.
#[utoipa::path(
    post,
    path = "/v1/keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key, with its secret shown this once", body = KeyWithSecret),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn create(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    body: AdminJson<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let (command, plaintext) = new_key_command(body.0, now)?;
    let written = ctx.audited_write(&admin, command).await?;
    let view = key_view(written.response, now)?;
    tracing::debug!(key_id = %view.id, log_index = written.log_index, "key created");
    Ok(HttpResponse::Created().json(KeyWithSecret { key: plaintext, view }))
}

/// `GET /v1/keys`: a page of keys in id order.
#[utoipa::path(
    get,
    path = "/v1/keys",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of keys, oldest first: ids begin with their creation time, so a key created while a client pages turns up on a later page", body = crate::admin::openapi::KeyPage),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::InvalidQuery(format!("limit must be 1 to {MAX_PAGE}")));
    }
    if let Some(cursor) = &query.cursor {
        validate::id("cursor", cursor).map_err(|_| ApiError::InvalidQuery("cursor is malformed".into()))?;
    }
    let now = now_ms();
    let (keys, next_cursor) = read_state(&ctx, query.consistency, |state| {
        let (page, more) = state.keys_page(query.cursor.as_deref(), limit);
        let next_cursor = if more {
            page.last().map(|k| k.id.clone())
        } else {
            None
        };
        let keys: Vec<KeyView> = page.into_iter().map(|k| KeyView::new(k, now)).collect();
        (keys, next_cursor)
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys, "next_cursor": next_cursor })))
}

/// `GET /v1/keys/{id}`.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    params(("id" = String, Path, description = "Resource id"), ReadQuery),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn get(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let view = read_state(&ctx, query.consistency, |state| {
        state.key(&id).map(|k| KeyView::new(k, now_ms()))
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("key {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /v1/keys/{id}/rotate`: a new secret; the old one works for `grace_secs` more.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    request_body = RotateRequest,
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The key with its new secret, shown this once", body = KeyWithSecret),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn rotate(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    body: AdminJson<RotateRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    validate::grace_secs(body.0.grace_secs).map_err(|p| ApiError::Validation(vec![p]))?;
    let now = now_ms();
    let generated = secret::generate(&mut rand::thread_rng());
    let command = Command::RotateKey {
        id,
        secret: KeySecret {
            hash: generated.hash,
            prefix: generated.display_prefix,
            created_at_ms: now,
            valid_until_ms: None,
        },
        grace_ms: body.0.grace_secs * 1000,
        now_ms: now,
    };
    let written = ctx.audited_write(&admin, command).await?;
    let view = key_view(written.response, now)?;
    tracing::debug!(key_id = %view.id, "key rotated");
    Ok(HttpResponse::Ok().json(KeyWithSecret {
        key: generated.plaintext,
        view,
    }))
}

/// The answer to a revoke: the key, and which members confirmed applying the revocation.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct KeyRevokedView {
    #[serde(flatten)]
    key: KeyView,
    applied_on: Vec<u64>,
    pending: Vec<u64>,
}

/// `POST /v1/keys/{id}/revoke`: answers once every member in contact with the leader has
/// applied the revocation, naming them in `applied_on` (members that did not confirm in
/// time are `pending`; they refuse every credential once their replica is stale).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    request_body = EmptyRequest,
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "Revoked; which members applied it", body = KeyRevokedView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn revoke(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    _body: AdminJson<EmptyRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let now = now_ms();
    let written = ctx
        .audited_write(&admin, Command::RevokeKey { id, now_ms: now })
        .await?;
    let key = key_view(written.response, now)?;
    let report = ctx
        .cluster
        .confirm_applied(written.log_index, ctx.revoke_wait)
        .await?;
    tracing::info!(key_id = %key.id, applied_on = ?report.applied_on, pending = ?report.pending, "key revoked");
    Ok(HttpResponse::Ok().json(KeyRevokedView {
        key,
        applied_on: report.applied_on,
        pending: report.pending,
    }))
}

/// `DELETE /v1/keys/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "Deleted", body = crate::admin::openapi::Deleted),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn delete(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let command = Command::DeleteKey { id, now_ms: now_ms() };
    ctx.audited_delete(&admin, command, |response| match response {
        Response::KeyDeleted { id } => Some(id),
        _ => None,
    })
    .await
}

fn key_view(response: Response, now: i64) -> Result<KeyView, ApiError> {
    expect_outcome(response, |response| match response {
        Response::Key(record) => Some(KeyView::new(&record, now)),
        _ => None,
    })
}
