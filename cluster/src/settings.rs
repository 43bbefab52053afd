//! Cluster-wide settings, replicated so that every node behaves the same.

use serde::{Deserialize, Serialize};

/// What a node does with credentials while it has lost contact with the leader for longer
/// than its `max_staleness`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StalePolicy {
    /// Refuse every credential (503 `stale_replica`): a revocation may be missing.
    #[default]
    FailClosed,
    /// Keep serving from the possibly outdated replica.
    FailOpen,
}

impl StalePolicy {
    /// Returns the name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            StalePolicy::FailClosed => "fail_closed",
            StalePolicy::FailOpen => "fail_open",
        }
    }
}

/// Settings that apply to the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    pub stale_policy: StalePolicy,
    /// Time of the last change (Unix milliseconds); 0 while never set.
    pub updated_at_ms: i64,
}
