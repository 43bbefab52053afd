//! Metrics and logs, black-box: `/metrics` counts what the proxy did by route, status class
//! and refusal code, shows Raft and upstream gauges, and needs an admin credential; no log
//! line and no metric of a node ever contains a key, an admin token, a JWT or an HMAC
//! secret, even at debug level.

mod support;

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use support::idp::{self, Idp};
use support::upstream::Upstream;
use support::{create_key_with, http, send, wait_for, Cluster};

#[test]
fn metrics_count_requests_and_no_secret_reaches_logs_or_metrics() {
    let upstream = Upstream::start("observed");
    let idp = Idp::start(&[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let master_key = support::master_key_file(keys.path(), 7);
    let cluster = Cluster::start(
        1,
        &[
            "--log",
            "debug,openraft=info,h2=info,hyper=info,rustls=info",
            "--master-key-file",
            &master_key,
        ],
    );
    let node = cluster.node(1);
    let route = json!({ "path_prefix": "/api", "auth": "api_key", "upstreams": [{ "url": upstream.url() }] });
    assert_eq!(node.put("/v1/routes/api", &route).expect("admin").status, 201);
    let secret = b"an hmac secret that must never be logged!";
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let jwt_route = json!({
        "path_prefix": "/jwt", "auth": "jwt", "upstreams": [{ "url": upstream.url() }],
        "jwt": { "issuer": idp.issuer(), "audience": "api", "algorithms": ["HS256"], "keys": [{ "kty": "oct", "k": k }] }
    });
    assert_eq!(node.put("/v1/routes/jwt", &jwt_route).expect("admin").status, 201);
    let (key_id, key) = create_key_with(node, json!({}));
    let token = node
        .post(
            "/v1/admin-tokens",
            &json!({ "name": "scraper", "role": "auditor" }),
        )
        .expect("admin")
        .body["token"]
        .as_str()
        .expect("token")
        .to_owned();
    wait_for(Duration::from_secs(15), "the route", || {
        node.proxy_get("/api/x", Some(&key)).filter(|a| a.status == 200)
    });
    for _ in 0..4 {
        assert_eq!(node.proxy_get("/api/x", Some(&key)).expect("answer").status, 200);
    }
    // The last character changed (to one it is not), so the checksum fails.
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(
        node.proxy_get("/api/x", Some(&forged)).expect("answer").status,
        401
    );
    let now = chrono::Utc::now().timestamp();
    let jwt = idp::sign_hmac(
        secret,
        None,
        &json!({ "iss": idp.issuer(), "aud": "api", "sub": "s", "exp": now + 600 }),
    );
    assert_eq!(node.proxy_get("/jwt/x", Some(&jwt)).expect("answer").status, 200);
    assert_eq!(
        node.proxy_get("/jwt/x", Some(&format!("{jwt}x")))
            .expect("answer")
            .status,
        401
    );
    // A wrong admin token, logged as a failure but never as itself.
    assert_eq!(
        send(
            http()
                .get(node.admin_url("/v1/keys"))
                .bearer_auth("cfat_wrongwrongwrong")
        )
        .expect("answer")
        .status,
        401
    );

    let scrape = |token: Option<&str>| {
        let mut request = http().get(node.admin_url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).expect("answer")
    };
    assert_eq!(scrape(None).status, 401, "metrics need a credential");
    let metrics = scrape(Some(&token));
    assert_eq!(metrics.status, 200);
    let text = metrics.text;
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no metric line {prefix}:\n{text}"))
            .to_owned()
    };
    let value = |prefix: &str| -> f64 {
        line(prefix)
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value")
    };
    assert!(value(r#"credentialflow_requests_total{route="api",status="2xx"}"#) >= 5.0);
    assert_eq!(
        value(r#"credentialflow_requests_total{route="api",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"credentialflow_refusals_total{code="invalid_credential"}"#),
        1.0
    );
    assert_eq!(
        value(r#"credentialflow_refusals_total{code="invalid_signature"}"#),
        1.0
    );
    assert!(line("credentialflow_request_duration_seconds_bucket{route=\"api\"").contains("le="));
    assert_eq!(value("credentialflow_raft_is_leader"), 1.0);
    assert!(value("credentialflow_raft_term") >= 1.0);
    assert!(value("credentialflow_raft_applied_index") >= 5.0);
    assert!(value("credentialflow_raft_commit_index") >= value("credentialflow_raft_applied_index"));
    assert_eq!(
        value(&format!(
            "credentialflow_upstream_up{{target=\"{}\"}}",
            upstream.url()
        )),
        1.0
    );

    // The leak detector every test's nodes go through recognises each kind of secret.
    for sample in [&key, &token, &jwt] {
        assert!(
            support::secret_in(&format!("line with {sample} in it")).is_some(),
            "undetected"
        );
    }
    assert!(
        support::secret_in(&format!("prefix {}", &key[..12])).is_none(),
        "a display prefix is not a secret"
    );

    // Secrets appear nowhere: not in metrics, not in the log (read after a clean stop).
    let mut cluster = cluster;
    cluster.node_mut(1).terminate();
    let log = cluster.node(1).log_text();
    assert!(
        log.contains(&key_id),
        "the log is the node's (it names the key id)"
    );
    for (what, secret) in [
        ("API key", key.as_str()),
        ("forged API key", forged.as_str()),
        ("admin token", token.as_str()),
        ("wrong admin token", "cfat_wrongwrongwrong"),
        ("JWT", jwt.as_str()),
        ("HMAC secret", k.as_str()),
        ("HMAC secret bytes", std::str::from_utf8(secret).expect("ascii")),
    ] {
        assert!(!log.contains(secret), "the log contains the {what}");
        assert!(!text.contains(secret), "the metrics contain the {what}");
    }
}
