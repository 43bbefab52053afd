//! Errors of opening the store, and the mapping of RocksDB errors into openraft's.

use cluster::types::{NodeId, StorageError};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error("cannot open RocksDB at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("stored data is unreadable ({what}): {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: cluster::wire::WireError,
    },
    #[error("this data directory belongs to node {stored}, not node {configured}")]
    WrongNode { stored: NodeId, configured: NodeId },
    #[error("RocksDB read failed: {0}")]
    Read(#[from] rocksdb::Error),
    #[error("the stored snapshot is unreadable: {0}")]
    Snapshot(#[from] crate::snapshot_file::SnapshotFileError),
    #[error("cannot record the node id: {0}")]
    Record(String),
}

/// Converts an I/O failure into openraft's storage error for `subject` and `verb`.
pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}
