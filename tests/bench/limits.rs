//! Benchmark: what exact cluster-wide limits cost, on a three-node cluster.
//!
//! 1. Throughput through one follower's proxy, same `wrk` load, interleaved rounds: a key
//!    without limits against a key whose limit is never reached. Its slices come from the
//!    leader through Raft, so this is the whole cost: the local take on every request plus
//!    the leaser's asks. Reported as a ratio, with the Raft commands per 1,000 admitted.
//! 2. Skewed load against a limit that is reached: 80% of the requests on one node, 10% on
//!    each of the others, all at once, twice the limit offered. A counting upstream gives
//!    the overshoot (target: zero) and the usable fraction (target: at least 95%).
//!
//! Run: `cargo bench -p credentialflow --bench limits`
//! Needs `nginx` and `wrk` on the PATH (Debian: `apt-get install nginx-light wrk`).
//! Options via env: `BENCH_SECONDS` (per measurement, default 10), `BENCH_CONNECTIONS`
//! (default 64), `BENCH_ROUNDS` (default 2), `BENCH_LIMIT` (part 2, default 3000).

#[path = "common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use common::{env_or, mean, require_tools, row, wait_http, wrk, Nginx};
use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{create_key_with, free_port, http, long_window_secs, wait_for, Cluster, Node};

/// The first limit of a key, read through the leader.
fn limit_view(node: &Node, key_id: &str) -> Value {
    let answer = node
        .get(&format!("/v1/keys/{key_id}/limits?consistency=linearizable"))
        .expect("admin answers");
    answer.body["limits"][0].clone()
}

fn wait_served(node: &Node, path: &str, key: &str) {
    wait_for(Duration::from_secs(15), "the gateway to serve", || {
        node.proxy_get(path, Some(key)).filter(|a| a.status == 200)
    });
}

fn main() {
    require_tools();
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 64);
    let rounds = env_or("BENCH_ROUNDS", 2).max(1);
    let limit = env_or("BENCH_LIMIT", 3_000);
    let root = tempfile::tempdir().expect("tempdir");

    let upstream_port = free_port();
    let _nginx_upstream = Nginx::start(
        root.path(),
        "upstream",
        "1",
        &format!("  server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 \"ok\\n\"; }} }}"),
    );
    let fast_upstream = format!("http://127.0.0.1:{upstream_port}");
    wait_http(&format!("{fast_upstream}/"));
    let counting = Upstream::start("counting");

    let cluster = Cluster::start(3, &[]);
    let leader_id = cluster.wait_for_leader(Duration::from_secs(30));
    let leader = cluster.node(leader_id);
    let follower = cluster.node(cluster.follower_of(leader_id));
    for (id, prefix, url) in [
        ("fast", "/fast", &fast_upstream),
        ("counted", "/counted", &counting.url()),
    ] {
        let route = json!({ "path_prefix": prefix, "auth": "api_key", "upstreams": [{ "url": url }] });
        assert_eq!(
            leader
                .put(&format!("/v1/routes/{id}"), &route)
                .expect("admin")
                .status,
            201
        );
    }
    let window_secs = long_window_secs();

    // Part 1: a limit that is never reached against none.
    let (_, plain_key) = create_key_with(leader, json!({}));
    let (metered_id, metered_key) = create_key_with(
        leader,
        json!({ "limits": [{ "requests": 1_000_000_000_000u64, "window_secs": window_secs }] }),
    );
    wait_served(follower, "/fast/x", &plain_key);
    wait_served(follower, "/fast/x", &metered_key);
    let url = follower.proxy_url("/fast/x");
    wrk(&url, &plain_key, connections, 2, None, root.path());
    wrk(&url, &metered_key, connections, 2, None, root.path());
    let asks_before = limit_view(leader, &metered_id)["asks"].as_u64().unwrap_or(0);
    let mut plain_runs = Vec::new();
    let mut metered_runs = Vec::new();
    for _ in 0..rounds {
        plain_runs.push(wrk(&url, &plain_key, connections, seconds, None, root.path()));
        metered_runs.push(wrk(&url, &metered_key, connections, seconds, None, root.path()));
    }
    let asks = limit_view(leader, &metered_id)["asks"].as_u64().unwrap_or(0) - asks_before;
    let (plain, metered) = (mean(&plain_runs), mean(&metered_runs));
    println!(
        "limits benchmark, part 1: a follower's proxy of a 3-node cluster, wrk -c{connections} -d{seconds}s, \
         {rounds} interleaved round(s)"
    );
    println!(
        "| key                                  | workers | requests/s |  p50 ms  |  p99 ms  | errors |"
    );
    println!(
        "|--------------------------------------|---------|------------|----------|----------|--------|"
    );
    let cores = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .to_string();
    row("no limit", &cores, &plain);
    row("limit never reached (exact, cluster)", &cores, &metered);
    let ratio = metered.requests_per_sec / plain.requests_per_sec;
    println!(
        "throughput with the limit: {ratio:.3}x ({:+.1}% cost); Raft commands per 1,000 admitted: {:.3} \
         ({asks} asks for {} requests)",
        (1.0 - ratio) * 100.0,
        asks as f64 * 1000.0 / metered.requests.max(1) as f64,
        metered.requests
    );

    // Part 2: skewed load against a limit that is reached.
    let (skew_id, skew_key) = create_key_with(
        leader,
        json!({ "limits": [{ "requests": limit, "window_secs": window_secs }] }),
    );
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "the key on every node", || {
            let answer = node.get(&format!("/v1/keys/{skew_id}"))?;
            (answer.status == 200).then_some(())
        });
    }
    let offered = limit * 2;
    // Ten client threads with equal shares: eight on the first node, one on each other.
    let per_thread = offered / 10;
    let targets: Vec<String> = (0..10)
        .map(|i| {
            let node = &cluster.nodes[match i {
                8 => 1,
                9 => 2,
                _ => 0,
            }];
            node.proxy_url("/counted/x")
        })
        .collect();
    let started = std::time::Instant::now();
    let threads: Vec<_> = targets
        .into_iter()
        .map(|url| {
            let key = skew_key.clone();
            std::thread::spawn(move || {
                let client = http();
                let mut statuses = [0u64; 6];
                for _ in 0..per_thread {
                    let status = client
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .map_or(0, |r| r.status().as_u16());
                    statuses[usize::from(status / 100).min(5)] += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses = [0u64; 6];
    for thread in threads {
        for (total, n) in statuses.iter_mut().zip(thread.join().expect("client thread")) {
            *total += n;
        }
    }
    let elapsed = started.elapsed();
    let received = counting.requests();
    let view = limit_view(leader, &skew_id);
    let skew_asks = view["asks"].as_u64().unwrap_or(0);
    println!();
    println!(
        "limits benchmark, part 2: limit {limit}, {offered} requests offered at once in {:.1} s, \
         80% on node {}, 10% on each other node",
        elapsed.as_secs_f64(),
        cluster.nodes[0].id
    );
    println!(
        "| upstream received | overshoot | usable | 2xx | 4xx | 5xx | no answer | Raft commands per 1,000 admitted |"
    );
    println!(
        "|-------------------|-----------|--------|-----|-----|-----|-----------|----------------------------------|"
    );
    println!(
        "| {received:>17} | {:>9} | {:>5.1}% | {:>3} | {:>3} | {:>3} | {:>9} | {:>32.1} |",
        received.saturating_sub(limit),
        received as f64 * 100.0 / limit as f64,
        statuses[2],
        statuses[4],
        statuses[5],
        statuses[0],
        skew_asks as f64 * 1000.0 / received.max(1) as f64
    );
}
