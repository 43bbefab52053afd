//! Admin roles, black-box: managed tokens with roles `admin`, `operator` and `auditor`,
//! each allowed exactly its share of the admin API on every node; revoked tokens stop
//! working; failed authentication is rate-limited per source address.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{http, send, wait_for, Answer, Cluster, Node};

/// Sends `method path` with `token` and an optional JSON body.
fn call(node: &Node, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let client = http();
    let url = node.admin_url(path);
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "PATCH" => client.patch(url),
        "DELETE" => client.delete(url),
        other => panic!("unknown method {other}"),
    }
    .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).expect("admin answers")
}

fn create_token(node: &Node, role: &str) -> (String, String) {
    let answer = node
        .post(
            "/v1/admin-tokens",
            &json!({ "name": format!("{role} token"), "role": role }),
        )
        .expect("admin answers");
    assert_eq!(answer.status, 201, "{}", answer.text);
    (
        answer.body["id"].as_str().expect("id").to_owned(),
        answer.body["token"].as_str().expect("token").to_owned(),
    )
}

#[test]
fn each_role_may_do_exactly_its_share() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let admin_node = cluster.node(leader);
    let (_, auditor) = create_token(admin_node, "auditor");
    let (operator_id, operator) = create_token(admin_node, "operator");
    let (_, admin) = create_token(admin_node, "admin");
    // The tokens replicate: every node accepts them.
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "tokens on every node", || {
            (call(node, &auditor, "GET", "/v1/keys", None).status == 200).then_some(())
        });
    }
    let node = cluster.node(cluster.follower_of(leader));
    let route =
        json!({ "path_prefix": "/r", "auth": "none", "upstreams": [{ "url": "http://127.0.0.1:9" }] });
    let member = json!({ "id": 9, "peer_addr": "127.0.0.1:1" });
    let status = |token: &str, method: &str, path: &str, body: Option<Value>| {
        call(node, token, method, path, body).status
    };

    // Auditor: reads only.
    for path in [
        "/v1/keys",
        "/v1/routes",
        "/v1/audit",
        "/v1/cluster",
        "/v1/tenants",
        "/v1/revocations",
    ] {
        assert_eq!(status(&auditor, "GET", path, None), 200, "auditor GET {path}");
    }
    let refused = call(node, &auditor, "POST", "/v1/keys", Some(json!({ "name": "k" })));
    assert_eq!(
        (refused.status, refused.code()),
        (403, "forbidden"),
        "{}",
        refused.text
    );
    assert_eq!(status(&auditor, "PUT", "/v1/routes/r", Some(route.clone())), 403);
    assert_eq!(
        status(
            &auditor,
            "POST",
            "/v1/admin-tokens",
            Some(json!({ "name": "x", "role": "auditor" }))
        ),
        403
    );

    // Operator: keys, routes, tenants and revocations; not members, settings or tokens.
    let created = call(node, &operator, "POST", "/v1/keys", Some(json!({ "name": "k" })));
    assert_eq!(created.status, 201, "{}", created.text);
    let key_id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        status(
            &operator,
            "PATCH",
            &format!("/v1/keys/{key_id}"),
            Some(json!({ "name": "k2" }))
        ),
        200
    );
    assert_eq!(
        status(
            &operator,
            "POST",
            &format!("/v1/keys/{key_id}/revoke"),
            Some(json!({}))
        ),
        200
    );
    assert_eq!(status(&operator, "PUT", "/v1/routes/r", Some(route.clone())), 201);
    assert_eq!(
        status(
            &operator,
            "PUT",
            "/v1/tenants/acme",
            Some(json!({ "limits": [] }))
        ),
        200
    );
    assert_eq!(
        status(&operator, "POST", "/v1/revocations", Some(json!({ "jti": "j" }))),
        200
    );
    assert_eq!(
        status(&operator, "POST", "/v1/cluster/members", Some(member.clone())),
        403
    );
    assert_eq!(
        status(
            &operator,
            "PUT",
            "/v1/cluster/settings",
            Some(json!({ "stale_policy": "fail_open" }))
        ),
        403
    );
    assert_eq!(
        status(
            &operator,
            "POST",
            "/v1/admin-tokens",
            Some(json!({ "name": "x", "role": "admin" }))
        ),
        403
    );
    assert_eq!(status(&operator, "GET", "/v1/admin-tokens", None), 403);

    // Admin: tokens and settings too.
    assert_eq!(status(&admin, "GET", "/v1/admin-tokens", None), 200);
    assert_eq!(
        status(
            &admin,
            "PUT",
            "/v1/cluster/settings",
            Some(json!({ "stale_policy": "fail_closed" }))
        ),
        200
    );
    let listed = call(node, &admin, "GET", "/v1/admin-tokens", None);
    assert!(
        !listed.text.contains(&operator),
        "a token came back after creation"
    );

    // The audit log names the managed token, never its secret.
    let audit = call(node, &admin, "GET", "/v1/audit?action=create_key", None);
    assert!(
        audit.text.contains(&format!("token:{operator_id}")),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains(&operator));

    // A revoked token stops working on every node.
    assert_eq!(
        status(&admin, "DELETE", &format!("/v1/admin-tokens/{operator_id}"), None),
        200
    );
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "the revoked token refused", || {
            (call(node, &operator, "GET", "/v1/keys", None).status == 401).then_some(())
        });
    }
}

#[test]
fn failed_admin_authentication_is_rate_limited_per_address() {
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        statuses.push(call(node, &format!("wrong-token-{attempt}"), "GET", "/v1/keys", None).status);
    }
    assert_eq!(&statuses[..10], [401; 10]);
    let limited = call(node, "wrong-token", "GET", "/v1/keys", None);
    assert_eq!(
        (limited.status, limited.code()),
        (429, "too_many_attempts"),
        "{}",
        limited.text
    );
    let retry_after = http()
        .get(node.admin_url("/v1/keys"))
        .bearer_auth("wrong")
        .send()
        .expect("answer")
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    // Even the right token waits out the block from that address.
    assert_eq!(node.get("/v1/keys").expect("answer").status, 429);
    // Health probes are not behind authentication.
    assert_eq!(
        send(http().get(node.admin_url("/healthz"))).map(|a| a.status),
        Some(200)
    );
}
