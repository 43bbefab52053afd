//! The peer protocol: Raft RPCs and forwarded admin operations between members, as
//! bincode bodies over HTTP on the peer listener.
//!
//! - [`protocol`]: paths and message types both sides agree on.
//! - [`client`]: one pooled HTTP client per peer, and the openraft network built on it.
//! - [`contact`]: when a node last had evidence of a leader backed by a quorum.

pub mod client;
pub mod contact;
pub mod protocol;

pub use client::{PeerClient, PeerError, PeerNetwork, PeerRegistry, PeerTls};
pub use contact::LeaderContact;
pub use protocol::{ForwardError, ForwardRequest, ForwardResponse};
