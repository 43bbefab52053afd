//! The least a reverse proxy on tokio can spend per request: a forwarder that does nothing a
//! proxy could skip, measured in the same run as nginx and the gateway.
//!
//! Each worker thread runs its own single-threaded tokio runtime (the model of the gateway's
//! actix workers) and accepts from one shared listener. A client connection gets its own
//! upstream connection, kept open. Per request the forwarder reads the client's head,
//! parses it, writes the same bytes upstream, reads and parses the answer's head, reads its
//! body by `Content-Length`, and writes those bytes back: two socket reads, two writes and
//! two parses. It authenticates nothing, edits no header (it even passes the credential
//! on) and handles only bodiless requests and length-framed answers, which is all the
//! benchmark sends. No real proxy does less; a gateway that authenticates and adds the
//! headers its issue asks for does strictly more.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEADERS: usize = 64;

/// Starts `workers` forwarder threads in front of `upstream` and returns the port they
/// listen on. The threads live as long as the benchmark process.
pub fn start(workers: usize, upstream: SocketAddr) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the floor forwarder");
    listener.set_nonblocking(true).expect("nonblocking listener");
    let port = listener.local_addr().expect("local address").port();
    for worker in 0..workers.max(1) {
        let listener = listener.try_clone().expect("share the listener");
        std::thread::Builder::new()
            .name(format!("floor-{worker}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(accept(listener, upstream));
            })
            .expect("spawn a floor worker");
    }
    port
}

async fn accept(listener: std::net::TcpListener, upstream: SocketAddr) {
    let listener = TcpListener::from_std(listener).expect("register the listener");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // A failed connection just ends; the load generator counts it.
            let _ = forward(client, upstream).await;
        });
    }
}

/// Forwards requests on one client connection until either side closes it.
async fn forward(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut target = TcpStream::connect(upstream).await?;
    target.set_nodelay(true)?;
    let mut request = BytesMut::with_capacity(4096);
    let mut answer = BytesMut::with_capacity(4096);
    loop {
        let head = loop {
            if let Some(length) = request_head_length(&request)? {
                break length;
            }
            if client.read_buf(&mut request).await? == 0 {
                return Ok(());
            }
        };
        target.write_all(&request[..head]).await?;
        request.advance(head);
        let whole = loop {
            if let Some(length) = answer_length(&answer)? {
                if answer.len() >= length {
                    break length;
                }
            }
            if target.read_buf(&mut answer).await? == 0 {
                return Ok(());
            }
        };
        client.write_all(&answer[..whole]).await?;
        answer.advance(whole);
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// The length of a complete bodiless request head at the start of `buf`.
fn request_head_length(buf: &[u8]) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => {
            let carries_body = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if carries_body {
                return Err(invalid("the floor forwarder takes bodiless requests only"));
            }
            Ok(Some(length))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid("malformed request head")),
    }
}

/// The length of a complete answer (head and body) starting at `buf`, once its head is in.
fn answer_length(buf: &[u8]) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(head)) => {
            let body = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("the floor forwarder takes length-framed answers only"))?;
            Ok(Some(head + body))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid("malformed answer head")),
    }
}
