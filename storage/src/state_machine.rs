//! The state machine: the in-memory replicated [`State`], persisted as snapshots.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use cluster::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership};
use cluster::{apply_proposal, wire, Outcome, Proposal, State, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::applied_index::AppliedIndex;
use crate::db::{cf, CF_SM, SNAPSHOT_KEY, SNAPSHOT_LAST_LOG_KEY};
use crate::error::{io_error, StorageOpenError};
use crate::offload::offload;
use crate::snapshot_file::SnapshotFile;
use crate::snapshot_pacing::SnapshotPacing;

/// The applied state with the log position it reflects.
#[derive(Debug, Default, Clone)]
pub struct AppliedState {
    /// The last log entry applied to `state`.
    pub last_applied: Option<LogId>,
    /// The membership as of `last_applied`.
    pub last_membership: StoredMembership,
    /// The replicated model.
    pub state: State,
}

/// A read handle on the applied state, shared with the node's admin reads.
#[derive(Debug, Default, Clone)]
pub struct SharedState {
    inner: Arc<RwLock<AppliedState>>,
    applied: Arc<AppliedIndex>,
}

impl SharedState {
    /// Returns a read guard. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the last applied index, to wait on.
    pub fn applied_index(&self) -> &AppliedIndex {
        &self.applied
    }

    fn replace(&self, applied: AppliedState) {
        let last_applied = applied.last_applied;
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = applied;
        self.advance_to(last_applied);
    }

    /// Wakes the waiters for `last_applied` once the state lock is released, so that a
    /// woken reader finds the state unlocked.
    fn advance_to(&self, last_applied: Option<LogId>) {
        if let Some(log_id) = last_applied {
            self.applied.advance(log_id.index);
        }
    }
}

/// Told about every change of the applied state while the change is being made, so that a
/// read model derived from the state (the data plane's key and route tables) changes
/// before openraft answers the write: a client that saw a revoke succeed can never be
/// served by the old key on this node afterwards.
pub trait ApplyObserver: Send + Sync + 'static {
    /// `proposals` were just applied to `state`, in order.
    fn applied(&self, state: &State, proposals: &[Proposal]);
    /// `state` replaced the previous state as a whole (restart, snapshot installed).
    fn replaced(&self, state: &State);
}

/// A snapshot as earlier versions stored it, as one RocksDB value: its metadata and the
/// encoded [`State`]. Read when a data directory has no snapshot file yet.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// Copied as one block: serde's default treats a `Vec<u8>` as a sequence and encodes
    /// and decodes it byte by byte, a call per byte of a state of a hundred megabytes.
    /// bincode writes both forms alike, so snapshots stored before still decode.
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The openraft state machine over [`SharedState`], snapshotting into [`SnapshotFile`].
pub struct StateMachineStore {
    file: SnapshotFile,
    shared: SharedState,
    snapshot_seq: Arc<AtomicU64>,
    /// Serialises snapshot writes (background builds and installs).
    snapshot_writers: Arc<Mutex<()>>,
    /// Log and snapshot sizes: when the next snapshot is due, and how large its buffer starts.
    pacing: Arc<SnapshotPacing>,
    observer: Option<Arc<dyn ApplyObserver>>,
}

impl StateMachineStore {
    /// Opens the state machine, restoring the last snapshot if there is one; openraft then
    /// replays committed log entries after it.
    /// `log_bytes` is the log the store holds, which counts as written since the snapshot.
    pub(crate) fn restore(db: &DB, log_bytes: u64) -> Result<Self, StorageOpenError> {
        let shared = SharedState::default();
        let file = SnapshotFile::in_dir(db.path());
        migrate_legacy_snapshot(db, &file)?;
        let mut restored_bytes = 0;
        if let Some(snapshot) = load_snapshot(&file)? {
            restored_bytes = snapshot.data.len() as u64;
            let state = decode_state(&snapshot.data).map_err(|source| StorageOpenError::Corrupt {
                what: "snapshot state",
                source,
            })?;
            shared.replace(AppliedState {
                last_applied: snapshot.meta.last_log_id,
                last_membership: snapshot.meta.last_membership.clone(),
                state,
            });
        }
        Ok(Self {
            file,
            shared,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshot_writers: Arc::new(Mutex::new(())),
            pacing: Arc::new(SnapshotPacing::new(log_bytes, restored_bytes)),
            observer: None,
        })
    }

    /// The byte counts that decide when a snapshot is due, shared with the log store.
    pub fn pacing(&self) -> Arc<SnapshotPacing> {
        self.pacing.clone()
    }

    /// Attaches the observer of state changes and shows it the current state.
    pub fn set_observer(&mut self, observer: Arc<dyn ApplyObserver>) {
        observer.replaced(&self.shared.read().state);
        self.observer = Some(observer);
    }

    /// Returns the handle the node reads the applied state through.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }
}

/// Returns the stored snapshot from the snapshot file.
fn load_snapshot(file: &SnapshotFile) -> Result<Option<StoredSnapshot>, StorageOpenError> {
    Ok(file.read()?.map(|(meta, data)| StoredSnapshot { meta, data }))
}

