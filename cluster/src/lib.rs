//! The replicated model of credentialflow.
//!
//! # Layout
//!
//! - [`types`]: the openraft type configuration every crate agrees on.
//! - [`model`]: the records the cluster replicates (API keys, tenants, node info).
//! - [`route`]: routes and their upstream targets, with their validation.
//! - [`jwt`]: how a route verifies JSON Web Tokens.
//! - [`admin_token`]: managed admin credentials and their roles.
//! - [`ai`]: AI routes: public model names and the provider models serving them.
//! - [`activity`]: per-key usage totals and the audit log.
//! - [`settings`]: cluster-wide settings (what a stale replica does).
//! - [`limits`]: exact cluster-wide limits through granted slices of capacity.
//! - [`provider`]: model providers of the AI gateway, with sealed API keys.
//! - [`revocation`]: the replicated list of revoked tokens.
//! - [`command`]: what can be proposed to Raft and what applying it answers.
//! - [`state`]: the replicated [`State`] and its pure, deterministic [`apply`].
//! - [`sealed`]: secrets sealed with the cluster master key (upstream credentials).
//! - [`secret`]: API key secrets: generation, checksum, hashing.
//! - [`validate`]: input rules shared by the admin API and `apply`.
//! - [`wire`]: the versioned bincode encoding used on disk and between peers.
//! - [`peer`]: the peer protocol and its pooled HTTP client (Raft RPCs, forwarded writes).
//!
//! Nothing here knows actix-web or RocksDB: the domain is testable without a disk or a socket.

#![forbid(unsafe_code)]

pub mod activity;
pub mod admin_token;
pub mod ai;
pub mod command;
pub mod jwt;
pub mod limits;
pub mod model;
pub mod peer;
pub mod provider;
pub mod revocation;
pub mod route;
pub mod sealed;
pub mod secret;
pub mod settings;
pub mod state;
pub mod types;
pub mod validate;
pub mod wire;

pub use command::{Command, Outcome, Proposal, Rejection, Response};
pub use limits::{Limit, MeterId, Period, Subject, Unit};
pub use model::{KeyRecord, KeySecret, KeyStatus, NodeInfo, Tenant};
pub use route::{Route, RouteAuth, UpstreamTarget};
pub use settings::{ClusterSettings, StalePolicy};
pub use state::{apply, apply_proposal, State};
pub use types::{NodeId, TypeConfig};
