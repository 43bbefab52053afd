//! Records of what happened: per-key usage folded in from every node, and the audit log of
//! admin writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Audit entries kept; older ones are dropped first.
pub const MAX_AUDIT_ENTRIES: usize = 100_000;
/// Most keys in one usage report.
pub const MAX_USAGE_REPORT_KEYS: usize = 10_000;

/// Response status classes counted per key: 1xx, 2xx, 3xx, 4xx, 5xx.
pub const STATUS_CLASSES: usize = 5;

/// Requests a key made, summed over every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// Requests by response status class (index 0 = 1xx … 4 = 5xx).
    pub by_class: [u64; STATUS_CLASSES],
    /// The latest request seen by any node (Unix milliseconds).
    pub last_used_ms: Option<i64>,
    /// When usage was last folded in (Unix milliseconds).
    pub updated_at_ms: i64,
    /// Model traffic through AI routes, by `provider/model`.
    pub models: BTreeMap<String, ModelUsage>,
    /// Items of personal data masked in the key's prompts, by kind.
    pub pii_masked: BTreeMap<String, u64>,
}

/// Tokens and cost of one model's completions, as the providers reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From the provider's price table, in millionths of a US dollar.
    pub cost_micro_usd: u64,
}

impl ModelUsage {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &ModelUsage) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cost_micro_usd = self.cost_micro_usd.saturating_add(other.cost_micro_usd);
    }
}

/// One key's requests on one node since that node's previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsageDelta {
    pub key_id: String,
    pub by_class: [u64; STATUS_CLASSES],
    pub last_used_ms: i64,
    /// Model traffic since the previous report, by `provider/model`.
    pub models: Vec<(String, ModelUsage)>,
    /// Items of personal data masked since the previous report, by kind.
    pub pii_masked: Vec<(String, u64)>,
}

/// A node's periodic usage report, folded into the replicated totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub node: NodeId,
    pub now_ms: i64,
    pub keys: Vec<KeyUsageDelta>,
}

/// One admin write as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log; increases by one per entry, cluster-wide.
    pub seq: u64,
    /// When the write was made (stamped by the node that received it).
    pub at_ms: i64,
    /// Who made it: the id of the admin credential, never the credential.
    pub actor: String,
    /// What was done (`create_key`, `put_route`, `add_member`, …).
    pub action: String,
    /// What it was done to (a key, route or node id).
    pub target: String,
    /// `ok`, or the code of the rejection or failure.
    pub outcome: String,
    /// More about it, when there is more (counts of masked items, say; never a value).
    pub details: String,
}

/// An audit record of an operation that is not itself a command (membership changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: String,
}
