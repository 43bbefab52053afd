//! Forwarding one request to a route's upstream: target choice, retries on another target,
//! the request head the upstream sees, and streaming of both bodies.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::HeaderMap;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use smallvec::SmallVec;
use tokio::time::Instant;

use super::auth::X_API_KEY;
use super::deadline::Deadline;
use super::error::ProxyError;
use super::hop_by_hop::HopByHop;
use super::idle::IdleTimeout;
use super::incoming::Incoming;
use super::jwt::{JwtVerifier, Verified};
use super::read_model::KeyAuth;
use super::request_id::{RequestId, X_REQUEST_ID};
use super::route_table::CompiledRoute;
use super::upstream::{choose, Target};
use super::upstream_client::head::{Framing, ResponseHead};
use super::upstream_client::{
    BodyStream, Exchange, ResponseBody, SendError, StreamedBody, UpstreamClient, UpstreamResponse,
};

/// Bodies up to this size are read before forwarding, so a failed attempt can be retried
/// on another target. Larger bodies stream through and get one attempt.
pub const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What this request's body is, decided before the first attempt.
pub enum RequestBody {
    Empty,
    /// Read in full; every attempt sends a copy.
    Replayable(Bytes),
    /// Streamed once, with its declared length if it had one.
    Streamed(web::Payload, Option<u64>),
}

/// Reads a body that fits [`REPLAYABLE_BODY_BYTES`] whole; a larger or chunked one is left
/// to stream.
pub async fn take_body(headers: &HeaderMap, mut payload: web::Payload) -> Result<RequestBody, ProxyError> {
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = match headers.get(header::CONTENT_LENGTH) {
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

/// How the body that follows a request head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Headers the gateway sets upstream, in order; setting a name again replaces its value,
/// as the gateway's later decisions override its earlier ones.
struct GatewayHeaders<'a>(SmallVec<[(&'a str, &'a [u8]); 16]>);

impl<'a> GatewayHeaders<'a> {
    fn set(&mut self, name: &'a str, value: &'a [u8]) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.0.iter().any(|(n, _)| n.as_bytes() == name)
    }
}

/// What is forwarded: everything of the upstream request that depends on this request and
/// route, not on the target.
pub struct Outbound<'a> {
    pub incoming: &'a Incoming<'a>,
    /// The canonical path the route matched.
    pub path: &'a str,
    pub route: &'a CompiledRoute,
    pub caller: Option<Caller<'a>>,
    pub request_id: &'a RequestId,
}

