//! The RocksDB database: column families and typed keys.

use std::path::Path;
use std::sync::Arc;

use cluster::types::NodeId;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use crate::error::StorageOpenError;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::wal_warmup;

/// Raft log entries, keyed by big-endian index so that key order is log order.
pub(crate) const CF_LOG: &str = "log";
/// Raft metadata: vote, committed, last purged.
pub(crate) const CF_META: &str = "meta";
/// State-machine snapshot.
pub(crate) const CF_SM: &str = "sm";

/// A typed key in the metadata column family.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MetaKey {
    Vote,
    Committed,
    LastPurged,
    NodeId,
}

impl MetaKey {
    pub(crate) fn as_bytes(self) -> &'static [u8] {
        match self {
            MetaKey::Vote => b"vote",
            MetaKey::Committed => b"committed",
            MetaKey::LastPurged => b"last_purged",
            MetaKey::NodeId => b"node_id",
        }
    }
}

/// The key of the current snapshot in [`CF_SM`].
pub(crate) const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// The last log id of the stored snapshot, kept apart so it can be checked cheaply.
pub(crate) const SNAPSHOT_LAST_LOG_KEY: &[u8] = b"snapshot_last_log";

/// Encodes a log index as a key.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Returns a column family handle; they are all created on open.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // Every family is created in `open`, so a missing one is a programming error.
    #[allow(clippy::expect_used)]
    db.cf_handle(name).expect("column family created on open")
}

/// Opens the store of node `node_id`: the first open records the id, and a later open with
/// another id is refused, so a data directory is never started as the wrong member.
pub fn open_as(dir: &Path, node_id: NodeId) -> Result<(LogStore, StateMachineStore), StorageOpenError> {
    let (log_store, state_machine) = open(dir)?;
    log_store.claim_node_id(node_id)?;
    Ok((log_store, state_machine))
}

/// Opens (creating if needed) the store under `dir` and returns its log store and its
/// state machine, restored from the last snapshot.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageOpenError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Appends sync the WAL; keep RocksDB from buffering it in user space.
    options.set_manual_wal_flush(false);
    options.set_keep_log_file_num(4);
    wal_warmup::configure(&mut options);
    let families = [
        ColumnFamilyDescriptor::new(CF_LOG, Options::default()),
        ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ColumnFamilyDescriptor::new(CF_SM, Options::default()),
        ColumnFamilyDescriptor::new(wal_warmup::CF_WAL_WARMUP, Options::default()),
    ];
    let opened = |source| StorageOpenError::Open {
        path: dir.display().to_string(),
        source,
    };
    let db = DB::open_cf_descriptors(&options, dir, families).map_err(opened)?;
    wal_warmup::warm_up(&db).map_err(opened)?;
    let db = Arc::new(db);
    let log_bytes = log_bytes_on_disk(&db);
    let state_machine = StateMachineStore::restore(&db, log_bytes)?;
    let log_store = LogStore::new(db, state_machine.pacing());
    Ok((log_store, state_machine))
}

/// RocksDB's estimate of the log it holds (tables and memtables), which snapshot pacing
/// counts as written since the last snapshot; 0 when RocksDB cannot tell.
fn log_bytes_on_disk(db: &DB) -> u64 {
    let log = cf(db, CF_LOG);
    [
        "rocksdb.estimate-live-data-size",
        "rocksdb.cur-size-all-mem-tables",
    ]
    .iter()
    .filter_map(|property| db.property_int_value_cf(log, *property).ok().flatten())
    .sum()
}
