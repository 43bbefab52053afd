//! RocksDB storage of credentialflow: the Raft log and the state machine with snapshots.
//!
//! # Layout
//!
//! - [`db`]: opening the database, column families, typed metadata keys.
//! - [`log_store`]: openraft's `RaftLogStorage`, acknowledging an append only once the WAL
//!   holding it is synced (one sync per append; each append is a batch of entries, and each
//!   entry on the leader a batch of commands).
//! - [`state_machine`]: openraft's `RaftStateMachine`: applies entries to the in-memory
//!   [`cluster::State`] and persists it as snapshots (restart = snapshot + log replay).
//! - [`snapshot_file`]: the stored snapshot, one checksummed file replaced atomically.
//! - [`snapshot_pacing`]: when another snapshot is worth its cost (log written since the
//!   last one at least as large as it).
//! - [`wal_warmup`]: makes the live WAL a recycled file on open, so a sync flushes data only.
//!
//! Durability rules: big-endian log indexes, every persisted value carries a format version
//! (`cluster::wire`), the vote is synced before it is acknowledged, a snapshot's data and its
//! metadata are written together as one file, synced and renamed into place, off the WAL
//! the log appends wait on.

#![forbid(unsafe_code)]
// openraft's `StorageError` is the error type its storage traits require; helpers return it
// unboxed so `?` works at every call site of the trait methods.
#![allow(clippy::result_large_err)]

pub mod applied_index;
pub mod db;
pub mod error;
pub mod log_store;
mod log_tail;
mod offload;
pub mod snapshot_file;
pub mod snapshot_pacing;
pub mod state_machine;
pub mod wal_warmup;

pub use db::{open, open_as};
pub use error::StorageOpenError;
pub use log_store::LogStore;
pub use snapshot_pacing::SnapshotPacing;
pub use state_machine::{AppliedState, ApplyObserver, SharedState, StateMachineStore};
