//! Secrets at rest, black-box: a route's upstream credential is sealed with the cluster
//! master key before it is proposed, so neither the Raft log, nor snapshots, nor the audit
//! log, nor any read of the route holds it; every node opens it to call the upstream, and
//! a node with another master key refuses to forward instead of calling without it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::upstream::Upstream;
use support::{any_file_contains, master_key_file, wait_for, Cluster};

#[test]
fn upstream_credentials_are_sealed_at_rest_and_opened_only_with_the_master_key() {
    let upstream = Upstream::start("billing");
    let keys = tempfile::tempdir().expect("tempdir");
    let key = master_key_file(keys.path(), 0x5a);
    let mut cluster = Cluster::start(3, &["--master-key-file", &key, "--snapshot-threshold", "5"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let secret = "Bearer upstream-secret-7f3a9c";
    let route = json!({
        "path_prefix": "/billing", "auth": "none", "upstreams": [{ "url": upstream.url() }],
        "upstream_auth": { "header": "Authorization", "secret": secret }
    });
    let answer = cluster
        .node(leader)
        .put("/v1/routes/billing", &route)
        .expect("admin answers");
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert!(
        !answer.text.contains("upstream-secret"),
        "the secret came back: {}",
        answer.text
    );
    assert_eq!(answer.body["upstream_auth"]["header"], "authorization");

    // Every node opens it and sends it upstream; the client never sees it.
    for node in &cluster.nodes {
        let served = wait_for(Duration::from_secs(15), "the route on every node", || {
            node.proxy_get("/billing/x", None).filter(|a| a.status == 200)
        });
        assert!(!served.text.contains("upstream-secret"));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|s| s.headers.get("authorization").map(String::as_str) == Some(secret)));

    // More writes so every node builds a snapshot, then look for the secret on disk, in
    // reads and in the audit log.
    for n in 0..8 {
        support::create_key(cluster.node(leader), &format!("filler-{n}")).expect("key");
    }
    let node = cluster.node(leader);
    wait_for(Duration::from_secs(15), "a snapshot", || {
        node.cluster_view()?["snapshot_index"]
            .as_u64()
            .filter(|&i| i >= 5)
    });
    for read in ["/v1/routes", "/v1/routes/billing", "/v1/audit"] {
        let text = node.get(read).expect("admin answers").text;
        assert!(!text.contains("upstream-secret"), "{read} shows the secret");
    }
    for member in &cluster.nodes {
        // A control: what was written in clear (a key's name) is found on disk.
        assert!(
            any_file_contains(&member.dir, b"filler-7"),
            "the search finds plain data"
        );
        assert!(
            !any_file_contains(&member.dir, b"upstream-secret"),
            "node {} holds the plaintext on disk",
            member.id
        );
    }

    // A node restarted with another master key refuses to forward rather than go without.
    let other = master_key_file(keys.path(), 0x33);
    let follower = cluster.follower_of(leader);
    let node = cluster.node_mut(follower);
    node.terminate();
    let args: Vec<String> = node
        .args
        .iter()
        .map(|a| if *a == key { other.clone() } else { a.clone() })
        .collect();
    node.start(&args);
    node.wait_ready(Duration::from_secs(30));
    let refused = node.proxy_get("/billing/x", None).expect("answer");
    assert_eq!(
        (refused.status, refused.code()),
        (503, "upstream_credential_unavailable"),
        "{}",
        refused.text
    );
    assert_eq!(
        upstream.seen().len(),
        3,
        "nothing was sent without the credential"
    );
}

#[test]
fn secrets_are_refused_without_a_master_key() {
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let route = json!({
        "path_prefix": "/x", "auth": "none", "upstreams": [{ "url": "http://127.0.0.1:9" }],
        "upstream_auth": { "header": "Authorization", "secret": "Bearer s" }
    });
    let answer = node.put("/v1/routes/x", &route).expect("admin answers");
    assert_eq!(
        (answer.status, answer.code()),
        (400, "validation_failed"),
        "{}",
        answer.text
    );
    assert!(node.get("/v1/routes/x").expect("answer").status == 404);
}
