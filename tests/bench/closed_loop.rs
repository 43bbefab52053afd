//! A lean closed-loop HTTP/1.1 load generator for the write benchmarks.
//!
//! Every client owns one keep-alive connection per target, writes a request the benchmark
//! composed into a reused buffer, reads the answer's head with `httparse` and its body by
//! `Content-Length`, and records the latency. All clients run as tasks on one thread.
//!
//! Why not `reqwest`: on the shared 2-core machine the load generator takes CPU from the
//! systems it measures. reqwest spent about 28 µs per write (URL parsing, a request
//! builder, a JSON encoder, a hand-off to a connection task and back); this spends a few,
//! most of it in the two socket calls. Both systems are driven by the same generator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Composes request `seq`, bound for the loopback `port`, into the buffer (a whole HTTP/1.1
/// request, head and body).
pub type Compose = Arc<dyn Fn(u64, u16, &mut Vec<u8>) + Send + Sync>;

/// What one measurement produced.
pub struct Measurement {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Measurement {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Pools rounds of one measurement: their requests, time and latencies.
    pub fn pooled(rounds: Vec<Measurement>) -> Measurement {
        let mut pooled = Measurement {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        };
        for mut round in rounds {
            pooled.requests += round.requests;
            pooled.errors += round.errors;
            pooled.elapsed += round.elapsed;
            pooled.latencies_us.append(&mut round.latencies_us);
        }
        pooled.latencies_us.sort_unstable();
        pooled
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank] as f64 / 1000.0
    }
}

/// Drives `concurrency` closed-loop clients against the loopback `ports` for `duration`;
/// request `seq` goes to `ports[seq % ports.len()]`.
/// A request counts when its answer has `expect_status`; anything else, including a broken
/// connection, is an error. `round` keeps the sequence numbers of different rounds apart.
pub fn measure(
    ports: &[u16],
    compose: Compose,
    concurrency: usize,
    duration: Duration,
    expect_status: u16,
    round: u64,
) -> Measurement {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("load runtime");
    let ports: Arc<[u16]> = ports.into();
    runtime.block_on(async move {
        let started = Instant::now();
        let deadline = started + duration;
        let mut clients = Vec::new();
        for client in 0..concurrency {
            let ports = ports.clone();
            let compose = compose.clone();
            let first_seq = (round << 56) | ((client as u64) << 40);
            clients.push(tokio::spawn(run_client(
                ports,
                compose,
                first_seq,
                deadline,
                expect_status,
            )));
        }
        let mut latencies_us = Vec::new();
        let mut errors = 0;
        for client in clients {
            let (mut latencies, client_errors) = client.await.expect("client task");
            latencies_us.append(&mut latencies);
            errors += client_errors;
        }
        let elapsed = started.elapsed();
        latencies_us.sort_unstable();
        Measurement {
            requests: latencies_us.len() as u64,
            errors,
            elapsed,
            latencies_us,
        }
    })
}

/// One client: requests back to back until the deadline; returns latencies and errors.
async fn run_client(
    ports: Arc<[u16]>,
    compose: Compose,
    mut seq: u64,
    deadline: Instant,
    expect_status: u16,
) -> (Vec<u64>, u64) {
    let mut connections: Vec<Option<Connection>> = ports.iter().map(|_| None).collect();
    let mut request = Vec::with_capacity(1024);
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        request.clear();
        let target = (seq % ports.len() as u64) as usize;
        compose(seq, ports[target], &mut request);
        let sent = Instant::now();
        let slot = &mut connections[target];
        match exchange(slot, ports[target], &request).await {
            Ok(status) if status == expect_status => {
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            Ok(_) => errors += 1,
            Err(_) => {
                *slot = None;
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

/// A keep-alive connection and the bytes read from it but not yet used.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Sends one request on the target's connection (opening it first if needed) and reads the
/// whole answer; returns its status. The connection is dropped when the server closes it.
async fn exchange(slot: &mut Option<Connection>, port: u16, request: &[u8]) -> std::io::Result<u16> {
    if slot.is_none() {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        *slot = Some(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        });
    }
    let Some(connection) = slot.as_mut() else {
        return Err(invalid("no connection"));
    };
    connection.stream.write_all(request).await?;
    let (status, head_len, body_len, keep_alive) = loop {
        if let Some(head) = parse_head(&connection.buf)? {
            break head;
        }
        read_more(connection).await?;
    };
    while connection.buf.len() < head_len + body_len {
        read_more(connection).await?;
    }
    connection.buf.drain(..head_len + body_len);
    if !keep_alive {
        *slot = None;
    }
    Ok(status)
}

/// Reads what the connection has; the server closing it mid-answer is an error.
async fn read_more(connection: &mut Connection) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = connection.stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(invalid("connection closed mid-answer"));
    }
    connection.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Parses a complete answer head: status, head length, body length and whether the
/// connection stays open. `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(&format!("malformed answer: {error}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut body_len = None;
    let mut keep_alive = true;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive = !header.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = body_len.ok_or_else(|| invalid("answer without Content-Length"))?;
    Ok(Some((status, head_len, body_len, keep_alive)))
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

/// Appends a `POST` of a JSON body to `request`, with the headers both systems need.
pub fn post_json(request: &mut Vec<u8>, port: u16, path: &str, bearer: Option<&str>, body: &[u8]) {
    use std::io::Write as _;
    let _ = write!(
        request,
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(token) = bearer {
        let _ = write!(request, "authorization: Bearer {token}\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
}
