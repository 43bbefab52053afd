//! A three-node cluster bootstrapped with `--initial-cluster`: agreement, forwarding,
//! leader failure and full restart, counting every acknowledged write.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{create_key, wait_for, Cluster};

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn initial_cluster_agrees_and_follower_writes_reach_every_replica() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(SETTLE);

    // Every node reports the same leader and the same three voters with their peer addresses.
    for node in &cluster.nodes {
        let view = node.cluster_view().expect("cluster view");
        assert_eq!(view["node_id"], json!(node.id));
        assert_eq!(view["leader_id"], json!(leader));
        let members: BTreeMap<u64, (String, bool)> = view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().expect("id"),
                    (
                        m["peer_addr"].as_str().expect("addr").to_owned(),
                        m["voter"].as_bool().expect("voter"),
                    ),
                )
            })
            .collect();
        let expected: BTreeMap<u64, (String, bool)> = cluster
            .nodes
            .iter()
            .map(|n| (n.id, (n.peer_addr(), true)))
            .collect();
        assert_eq!(members, expected, "member list seen by node {}", node.id);
    }

    // Writes sent to a follower are forwarded to the leader and acknowledged.
    let follower = cluster.node(cluster.follower_of(leader));
    let ids: Vec<String> = (0..20)
        .map(|i| create_key(follower, &format!("via-follower-{i}")).expect("acknowledged write"))
        .collect();
    cluster.wait_all_have(&ids, SETTLE);

    // A linearizable read on the other follower sees the last write without waiting.
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader && n.id != follower.id)
        .expect("second follower");
    let last = ids.last().expect("ids");
    let read = other
        .get(&format!("/v1/keys/{last}?consistency=linearizable"))
        .expect("read");
    assert_eq!(read.status, 200, "{}", read.text);

    // Node info announced by each member shows up everywhere.
    wait_for(SETTLE, "node info of every member", || {
        let view = other.cluster_view()?;
        view["members"]
            .as_array()?
            .iter()
            .all(|m| m["admin_addr"].is_string())
            .then_some(())
    });
    for node in &cluster.nodes {
        node.wait_ready(SETTLE);
    }
}

#[test]
fn leader_sigkill_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    let old_leader = cluster.wait_for_leader(SETTLE);

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let admin_urls: Vec<(u64, u16)> = cluster.nodes.iter().map(|n| (n.id, n.admin_port)).collect();
    let writer = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = support::http();
            let mut attempt = 0u64;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let (_, port) = admin_urls[(attempt as usize) % admin_urls.len()];
                let request = client
                    .post(format!("http://127.0.0.1:{port}/v1/keys"))
                    .bearer_auth(support::TOKEN)
                    .json(&json!({ "name": format!("w{attempt}") }));
                if let Some(answer) = support::send(request) {
                    if answer.status == 201 {
                        let id = answer.body["id"].as_str().expect("id").to_owned();
                        acknowledged.lock().expect("lock").push(id);
                    }
                }
            }
        })
    };
    let count = |acks: &Arc<Mutex<Vec<String>>>| acks.lock().expect("lock").len();
    wait_for(SETTLE, "writes before the failure", || {
        (count(&acknowledged) >= 30).then_some(())
    });

    let killed_at = Instant::now();
    cluster.node_mut(old_leader).kill();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10));
    let failover = killed_at.elapsed();
    eprintln!("new leader after {failover:?}");
    assert_ne!(new_leader, old_leader);
    assert!(failover < Duration::from_secs(3), "new leader took {failover:?}");

    let before = count(&acknowledged);
    wait_for(SETTLE, "writes after the failover", || {
        (count(&acknowledged) >= before + 30).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");

    let acked = acknowledged.lock().expect("lock").clone();
    cluster.node_mut(old_leader).restart();
    cluster.wait_all_have(&acked, SETTLE);
    let restarted = cluster.node(old_leader).local_key_ids().expect("keys");
    for id in &acked {
        assert!(
            restarted.contains(id),
            "acknowledged key {id} missing on the restarted node"
        );
    }
}

#[test]
fn a_full_cluster_restart_keeps_all_state() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(SETTLE);
    let node = cluster.node(cluster.follower_of(leader));
    let ids: Vec<String> = (0..6)
        .map(|i| create_key(node, &format!("k{i}")).expect("created"))
        .collect();
    let rotated = node
        .post(
            &format!("/v1/keys/{}/rotate", ids[0]),
            &json!({ "grace_secs": 3600 }),
        )
        .expect("rotate");
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let revoked = node
        .post(&format!("/v1/keys/{}/revoke", ids[1]), &json!({}))
        .expect("revoke");
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let deleted = node.delete(&format!("/v1/keys/{}", ids[2])).expect("delete");
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let expected: Vec<String> = ids.iter().filter(|id| *id != &ids[2]).cloned().collect();
    cluster.wait_all_have(&expected, SETTLE);
    let before = snapshot_of_keys(&cluster.nodes[0]);

    for node in &mut cluster.nodes {
        let status = node.terminate();
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            node.id
        );
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_for_leader(SETTLE);
    cluster.wait_all_have(&expected, SETTLE);
    for node in &cluster.nodes {
        assert_eq!(
            snapshot_of_keys(node),
            before,
            "state of node {} after restart",
            node.id
        );
    }
}

/// Every key's id, status and secret prefixes, as one node reports them.
fn snapshot_of_keys(node: &support::Node) -> Vec<Value> {
    let answer = node.get("/v1/keys?limit=1000").expect("list");
    answer.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| json!({ "id": k["id"], "status": k["status"], "secrets": k["secrets"] }))
        .collect()
}
