//! Exact cluster-wide limits, black-box: three real nodes and a real upstream that counts
//! what it receives. The requests admitted cluster-wide never exceed a limit, nearly all
//! of it is usable, and that holds when a node dies, when a node is cut off, across two
//! keys of one tenant, and across a full-cluster restart.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{create_key_with, http, long_window_secs, wait_for, Cluster, Node, Signal, TOKEN};

/// These tests load the machine (three nodes, an upstream, client threads); one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a burst of requests got.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    /// Refusals as (status, code).
    refused: Vec<(u16, String)>,
    /// Problems with an answer's headers or body.
    malformed: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.admitted += other.admitted;
        self.refused.extend(other.refused);
        self.malformed.extend(other.malformed);
    }

    fn refusals_with(&self, status: u16) -> usize {
        self.refused.iter().filter(|(s, _)| *s == status).count()
    }
}

/// Sends `count` requests with `key` to `node`'s proxy and checks every answer's shape: a
/// 200 carries the `RateLimit-*` headers, a refusal `Retry-After` and a JSON error code.
fn burst(proxy_url: String, key: String, count: usize) -> Tally {
    let client = http();
    let mut tally = Tally::default();
    for _ in 0..count {
        let Ok(response) = client.get(&proxy_url).bearer_auth(&key).send() else {
            tally.malformed.push("no answer".into());
            continue;
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let limit_headers = [
            header("ratelimit-limit"),
            header("ratelimit-remaining"),
            header("ratelimit-reset"),
        ];
        let body: Value = response.json().unwrap_or(Value::Null);
        if status == 200 {
            tally.admitted += 1;
            if limit_headers.iter().any(Option::is_none) {
                tally
                    .malformed
                    .push(format!("200 without RateLimit headers: {limit_headers:?}"));
            }
            continue;
        }
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        let retry_ok = retry_after
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1);
        if code.is_empty() || !retry_ok {
            tally
                .malformed
                .push(format!("{status} {code:?} without a proper Retry-After or code"));
        }
        if status == 429 && limit_headers[1].as_deref() != Some("0") {
            tally
                .malformed
                .push(format!("429 with RateLimit-Remaining {:?}", limit_headers[1]));
        }
        tally.refused.push((status, code));
    }
    tally
}

/// Runs bursts concurrently, `threads` per (node, key), `per_thread` requests each.
fn concurrently(targets: &[(&Node, &str)], threads: usize, per_thread: usize) -> Tally {
    let handles: Vec<_> = targets
        .iter()
        .flat_map(|(node, key)| {
            (0..threads).map(move |_| {
                let url = node.proxy_url("/api/x");
                let key = (*key).to_owned();
                std::thread::spawn(move || burst(url, key, per_thread))
            })
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        total.add(handle.join().expect("client thread"));
    }
    total
}

/// A cluster of three with the keyed route `/api` to a counting upstream.
struct Fixture {
    cluster: Cluster,
    upstream: Upstream,
    leader: u64,
}

impl Fixture {
    fn start() -> Self {
        let upstream = Upstream::start("metered");
        let cluster = Cluster::start(3, &[]);
        let leader = cluster.wait_for_leader(Duration::from_secs(30));
        let answer = cluster
            .node(leader)
            .put(
                "/v1/routes/api",
                &json!({ "path_prefix": "/api", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] }),
            )
            .expect("admin answers");
        assert_eq!(answer.status, 201, "{}", answer.text);
        Self {
            cluster,
            upstream,
            leader,
        }
    }

    /// Creates a key with `fields` and waits until every running node serves it.
    fn key(&self, fields: Value) -> (String, String) {
        let (id, key) = create_key_with(self.cluster.node(self.leader), fields);
        for node in self.cluster.nodes.iter().filter(|n| n.is_running()) {
            wait_for(Duration::from_secs(15), "the key on every node", || {
                let answer = http()
                    .get(node.admin_url(&format!("/v1/keys/{id}")))
                    .bearer_auth(TOKEN)
                    .send()
                    .ok()?;
                (answer.status() == 200).then_some(())
            });
        }
        (id, key)
    }

    /// Starts every node again and waits until each is ready to serve (in contact with a
    /// leader, so not a stale replica).
    fn restart_all(&mut self) {
        for node in &mut self.cluster.nodes {
            node.restart();
        }
        self.leader = self.cluster.wait_for_leader(Duration::from_secs(60));
        for node in &self.cluster.nodes {
            node.wait_ready(Duration::from_secs(30));
        }
    }

    /// The key's limits as the leader's replica shows them, read through the leader.
    fn limits(&self, via: u64, id: &str) -> Value {
        let answer = self
            .cluster
            .node(via)
            .get(&format!("/v1/keys/{id}/limits?consistency=linearizable"))
            .expect("admin answers");
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body["limits"].clone()
    }
}

