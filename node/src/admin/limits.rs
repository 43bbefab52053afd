//! Limits: `PATCH /v1/keys/{id}` (name, scopes, limits), `/v1/tenants/{id}` (limits that
//! cover every key of a tenant), and `GET /v1/keys/{id}/limits`, what each limit's current
//! window has consumed cluster-wide.

use actix_web::{web, HttpResponse};
use cluster::command::KeyUpdate;
use cluster::validate::{self, FieldError};
use cluster::{Command, Limit, MeterId, Response, State, Subject, Tenant, Unit};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{
    now_ms, present_or_null, rfc3339, BudgetBody, KeyView, LimitBody, LimitsView, TokenLimitBody,
};
use super::{expect_outcome, path_id, read_state, AdminContext, Consistency};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKeyRequest {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    limits: Option<Vec<LimitBody>>,
    /// `null` removes the token limit.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<TokenLimitBody>, nullable)]
    token_limit: Option<Option<TokenLimitBody>>,
    /// `null` removes the budget.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<BudgetBody>, nullable)]
    budget: Option<Option<BudgetBody>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTenantRequest {
    /// Request limits; at least one of `limits`, `token_limit` and `budget` is needed.
    limits: Option<Vec<LimitBody>>,
    token_limit: Option<TokenLimitBody>,
    budget: Option<BudgetBody>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// Converts and checks the limits of each unit the API was given (request limits, a token
/// limit, a budget), collecting problems into `problems`. Returns the limits and the units
/// they replace.
pub(crate) fn parse_limits(
    requests: Option<&[LimitBody]>,
    token_limit: Option<Option<&TokenLimitBody>>,
    budget: Option<Option<&BudgetBody>>,
    problems: &mut Vec<FieldError>,
) -> (Vec<Limit>, Vec<Unit>) {
    let mut limits = Vec::new();
    let mut units = Vec::new();
    let mut take = |unit: Unit, parsed: Result<Vec<Limit>, FieldError>| {
        units.push(unit);
        match parsed.and_then(|parsed| validate::limits(&parsed).map(|()| parsed)) {
            Ok(parsed) => limits.extend(parsed),
            Err(problem) => problems.push(problem),
        }
    };
    if let Some(bodies) = requests {
        take(Unit::Requests, LimitBody::parse_all(bodies));
    }
    if let Some(body) = token_limit {
        take(
            Unit::Tokens,
            body.map(TokenLimitBody::parse).transpose().map(Vec::from_iter),
        );
    }
    if let Some(body) = budget {
        take(
            Unit::MicroUsd,
            body.map(BudgetBody::parse).transpose().map(Vec::from_iter),
        );
    }
    (limits, units)
}

/// `PATCH /v1/keys/{id}`: changes the fields present in the body. New limits apply to the
/// current window: what was already admitted in it still counts.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    request_body = PatchKeyRequest,
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The key after the change", body = KeyView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn patch_key(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    body: AdminJson<PatchKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let request = body.0;
    let mut problems = Vec::new();
    if let Err(problem) = request.name.as_deref().map_or(Ok(()), validate::name) {
        problems.push(problem);
    }
    if let Err(problem) = request.scopes.as_deref().map_or(Ok(()), validate::scopes) {
        problems.push(problem);
    }
    let (limits, limit_units) = parse_limits(
        request.limits.as_deref(),
        request.token_limit.as_ref().map(Option::as_ref),
        request.budget.as_ref().map(Option::as_ref),
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let now = now_ms();
    let command = Command::UpdateKey(Box::new(KeyUpdate {
        id,
        name: request.name,
        scopes: request.scopes,
        limits: (!limit_units.is_empty()).then_some(limits),
        limit_units,
        now_ms: now,
    }));
    let written = ctx.audited_write(&admin, command).await?;
    let view = expect_outcome(written.response, |response| match response {
        Response::Key(record) => Some(KeyView::new(&record, now)),
        _ => None,
    })?;
    Ok(HttpResponse::Ok().json(view))
}

/// A tenant as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantView {
    id: String,
    #[serde(flatten)]
    limits: LimitsView,
    created_at: String,
    updated_at: String,
}

/// A tenant with its limits' current windows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantDetail {
    #[serde(flatten)]
    tenant: TenantView,
    windows: Vec<LimitView>,
}

impl From<&Tenant> for TenantView {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.clone(),
            limits: LimitsView::of(&tenant.limits),
            created_at: rfc3339(tenant.created_at_ms),
            updated_at: rfc3339(tenant.updated_at_ms),
        }
    }
}

