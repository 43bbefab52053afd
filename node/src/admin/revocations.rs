//! `/v1/revocations`: the replicated list of revoked tokens. A revocation answers like a
//! key revocation: once every member in contact with the leader has applied it.

use actix_web::{web, HttpResponse};
use chrono::DateTime;
use cluster::revocation::{RevokedTokens, TokenRevocation};
use cluster::validate::FieldError;
use cluster::{Command, Response};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, rfc3339};
use super::{expect_outcome, read_state, AdminContext, Consistency};

/// How long an entry is kept when the caller does not say when the tokens expire.
const DEFAULT_KEEP_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    jti: Option<String>,
    sub: Option<String>,
    /// For `sub`: tokens issued before this moment (default: now).
    issued_before: Option<String>,
    /// When the covered tokens expire (their `exp`); default 24 hours from now.
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// An entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RevocationView {
    jti: Option<String>,
    sub: Option<String>,
    issued_before: Option<String>,
    expires_at: String,
    created_at: String,
}

impl From<&TokenRevocation> for RevocationView {
    fn from(entry: &TokenRevocation) -> Self {
        let (jti, sub, issued_before) = match &entry.tokens {
            RevokedTokens::Jti(jti) => (Some(jti.clone()), None, None),
            RevokedTokens::Subject {
                sub,
                issued_before_ms,
            } => (None, Some(sub.clone()), Some(rfc3339(*issued_before_ms))),
        };
        Self {
            jti,
            sub,
            issued_before,
            expires_at: rfc3339(entry.expires_at_ms),
            created_at: rfc3339(entry.created_at_ms),
        }
    }
}

fn timestamp(field: &str, value: Option<&str>, default: i64) -> Result<i64, FieldError> {
    match value {
        None => Ok(default),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|at| at.timestamp_millis())
            .map_err(|_| FieldError::new(field, "must be an RFC 3339 timestamp")),
    }
}

fn entry_from(request: RevokeRequest, now: i64) -> Result<TokenRevocation, ApiError> {
    let mut problems = Vec::new();
    let expires_at_ms = timestamp("expires_at", request.expires_at.as_deref(), now + DEFAULT_KEEP_MS)
        .unwrap_or_else(|p| {
            problems.push(p);
            0
        });
    let tokens = match (request.jti, request.sub) {
        (Some(jti), None) if request.issued_before.is_none() => Some(RevokedTokens::Jti(jti)),
        (None, Some(sub)) => match timestamp("issued_before", request.issued_before.as_deref(), now) {
            Ok(issued_before_ms) => Some(RevokedTokens::Subject {
                sub,
                issued_before_ms,
            }),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
        _ => {
            problems.push(FieldError::new(
                "jti",
                "give either jti, or sub with an optional issued_before",
            ));
            None
        }
    };
    match tokens {
        Some(tokens) if problems.is_empty() => {
            let entry = TokenRevocation {
                tokens,
                expires_at_ms,
                created_at_ms: now,
            };
            cluster::revocation::validate_revocation(&entry, now)
                .map_err(|p| ApiError::Validation(vec![p]))?;
            Ok(entry)
        }
        _ => Err(ApiError::Validation(problems)),
    }
}

/// The answer to a revocation: the entry, and which members confirmed applying it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokensRevokedView {
    #[serde(flatten)]
    entry: RevocationView,
    applied_on: Vec<u64>,
    pending: Vec<u64>,
}

/// `POST /v1/revocations`: revokes a token by `jti`, or a subject's tokens issued before a
/// moment. Answers once every member in contact with the leader has applied it.
#[utoipa::path(
    post,
    path = "/v1/revocations",
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "Revoked; which members applied it", body = TokensRevokedView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn revoke(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    body: AdminJson<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let entry = entry_from(body.0, now)?;
    let written = ctx
        .audited_write(&admin, Command::RevokeTokens(Box::new(entry)))
        .await?;
    let entry = expect_outcome(written.response, |response| match response {
        Response::TokenRevocation(entry) => Some(RevocationView::from(&*entry)),
        _ => None,
    })?;
    let report = ctx
        .cluster
        .confirm_applied(written.log_index, ctx.revoke_wait)
        .await?;
    tracing::info!(applied_on = ?report.applied_on, pending = ?report.pending, "tokens revoked");
    Ok(HttpResponse::Ok().json(TokensRevokedView {
        entry,
        applied_on: report.applied_on,
        pending: report.pending,
    }))
}

/// `GET /v1/revocations`: every entry whose tokens have not all expired.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    params(ListQuery),
    responses(
        (status = 200, description = "Live revocations", body = crate::admin::openapi::RevocationList),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let entries = read_state(&ctx, query.consistency, |state| {
        state
            .token_revocations()
            .values()
            .filter(|entry| entry.expires_at_ms > now)
            .map(RevocationView::from)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revocations": entries })))
}
