//! The data plane on the proxy listener: every request is matched to a route,
//! authenticated and authorised from the local replica, and forwarded to a healthy target.
//!
//! - [`read_model`]: the lock-free view of keys, routes and settings, swapped on apply;
//! - [`path`]: the one spelling of a path that is matched and forwarded;
//! - [`route_table`]: host, longest prefix, method;
//! - [`ai`]: AI routes: the OpenAI API served by vaulted providers, with fallback;
//! - [`auth`]: the API key and its life cycle;
//! - [`jwt`]: JSON Web Tokens on `auth: jwt` routes, with per-node JWKS caches;
//! - [`upstream`]: target health and the choice of a target;
//! - [`request_id`]: the id a request's answer, upstream request and logs share;
//! - [`incoming`]: what is read of a client's request, apart from the server that parsed it;
//! - [`forward`]: one request to the upstream, with retries and streaming;
//! - [`deadline`]: a connection's one timer, moved without re-arming;
//! - [`http1`]: the listener's own HTTP/1.1 front for the common request, before actix;
//! - [`idle`]: the idle timeout of a streamed response body;
//! - [`limiter`]: cluster-wide rate limits and quotas spent from locally held slices;
//! - [`usage`]: per-key request counts between usage reports;
//! - [`error`]: the JSON errors and their stable codes.

pub mod ai;
pub mod auth;
pub mod deadline;
pub mod error;
pub mod forward;
pub mod hop_by_hop;
pub mod http1;
pub mod idle;
pub mod incoming;
pub mod jwt;
pub mod limiter;
pub mod path;
pub mod pii;
pub mod read_model;
pub mod request_id;
pub mod route_table;
pub mod upstream;
pub mod upstream_client;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use cluster::{RouteAuth, StalePolicy};

use crate::clock;
use cluster::peer::LeaderContact;
use error::ProxyError;
use read_model::{KeyAuth, ReadModel, View};
use route_table::{CompiledRoute, NoMatch};

/// What every proxy worker shares.
pub struct ProxyContext {
    pub read_model: Arc<ReadModel>,
    pub contact: Arc<LeaderContact>,
    pub max_staleness: Duration,
    /// The proxy listener speaks TLS: `X-Forwarded-Proto` says `https`.
    pub tls: bool,
    /// Calls model providers for AI routes and tracks how they do.
    pub ai: ai::AiContext,
}

/// Registers the proxy: every path goes through [`handle`].
pub fn routes(config: &mut web::ServiceConfig) {
    config.default_service(web::to(handle));
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<ProxyContext>,
    client: web::Data<upstream_client::UpstreamClient>,
) -> HttpResponse {
    let incoming = incoming::Incoming::of(&req, ctx.tls);
    let started = Started::now(incoming.headers);
    let view = ctx.read_model.load_full();
    let mut admission = Admission::default();
    let outcome: Result<HttpResponse, Refused> = async {
        let (route, path) = route_of(&view, &incoming)?;
        let admitted = admit(&ctx, &view, &incoming, route, path, &started, &mut admission).await?;
        if let Some(ai) = &route.ai {
            let caller = admission.key.as_ref().map(|k| ai::AiCaller {
                usage: k.usage.clone(),
                meters: &k.ai_meters,
                limiter: ctx.read_model.limiter(),
            });
            return ai::serve(&ctx.ai, &req, admitted.rest(), payload, ai, route.timeout, caller)
                .await
                .map_err(Refused::Proxy);
        }
        let body = forward::take_body(req.headers(), payload).await?;
        let outbound = admitted.outbound(&incoming, &admission, &started.request_id);
        let answer = forward::forward(&client, outbound, body, &mut deadline::Deadline::new()).await?;
        Ok(forward::relay(
            answer,
            &started.request_id,
            incoming.is_head(),
            route.timeout,
        ))
    }
    .await;
    finish(outcome, admission, &started)
}

/// What every request starts with: its clock readings and its id. The readings serve the
/// whole admission (freshness, expiry, limits), so the clock is read once for them.
pub struct Started {
    pub at: std::time::Instant,
    pub now_ms: i64,
    pub request_id: request_id::RequestId,
}

impl Started {
    pub fn now(headers: incoming::Headers<'_>) -> Self {
        Self {
            at: std::time::Instant::now(),
            now_ms: clock::now_ms(),
            request_id: request_id::RequestId::of(headers),
        }
    }
}

/// What admission learned about a request, kept for its answer (limit headers, usage,
/// route metrics) whether or not it was admitted.
#[derive(Default)]
pub struct Admission<'v> {
    pub route: Option<&'v CompiledRoute>,
    pub key: Option<Arc<KeyAuth>>,
    pub standing: Option<limiter::Admission>,
}

/// A request admitted to its route.
pub struct Admitted<'v, 'r> {
    pub route: &'v CompiledRoute,
    /// The canonical path.
    pub path: std::borrow::Cow<'r, str>,
    token: Option<(Arc<jwt::Verified>, &'v jwt::JwtVerifier)>,
}

impl<'v> Admitted<'v, '_> {
    /// Whom the gateway vouches for upstream.
    fn caller<'a>(&'a self, admission: &'a Admission<'_>) -> Option<forward::Caller<'a>> {
        match (&admission.key, &self.token) {
            (Some(key), _) => Some(forward::Caller::Key(key)),
            (None, Some((token, verifier))) => Some(forward::Caller::Token { token, verifier }),
            (None, None) => None,
        }
    }

    /// What is forwarded for this admitted request.
    pub fn outbound<'a>(
        &'a self,
        incoming: &'a incoming::Incoming<'a>,
        admission: &'a Admission<'_>,
        request_id: &'a request_id::RequestId,
    ) -> forward::Outbound<'a> {
        forward::Outbound {
            incoming,
            path: &self.path,
            route: self.route,
            caller: self.caller(admission),
            request_id,
        }
    }

    /// The path below the route's prefix.
    fn rest(&self) -> &str {
        if self.route.path_prefix == "/" {
            self.path.as_ref()
        } else {
            self.path
                .strip_prefix(self.route.path_prefix.as_str())
                .unwrap_or_default()
        }
    }
}

