//! Writing answers on a connection the proxy's own HTTP/1 loop serves: the target's answer
//! straight from its parsed head, or an actix-web response (the front's own refusals); the
//! head, then the body, framed by its length or in chunks.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{HeaderName, HeaderValue, DATE};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::dataplane::forward::AnswerBody;
use crate::dataplane::request_id::{RequestId, X_REQUEST_ID};
use crate::dataplane::upstream_client::UpstreamResponse;

/// How the connection may go on after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    /// The body could not be sent whole: the connection must not carry another answer.
    Close,
}

/// Writes `response` to `io`, reusing `out` for the head and any body sent with it.
/// `head_request`: the request was HEAD, so no body follows the head.
pub async fn write<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    response: HttpResponse,
    head_request: bool,
    out: &mut Vec<u8>,
) -> io::Result<Next> {
    let (head, body) = response.into_parts();
    let status = head.status();
    out.clear();
    status_line(out, status);
    for (name, value) in head.headers() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !head.headers().contains_key(DATE) {
        with_date(|date| field(out, b"date", date));
    }
    let bodiless =
        status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let size = body.size();
    match size {
        _ if bodiless => {}
        BodySize::None => field(out, b"content-length", b"0"),
        BodySize::Sized(length) => field(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        ),
        BodySize::Stream => field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    if bodiless || head_request || matches!(size, BodySize::None | BodySize::Sized(0)) {
        io.write_all(out).await?;
        return Ok(Next::KeepAlive);
    }
    let mut body = match body.try_into_bytes() {
        Ok(bytes) => {
            out.extend_from_slice(&bytes);
            io.write_all(out).await?;
            return Ok(Next::KeepAlive);
        }
        Err(streamed) => streamed,
    };
    io.write_all(out).await?;
    let chunks = futures::stream::poll_fn(|cx| Pin::new(&mut body).poll_next(cx));
    copy_body(io, chunks, size == BodySize::Stream, out).await
}

/// What the gateway adds to the target's answer.
pub struct Added<'a> {
    pub request_id: &'a RequestId,
    /// The caller's limit headers, when its key has limits.
    pub limits: Option<[(HeaderName, HeaderValue); 3]>,
}

/// Writes the target's answer as the actix path's `relay` would send it, without building
/// actix's response: the end-to-end headers as they came, then what the gateway `added`,
/// then the body as [`AnswerBody`] decides.
pub async fn relay<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    answer: UpstreamResponse,
    added: &Added<'_>,
    head_request: bool,
    timeout: std::time::Duration,
    out: &mut Vec<u8>,
) -> io::Result<Next> {
    let UpstreamResponse { head, body } = answer;
    out.clear();
    status_line(out, head.status);
    let mut dated = false;
    for (name, value) in head.headers() {
        // What the gateway sets replaces the target's own, as on the actix path.
        let replaced = name == X_REQUEST_ID.as_str().as_bytes()
            || added
                .limits
                .iter()
                .flatten()
                .any(|(limit, _)| limit.as_str().as_bytes() == name);
        if replaced {
            continue;
        }
        dated |= name == DATE.as_str().as_bytes();
        field(out, name, value);
    }
    field(out, X_REQUEST_ID.as_str().as_bytes(), added.request_id.as_bytes());
    for (name, value) in added.limits.iter().flatten() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        with_date(|date| field(out, b"date", date));
    }
    let (stream, chunked) = match AnswerBody::of(&head, body, head_request, timeout) {
        AnswerBody::None => {
            out.extend_from_slice(b"\r\n");
            return io.write_all(out).await.map(|()| Next::KeepAlive);
        }
        AnswerBody::Whole(bytes) => {
            length(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
            return io.write_all(out).await.map(|()| Next::KeepAlive);
        }
        AnswerBody::Announced(announced) => {
            length(out, announced);
            return io.write_all(out).await.map(|()| Next::KeepAlive);
        }
        AnswerBody::Streamed(stream, Some(announced)) => {
            length(out, announced);
            (stream, false)
        }
        AnswerBody::Streamed(stream, None) => {
            field(out, b"transfer-encoding", b"chunked");
            out.extend_from_slice(b"\r\n");
            (stream, true)
        }
    };
    io.write_all(out).await?;
    copy_body(io, stream, chunked, out).await
}

/// Writes a body's chunks as they come, in chunked coding when `chunked`.
async fn copy_body<IO, S, E>(io: &mut IO, chunks: S, chunked: bool, out: &mut Vec<u8>) -> io::Result<Next>
where
    IO: AsyncWrite + Unpin,
    S: futures::Stream<Item = Result<bytes::Bytes, E>>,
{
    let mut chunks = std::pin::pin!(chunks);
    loop {
        match chunks.next().await {
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(Ok(chunk)) => write_chunk(io, &chunk, chunked, out).await?,
            // What was announced cannot be delivered: only closing tells the client.
            Some(Err(_)) => return Ok(Next::Close),
            None if chunked => {
                io.write_all(b"0\r\n\r\n").await?;
                return Ok(Next::KeepAlive);
            }
            None => return Ok(Next::KeepAlive),
        }
    }
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends the head with the body's length.
fn length(out: &mut Vec<u8>, length: u64) {
    field(
        out,
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
}

async fn write_chunk<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    chunk: &[u8],
    chunked: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if !chunked {
        return io.write_all(chunk).await;
    }
    out.clear();
    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    out.extend_from_slice(chunk);
    out.extend_from_slice(b"\r\n");
    io.write_all(out).await
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value, formatted once per second per worker thread.
    static DATE_VALUE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes the `Date` value: now, to the second. Targets nearly always date their answers,
/// so this reads the clock only for the front's own refusals and the odd undated answer.
fn with_date(write: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    DATE_VALUE.with_borrow_mut(|(at, value)| {
        if *at != second {
            *at = second;
            *value = httpdate::fmt_http_date(now);
        }
        write(value.as_bytes());
    });
}
