//! The embedded default: `credentialflow serve` with no flags is a working single node
//! (default ports, data in ./data, a generated admin token), and SIGTERM exits cleanly.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{create_key, http, send, wait_for, Cluster, Node};

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

/// Key ids start with their creation time, so a listing pages in creation order and a key
/// created while a client pages through the list turns up on a later page.
#[test]
fn keys_list_in_creation_order_and_a_key_created_while_paging_is_not_skipped() {
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let created: Vec<String> = (0..30)
        .map(|i| create_key(node, &format!("paged-{i}")).expect("key created"))
        .collect();

    let page = |cursor: Option<&str>| {
        let path = match cursor {
            Some(cursor) => format!("/v1/keys?limit=7&cursor={cursor}"),
            None => "/v1/keys?limit=7".to_owned(),
        };
        let answer = node.get(&path).expect("list answers");
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body
    };
    let mut listed: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut late = None;
    loop {
        let body = page(cursor.as_deref());
        for key in body["keys"].as_array().expect("keys") {
            let field = |name: &str| key[name].as_str().expect("string field").to_owned();
            listed.push((field("id"), field("created_at")));
        }
        if late.is_none() {
            // After the first page has been read.
            late = Some(create_key(node, "created-while-paging").expect("key created"));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }

    let ids: Vec<&String> = listed.iter().map(|(id, _)| id).collect();
    let late = late.expect("late key");
    assert!(ids.contains(&&late), "the key created while paging was skipped");
    assert_eq!(ids.len(), created.len() + 1, "each key listed once: {ids:?}");
    // Listing order is id order; ids begin with the creation time.
    assert!(
        listed.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "keys out of creation order: {listed:?}"
    );
    assert_eq!(ids.last(), Some(&&late), "the newest key lists last");
}