fn per_window(requests: u64) -> Value {
    json!([{ "requests": requests, "window_secs": long_window_secs() }])
}

fn assert_well_formed(tally: &Tally) {
    assert!(
        tally.malformed.is_empty(),
        "malformed answers: {:?}",
        &tally.malformed[..tally.malformed.len().min(5)]
    );
}

#[test]
fn a_limit_holds_exactly_across_three_nodes_under_concurrent_load() {
    let _serial = serial();
    let fixture = Fixture::start();
    let (id, key) = fixture.key(json!({ "limits": per_window(300) }));
    let nodes: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();

    let tally = concurrently(&nodes, 4, 100);

    assert_well_formed(&tally);
    let received = fixture.upstream.requests();
    assert_eq!(
        received, tally.admitted,
        "every admitted request reached the upstream"
    );
    assert!(
        (285..=300).contains(&received),
        "upstream received {received} of a limit of 300"
    );
    assert_eq!(
        tally.refusals_with(429),
        1200 - received as usize,
        "every refusal is a 429"
    );
    assert!(
        tally.refused.iter().all(|(_, code)| code == "rate_limited"),
        "{:?}",
        &tally.refused[..3]
    );

    let limits = fixture.limits(fixture.leader, &id);
    assert_eq!(limits[0]["applies_to"], "key");
    let consumed = limits[0]["consumed"].as_u64().expect("consumed");
    assert!(
        (received..=300).contains(&consumed),
        "ledger says {consumed}, upstream {received}"
    );
    assert_eq!(limits[0]["remaining"].as_u64(), Some(300 - consumed));
}

#[test]
fn a_killed_node_never_lets_the_limit_overshoot_and_the_others_use_what_is_left() {
    let _serial = serial();
    let mut fixture = Fixture::start();
    let (id, key) = fixture.key(json!({ "limits": per_window(300) }));
    let victim = fixture.cluster.follower_of(fixture.leader);
    let survivors: Vec<u64> = fixture
        .cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&n| n != victim)
        .collect();

    // Two thirds of the limit spent on all three nodes, then the victim dies holding slices.
    let all: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();
    let before = concurrently(&all, 2, 34);
    assert_well_formed(&before);
    assert_eq!(
        before.admitted, 204,
        "no refusal while two thirds of the limit is left"
    );
    fixture.cluster.node_mut(victim).kill();

    // The victim's slices stop counting as held once their lease is over.
    wait_for(Duration::from_secs(10), "the victim's lease to end", || {
        let limits = fixture.limits(fixture.leader, &id);
        limits[0]["held_by_node"]
            .get(victim.to_string())
            .is_none()
            .then_some(())
    });

    let after: Vec<(&Node, &str)> = survivors
        .iter()
        .map(|&n| (fixture.cluster.node(n), key.as_str()))
        .collect();
    let tally = concurrently(&after, 3, 100);
    assert_well_formed(&tally);
    let received = fixture.upstream.requests();
    assert!(received <= 300, "upstream received {received} of a limit of 300");
    // What the victim held unspent when it died is the only capacity lost: it may have
    // spent it, and nobody can know.
    assert!(received >= 285, "only {received} of 300 usable after the kill");
    assert!(tally
        .refused
        .iter()
        .all(|(status, code)| *status == 429 && code == "rate_limited"));
}

