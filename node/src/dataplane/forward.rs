//! Forwarding one request to a route's upstream: target choice, retries on another target,
//! header rewriting, and streaming of both bodies.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

use super::auth::X_API_KEY;
use super::error::ProxyError;
use super::idle::IdleTimeout;
use super::jwt::{JwtVerifier, Verified};
use super::read_model::KeyAuth;
use super::route_table::CompiledRoute;
use super::upstream::{choose, Target};
use super::upstream_client::{empty, BoxError, UpstreamBody, UpstreamClient};

/// Bodies up to this size are read before forwarding, so a failed attempt can be retried
/// on another target. Larger bodies stream through and get one attempt.
pub const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

/// Responses up to this size are read whole before they are answered.
const SMALL_RESPONSE_BYTES: u64 = 16 * 1024;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Names of the headers the gateway sets upstream, built once at compile time.
mod upstream_names {
    use http1::HeaderName;

    pub const HOST: HeaderName = http1::header::HOST;
    pub const CONTENT_LENGTH: HeaderName = http1::header::CONTENT_LENGTH;
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const KEY_ID: HeaderName = HeaderName::from_static("x-credentialflow-key-id");
    pub const TENANT: HeaderName = HeaderName::from_static("x-credentialflow-tenant");
}
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
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

/// Whom the gateway vouches for to the upstream; its credential is withheld.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Key(&'a KeyAuth),
    Token {
        token: &'a Verified,
        verifier: &'a JwtVerifier,
    },
}

/// Builds the request for one attempt on `target`.
#[allow(clippy::too_many_arguments)]
fn upstream_request(
    req: &HttpRequest,
    path: &str,
    route: &CompiledRoute,
    target: &Target,
    caller: Option<Caller<'_>>,
    request_id: &HeaderValue,
    body: UpstreamBody,
    streamed_length: Option<u64>,
) -> Result<http1::Request<UpstreamBody>, ProxyError> {
    let path = route.upstream_path(path);
    let mut uri = String::with_capacity(target.base_url.len() + path.len() + 64);
    uri.push_str(&target.base_url);
    uri.push_str(path);
    if !req.query_string().is_empty() {
        uri.push('?');
        uri.push_str(req.query_string());
    }
    let method =
        http1::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| ProxyError::BadRequest)?;
    let mut upstream = http1::Request::builder().method(method).uri(uri);
    let headers = upstream.headers_mut().ok_or(ProxyError::BadRequest)?;
    let incoming = req.headers();
    let has_connection = incoming.contains_key(header::CONNECTION);
    let strip_credentials = caller.is_some();
    for (name, value) in incoming {
        let name = name.as_str();
        let owned_by_gateway = matches!(
            name,
            "host"
                | "content-length"
                | "expect"
                | "x-request-id"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-credentialflow-key-id"
                | "x-credentialflow-tenant"
                | "x-credentialflow-subject"
                | "forwarded"
        );
        // On a keyed route the credential never leaves; on a public one, a gateway key a
        // client sends anyway (SDKs attach it to every call) is removed all the same.
        let credential = (name == "authorization" || name == X_API_KEY)
            && (strip_credentials || is_gateway_key(value.as_bytes()));
        let listed = has_connection
            && listed_in_connection(
                incoming.get_all(header::CONNECTION).map(HeaderValue::as_bytes),
                name,
            );
        if owned_by_gateway || credential || is_hop_by_hop(name) || listed {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http1::HeaderName::from_bytes(name.as_bytes()),
            http1::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let set = |headers: &mut http1::HeaderMap, name: http1::HeaderName, value: &[u8]| {
        if let Ok(value) = http1::HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    };
    headers.insert(upstream_names::HOST, target.host_value.clone());
    set(headers, upstream_names::REQUEST_ID, request_id.as_bytes());
    let mut forwarded_for = Vec::with_capacity(64);
    if let Some(earlier) = incoming.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        if !earlier.is_empty() {
            forwarded_for.extend_from_slice(earlier);
            forwarded_for.extend_from_slice(b", ");
        }
    }
    if let Some(peer) = req.peer_addr() {
        write_ip(peer.ip(), &mut forwarded_for);
    }
    set(headers, upstream_names::FORWARDED_FOR, &forwarded_for);
    let proto: &[u8] = if req.app_config().secure() {
        b"https"
    } else {
        b"http"
    };
    set(headers, upstream_names::FORWARDED_PROTO, proto);
    if let Some(host) = incoming.get(header::HOST) {
        set(headers, upstream_names::FORWARDED_HOST, host.as_bytes());
    }
    match caller {
        Some(Caller::Key(key)) => {
            headers.insert(upstream_names::KEY_ID, key.key_id.clone());
            if let Some(tenant) = &key.tenant {
                headers.insert(upstream_names::TENANT, tenant.clone());
            }
        }
        Some(Caller::Token { token, verifier }) => {
            // A client's own copy of a header the route sets from claims never passes,
            // even when this token lacks the claim.
            for name in &verifier.owned_headers {
                headers.remove(name);
            }
            for (name, value) in &token.headers {
                headers.insert(name.clone(), value.clone());
            }
        }
        None => {}
    }
    if let Some(length) = streamed_length {
        set(
            headers,
            upstream_names::CONTENT_LENGTH,
            length.to_string().as_bytes(),
        );
    }
    for (name, value) in &route.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(Ok((name, value))) = &route.upstream_auth {
        headers.insert(name.clone(), value.clone());
    }
    upstream.body(body).map_err(|_| ProxyError::BadRequest)
}

