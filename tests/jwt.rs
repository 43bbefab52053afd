//! JWT routes, black-box: real nodes, a stand-in identity provider publishing its keys over
//! HTTP, tokens minted by the `jsonwebtoken` crate from the test's own key pairs. Valid
//! tokens pass on every node; every kind of bad token is refused with 401 and its code; a
//! key rotated at the IdP is picked up without a restart; a revoked token is refused on
//! every node as soon as the revocation is answered.

mod support;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::idp::{self, Idp};
use support::upstream::Upstream;
use support::{http, wait_for, Cluster, Node};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims valid for ten minutes, issued by `idp` for audience `api`.
fn claims(idp: &Idp, extra: Value) -> Value {
    let mut claims = json!({
        "iss": idp.issuer(), "aud": "api", "sub": "alice",
        "iat": now_secs(), "exp": now_secs() + 600,
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    claims
}

fn put_route(node: &Node, id: &str, body: Value) {
    let answer = node
        .put(&format!("/v1/routes/{id}"), &body)
        .expect("admin answers");
    assert!(
        answer.status == 200 || answer.status == 201,
        "route {id}: {}",
        answer.text
    );
}

/// Sends a GET with `token` as the bearer credential; returns (status, code).
fn call(node: &Node, path: &str, token: &str) -> (u16, String) {
    let response = http()
        .get(node.proxy_url(path))
        .bearer_auth(token)
        .send()
        .expect("proxy answers");
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

fn wait_route(node: &Node, path: &str, token: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("node {} to serve {path}", node.id),
        || (call(node, path, token).0 == 200).then_some(()),
    );
}

#[test]
fn tokens_are_judged_the_same_on_every_node() {
    let _serial = serial();
    let upstream = Upstream::start("api");
    let idp = Idp::start(&["rsa1", "ec1", "ed1"]);
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(30)));
    put_route(
        leader,
        "api",
        json!({
            "path_prefix": "/api", "auth": "jwt", "upstreams": [{ "url": upstream.url() }],
            "jwt": { "issuer": idp.issuer(), "audience": "api", "jwks_url": idp.jwks_url(),
                     "scopes_claim": "scope", "forward_claims": { "email": "X-User-Email" } }
        }),
    );
    let good = idp::sign(
        "rsa1",
        Algorithm::RS256,
        Some("rsa1"),
        &claims(&idp, json!({ "scope": "api other", "email": "a@example.com" })),
    );
    for node in &cluster.nodes {
        wait_route(node, "/api/x", &good);
    }

    let valid = [
        ("RS256", good.clone()),
        (
            "PS256",
            idp::sign(
                "rsa1",
                Algorithm::PS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api" })),
            ),
        ),
        (
            "ES256",
            idp::sign(
                "ec1",
                Algorithm::ES256,
                Some("ec1"),
                &claims(&idp, json!({ "scope": ["api"] })),
            ),
        ),
        (
            "EdDSA",
            idp::sign(
                "ed1",
                Algorithm::EdDSA,
                Some("ed1"),
                &claims(&idp, json!({ "scope": "api" })),
            ),
        ),
    ];
    let rsa_public = idp::fixture("rsa1.pub.pem");
    let refused = [
        (
            "expired",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api", "exp": now_secs() - 3600 })),
            ),
            "token_expired",
        ),
        (
            "not yet valid",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api", "nbf": now_secs() + 3600 })),
            ),
            "token_not_yet_valid",
        ),
        (
            "wrong issuer",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api", "iss": "https://evil.example" })),
            ),
            "invalid_issuer",
        ),
        (
            "wrong audience",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api", "aud": "other" })),
            ),
            "invalid_audience",
        ),
        (
            "forged signature",
            idp::sign(
                "rsa2",
                Algorithm::RS256,
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api" })),
            ),
            "invalid_signature",
        ),
        (
            "alg none",
            idp::unsigned(&claims(&idp, json!({ "scope": "api" }))),
            "invalid_token",
        ),
        (
            "HS256 keyed with the RSA public key",
            idp::sign_hmac(
                rsa_public.as_bytes(),
                Some("rsa1"),
                &claims(&idp, json!({ "scope": "api" })),
            ),
            "unsupported_algorithm",
        ),
        ("garbage", "not.a.token".to_owned(), "invalid_token"),
        (
            "unknown key id",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("nobody"),
                &claims(&idp, json!({ "scope": "api" })),
            ),
            "unknown_signing_key",
        ),
        (
            "missing exp",
            idp::sign(
                "rsa1",
                Algorithm::RS256,
                Some("rsa1"),
                &json!({ "iss": idp.issuer(), "aud": "api", "scope": "api" }),
            ),
            "missing_claim",
        ),
    ];
    for node in &cluster.nodes {
        for (what, token) in &valid {
            assert_eq!(
                call(node, "/api/x", token),
                (200, String::new()),
                "{what} on node {}",
                node.id
            );
        }
        for (what, token, code) in &refused {
            assert_eq!(
                call(node, "/api/x", token),
                (401, (*code).to_owned()),
                "{what} on node {}",
                node.id
            );
        }
        let out_of_scope = idp::sign(
            "rsa1",
            Algorithm::RS256,
            Some("rsa1"),
            &claims(&idp, json!({ "scope": "billing" })),
        );
        assert_eq!(call(node, "/api/x", &out_of_scope), (403, "forbidden".to_owned()));
        let missing = http().get(node.proxy_url("/api/x")).send().expect("answer");
        assert_eq!(missing.status(), 401);
    }

    // The upstream saw the subject and the forwarded claim, never the token; a client's own
    // copy of a claim header does not pass.
    let spoofing = http()
        .get(cluster.nodes[0].proxy_url("/api/spoof"))
        .bearer_auth(idp::sign(
            "ec1",
            Algorithm::ES256,
            Some("ec1"),
            &claims(&idp, json!({ "scope": "api" })),
        ))
        .header("X-User-Email", "mallory@example.com")
        .header("X-Credentialflow-Subject", "root")
        .send()
        .expect("answer");
    assert_eq!(spoofing.status(), 200);
    let seen = upstream.seen();
    let spoofed = seen
        .iter()
        .find(|s| s.path == "/api/spoof")
        .expect("spoof request seen");
    assert_eq!(
        spoofed
            .headers
            .get("x-credentialflow-subject")
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(spoofed.headers.get("x-user-email"), None);
    let first = seen.iter().find(|s| s.path == "/api/x").expect("request seen");
    assert_eq!(
        first.headers.get("x-user-email").map(String::as_str),
        Some("a@example.com")
    );
    assert!(
        seen.iter().all(|s| !s.headers.contains_key("authorization")),
        "a token reached the upstream"
    );
    // Each node fetched the JWKS once for all of that (the cache serves the rest).
    assert!(idp.jwks_fetches() <= 3 + 3, "{} JWKS fetches", idp.jwks_fetches());
}

