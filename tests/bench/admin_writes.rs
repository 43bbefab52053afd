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
//! `BENCH_ROUNDS` (interleaved rounds per row, default 2).

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, wait_for, Cluster};

/// What one measurement produced.
struct Measurement {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Measurement {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Pools rounds of one measurement: their requests, time and latencies.
    fn pooled(rounds: Vec<Measurement>) -> Measurement {
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

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank] as f64 / 1000.0
    }
}

/// A write to send: URL, headers and a body made unique by the sequence number.
type RequestFactory = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Drives `concurrency` closed-loop clients for `duration` and collects latencies; `round`
/// keeps the sequence numbers (and so the names written) of different rounds apart.
fn measure(
    factory: RequestFactory,
    concurrency: usize,
    duration: Duration,
    expect_status: u16,
    round: u64,
) -> Measurement {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("load runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("client");
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let client = client.clone();
            let factory = factory.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut seq = (round << 56) | ((worker as u64) << 40);
                while Instant::now() < deadline {
                    seq += 1;
                    let sent = Instant::now();
                    let ok = match factory(&client, seq).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            status == expect_status
                        }
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            }));
        }
        let mut latencies_us = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (mut l, e) = task.await.expect("worker");
            latencies_us.append(&mut l);
            errors += e;
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
    for &concurrency in &levels {
        for (target, spread) in [("leader", false), ("any node", true)] {
            let ports = if spread {
                admin_ports.clone()
            } else {
                vec![leader_port]
            };
            let meta = padding.clone();
            let credentialflow: RequestFactory = Arc::new(move |client, seq| {
                let port = ports[(seq as usize) % ports.len()];
                client
                    .post(format!("http://127.0.0.1:{port}/v1/keys"))
                    .bearer_auth(support::TOKEN)
                    .json(&json!({ "name": format!("bench-{seq}"), "metadata": { "pad": meta } }))
            });
            let ports = if spread {
                etcd_ports.clone()
            } else {
                vec![etcd_leader]
            };
            let value = padding.clone();
            let etcd_put: RequestFactory = Arc::new(move |client, seq| {
                let port = ports[(seq as usize) % ports.len()];
                let body: Value = json!({
                    "key": base64(format!("bench/key_{seq}").as_bytes()),
                    "value": base64(format!("{{\"name\":\"bench-{seq}\",\"metadata\":{{\"pad\":\"{value}\"}}}}").as_bytes()),
                });
                client
                    .post(format!("http://127.0.0.1:{port}/v3/kv/put"))
                    .json(&body)
            });
            let mut cf_rounds = Vec::new();
            let mut etcd_rounds = Vec::new();
            for round in 0..rounds {
                cf_rounds.push(measure(credentialflow.clone(), concurrency, duration, 201, round));
                if with_etcd {
                    etcd_rounds.push(measure(etcd_put.clone(), concurrency, duration, 200, round));
                }
            }
            let cf = Measurement::pooled(cf_rounds);
            row("credentialflow", target, concurrency, &cf);
            if !with_etcd {
                continue;
            }
            let et = Measurement::pooled(etcd_rounds);
            row("etcd", target, concurrency, &et);
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
