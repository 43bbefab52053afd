//! A 100 MB request body streams through the proxy: the upstream receives every byte and
//! the proxy's peak resident memory stays far below the body's size.

mod support;

use std::io::Read;
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

#[test]
fn a_100_mb_body_streams_through_with_bounded_memory() {
    let upstream = Upstream::start("sink");
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let route =
        json!({ "path_prefix": "/upload", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] });
    assert_eq!(
        node.put("/v1/routes/upload", &route)
            .expect("admin answers")
            .status,
        201
    );
    let (_, key) = create_key_with(node, json!({}));
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
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let route = json!({ "path_prefix": "/", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] });
    assert_eq!(
        node.put("/v1/routes/chunks", &route)
            .expect("admin answers")
            .status,
        201
    );
    let (_, key) = create_key_with(node, json!({}));
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
