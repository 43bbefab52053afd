//! Command-line interface. Every `serve` flag also reads a `CREDENTIALFLOW_*` environment
//! variable; flags and variables win over the `--config` file, which wins over defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// credentialflow: a clustered API gateway whose credentials, revocations and limits are
/// replicated through Raft.
#[derive(Debug, Parser)]
#[command(name = "credentialflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a gateway node.
    Serve(Box<ServeArgs>),
    /// Certificates for development and tests.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Creates a cluster CA and one certificate per node (server and client use), for
    /// `--tls-*` and `--peer-*`. Not for production: the CA key is written next to them.
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Directory to write `ca.pem`, `ca-key.pem`, `node-N.pem` and `node-N-key.pem` into.
    #[arg(long)]
    pub out: PathBuf,
    /// How many node certificates to create.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Names and addresses every node certificate is valid for, comma-separated.
    #[arg(long, default_value = "127.0.0.1,localhost", value_delimiter = ',')]
    pub hosts: Vec<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `credentialflow serve`. Unset flags fall back to the config file, then defaults.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override its values.
    #[arg(long, env = "CREDENTIALFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's Raft id (default 1).
    #[arg(long, env = "CREDENTIALFLOW_ID")]
    pub id: Option<u64>,
    /// Directory for the Raft log, snapshots and the generated admin token (default ./data).
    #[arg(long, env = "CREDENTIALFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Proxy (data plane) listener (default 127.0.0.1:8080).
    #[arg(long, env = "CREDENTIALFLOW_PROXY_ADDR")]
    pub proxy_addr: Option<String>,
    /// Admin API listener (default 127.0.0.1:9080).
    #[arg(long, env = "CREDENTIALFLOW_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Peer listener for Raft RPCs and forwarding (default 127.0.0.1:7080).
    #[arg(long, env = "CREDENTIALFLOW_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// Static bootstrap: "1=host:peerport,2=host:peerport,3=host:peerport".
    #[arg(long, env = "CREDENTIALFLOW_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Start uninitialised and wait to be added with POST /v1/cluster/members.
    #[arg(long, env = "CREDENTIALFLOW_JOIN")]
    pub join: bool,
    /// Bearer token for the admin API; generated into <data-dir>/admin-token when unset.
    #[arg(long, env = "CREDENTIALFLOW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log format.
    #[arg(long, env = "CREDENTIALFLOW_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "credentialflow=debug,openraft=warn".
    #[arg(long, env = "CREDENTIALFLOW_LOG")]
    pub log: Option<String>,
    /// Raft heartbeat interval, e.g. "100ms".
    #[arg(long, env = "CREDENTIALFLOW_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// Minimum Raft election timeout, e.g. "600ms" (the maximum is 1.5 times this).
    #[arg(long, env = "CREDENTIALFLOW_ELECTION_TIMEOUT")]
    pub election_timeout: Option<String>,
    /// Fewest log entries between snapshots. A snapshot also waits until the log written
    /// since the last one is at least as large as that snapshot, so a large state is not
    /// re-encoded every few thousand writes.
    #[arg(long, env = "CREDENTIALFLOW_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// Log entries kept after a snapshot (older ones are purged).
    #[arg(long, env = "CREDENTIALFLOW_SNAPSHOT_KEEP_LOGS")]
    pub snapshot_keep_logs: Option<u64>,
    /// How long a member may take to catch up before it is promoted, e.g. "60s".
    #[arg(long, env = "CREDENTIALFLOW_CATCH_UP_TIMEOUT")]
    pub catch_up_timeout: Option<String>,
    /// How often expired keys and past-grace secrets are swept, e.g. "10s".
    #[arg(long, env = "CREDENTIALFLOW_EXPIRY_INTERVAL")]
    pub expiry_interval: Option<String>,
    /// Proxy worker threads (default one per core).
    #[arg(long, env = "CREDENTIALFLOW_WORKERS")]
    pub workers: Option<usize>,
    /// How long a node may go without hearing from a leader before it refuses credentials
    /// (unless the cluster is set to fail open), e.g. "5s".
    #[arg(long, env = "CREDENTIALFLOW_MAX_STALENESS")]
    pub max_staleness: Option<String>,
    /// How often per-key usage is folded into the replicated totals, e.g. "10s".
    #[arg(long, env = "CREDENTIALFLOW_USAGE_FLUSH_INTERVAL")]
    pub usage_flush_interval: Option<String>,
    /// PEM certificate chain served on the proxy and admin listeners (HTTPS); reloaded on
    /// SIGHUP.
    #[arg(long, env = "CREDENTIALFLOW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "CREDENTIALFLOW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM cluster CA: the peer listener becomes mutual TLS and accepts only peers with a
    /// certificate it signed.
    #[arg(long, env = "CREDENTIALFLOW_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// PEM certificate of this node, signed by `--peer-ca`, for the peer listener and as
    /// the client certificate towards other peers.
    #[arg(long, env = "CREDENTIALFLOW_PEER_CERT")]
    pub peer_cert: Option<PathBuf>,
    /// PEM private key of `--peer-cert`.
    #[arg(long, env = "CREDENTIALFLOW_PEER_KEY")]
    pub peer_key: Option<PathBuf>,
    /// File holding the cluster master key (32 bytes as 64 hex digits or base64), which
    /// seals upstream credentials and HMAC secrets in the replicated state; the same on
    /// every node. `CREDENTIALFLOW_MASTER_KEY` may hold the key itself instead.
    #[arg(long, env = "CREDENTIALFLOW_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Failed admin authentications allowed per source address per minute before it gets
    /// 429 (default 10; 0 turns the limit off).
    #[arg(long, env = "CREDENTIALFLOW_ADMIN_AUTH_FAILURE_LIMIT")]
    pub admin_auth_failure_limit: Option<u32>,
}
