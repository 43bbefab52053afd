//! `/v1/keys/{id}/usage` and `/v1/audit`: what keys did and what admins did.

use actix_web::{web, HttpResponse};
use chrono::DateTime;
use std::collections::BTreeMap;

use cluster::activity::{AuditEntry, KeyUsage, ModelUsage, STATUS_CLASSES};
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
    let mut view = usage_view(&usage.by_class, usage.models.iter(), &usage.pii_masked);
    view.insert("key_id".into(), id.into());
    view.insert("last_used_at".into(), usage.last_used_ms.map(rfc3339).into());
    view.insert(
        "updated_at".into(),
        (usage.updated_at_ms > 0)
            .then(|| rfc3339(usage.updated_at_ms))
            .into(),
    );
    Ok(HttpResponse::Ok().json(view))
}

/// Request counts by status class, model traffic by `provider/model` with its totals, and
/// masked personal data by kind, as the usage answers show them.
fn usage_view<'a>(
    by_class: &[u64; STATUS_CLASSES],
    models: impl Iterator<Item = (&'a String, &'a ModelUsage)>,
    pii_masked: &BTreeMap<String, u64>,
) -> serde_json::Map<String, serde_json::Value> {
    let [c1, c2, c3, c4, c5] = *by_class;
    let usd = |micro: u64| micro as f64 / 1_000_000.0;
    let mut all = ModelUsage::default();
    let models: serde_json::Map<String, serde_json::Value> = models
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
    let serde_json::Value::Object(view) = serde_json::json!({
        "requests": { "1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5 },
        "total": by_class.iter().sum::<u64>(),
        "prompt_tokens": all.prompt_tokens,
        "completion_tokens": all.completion_tokens,
        "cost_usd": usd(all.cost_micro_usd),
        "models": models,
        "pii_masked": pii_masked,
    }) else {
        return serde_json::Map::new();
    };
    view
}

/// Adds `usage` into the running totals.
fn add_usage(
    by_class: &mut [u64; STATUS_CLASSES],
    models: &mut BTreeMap<String, ModelUsage>,
    pii: &mut BTreeMap<String, u64>,
    usage: &KeyUsage,
    model_filter: impl Fn(&str) -> bool,
) {
    for (total, n) in by_class.iter_mut().zip(usage.by_class) {
        *total = total.saturating_add(n);
    }
    for (name, model) in usage.models.iter().filter(|(name, _)| model_filter(name)) {
        models.entry(name.clone()).or_default().add(model);
    }
    for (kind, n) in &usage.pii_masked {
        let total = pii.entry(kind.clone()).or_default();
        *total = total.saturating_add(*n);
    }
}

/// `GET /v1/tenants/{id}/usage`: the usage of every existing key of the tenant, summed.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/usage",
    params(("id" = String, Path, description = "Resource id"), UsageQuery),
    responses(
        (status = 200, description = "Totals over the tenant's keys", body = crate::admin::openapi::GroupUsage),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn tenant_usage(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let view = read_state(&ctx, query.consistency, |state| {
        let keys: Vec<_> = state
            .keys()
            .filter(|k| k.tenant.as_deref() == Some(id.as_str()))
            .collect();
        if keys.is_empty() && state.tenant(&id).is_none() {
            return None;
        }
        let (mut by_class, mut models, mut pii) = Default::default();
        for key in &keys {
            if let Some(usage) = state.usage(&key.id) {
                add_usage(&mut by_class, &mut models, &mut pii, usage, |_| true);
            }
        }
        let mut view = usage_view(&by_class, models.iter(), &pii);
        view.insert("tenant".into(), id.clone().into());
        view.insert("keys".into(), keys.len().into());
        Some(view)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("tenant {id} has no keys")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/providers/{id}/usage`: the provider's model traffic over every existing key.
#[utoipa::path(
    get,
    path = "/v1/providers/{id}/usage",
    params(("id" = String, Path, description = "Resource id"), UsageQuery),
    responses(
        (status = 200, description = "Totals over every key's traffic to the provider", body = crate::admin::openapi::GroupUsage),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn provider_usage(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let prefix = format!("{id}/");
    let view = read_state(&ctx, query.consistency, |state| {
        state.providers().get(&id)?;
        let mut models: BTreeMap<String, ModelUsage> = BTreeMap::new();
        let mut keys = 0u64;
        for key in state.keys() {
            let Some(usage) = state.usage(&key.id) else {
                continue;
            };
            let mut used = false;
            for (name, model) in usage.models.iter().filter(|(name, _)| name.starts_with(&prefix)) {
                models.entry(name.clone()).or_default().add(model);
                used = true;
            }
            keys += u64::from(used);
        }
        let mut view = usage_view(&[0; STATUS_CLASSES], models.iter(), &BTreeMap::new());
        view.remove("requests");
        view.remove("total");
        view.remove("pii_masked");
        view.insert("provider".into(), id.clone().into());
        view.insert("keys".into(), keys.into());
        Some(view)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("provider {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(view))
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
