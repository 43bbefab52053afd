//! Guarantee 6: every malformed or hostile admin request gets a 4xx with a stable JSON code,
//! and changes nothing.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{http, send, Answer, Cluster, Node, TOKEN};

fn assert_error(answer: Option<Answer>, status: u16, code: &str, what: &str) {
    let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(answer.status, status, "{what}: {}", answer.text);
    assert_eq!(answer.code(), code, "{what}: {}", answer.text);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error without a message: {}",
        answer.text
    );
}

fn raw_post(node: &Node, path: &str, content_type: &str, body: Vec<u8>) -> Option<Answer> {
    send(
        http()
            .post(node.admin_url(path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body),
    )
}

fn state_of(node: &Node) -> (Value, Value) {
    let keys = node.get("/v1/keys?limit=1000").expect("keys").body;
    let mut members = node.cluster_view().expect("view")["members"].clone();
    if let Some(list) = members.as_array_mut() {
        for member in list {
            if let Some(m) = member.as_object_mut() {
                m.remove("admin_addr");
                m.remove("proxy_addr");
            }
        }
    }
    (keys, members)
}

#[test]
fn bad_admin_input_gets_a_clear_4xx_and_changes_nothing() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let node = cluster.node(cluster.follower_of(leader));
    let existing = support::create_key(node, "existing").expect("key");
    let revoked = support::create_key(node, "revoked").expect("key");
    assert_eq!(
        node.post(&format!("/v1/keys/{revoked}/revoke"), &json!({}))
            .expect("revoke")
            .status,
        200
    );
    let ids = vec![existing.clone(), revoked.clone()];
    cluster.wait_all_have(&ids, Duration::from_secs(30));
    let before: Vec<_> = cluster.nodes.iter().map(state_of).collect();

    // Authentication.
    let url = node.admin_url("/v1/keys");
    assert_error(send(http().get(&url)), 401, "unauthorized", "no token");
    assert_error(
        send(http().get(&url).bearer_auth("wrong-token-wrong-token")),
        401,
        "unauthorized",
        "wrong token",
    );
    assert_error(
        send(http().get(&url).basic_auth("admin", Some(TOKEN))),
        401,
        "unauthorized",
        "basic auth",
    );
    assert_error(
        send(http().post(&url).json(&json!({ "name": "sneaky" }))),
        401,
        "unauthorized",
        "write without token",
    );

    // Bodies.
    let json_post = |body: &str| raw_post(node, "/v1/keys", "application/json", body.as_bytes().to_vec());
    assert_error(json_post("{"), 400, "invalid_json", "truncated JSON");
    assert_error(json_post("name=x"), 400, "invalid_json", "not JSON");
    assert_error(
        json_post("{\"name\":\"a\",\"nope\":1}"),
        400,
        "validation_failed",
        "unknown field",
    );
    assert_error(json_post("{\"name\":5}"), 400, "validation_failed", "wrong type");
    assert_error(json_post("{}"), 400, "validation_failed", "missing name");
    assert_error(json_post(""), 400, "validation_failed", "empty body");
    assert_error(json_post("[1,2]"), 400, "validation_failed", "array body");
    let invalid_fields = [
        json!({ "name": "   " }),
        json!({ "name": "x".repeat(200) }),
        json!({ "name": "a", "tenant": "bad tenant" }),
        json!({ "name": "a", "scopes": ["ok", "not ok"] }),
        json!({ "name": "a", "limits": [{ "requests": 0, "window_secs": 60 }] }),
        json!({ "name": "a", "limits": [{ "requests": 5, "window_secs": 0 }] }),
        json!({ "name": "a", "limits": [{ "requests": 5 }] }),
        json!({ "name": "a", "limits": [{ "requests": 5, "window_secs": 60, "period": "day" }] }),
        json!({ "name": "a", "limits": [{ "requests": 5, "window_secs": 60 }, { "requests": 9, "window_secs": 60 }] }),
        json!({ "name": "a", "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "name": "a", "expires_at": "tomorrow" }),
        json!({ "name": "a", "metadata": { "blob": "x".repeat(20_000) } }),
    ];
    for body in invalid_fields {
        assert_error(
            node.post("/v1/keys", &body),
            400,
            "validation_failed",
            &body.to_string()[..40.min(body.to_string().len())],
        );
    }
    assert_error(
        json_post("{\"name\":\"a\",\"metadata\":[1]}"),
        400,
        "validation_failed",
        "metadata not an object",
    );
    let many_problems = node
        .post(
            "/v1/keys",
            &json!({ "name": "", "tenant": "a b", "scopes": ["x y"] }),
        )
        .expect("answer");
    assert_eq!(
        many_problems.body["error"]["details"].as_array().map(Vec::len),
        Some(3),
        "{}",
        many_problems.text
    );
    let oversized = format!("{{\"name\":\"{}\"}}", "x".repeat(200_000));
    assert_error(json_post(&oversized), 413, "payload_too_large", "oversized body");
    assert_error(
        raw_post(node, "/v1/keys", "text/plain", b"{\"name\":\"a\"}".to_vec()),
        415,
        "unsupported_media_type",
        "wrong content type",
    );

    // Ids, queries, routes, methods.
    assert_error(
        node.get("/v1/keys/bad%20id"),
        400,
        "invalid_id",
        "malformed key id",
    );
    assert_error(
        node.get(&format!("/v1/keys/{}", "k".repeat(100))),
        400,
        "invalid_id",
        "overlong key id",
    );
    assert_error(
        node.get("/v1/keys/key_doesnotexist"),
        404,
        "not_found",
        "unknown key",
    );
    assert_error(
        node.delete("/v1/keys/key_doesnotexist"),
        404,
        "not_found",
        "delete unknown key",
    );
    assert_error(
        node.post("/v1/keys/key_doesnotexist/revoke", &json!({})),
        404,
        "not_found",
        "revoke unknown key",
    );
    assert_error(node.get("/v1/keys?limit=0"), 400, "invalid_query", "limit zero");
    assert_error(
        node.get("/v1/keys?limit=abc"),
        400,
        "invalid_query",
        "limit not a number",
    );
    assert_error(
        node.get("/v1/keys?bogus=1"),
        400,
        "invalid_query",
        "unknown parameter",
    );
    assert_error(
        node.get("/v1/keys?consistency=eventual"),
        400,
        "invalid_query",
        "unknown consistency",
    );
    assert_error(
        node.get("/v1/keys?cursor=a%2Fb"),
        400,
        "invalid_query",
        "malformed cursor",
    );
    assert_error(node.get("/v1/nothing-here"), 404, "not_found", "unknown endpoint");
    assert_error(
        send(http().put(node.admin_url("/v1/keys")).bearer_auth(TOKEN)),
        405,
        "method_not_allowed",
        "PUT on keys",
    );

    // Lifecycle rules.
    assert_error(
        node.post(
            &format!("/v1/keys/{existing}/rotate"),
            &json!({ "grace_secs": -1 }),
        ),
        400,
        "validation_failed",
        "negative grace",
    );
    assert_error(
        node.post(
            &format!("/v1/keys/{existing}/rotate"),
            &json!({ "grace_secs": 99_999_999 }),
        ),
        400,
        "validation_failed",
        "grace too long",
    );
    assert_error(
        node.post(&format!("/v1/keys/{existing}/revoke"), &json!({ "reason": 1 })),
        400,
        "validation_failed",
        "unknown revoke field",
    );
    assert_error(
        node.post(&format!("/v1/keys/{revoked}/rotate"), &json!({ "grace_secs": 0 })),
        409,
        "key_revoked",
        "rotate a revoked key",
    );

    // Membership.
    assert_error(
        node.post(
            "/v1/cluster/members",
            &json!({ "id": 0, "peer_addr": "127.0.0.1:1" }),
        ),
        400,
        "validation_failed",
        "node id 0",
    );
    assert_error(
        node.post("/v1/cluster/members", &json!({ "id": 9, "peer_addr": "nowhere" })),
        400,
        "validation_failed",
        "bad peer addr",
    );
    assert_error(
        node.post(
            "/v1/cluster/members",
            &json!({ "id": "nine", "peer_addr": "127.0.0.1:1" }),
        ),
        400,
        "validation_failed",
        "id not a number",
    );
    assert_error(
        node.delete("/v1/cluster/members/abc"),
        400,
        "invalid_id",
        "member id not a number",
    );
    assert_error(
        node.delete("/v1/cluster/members/99"),
        404,
        "not_found",
        "unknown member",
    );
    assert_error(
        node.post(
            "/v1/cluster/members",
            &json!({ "id": leader, "peer_addr": "127.0.0.1:1" }),
        ),
        409,
        "membership_change_refused",
        "existing member at another address",
    );

    // Limits: PATCH of a key and tenants refuse bad input the same way.
    let patch =
        |path: &str, body: &Value| send(http().patch(node.admin_url(path)).bearer_auth(TOKEN).json(body));
    for body in [
        json!({ "limits": [{ "requests": 0, "window_secs": 60 }] }),
        json!({ "limits": [{ "requests": 5, "period": "week" }] }),
        json!({ "limits": [{ "requests": 5 }] }),
        json!({ "scopes": ["not ok"] }),
        json!({ "name": "" }),
        json!({ "status": "active" }),
    ] {
        let answer = patch(&format!("/v1/keys/{existing}"), &body).expect("answer");
        assert_eq!(answer.status, 400, "{body}: {}", answer.text);
        assert_eq!(answer.code(), "validation_failed", "{body}: {}", answer.text);
    }
    assert_error(
        patch("/v1/keys/key_missing", &json!({ "name": "x" })),
        404,
        "not_found",
        "patch of a missing key",
    );
    for (path, body) in [
        (
            "/v1/tenants/acme",
            json!({ "limits": [{ "requests": 0, "window_secs": 1 }] }),
        ),
        ("/v1/tenants/acme", json!({})),
        ("/v1/tenants/acme", json!({ "limits": [], "extra": 1 })),
        ("/v1/tenants/bad%20id", json!({ "limits": [] })),
    ] {
        let answer = node.put(path, &body).expect("answer");
        assert_eq!(answer.status, 400, "{path} {body}: {}", answer.text);
    }
    assert_error(
        node.get("/v1/tenants/acme"),
        404,
        "not_found",
        "tenant never created",
    );
    assert_error(
        node.delete("/v1/tenants/acme"),
        404,
        "not_found",
        "delete of a missing tenant",
    );
    assert_error(
        node.get("/v1/keys/key_missing/limits"),
        404,
        "not_found",
        "limits of a missing key",
    );

    // Nothing changed anywhere: same keys, same statuses, same members.
    let linearizable = node
        .get("/v1/keys?consistency=linearizable&limit=1000")
        .expect("read");
    assert_eq!(linearizable.status, 200);
    let after: Vec<_> = cluster.nodes.iter().map(state_of).collect();
    assert_eq!(after, before);
    // And the secrets never came back in any read.
    assert!(
        !linearizable.text.contains("\"key\""),
        "a read returned a secret: {}",
        linearizable.text
    );
}

#[test]
fn garbage_on_the_peer_listener_is_refused_and_harms_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(root.path(), 1);
    node.start(&[]);
    node.wait_ready(Duration::from_secs(30));
    let peer = |path: &str, body: Vec<u8>| {
        send(
            http()
                .post(format!("http://{}{}", node.peer_addr(), path))
                .header("content-type", "application/x-credentialflow-bincode")
                .body(body),
        )
        .expect("peer answer")
    };
    for path in ["/raft/append", "/raft/vote", "/raft/snapshot", "/cluster/forward"] {
        for body in [
            Vec::new(),
            b"garbage".to_vec(),
            vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![9; 64],
        ] {
            let answer = peer(path, body.clone());
            assert_eq!(answer.status, 400, "{path} with {body:?}: {}", answer.text);
        }
    }
    assert_eq!(peer("/raft/nothing", Vec::new()).status, 404);
    // Still a working member.
    assert!(support::create_key(&node, "after-garbage").is_some());
    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn invalid_configuration_is_reported_at_once_and_nothing_starts() {
    let root = tempfile::tempdir().expect("tempdir");
    let binary = env!("CARGO_BIN_EXE_credentialflow");
    let run = |args: &[&str]| {
        std::process::Command::new(binary)
            .args(args)
            .current_dir(root.path())
            .output()
            .expect("run credentialflow")
    };
    let out = run(&[
        "serve",
        "--id",
        "0",
        "--admin-addr",
        "nowhere",
        "--heartbeat-interval",
        "soon",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for field in ["id", "admin_addr", "heartbeat_interval"] {
        assert!(stderr.contains(field), "{field} not reported: {stderr}");
    }
    assert!(
        !root.path().join("data").exists(),
        "a rejected configuration created the data dir"
    );

    let config = root.path().join("bad.toml");
    std::fs::write(&config, "admin_adr = \"127.0.0.1:1\"\n").expect("write config");
    let out = run(&["serve", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin_adr"), "{stderr}");

    let out = run(&["serve", "--initial-cluster", "1=a:1", "--join"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_data_directory_never_starts_as_another_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(root.path(), 1);
    node.start(&[]);
    node.wait_ready(Duration::from_secs(30));
    assert!(node.terminate().success());
    let log = root.path().join("wrong-node.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["serve", "--id", "2", "--admin-token", TOKEN])
        .args(["--data-dir", &node.dir.join("data").display().to_string()])
        .args(["--admin-addr", &format!("127.0.0.1:{}", node.admin_port)])
        .args(["--proxy-addr", &format!("127.0.0.1:{}", node.proxy_port)])
        .args(["--peer-addr", &node.peer_addr()])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run credentialflow");
    let status = support::wait_for(Duration::from_secs(30), "the wrong node to give up", || {
        child.try_wait().expect("wait")
    });
    let _ = child.kill();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success());
    assert!(stderr.contains("belongs to node 1"), "{stderr}");
}

fn raw_http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bad_routes_settings_and_proxy_requests_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    let good =
        json!({ "path_prefix": "/api", "auth": "api_key", "upstreams": [{ "url": "http://127.0.0.1:9" }] });
    assert_eq!(node.put("/v1/routes/api", &good).expect("put").status, 201);
    let routes_before = node.get("/v1/routes").expect("routes").body;
    let audit_before = node.get("/v1/audit").expect("audit").body["entries"]
        .as_array()
        .map(Vec::len);

    let put = |id: &str, body: Value| node.put(&format!("/v1/routes/{id}"), &body);
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    assert_error(
        put("api", json!({ "auth": "api_key" })),
        400,
        "validation_failed",
        "missing fields",
    );
    assert_error(
        put("api", with("auth", json!("kerberos"))),
        400,
        "validation_failed",
        "unknown auth",
    );
    assert_error(
        put("api", with("auth", json!("jwt"))),
        400,
        "validation_failed",
        "jwt without issuer",
    );
    let jwt = |settings: Value| {
        let mut body = with("auth", json!("jwt"));
        body["jwt"] = settings;
        body
    };
    for (what, settings) in [
        (
            "alg none",
            json!({ "issuer": "https://idp.example", "audience": "api", "algorithms": ["none"] }),
        ),
        (
            "no audience",
            json!({ "issuer": "https://idp.example", "audience": [] }),
        ),
        (
            "bad key",
            json!({ "issuer": "i", "audience": "api", "keys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"] }),
        ),
        (
            "issuer to discover is no URL",
            json!({ "issuer": "idp", "audience": "api" }),
        ),
        (
            "HMAC mixed with RSA",
            json!({ "issuer": "i", "audience": "api", "algorithms": ["HS256", "RS256"], "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] }),
        ),
        (
            "unknown field",
            json!({ "issuer": "https://idp.example", "audience": "api", "jwks": "x" }),
        ),
    ] {
        assert_error(put("api", jwt(settings)), 400, "validation_failed", what);
    }
    let mut keyed_with_jwt = good.clone();
    keyed_with_jwt["jwt"] = json!({ "issuer": "https://idp.example", "audience": "api" });
    assert_error(
        put("api", keyed_with_jwt),
        400,
        "validation_failed",
        "jwt settings on an api_key route",
    );
    for body in [
        json!({}),
        json!({ "jti": "a", "sub": "b" }),
        json!({ "jti": "a", "issued_before": "2026-01-01T00:00:00Z" }),
        json!({ "jti": "" }),
        json!({ "sub": "b", "expires_at": "yesterday" }),
        json!({ "jti": "a", "expires_at": "2001-01-01T00:00:00Z" }),
    ] {
        assert_error(
            node.post("/v1/revocations", &body),
            400,
            "validation_failed",
            &body.to_string(),
        );
    }
    assert_eq!(
        node.get("/v1/revocations").expect("list").body["revocations"],
        json!([])
    );
    assert_error(
        put("api", with("path_prefix", json!("api"))),
        400,
        "validation_failed",
        "relative prefix",
    );
    assert_error(
        put("api", with("path_prefix", json!("/a/../b"))),
        400,
        "validation_failed",
        "dot segment",
    );
    assert_error(
        put("api", with("upstreams", json!([]))),
        400,
        "validation_failed",
        "no upstream",
    );
    assert_error(
        put("api", with("upstreams", json!([{ "url": "ftp://x" }]))),
        400,
        "validation_failed",
        "non-http upstream",
    );
    assert_error(
        put("api", with("upstreams", json!([{ "url": "http://u:p@h:1" }]))),
        400,
        "validation_failed",
        "credentials in the upstream URL",
    );
    assert_error(
        put(
            "api",
            with("upstreams", json!([{ "url": "http://h:1", "weight": 0 }])),
        ),
        400,
        "validation_failed",
        "zero weight",
    );
    assert_error(
        put("api", with("headers", json!({ "X-Forwarded-For": "1.2.3.4" }))),
        400,
        "validation_failed",
        "a header the gateway owns",
    );
    assert_error(
        put("api", with("timeout_ms", json!(0))),
        400,
        "validation_failed",
        "zero timeout",
    );
    assert_error(
        put("api", with("retries", json!(-1))),
        400,
        "validation_failed",
        "negative retries",
    );
    assert_error(
        put("api", with("extra", json!(1))),
        400,
        "validation_failed",
        "unknown field",
    );
    assert_error(put("bad id!", good.clone()), 400, "invalid_id", "bad route id");
    let many = put(
        "api",
        json!({ "path_prefix": "nope", "auth": "api_key", "timeout_ms": 0, "upstreams": [{ "url": "gopher://x" }] }),
    )
    .expect("answer");
    assert_eq!(
        many.body["error"]["details"].as_array().map(Vec::len),
        Some(3),
        "{}",
        many.text
    );
    assert_error(node.get("/v1/routes/missing"), 404, "not_found", "unknown route");
    assert_error(
        node.delete("/v1/routes/missing"),
        404,
        "not_found",
        "delete unknown route",
    );
    assert_error(
        node.put("/v1/cluster/settings", &json!({ "stale_policy": "sometimes" })),
        400,
        "validation_failed",
        "unknown stale policy",
    );
    assert_error(
        node.get("/v1/audit?limit=0"),
        400,
        "invalid_query",
        "zero audit page",
    );
    assert_error(
        node.get("/v1/audit?since=yesterday"),
        400,
        "invalid_query",
        "bad timestamp",
    );
    assert_error(
        node.get("/v1/keys/key_missing/usage"),
        404,
        "not_found",
        "usage of an unknown key",
    );

    assert_eq!(
        node.get("/v1/routes").expect("routes").body,
        routes_before,
        "routes unchanged"
    );
    let settings = node.get("/v1/cluster/settings").expect("settings");
    assert_eq!(settings.body["stale_policy"], "fail_closed");
    // Requests refused at the edge never reach the log; the one refused by `apply` (deleting
    // a route that does not exist) is audited with its outcome.
    let audit = node.get("/v1/audit").expect("audit").body;
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(Some(entries.len()), audit_before.map(|n| n + 1), "{audit}");
    assert_eq!(
        (&entries[0]["action"], &entries[0]["outcome"]),
        (&json!("delete_route"), &json!("not_found"))
    );

    // Hostile proxy requests: JSON errors, no panic, the node keeps serving.
    let port = node.proxy_port;
    // Spellings an upstream could resolve to another route are refused, not matched.
    for path in ["/api/%2e%2e/admin", "//api/x", "/api/x;y", "/api/%2fx", "/api\\x"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_http(port, &request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("invalid_path"), "{path}: {answer}");
    }
    let binary_key = raw_http(
        port,
        "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: cf_\u{e9}\u{e9}\r\nConnection: close\r\n\r\n",
    );
    assert!(binary_key.starts_with("HTTP/1.1 401"), "{binary_key}");
    let bad_length = raw_http(
        port,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n",
    );
    assert!(bad_length.starts_with("HTTP/1.1 400"), "{bad_length}");
    assert_eq!(
        node.proxy_get(
            "/api/x",
            Some("cf_1111111111111111111111111111111111111111111111")
        )
        .expect("still serving")
        .code(),
        "invalid_credential"
    );
}
