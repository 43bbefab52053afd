//! The data plane, black-box: real nodes, real upstream servers. Keys are judged the same
//! on every node, credentials never reach upstreams, failover loses no request, revocation
//! is in force everywhere when its answer arrives, and stale replicas fail closed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{create_key_with, http, send, wait_for, Cluster, Node, Signal};

/// These tests load the machine (three nodes, upstreams, client threads); run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn put_route(node: &Node, id: &str, body: Value) {
    let answer = node
        .put(&format!("/v1/routes/{id}"), &body)
        .expect("admin answers");
    assert!(
        answer.status == 201 || answer.status == 200,
        "put route {id}: {}",
        answer.text
    );
}

/// Waits until `node` serves `path` with `key` (the route and the key have replicated).
fn wait_served(node: &Node, path: &str, key: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("node {} to serve {path}", node.id),
        || node.proxy_get(path, Some(key)).filter(|a| a.status == 200),
    );
}

fn assert_refused(node: &Node, path: &str, key: Option<&str>, status: u16, code: &str) {
    let answer = node.proxy_get(path, key).expect("proxy answers");
    assert_eq!(
        (answer.status, answer.code()),
        (status, code),
        "node {} {path}: {}",
        node.id,
        answer.text
    );
}

/// Waits until every node serves `/api/x` with `key`.
fn wait_served_everywhere(cluster: &Cluster, key: &str) {
    for node in &cluster.nodes {
        wait_served(node, "/api/x", key);
    }
}

/// A cluster with the keyed route `/api` to a fresh upstream, and one key that every node
/// already serves.
struct ApiCluster {
    cluster: Cluster,
    /// Kept running for the whole test.
    upstream: Upstream,
    leader: u64,
    key_id: String,
    key: String,
}

impl ApiCluster {
    fn start(size: u64, extra: &[&str]) -> Self {
        let upstream = Upstream::start("api");
        let cluster = Cluster::start(size, extra);
        let leader = cluster.wait_for_leader(Duration::from_secs(30));
        put_route(
            cluster.node(leader),
            "api",
            json!({ "path_prefix": "/api", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] }),
        );
        let (key_id, key) = create_key_with(cluster.node(leader), json!({}));
        wait_served_everywhere(&cluster, &key);
        Self {
            cluster,
            upstream,
            leader,
            key_id,
            key,
        }
    }
}

fn rfc3339_in(delay: Duration) -> String {
    (chrono::Utc::now() + chrono::Duration::from_std(delay).expect("delay")).to_rfc3339()
}

