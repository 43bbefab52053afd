//! What can be proposed to Raft, and what applying it answers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::activity::{AuditRecord, UsageReport};
use crate::admin_token::AdminTokenRecord;
use crate::limits::{Credit, Grant, Limit, MeterId, SpendReport, Unit};
use crate::model::{KeyRecord, KeySecret, NodeInfo, Tenant};
use crate::provider::Provider;
use crate::revocation::TokenRevocation;
use crate::route::Route;
use crate::settings::ClusterSettings;
use crate::types::NodeId;

/// A change to the replicated state. Every value that depends on time or randomness
/// (ids, secrets, `now_ms`) is stamped by the proposing node, so `apply` is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a key with its first secret.
    CreateKey(Box<NewKey>),
    /// Issues a new current secret; the previous ones stay valid for `grace_ms`.
    RotateKey {
        id: String,
        secret: KeySecret,
        grace_ms: u64,
        now_ms: i64,
    },
    /// Changes a key's name, scopes or limits; `None` leaves a field as it is.
    UpdateKey(Box<KeyUpdate>),
    /// Marks a key revoked. Revoking a revoked key answers the key unchanged.
    RevokeKey { id: String, now_ms: i64 },
    /// Adds a token revocation (or widens the existing one for the same `jti` or subject).
    RevokeTokens(Box<TokenRevocation>),
    /// Stores a new managed admin token (its hash).
    CreateAdminToken(Box<AdminTokenRecord>),
    /// Marks a managed admin token revoked; it authenticates nothing from then on.
    RevokeAdminToken { id: String, now_ms: i64 },
    /// Creates or replaces a model provider (`created_at_ms` of an existing one is kept).
    PutProvider(Box<Provider>),
    /// Removes a model provider.
    DeleteProvider { id: String, now_ms: i64 },
    /// Removes a key and all its secrets.
    DeleteKey { id: String, now_ms: i64 },
    /// Housekeeping: records every key past its expiry as expired, drops rotated-out
    /// secrets whose grace period has ended and token revocations whose tokens expired.
    ExpireKeys { now_ms: i64 },
    /// Records (or refreshes) a member's listener addresses.
    RegisterNode(NodeInfo),
    /// Forgets a member's info after it left the membership.
    ForgetNode { id: NodeId },
    /// Creates or replaces a route (`created_at_ms` of an existing route is kept).
    PutRoute { route: Box<Route>, now_ms: i64 },
    /// Removes a route.
    DeleteRoute { id: String, now_ms: i64 },
    /// Replaces the cluster-wide settings.
    SetSettings { settings: ClusterSettings, now_ms: i64 },
    /// Creates or replaces a tenant's limits.
    PutTenant {
        id: String,
        limits: Vec<Limit>,
        now_ms: i64,
    },
    /// Removes a tenant record and its meters (its keys keep naming it).
    DeleteTenant { id: String, now_ms: i64 },
    /// One node's batch of spend reports and requests for capacity, one per meter.
    GrantSlices(Box<SliceBatch>),
    /// Folds one node's per-key request counts into the totals.
    RecordUsage(Box<UsageReport>),
    /// An admin write: applies `command` and appends its outcome to the audit log in the
    /// same step, so the log can neither miss a write nor record one that did not happen.
    Audited(Box<Audited>),
    /// Appends an audit entry for an operation that is not a command (membership changes).
    RecordAudit(Box<AuditRecord>),
}

/// The fields of a key a `PATCH` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdate {
    pub id: String,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Replaces the key's limits of the units in `limit_units` (request limits, the token
    /// limit, the budget), keeping the others: so a change to one never races another.
    pub limits: Option<Vec<Limit>>,
    pub limit_units: Vec<Unit>,
    pub now_ms: i64,
}

/// What a node's quota leaser asks for in one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceBatch {
    pub node: NodeId,
    /// Identifies the node's process; a restart changes it.
    pub incarnation: u64,
    /// The node's clock when it asked: windows and lease ends are computed from it.
    pub now_ms: i64,
    /// How long the granted slices may be spent.
    pub lease_ms: i64,
    pub asks: Vec<SliceAsk>,
}

/// One meter's part of a [`SliceBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceAsk {
    pub meter: MeterId,
    /// Capacity wanted; 0 only reports.
    pub want: u64,
    /// What waiting requests lack beyond what the node holds (see `SliceRequest::need`).
    pub need: u64,
    pub reports: Vec<SpendReport>,
    /// Unused capacity of reported slices given back.
    pub credits: Vec<Credit>,
    /// The slices of this meter the node holds open; any other unreported slice granted
    /// to this process never reached it.
    pub held: Vec<u64>,
}

/// The answer to one [`SliceAsk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SliceAnswer {
    Granted(Grant),
    /// The meter's limit no longer exists: the subject or the limit was removed.
    NoLimit,
}

/// An admin write with who made it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audited {
    pub actor: String,
    pub at_ms: i64,
    pub command: Command,
}

/// What one log entry carries: a command, or several independent commands proposed together
/// (group commit), each applied in order with its own outcome exactly as if proposed one by
/// one. Deliberately not recursive, so no input can nest batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    One(Command),
    Batch(Vec<Command>),
}

impl Proposal {
    /// Returns the commands carried, in order.
    pub fn commands(&self) -> &[Command] {
        match self {
            Proposal::One(command) => std::slice::from_ref(command),
            Proposal::Batch(commands) => commands,
        }
    }
}

/// The outcome of applying a [`Proposal`]: one response per command, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    One(Response),
    Batch(Vec<Response>),
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::One(Response::Empty)
    }
}

/// The fields of a key being created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub id: String,
    pub name: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    pub limits: Vec<Limit>,
    pub expires_at_ms: Option<i64>,
    pub metadata_json: String,
    pub secret: KeySecret,
    pub now_ms: i64,
}

