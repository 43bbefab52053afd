//! The Raft log in RocksDB.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use cluster::types::{Entry, LogId, NodeId, StorageError};
use cluster::{wire, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{cf, log_key, MetaKey, CF_LOG, CF_META};
use crate::error::{io_error, StorageOpenError};
use crate::log_tail::LogTail;
use crate::snapshot_pacing::SnapshotPacing;

/// The Raft log store. Writes are serialised by openraft; reads may come from any reader.
pub struct LogStore {
    db: Arc<DB>,
    tail: SharedTail,
    /// Counts the bytes appended, which pace snapshots.
    pacing: Arc<SnapshotPacing>,
}

/// A cheap reader of the log, used by replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
    tail: SharedTail,
}

/// The newest entries, shared by the store and its readers.
#[derive(Clone, Default)]
struct SharedTail(Arc<Mutex<LogTail>>);

impl SharedTail {
    fn lock(&self) -> MutexGuard<'_, LogTail> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, pacing: Arc<SnapshotPacing>) -> Self {
        Self {
            db,
            tail: SharedTail::default(),
            pacing,
        }
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Records `id` as the owner of this store on first use; refuses a different id later.
    pub(crate) fn claim_node_id(&self, id: NodeId) -> Result<(), StorageOpenError> {
        match self.get_meta::<NodeId>(MetaKey::NodeId) {
            Ok(Some(stored)) if stored == id => Ok(()),
            Ok(Some(stored)) => Err(StorageOpenError::WrongNode {
                stored,
                configured: id,
            }),
            Ok(None) => self
                .put_meta(MetaKey::NodeId, &id, true)
                .map_err(|e| StorageOpenError::Record(e.to_string())),
            Err(e) => Err(StorageOpenError::Record(e.to_string())),
        }
    }

    fn put_meta<T: Serialize>(&self, key: MetaKey, value: &T, sync: bool) -> Result<(), StorageError> {
        let bytes = wire::encode(value).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db
            .put_cf_opt(cf(&self.db, CF_META), key.as_bytes(), bytes, &options)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: MetaKey) -> Result<Option<T>, StorageError> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_META), key.as_bytes())
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes
            .map(|b| wire::decode(&b))
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    wire::decode(bytes).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, &self.tail, range)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, &self.tail, range)
    }
}

/// Reads `range` from the tail when it starts there, else from RocksDB.
fn read_entries<RB: RangeBounds<u64>>(
    db: &DB,
    tail: &SharedTail,
    range: RB,
) -> Result<Vec<Entry>, StorageError> {
    if let Some(entries) = tail.lock().read(&range) {
        return Ok(entries);
    }
    read_stored_entries(db, range)
}

fn read_stored_entries<RB: RangeBounds<u64>>(db: &DB, range: RB) -> Result<Vec<Entry>, StorageError> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let from = log_key(start);
    let mode = IteratorMode::From(&from, Direction::Forward);
    let mut entries = Vec::new();
    for item in db.iterator_cf(cf(db, CF_LOG), mode) {
        let (key, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let index = index_of(&key)?;
        if !range.contains(&index) {
            break;
        }
        entries.push(decode_entry(&value)?);
    }
    Ok(entries)
}

fn index_of(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        io_error(
            ErrorSubject::Logs,
            ErrorVerb::Read,
            std::io::Error::other("log key is not 8 bytes"),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(MetaKey::LastPurged)?;
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .next()
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((_, value)) => Some(decode_entry(&value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            db: self.db.clone(),
            tail: self.tail.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        // A vote must be on disk before it is acted upon.
        self.put_meta(MetaKey::Vote, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(MetaKey::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: after a crash, a lower committed index only means less log replay.
        self.put_meta(MetaKey::Committed, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(MetaKey::Committed)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        let mut appended = Vec::new();
        let mut appended_bytes = 0u64;
        for entry in entries {
            let bytes =
                wire::encode(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(log, log_key(entry.log_id.index), &bytes);
            appended_bytes += bytes.len() as u64;
            appended.push((entry, bytes.len()));
        }
        // openraft 0.9 awaits this acknowledgement before it does anything else, so there is
        // never a second append to share an fsync with, and the Raft runtime's one worker has
        // little to do meanwhile that does not wait on it: sync on this thread. Handing the
        // runtime to another thread for the sync (`block_in_place`) cost a thread wake-up per
        // append. Batching happens above (many commands per entry, many entries per
        // AppendEntries), so one sync still covers a whole batch.
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let written = self.db.write_opt(batch, &options);
        match written {
            Ok(()) => {
                // Before the acknowledgement: openraft reads an entry only once it is flushed.
                self.tail.lock().appended(appended);
                self.pacing.appended(appended_bytes);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail.lock().truncated(log_id.index);
        let log = cf(&self.db, CF_LOG);
        self.db
            .delete_range_cf(log, log_key(log_id.index), log_key(u64::MAX))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries,
        // never a hole.
        self.put_meta(MetaKey::LastPurged, &log_id, false)?;
        self.tail.lock().purged(log_id.index);
        let log = cf(&self.db, CF_LOG);
        self.db
            .delete_range_cf(log, log_key(0), log_key(log_id.index.saturating_add(1)))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use cluster::types::{Entry, LogId};
    use cluster::{wire, Command, Proposal};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    use super::{read_stored_entries, LogReader, LogStore};
    use crate::open;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Proposal::One(Command::ForgetNode {
                id: index * 10 + term,
            })),
        }
    }

    fn encoded(entries: &[Entry]) -> Vec<Vec<u8>> {
        entries.iter().map(|e| wire::encode(e).expect("encode")).collect()
    }

    /// Asserts that every read, through the store and through a reader, answers what
    /// RocksDB holds.
    async fn assert_reads_match_the_stored_log(log: &mut LogStore, reader: &mut LogReader) {
        for from in 0..8 {
            let stored = read_stored_entries(log.db(), from..100).expect("stored");
            let through_reader = reader.try_get_log_entries(from..100).await.expect("read");
            let through_store = log.try_get_log_entries(from..100).await.expect("read");
            assert_eq!(encoded(&through_reader), encoded(&stored), "reader, from {from}");
            assert_eq!(encoded(&through_store), encoded(&stored), "store, from {from}");
        }
    }

    /// Every read answers what RocksDB holds, whether the tail served it or not, through
    /// appends, a truncated and rewritten suffix, and a purge.
    #[tokio::test]
    async fn reads_answer_what_the_stored_log_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _sm) = open(dir.path()).expect("open");
        let mut reader = log.get_log_reader().await;
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);

        log.blocking_append((1..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .await
            .expect("append");
        assert_reads_match_the_stored_log(&mut log, &mut reader).await;
        log.truncate(log_id(4)).await.expect("truncate");
        assert_reads_match_the_stored_log(&mut log, &mut reader).await;
        log.blocking_append((4..=5).map(|i| entry(i, 2)).collect::<Vec<_>>())
            .await
            .expect("append");
        assert_reads_match_the_stored_log(&mut log, &mut reader).await;
        log.purge(log_id(2)).await.expect("purge");
        assert_reads_match_the_stored_log(&mut log, &mut reader).await;
    }
}
