//! The embedded default: `credentialflow serve` with no flags is a working single node
//! (default ports, data in ./data, a generated admin token), and SIGTERM exits cleanly.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{http, send, wait_for, Node};

#[test]
fn serve_without_flags_is_a_working_single_node_that_survives_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(root.path(), 1);
    node.admin_port = 9080;
    node.proxy_port = 8080;
    node.peer_port = 7080;
    node.spawn(&["serve".to_owned()]);

    let token_path = node.dir.join("data").join("admin-token");
    node.wait_ready(Duration::from_secs(60));
    let token = std::fs::read_to_string(&token_path)
        .expect("generated admin token")
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin token file must be private");
    }

    let created = send(
        http()
            .post("http://127.0.0.1:9080/v1/keys")
            .bearer_auth(&token)
            .json(&json!({ "name": "first", "tenant": "acme", "scopes": ["*"], "metadata": { "team": "core" } })),
    )
    .expect("create");
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["key"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    assert!(secret.starts_with("cf_"));
    let id = created.body["id"].as_str().expect("id").to_owned();
    let view = send(http().get("http://127.0.0.1:9080/v1/cluster").bearer_auth(&token)).expect("cluster");
    assert_eq!(view.body["leader_id"], json!(1));
    assert_eq!(view.body["members"].as_array().map(Vec::len), Some(1));

    // The proxy listener answers in the data plane's error format.
    let proxied = send(http().get("http://127.0.0.1:8080/anything")).expect("proxy");
    assert_eq!(proxied.status, 404);
    assert_eq!(proxied.code(), "no_route");

    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    node.spawn(&["serve".to_owned()]);
    let fetched = wait_for(Duration::from_secs(60), "the key after restart", || {
        send(
            http()
                .get(format!("http://127.0.0.1:9080/v1/keys/{id}"))
                .bearer_auth(&token),
        )
        .filter(|a| a.status == 200)
    });
    assert_eq!(fetched.body["name"], json!("first"));
    assert_eq!(fetched.body["metadata"], json!({ "team": "core" }));
    assert!(!fetched.text.contains(&secret), "a read returned the secret");

    let log = node.log_text();
    assert!(!log.contains(&token), "the admin token appeared in the log");
    assert!(!log.contains(&secret), "a key secret appeared in the log");
    assert!(
        log.contains("admin-token"),
        "the log should say where the token was written"
    );
}

#[test]
fn the_expiry_janitor_records_expired_keys_through_raft() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(root.path(), 1);
    node.start(&["--expiry-interval".to_owned(), "100ms".to_owned()]);
    // Wait until the node has registered itself, so no other write is pending.
    let applied = wait_for(Duration::from_secs(30), "node registration", || {
        let view = node.cluster_view()?;
        view["members"][0]["admin_addr"].as_str()?;
        view["last_applied"].as_u64()
    });
    let expires_at = rfc3339_in(Duration::from_millis(1500));
    let created = node
        .post(
            "/v1/keys",
            &json!({ "name": "short-lived", "expires_at": expires_at }),
        )
        .expect("create");
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let after_create = applied + 1;
    // The janitor proposes one sweep once the key is past its expiry; the key reads expired.
    wait_for(Duration::from_secs(30), "an expiry sweep entry", || {
        let view = node.cluster_view()?;
        (view["last_applied"].as_u64()? > after_create).then_some(())
    });
    let key = node.get(&format!("/v1/keys/{id}")).expect("key");
    assert_eq!(key.body["status"], json!("expired"), "{}", key.text);
}

/// An RFC 3339 UTC timestamp `ahead` from now.
fn rfc3339_in(ahead: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(ahead).expect("duration");
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
