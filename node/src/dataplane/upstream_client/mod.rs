//! The HTTP/1.1 client the data plane and the health checker send upstream with, built for
//! the proxy's one job: write a request head the proxy composed itself, read the answer's
//! head, and hand its body to the client as it arrives. Each worker thread has its own
//! client and keep-alive pool, and a request runs entirely inside its own task: no
//! connection task, channel or lock between the handler and the socket.

mod body;
mod chunked;
mod conn;
pub mod head;
mod pool;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use bytes::{Buf, Bytes};
use futures::StreamExt;

pub use body::BodyStream;
use body::Remaining;
use conn::{Conn, Written};
use head::{Framing, HeadError, ResponseHead};
use pool::Pool;

/// Bodies up to this size are read with the head, so the connection is back in the pool
/// before the client is answered and the answer is written in one piece.
pub const READ_WHOLE_BYTES: u64 = 16 * 1024;

/// A pooled HTTP/1.1 client for one worker thread.
#[derive(Clone, Default)]
pub struct UpstreamClient {
    pool: Rc<Pool>,
}

/// A request body that streams from the client while it is sent.
pub struct StreamedBody {
    pub payload: web::Payload,
    /// Sent with chunked coding, for a body of unknown length.
    pub chunked: bool,
}

/// One request to send.
pub struct Exchange<'a> {
    /// The target's `host:port`.
    pub authority: &'a Arc<str>,
    /// The request head, followed by the whole body when it was read ahead.
    pub head: &'a [u8],
    /// A body sent after the head as the client delivers it.
    pub streamed: Option<StreamedBody>,
    /// The request is HEAD: whatever the answer announces, no body follows.
    pub head_request: bool,
    /// The request may be sent again on a new connection when a pooled one turns out to
    /// have been closed by the target before it answered (the keep-alive race).
    pub resend_if_stale: bool,
    /// When this attempt began: the pool judges its idle connections by it, rather than
    /// reading the clock again.
    pub at: Instant,
}

/// The target's answer.
pub struct UpstreamResponse {
    pub head: ResponseHead,
    pub body: ResponseBody,
}

/// An answer's body.
pub enum ResponseBody {
    Empty,
    /// Small enough to have been read with the head.
    Full(Bytes),
    /// Streams from the connection.
    Stream(BodyStream),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the target: {0}")]
    Connect(io::Error),
    #[error("the connection to the target failed: {0}")]
    Io(io::Error),
    #[error("the target closed the connection without answering")]
    Closed,
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("the client's request body could not be read")]
    RequestBody,
}

impl SendError {
    /// Whether the request never reached the target, so any method may go elsewhere.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// How one attempt on one connection failed.
enum Failure {
    /// The connection was closed or reset before any answer arrived.
    Stale,
    Other(SendError),
}

impl From<HeadError> for Failure {
    fn from(error: HeadError) -> Self {
        Self::Other(error.into())
    }
}

impl UpstreamClient {
    /// Sends a request; the answer's head is read, and its body when it is small.
    pub async fn send(&self, mut exchange: Exchange<'_>) -> Result<UpstreamResponse, SendError> {
        loop {
            let mut conn = match self.pool.take(exchange.authority, exchange.at) {
                Some(conn) => conn,
                None => Conn::connect(exchange.authority)
                    .await
                    .map_err(SendError::Connect)?,
            };
            let streamed = exchange.streamed.take();
            let may_resend = conn.reused && exchange.resend_if_stale && streamed.is_none();
            let attempt = request(&mut conn, exchange.head, streamed, exchange.head_request).await;
            return match attempt {
                Ok(head) => self.read_answer(conn, head).await,
                Err(Failure::Stale) if may_resend => continue,
                Err(Failure::Stale) => Err(SendError::Closed),
                Err(Failure::Other(error)) => Err(error),
            };
        }
    }

    /// Reads a small or empty body whole, returning the connection to the pool at once;
    /// any other body streams.
    async fn read_answer(&self, mut conn: Conn, head: ResponseHead) -> Result<UpstreamResponse, SendError> {
        let keep_alive = head.keep_alive;
        let body = match head.framing {
            Framing::Empty => {
                if keep_alive {
                    self.pool.put(conn);
                }
                ResponseBody::Empty
            }
            Framing::Length(length) if length <= READ_WHOLE_BYTES => {
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                while conn.buf.len() < length {
                    match conn.fill().await {
                        Ok(0) => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
                        Ok(_) => {}
                        Err(error) => return Err(SendError::Io(error)),
                    }
                }
                let bytes = conn.buf.split_to(length).freeze();
                if keep_alive {
                    self.pool.put(conn);
                }
                ResponseBody::Full(bytes)
            }
            Framing::Length(length) => ResponseBody::Stream(BodyStream::new(
                conn,
                Remaining::Length(length),
                keep_alive,
                self.pool.clone(),
            )),
            Framing::Chunked => ResponseBody::Stream(BodyStream::new(
                conn,
                Remaining::Chunked(Default::default()),
                keep_alive,
                self.pool.clone(),
            )),
            Framing::UntilClose => ResponseBody::Stream(BodyStream::new(
                conn,
                Remaining::UntilClose,
                false,
                self.pool.clone(),
            )),
        };
        Ok(UpstreamResponse { head, body })
    }

