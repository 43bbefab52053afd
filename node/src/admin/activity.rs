//! `/v1/keys/{id}/usage` and `/v1/audit`: what keys did and what admins did.

use actix_web::{web, HttpResponse};
use chrono::DateTime;
use cluster::activity::AuditEntry;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiError;
use super::views::rfc3339;
use super::{path_id, read_state, AdminContext, Consistency};

const DEFAULT_AUDIT_PAGE: usize = 100;
const MAX_AUDIT_PAGE: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// `GET /v1/keys/{id}/usage`: request counts summed over every node's reports.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/usage",
    params(("id" = String, Path, description = "Resource id"), UsageQuery),
    responses(
        (status = 200, description = "Request totals", body = crate::admin::openapi::Usage),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn usage(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let usage = read_state(&ctx, query.consistency, |state| {
        state
            .key(&id)
            .map(|_| state.usage(&id).cloned().unwrap_or_default())
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("key {id} does not exist")))?;
    let [c1, c2, c3, c4, c5] = usage.by_class;
    let usd = |micro: u64| micro as f64 / 1_000_000.0;
    let mut all = cluster::activity::ModelUsage::default();
    let models: serde_json::Map<String, serde_json::Value> = usage
        .models
        .iter()
        .map(|(name, model)| {
            all.add(model);
            let view = serde_json::json!({
                "requests": model.requests,
                "prompt_tokens": model.prompt_tokens,
                "completion_tokens": model.completion_tokens,
                "cost_usd": usd(model.cost_micro_usd),
            });
            (name.clone(), view)
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "key_id": id,
        "requests": { "1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5 },
        "total": usage.by_class.iter().sum::<u64>(),
        "prompt_tokens": all.prompt_tokens,
        "completion_tokens": all.completion_tokens,
        "cost_usd": usd(all.cost_micro_usd),
        "models": models,
        "last_used_at": usage.last_used_ms.map(rfc3339),
        "updated_at": (usage.updated_at_ms > 0).then(|| rfc3339(usage.updated_at_ms)),
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Only entries older than this sequence number (the previous page's `next_before`).
    before: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Serialize)]
struct AuditView<'a> {
    seq: u64,
    at: String,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

fn instant(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|at| at.timestamp_millis())
                .map_err(|_| ApiError::InvalidQuery(format!("{field} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

/// `GET /v1/audit`: admin writes, newest first, filtered by any of actor, action, target,
/// outcome and time range, paged with `before`.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit entries, newest first", body = crate::admin::openapi::AuditPage),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn audit(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be 1 to {MAX_AUDIT_PAGE}"
        )));
    }
    let since = instant("since", query.since.as_deref())?;
    let until = instant("until", query.until.as_deref())?;
    let matches = |entry: &AuditEntry| {
        let eq = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        eq(&query.actor, &entry.actor)
            && eq(&query.action, &entry.action)
            && eq(&query.target, &entry.target)
            && eq(&query.outcome, &entry.outcome)
            && since.is_none_or(|s| entry.at_ms >= s)
            && until.is_none_or(|u| entry.at_ms < u)
            && query.before.is_none_or(|b| entry.seq < b)
    };
    let body = read_state(&ctx, query.consistency, |state| {
        let mut found = state.audit().iter().rev().filter(|e| matches(e));
        let page: Vec<AuditView> = found
            .by_ref()
            .take(limit)
            .map(|e| AuditView {
                seq: e.seq,
                at: rfc3339(e.at_ms),
                actor: &e.actor,
                action: &e.action,
                target: &e.target,
                outcome: &e.outcome,
                details: &e.details,
            })
            .collect();
        let more = found.next().is_some();
        let next_before = if more { page.last().map(|e| e.seq) } else { None };
        serde_json::json!({ "entries": page, "next_before": next_before })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
