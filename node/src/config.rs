//! Node configuration: raw (file + flags) → validated [`NodeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{LogFormat, ServeArgs};

/// The config file, every field optional. Unknown fields are an error, so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// This node's Raft id.
    pub id: Option<u64>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Proxy listener.
    pub proxy_addr: Option<String>,
    /// Admin listener.
    pub admin_addr: Option<String>,
    /// Peer listener.
    pub peer_addr: Option<String>,
    /// Static bootstrap members, "1=host:port,2=host:port".
    pub initial_cluster: Option<String>,
    /// Wait to be added instead of bootstrapping.
    pub join: Option<bool>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// "text" or "json".
    pub log_format: Option<LogFormat>,
    /// Log filter.
    pub log: Option<String>,
    /// Raft tuning.
    pub raft: RaftFileConfig,
    /// How often expired keys are swept, e.g. "10s".
    pub expiry_interval: Option<String>,
    /// Proxy worker threads.
    pub workers: Option<usize>,
    /// Longest time without a leader before credentials are refused, e.g. "5s".
    pub max_staleness: Option<String>,
    /// How often usage is folded into the replicated totals, e.g. "10s".
    pub usage_flush_interval: Option<String>,
    /// HTTPS on the proxy and admin listeners.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS on the peer listener.
    pub peer_ca: Option<PathBuf>,
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    /// File holding the cluster master key.
    pub master_key_file: Option<PathBuf>,
    /// Failed admin authentications per address per minute (0: no limit).
    pub admin_auth_failure_limit: Option<u32>,
}

/// The `[raft]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftFileConfig {
    /// Heartbeat interval, e.g. "100ms".
    pub heartbeat_interval: Option<String>,
    /// Minimum election timeout, e.g. "600ms".
    pub election_timeout: Option<String>,
    /// Fewest entries between snapshots (see `--snapshot-threshold`).
    pub snapshot_threshold: Option<u64>,
    /// Entries kept after a snapshot.
    pub snapshot_keep_logs: Option<u64>,
    /// Time a new member may take to catch up, e.g. "60s".
    pub catch_up_timeout: Option<String>,
}

/// How this node joins or forms its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A single-node cluster initialised on first start.
    SingleNode,
    /// Static membership; initialised on first start, never re-bootstrapped.
    InitialCluster(BTreeMap<u64, String>),
    /// Start empty and wait to be added.
    Join,
}

/// Raft timing and compaction settings.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub snapshot_threshold: u64,
    pub snapshot_keep_logs: u64,
    pub catch_up_timeout: Duration,
}

/// The validated configuration the node runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// The peer address as advertised to other members (what the operator wrote).
    pub advertised_peer_addr: String,
    pub bootstrap: Bootstrap,
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub raft: RaftSettings,
    pub expiry_interval: Duration,
    /// Proxy worker threads.
    pub workers: usize,
    pub max_staleness: Duration,
    pub usage_flush_interval: Duration,
    /// Certificate and key files of the proxy and admin listeners.
    pub tls: Option<TlsFiles>,
    /// The cluster CA and this node's certificate for the peer listener and its client.
    pub peer_tls: Option<PeerTlsFiles>,
    /// Seals upstream credentials and HMAC secrets; routes with them need it.
    pub master_key: Option<std::sync::Arc<crate::master_key::MasterKey>>,
    /// Failed admin authentications per address per minute before 429 (0: no limit).
    pub admin_auth_failure_limit: u32,
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Mutual TLS between peers.
#[derive(Debug, Clone)]
pub struct PeerTlsFiles {
    pub ca: PathBuf,
    pub node: TlsFiles,
}

