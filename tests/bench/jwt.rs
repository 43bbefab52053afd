//! Benchmark: what JWT verification costs per request, through the proxy, against API-key
//! authentication in the same run. One gateway worker, so the difference in throughput is
//! the difference in CPU per request. Each JWT route is measured with one token (served
//! from the verified-token cache after its first use) and with more distinct tokens than
//! the cache holds, sent in rotation (every request verifies a signature).
//!
//! Run: `cargo bench -p credentialflow --bench jwt`
//! Needs `nginx` and `wrk` on the PATH (Debian: `apt-get install nginx-light wrk`).
//! Options via env: `BENCH_SECONDS` (default 10), `BENCH_CONNECTIONS` (default 32),
//! `BENCH_TOKENS` (distinct tokens of the uncached runs, default 12000; the cache holds
//! 10000).

#[path = "common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use common::{env_or, require_tools, row, wait_http, wrk, wrk_rotating, Nginx, Run};
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::idp;
use support::{create_key_with, free_port, wait_for, Cluster};

fn main() {
    require_tools();
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let distinct = env_or("BENCH_TOKENS", 12_000) as usize;
    let root = tempfile::tempdir().expect("tempdir");

    let upstream_port = free_port();
    let _upstream = Nginx::start(
        root.path(),
        "upstream",
        "1",
        &format!("  server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 \"ok\\n\"; }} }}"),
    );
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    wait_http(&format!("{upstream}/"));

    let cluster = Cluster::start(1, &["--workers", "1"]);
    let node = cluster.node(1);
    let issuer = "https://idp.bench";
    let jwt_route = |prefix: &str, key: &str, algorithm: &str| {
        json!({
            "path_prefix": prefix, "auth": "jwt", "upstreams": [{ "url": upstream }],
            "jwt": { "issuer": issuer, "audience": "bench", "keys": [idp::fixture(key)], "algorithms": [algorithm] }
        })
    };
    for (id, body) in [
        (
            "key",
            json!({ "path_prefix": "/key", "auth": "api_key", "upstreams": [{ "url": upstream }] }),
        ),
        ("rs", jwt_route("/rs", "rsa1.pub.pem", "RS256")),
        ("es", jwt_route("/es", "ec1.pub.pem", "ES256")),
    ] {
        let answer = node
            .put(&format!("/v1/routes/{id}"), &body)
            .expect("admin answers");
        assert_eq!(answer.status, 201, "{}", answer.text);
    }
    let (_, key) = create_key_with(node, json!({}));
    let exp = chrono::Utc::now().timestamp() + 3_600;
    let claims = |n: usize| json!({ "iss": issuer, "aud": "bench", "sub": format!("user-{n}"), "exp": exp });
    let mint = |key: &str, algorithm: Algorithm, count: usize, name: &str| {
        let path = root.path().join(name);
        let mut file = std::fs::File::create(&path).expect("token file");
        for n in 0..count {
            writeln!(file, "{}", idp::sign(key, algorithm, None, &claims(n))).expect("write token");
        }
        path
    };
    eprintln!("minting {distinct} RS256 and {distinct} ES256 tokens...");
    let rs_tokens = mint("rsa1", Algorithm::RS256, distinct, "rs.tokens");
    let es_tokens = mint("ec1", Algorithm::ES256, distinct, "es.tokens");
    let rs_one = idp::sign("rsa1", Algorithm::RS256, None, &claims(0));
    let es_one = idp::sign("ec1", Algorithm::ES256, None, &claims(0));
    for (path, token) in [("/key/x", &key), ("/rs/x", &rs_one), ("/es/x", &es_one)] {
        wait_for(Duration::from_secs(10), path, || {
            node.proxy_get(path, Some(token)).filter(|a| a.status == 200)
        });
    }

    let key_url = node.proxy_url("/key/x");
    let rs_url = node.proxy_url("/rs/x");
    let es_url = node.proxy_url("/es/x");
    // Warm up, then measure.
    wrk(&key_url, &key, connections, 2, None, root.path());
    let runs: Vec<(&str, Run)> = vec![
        (
            "API key",
            wrk(&key_url, &key, connections, seconds, None, root.path()),
        ),
        (
            "JWT RS256, cached",
            wrk(&rs_url, &rs_one, connections, seconds, None, root.path()),
        ),
        (
            "JWT RS256, every request verified",
            wrk_rotating(&rs_url, &rs_tokens, connections, seconds, root.path()),
        ),
        (
            "JWT ES256, cached",
            wrk(&es_url, &es_one, connections, seconds, None, root.path()),
        ),
        (
            "JWT ES256, every request verified",
            wrk_rotating(&es_url, &es_tokens, connections, seconds, root.path()),
        ),
        (
            "API key (again)",
            wrk(&key_url, &key, connections, seconds, None, root.path()),
        ),
    ];
    let baseline = (runs[0].1.requests_per_sec + runs[5].1.requests_per_sec) / 2.0;
    println!("JWT benchmark: one gateway worker, wrk -c{connections} -d{seconds}s, {distinct} distinct tokens when uncached");
    println!(
        "| authentication                       | workers | requests/s |  p50 ms  |  p99 ms  | errors |"
    );
    println!(
        "|--------------------------------------|---------|------------|----------|----------|--------|"
    );
    for (name, run) in &runs {
        row(name, "1", run);
    }
    println!();
    println!(
        "| authentication                       | throughput vs API key | CPU per request over API key |"
    );
    println!(
        "|--------------------------------------|-----------------------|------------------------------|"
    );
    for (name, run) in &runs[1..5] {
        println!(
            "| {name:<36} | {:>20.2}x | {:>25.1} µs |",
            run.requests_per_sec / baseline,
            (1.0 / run.requests_per_sec - 1.0 / baseline) * 1e6
        );
    }
}