/// The request's route in `view` (host, longest prefix, method), with its canonical path.
pub fn route_of<'v, 'r>(
    view: &'v View,
    incoming: &incoming::Incoming<'r>,
) -> Result<(&'v CompiledRoute, std::borrow::Cow<'r, str>), ProxyError> {
    let path = path::canonical(incoming.path)?;
    let route = view
        .routes
        .find(request_host(incoming.headers), &path, incoming.method)
        .map_err(|no_match| match no_match {
            NoMatch::NoRoute => ProxyError::NoRoute,
            NoMatch::MethodNotAllowed => ProxyError::MethodNotAllowed,
        })?;
    Ok((route, path))
}

/// Admits a request to its `route` (from [`route_of`]): checks the replica's freshness, the
/// caller and the caller's limits. What it learns goes into `admission` as it goes, for
/// the answer.
pub async fn admit<'v, 'r>(
    ctx: &ProxyContext,
    view: &'v View,
    incoming: &incoming::Incoming<'r>,
    route: &'v CompiledRoute,
    path: std::borrow::Cow<'r, str>,
    started: &Started,
    admission: &mut Admission<'v>,
) -> Result<Admitted<'v, 'r>, Refused> {
    let now_ms = started.now_ms;
    admission.route = Some(route);
    if route.auth != RouteAuth::None
        && view.stale_policy == StalePolicy::FailClosed
        && ctx.contact.is_stale_at(ctx.max_staleness, started.at)
    {
        return Err(ProxyError::StaleReplica.into());
    }
    let mut token = None;
    match route.auth {
        RouteAuth::None => {}
        RouteAuth::ApiKey => {
            let authenticated = auth::authenticate(view, incoming.headers, now_ms)?;
            let allowed = authenticated.scopes.allow(&route.id);
            admission.key = Some(authenticated);
            if !allowed {
                return Err(ProxyError::Forbidden.into());
            }
        }
        RouteAuth::Jwt => {
            // A route whose settings did not compile refuses every token.
            let verifier = route.jwt.as_deref().ok_or(ProxyError::InvalidToken)?;
            let verified = verifier
                .verify(auth::bearer_token(incoming.headers)?, now_ms)
                .await?;
            if view.revoked_tokens.covers(&verified) {
                return Err(ProxyError::TokenRevoked.into());
            }
            if !verified.allows(&route.id) {
                return Err(ProxyError::Forbidden.into());
            }
            token = Some((verified, verifier));
        }
    }
    if let Some(meters) = admission
        .key
        .as_ref()
        .map(|k| &k.meters)
        .filter(|m| !m.is_empty())
    {
        admission.standing = ctx
            .read_model
            .limiter()
            .admit(meters, now_ms)
            .await
            .map_err(Refused::Limit)?;
    }
    Ok(Admitted { route, path, token })
}

/// The answer as the client gets it: a refusal turned into its JSON error, with the request
/// id, the caller's limit headers, and the request counted for the key and the route.
pub fn finish(
    outcome: Result<HttpResponse, Refused>,
    admission: Admission<'_>,
    started: &Started,
) -> HttpResponse {
    let now_ms = started.now_ms;
    let mut response = outcome.unwrap_or_else(|refused| {
        let mut response = match refused {
            Refused::Proxy(error) => {
                crate::telemetry::refusal(error.code());
                error.error_response()
            }
            Refused::Limit(error) => {
                crate::telemetry::refusal(error.code());
                error.response(now_ms)
            }
        };
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID, started.request_id.header_value());
        response
    });
    if let Some(standing) = &admission.standing {
        limiter::insert_headers(response.headers_mut(), standing, now_ms);
    }
    account(&admission, response.status().as_u16(), started);
    response
}

/// Counts an answer with `status` for the key and the route.
pub fn account(admission: &Admission<'_>, status: u16, started: &Started) {
    if let Some(key) = &admission.key {
        key.usage.record(status, started.now_ms);
    }
    if let Some(route) = admission.route {
        route.metrics.record(status, started.at.elapsed());
    }
}

/// Why the proxy answered itself.
pub enum Refused {
    Proxy(ProxyError),
    Limit(limiter::LimitError),
}

impl From<ProxyError> for Refused {
    fn from(error: ProxyError) -> Self {
        Refused::Proxy(error)
    }
}

/// Returns the request's host without port.
fn request_host(headers: incoming::Headers<'_>) -> Option<&str> {
    let host = headers.get("host")?;
    let name = if host.first() == Some(&b'[') {
        // An IPv6 literal ends at its `]`.
        host.iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end])
    } else {
        host.iter()
            .rposition(|&b| b == b':')
            .map_or(host, |colon| &host[..colon])
    };
    std::str::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test::TestRequest;

    use super::*;
    use incoming::Headers;

    #[test]
    fn hosts_lose_their_port() {
        let req = TestRequest::default()
            .insert_header((header::HOST, "api.example:8080"))
            .to_http_request();
        assert_eq!(request_host(Headers::Map(req.headers())), Some("api.example"));
        let req = TestRequest::default()
            .insert_header((header::HOST, "[::1]:8080"))
            .to_http_request();
        assert_eq!(request_host(Headers::Map(req.headers())), Some("[::1]"));
    }
}