impl Command {
    /// Returns a short name for logs and audit; never includes secret material.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateKey(_) => "create_key",
            Command::UpdateKey(_) => "update_key",
            Command::RotateKey { .. } => "rotate_key",
            Command::RevokeKey { .. } => "revoke_key",
            Command::RevokeTokens(_) => "revoke_tokens",
            Command::CreateAdminToken(_) => "create_admin_token",
            Command::PutProvider(_) => "put_provider",
            Command::DeleteProvider { .. } => "delete_provider",
            Command::RevokeAdminToken { .. } => "revoke_admin_token",
            Command::DeleteKey { .. } => "delete_key",
            Command::ExpireKeys { .. } => "expire_keys",
            Command::RegisterNode(_) => "register_node",
            Command::ForgetNode { .. } => "forget_node",
            Command::PutRoute { .. } => "put_route",
            Command::DeleteRoute { .. } => "delete_route",
            Command::SetSettings { .. } => "set_settings",
            Command::PutTenant { .. } => "put_tenant",
            Command::DeleteTenant { .. } => "delete_tenant",
            Command::GrantSlices(_) => "grant_slices",
            Command::RecordUsage(_) => "record_usage",
            Command::Audited(audited) => audited.command.kind(),
            Command::RecordAudit(_) => "record_audit",
        }
    }

    /// Returns the id of what the command changes, for the audit log.
    pub fn target(&self) -> String {
        match self {
            Command::CreateKey(new_key) => new_key.id.clone(),
            Command::RotateKey { id, .. }
            | Command::RevokeKey { id, .. }
            | Command::DeleteKey { id, .. }
            | Command::DeleteRoute { id, .. }
            | Command::PutTenant { id, .. }
            | Command::DeleteTenant { id, .. } => id.clone(),
            Command::UpdateKey(update) => update.id.clone(),
            Command::RevokeTokens(entry) => entry.key(),
            Command::CreateAdminToken(record) => record.id.clone(),
            Command::PutProvider(provider) => provider.id.clone(),
            Command::DeleteProvider { id, .. } => id.clone(),
            Command::RevokeAdminToken { id, .. } => id.clone(),
            Command::PutRoute { route, .. } => route.id.clone(),
            Command::RegisterNode(info) => info.id.to_string(),
            Command::ForgetNode { id } => id.to_string(),
            Command::RecordUsage(report) => report.node.to_string(),
            Command::GrantSlices(batch) => batch.node.to_string(),
            Command::ExpireKeys { .. } | Command::SetSettings { .. } => "cluster".to_owned(),
            Command::Audited(audited) => audited.command.target(),
            Command::RecordAudit(record) => record.target.clone(),
        }
    }
}

/// The answer of applying one command. Rejections are ordinary, replicated outcomes:
/// every member rejects the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Response {
    /// The entry carried no command (blank or membership entries).
    #[default]
    Empty,
    /// The key after the change: the state's own record, shared rather than copied, since
    /// every replica computes this answer and only the proposing node's is used.
    Key(Arc<KeyRecord>),
    /// The key was removed.
    KeyDeleted { id: String },
    /// Housekeeping outcome.
    KeysExpired {
        expired: u64,
        secrets_pruned: u64,
        revocations_pruned: u64,
    },
    /// Node info stored or removed.
    NodeUpdated { id: NodeId },
    /// The route after the change.
    Route(Box<Route>),
    /// The route was removed.
    RouteDeleted { id: String },
    /// The settings after the change.
    Settings(ClusterSettings),
    /// The provider after the change (its key sealed).
    Provider(Box<Provider>),
    /// The provider was removed.
    ProviderDeleted { id: String },
    /// The admin token after the change (its hash, never the token).
    AdminToken(Box<AdminTokenRecord>),
    /// The revocation entry as stored.
    TokenRevocation(Box<TokenRevocation>),
    /// The tenant after the change.
    Tenant(Box<Tenant>),
    /// The tenant was removed.
    TenantDeleted { id: String },
    /// One answer per ask of a [`SliceBatch`], in order.
    Slices(Vec<SliceAnswer>),
    /// A usage report was folded in; `keys` counts the keys that still exist.
    UsageRecorded { keys: u64 },
    /// An audit entry was appended.
    AuditRecorded { seq: u64 },
    /// The command was refused and changed nothing.
    Rejected(Rejection),
}

/// Why a command was refused. Each variant has a stable API code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("key {id} does not exist")]
    KeyNotFound { id: String },
    #[error("key {id} already exists")]
    KeyExists { id: String },
    #[error("the new secret collides with an existing one")]
    SecretCollision,
    #[error("key {id} is revoked")]
    KeyRevoked { id: String },
    #[error("key {id} is expired")]
    KeyExpired { id: String },
    #[error("route {id} does not exist")]
    RouteNotFound { id: String },
    #[error("provider {id} does not exist")]
    ProviderNotFound { id: String },
    #[error("admin token {id} does not exist")]
    AdminTokenNotFound { id: String },
    #[error("tenant {id} does not exist")]
    TenantNotFound { id: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl Rejection {
    /// Returns the stable machine-readable code of this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::KeyNotFound { .. }
            | Rejection::RouteNotFound { .. }
            | Rejection::TenantNotFound { .. }
            | Rejection::AdminTokenNotFound { .. }
            | Rejection::ProviderNotFound { .. } => "not_found",
            Rejection::KeyExists { .. } => "already_exists",
            Rejection::SecretCollision => "conflict",
            Rejection::KeyRevoked { .. } => "key_revoked",
            Rejection::KeyExpired { .. } => "key_expired",
            Rejection::Invalid { .. } => "validation_failed",
        }
    }
}