/// Writes the request head for one attempt on `target`, then `body` (a body read ahead):
/// the client's end-to-end headers without its credential, and the gateway's own
/// (`Host`, `X-Request-Id`, `X-Forwarded-*`, the caller's identity, the route's headers).
fn request_head(parts: &Outbound<'_>, target: &Target, framing: BodyFraming, body: &[u8]) -> Vec<u8> {
    let Outbound {
        incoming: request,
        path,
        route,
        caller,
        request_id,
    } = *parts;
    let incoming = request.headers;
    let mut forwarded_for = SmallVec::<[u8; 64]>::new();
    if let Some(earlier) = incoming.get(X_FORWARDED_FOR.as_str()) {
        if !earlier.is_empty() {
            forwarded_for.extend_from_slice(earlier);
            forwarded_for.extend_from_slice(b", ");
        }
    }
    if let Some(peer) = request.peer {
        write_ip(peer, &mut forwarded_for);
    }
    let proto: &[u8] = if request.tls { b"https" } else { b"http" };
    let mut gateway = GatewayHeaders(SmallVec::new());
    gateway.set("host", target.host_value.as_bytes());
    gateway.set("x-request-id", request_id.as_bytes());
    gateway.set("x-forwarded-for", &forwarded_for);
    gateway.set("x-forwarded-proto", proto);
    if let Some(host) = incoming.get("host") {
        gateway.set("x-forwarded-host", host);
    }
    // A client's own copy of a header the route sets from claims never passes, even when
    // this token lacks the claim.
    let mut claim_headers: &[http1::HeaderName] = &[];
    match caller {
        Some(Caller::Key(key)) => {
            gateway.set("x-credentialflow-key-id", key.key_id.as_bytes());
            if let Some(tenant) = &key.tenant {
                gateway.set("x-credentialflow-tenant", tenant.as_bytes());
            }
        }
        Some(Caller::Token { token, verifier }) => {
            claim_headers = &verifier.owned_headers;
            gateway
                .0
                .retain(|(name, _)| !claim_headers.iter().any(|owned| owned.as_str() == *name));
            for (name, value) in &token.headers {
                gateway.set(name.as_str(), value.as_bytes());
            }
        }
        None => {}
    }
    for (name, value) in &route.headers {
        gateway.set(name.as_str(), value.as_bytes());
    }
    if let Some(Ok((name, value))) = &route.upstream_auth {
        gateway.set(name.as_str(), value.as_bytes());
    }

    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.base_path.as_bytes());
    let path = route.upstream_path(path);
    if !path.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    if !request.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(request.query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let hop_by_hop = HopByHop::new(|| incoming.get_all("connection"));
    let strip_credentials = caller.is_some();
    for (name, value) in incoming.iter() {
        let owned_by_gateway = matches!(
            name,
            b"content-length"
                | b"expect"
                | b"x-forwarded-for"
                | b"x-forwarded-proto"
                | b"x-forwarded-host"
                | b"x-credentialflow-key-id"
                | b"x-credentialflow-tenant"
                | b"x-credentialflow-subject"
                | b"forwarded"
        ) || gateway.contains(name)
            || claim_headers
                .iter()
                .any(|owned| owned.as_str().as_bytes() == name);
        // On a keyed route the credential never leaves; on a public one, a gateway key a
        // client sends anyway (SDKs attach it to every call) is removed all the same.
        let credential = (name == b"authorization" || name == X_API_KEY.as_bytes())
            && (strip_credentials || is_gateway_key(value));
        if owned_by_gateway || credential || hop_by_hop.drops(name) {
            continue;
        }
        write_header(&mut out, name, value);
    }
    for (name, value) in &gateway.0 {
        write_header(&mut out, name.as_bytes(), value);
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(length) => write_header(
            &mut out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        ),
        BodyFraming::Chunked => write_header(&mut out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Returns whether a credential header value carries a credentialflow key.
fn is_gateway_key(value: &[u8]) -> bool {
    let token = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => value.trim_ascii(),
    };
    token.starts_with(cluster::secret::KEY_PREFIX.as_bytes())
}

/// Appends the textual form of `ip` without going through the formatter for IPv4.
fn write_ip(ip: std::net::IpAddr, out: &mut SmallVec<[u8; 64]>) {
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

/// How the target's answer's body reaches the client: decided once here, and written by
/// either HTTP front (actix's response in [`relay`], the proxy's own HTTP/1 front by hand).
pub enum AnswerBody {
    /// No body and no length: a 204 or 304.
    None,
    /// Read with the head.
    Whole(Bytes),
    /// No body follows, but this length is announced: a HEAD answer keeps the length the
    /// upstream gave, an empty answer says 0.
    Announced(u64),
    /// Streams from the target with an idle timeout; with its length when the target gave
    /// one, else in chunks.
    Streamed(IdleTimeout<BodyStream>, Option<u64>),
}

impl AnswerBody {
    pub fn of(head: &ResponseHead, body: ResponseBody, head_only: bool, timeout: Duration) -> Self {
        let no_content = head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
        match body {
            _ if no_content => Self::None,
            ResponseBody::Full(bytes) if head_only => Self::Announced(bytes.len() as u64),
            ResponseBody::Full(bytes) => Self::Whole(bytes),
            ResponseBody::Empty => Self::Announced(head.content_length.filter(|_| head_only).unwrap_or(0)),
            ResponseBody::Stream(stream) => {
                let length = match head.framing {
                    Framing::Length(length) => Some(length),
                    _ => None,
                };
                Self::Streamed(IdleTimeout::new(stream, timeout), length)
            }
        }
    }
}

/// The upstream's answer as an actix response: the end-to-end headers and the request id,
/// and the body as [`AnswerBody`] decides.
pub fn relay(
    response: UpstreamResponse,
    request_id: &RequestId,
    head_only: bool,
    timeout: Duration,
) -> HttpResponse {
    let UpstreamResponse { head, body } = response;
    let mut builder = HttpResponse::build(head.status);
    let mut answer = match AnswerBody::of(&head, body, head_only, timeout) {
        AnswerBody::None | AnswerBody::Announced(0) => builder.finish(),
        AnswerBody::Whole(bytes) => builder.body(bytes),
        // An empty body of the announced size makes the encoder write the length and
        // nothing else.
        AnswerBody::Announced(length) => builder.body(SizedStream::new(
            length,
            futures::stream::empty::<Result<Bytes, std::io::Error>>(),
        )),
        AnswerBody::Streamed(stream, Some(length)) => builder.body(SizedStream::new(length, stream)),
        AnswerBody::Streamed(stream, None) => builder.streaming(stream),
    };
    let headers = answer.headers_mut();
    // The upstream client checked every name and value as the HTTP grammar has them.
    for (name, value) in head.headers() {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers.insert(X_REQUEST_ID, request_id.header_value());
    answer
}

/// Forwards the request, retrying on other targets where that is safe. Returns the
/// target's answer, or why there is none. Each attempt has the route's timeout, kept by
/// `deadline` (the connection's own timer, or one for this request alone).
pub async fn forward(
    client: &UpstreamClient,
    parts: Outbound<'_>,
    mut body: RequestBody,
    deadline: &mut Deadline,
) -> Result<UpstreamResponse, ProxyError> {
    let Outbound {
        incoming,
        route,
        request_id,
        ..
    } = parts;
    if let Some(Err(())) = &route.upstream_auth {
        return Err(ProxyError::UpstreamCredentialUnavailable);
    }
    let idempotent = is_idempotent(incoming.method);
    let head_only = *incoming.method == Method::HEAD;
    // At most `MAX_RETRIES + 1` attempts: room for all of them on the stack.
    let mut tried_slots = [0usize; cluster::route::MAX_RETRIES as usize + 1];
    let mut attempts = 0;
    // Stays `NoHealthyUpstream` while every target tried refused the connection: then no
    // target is up, as far as this request can tell.
    let mut last_error = ProxyError::NoHealthyUpstream;
    loop {
        let tried = &tried_slots[..attempts];
        let Some((index, target)) = choose(&route.targets, tried) else {
            return Err(last_error);
        };
        let Some(slot) = tried_slots.get_mut(attempts) else {
            return Err(last_error);
        };
        *slot = index;
        attempts += 1;
        let attempts_left = attempts <= route.retries as usize;
        let (read_ahead, framing, streamed, replayable) =
            match std::mem::replace(&mut body, RequestBody::Empty) {
                RequestBody::Empty => {
                    let announces_body =
                        matches!(*incoming.method, Method::POST | Method::PUT | Method::PATCH);
                    let framing = if announces_body {
                        BodyFraming::Length(0)
                    } else {
                        BodyFraming::None
                    };
                    (Bytes::new(), framing, None, true)
                }
                RequestBody::Replayable(bytes) => {
                    body = RequestBody::Replayable(bytes.clone());
                    let framing = BodyFraming::Length(bytes.len() as u64);
                    (bytes, framing, None, true)
                }
                RequestBody::Streamed(payload, length) => {
                    let framing = length.map_or(BodyFraming::Chunked, BodyFraming::Length);
                    let streamed = StreamedBody {
                        payload,
                        chunked: length.is_none(),
                    };
                    (Bytes::new(), framing, Some(streamed), false)
                }
            };
        let head = request_head(&parts, target, framing, &read_ahead);
        let at = Instant::now();
        let exchange = Exchange {
            authority: &target.authority,
            head: &head,
            streamed,
            head_request: head_only,
            resend_if_stale: idempotent && replayable,
            at: at.into_std(),
        };
        deadline.set(at + route.timeout);
        let sent = tokio::select! {
            biased;
            sent = client.send(exchange) => Ok(sent),
            () = deadline.expired() => Err(()),
        };
        match sent {
            Ok(Ok(response)) if matches!(response.head.status.as_u16(), 502 | 503) => {
                // Worth another target, but no sign the target is down: passive ejection
                // counts transport failures only, which a client cannot provoke.
                if idempotent && replayable && attempts_left {
                    last_error = ProxyError::BadGateway;
                    continue;
                }
                return Ok(response);
            }
            Ok(Ok(response)) => {
                target.health.request_succeeded();
                return Ok(response);
            }
            Err(_elapsed) => return Err(ProxyError::UpstreamTimeout),
            // The client's side failed; the target is not to blame.
            Ok(Err(SendError::RequestBody)) => return Err(ProxyError::BadRequestBody),
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

fn log_ejection(target: &Target, ejected: bool, request_id: &RequestId) {
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
            let mut out = SmallVec::new();
            write_ip(parsed, &mut out);
            assert_eq!(
                String::from_utf8(out.to_vec()).expect("ascii"),
                parsed.to_string()
            );
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
}