#[test]
fn a_node_cut_off_from_the_cluster_admits_no_more_than_it_held() {
    let _serial = serial();
    let fixture = Fixture::start();
    let (id, key) = fixture.key(json!({ "limits": per_window(300) }));
    let isolated = fixture.cluster.follower_of(fixture.leader);
    let node = fixture.cluster.node(isolated);

    // Warm the isolated node up so that it holds a slice, then let its leaser settle.
    let warm = concurrently(&[(node, key.as_str())], 2, 20);
    assert_eq!(warm.admitted, 40);
    let held = wait_for(Duration::from_secs(10), "the held capacity to settle", || {
        let first = fixture.limits(fixture.leader, &id)[0]["held_by_node"][isolated.to_string()].as_u64();
        let second = fixture.limits(fixture.leader, &id)[0]["held_by_node"][isolated.to_string()].as_u64();
        (first == second).then_some(first.unwrap_or(0))
    });
    let admitted_before = fixture.upstream.requests();

    let others: Vec<&Node> = fixture
        .cluster
        .nodes
        .iter()
        .filter(|n| n.id != isolated)
        .collect();
    for other in &others {
        other.signal(Signal::SIGSTOP);
    }
    let started = std::time::Instant::now();
    let tally = concurrently(&[(node, key.as_str())], 4, 40);
    let cut_off_for = started.elapsed();
    for other in &others {
        other.signal(Signal::SIGCONT);
    }

    let admitted_cut_off = fixture.upstream.requests() - admitted_before;
    assert_eq!(admitted_cut_off, tally.admitted);
    assert!(
        admitted_cut_off <= held,
        "the cut-off node admitted {admitted_cut_off} while holding {held}"
    );
    assert!(
        tally.admitted < 160,
        "the cut-off node refused once its slice was spent"
    );
    // Refusals do not hang: one wait for a grant that cannot come, then at once.
    assert!(
        cut_off_for < Duration::from_secs(5),
        "the cut-off burst took {cut_off_for:?}"
    );
    assert_well_formed(&tally);
    assert!(
        tally
            .refused
            .iter()
            .all(|(status, code)| *status == 503 && (code == "limit_unavailable" || code == "stale_replica")),
        "{:?}",
        &tally.refused[..tally.refused.len().min(3)]
    );

    // Back in contact, the whole cluster still stays within the limit. The isolated node
    // refuses at once until its leaser's next ask is answered (a few hundred milliseconds
    // after the others resume); the burst starts once every node admits again, or it could
    // end inside that window on a fast machine.
    fixture.cluster.wait_for_leader(Duration::from_secs(30));
    for node in &fixture.cluster.nodes {
        wait_for(Duration::from_secs(10), "every node to lease again", || {
            let probe = concurrently(&[(node, key.as_str())], 1, 1);
            probe
                .refused
                .iter()
                .all(|(status, _)| *status != 503)
                .then_some(())
        });
    }
    let all: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();
    concurrently(&all, 2, 100);
    let received = fixture.upstream.requests();
    assert!(
        (285..=300).contains(&received),
        "upstream received {received} of 300"
    );
}