/// `PUT /v1/tenants/{id}`: sets the limits shared by every key whose tenant is `id`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{id}",
    request_body = PutTenantRequest,
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn put_tenant(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    body: AdminJson<PutTenantRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let mut problems = Vec::new();
    let body = body.0;
    if body.limits.is_none() && body.token_limit.is_none() && body.budget.is_none() {
        problems.push(FieldError::new(
            "limits",
            "a tenant needs limits, a token_limit or a budget",
        ));
    }
    let (limits, _) = parse_limits(
        Some(body.limits.as_deref().unwrap_or_default()),
        Some(body.token_limit.as_ref()),
        Some(body.budget.as_ref()),
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let command = Command::PutTenant {
        id,
        limits,
        now_ms: now_ms(),
    };
    let written = ctx.audited_write(&admin, command).await?;
    let view = expect_outcome(written.response, |response| match response {
        Response::Tenant(tenant) => Some(TenantView::from(&*tenant)),
        _ => None,
    })?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/tenants`.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    params(ReadQuery),
    responses(
        (status = 200, description = "Every tenant", body = crate::admin::openapi::TenantList),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list_tenants(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenants = read_state(&ctx, query.consistency, |state| {
        state.tenants().values().map(TenantView::from).collect::<Vec<_>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tenants": tenants })))
}

/// `GET /v1/tenants/{id}`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    params(("id" = String, Path, description = "Resource id"), ReadQuery),
    responses(
        (status = 200, description = "The tenant and its windows", body = TenantDetail),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn get_tenant(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let view = read_state(&ctx, query.consistency, |state| {
        state.tenant(&id).map(|tenant| TenantDetail {
            tenant: TenantView::from(tenant),
            windows: limit_views(state, &Subject::Tenant(id.clone()), now_ms()),
        })
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("tenant {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /v1/tenants/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}",
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "Deleted", body = crate::admin::openapi::Deleted),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn delete_tenant(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let command = Command::DeleteTenant { id, now_ms: now_ms() };
    ctx.audited_delete(&admin, command, |response| match response {
        Response::TenantDeleted { id } => Some(id),
        _ => None,
    })
    .await
}

/// One limit's current window, cluster-wide.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LimitView {
    /// `key` or `tenant`: whose requests the limit counts.
    applies_to: &'static str,
    /// What the limit counts: `requests`, `tokens` or `micro_usd` (millionths of a dollar,
    /// for budgets); `consumed` and `remaining` are in this unit.
    unit: &'static str,
    /// The limit: at most this much per window.
    amount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<super::views::CalendarBody>,
    window_start: String,
    window_end: String,
    /// Requests the window's granted capacity may have paid for: what nodes reported
    /// spending plus the slices they hold and have not reported on yet.
    consumed: u64,
    /// Capacity not yet granted to any node.
    remaining: u64,
    /// Of `consumed`, what each node holds in slices whose lease has not ended; a node
    /// drops out of this when its lease does (what it held stays consumed until it
    /// reports, since it may have spent it).
    held_by_node: std::collections::BTreeMap<String, u64>,
    /// How many times nodes asked for capacity (or reported) in this window; each ask is
    /// part of one Raft command, which carries a node's asks for many limits.
    asks: u64,
}

fn limit_views(state: &State, subject: &Subject, now: i64) -> Vec<LimitView> {
    let applies_to = match subject {
        Subject::Key(_) => "key",
        Subject::Tenant(_) => "tenant",
    };
    state
        .limits_of(subject)
        .iter()
        .map(|limit| {
            let window = limit.period.window_at(now);
            let meter = MeterId {
                subject: subject.clone(),
                period: limit.period,
                unit: limit.unit,
            };
            let ledger = state.meter(&meter).and_then(|m| m.current(limit.period, now));
            let consumed = ledger.map_or(0, |l| l.consumed());
            let LimitBody {
                window_secs, period, ..
            } = LimitBody::from(limit);
            LimitView {
                applies_to,
                unit: match limit.unit {
                    Unit::Requests => "requests",
                    Unit::Tokens => "tokens",
                    Unit::MicroUsd => "micro_usd",
                },
                amount: limit.amount,
                window_secs,
                period,
                window_start: rfc3339(window.start_ms),
                window_end: rfc3339(window.end_ms),
                consumed,
                remaining: limit.amount.saturating_sub(consumed),
                asks: ledger.map_or(0, |l| l.asks),
                held_by_node: ledger
                    .map(|l| l.held_by_node(now))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(node, held)| (node.to_string(), held))
                    .collect(),
            }
        })
        .collect()
}

/// `GET /v1/keys/{id}/limits`: the key's own limits and its tenant's.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/limits",
    params(("id" = String, Path, description = "Resource id"), ReadQuery),
    responses(
        (status = 200, description = "Each limit's current window", body = crate::admin::openapi::KeyLimits),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn key_limits(
    _: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let now = now_ms();
    let limits = read_state(&ctx, query.consistency, |state| {
        state.key(&id).map(|key| {
            let mut views = limit_views(state, &Subject::Key(key.id.clone()), now);
            if let Some(tenant) = &key.tenant {
                views.extend(limit_views(state, &Subject::Tenant(tenant.clone()), now));
            }
            views
        })
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("key {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "limits": limits })))
}
