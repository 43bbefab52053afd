//! Benchmark: the credentialflow proxy, with API-key authentication on every request,
//! against nginx 1.22 as a plain reverse proxy (`proxy_pass` with upstream keepalive), both
//! in front of the same upstream, driven by the same `wrk` command (connections, duration,
//! headers), in the same run.
//!
//! Two pairings: one gateway worker thread against one nginx worker (a per-core figure),
//! and each side's defaults (one worker per core). Then the latency the gateway adds over a
//! direct call to the upstream, both driven at half the gateway's measured throughput.
//!
//! Each pairing also measures a third system: nginx configured to do the gateway's
//! forwarding work short of authentication (the credential withheld, `X-Forwarded-*`, the
//! key id, a request id both ways), which shows what those headers cost the proxy, the
//! upstream and the load generator on the shared cores. The target ratio is against the
//! plain `proxy_pass`.
//!
//! And a floor (`proxy_floor.rs`): a bare tokio forwarder that authenticates nothing, run
//! as it came and with the gateway's header work. It shows the rate this machine allows a
//! proxy at all, with the load generator and the upstream on the same cores. For every system
//! the bench prints the CPU each request cost the proxy, the upstream and wrk.
//!
//! Run: `cargo bench -p credentialflow --bench proxy`
//! Needs `nginx` and `wrk` on the PATH (Debian: `apt-get install nginx-light wrk`).
//! Options via env: `BENCH_SECONDS` (per measurement, default 10), `BENCH_CONNECTIONS`
//! (default 64), `BENCH_WRK_THREADS` (default 1), `BENCH_ROUNDS` (default 2, interleaved).

#[path = "common/mod.rs"]
mod common;
#[path = "proxy_floor.rs"]
mod proxy_floor;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use common::cpu::{self, Cpu};
use common::{env_or, mean, require_tools, row, wait_http, wrk, Nginx, Run};
use serde_json::json;
use support::{create_key_with, free_port, wait_for, Cluster};

/// An nginx server that forwards as the gateway does, without authenticating: the client's
/// credential withheld, `X-Forwarded-For` (appended to), `-Proto` and `-Host`, the key's
/// id, and a request id (kept if sent, else made) upstream and back to the client.
fn like_for_like(upstream_port: u16, listen_port: u16, key_id: &str) -> String {
    format!(
        "  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}\n\
         map $http_x_request_id $forwarded_request_id {{ \"\" $request_id; default $http_x_request_id; }}\n\
         server {{ listen 127.0.0.1:{listen_port};\n\
           location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
             proxy_set_header Authorization \"\"; proxy_set_header X-API-Key \"\";\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;\n\
             proxy_set_header X-Request-Id $forwarded_request_id;\n\
             proxy_set_header X-Credentialflow-Key-Id \"{key_id}\";\n\
             add_header X-Request-Id $forwarded_request_id; }} }}"
    )
}

