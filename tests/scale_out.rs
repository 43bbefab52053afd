//! Scale-out: a node started with `--join` is added after the log was compacted, catches up
//! by snapshot and becomes a voter; members can be removed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{create_key, wait_for, Cluster, Node};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn a_joined_node_catches_up_by_snapshot_becomes_a_voter_and_members_can_be_removed() {
    let mut cluster = Cluster::start(3, &["--snapshot-threshold", "20", "--snapshot-keep-logs", "0"]);
    let leader = cluster.wait_for_leader(SETTLE);
    let ids: Vec<String> = (0..60)
        .map(|i| create_key(cluster.node(leader), &format!("pre-join-{i}")).expect("created"))
        .collect();
    // The leader's log has been compacted past the start, so a newcomer needs a snapshot.
    wait_for(SETTLE, "leader log compaction", || {
        let view = cluster.node(leader).cluster_view()?;
        (view["purged_index"].as_u64()? >= 20).then_some(())
    });

    let mut newcomer = Node::new(cluster.root.path(), 4);
    newcomer.start(&["--join".to_owned()]);
    wait_for(SETTLE, "the joining node to listen", || {
        support::send(support::http().get(newcomer.admin_url("/healthz"))).filter(|a| a.status == 200)
    });
    let not_ready = support::send(support::http().get(newcomer.admin_url("/readyz"))).expect("readyz");
    assert_eq!(not_ready.status, 503, "an unjoined node must not be ready");

    let follower = cluster.follower_of(leader);
    let added = cluster
        .node(follower)
        .post(
            "/v1/cluster/members",
            &json!({ "id": 4, "peer_addr": newcomer.peer_addr() }),
        )
        .expect("add member");
    assert_eq!(added.status, 200, "{}", added.text);

    let view = newcomer.cluster_view().expect("newcomer view");
    let me = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == json!(4))
        .cloned()
        .expect("newcomer listed");
    assert_eq!(me["voter"], json!(true));
    assert!(
        view["snapshot_index"].as_u64().is_some(),
        "the newcomer should have installed a snapshot: {view}"
    );
    cluster.nodes.push(newcomer);
    cluster.wait_all_have(&ids, SETTLE);

    // New writes reach the newcomer through normal replication too.
    let later = create_key(cluster.node(4), "after-join").expect("write via newcomer");
    cluster.wait_all_have(&[later], SETTLE);

    // Remove a follower that is not the newcomer; every remaining node drops it.
    let removed = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader && n.id != 4)
        .map(|n| n.id)
        .expect("follower");
    let answer = cluster
        .node(4)
        .delete(&format!("/v1/cluster/members/{removed}"))
        .expect("remove");
    assert_eq!(answer.status, 200, "{}", answer.text);
    cluster.node_mut(removed).kill();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        wait_for(SETTLE, "the member list without the removed node", || {
            let view = node.cluster_view()?;
            let ids: Vec<u64> = view["members"]
                .as_array()?
                .iter()
                .filter_map(|m| m["id"].as_u64())
                .collect();
            (ids.len() == 3 && !ids.contains(&removed)).then_some(())
        });
    }
    let again = cluster
        .node(leader)
        .delete(&format!("/v1/cluster/members/{removed}"))
        .expect("remove again");
    assert_eq!(again.status, 404, "{}", again.text);

    // The three remaining voters still commit writes.
    let after = create_key(cluster.node(leader), "after-removal").expect("write after removal");
    cluster.wait_all_have(&[after], SETTLE);
}
