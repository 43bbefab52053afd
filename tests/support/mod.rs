//! Black-box test harness: real `credentialflow` processes on loopback, each with its own
//! temp data dir and free ports; helpers that wait on state with a deadline, never on the
//! clock alone.

#![allow(dead_code)]

pub mod idp;
pub mod providers;
pub mod upstream;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The admin token every test cluster uses.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fixed-window length (seconds) whose current window has at least an hour left, so a
/// test's limit does not reset midway: windows are aligned to the Unix epoch.
pub fn long_window_secs() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    [30_000_000u64, 31_000_000, 31_536_000]
        .into_iter()
        .find(|w| w - now % w > 3_600)
        .expect("one of three windows has an hour left")
}

/// Whether any file under `dir` (recursively) contains `needle`: how tests show a secret
/// reached no disk.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                any_file_contains(&path, needle)
            } else {
                std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            }
        })
    })
}

/// Writes a cluster master key (32 bytes as hex) into `dir` and returns its path as a flag
/// value; `byte` picks the key, so tests can make two different ones.
pub fn master_key_file(dir: &Path, byte: u8) -> String {
    let path = dir.join(format!("master-key-{byte:02x}"));
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).expect("write master key");
    path.display().to_string()
}

/// Returns a port that was free a moment ago and that this test process has not handed
/// out before (the kernel may offer a just-released port again).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// An HTTP answer: status and parsed JSON (Null when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A blocking HTTP client with short timeouts.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client")
}

/// An HTTPS client that trusts only the PEM CA at `ca`, presenting `identity` (PEM
/// certificate followed by its key) when given.
pub fn https_client(ca: &Path, identity: Option<&[u8]>) -> reqwest::blocking::Client {
    let ca = std::fs::read(ca).expect("read CA");
    let mut builder = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .no_proxy();
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity).expect("identity PEM"));
    }
    builder.build().expect("https client")
}

/// Sends a request and returns its answer, or `None` if no connection could be made.
pub fn send(request: reqwest::blocking::RequestBuilder) -> Option<Answer> {
    let response = request.send().ok()?;
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Answer { status, body, text })
}