fn main() {
    require_tools();
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 64);
    let rounds = env_or("BENCH_ROUNDS", 2).max(1);
    let root = tempfile::tempdir().expect("tempdir");

    // The shared upstream: one nginx worker answering a small fixed body.
    let upstream_port = free_port();
    let upstream_nginx = Nginx::start(
        root.path(),
        "upstream",
        "1",
        &format!(
            "  server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 \"hello from upstream\\n\"; }} }}"
        ),
    );
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    wait_http(&format!("{upstream}/"));

    println!(
        "proxy benchmark: wrk -c{connections} -d{seconds}s, {rounds} interleaved round(s), same upstream"
    );
    println!(
        "| system                               | workers | requests/s |  p50 ms  |  p99 ms  | errors |"
    );
    println!(
        "|--------------------------------------|---------|------------|----------|----------|--------|"
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut gateway_default_rate = 0.0;
    let mut gateway_url_default = String::new();
    let mut key_default = String::new();
    let mut keep_alive: Vec<Cluster> = Vec::new();
    for (label, gateway_workers, nginx_workers) in [
        ("1", Some(1), "1".to_owned()),
        ("default", None, "auto".to_owned()),
    ] {
        let proxy_port = free_port();
        let nginx = Nginx::start(
            root.path(),
            &format!("proxy-{label}"),
            &nginx_workers,
            &format!(
                "  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}\n\
                 server {{ listen 127.0.0.1:{proxy_port};\n\
                   location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
            ),
        );
        let nginx_url = format!("http://127.0.0.1:{proxy_port}/bench");
        wait_http(&nginx_url);

        let extra: Vec<String> = match gateway_workers {
            Some(n) => vec!["--workers".to_owned(), n.to_string()],
            None => Vec::new(),
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let cluster = Cluster::start(1, &extra);
        let node = cluster.node(1);
        let route = json!({ "path_prefix": "/", "auth": "api_key", "upstreams": [{ "url": upstream }] });
        assert_eq!(node.put("/v1/routes/bench", &route).expect("admin").status, 201);
        let (key_id, key) = create_key_with(node, json!({}));
        let gateway_url = node.proxy_url("/bench");
        let like_port = free_port();
        let like = Nginx::start(
            root.path(),
            &format!("proxy-like-{label}"),
            &nginx_workers,
            &like_for_like(upstream_port, like_port, &key_id),
        );
        let like_url = format!("http://127.0.0.1:{like_port}/bench");
        wait_http(&like_url);
        let floor_workers = gateway_workers.unwrap_or(cores);
        let floor_url = |headers| {
            let port = proxy_floor::start(floor_workers, ([127, 0, 0, 1], upstream_port).into(), headers);
            let url = format!("http://127.0.0.1:{port}/bench");
            wait_http(&url);
            url
        };
        let floor_url_as_received = floor_url(proxy_floor::Headers::AsReceived);
        let floor_url_gateway = floor_url(proxy_floor::Headers::Gateway);
        wait_for(Duration::from_secs(10), "the gateway to serve", || {
            node.proxy_get("/bench", Some(&key)).filter(|a| a.status == 200)
        });

        // Each has answered above, so nginx's workers are running and can be found.
        let systems = [
            (
                "nginx 1.22 proxy_pass (no auth)",
                &nginx_url,
                Cpu::nginx_workers(nginx.pid()),
            ),
            (
                "nginx 1.22, the gateway's headers",
                &like_url,
                Cpu::nginx_workers(like.pid()),
            ),
            (
                "credentialflow (API-key auth)",
                &gateway_url,
                Cpu::Processes(vec![node.pid()]),
            ),
            (
                "floor: bare tokio forwarder",
                &floor_url_as_received,
                Cpu::OwnThreads(proxy_floor::Headers::AsReceived.thread_prefix()),
            ),
            (
                "floor, the gateway's headers",
                &floor_url_gateway,
                Cpu::OwnThreads(proxy_floor::Headers::Gateway.thread_prefix()),
            ),
        ];
        // Warm each up, then interleave the measured rounds.
        for (_, url, _) in &systems {
            wrk(url, &key, connections, 2, None, root.path());
        }
        // What a request costs the machine: the proxy, the upstream and the load generator
        // share its cores, so each one's CPU per request bounds the rate of all.
        let shared = [Cpu::nginx_workers(upstream_nginx.pid()), Cpu::ReapedChildren];
        let mut runs = vec![Vec::new(); systems.len()];
        let mut cpu_us = vec![Vec::new(); systems.len()];
        for _ in 0..rounds {
            for (i, (_, url, proxy)) in systems.iter().enumerate() {
                let meters = [proxy, &shared[0], &shared[1]];
                let before = meters.map(Cpu::ticks);
                let run = wrk(url, &key, connections, seconds, None, root.path());
                let after = meters.map(Cpu::ticks);
                let spent = std::array::from_fn::<f64, 3, _>(|m| {
                    cpu::us_per_request(after[m].saturating_sub(before[m]), run.requests)
                });
                cpu_us[i].push(spent);
                runs[i].push(run);
            }
        }
        let means: Vec<Run> = runs.iter().map(|r| mean(r)).collect();
        let workers = if label == "1" {
            "1".to_owned()
        } else {
            format!("{cores}")
        };
        for ((name, _, _), run) in systems.iter().zip(&means) {
            row(name, &workers, run);
        }
        let [nginx_run, like_run, gateway_run, floor_run, floor_headers_run] =
            [means[0], means[1], means[2], means[3], means[4]];
        for (name, of, base) in [
            ("ratio credentialflow / nginx", gateway_run, nginx_run),
            ("ratio to nginx with its headers", gateway_run, like_run),
            ("ratio floor / nginx", floor_run, nginx_run),
            ("ratio floor with headers / nginx", floor_headers_run, nginx_run),
        ] {
            println!(
                "|   {name:<34} |         | {:>9.2}x |          |          |        |",
                of.requests_per_sec / base.requests_per_sec
            );
        }
        println!("CPU per request, microseconds (mean over rounds; the proxy's own rounds after it):");
        println!("| system                               |  proxy | upstream |    wrk |  total | proxy, each round");
        for ((name, _, _), rounds) in systems.iter().zip(&cpu_us) {
            let n = rounds.len() as f64;
            let part = |m: usize| rounds.iter().map(|r| r[m]).sum::<f64>() / n;
            let each: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r[0])).collect();
            println!(
                "| {name:<36} | {:>6.2} | {:>8.2} | {:>6.2} | {:>6.2} | {}",
                part(0),
                part(1),
                part(2),
                part(0) + part(1) + part(2),
                each.join(" / ")
            );
        }
        drop(like);
        drop(nginx);
        if gateway_workers.is_none() {
            gateway_default_rate = gateway_run.requests_per_sec;
            gateway_url_default = gateway_url;
            key_default = key;
            keep_alive.push(cluster);
        }
    }

    // Added latency at half load: about the same request rate straight to the upstream and
    // through the gateway. wrk offers load in a closed loop, so each path gets a number of
    // connections (each pausing 1 ms between requests) calibrated to reach that rate.
    let half = gateway_default_rate / 2.0;
    let direct_url = format!("{upstream}/bench");
    let at_half_load = |url: &str| {
        let mut connections = 32u64;
        for _ in 0..2 {
            let probe = wrk(url, &key_default, connections, 3, Some(1), root.path());
            let scaled = (connections as f64 * half / probe.requests_per_sec).round();
            connections = scaled.clamp(1.0, 1024.0) as u64;
        }
        (
            connections,
            wrk(url, &key_default, connections, seconds, Some(1), root.path()),
        )
    };
    let (direct_connections, direct) = at_half_load(&direct_url);
    let (through_connections, through) = at_half_load(&gateway_url_default);
    println!();
    println!("half load (target {half:.0} req/s; each connection pauses 1 ms between requests):");
    println!("| path                                 | connections | requests/s |  p50 ms  |  p99 ms  |");
    println!("|--------------------------------------|-------------|------------|----------|----------|");
    for (name, connections, run) in [
        ("direct to upstream", direct_connections, &direct),
        ("through credentialflow", through_connections, &through),
    ] {
        println!(
            "| {name:<36} | {connections:>11} | {:>10.0} | {:>8.3} | {:>8.3} |",
            run.requests_per_sec, run.p50_ms, run.p99_ms
        );
    }
    println!(
        "added by the gateway: p50 {:+.3} ms, p99 {:+.3} ms",
        through.p50_ms - direct.p50_ms,
        through.p99_ms - direct.p99_ms
    );
    drop(keep_alive);
}
