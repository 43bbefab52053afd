//! Forwarding one request to a route's upstream: target choice, retries on another target,
//! header rewriting, and streaming of both bodies.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::SendRequestError;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::auth::X_API_KEY;
use super::error::ProxyError;
use super::read_model::KeyAuth;
use super::route_table::CompiledRoute;
use super::upstream::{choose, Target};

/// Bodies up to this size are read before forwarding, so a failed attempt can be retried
/// on another target. Larger bodies stream through and get one attempt.
pub const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

/// Responses up to this size are read whole before they are answered.
const SMALL_RESPONSE_BYTES: u64 = 16 * 1024;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_KEY_ID: HeaderName = HeaderName::from_static("x-credentialflow-key-id");
const X_TENANT: HeaderName = HeaderName::from_static("x-credentialflow-tenant");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Returns whether `name` is listed in the message's `Connection` header.
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).any(|value| {
        value
            .to_str()
            .map(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
            })
            .unwrap_or(false)
    })
}

/// What this request's body is, decided before the first attempt.
enum RequestBody {
    Empty,
    /// Read in full; every attempt sends a copy.
    Replayable(Bytes),
    /// Streamed once, with its declared length if it had one.
    Streamed(web::Payload, Option<u64>),
}

async fn take_body(req: &HttpRequest, mut payload: web::Payload) -> Result<RequestBody, ProxyError> {
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let length = match req.headers().get(header::CONTENT_LENGTH) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ProxyError::BadRequestBody)?,
        ),
        None => None,
    };
    match (chunked, length) {
        (false, None | Some(0)) => Ok(RequestBody::Empty),
        (false, Some(length)) if length <= REPLAYABLE_BODY_BYTES => {
            let mut buffer = BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| ProxyError::BadRequestBody)?;
                if (buffer.len() + chunk.len()) as u64 > length {
                    return Err(ProxyError::BadRequestBody);
                }
                buffer.extend_from_slice(&chunk);
            }
            Ok(RequestBody::Replayable(buffer.freeze()))
        }
        (_, length) => Ok(RequestBody::Streamed(payload, length.filter(|_| !chunked))),
    }
}