/// One `credentialflow` process and everything needed to restart it.
pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub peer_port: u16,
    pub admin_port: u16,
    pub proxy_port: u16,
    pub args: Vec<String>,
    /// The CA to trust when the node serves HTTPS (`--tls-cert`); `None` means plain HTTP.
    pub tls_ca: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// Prepares (does not start) node `id` with its own directory under `root`.
    pub fn new(root: &Path, id: u64) -> Self {
        let dir = root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        Self {
            id,
            dir,
            peer_port: free_port(),
            admin_port: free_port(),
            proxy_port: free_port(),
            args: Vec::new(),
            tls_ca: None,
            child: None,
            starts: 0,
        }
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme(), self.admin_port, path)
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme(), self.proxy_port, path)
    }

    /// A client for this node's listeners: plain, or trusting `tls_ca` only.
    pub fn client(&self) -> reqwest::blocking::Client {
        match &self.tls_ca {
            None => http(),
            Some(ca) => https_client(ca, None),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Starts the process with the standard flags plus `extra`.
    pub fn start(&mut self, extra: &[String]) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let mut args = vec![
            "serve".to_owned(),
            "--id".to_owned(),
            self.id.to_string(),
            "--data-dir".to_owned(),
            self.dir.join("data").display().to_string(),
            "--peer-addr".to_owned(),
            self.peer_addr(),
            "--admin-addr".to_owned(),
            format!("127.0.0.1:{}", self.admin_port),
            "--proxy-addr".to_owned(),
            format!("127.0.0.1:{}", self.proxy_port),
            "--admin-token".to_owned(),
            TOKEN.to_owned(),
            "--heartbeat-interval".to_owned(),
            "100ms".to_owned(),
            "--election-timeout".to_owned(),
            "500ms".to_owned(),
        ];
        args.extend_from_slice(extra);
        self.args = extra.to_vec();
        self.spawn(&args);
    }

    /// Restarts with exactly the flags of the last start.
    pub fn restart(&mut self) {
        let extra = self.args.clone();
        self.start(&extra);
    }

    /// Spawns the binary with `args` verbatim, logging to `node.log`.
    pub fn spawn(&mut self, args: &[String]) {
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
            .args(args)
            .current_dir(&self.dir)
            .env("CREDENTIALFLOW_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn credentialflow");
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM, ...) to the process.
    pub fn signal(&self, signal: Signal) {
        send_signal(self.pid(), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to node {}: {e}", self.id));
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(timeout, &format!("node {} to be ready", self.id), || {
            send(self.client().get(self.admin_url("/readyz"))).filter(|a| a.status == 200)
        });
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit after a signal sent earlier.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("node {} did not exit within 30 s of SIGTERM", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn authed(&self, builder: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        builder.bearer_auth(TOKEN)
    }

    pub fn get(&self, path: &str) -> Option<Answer> {
        send(self.authed(self.client().get(self.admin_url(path))))
    }

    pub fn post(&self, path: &str, body: &Value) -> Option<Answer> {
        send(self.authed(self.client().post(self.admin_url(path)).json(body)))
    }

    pub fn put(&self, path: &str, body: &Value) -> Option<Answer> {
        send(self.authed(self.client().put(self.admin_url(path)).json(body)))
    }

    /// `GET` on the proxy listener, with `key` as a bearer credential when given.
    pub fn proxy_get(&self, path: &str, key: Option<&str>) -> Option<Answer> {
        let mut request = self.client().get(self.proxy_url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        send(request)
    }

    pub fn delete(&self, path: &str) -> Option<Answer> {
        send(self.authed(self.client().delete(self.admin_url(path))))
    }

    /// `GET /v1/cluster`, when the node answers.
    pub fn cluster_view(&self) -> Option<Value> {
        self.get("/v1/cluster")
            .filter(|a| a.status == 200)
            .map(|a| a.body)
    }

    /// Ids of all keys in this node's local replica.
    pub fn local_key_ids(&self) -> Option<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/keys?limit=1000&cursor={c}"),
                None => "/v1/keys?limit=1000".to_owned(),
            };
            let answer = self.get(&path).filter(|a| a.status == 200)?;
            for key in answer.body["keys"].as_array()? {
                ids.push(key["id"].as_str()?.to_owned());
            }
            match answer.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Some(ids),
            }
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = File::open(self.log_path()) else {
            return String::new();
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- node {} log (tail) ----\n{}", self.id, self.log_tail(60));
        }
        if let Some(mut child) = self.child.take() {
            // Resume first, in case the test left it stopped.
            let _ = send_signal(child.id(), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every node of every black-box test is checked: no secret in its log.
        if !std::thread::panicking() {
            if let Some(leak) = secret_in(&self.log_text()) {
                panic!("node {} logged a secret: {leak}", self.id);
            }
        }
    }
}

/// Finds something in `log` that looks like a secret: an API key (`cf_` and 40+ base58
/// characters; displayed prefixes are 9), a managed admin token (`cfat_…`), a JWT
/// (`eyJ….eyJ…`) or the test clusters' admin token. Returns a short, redacted description.
pub fn secret_in(log: &str) -> Option<String> {
    const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let run = |rest: &str, alphabet: &dyn Fn(char) -> bool| rest.chars().take_while(|&c| alphabet(c)).count();
    for (index, _) in log.match_indices("cf_") {
        let before = log[..index].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        if run(&log[index + 3..], &|c| BASE58.contains(c)) >= 40 {
            return Some(format!("an API key near byte {index}"));
        }
    }
    for (index, _) in log.match_indices("cfat_") {
        if run(&log[index + 5..], &|c| BASE58.contains(c)) >= 30 {
            return Some(format!("an admin token near byte {index}"));
        }
    }
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    for (index, _) in log.match_indices("eyJ") {
        let header = run(&log[index..], &base64url);
        if log[index + header..].starts_with(".eyJ") {
            return Some(format!("a JWT near byte {index}"));
        }
    }
    log.contains(TOKEN).then(|| "the admin token".to_owned())
}

fn send_signal(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
}

/// A set of nodes bootstrapped together with `--initial-cluster`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` nodes with a static initial cluster and `extra` flags on each.
    pub fn start(size: u64, extra: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<Node> = (1..=size).map(|id| Node::new(root.path(), id)).collect();
        let initial = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer_addr()))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut nodes {
            let mut args = vec!["--initial-cluster".to_owned(), initial.clone()];
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            node.start(&args);
        }
        let cluster = Self { nodes, root };
        cluster.wait_for_leader(Duration::from_secs(30));
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    /// Waits until every running node reports the same leader, and returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        wait_for(timeout, "all running nodes to agree on a leader", || {
            let mut leader = None;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let seen = node.cluster_view()?["leader_id"].as_u64()?;
                if !self.node(seen).is_running() || leader.is_some_and(|l| l != seen) {
                    return None;
                }
                leader = Some(seen);
            }
            leader
        })
    }

    /// A running node other than `leader`.
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.nodes
            .iter()
            .find(|n| n.id != leader && n.is_running())
            .map(|n| n.id)
            .expect("a running follower")
    }

    /// Waits until every running node's local replica holds all `ids`.
    pub fn wait_all_have(&self, ids: &[String], timeout: Duration) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            wait_for(
                timeout,
                &format!("node {} to hold {} keys", node.id, ids.len()),
                || {
                    let held = node.local_key_ids()?;
                    ids.iter().all(|id| held.contains(id)).then_some(())
                },
            );
        }
    }
}

/// Creates a key through `node` and returns its id when the write was acknowledged.
pub fn create_key(node: &Node, name: &str) -> Option<String> {
    let answer = node.post("/v1/keys", &json!({ "name": name }))?;
    (answer.status == 201).then(|| answer.body["id"].as_str().map(str::to_owned))?
}

/// Creates a key with the given extra fields through `node`; returns `(id, secret)`.
pub fn create_key_with(node: &Node, fields: Value) -> (String, String) {
    let mut body = json!({ "name": "test key" });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(extra.clone());
    }
    let answer = node.post("/v1/keys", &body).expect("admin answers");
    assert_eq!(answer.status, 201, "create key: {}", answer.text);
    (
        answer.body["id"].as_str().expect("id").to_owned(),
        answer.body["key"].as_str().expect("secret").to_owned(),
    )
}