#[test]
fn credentials_are_judged_the_same_on_every_node_and_never_reach_the_upstream() {
    let _serial = serial();
    let upstream = Upstream::start("billing");
    let cluster = Cluster::start(3, &["--usage-flush-interval", "200ms"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let admin = cluster.node(cluster.follower_of(leader));

    put_route(
        admin,
        "billing",
        json!({
            "path_prefix": "/billing", "auth": "api_key", "strip_prefix": true,
            "upstreams": [{ "url": upstream.url() }], "headers": { "X-Env": "test" }
        }),
    );
    put_route(
        admin,
        "other",
        json!({ "path_prefix": "/other", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] }),
    );
    let (good_id, good) = create_key_with(admin, json!({ "tenant": "acme" }));
    let (_, scoped) = create_key_with(admin, json!({ "scopes": ["other"] }));
    let (_, no_routes) = create_key_with(admin, json!({ "scopes": [] }));
    let (_, expiring) = create_key_with(admin, json!({ "expires_at": rfc3339_in(Duration::from_secs(2)) }));
    let (rotated_id, old_secret) = create_key_with(admin, json!({}));
    let rotation = admin
        .post(
            &format!("/v1/keys/{rotated_id}/rotate"),
            &json!({ "grace_secs": 1 }),
        )
        .expect("admin answers");
    assert_eq!(rotation.status, 200, "{}", rotation.text);
    let new_secret = rotation.body["key"].as_str().expect("new secret").to_owned();
    let unknown = cluster::secret::generate(&mut rand::thread_rng()).plaintext;

    for node in &cluster.nodes {
        wait_served(node, "/billing/x", &good);
        assert_refused(node, "/billing/x", None, 401, "missing_credential");
        assert_refused(
            node,
            "/billing/x",
            Some("cf_not-a-key"),
            401,
            "invalid_credential",
        );
        assert_refused(node, "/billing/x", Some(&unknown), 401, "invalid_credential");
        assert_refused(node, "/billing/x", Some(&scoped), 403, "forbidden");
        assert_refused(node, "/other/y", Some(&no_routes), 403, "forbidden");
        assert_refused(node, "/nowhere", Some(&good), 404, "no_route");
        assert_eq!(
            node.proxy_get("/other/y", Some(&scoped)).expect("answer").status,
            200
        );
        assert_eq!(
            node.proxy_get("/billing/x", Some(&new_secret))
                .expect("answer")
                .status,
            200
        );
    }
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "the expiry to take effect", || {
            let answer = node.proxy_get("/billing/x", Some(&expiring))?;
            (answer.status == 401).then_some(answer)
        });
        assert_refused(node, "/billing/x", Some(&expiring), 401, "expired");
        wait_for(Duration::from_secs(15), "the rotation grace to end", || {
            let answer = node.proxy_get("/billing/x", Some(&old_secret))?;
            (answer.status == 401).then_some(answer)
        });
        assert_refused(node, "/billing/x", Some(&old_secret), 401, "expired");
    }

    // What the upstream sees: the injected headers, never the credential.
    let via = cluster.node(3);
    let answer = send(
        http()
            .get(via.proxy_url("/billing/inner/path?q=1"))
            .header("X-API-Key", &good)
            .header("X-Request-Id", "req-7f3a")
            .header("X-Credentialflow-Key-Id", "spoofed")
            .header("X-Forwarded-For", "203.0.113.9")
            .header("Connection", "keep-alive, X-Hop")
            .header("X-Hop", "for this connection only")
            .header("X-Kept", "end to end"),
    )
    .expect("proxy answers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let seen = upstream.seen();
    let request = seen
        .iter()
        .find(|s| s.headers.get("x-request-id").map(String::as_str) == Some("req-7f3a"))
        .expect("the upstream saw the request");
    assert_eq!(request.path, "/inner/path?q=1", "strip_prefix and the query");
    assert_eq!(request.headers["x-credentialflow-key-id"], good_id);
    assert_eq!(request.headers["x-credentialflow-tenant"], "acme");
    assert_eq!(request.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(request.headers["x-forwarded-proto"], "http");
    assert_eq!(
        request.headers["x-forwarded-host"],
        format!("127.0.0.1:{}", via.proxy_port)
    );
    assert_eq!(request.headers["x-env"], "test");
    assert!(
        !request.headers.contains_key("x-hop"),
        "named in Connection: {request:?}"
    );
    assert_eq!(request.headers["x-kept"], "end to end");
    for request in &seen {
        assert!(!request.headers.contains_key("authorization"), "{request:?}");
        assert!(!request.headers.contains_key("x-api-key"), "{request:?}");
        for secret in [&good, &scoped, &no_routes, &expiring, &old_secret, &new_secret] {
            assert!(
                request.headers.values().all(|v| !v.contains(secret.as_str())),
                "a credential reached the upstream: {request:?}"
            );
        }
    }
    // HEAD keeps the length the upstream announces for the same GET.
    let get = http()
        .get(via.proxy_url("/billing/x"))
        .bearer_auth(&good)
        .send()
        .expect("get");
    let get_length = get.headers()["content-length"].clone();
    let head = http()
        .head(via.proxy_url("/billing/x"))
        .bearer_auth(&good)
        .send()
        .expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], get_length);

    // Without a sent id, one is generated and returned to the client as well.
    let generated = http()
        .get(via.proxy_url("/billing/x"))
        .bearer_auth(&good)
        .send()
        .expect("proxy answers");
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(upstream
        .seen()
        .iter()
        .any(|s| s.headers.get("x-request-id") == Some(&id)));

    // Usage: one successful request per node while waiting, then four through node 3.
    let usage = wait_for(Duration::from_secs(15), "usage to be folded in", || {
        let answer = admin.get(&format!("/v1/keys/{good_id}/usage"))?;
        (answer.body["requests"]["2xx"].as_u64()? >= 7).then_some(answer)
    });
    assert_eq!(usage.body["requests"]["2xx"], 7, "{}", usage.text);
    assert_eq!(usage.body["total"], 7, "{}", usage.text);
    assert!(usage.body["last_used_at"].is_string());

    // Audit: every admin write, with its actor and outcome, failures included.
    let refused = admin
        .post("/v1/keys/key_doesnotexist/revoke", &json!({}))
        .expect("admin answers");
    assert_eq!(refused.status, 404);
    let audit = cluster
        .node(leader)
        .get("/v1/audit?limit=1000")
        .expect("audit answers");
    assert_eq!(audit.status, 200, "{}", audit.text);
    let entries = audit.body["entries"].as_array().expect("entries").clone();
    let find = |action: &str, target: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no audit entry {action} {target}: {entries:?}"))
            .clone()
    };
    assert_eq!(find("put_route", "billing")["outcome"], "ok");
    assert_eq!(find("create_key", &good_id)["outcome"], "ok");
    assert_eq!(find("rotate_key", &rotated_id)["outcome"], "ok");
    assert_eq!(find("revoke_key", "key_doesnotexist")["outcome"], "not_found");
    assert!(find("put_route", "other")["actor"]
        .as_str()
        .expect("actor")
        .starts_with("admin:"));
    assert_eq!(entries[0]["action"], "revoke_key", "newest first");
    let filtered = admin.get("/v1/audit?action=put_route").expect("audit answers");
    assert_eq!(
        filtered.body["entries"].as_array().expect("entries").len(),
        2,
        "{}",
        filtered.text
    );
}