/// Every problem found in the configuration, reported at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl NodeConfig {
    /// Merges flags over the file (if any) over defaults, and validates the result.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: &ServeArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let id = args.id.or(file.id).unwrap_or(1);
        if id == 0 {
            problems.push("id: must be at least 1".to_owned());
        }
        let proxy = pick(&args.proxy_addr, &file.proxy_addr, "127.0.0.1:8080");
        let admin = pick(&args.admin_addr, &file.admin_addr, "127.0.0.1:9080");
        let peer = pick(&args.peer_addr, &file.peer_addr, "127.0.0.1:7080");
        let proxy_addr = socket_addr("proxy_addr", &proxy, &mut problems);
        let admin_addr = socket_addr("admin_addr", &admin, &mut problems);
        let peer_addr = socket_addr("peer_addr", &peer, &mut problems);

        let join = args.join || file.join.unwrap_or(false);
        let initial = args.initial_cluster.clone().or(file.initial_cluster);
        let bootstrap = match (initial, join) {
            (Some(_), true) => {
                problems.push("initial_cluster and join are mutually exclusive".to_owned());
                Bootstrap::Join
            }
            (Some(spec), false) => match parse_initial_cluster(&spec) {
                Ok(members) => {
                    if !members.contains_key(&id) {
                        problems.push(format!("initial_cluster: does not list this node's id {id}"));
                    }
                    Bootstrap::InitialCluster(members)
                }
                Err(problem) => {
                    problems.push(problem);
                    Bootstrap::Join
                }
            },
            (None, true) => Bootstrap::Join,
            (None, false) => Bootstrap::SingleNode,
        };
        let advertised_peer_addr = match &bootstrap {
            Bootstrap::InitialCluster(members) => members.get(&id).cloned().unwrap_or(peer.clone()),
            _ => peer.clone(),
        };

        let admin_token = args.admin_token.clone().or(file.admin_token);
        if let Some(token) = &admin_token {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push("admin_token: must be at least 16 characters without whitespace".to_owned());
            }
        }

        let raft_file = file.raft;
        let heartbeat_interval = duration(
            "heartbeat_interval",
            pick(&args.heartbeat_interval, &raft_file.heartbeat_interval, "100ms"),
            &mut problems,
        );
        let election_timeout_min = duration(
            "election_timeout",
            pick(&args.election_timeout, &raft_file.election_timeout, "600ms"),
            &mut problems,
        );
        if election_timeout_min <= heartbeat_interval * 3 {
            problems.push("election_timeout: must exceed three heartbeat intervals".to_owned());
        }
        let catch_up_timeout = duration(
            "catch_up_timeout",
            pick(&args.catch_up_timeout, &raft_file.catch_up_timeout, "60s"),
            &mut problems,
        );
        let snapshot_threshold = args
            .snapshot_threshold
            .or(raft_file.snapshot_threshold)
            .unwrap_or(10_000);
        if snapshot_threshold == 0 {
            problems.push("snapshot_threshold: must be at least 1".to_owned());
        }
        let snapshot_keep_logs = args
            .snapshot_keep_logs
            .or(raft_file.snapshot_keep_logs)
            .unwrap_or(1_000);
        let expiry_interval = duration(
            "expiry_interval",
            pick(&args.expiry_interval, &file.expiry_interval, "10s"),
            &mut problems,
        );

        let workers = args
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        if workers == 0 || workers > 1024 {
            problems.push("workers: must be 1 to 1024".to_owned());
        }
        let max_staleness = duration(
            "max_staleness",
            pick(&args.max_staleness, &file.max_staleness, "5s"),
            &mut problems,
        );
        if max_staleness <= heartbeat_interval * 2 {
            problems.push("max_staleness: must exceed two heartbeat intervals".to_owned());
        }
        let usage_flush_interval = duration(
            "usage_flush_interval",
            pick(&args.usage_flush_interval, &file.usage_flush_interval, "10s"),
            &mut problems,
        );

        let path = |flag: &Option<PathBuf>, file: &Option<PathBuf>| flag.clone().or_else(|| file.clone());
        let tls = match (
            path(&args.tls_cert, &file.tls_cert),
            path(&args.tls_key, &file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                problems.push("tls_cert and tls_key: give both or neither".to_owned());
                None
            }
        };
        let peer_tls = match (
            path(&args.peer_ca, &file.peer_ca),
            path(&args.peer_cert, &file.peer_cert),
            path(&args.peer_key, &file.peer_key),
        ) {
            (Some(ca), Some(cert), Some(key)) => Some(PeerTlsFiles {
                ca,
                node: TlsFiles { cert, key },
            }),
            (None, None, None) => None,
            _ => {
                problems.push("peer_ca, peer_cert and peer_key: give all three or none".to_owned());
                None
            }
        };
        for file in tls.iter().chain(peer_tls.as_ref().map(|p| &p.node)) {
            for path in [&file.cert, &file.key] {
                if let Err(error) = std::fs::metadata(path) {
                    problems.push(format!("{}: {error}", path.display()));
                }
            }
        }

        let master_key_text = match path(&args.master_key_file, &file.master_key_file) {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(error) => {
                    problems.push(format!("master key file {}: {error}", path.display()));
                    None
                }
            },
            None => std::env::var("CREDENTIALFLOW_MASTER_KEY").ok(),
        };
        let master_key = master_key_text.and_then(|text| match crate::master_key::MasterKey::parse(&text) {
            Ok(key) => Some(std::sync::Arc::new(key)),
            Err(error) => {
                problems.push(format!("master key: {error}"));
                None
            }
        });

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Self {
            id,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            proxy_addr,
            admin_addr,
            peer_addr,
            advertised_peer_addr,
            bootstrap,
            admin_token,
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_filter: args
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info,openraft=warn".to_owned()),
            raft: RaftSettings {
                heartbeat_interval,
                election_timeout_min,
                snapshot_threshold,
                snapshot_keep_logs,
                catch_up_timeout,
            },
            expiry_interval,
            workers,
            max_staleness,
            usage_flush_interval,
            tls,
            peer_tls,
            master_key,
            admin_auth_failure_limit: args
                .admin_auth_failure_limit
                .or(file.admin_auth_failure_limit)
                .unwrap_or(crate::admin::DEFAULT_MAX_FAILURES),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(vec![format!("config file {}: {e}", path.display())]))?;
    toml::from_str(&text).map_err(|e| ConfigError(vec![format!("config file {}: {e}", path.display())]))
}

