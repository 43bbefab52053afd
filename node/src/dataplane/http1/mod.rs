//! The proxy listener's own HTTP/1.1 front. actix-http turns every request into actix's
//! request type and every answer back from actix's response type, and on this path that
//! machinery costs more than the proxying itself (README, "Proxy against nginx"). This loop
//! reads the common request (HTTP/1.1, no body, a proxy route) with `httparse`, runs the
//! same admission, forwarding and accounting as the actix handler, and writes the answer
//! itself.
//!
//! Anything else it hands over, with the bytes it has read, to actix-http's dispatcher
//! for the rest of the connection: request bodies, `Expect`, `Upgrade`, `Connection`
//! options other than `keep-alive`, HTTP/1.0, heads httparse refuses or that are too large,
//! requests for AI routes. What actix answers there is what it always answered; the hand
//! over happens before any of the request is acted on.

pub mod listener;
pub mod prefixed;
mod render;

use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use bytes::{Buf, BytesMut};
use futures::future::LocalBoxFuture;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::deadline::Deadline;
use super::forward::{self, RequestBody};
use super::incoming::{lower_case_names, span_in, Field, Headers, Incoming};
use super::read_model::WorkerView;
use super::upstream_client::UpstreamClient;
use super::{account, admit, finish, limiter, route_of, Admission, ProxyContext, Refused, Started};
use prefixed::Prefixed;
use render::Next;

/// How long a connection may wait idle for its next request.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a request head may take to arrive once it has begun.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest head this loop reads; a longer one goes to actix, which refuses it.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields this loop takes; more go to actix.
const MAX_HEADERS: usize = 64;

/// Serves the rest of a connection on actix-http's HTTP/1 dispatcher.
pub type Handover = Rc<dyn Fn(Prefixed<TcpStream>, Option<SocketAddr>) -> LocalBoxFuture<'static, ()>>;

/// What the loop shares on a worker thread.
#[derive(Clone)]
pub struct Front {
    pub ctx: Arc<ProxyContext>,
    pub client: UpstreamClient,
    pub handover: Handover,
    /// This worker's handle on the read model's current view.
    pub view: Rc<WorkerView>,
    /// Becomes `true` when the node stops: idle connections close at once. One channel per
    /// worker, so that the workers' idle connections do not share one lock.
    pub stopping: watch::Receiver<bool>,
}

/// A request head this loop serves, read from the buffer; its fields are listed apart.
struct Head {
    length: usize,
    method: Method,
    /// Where the request target's path and query are in the buffer.
    target: std::ops::Range<usize>,
}

/// Serves requests on `io` until the client or the keep-alive timeout ends it, or hands it
/// over.
pub async fn serve(io: TcpStream, front: Front) {
    let peer = io.peer_addr().ok();
    // Answers go out whole; Nagle would hold a small one back.
    let _ = io.set_nodelay(true);
    // The loop's timer and stop notification are gone before actix takes over.
    if let Some((buf, io)) = serve_own(io, peer, &front).await {
        (front.handover)(Prefixed::new(buf, io), peer).await;
    }
}

