//! Benchmark: admin write throughput and latency of a three-node credentialflow cluster
//! (key creation, `POST /v1/keys`) against a three-member etcd cluster (`PUT` through its
//! HTTP/JSON gateway, `/v3/kv/put`), same machine, same run, same concurrency.
//!
//! Both systems fsync every write on a majority before acknowledging it (etcd always syncs
//! its WAL; credentialflow syncs its RocksDB WAL before acknowledging an append).
//!
//! Run: `cargo bench -p credentialflow --bench admin_writes`
//! Needs `etcd` on the PATH (Debian: `apt-get install etcd-server`). Options via env:
//! `BENCH_SECONDS` (per measurement, default 10), `BENCH_CONCURRENCY` (default "1,64"),
//! `BENCH_ROUNDS` (interleaved rounds per row, default 2). With one client among the
//! levels, it ends with the one-client floor of this design on this machine
//! (`write_floor.rs`).

#[path = "closed_loop.rs"]
mod closed_loop;
#[path = "../support/mod.rs"]
mod support;
#[path = "write_floor.rs"]
mod write_floor;

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use closed_loop::{measure, post_json, Compose, Measurement};
use serde_json::json;
use support::{free_port, wait_for, Cluster};

/// A three-member etcd cluster on loopback, killed on drop.
struct Etcd {
    children: Vec<Child>,
    client_ports: Vec<u16>,
}