    /// Sends a bodiless GET on a new connection (health probes) and returns the status.
    pub async fn probe(&self, url: &str, timeout: Duration) -> Option<u16> {
        let url = url::Url::parse(url).ok()?;
        let authority: Arc<str> = format!("{}:{}", url.host()?, url.port_or_known_default()?).into();
        let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let head = format!(
            "GET {target} HTTP/1.1\r\nhost: {host}\r\nuser-agent: credentialflow-health\r\nconnection: close\r\n\r\n"
        );
        let probe = async {
            let mut conn = Conn::connect(&authority).await.ok()?;
            match request(&mut conn, head.as_bytes(), None, false).await {
                Ok(head) => Some(head.status.as_u16()),
                Err(_) => None,
            }
        };
        tokio::time::timeout(timeout, probe).await.ok()?
    }
}

/// Writes the request on `conn` and reads the head of its answer.
async fn request(
    conn: &mut Conn,
    head: &[u8],
    streamed: Option<StreamedBody>,
    head_request: bool,
) -> Result<ResponseHead, Failure> {
    conn.write_all(head).await.map_err(|_| Failure::Stale)?;
    if let Some(body) = streamed {
        let early = send_streamed(conn, body, head_request)
            .await
            .map_err(Failure::Other)?;
        if let Some(mut head) = early {
            // The rest of the request was never sent: the connection cannot carry another.
            head.keep_alive = false;
            return Ok(head);
        }
    }
    let mut received = false;
    loop {
        // Nothing to parse before the first read (the buffer is empty between exchanges).
        if !conn.buf.is_empty() {
            if let Some(head) = head::parse(&mut conn.buf, head_request)? {
                return Ok(head);
            }
        }
        match conn.fill().await {
            Ok(0) if !received => return Err(Failure::Stale),
            Ok(0) => return Err(Failure::Other(SendError::Io(io::ErrorKind::UnexpectedEof.into()))),
            Ok(_) => received = true,
            Err(error) if !received && error.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Failure::Stale)
            }
            Err(error) => return Err(Failure::Other(SendError::Io(error))),
        }
    }
}

/// Sends the client's body as it arrives: each piece is written before the next is read,
/// so a slow target slows the client down instead of filling memory.
///
/// A target may answer before it has the whole body (a 413, a 401) and stop reading; that
/// answer is returned at once, and the rest of the body is not sent. Interim (1xx) answers
/// do not stop the body.
async fn send_streamed(
    conn: &mut Conn,
    mut body: StreamedBody,
    head_request: bool,
) -> Result<Option<ResponseHead>, SendError> {
    loop {
        let next = tokio::select! {
            biased;
            filled = conn.fill() => {
                if filled.map_err(SendError::Io)? == 0 {
                    return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                match head::parse(&mut conn.buf, head_request)? {
                    Some(head) => return Ok(Some(head)),
                    None => continue,
                }
            }
            chunk = body.payload.next() => chunk,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| SendError::RequestBody)?;
        if chunk.is_empty() {
            continue;
        }
        let early = if body.chunked {
            let size = format!("{:x}\r\n", chunk.len());
            let framed = size.as_bytes().chain(&chunk[..]).chain(&b"\r\n"[..]);
            write_unless_answered(conn, framed, head_request).await?
        } else {
            write_unless_answered(conn, &chunk[..], head_request).await?
        };
        if early.is_some() {
            return Ok(early);
        }
    }
    if body.chunked {
        return write_unless_answered(conn, &b"0\r\n\r\n"[..], head_request).await;
    }
    Ok(None)
}

/// Writes `bytes`, returning the target's final answer instead if it comes first.
async fn write_unless_answered(
    conn: &mut Conn,
    mut bytes: impl Buf,
    head_request: bool,
) -> Result<Option<ResponseHead>, SendError> {
    loop {
        match conn
            .write_unless_target_speaks(&mut bytes)
            .await
            .map_err(SendError::Io)?
        {
            Written::All => return Ok(None),
            Written::TargetClosed => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
            Written::TargetSpoke => {
                if let Some(head) = head::parse(&mut conn.buf, head_request)? {
                    return Ok(Some(head));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