/// Returns whether a credential header value carries a credentialflow key.
fn is_gateway_key(value: &[u8]) -> bool {
    let token = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => value.trim_ascii(),
    };
    token.starts_with(cluster::secret::KEY_PREFIX.as_bytes())
}

/// Returns whether `name` (lower case) is listed in the `Connection` header `values`, that
/// is, declared hop-by-hop by the sender.
fn listed_in_connection<'a>(mut values: impl Iterator<Item = &'a [u8]>, name: &str) -> bool {
    values.any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Appends the textual form of `ip` without going through the formatter for IPv4.
fn write_ip(ip: std::net::IpAddr, out: &mut Vec<u8>) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// Streams the client's body to the upstream with back-pressure: a local task reads the
/// payload (which lives on this worker thread) into a one-slot channel the request body reads.
fn streamed(mut payload: web::Payload) -> UpstreamBody {
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Bytes, BoxError>>(1);
    actix_rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let failed = chunk.is_err();
            let item = chunk.map_err(|e| -> BoxError { Box::new(std::io::Error::other(e.to_string())) });
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    StreamBody::new(receiver.map_ok(Frame::data)).boxed_unsync()
}

fn full(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// The upstream's answer with connection-level headers removed; a small body is read whole
/// (one write to the client), a larger one streams.
async fn relay(
    response: http1::Response<Incoming>,
    request_id: &HeaderValue,
    head_only: bool,
    timeout: Duration,
) -> Result<HttpResponse, ProxyError> {
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16()).map_err(|_| ProxyError::BadGateway)?;
    let mut builder = HttpResponse::build(status);
    let has_connection = parts.headers.contains_key(http1::header::CONNECTION);
    let mut length = None;
    for (name, value) in &parts.headers {
        if name == http1::header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        let name = name.as_str();
        let listed = has_connection
            && listed_in_connection(
                parts
                    .headers
                    .get_all(http1::header::CONNECTION)
                    .iter()
                    .map(|v| v.as_bytes()),
                name,
            );
        if is_hop_by_hop(name) || listed {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder.append_header((name, value));
        }
    }
    builder.insert_header((X_REQUEST_ID, request_id.clone()));
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(builder.finish());
    }
    Ok(match length {
        // A HEAD answer has no body but keeps the length the upstream announced: an empty
        // body of that declared size makes the encoder write the header and nothing else.
        Some(length) if head_only => builder.body(SizedStream::new(
            length,
            futures::stream::empty::<Result<Bytes, std::io::Error>>(),
        )),
        None if head_only => builder.finish(),
        Some(length) if length <= SMALL_RESPONSE_BYTES => {
            let limit = usize::try_from(length).unwrap_or(0);
            let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?
                .map_err(|_| ProxyError::BadGateway)?;
            builder.body(collected.to_bytes())
        }
        Some(length) => builder.body(SizedStream::new(
            length,
            IdleTimeout::new(BodyDataStream::new(body), timeout),
        )),
        None => builder.streaming(IdleTimeout::new(BodyDataStream::new(body), timeout)),
    })
}