#[test]
fn a_revoke_is_in_force_on_every_node_when_it_is_answered() {
    let _serial = serial();
    let ApiCluster { cluster, leader, .. } = &ApiCluster::start(3, &[]);
    let leader = *leader;
    // Revoke through the leader and through a follower.
    for via in [leader, cluster.follower_of(leader)] {
        let (id, key) = create_key_with(cluster.node(via), json!({}));
        wait_served_everywhere(cluster, &key);
        let answer = cluster
            .node(via)
            .post(&format!("/v1/keys/{id}/revoke"), &json!({}))
            .expect("admin answers");
        assert_eq!(answer.status, 200, "{}", answer.text);
        let mut applied: Vec<u64> = answer.body["applied_on"]
            .as_array()
            .expect("applied_on")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        applied.sort_unstable();
        assert_eq!(applied, [1, 2, 3], "{}", answer.text);
        assert_eq!(answer.body["pending"], json!([]));
        assert_eq!(answer.body["status"], "revoked");
        // No polling: the answer promises every node already refuses the key.
        for node in &cluster.nodes {
            assert_refused(node, "/api/x", Some(&key), 401, "revoked");
        }
    }

    // A member out of contact cannot confirm: the answer names it as pending.
    let (id, key) = create_key_with(cluster.node(leader), json!({}));
    wait_served_everywhere(cluster, &key);
    let frozen = cluster.follower_of(leader);
    cluster.node(frozen).signal(Signal::SIGSTOP);
    let answer = cluster
        .node(leader)
        .post(&format!("/v1/keys/{id}/revoke"), &json!({}))
        .expect("admin answers");
    cluster.node(frozen).signal(Signal::SIGCONT);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["pending"], json!([frozen]), "{}", answer.text);
    assert_eq!(answer.body["applied_on"].as_array().expect("applied_on").len(), 2);
    for node in cluster.nodes.iter().filter(|n| n.id != frozen) {
        assert_refused(node, "/api/x", Some(&key), 401, "revoked");
    }
    wait_for(
        Duration::from_secs(10),
        "the resumed member to apply the revoke",
        || {
            let answer = cluster.node(frozen).proxy_get("/api/x", Some(&key))?;
            (answer.code() == "revoked").then_some(())
        },
    );
}

/// Client threads sending GETs through nodes until stopped, counting what went wrong.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, key: &str, threads_per_url: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for url in urls {
            for _ in 0..threads_per_url {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let (url, key) = (url.clone(), key.to_owned());
                threads.push(std::thread::spawn(move || {
                    let client = http();
                    while !stop.load(Ordering::SeqCst) {
                        match client.get(&url).bearer_auth(&key).send() {
                            Ok(response) if response.status() == 200 => {
                                let _ = response.bytes();
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().unwrap_or_default();
                                failures
                                    .lock()
                                    .expect("failures")
                                    .push(format!("{url}: {status} {body}"));
                            }
                            Err(error) => failures.lock().expect("failures").push(format!("{url}: {error}")),
                        }
                    }
                }));
            }
        }
        Self {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `more` further requests succeeded.
    fn wait_more(&self, more: u64, what: &str) {
        let target = self.ok() + more;
        wait_for(Duration::from_secs(30), what, || {
            (self.ok() >= target).then_some(())
        });
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        let failures = self.failures.lock().expect("failures").clone();
        failures
    }
}

