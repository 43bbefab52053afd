//! Writing an actix-web response on a connection the proxy's own HTTP/1 loop serves: the
//! head, then the body, framed by its length or in chunks.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::DATE;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
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
        BodySize::Sized(length) => field(out, b"content-length", length.to_string().as_bytes()),
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
    let chunked = size == BodySize::Stream;
    loop {
        match poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(Ok(chunk)) if chunked => {
                out.clear();
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(&chunk);
                out.extend_from_slice(b"\r\n");
                io.write_all(out).await?;
            }
            Some(Ok(chunk)) => io.write_all(&chunk).await?,
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

fn with_date(write: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE_VALUE.with_borrow_mut(|(at, value)| {
        if *at != second {
            *at = second;
            *value = httpdate::fmt_http_date(now);
        }
        write(value.as_bytes());
    });
}
