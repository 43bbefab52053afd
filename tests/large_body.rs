//! A 100 MB request body streams through the proxy: the upstream receives every byte and
//! the proxy's peak resident memory stays far below the body's size. A target that answers
//! before it has the whole body has its answer relayed at once.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::upstream::Upstream;
use support::{create_key_with, Cluster};

const BODY_BYTES: u64 = 100 * 1024 * 1024;
/// The node's peak RSS must stay below this; buffering the body would need more than 100 MiB.
const PEAK_RSS_LIMIT_KIB: u64 = 80 * 1024;

/// A body generated on the fly, so the test client does not hold it either.
struct Generated {
    left: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].fill(b'x');
        self.left -= n as u64;
        Ok(n)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A one-node cluster with route `id` and an API key that may use it.
fn node_with_route(id: &str, route: serde_json::Value) -> (Cluster, String) {
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let answer = node
        .put(&format!("/v1/routes/{id}"), &route)
        .expect("admin answers");
    assert_eq!(answer.status, 201, "{}", answer.text);
    let (_, key) = create_key_with(node, json!({}));
    (cluster, key)
}

#[test]
fn a_100_mb_body_streams_through_with_bounded_memory() {
    let upstream = Upstream::start("sink");
    let (cluster, key) = node_with_route(
        "upload",
        json!({ "path_prefix": "/upload", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] }),
    );
    let node = cluster.node(1);
    let before = peak_rss_kib(node.pid());

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .no_proxy()
        .build()
        .expect("client");
    let response = client
        .post(node.proxy_url("/upload/blob"))
        .bearer_auth(&key)
        .body(reqwest::blocking::Body::sized(
            Generated { left: BODY_BYTES },
            BODY_BYTES,
        ))
        .send()
        .expect("proxy answers");
    let status = response.status();
    let answer: serde_json::Value = response.json().expect("json");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["body_bytes"], BODY_BYTES, "the upstream got every byte");

    let peak = peak_rss_kib(node.pid());
    eprintln!(
        "proxy peak RSS: {} KiB before the upload, {} KiB after a 100 MiB body",
        before, peak
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB: the body was buffered"
    );
}

#[test]
fn bodies_of_unknown_length_stream_through_in_chunks_both_ways() {
    let upstream = Upstream::start("chunks");
    let (cluster, key) = node_with_route(
        "chunks",
        json!({ "path_prefix": "/", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] }),
    );
    let node = cluster.node(1);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("client");

    // A request body without a length (chunked from the client) reaches the upstream
    // whole, chunked again, and the answer comes back on the same keep-alive pool twice.
    const UPLOAD: u64 = 3 * 1024 * 1024 + 17;
    for _ in 0..2 {
        let response = client
            .put(node.proxy_url("/upload"))
            .bearer_auth(&key)
            .body(reqwest::blocking::Body::new(Generated { left: UPLOAD }))
            .send()
            .expect("proxy answers");
        let status = response.status();
        let answer: serde_json::Value = response.json().expect("json");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["body_bytes"], UPLOAD, "the upstream got every byte");
    }
    let seen = upstream.seen();
    let upload = seen.last().expect("the upstream saw the upload");
    assert_eq!(
        upload.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert!(!upload.headers.contains_key("content-length"));

    // An answer without a length streams back whole.
    let mut response = client
        .get(node.proxy_url("/pieces/2000"))
        .bearer_auth(&key)
        .send()
        .expect("proxy answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    assert!(response.headers().get("x-request-id").is_some());
    let mut text = String::new();
    response.read_to_string(&mut text).expect("body");
    let expected: String = (0..2000).map(|i| format!("piece {i}\n")).collect();
    assert_eq!(text, expected);
}

/// A target that answers 413 as soon as it has a request's head and reads nothing more,
/// keeping the connection open (as a server that lingers before closing does). Returns its
/// port and the connections it holds.
fn start_refusing_target() -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind target");
    let port = listener.local_addr().expect("target address").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let holder = holder.clone();
            std::thread::spawn(move || {
                // Health probes connect and leave without a request.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large";
                if stream.write_all(answer).is_ok() {
                    holder.lock().expect("held connections").push(stream);
                }
            });
        }
    });
    (port, held)
}

#[test]
fn an_answer_the_target_gives_before_the_body_ends_reaches_the_client() {
    let (target_port, _held) = start_refusing_target();
    let (cluster, key) = node_with_route(
        "early",
        json!({
            "path_prefix": "/early",
            "auth": "api_key",
            "timeout_ms": 30_000,
            "upstreams": [{ "url": format!("http://127.0.0.1:{target_port}") }],
        }),
    );
    let node = cluster.node(1);

    // The client announces 100 MiB and keeps sending while it waits for the answer; the
    // target stops reading after the head, so the body can never be delivered whole.
    let mut client = TcpStream::connect(("127.0.0.1", node.proxy_port)).expect("connect to the proxy");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    client
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    let head = format!(
        "POST /early/upload HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\ncontent-length: {BODY_BYTES}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).expect("send the head");
    let mut sender = client.try_clone().expect("clone the client socket");
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < BODY_BYTES && sender.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
        }
    });

    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(9).any(|w| w == b"too large") {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(error) => panic!(
                "no answer within 10 s ({error}); read so far: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "the target's early answer should reach the client: {answer:?}"
    );
    assert!(answer.ends_with("too large"), "{answer:?}");
}