/// Forwards the request, retrying on other targets where that is safe. Returns the
/// response to send, or why there is none.
pub async fn forward(
    client: &UpstreamClient,
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    route: &CompiledRoute,
    caller: Option<Caller<'_>>,
    request_id: &HeaderValue,
) -> Result<HttpResponse, ProxyError> {
    if let Some(Err(())) = &route.upstream_auth {
        return Err(ProxyError::UpstreamCredentialUnavailable);
    }
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
        let (upstream_body, streamed_length, replayable) =
            match std::mem::replace(&mut body, RequestBody::Empty) {
                RequestBody::Empty => (empty(), None, true),
                RequestBody::Replayable(bytes) => {
                    body = RequestBody::Replayable(bytes.clone());
                    (full(bytes), None, true)
                }
                RequestBody::Streamed(payload, length) => (streamed(payload), length, false),
            };
        let request = upstream_request(
            req,
            path,
            route,
            target,
            caller,
            request_id,
            upstream_body,
            streamed_length,
        )?;
        match tokio::time::timeout(route.timeout, client.send(request)).await {
            Ok(Ok(response)) if matches!(response.status().as_u16(), 502 | 503) => {
                // Worth another target, but no sign the target is down: passive ejection
                // counts transport failures only, which a client cannot provoke.
                if idempotent && replayable && attempts_left {
                    last_error = ProxyError::BadGateway;
                    continue;
                }
                return relay(response, request_id, head_only, route.timeout).await;
            }
            Ok(Ok(response)) => {
                target.health.request_succeeded();
                return relay(response, request_id, head_only, route.timeout).await;
            }
            Err(_elapsed) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(error)) => {
                log_ejection(target, target.health.request_failed(), request_id);
                // A refused connection never reached the target: any method may go elsewhere.
                let never_reached = error.is_connect();
                tracing::debug!(request_id = ?request_id, target = %target.url, %error, "upstream attempt failed");
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

fn log_ejection(target: &Target, ejected: bool, request_id: &HeaderValue) {
    if ejected {
        tracing::warn!(request_id = ?request_id, target = %target.url, "upstream target ejected after consecutive failures");
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn ip_addresses_are_written_as_the_formatter_would() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.100.9",
            "::1",
            "fe80::1",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            let mut out = Vec::new();
            write_ip(parsed, &mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), parsed.to_string());
        }
    }

    #[test]
    fn gateway_keys_are_recognised_in_either_header_form() {
        assert!(is_gateway_key(b"Bearer cf_abc"));
        assert!(is_gateway_key(b"bearer  cf_abc"));
        assert!(is_gateway_key(b"cf_abc"));
        assert!(!is_gateway_key(b"Bearer eyJhbGciOi"));
        assert!(!is_gateway_key(b"Basic dXNlcg=="));
    }

    #[test]
    fn connection_lists_name_hop_by_hop_headers_in_any_case() {
        let values: [&[u8]; 2] = [b"keep-alive, X-Trace", b"close"];
        assert!(listed_in_connection(values.into_iter(), "x-trace"));
        assert!(listed_in_connection(values.into_iter(), "close"));
        assert!(!listed_in_connection(values.into_iter(), "x-other"));
    }
}
