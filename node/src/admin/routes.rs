//! `/v1/routes`: the routes the data plane serves.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use cluster::ai::{AiCandidate, AiSettings, AiStrategy, PiiSettings};
use cluster::jwt::{JwtSettings, DEFAULT_LEEWAY_SECS};
use cluster::route::{validate_route, HealthCheck, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS};
use cluster::sealed::UpstreamAuth;
use cluster::validate::FieldError;

use crate::dataplane::jwt::sealed_key_place;
use crate::master_key::MasterKey;
use cluster::{Command, Response, Route, RouteAuth, UpstreamTarget};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::body::AdminJson;
use super::error::ApiError;
use super::views::{now_ms, rfc3339};
use super::{expect_outcome, path_id, read_state, AdminContext, Consistency};

/// Default probe interval of a route's `health_check`.
const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthBody {
    ApiKey,
    Jwt,
    None,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBody {
    url: String,
    weight: Option<u32>,
    priority: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckBody {
    path: String,
    interval_ms: Option<u64>,
}

/// One value or a list of them (`audience` is either in JWT practice).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A static key: PEM text, or a JWK as an object or as JSON text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum KeyBody {
    Text(String),
    Jwk(serde_json::Map<String, serde_json::Value>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtBody {
    issuer: String,
    audience: OneOrMany,
    jwks_url: Option<String>,
    keys: Option<Vec<KeyBody>>,
    algorithms: Option<Vec<String>>,
    leeway_secs: Option<u64>,
    scopes_claim: Option<String>,
    required_claims: Option<Vec<String>>,
    forward_claims: Option<BTreeMap<String, String>>,
}

impl From<JwtBody> for JwtSettings {
    fn from(body: JwtBody) -> Self {
        JwtSettings {
            issuer: body.issuer,
            audience: match body.audience {
                OneOrMany::One(one) => vec![one],
                OneOrMany::Many(many) => many,
            },
            jwks_url: body.jwks_url,
            keys: body
                .keys
                .unwrap_or_default()
                .into_iter()
                .map(|key| match key {
                    KeyBody::Text(text) => text,
                    KeyBody::Jwk(jwk) => serde_json::Value::Object(jwk).to_string(),
                })
                .collect(),
            algorithms: body.algorithms.unwrap_or_default(),
            leeway_secs: body.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS),
            scopes_claim: body.scopes_claim,
            required_claims: body.required_claims.unwrap_or_default(),
            forward_claims: body.forward_claims.unwrap_or_default().into_iter().collect(),
        }
    }
}

/// A credential the route sends upstream; write-only.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthBody {
    header: String,
    secret: String,
}

impl std::fmt::Debug for UpstreamAuthBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAuthBody")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRouteRequest {
    path_prefix: String,
    methods: Option<Vec<String>>,
    host: Option<String>,
    auth: AuthBody,
    strip_prefix: Option<bool>,
    /// `proxy` (default) or `ai`.
    kind: Option<RouteKindBody>,
    #[serde(default)]
    upstreams: Vec<UpstreamBody>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    headers: Option<BTreeMap<String, String>>,
    health_check: Option<HealthCheckBody>,
    jwt: Option<JwtBody>,
    upstream_auth: Option<UpstreamAuthBody>,
    ai: Option<AiBody>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RouteKindBody {
    Proxy,
    Ai,
}

/// How candidates of one model are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StrategyBody {
    Priority,
    Weighted,
    LowestLatency,
    Cheapest,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AiCandidateBody {
    provider: String,
    model: String,
    #[serde(default)]
    priority: u32,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AiBody {
    /// Public model name → the provider models serving it.
    models: BTreeMap<String, Vec<AiCandidateBody>>,
    strategy: Option<StrategyBody>,
    max_tokens_cap: Option<u64>,
    pii: Option<PiiBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PiiBody {
    /// Kinds among email, phone, credit_card, iban, ssn, ip, secret.
    mask: Vec<String>,
    #[serde(default)]
    restore: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// A route as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    id: String,
    path_prefix: String,
    methods: Vec<String>,
    host: Option<String>,
    auth: &'static str,
    strip_prefix: bool,
    upstreams: Vec<UpstreamView>,
    timeout_ms: u64,
    retries: u32,
    headers: BTreeMap<String, String>,
    health_check: Option<HealthCheckView>,
    jwt: Option<JwtView>,
    /// The header only: the secret is write-only.
    upstream_auth: Option<serde_json::Value>,
    kind: &'static str,
    ai: Option<serde_json::Value>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UpstreamView {
    url: String,
    weight: u32,
    priority: u32,
}

/// A route's JWT settings as shown: public keys as stored, HMAC secrets never.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JwtView {
    issuer: String,
    audience: Vec<String>,
    jwks_url: Option<String>,
    keys: Vec<String>,
    algorithms: Vec<String>,
    leeway_secs: u64,
    scopes_claim: Option<String>,
    required_claims: Vec<String>,
    forward_claims: BTreeMap<String, String>,
}

impl JwtView {
    fn new(settings: &JwtSettings) -> Self {
        let shown = |key: &String| {
            let secret = key.starts_with(cluster::sealed::SEALED_TEXT_PREFIX)
                || serde_json::from_str::<serde_json::Value>(key)
                    .ok()
                    .is_some_and(|jwk| jwk["kty"] == "oct");
            if secret {
                "(HMAC secret, not shown)".to_owned()
            } else {
                key.clone()
            }
        };
        Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            jwks_url: settings.jwks_url.clone(),
            keys: settings.keys.iter().map(shown).collect(),
            algorithms: settings
                .accepted_algorithms()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            leeway_secs: settings.leeway_secs,
            scopes_claim: settings.scopes_claim.clone(),
            required_claims: settings.required_claims.clone(),
            forward_claims: settings.forward_claims.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthCheckView {
    path: String,
    interval_ms: u64,
}

impl RouteView {
    fn new(route: &Route) -> Self {
        Self {
            id: route.id.clone(),
            path_prefix: route.path_prefix.clone(),
            methods: route.methods.clone(),
            host: route.host.clone(),
            auth: route.auth.as_str(),
            strip_prefix: route.strip_prefix,
            upstreams: route
                .upstreams
                .iter()
                .map(|u| UpstreamView {
                    url: u.url.clone(),
                    weight: u.weight,
                    priority: u.priority,
                })
                .collect(),
            timeout_ms: route.timeout_ms,
            retries: route.retries,
            headers: route.headers.iter().cloned().collect(),
            health_check: route.health_check.as_ref().map(|h| HealthCheckView {
                path: h.path.clone(),
                interval_ms: h.interval_ms,
            }),
            jwt: route.jwt.as_ref().map(JwtView::new),
            kind: if route.ai.is_some() { "ai" } else { "proxy" },
            ai: route.ai.as_ref().map(|ai| {
                let models: BTreeMap<&str, Vec<AiCandidateBody>> = ai
                    .models
                    .iter()
                    .map(|(name, candidates)| {
                        let shown = candidates
                            .iter()
                            .map(|c| AiCandidateBody {
                                provider: c.provider.clone(),
                                model: c.model.clone(),
                                priority: c.priority,
                                weight: c.weight,
                            })
                            .collect();
                        (name.as_str(), shown)
                    })
                    .collect();
                let pii = ai
                    .pii
                    .as_ref()
                    .map(|pii| serde_json::json!({ "mask": pii.mask, "restore": pii.restore }));
                let strategy = match ai.strategy {
                    AiStrategy::Priority => "priority",
                    AiStrategy::Weighted => "weighted",
                    AiStrategy::LowestLatency => "lowest_latency",
                    AiStrategy::Cheapest => "cheapest",
                };
                serde_json::json!({ "models": models, "max_tokens_cap": ai.max_tokens_cap, "pii": pii, "strategy": strategy })
            }),
            upstream_auth: route
                .upstream_auth
                .as_ref()
                .map(|auth| serde_json::json!({ "header": auth.header, "secret": "(sealed, not shown)" })),
            created_at: rfc3339(route.created_at_ms),
            updated_at: rfc3339(route.updated_at_ms),
        }
    }
}

/// Builds the route from the request, normalising case and sealing its secrets, and
/// reports every problem.
fn route_from(
    id: String,
    request: PutRouteRequest,
    master_key: Option<&MasterKey>,
) -> Result<Route, ApiError> {
    let mut problems = Vec::new();
    let needs_key = || {
        FieldError::new(
            "upstream_auth",
            "secrets need the cluster master key (--master-key-file)",
        )
    };
    let upstream_auth = match (request.upstream_auth, master_key) {
        (None, _) => None,
        (Some(_), None) => {
            problems.push(needs_key());
            None
        }
        (Some(body), Some(key)) => {
            match key.seal(body.secret.as_bytes(), &UpstreamAuth::associated_data(&id)) {
                Ok(secret)
                    if !body.secret.is_empty() && http1::HeaderValue::from_str(&body.secret).is_ok() =>
                {
                    Some(UpstreamAuth {
                        header: body.header.to_ascii_lowercase(),
                        secret,
                    })
                }
                _ => {
                    problems.push(FieldError::new(
                        "upstream_auth.secret",
                        "must be a non-empty header value",
                    ));
                    None
                }
            }
        }
    };
    let mut route = Route {
        id,
        path_prefix: request.path_prefix,
        methods: request
            .methods
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        host: request.host.map(|h| h.to_ascii_lowercase()),
        auth: match request.auth {
            AuthBody::ApiKey => RouteAuth::ApiKey,
            AuthBody::Jwt => RouteAuth::Jwt,
            AuthBody::None => RouteAuth::None,
        },
        jwt: request.jwt.map(JwtSettings::from),
        upstream_auth,
        ai: None,
        strip_prefix: request.strip_prefix.unwrap_or(false),
        upstreams: request
            .upstreams
            .into_iter()
            .map(|u| UpstreamTarget {
                url: u.url,
                weight: u.weight.unwrap_or(1),
                priority: u.priority.unwrap_or(0),
            })
            .collect(),
        timeout_ms: request.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        retries: request.retries.unwrap_or(DEFAULT_RETRIES),
        headers: request.headers.unwrap_or_default().into_iter().collect(),
        health_check: request.health_check.map(|h| HealthCheck {
            path: h.path,
            interval_ms: h.interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS),
        }),
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    match (request.kind.unwrap_or(RouteKindBody::Proxy), request.ai) {
        (RouteKindBody::Ai, Some(ai)) => {
            route.ai = Some(AiSettings {
                strategy: match ai.strategy.unwrap_or(StrategyBody::Priority) {
                    StrategyBody::Priority => AiStrategy::Priority,
                    StrategyBody::Weighted => AiStrategy::Weighted,
                    StrategyBody::LowestLatency => AiStrategy::LowestLatency,
                    StrategyBody::Cheapest => AiStrategy::Cheapest,
                },
                models: ai
                    .models
                    .into_iter()
                    .map(|(name, candidates)| {
                        let candidates = candidates
                            .into_iter()
                            .map(|c| AiCandidate {
                                provider: c.provider,
                                model: c.model,
                                priority: c.priority,
                                weight: c.weight,
                            })
                            .collect();
                        (name, candidates)
                    })
                    .collect(),
                max_tokens_cap: ai.max_tokens_cap,
                pii: ai.pii.map(|pii| PiiSettings {
                    mask: pii.mask,
                    restore: pii.restore,
                }),
            });
        }
        (RouteKindBody::Ai, None) => problems.push(FieldError::new("ai", "kind ai needs ai settings")),
        (RouteKindBody::Proxy, Some(_)) => {
            problems.push(FieldError::new("ai", "only kind ai takes ai settings"))
        }
        (RouteKindBody::Proxy, None) => {}
    }
    problems.extend(validate_route(&route));
    // Keys are parsed here too (apply checks only their shape), so a route never stores a
    // key the data plane cannot use; HMAC secrets are sealed before they leave this node.
    let route_id = route.id.clone();
    for (index, key) in route
        .jwt
        .iter_mut()
        .flat_map(|jwt| jwt.keys.iter_mut())
        .enumerate()
    {
        match crate::dataplane::jwt::keys::parse_static(key) {
            Err(reason) => problems.push(FieldError::new(format!("jwt.keys[{index}]"), reason)),
            Ok(parsed) if parsed.kind == crate::dataplane::jwt::keys::KeyKind::Hmac => match master_key {
                None => problems.push(FieldError::new(
                    format!("jwt.keys[{index}]"),
                    "HMAC secrets need the cluster master key (--master-key-file)",
                )),
                Some(master) => match master.seal_text(key, &sealed_key_place(&route_id, index)) {
                    Ok(sealed) => *key = sealed,
                    Err(error) => {
                        problems.push(FieldError::new(format!("jwt.keys[{index}]"), error.to_string()))
                    }
                },
            },
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(route)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// `PUT /v1/routes/{id}`: creates (201) or replaces (200) a route.
#[utoipa::path(
    put,
    path = "/v1/routes/{id}",
    request_body = PutRouteRequest,
    params(("id" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "Replaced", body = RouteView),
        (status = 201, description = "Created", body = RouteView),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn put(
    admin: Admin,
    ctx: web::Data<AdminContext>,
    id: web::Path<String>,
    body: AdminJson<PutRouteRequest>,
) -> Result<HttpResponse, ApiError> {
    let route = route_from(path_id(id.into_inner())?, body.0, ctx.master_key.as_deref())?;
    let command = Command::PutRoute {
        route: Box::new(route),
        now_ms: now_ms(),
    };
    let written = ctx.audited_write(&admin, command).await?;
    let route = expect_outcome(written.response, |response| match response {
        Response::Route(route) => Some(route),
        _ => None,
    })?;
    let created = route.created_at_ms == route.updated_at_ms;
    tracing::info!(route = %route.id, created, "route stored");
    let mut answer = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer.json(RouteView::new(&route)))
}

/// `GET /v1/routes`: every route, in id order.
#[utoipa::path(
    get,
    path = "/v1/routes",
    params(ReadQuery),
    responses(
        (status = 200, description = "Every route", body = crate::admin::openapi::RouteList),
        (status = "default", description = "An error: 400 bad input, 401/403 credential or role, 404 not found, 409 conflict, 413, 415, 429, 503 no leader", body = crate::admin::openapi::ErrorBody)
    )
)]
pub async fn list(
    _: Admin,
    ctx: web::Data<AdminContext>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let routes: Vec<RouteView> = read_state(&ctx, query.consistency, |state| {
        state.routes().values().map(RouteView::new).collect()
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "routes": routes })))
}

/// `GET /v1/routes/{id}`.
#[utoipa::path(
    get,
    path = "/v1/routes/{id}",
    params(("id" = String, Path, description = "Resource id"), ReadQuery),
    responses(
        (status = 200, description = "The route", body = RouteView),
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
        state.route(&id).map(RouteView::new)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("route {id} does not exist")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /v1/routes/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/routes/{id}",
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
    let command = Command::DeleteRoute { id, now_ms: now_ms() };
    ctx.audited_delete(&admin, command, |response| match response {
        Response::RouteDeleted { id } => Some(id),
        _ => None,
    })
    .await
}
