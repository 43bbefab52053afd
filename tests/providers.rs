//! Model providers (issue 6, part 1), black-box: a provider's API key is sealed before it
//! is replicated, is never answered back (only `api_key_set` and its last four characters),
//! is on no disk and in no log line or audit entry, and a PUT with a new key rotates it on
//! every node.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{any_file_contains, master_key_file, wait_for, Cluster};

#[test]
fn provider_keys_are_vaulted_never_shown_and_rotate_everywhere() {
    let keys = tempfile::tempdir().expect("tempdir");
    let master = master_key_file(keys.path(), 0x42);
    let mut cluster = Cluster::start(3, &["--master-key-file", &master, "--snapshot-threshold", "3"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let first_key = "sk-provider-secret-0001-abcd";
    let body = |key: &str| {
        json!({
            "kind": "openai", "base_url": "https://api.openai.example/", "api_key": key,
            "headers": { "OpenAI-Organization": "org-1" }, "models": ["gpt-4o", "gpt-4o-mini"],
            "prices": { "gpt-4o": { "input_per_mtok": 2.5, "output_per_mtok": 10.0 } }
        })
    };
    let answer = cluster
        .node(leader)
        .put("/v1/providers/openai", &body(first_key))
        .expect("admin answers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["api_key_set"], true);
    assert_eq!(answer.body["api_key_last4"], "abcd");
    assert_eq!(answer.body["base_url"], "https://api.openai.example");
    assert_eq!(answer.body["prices"]["gpt-4o"]["input_per_mtok"], 2.5);
    assert!(!answer.text.contains("provider-secret"), "{}", answer.text);

    // Rotation through a follower reaches every node.
    let second_key = "sk-provider-secret-0002-wxyz";
    let follower = cluster.follower_of(leader);
    assert_eq!(
        cluster
            .node(follower)
            .put("/v1/providers/openai", &body(second_key))
            .expect("admin")
            .status,
        200
    );
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "the rotated key on every node", || {
            let answer = node.get("/v1/providers/openai")?;
            (answer.body["api_key_last4"] == "wxyz").then_some(())
        });
        let list = node.get("/v1/providers").expect("admin").text;
        assert!(!list.contains("provider-secret"));
    }
    let audit = cluster
        .node(leader)
        .get("/v1/audit?action=put_provider")
        .expect("admin");
    assert_eq!(
        audit.body["entries"].as_array().map(Vec::len),
        Some(2),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains("provider-secret"));

    // Without a master key, and with bad input, nothing is stored.
    let bad = json!({ "kind": "openai", "base_url": "ftp://x", "api_key": "" });
    let refused = cluster
        .node(leader)
        .put("/v1/providers/bad", &bad)
        .expect("admin");
    assert_eq!(
        (refused.status, refused.code()),
        (400, "validation_failed"),
        "{}",
        refused.text
    );
    assert_eq!(
        cluster
            .node(leader)
            .get("/v1/providers/bad")
            .expect("admin")
            .status,
        404
    );

    // On no disk, in no log.
    for n in 0..4 {
        support::create_key(cluster.node(leader), &format!("filler-{n}")).expect("key");
    }
    for node in &mut cluster.nodes {
        node.terminate();
    }
    for node in &cluster.nodes {
        assert!(
            any_file_contains(&node.dir, b"filler-3"),
            "the search finds plain data"
        );
        assert!(
            !any_file_contains(&node.dir, b"provider-secret"),
            "node {} holds a provider key",
            node.id
        );
    }
}

#[test]
fn provider_keys_need_a_master_key() {
    let cluster = Cluster::start(1, &[]);
    let answer = cluster
        .node(1)
        .put("/v1/providers/p", &json!({ "kind": "anthropic", "base_url": "https://api.anthropic.example", "api_key": "sk-ant-0123456789" }))
        .expect("admin answers");
    assert_eq!(
        (answer.status, answer.code()),
        (400, "validation_failed"),
        "{}",
        answer.text
    );
}
