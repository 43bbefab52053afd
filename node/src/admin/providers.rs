//! `/v1/providers`: model providers of the AI gateway. The API key is sealed with the
//! cluster master key before it is proposed and never returned: reads show
//! `api_key_set` and its last four characters. A `PUT` with a new key rotates it on every
//! node as the write applies.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use cluster::provider::{validate_provider, Price, Provider, ProviderKind};
use cluster::validate::FieldError;
use cluster::{Command, Response};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, rfc3339};
use super::{expect_outcome, path_id, read_state, AdminContext, Consistency};

/// Largest price accepted, in US dollars per million tokens.
const MAX_PRICE_USD: f64 = 1_000_000.0;

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KindBody {
    Openai,
    Anthropic,
    OpenaiCompatible,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceBody {
    /// US dollars per million input tokens.
    input_per_mtok: f64,
    /// US dollars per million output tokens.
    output_per_mtok: f64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutProviderRequest {
    kind: KindBody,
    base_url: String,
    /// Write-only.
    api_key: String,
    headers: Option<BTreeMap<String, String>>,
    models: Option<Vec<String>>,
    prices: Option<BTreeMap<String, PriceBody>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// A provider as the API shows it: never its key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProviderView {
    id: String,
    kind: &'static str,
    base_url: String,
    api_key_set: bool,
    /// The key's last four characters.
    api_key_last4: String,
    headers: BTreeMap<String, String>,
    models: Vec<String>,
    prices: BTreeMap<String, PriceBody>,
    created_at: String,
    updated_at: String,
}

impl From<&Provider> for ProviderView {
    fn from(provider: &Provider) -> Self {
        let usd = |micro: u64| micro as f64 / 1_000_000.0;
        Self {
            id: provider.id.clone(),
            kind: provider.kind.as_str(),
            base_url: provider.base_url.clone(),
            api_key_set: true,
            api_key_last4: provider.api_key_last4.clone(),
            headers: provider.headers.iter().cloned().collect(),
            models: provider.models.clone(),
            prices: provider
                .prices
                .iter()
                .map(|(model, price)| {
                    let body = PriceBody {
                        input_per_mtok: usd(price.input_micro_usd_per_mtok),
                        output_per_mtok: usd(price.output_micro_usd_per_mtok),
                    };
                    (model.clone(), body)
                })
                .collect(),
            created_at: rfc3339(provider.created_at_ms),
            updated_at: rfc3339(provider.updated_at_ms),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ProviderList {
    providers: Vec<ProviderView>,
}

/// Builds the provider, sealing its key, and reports every problem.
fn provider_from(id: String, request: PutProviderRequest, ctx: &AdminContext) -> Result<Provider, ApiError> {
    let mut problems = Vec::new();
    let master_key = ctx.master_key.as_deref();
    if master_key.is_none() {
        problems.push(FieldError::new(
            "api_key",
            "provider keys need the cluster master key (--master-key-file)",
        ));
    }
    if request.api_key.trim().is_empty() || request.api_key.len() > 4096 {
        problems.push(FieldError::new("api_key", "must be 1 to 4096 characters"));
    }
    let mut prices = BTreeMap::new();
    for (model, price) in request.prices.unwrap_or_default() {
        let valid = |usd: f64| usd.is_finite() && (0.0..=MAX_PRICE_USD).contains(&usd);
        if !valid(price.input_per_mtok) || !valid(price.output_per_mtok) {
            problems.push(FieldError::new(
                format!("prices.{model}"),
                format!("prices must be 0 to {MAX_PRICE_USD} USD per million tokens"),
            ));
            continue;
        }
        let micro = |usd: f64| (usd * 1_000_000.0).round() as u64;
        prices.insert(
            model,
            Price {
                input_micro_usd_per_mtok: micro(price.input_per_mtok),
                output_micro_usd_per_mtok: micro(price.output_per_mtok),
            },
        );
    }
    let sealed = master_key.and_then(|key| {
        key.seal(request.api_key.as_bytes(), &Provider::key_place(&id))
            .ok()
    });
    let Some(api_key) = sealed else {
        return Err(ApiError::Validation(problems));
    };
    let now = now_ms();
    let last4: String = {
        let chars: Vec<char> = request.api_key.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    };
    let provider = Provider {
        id,
        kind: match request.kind {
            KindBody::Openai => ProviderKind::OpenAi,
            KindBody::Anthropic => ProviderKind::Anthropic,
            KindBody::OpenaiCompatible => ProviderKind::OpenAiCompatible,
        },
        base_url: request.base_url.trim_end_matches('/').to_owned(),
        api_key,
        api_key_last4: if request.api_key.chars().count() >= 12 {
            last4
        } else {
            String::new()
        },
        headers: request.headers.unwrap_or_default().into_iter().collect(),
        models: request.models.unwrap_or_default(),
        prices,
        created_at_ms: now,
        updated_at_ms: now,
    };
    problems.extend(validate_provider(&provider));
    if problems.is_empty() {
        Ok(provider)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// `PUT /v1/providers/{id}`: creates or replaces a provider (a new `api_key` rotates it).
#[utoipa::path(
    put,
    path = "/v1/providers/{id}",
    request_body = PutProviderRequest,
    params(("id" = String, Path, description = "Provider id")),
    responses(
        (status = 200, description = "The provider, without its key", body = ProviderView),
        (status = "default", description = "An error", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn put(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    body: AdminJson<PutProviderRequest>,
) -> Result<HttpResponse, ApiError> {
    let provider = provider_from(path_id(id.into_inner())?, body.0, &ctx)?;
    let written = ctx
        .audited_write(&admin, Command::PutProvider(Box::new(provider)))
        .await?;
    let view = expect_outcome(written.response, |response| match response {
        Response::Provider(provider) => Some(ProviderView::from(&*provider)),
        _ => None,
    })?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/providers`.
#[utoipa::path(
    get,
    path = "/v1/providers",
    params(ReadQuery),
    responses(
        (status = 200, description = "Every provider, without keys", body = ProviderList),
        (status = "default", description = "An error", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let providers = read_state(&ctx, query.consistency, |state| {
        state
            .providers()
            .values()
            .map(ProviderView::from)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(ProviderList { providers }))
}

/// `GET /v1/providers/{id}`.
#[utoipa::path(
    get,
    path = "/v1/providers/{id}",
    params(("id" = String, Path, description = "Provider id"), ReadQuery),
    responses(
        (status = 200, description = "The provider, without its key", body = ProviderView),
        (status = "default", description = "An error", body = crate::admin::openapi::ErrorBody)
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
        state.providers().get(&id).map(ProviderView::from)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("provider {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /v1/providers/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/providers/{id}",
    params(("id" = String, Path, description = "Provider id")),
    responses(
        (status = 200, description = "Deleted", body = crate::admin::openapi::Deleted),
        (status = "default", description = "An error", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn delete(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(id.into_inner())?;
    let command = Command::DeleteProvider { id, now_ms: now_ms() };
    ctx.audited_delete(&admin, command, |response| match response {
        Response::ProviderDeleted { id } => Some(id),
        _ => None,
    })
    .await
}