#[test]
fn killing_a_target_under_load_fails_no_request_and_a_revived_target_returns() {
    let _serial = serial();
    let mut first = Upstream::start("first");
    let mut second = Upstream::start("second");
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    put_route(
        cluster.node(leader),
        "pool",
        json!({
            "path_prefix": "/pool", "auth": "api_key", "retries": 2,
            "upstreams": [{ "url": first.url() }, { "url": second.url() }],
            "health_check": { "path": "/health", "interval_ms": 200 }
        }),
    );
    let (_, key) = create_key_with(cluster.node(leader), json!({}));
    for node in &cluster.nodes {
        wait_served(node, "/pool/item", &key);
    }
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.proxy_url("/pool/item")).collect();
    let threads = urls.len() as u64 * 2;
    let load = Load::start(urls, &key, 2);
    load.wait_more(300, "steady load on both targets");
    assert!(
        first.requests() > 0 && second.requests() > 0,
        "both targets share the load"
    );

    first.kill();
    let second_before = second.requests();
    load.wait_more(600, "load to continue on the surviving target");
    // Each client thread may count one answer the first target gave just before it died.
    assert!(second.requests() + threads >= second_before + 600);

    first.resume();
    let first_before = first.requests();
    wait_for(
        Duration::from_secs(15),
        "the revived target to get traffic again",
        || (first.requests() > first_before + 50).then_some(()),
    );
    let failures = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    first.kill();
    second.kill();
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(10), "503 with every target down", || {
            let answer = node.proxy_get("/pool/item", Some(&key))?;
            (answer.status == 503 && answer.code() == "no_healthy_upstream").then_some(())
        });
    }
}

#[test]
fn a_cut_off_follower_fails_closed_after_max_staleness_and_recovers() {
    let _serial = serial();
    let api = ApiCluster::start(3, &["--max-staleness", "2s"]);
    let (cluster, leader, key) = (&api.cluster, api.leader, api.key.as_str());
    let follower = cluster.follower_of(leader);
    put_route(
        cluster.node(leader),
        "public",
        json!({ "path_prefix": "/public", "auth": "none", "upstreams": [{ "url": api.upstream.url() }] }),
    );
    let cut_off = cluster.node(follower);
    wait_for(Duration::from_secs(15), "the public route to replicate", || {
        cut_off.proxy_get("/public/x", None).filter(|a| a.status == 200)
    });
    let others: Vec<&Node> = cluster.nodes.iter().filter(|n| n.id != follower).collect();

    for node in &others {
        node.signal(Signal::SIGSTOP);
    }
    let stopped_at = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "the follower to refuse credentials",
        || {
            let answer = cut_off.proxy_get("/api/x", Some(key))?;
            (answer.status == 503).then_some(())
        },
    );
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(1500),
        "refused after {:?}, before max_staleness",
        stopped_at.elapsed()
    );
    assert_refused(cut_off, "/api/x", Some(key), 503, "stale_replica");
    assert_eq!(
        cut_off.proxy_get("/public/x", None).expect("answer").status,
        200,
        "routes without credentials stay up"
    );
    for node in &others {
        node.signal(Signal::SIGCONT);
    }
    wait_served(cut_off, "/api/x", key);

    // Fail-open is an explicit cluster setting.
    let set = cluster
        .node(leader)
        .put("/v1/cluster/settings", &json!({ "stale_policy": "fail_open" }))
        .expect("admin answers");
    assert_eq!(set.status, 200, "{}", set.text);
    wait_for(Duration::from_secs(10), "the setting to replicate", || {
        let answer = cut_off.get("/v1/cluster/settings")?;
        (answer.body["stale_policy"] == "fail_open").then_some(())
    });
    for node in &others {
        node.signal(Signal::SIGSTOP);
    }
    let stopped_at = Instant::now();
    while stopped_at.elapsed() < Duration::from_secs(4) {
        let answer = cut_off.proxy_get("/api/x", Some(key)).expect("proxy answers");
        assert_eq!(answer.status, 200, "fail-open keeps serving: {}", answer.text);
    }
    for node in &others {
        node.signal(Signal::SIGCONT);
    }
}