/// Moves a snapshot that an earlier version kept as a RocksDB value into the snapshot file,
/// once, on open; the file is written (and synced) before the value is deleted.
fn migrate_legacy_snapshot(db: &DB, file: &SnapshotFile) -> Result<(), StorageOpenError> {
    let sm = cf(db, CF_SM);
    let Some(bytes) = db.get_cf(sm, SNAPSHOT_KEY)? else {
        return Ok(());
    };
    let legacy: StoredSnapshot = wire::decode_large(&bytes).map_err(|source| StorageOpenError::Corrupt {
        what: "snapshot",
        source,
    })?;
    let newer_file = file
        .read_meta()?
        .is_some_and(|meta| meta.last_log_id >= legacy.meta.last_log_id);
    if !newer_file {
        file.write(&legacy.meta, &legacy.data)?;
    }
    for key in [SNAPSHOT_KEY, SNAPSHOT_LAST_LOG_KEY] {
        db.delete_cf(sm, key)?;
    }
    Ok(())
}

fn decode_state(bytes: &[u8]) -> Result<State, wire::WireError> {
    let mut state: State = wire::decode_large(bytes)?;
    state.rebuild_indexes();
    Ok(state)
}

/// Writes a snapshot durably, unless the stored one is already at least as recent.
/// Snapshots are built in a background task while a newer one may be installed from the
/// leader; without this check a late build could replace the newer snapshot on disk with one
/// whose log tail has already been purged.
fn persist_snapshot(
    file: &SnapshotFile,
    snapshot: &StoredSnapshot,
    writers: &Mutex<()>,
) -> Result<bool, StorageError> {
    let subject = ErrorSubject::Snapshot(Some(snapshot.meta.signature()));
    let _serialised = writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let stored = file
        .read_meta()
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?
        .and_then(|meta| meta.last_log_id);
    if stored.is_some() && stored >= snapshot.meta.last_log_id {
        return Ok(false);
    }
    file.write(&snapshot.meta, &snapshot.data)
        .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
    Ok(true)
}

/// Builds snapshots from a copy of the state taken when the builder was created.
pub struct SnapshotBuilder {
    file: SnapshotFile,
    copy: AppliedState,
    seq: u64,
    writers: Arc<Mutex<()>>,
    pacing: Arc<SnapshotPacing>,
    /// Where the log stood when the copy was taken (see [`SnapshotPacing::snapshot_begins`]).
    log_mark: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        offload(|| self.build())
    }
}

impl SnapshotBuilder {
    /// Encodes the copy and stores it, unless a newer snapshot is stored already.
    fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        let last_bytes = usize::try_from(self.pacing.snapshot_bytes()).unwrap_or(0);
        let data = wire::encode_with_capacity(&self.copy.state, last_bytes + last_bytes / 8 + 4096)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let encode_ms = started.elapsed().as_millis() as u64;
        let snapshot_id = match &self.copy.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("empty-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.copy.last_applied,
            last_membership: self.copy.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        if persist_snapshot(&self.file, &stored, &self.writers)? {
            self.pacing
                .snapshot_stored(self.log_mark, stored.data.len() as u64);
            tracing::info!(
                last_log = ?stored.meta.last_log_id,
                bytes = stored.data.len(),
                encode_ms,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot built"
            );
        } else {
            tracing::info!(last_log = ?stored.meta.last_log_id, "snapshot built but a newer one is stored");
        }
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut guard = self
            .shared
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let applied = &mut *guard;
        let mut responses = Vec::new();
        let mut proposals = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Outcome::default(),
                EntryPayload::Normal(proposal) => {
                    let outcome = apply_proposal(&mut applied.state, &proposal);
                    proposals.push(proposal);
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::default()
                }
            };
            responses.push(response);
        }
        if let (Some(observer), false) = (&self.observer, proposals.is_empty()) {
            observer.applied(&applied.state, &proposals);
        }
        let last_applied = applied.last_applied;
        drop(guard);
        self.shared.advance_to(last_applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            file: self.file.clone(),
            // The copy shares the records but still walks every key (tens of milliseconds
            // at a few hundred thousand): off the Raft thread.
            copy: offload(|| {
                let applied = self.shared.read();
                AppliedState {
                    last_applied: applied.last_applied,
                    last_membership: applied.last_membership.clone(),
                    state: applied.state.snapshot_copy(),
                }
            }),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
            writers: self.snapshot_writers.clone(),
            pacing: self.pacing.clone(),
            log_mark: self.pacing.snapshot_begins(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        offload(|| self.install(meta, snapshot.into_inner()))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = offload(|| load_snapshot(&self.file))
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

impl StateMachineStore {
    /// Decodes a snapshot received from the leader, stores it and makes it the state.
    fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let state = decode_state(&data).map_err(|e| io_error(subject, ErrorVerb::Read, e))?;
        let log_mark = self.pacing.snapshot_begins();
        let bytes = data.len() as u64;
        let stored = persist_snapshot(
            &self.file,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
            &self.snapshot_writers,
        )?;
        if stored {
            self.pacing.snapshot_stored(log_mark, bytes);
        }
        let mut guard = self
            .shared
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = AppliedState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state,
        };
        if let Some(observer) = &self.observer {
            observer.replaced(&guard.state);
        }
        drop(guard);
        self.shared.advance_to(meta.last_log_id);
        tracing::info!(last_log = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