#[test]
fn a_tenant_limit_holds_across_two_keys_on_different_nodes() {
    let _serial = serial();
    let fixture = Fixture::start();
    let leader = fixture.cluster.node(fixture.leader);
    let answer = leader
        .put("/v1/tenants/acme", &json!({ "limits": per_window(200) }))
        .expect("admin answers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let (first_id, first) = fixture.key(json!({ "tenant": "acme" }));
    let (_, second) = fixture.key(json!({ "tenant": "acme", "limits": per_window(1_000) }));
    let follower = fixture.cluster.follower_of(fixture.leader);

    let tally = concurrently(
        &[
            (leader, first.as_str()),
            (fixture.cluster.node(follower), second.as_str()),
        ],
        3,
        100,
    );

    assert_well_formed(&tally);
    let received = fixture.upstream.requests();
    assert!(
        (190..=200).contains(&received),
        "upstream received {received} of a tenant limit of 200"
    );
    assert!(tally
        .refused
        .iter()
        .all(|(status, code)| *status == 429 && code == "rate_limited"));
    let limits = fixture.limits(follower, &first_id);
    assert_eq!(limits[0]["applies_to"], "tenant");
}

#[test]
fn limits_survive_full_cluster_restarts_crashed_or_graceful() {
    let _serial = serial();
    let mut fixture = Fixture::start();
    let (id, key) = fixture.key(json!({ "limits": per_window(300) }));
    let consumed = |fixture: &Fixture| {
        fixture.limits(fixture.leader, &id)[0]["consumed"]
            .as_u64()
            .unwrap_or(0)
    };

    // A crash of every node: the ledger is replicated state on disk, not memory. Slices the
    // nodes held unspent stay counted (they may have been spent), so nothing overshoots.
    let all: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();
    let first = concurrently(&all, 2, 17);
    assert_eq!(first.admitted, 102, "{:?}", first.refused);
    for node in &mut fixture.cluster.nodes {
        node.kill();
    }
    fixture.restart_all();
    let after_crash = consumed(&fixture);
    assert!(after_crash >= 102, "the ledger survived the crash: {after_crash}");
    let stranded = after_crash - 102;

    // A graceful stop of every node at once: each gives back what it held unspent.
    let all: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();
    let second = concurrently(&all, 2, 17);
    assert_eq!(second.admitted, 102, "{:?}", second.refused);
    for node in &fixture.cluster.nodes {
        node.signal(Signal::SIGTERM);
    }
    for node in &mut fixture.cluster.nodes {
        assert!(node.wait_exit().success());
    }
    fixture.restart_all();
    let after_stop = consumed(&fixture);
    assert_eq!(
        after_stop,
        204 + stranded,
        "a graceful stop gives back every unspent slice"
    );

    let all: Vec<(&Node, &str)> = fixture.cluster.nodes.iter().map(|n| (n, key.as_str())).collect();
    let last = concurrently(&all, 3, 100);
    assert_well_formed(&last);
    let received = fixture.upstream.requests();
    assert!(
        received <= 300,
        "upstream received {received} of 300 across the restarts"
    );
    assert!(
        received + stranded >= 285,
        "only {received} of 300 usable across the restarts ({stranded} stranded by the crash)"
    );
}

#[test]
fn quotas_refuse_with_their_own_code_and_limits_can_be_changed() {
    let _serial = serial();
    let fixture = Fixture::start();
    let leader = fixture.cluster.node(fixture.leader);
    let (id, key) = fixture.key(json!({
        "limits": [{ "requests": 3, "period": "day" }, { "requests": 100, "window_secs": 60 }]
    }));
    let tally = burst(leader.proxy_url("/api/x"), key.clone(), 4);
    assert_well_formed(&tally);
    assert_eq!(tally.admitted, 3);
    assert_eq!(tally.refused, [(429, "quota_exceeded".to_owned())]);

    let patched = http()
        .patch(leader.admin_url(&format!("/v1/keys/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({ "limits": [{ "requests": 5, "period": "day" }] }))
        .send()
        .expect("admin answers");
    assert_eq!(patched.status(), 200);
    // The raised quota admits two more in the same day, whichever node serves them (the
    // refusing node asks again within a second).
    wait_for(Duration::from_secs(10), "the raised quota", || {
        let tally = burst(leader.proxy_url("/api/x"), key.clone(), 1);
        (tally.admitted == 1).then_some(())
    });
    let more = burst(leader.proxy_url("/api/x"), key.clone(), 3);
    assert_eq!(more.admitted, 1, "{:?}", more.refused);
    let limits = fixture.limits(fixture.leader, &id);
    assert_eq!(limits[0]["period"], "day");
    assert_eq!(
        (limits[0]["unit"].as_str(), limits[0]["amount"].as_u64()),
        (Some("requests"), Some(5))
    );
    assert_eq!(limits.as_array().map(Vec::len), Some(1));
}
