//! The peer protocol: Raft RPCs and forwarded admin operations between members, as
//! bincode bodies over HTTP on the peer listener.
//!
//! - [`protocol`]: paths and message types both sides agree on.
//! - [`client`]: one pooled HTTP client per peer, and the openraft network built on it.

pub mod client;
pub mod protocol;

pub use client::{PeerClient, PeerError, PeerNetwork, PeerRegistry};
pub use protocol::{ForwardError, ForwardRequest, ForwardResponse};