/// Returns whether repeating the request cannot change the outcome (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Builds the request for one attempt on `target`.
fn upstream_request(
    client: &awc::Client,
    req: &HttpRequest,
    route: &CompiledRoute,
    target: &Target,
    key: Option<&KeyAuth>,
    request_id: &HeaderValue,
) -> awc::ClientRequest {
    let path = route.upstream_path(req.path());
    let mut uri = String::with_capacity(target.origin.len() + target.base_path.len() + path.len() + 64);
    uri.push_str(&target.origin);
    uri.push_str(&target.base_path);
    uri.push_str(path);
    if !req.query_string().is_empty() {
        uri.push('?');
        uri.push_str(req.query_string());
    }
    let mut upstream = client.request(req.method().clone(), uri).timeout(route.timeout);
    let headers = upstream.headers_mut();
    let incoming = req.headers();
    let strip_credentials = key.is_some();
    for (name, value) in incoming {
        let owned_by_gateway = matches!(
            name.as_str(),
            "host"
                | "content-length"
                | "expect"
                | "x-request-id"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-credentialflow-key-id"
                | "x-credentialflow-tenant"
        );
        let credential = strip_credentials && (name == header::AUTHORIZATION || name.as_str() == X_API_KEY);
        if owned_by_gateway || credential || is_hop_by_hop(name) || named_by_connection(incoming, name) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
    let client_ip = req
        .peer_addr()
        .map(|addr| addr.ip().to_string())
        .unwrap_or_default();
    let forwarded_for = match incoming.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.is_empty() => format!("{earlier}, {client_ip}"),
        _ => client_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = incoming.get(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(key) = key {
        if let Ok(value) = HeaderValue::from_str(&key.key_id) {
            headers.insert(X_KEY_ID, value);
        }
        if let Some(Ok(value)) = key.tenant.as_deref().map(HeaderValue::from_str) {
            headers.insert(X_TENANT, value);
        }
    }
    for (name, value) in &route.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Ok(host) = HeaderValue::from_str(&target.authority) {
        headers.insert(header::HOST, host);
    }
    upstream
}

/// The upstream's answer, streamed back with connection-level headers removed.
async fn relay(
    mut response: awc::ClientResponse,
    request_id: &HeaderValue,
    head_only: bool,
    timeout: Duration,
) -> Result<HttpResponse, ProxyError> {
    let status = response.status();
    let mut builder = HttpResponse::build(status);
    let upstream_headers = response.headers();
    let mut length = None;
    for (name, value) in upstream_headers {
        if name == header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if is_hop_by_hop(name) || named_by_connection(upstream_headers, name) {
            continue;
        }
        builder.append_header((name.clone(), value.clone()));
    }
    builder.insert_header((X_REQUEST_ID, request_id.clone()));
    let bodiless = head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    Ok(match length {
        _ if bodiless => builder.finish(),
        // A small body is read whole: one write to the client, and no streaming machinery.
        Some(length) if length <= SMALL_RESPONSE_BYTES => {
            let limit = usize::try_from(length).unwrap_or(0);
            let body = tokio::time::timeout(timeout, response.body().limit(limit))
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?
                .map_err(|_| ProxyError::BadGateway)?;
            builder.body(body)
        }
        Some(length) => builder.body(SizedStream::new(length, response)),
        None => builder.streaming(response),
    })
}

/// Forwards the request, retrying on other targets where that is safe. Returns the
/// response to send, or why there is none.
pub async fn forward(
    client: &awc::Client,
    req: &HttpRequest,
    payload: web::Payload,
    route: &CompiledRoute,
    key: Option<&KeyAuth>,
    request_id: &HeaderValue,
) -> Result<HttpResponse, ProxyError> {
    let mut body = take_body(req, payload).await?;
    let idempotent = is_idempotent(req.method());
    let head_only = req.method() == Method::HEAD;
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    // Stays `NoHealthyUpstream` while every target tried refused the connection: then no
    // target is up, as far as this request can tell.
    let mut last_error = ProxyError::NoHealthyUpstream;
    loop {
        let Some((index, target)) = choose(&route.targets, &tried) else {
            return Err(last_error);
        };
        tried.push(index);
        let attempts_left = tried.len() <= route.retries as usize;
        let request = upstream_request(client, req, route, target, key, request_id);
        let (sent, replayable) = match std::mem::replace(&mut body, RequestBody::Empty) {
            RequestBody::Empty => (request.send().await, true),
            RequestBody::Replayable(bytes) => {
                body = RequestBody::Replayable(bytes.clone());
                (request.send_body(bytes).await, true)
            }
            RequestBody::Streamed(payload, Some(length)) => {
                (request.send_body(SizedStream::new(length, payload)).await, false)
            }
            RequestBody::Streamed(payload, None) => (request.send_stream(payload).await, false),
        };
        match sent {
            Ok(response) if matches!(response.status().as_u16(), 502 | 503) => {
                log_ejection(target, target.health.request_failed());
                if idempotent && replayable && attempts_left {
                    last_error = ProxyError::BadGateway;
                    continue;
                }
                return relay(response, request_id, head_only, route.timeout).await;
            }
            Ok(response) => {
                target.health.request_succeeded();
                return relay(response, request_id, head_only, route.timeout).await;
            }
            Err(SendRequestError::Timeout) => {
                log_ejection(target, target.health.request_failed());
                return Err(ProxyError::UpstreamTimeout);
            }
            Err(error) => {
                log_ejection(target, target.health.request_failed());
                // A refused connection never reached the target: any method may go elsewhere.
                let never_reached = matches!(error, SendRequestError::Connect(_));
                tracing::debug!(target = %target.url, %error, "upstream attempt failed");
                if !never_reached {
                    last_error = ProxyError::BadGateway;
                }
                if replayable && attempts_left && (idempotent || never_reached) {
                    continue;
                }
                return Err(last_error);
            }
        }
    }
}

fn log_ejection(target: &Target, ejected: bool) {
    if ejected {
        tracing::warn!(target = %target.url, "upstream target ejected after consecutive failures");
    }
}

/// Builds the HTTP client one proxy worker uses: pooled keep-alive connections per
/// upstream, no redirects followed, no headers of its own.
pub fn upstream_client() -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(Duration::from_secs(2))
        .limit(0)
        // Below common upstream idle timeouts (5 s for actix-web, 60 s for nginx), so the
        // pool rarely hands out a connection the upstream is closing.
        .conn_keep_alive(Duration::from_secs(4))
        .conn_lifetime(Duration::from_secs(300));
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .disable_timeout()
        .finish()
}
