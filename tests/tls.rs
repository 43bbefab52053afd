//! TLS, black-box: certificates from `credentialflow certs init`, three nodes serving HTTPS
//! on the proxy and admin listeners and talking Raft over mutual TLS. A client that trusts
//! the cluster CA gets HTTPS; a peer without a cluster certificate is refused; SIGHUP
//! swaps the served certificate without dropping established connections.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::upstream::Upstream;
use support::{create_key_with, http, https_client, send, wait_for, Cluster, Node, Signal};

/// Runs `credentialflow certs init` into `dir`.
fn certs_init(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["certs", "init", "--out"])
        .arg(dir)
        .args(["--nodes", "3", "--hosts", "127.0.0.1,localhost"])
        .output()
        .expect("run certs init");
    assert!(
        output.status.success(),
        "certs init: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "ca.pem",
        "ca-key.pem",
        "node-1.pem",
        "node-1-key.pem",
        "node-3-key.pem",
    ] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("node-1-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
    }
}

fn identity(dir: &Path, id: u64) -> Vec<u8> {
    let mut pem = std::fs::read(dir.join(format!("node-{id}.pem"))).expect("cert");
    pem.extend(std::fs::read(dir.join(format!("node-{id}-key.pem"))).expect("key"));
    pem
}

/// Copies node `id`'s certificate and key into its directory (so a test can replace them).
fn own_copy(certs: &Path, node: &Node, id: u64, prefix: &str) -> (PathBuf, PathBuf) {
    let cert = node.dir.join(format!("{prefix}.pem"));
    let key = node.dir.join(format!("{prefix}-key.pem"));
    std::fs::copy(certs.join(format!("node-{id}.pem")), &cert).expect("copy cert");
    std::fs::copy(certs.join(format!("node-{id}-key.pem")), &key).expect("copy key");
    (cert, key)
}

#[test]
fn https_listeners_mutual_tls_peers_and_reload_on_sighup() {
    let root = tempfile::tempdir().expect("tempdir");
    let certs = root.path().join("certs");
    let other_ca = root.path().join("other");
    certs_init(&certs);
    certs_init(&other_ca);
    let ca = certs.join("ca.pem");

    let mut nodes: Vec<Node> = (1..=3).map(|id| Node::new(root.path(), id)).collect();
    let initial = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer_addr()))
        .collect::<Vec<_>>()
        .join(",");
    for node in &mut nodes {
        let id = node.id;
        let (cert, key) = own_copy(&certs, node, id, "listener");
        let (peer_cert, peer_key) = own_copy(&certs, node, id, "peer");
        node.tls_ca = Some(ca.clone());
        let args: Vec<String> = [
            "--initial-cluster",
            &initial,
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
            "--peer-ca",
            &ca.display().to_string(),
            "--peer-cert",
            &peer_cert.display().to_string(),
            "--peer-key",
            &peer_key.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        node.start(&args);
    }
    let mut cluster = Cluster {
        nodes,
        root: tempfile::tempdir().expect("tempdir"),
    };

    // Raft runs over mutual TLS: a leader is elected and a write through a follower (forwarded
    // over the peer channel) reaches every replica.
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let follower = cluster.node(cluster.follower_of(leader));
    let (key_id, _) = create_key_with(follower, json!({}));
    cluster.wait_all_have(&[key_id], Duration::from_secs(15));

    // HTTPS on the admin listener for a client trusting the CA; plain HTTP gets nothing.
    let healthz = follower.admin_url("/healthz");
    assert_eq!(send(follower.client().get(&healthz)).map(|a| a.status), Some(200));
    let plain = format!("http://127.0.0.1:{}/healthz", follower.admin_port);
    assert!(
        send(http().get(&plain)).is_none_or(|a| a.status != 200),
        "plain HTTP served"
    );
    let untrusting = https_client(&other_ca.join("ca.pem"), None);
    assert!(
        untrusting.get(&healthz).send().is_err(),
        "a client not trusting the CA connected"
    );

    // HTTPS on the proxy; the upstream learns the original scheme.
    let upstream = Upstream::start("tls");
    let route = json!({ "path_prefix": "/pub", "auth": "none", "upstreams": [{ "url": upstream.url() }] });
    assert_eq!(follower.put("/v1/routes/pub", &route).expect("admin").status, 201);
    wait_for(Duration::from_secs(15), "the route over HTTPS", || {
        follower.proxy_get("/pub/x", None).filter(|a| a.status == 200)
    });
    let seen = upstream.seen();
    assert_eq!(
        seen[0].headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );

    // The peer listener refuses clients without a cluster certificate.
    let peer_url = format!("https://127.0.0.1:{}/", follower.peer_port);
    assert!(
        https_client(&ca, None).get(&peer_url).send().is_err(),
        "a peer without a certificate was served"
    );
    let foreign = identity(&other_ca, 1);
    assert!(
        https_client(&ca, Some(&foreign)).get(&peer_url).send().is_err(),
        "a peer with another CA's certificate was served"
    );
    let member = https_client(&ca, Some(&identity(&certs, 1)));
    assert!(
        member.get(&peer_url).send().is_ok(),
        "a cluster certificate is accepted"
    );

    // SIGHUP: the listener certificate is replaced by one of another CA. New handshakes get
    // it; an established keep-alive connection keeps working.
    let node = cluster.node(leader);
    let before = node.client();
    assert_eq!(
        before
            .get(node.admin_url("/healthz"))
            .send()
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );
    std::fs::copy(other_ca.join("node-2.pem"), node.dir.join("listener.pem")).expect("replace cert");
    std::fs::copy(other_ca.join("node-2-key.pem"), node.dir.join("listener-key.pem")).expect("replace key");
    node.signal(Signal::SIGHUP);
    let after = https_client(&other_ca.join("ca.pem"), None);
    wait_for(Duration::from_secs(10), "the reloaded certificate", || {
        after
            .get(node.admin_url("/healthz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    assert_eq!(
        before
            .get(node.admin_url("/healthz"))
            .send()
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200),
        "the connection made before the reload still works"
    );
    assert!(node.is_running());
    // Raft over the peer channel is unaffected (its certificate did not change).
    cluster.node_mut(leader).tls_ca = Some(other_ca.join("ca.pem"));
    let (another, _) = create_key_with(cluster.node(leader), json!({}));
    cluster.wait_all_have(&[another], Duration::from_secs(15));
}