fn pick(flag: &Option<String>, file: &Option<String>, default: &str) -> String {
    flag.clone()
        .or_else(|| file.clone())
        .unwrap_or_else(|| default.to_owned())
}

fn socket_addr(field: &str, value: &str, problems: &mut Vec<String>) -> SocketAddr {
    use std::net::ToSocketAddrs;
    match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => addr,
        _ => {
            problems.push(format!("{field}: {value:?} is not a host:port address"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

fn duration(field: &str, value: String, problems: &mut Vec<String>) -> Duration {
    match humantime::parse_duration(&value) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            problems.push(format!(
                "{field}: {value:?} is not a positive duration such as \"500ms\" or \"10s\""
            ));
            Duration::from_secs(1)
        }
    }
}

/// Parses "1=host:port,2=host:port" into members.
pub fn parse_initial_cluster(spec: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("initial_cluster: {part:?} is not id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("initial_cluster: {id:?} is not a node id"))?;
        let addr = addr.trim();
        if id == 0
            || addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!(
                "initial_cluster: {part:?} is not id=host:port with id >= 1"
            ));
        }
        if members.insert(id, addr.to_owned()).is_some() {
            return Err(format!("initial_cluster: id {id} appears twice"));
        }
    }
    if members.is_empty() {
        return Err("initial_cluster: lists no members".to_owned());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_a_single_node_on_loopback() {
        let config = NodeConfig::merge(&ServeArgs::default(), FileConfig::default()).expect("valid");
        assert_eq!(config.id, 1);
        assert_eq!(config.bootstrap, Bootstrap::SingleNode);
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9080");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = ServeArgs {
            id: Some(3),
            ..ServeArgs::default()
        };
        let file: FileConfig = toml::from_str("id = 2\nadmin_addr = \"127.0.0.1:9999\"").expect("toml");
        let config = NodeConfig::merge(&args, file).expect("valid");
        assert_eq!(config.id, 3);
        assert_eq!(config.admin_addr.port(), 9999);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let args = ServeArgs {
            id: Some(0),
            admin_addr: Some("nowhere".into()),
            heartbeat_interval: Some("soon".into()),
            ..ServeArgs::default()
        };
        let problems = NodeConfig::merge(&args, FileConfig::default())
            .expect_err("invalid")
            .0;
        assert!(problems.len() >= 3, "{problems:?}");
    }

    #[test]
    fn unknown_file_fields_are_rejected() {
        assert!(toml::from_str::<FileConfig>("admin_adr = \"x\"").is_err());
    }

    #[test]
    fn initial_cluster_must_list_this_node() {
        let args = ServeArgs {
            id: Some(4),
            initial_cluster: Some("1=127.0.0.1:7001,2=127.0.0.1:7002".into()),
            ..ServeArgs::default()
        };
        assert!(NodeConfig::merge(&args, FileConfig::default()).is_err());
    }

    #[test]
    fn initial_cluster_parsing_rejects_garbage() {
        assert!(parse_initial_cluster("1=a:1,2=b:2").is_ok());
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("1=a").is_err());
        assert!(parse_initial_cluster("").is_err());
    }
}
