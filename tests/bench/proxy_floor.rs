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
//!
//! With [`Headers::Gateway`] it also does the gateway's header work, still without
//! authenticating: the head is written anew without the credential, with a request id, the
//! `X-Forwarded-*` headers and a key id, and the answer gets the request id. That shows what
//! those bytes cost the upstream and the load generator, which share the machine's cores.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEADERS: usize = 64;

/// Which headers the forwarder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// The client's head as it came, and the upstream's answer as it came.
    AsReceived,
    /// The gateway's: credential withheld, request id both ways, `X-Forwarded-*`, key id.
    Gateway,
}

impl Headers {
    /// How this forwarder's worker threads are named, so their CPU time can be found.
    pub fn thread_prefix(self) -> &'static str {
        match self {
            Self::AsReceived => "floor-as-is-",
            Self::Gateway => "floor-gateway-",
        }
    }
}

/// Starts `workers` forwarder threads in front of `upstream` and returns the port they
/// listen on. The threads live as long as the benchmark process.
pub fn start(workers: usize, upstream: SocketAddr, headers: Headers) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the floor forwarder");
    listener.set_nonblocking(true).expect("nonblocking listener");
    let port = listener.local_addr().expect("local address").port();
    for worker in 0..workers.max(1) {
        let listener = listener.try_clone().expect("share the listener");
        std::thread::Builder::new()
            .name(format!("{}{worker}", headers.thread_prefix()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(accept(listener, upstream, headers));
            })
            .expect("spawn a floor worker");
    }
    port
}

async fn accept(listener: std::net::TcpListener, upstream: SocketAddr, headers: Headers) {
    let listener = TcpListener::from_std(listener).expect("register the listener");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // A failed connection just ends; the load generator counts it.
            let _ = forward(client, upstream, headers).await;
        });
    }
}

/// Forwards requests on one client connection until either side closes it.
async fn forward(mut client: TcpStream, upstream: SocketAddr, headers: Headers) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let peer = client.peer_addr()?.ip().to_string();
    let mut target = TcpStream::connect(upstream).await?;
    target.set_nodelay(true)?;
    let mut request = BytesMut::with_capacity(4096);
    let mut answer = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut sequence = 0u128;
    loop {
        sequence += 1;
        let request_id = format!("{sequence:032x}");
        let head = loop {
            out.clear();
            let rewrite =
                (headers == Headers::Gateway).then_some((&mut out, request_id.as_str(), peer.as_str()));
            if let Some(length) = request_head(&request, rewrite)? {
                break length;
            }
            if client.read_buf(&mut request).await? == 0 {
                return Ok(());
            }
        };
        match headers {
            Headers::AsReceived => target.write_all(&request[..head]).await?,
            Headers::Gateway => target.write_all(&out).await?,
        }
        request.advance(head);
        let (head, whole) = loop {
            if let Some((head, whole)) = answer_length(&answer)? {
                if answer.len() >= whole {
                    break (head, whole);
                }
            }
            if target.read_buf(&mut answer).await? == 0 {
                return Ok(());
            }
        };
        match headers {
            Headers::AsReceived => client.write_all(&answer[..whole]).await?,
            Headers::Gateway => {
                // The head's last CRLF goes after the added field.
                out.clear();
                out.extend_from_slice(&answer[..head - 2]);
                write_field(&mut out, "x-request-id", request_id.as_bytes());
                out.extend_from_slice(&answer[head - 2..whole]);
                client.write_all(&out).await?;
            }
        }
        answer.advance(whole);
    }
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// The length of a complete bodiless request head at the start of `buf`. With `rewrite`
/// (the head to write, a request id, the client's address), also writes the head the
/// gateway would send.
fn request_head(buf: &[u8], rewrite: Option<(&mut Vec<u8>, &str, &str)>) -> std::io::Result<Option<usize>> {
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
            if let Some((out, request_id, peer)) = rewrite {
                out.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                out.extend_from_slice(request.path.unwrap_or("/").as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                let mut host: &[u8] = b"";
                for field in request.headers.iter() {
                    let name = field.name;
                    if name.eq_ignore_ascii_case("host") {
                        host = field.value;
                    }
                    let withheld = ["authorization", "x-api-key", "connection", "x-request-id"]
                        .iter()
                        .any(|w| name.eq_ignore_ascii_case(w));
                    if !withheld {
                        write_field(out, name, field.value);
                    }
                }
                write_field(out, "x-request-id", request_id.as_bytes());
                write_field(out, "x-forwarded-for", peer.as_bytes());
                write_field(out, "x-forwarded-proto", b"http");
                write_field(out, "x-forwarded-host", host);
                write_field(out, "x-credentialflow-key-id", b"key_0123456789abcdefghijklmn");
                out.extend_from_slice(b"\r\n");
            }
            Ok(Some(length))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid("malformed request head")),
    }
}

/// The lengths of the head and of the whole answer starting at `buf`, once its head is in.
fn answer_length(buf: &[u8]) -> std::io::Result<Option<(usize, usize)>> {
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
            Ok(Some((head, head + body)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid("malformed answer head")),
    }
}