/// The loop: returns the connection, with what was read of it, when actix is to serve the
/// rest.
async fn serve_own(
    mut io: TcpStream,
    peer: Option<SocketAddr>,
    front: &Front,
) -> Option<(BytesMut, TcpStream)> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    let mut fields = Vec::with_capacity(16);
    // One timer and one stop notification for the connection's life, not one per wait.
    let mut deadline = Deadline::new();
    deadline.set(Instant::now() + KEEP_ALIVE);
    let mut stopping = front.stopping.clone();
    let mut stop = std::pin::pin!(stopping.wait_for(|stopping| *stopping));
    loop {
        let head = match next_head(&mut io, &mut buf, &mut fields, &mut deadline, stop.as_mut()).await {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(Declined) => return Some((buf, io)),
        };
        let view = front.view.current();
        let Ok(target) = std::str::from_utf8(&buf[head.target.clone()]) else {
            return Some((buf, io));
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = Headers::Spans {
            buf: &buf,
            fields: &fields,
        };
        let incoming = Incoming {
            method: &head.method,
            path,
            query,
            headers,
            peer: peer.map(|addr| addr.ip()),
            tls: false,
        };
        // AI routes read the request through actix.
        let routed = route_of(&view, &incoming);
        if matches!(&routed, Ok((route, _)) if route.ai.is_some()) {
            return Some((buf, io));
        }
        let started = Started::now(headers);
        let mut admission = Admission::default();
        let outcome: Result<_, Refused> = async {
            let (route, path) = routed?;
            let admitted = admit(
                &front.ctx,
                &view,
                &incoming,
                route,
                path,
                &started,
                &mut admission,
            )
            .await?;
            let outbound = admitted.outbound(&incoming, &admission, &started.request_id);
            let answer = forward::forward(&front.client, outbound, RequestBody::Empty, &mut deadline).await?;
            Ok((answer, route.timeout))
        }
        .await;
        let head_request = incoming.is_head();
        let written = match outcome {
            Ok((answer, timeout)) => {
                account(&admission, answer.head.status.as_u16(), &started);
                let added = render::Added {
                    request_id: &started.request_id,
                    limits: admission
                        .standing
                        .as_ref()
                        .map(|standing| limiter::limit_headers(standing, started.now_ms)),
                };
                render::relay(&mut io, answer, &added, head_request, timeout, &mut out).await
            }
            Err(refused) => {
                let response = finish(Err(refused), admission, &started);
                render::write(&mut io, response, head_request, &mut out).await
            }
        };
        match written {
            Ok(Next::KeepAlive) => {
                buf.advance(head.length);
                // Idle from now: the answer may have taken a while to write.
                deadline.set(Instant::now() + KEEP_ALIVE);
            }
            Ok(Next::Close) | Err(_) => return None,
        }
    }
}

/// The head was not one this loop serves; the connection goes to actix as it is.
struct Declined;

/// Reads until the buffer starts with a whole head. `Ok(None)`: the connection is over
/// (closed, idle past the keep-alive, a head too slow, or the node stopping while idle).
/// `deadline` holds the keep-alive set after the previous answer; once part of a head has
/// arrived, the rest must follow within [`HEAD_TIMEOUT`].
async fn next_head<S: Future + ?Sized>(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    deadline: &mut Deadline,
    mut stop: Pin<&mut S>,
) -> Result<Option<Head>, Declined> {
    let mut head_timed = false;
    loop {
        let idle = buf.is_empty();
        if !idle {
            if let Some(head) = examine(buf, fields)? {
                return Ok(Some(head));
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(Declined);
            }
            if !head_timed {
                deadline.set(Instant::now() + HEAD_TIMEOUT);
                head_timed = true;
            }
        }
        tokio::select! {
            biased;
            _ = stop.as_mut(), if idle => return Ok(None),
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = deadline.expired() => return Ok(None),
        }
    }
}

/// Parses the head at the start of `buf`, with its fields' places in `fields`: `Ok(None)`
/// while it is incomplete, `Declined` when it is not one this loop serves. The field names
/// are lower-cased in place, so that lookups compare bytes.
fn examine(buf: &mut [u8], fields: &mut Vec<Field>) -> Result<Option<Head>, Declined> {
    fields.clear();
    let (length, method, target) = {
        // Left uninitialised: the parser writes only the slots it fills.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Declined),
        };
        if request.version != Some(1) {
            return Err(Declined);
        }
        let method =
            Method::from_bytes(request.method.unwrap_or_default().as_bytes()).map_err(|_| Declined)?;
        let target = request.path.unwrap_or_default();
        if method == Method::CONNECT || !target.starts_with('/') {
            return Err(Declined);
        }
        for field in request.headers.iter() {
            let name = field.name.as_bytes();
            let value = field.value.trim_ascii();
            let served = if name.eq_ignore_ascii_case(b"content-length") {
                value == b"0"
            } else if name.eq_ignore_ascii_case(b"connection") {
                value.eq_ignore_ascii_case(b"keep-alive")
            } else {
                !(name.eq_ignore_ascii_case(b"transfer-encoding")
                    || name.eq_ignore_ascii_case(b"expect")
                    || name.eq_ignore_ascii_case(b"upgrade"))
            };
            if !served {
                return Err(Declined);
            }
            fields.push(Field::of(buf, field));
        }
        (length, method, span_in(buf, target.as_bytes()))
    };
    lower_case_names(buf, fields);
    Ok(Some(Head {
        length,
        method,
        target,
    }))
}

#[cfg(test)]
mod tests;