impl Etcd {
    fn start(root: &Path) -> Self {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial = (0..3)
            .map(|i| format!("e{i}=http://127.0.0.1:{}", peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for i in 0..3 {
            let dir = root.join(format!("etcd{i}"));
            let log = std::fs::File::create(root.join(format!("etcd{i}.log"))).expect("log");
            let child = Command::new("etcd")
                .args([
                    "--name",
                    &format!("e{i}"),
                    "--data-dir",
                    &dir.display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{}", clients[i]),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{}", clients[i]),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", peers[i]),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", peers[i]),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "credentialflow-bench",
                    "--log-level",
                    "warn",
                    "--logger",
                    "zap",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start etcd (apt-get install etcd-server)");
            children.push(child);
        }
        let etcd = Self {
            children,
            client_ports: clients,
        };
        wait_for(Duration::from_secs(60), "etcd leader", || etcd.leader_port());
        etcd
    }

    /// Returns the client port of the member that is leader.
    fn leader_port(&self) -> Option<u16> {
        let client = support::http();
        for port in &self.client_ports {
            let answer = support::send(
                client
                    .post(format!("http://127.0.0.1:{port}/v3/maintenance/status"))
                    .json(&json!({})),
            )?;
            let member: u64 = answer.body["header"]["member_id"].as_str()?.parse().ok()?;
            let leader: u64 = answer.body["leader"].as_str()?.parse().ok()?;
            if member == leader {
                return Some(*port);
            }
        }
        None
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn row(system: &str, target: &str, concurrency: usize, m: &Measurement) {
    println!(
        "| {system:<14} | {target:<9} | {concurrency:>4} | {:>8} | {:>6} | {:>10.0} | {:>8.2} | {:>8.2} |",
        m.requests,
        m.errors,
        m.throughput(),
        m.percentile_ms(50.0),
        m.percentile_ms(99.0)
    );
}

/// Creates key `seq`, with a metadata field of `padding`.
fn key_creation(padding: &str) -> Compose {
    let padding = padding.to_owned();
    Arc::new(move |seq, port, request| {
        let mut body = Vec::with_capacity(256);
        let _ = write!(
            body,
            r#"{{"name":"bench-{seq}","metadata":{{"pad":"{padding}"}}}}"#
        );
        post_json(request, port, "/v1/keys", Some(support::TOKEN), &body);
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    // Rounds alternate the two systems, so drift of the shared machine hits both alike.
    let rounds: u64 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .max(1);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let nodes: u64 = std::env::var("BENCH_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let with_etcd = std::env::var("BENCH_ETCD").map_or(true, |v| v != "0");
    let node_log = std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into());
    let cluster = Cluster::start(nodes, &["--log", &node_log]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let leader_port = cluster.node(leader).admin_port;
    let admin_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.admin_port).collect();

    let etcd_root = tempfile::tempdir().expect("tempdir");
    let etcd = with_etcd.then(|| Etcd::start(etcd_root.path()));
    let etcd_leader = etcd.as_ref().and_then(Etcd::leader_port).unwrap_or(0);
    let etcd_ports = etcd.as_ref().map(|e| e.client_ports.clone()).unwrap_or_default();

    // A value of about the size of a replicated key record.
    let padding = "m".repeat(160);
    println!("\nadmin writes, {nodes} credentialflow nodes and 3 etcd members on loopback, {rounds} interleaved rounds of {seconds} s per row, every write fsynced by a majority\n");
    println!("| system         | sent to   | conc | requests | errors |    req/s   | p50 ms   | p99 ms   |");
    println!("|----------------|-----------|------|----------|--------|------------|----------|----------|");
    let mut ratios = Vec::new();
    let mut etcd_one_client_leader_rps = None;
    for &concurrency in &levels {
        for (target, spread) in [("leader", false), ("any node", true)] {
            let ports = if spread {
                admin_ports.clone()
            } else {
                vec![leader_port]
            };
            let credentialflow = key_creation(&padding);
            let cf_ports = ports;
            let etcd_target_ports = if spread {
                etcd_ports.clone()
            } else {
                vec![etcd_leader]
            };
            let value = padding.clone();
            let etcd_put: Compose = Arc::new(move |seq, port, request| {
                let key = base64(format!("bench/key_{seq}").as_bytes());
                let value =
                    base64(format!(r#"{{"name":"bench-{seq}","metadata":{{"pad":"{value}"}}}}"#).as_bytes());
                let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                post_json(request, port, "/v3/kv/put", None, body.as_bytes());
            });
            let mut cf_rounds = Vec::new();
            let mut etcd_rounds = Vec::new();
            for round in 0..rounds {
                cf_rounds.push(measure(
                    &cf_ports,
                    credentialflow.clone(),
                    concurrency,
                    duration,
                    201,
                    round,
                ));
                if with_etcd {
                    etcd_rounds.push(measure(
                        &etcd_target_ports,
                        etcd_put.clone(),
                        concurrency,
                        duration,
                        200,
                        round,
                    ));
                }
            }
            let cf = Measurement::pooled(cf_rounds);
            row("credentialflow", target, concurrency, &cf);
            if !with_etcd {
                continue;
            }
            let et = Measurement::pooled(etcd_rounds);
            row("etcd", target, concurrency, &et);
            if concurrency == 1 && !spread {
                etcd_one_client_leader_rps = Some(et.throughput());
            }
            ratios.push((
                concurrency,
                target,
                cf.throughput() / et.throughput(),
                cf.percentile_ms(99.0),
                et.percentile_ms(99.0),
            ));
        }
    }
    println!("\n| conc | sent to   | throughput credentialflow/etcd | p99 credentialflow vs etcd |");
    println!("|------|-----------|--------------------------------|----------------------------|");
    for (concurrency, target, ratio, cf_p99, et_p99) in ratios {
        println!(
            "| {concurrency:>4} | {target:<9} | {ratio:>29.2}x | {cf_p99:>8.2} ms vs {et_p99:>6.2} ms |"
        );
    }
    if levels.contains(&1) {
        let one_node = Cluster::start(1, &["--log", &node_log]);
        let one_node_port = one_node
            .node(one_node.wait_for_leader(Duration::from_secs(30)))
            .admin_port;
        write_floor::WriteFloor::measure(
            leader_port,
            etcd_root.path(),
            one_node_port,
            key_creation(&padding),
        )
        .print(etcd_one_client_leader_rps);
    }
    if let Ok(dir) = std::env::var("BENCH_KEEP_LOGS") {
        for node in &cluster.nodes {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                node.log_path(),
                Path::new(&dir).join(format!("node{}.log", node.id)),
            );
        }
    }
    drop(etcd);
    drop(cluster);
}
