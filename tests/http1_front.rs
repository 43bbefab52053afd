//! The proxy listener's own HTTP/1.1 front, seen from a raw connection: pipelined requests,
//! a connection that moves to actix-http mid-way for a request body, HEAD framing, the
//! front's own refusals, and `Connection: close`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{create_key_with, Cluster};

/// One answer read off the connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A raw client connection to the proxy.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Self {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Reads one answer; `head_request` answers have no body whatever they announce.
    fn answer(&mut self, head_request: bool) -> Answer {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header field");
            // A repeated field shows as its values joined, as a client would combine them.
            headers
                .entry(name.to_ascii_lowercase())
                .and_modify(|earlier: &mut String| {
                    earlier.push_str(", ");
                    earlier.push_str(value.trim());
                })
                .or_insert_with(|| value.trim().to_owned());
        }
        let mut body = Vec::new();
        if !head_request {
            if let Some(length) = headers.get("content-length") {
                body.resize(length.parse().expect("length"), 0);
                self.reader.read_exact(&mut body).expect("body");
            } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
                loop {
                    let mut size = String::new();
                    self.reader.read_line(&mut size).expect("chunk size");
                    let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
                    let mut chunk = vec![0; size + 2];
                    self.reader.read_exact(&mut chunk).expect("chunk");
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            }
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Whether the proxy closed the connection.
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// A one-node cluster with a keyed route to an echoing upstream.
fn gateway() -> (Cluster, Upstream, String) {
    let upstream = Upstream::start("echo");
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let route = json!({ "path_prefix": "/", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] });
    let answer = node.put("/v1/routes/echo", &route).expect("admin answers");
    assert_eq!(answer.status, 201, "{}", answer.text);
    let (_, key) = create_key_with(node, json!({}));
    support::wait_for(Duration::from_secs(10), "the route to serve", || {
        node.proxy_get("/ready", Some(&key)).filter(|a| a.status == 200)
    });
    (cluster, upstream, key)
}

fn get(path: &str, key: &str) -> String {
    request("GET", path, key, "")
}

/// A request head with the key, and `extra` header lines (each ending in CRLF).
fn request(method: &str, path: &str, key: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {key}\r\n{extra}\r\n")
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    let mut burst = String::new();
    for n in 1..=3 {
        burst.push_str(&get(&format!("/echo/{n}?q={n}"), &key));
    }
    connection.send(burst.as_bytes());
    let mut ids = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let answer = connection.answer(false);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["path"], format!("/echo/{n}?q={n}"));
        ids.insert(answer.headers["x-request-id"].clone());
    }
    assert_eq!(ids.len(), 3, "each answer has its own request id");
}

#[test]
fn a_connection_moves_to_actix_for_a_request_body_and_keeps_working() {
    let (cluster, upstream, key) = gateway();
    let before = upstream.seen().len();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(get("/first", &key).as_bytes());
    assert_eq!(connection.answer(false).status, 200);
    connection.send((request("POST", "/upload", &key, "Content-Length: 5\r\n") + "hello").as_bytes());
    let posted = connection.answer(false);
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(posted.json()["body_bytes"], 5);
    connection.send(get("/after", &key).as_bytes());
    let after = connection.answer(false);
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["path"], "/after");
    let seen = &upstream.seen()[before..];
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1].method, "POST");
    assert!(
        seen.iter().all(|s| !s.headers.contains_key("authorization")),
        "the credential never leaves"
    );
}

#[test]
fn a_head_answer_keeps_the_length_and_sends_no_body() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(get("/sized", &key).as_bytes());
    let full = connection.answer(false);
    connection.send(request("HEAD", "/sized", &key, "").as_bytes());
    let head = connection.answer(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], full.body.len().to_string());
    // Had the HEAD answer carried a body, this answer would not parse.
    connection.send(get("/next", &key).as_bytes());
    assert_eq!(connection.answer(false).json()["path"], "/next");
}

#[test]
fn refusals_are_json_with_a_date_and_the_connection_stays_open() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(b"GET /x HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
    let refused = connection.answer(false);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "missing_credential");
    assert!(refused.headers.contains_key("date"), "{refused:?}");
    assert_eq!(refused.headers["x-request-id"].len(), 32);
    connection.send(get("/x", &key).as_bytes());
    assert_eq!(connection.answer(false).status, 200);
}

#[test]
fn connection_close_ends_the_connection_after_the_answer() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(request("GET", "/last", &key, "Connection: close\r\n").as_bytes());
    assert_eq!(connection.answer(false).status, 200);
    assert!(connection.closed());
}

#[test]
fn a_streamed_answer_is_relayed_in_chunks_and_the_connection_goes_on() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    // Larger than what the upstream client reads with the head: it streams.
    connection.send(get("/pieces/3000", &key).as_bytes());
    let streamed = connection.answer(false);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.headers["transfer-encoding"], "chunked");
    let text = String::from_utf8(streamed.body).expect("text");
    assert_eq!(text.lines().count(), 3000);
    assert_eq!(text.lines().last(), Some("piece 2999"));
    connection.send(get("/next", &key).as_bytes());
    assert_eq!(connection.answer(false).json()["path"], "/next");
}

#[test]
fn a_busy_connection_stays_open_and_an_idle_one_closes_after_the_keep_alive() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    // Requests for longer than the keep-alive (5 s): the connection's timer, first set for
    // 5 s after it opened, must not end a connection that has been busy all along.
    let busy_until = Instant::now() + Duration::from_secs(6);
    let mut served = 0;
    while Instant::now() < busy_until {
        connection.send(get("/busy", &key).as_bytes());
        assert_eq!(connection.answer(false).status, 200, "after {served} answers");
        served += 1;
    }
    let idle_since = Instant::now();
    assert!(connection.closed(), "an idle connection is closed");
    let idle = idle_since.elapsed();
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(9)).contains(&idle),
        "closed after {idle:?} idle, the keep-alive is 5 s"
    );
}

#[test]
fn stopping_the_node_closes_its_idle_connections_at_once() {
    let (mut cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(get("/before-stop", &key).as_bytes());
    assert_eq!(connection.answer(false).status, 200);
    let stopping_at = Instant::now();
    let node = cluster.node_mut(1);
    node.signal(support::Signal::SIGTERM);
    assert!(connection.closed(), "the idle connection is closed on stop");
    let waited = stopping_at.elapsed();
    // Well under the 5 s keep-alive: the stop closed it, not the timer.
    assert!(waited < Duration::from_secs(3), "closed {waited:?} after SIGTERM");
    assert!(node.wait_exit().success());
}

#[test]
fn the_gateway_request_id_replaces_the_one_the_target_sends() {
    let (cluster, _upstream, key) = gateway();
    let mut connection = Connection::open(cluster.node(1).proxy_port);
    connection.send(
        request(
            "GET",
            "/own-request-id",
            &key,
            "X-Request-Id: from-the-client\r\n",
        )
        .as_bytes(),
    );
    let answer = connection.answer(false);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers["x-request-id"], "from-the-client",
        "one id, the gateway's"
    );
}