#[test]
fn hmac_routes_accept_only_their_secret() {
    let _serial = serial();
    let upstream = Upstream::start("hmac");
    let idp = Idp::start(&[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        1,
        &["--master-key-file", &support::master_key_file(keys.path(), 1)],
    );
    let node = cluster.node(1);
    let secret = b"a shared secret of at least 32 bytes!!";
    use base64::Engine;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    put_route(
        node,
        "hmac",
        json!({
            "path_prefix": "/hmac", "auth": "jwt", "upstreams": [{ "url": upstream.url() }],
            "jwt": { "issuer": idp.issuer(), "audience": ["api"], "algorithms": ["HS256"],
                     "keys": [{ "kty": "oct", "k": k }] }
        }),
    );
    let good = idp::sign_hmac(secret, None, &claims(&idp, json!({})));
    wait_route(node, "/hmac/x", &good);
    let wrong = idp::sign_hmac(
        b"another secret of at least 32 bytes!!!",
        None,
        &claims(&idp, json!({})),
    );
    assert_eq!(
        call(node, "/hmac/x", &wrong),
        (401, "invalid_signature".to_owned())
    );
    let rsa = idp::sign("rsa1", Algorithm::RS256, None, &claims(&idp, json!({})));
    assert_eq!(
        call(node, "/hmac/x", &rsa),
        (401, "unsupported_algorithm".to_owned())
    );
    // The secret is never shown back.
    let route = node.get("/v1/routes/hmac").expect("admin answers");
    assert!(!route.text.contains(&k), "{}", route.text);
}

#[test]
fn keys_rotated_at_the_idp_are_picked_up_and_forged_kids_do_not_hammer_it() {
    let _serial = serial();
    let upstream = Upstream::start("rotating");
    let idp = Idp::start(&["rsa1"]);
    let cluster = Cluster::start(1, &[]);
    let node = cluster.node(1);
    // Only the issuer: the JWKS URL comes from OIDC discovery.
    put_route(
        node,
        "api",
        json!({
            "path_prefix": "/api", "auth": "jwt", "upstreams": [{ "url": upstream.url() }],
            "jwt": { "issuer": idp.issuer(), "audience": "api" }
        }),
    );
    let old = idp::sign("rsa1", Algorithm::RS256, Some("rsa1"), &claims(&idp, json!({})));
    wait_route(node, "/api/x", &old);
    assert!(
        idp.discovery_fetches() >= 1,
        "the keys were found through discovery"
    );

    idp.publish(&["rsa1", "rsa2"]);
    let new = idp::sign("rsa2", Algorithm::RS256, Some("rsa2"), &claims(&idp, json!({})));
    assert_eq!(
        call(node, "/api/x", &new),
        (200, String::new()),
        "the rotated key is fetched on first sight"
    );

    let fetches = idp.jwks_fetches();
    for n in 0..30 {
        let forged = idp::sign(
            "rsa1",
            Algorithm::RS256,
            Some(&format!("forged-{n}")),
            &claims(&idp, json!({})),
        );
        assert_eq!(
            call(node, "/api/x", &forged),
            (401, "unknown_signing_key".to_owned())
        );
    }
    assert!(
        idp.jwks_fetches() - fetches <= 1,
        "30 forged key ids caused {} JWKS fetches",
        idp.jwks_fetches() - fetches
    );
    assert_eq!(call(node, "/api/x", &old), (200, String::new()));
}

#[test]
fn a_revoked_token_is_refused_on_every_node_when_the_revocation_is_answered() {
    let _serial = serial();
    let upstream = Upstream::start("revoking");
    let idp = Idp::start(&["ec1"]);
    let cluster = Cluster::start(3, &[]);
    let leader_id = cluster.wait_for_leader(Duration::from_secs(30));
    let leader = cluster.node(leader_id);
    put_route(
        leader,
        "api",
        json!({
            "path_prefix": "/api", "auth": "jwt", "upstreams": [{ "url": upstream.url() }],
            "jwt": { "issuer": idp.issuer(), "audience": "api", "jwks_url": idp.jwks_url() }
        }),
    );
    let token = idp::sign(
        "ec1",
        Algorithm::ES256,
        Some("ec1"),
        &claims(&idp, json!({ "jti": "t-1" })),
    );
    let bobs = idp::sign(
        "ec1",
        Algorithm::ES256,
        Some("ec1"),
        &claims(
            &idp,
            json!({ "jti": "t-2", "sub": "bob", "iat": now_secs() - 60 }),
        ),
    );
    for node in &cluster.nodes {
        wait_route(node, "/api/x", &token);
        assert_eq!(call(node, "/api/x", &bobs).0, 200);
    }

    let via = cluster.node(cluster.follower_of(leader_id));
    let answer = via
        .post(
            "/v1/revocations",
            &json!({ "jti": "t-1", "expires_at": "2099-01-01T00:00:00Z" }),
        )
        .expect("admin answers");
    assert_eq!(
        answer.status, 400,
        "an expiry beyond a year is refused: {}",
        answer.text
    );
    let answer = via
        .post("/v1/revocations", &json!({ "jti": "t-1" }))
        .expect("admin answers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["pending"], json!([]), "{}", answer.text);
    for node in &cluster.nodes {
        assert_eq!(
            call(node, "/api/x", &token),
            (401, "token_revoked".to_owned()),
            "node {}",
            node.id
        );
        assert_eq!(call(node, "/api/x", &bobs).0, 200, "other tokens still pass");
    }

    let answer = leader
        .post("/v1/revocations", &json!({ "sub": "bob" }))
        .expect("admin answers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    for node in &cluster.nodes {
        assert_eq!(
            call(node, "/api/x", &bobs),
            (401, "token_revoked".to_owned()),
            "node {}",
            node.id
        );
    }
    let list = leader.get("/v1/revocations").expect("admin answers");
    assert_eq!(
        list.body["revocations"].as_array().map(Vec::len),
        Some(2),
        "{}",
        list.text
    );
}