#[test]
fn killing_the_leader_fails_no_request_at_the_other_nodes() {
    let _serial = serial();
    let mut api = ApiCluster::start(3, &[]);
    let (leader, key) = (api.leader, api.key.clone());
    let cluster = &mut api.cluster;
    let survivors: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != leader)
        .collect();
    let urls = survivors
        .iter()
        .map(|id| cluster.node(*id).proxy_url("/api/x"))
        .collect();
    let load = Load::start(urls, &key, 2);
    load.wait_more(200, "load before the kill");
    cluster.node_mut(leader).kill();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30));
    assert_ne!(new_leader, leader);
    load.wait_more(1000, "load after a new leader was elected");
    let failures = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn usage_counted_before_a_graceful_stop_is_kept() {
    let _serial = serial();
    let mut api = ApiCluster::start(1, &["--usage-flush-interval", "1h"]);
    let (id, key) = (api.key_id.clone(), api.key.clone());
    let cluster = &mut api.cluster;
    let node = cluster.node(1);
    assert_eq!(
        node.proxy_get("/api/missing-route-is-fine", Some(&key))
            .expect("answer")
            .status,
        200
    );
    assert_refused(node, "/nowhere", Some(&key), 404, "no_route");
    // No report is due for an hour: only the shutdown flush can have written these.
    let node = cluster.node_mut(1);
    assert!(node.terminate().success());
    node.restart();
    node.wait_ready(Duration::from_secs(30));
    let usage = node.get(&format!("/v1/keys/{id}/usage")).expect("usage answers");
    assert_eq!(usage.body["requests"]["2xx"], 2, "{}", usage.text);
}

#[test]
fn a_restarted_follower_refuses_credentials_until_it_has_caught_up() {
    let _serial = serial();
    let mut api = ApiCluster::start(3, &[]);
    let (leader, id, key) = (api.leader, api.key_id.clone(), api.key.clone());
    let cluster = &mut api.cluster;
    let follower = cluster.follower_of(leader);
    cluster.node_mut(follower).kill();
    // While it is down: a long tail of writes, and the revocation at its very end, so that
    // the restarted follower holds the key as active for the whole of its catch-up.
    let admin_url = cluster.node(leader).admin_url("/v1/keys");
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let url = admin_url.clone();
            std::thread::spawn(move || {
                let client = http();
                for _ in 0..400 {
                    let created = client
                        .post(&url)
                        .bearer_auth(support::TOKEN)
                        .json(&json!({ "name": "filler" }))
                        .send()
                        .expect("admin answers");
                    assert_eq!(created.status(), 201);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let revoked = cluster
        .node(leader)
        .post(&format!("/v1/keys/{id}/revoke"), &json!({}))
        .expect("admin answers");
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.body["pending"], json!([follower]));

    cluster.node_mut(follower).restart();
    let restarted = cluster.node(follower);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Connection refused while it starts; never a 200 for the revoked key.
        if let Some(answer) = restarted.proxy_get("/api/x", Some(&key)) {
            assert_ne!(answer.status, 200, "a catching-up follower served a revoked key");
            if answer.code() == "revoked" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the follower never caught up");
    }
}

#[test]
fn an_upstream_slower_than_the_route_timeout_gets_a_504() {
    let _serial = serial();
    let api = ApiCluster::start(1, &[]);
    let node = api.cluster.node(1);
    put_route(
        node,
        "slow",
        json!({
            "path_prefix": "/slow", "auth": "api_key", "strip_prefix": true, "timeout_ms": 300,
            "upstreams": [{ "url": api.upstream.url() }]
        }),
    );
    wait_for(Duration::from_secs(10), "the slow route to serve", || {
        node.proxy_get("/slow/delay/10", Some(&api.key))
            .filter(|a| a.status == 200)
    });
    let started = Instant::now();
    assert_refused(node, "/slow/delay/5000", Some(&api.key), 504, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the route's timeout, not the upstream's pace"
    );
}
