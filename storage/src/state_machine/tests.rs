//! openraft's storage conformance suite, run against the RocksDB store, plus restart tests.

use openraft::testing::{StoreBuilder, Suite};

use crate::{open, LogStore, StateMachineStore};
use cluster::types::StorageError;
use cluster::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| {
            crate::error::io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e)
        })?;
        let (log, sm) = open(dir.path()).map_err(|e| {
            crate::error::io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Read, e)
        })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}

mod restart {
    use cluster::command::NewKey;
    use cluster::types::{Entry, LogId};
    use cluster::{Command, KeySecret, Proposal};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder, Vote};

    use crate::open;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn create(index: u64) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Proposal::One(Command::CreateKey(Box::new(NewKey {
                id: format!("key_{index}"),
                name: format!("k{index}"),
                tenant: None,
                scopes: vec![],
                limits: Vec::new(),
                expires_at_ms: None,
                metadata_json: "{}".into(),
                secret: KeySecret {
                    hash: [index as u8; 32],
                    prefix: "cf_x".into(),
                    created_at_ms: 0,
                    valid_until_ms: None,
                },
                now_ms: 0,
            })))),
        }
    }

    #[tokio::test]
    async fn a_reopened_store_restores_vote_log_purge_point_and_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, mut sm) = open(dir.path()).expect("open");
            log.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
            let entries: Vec<Entry> = (1..=6).map(create).collect();
            log.blocking_append(entries.clone()).await.expect("append");
            sm.apply(entries[..4].to_vec()).await.expect("apply");
            let applied = sm.shared().applied_index().is_applied(4);
            assert!(applied && !sm.shared().applied_index().is_applied(5));
            build(&mut sm).await;
            assert!(
                dir.path().join("state.snapshot").exists(),
                "the snapshot is a file in the store's directory"
            );
            log.save_committed(Some(log_id(6))).await.expect("committed");
            log.purge(log_id(3)).await.expect("purge");
        }
        let (mut log, mut sm) = open(dir.path()).expect("reopen");
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new_committed(1, 1))
        );
        assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(6)));
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3)));
        assert_eq!(state.last_log_id, Some(log_id(6)));
        let kept = log.try_get_log_entries(0..10).await.expect("entries");
        assert_eq!(
            kept.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );

        // The state machine comes back from the snapshot (applied up to 4); openraft replays
        // the committed tail 5..=6 from the log.
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(4)));
        let shared = sm.shared();
        assert!(shared.applied_index().is_applied(4), "restored from the snapshot");
        assert!(!shared.applied_index().is_applied(5));
        let restored = shared.read();
        assert!(restored.state.key("key_4").is_some());
        assert!(restored.state.key("key_5").is_none());
        assert!(
            restored.state.key_by_secret_hash(&[2; 32]).is_some(),
            "indexes rebuilt"
        );
    }

    #[tokio::test]
    async fn a_late_snapshot_build_never_replaces_a_newer_installed_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, mut sm) = open(dir.path()).expect("open");
        sm.apply((1..=4).map(create).collect::<Vec<_>>())
            .await
            .expect("apply");
        // A build starts from the state at index 4 ...
        let mut late_builder = sm.get_snapshot_builder().await;

        // ... meanwhile the leader installs a snapshot at index 6.
        let newer_dir = tempfile::tempdir().expect("tempdir");
        let (_l, mut newer) = open(newer_dir.path()).expect("open");
        newer
            .apply((1..=6).map(create).collect::<Vec<_>>())
            .await
            .expect("apply");
        let installed = build(&mut newer).await;
        let waiter = tokio::spawn({
            let shared = sm.shared();
            async move {
                shared
                    .applied_index()
                    .wait(6, std::time::Duration::from_secs(30))
                    .await
            }
        });
        sm.install_snapshot(&installed.meta, installed.snapshot)
            .await
            .expect("install");
        assert!(
            waiter.await.expect("waiter"),
            "installing the snapshot applies its index"
        );

        // The late build finishes; the stored snapshot stays the newer one.
        late_builder.build_snapshot().await.expect("late build");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(log_id(6)));
        drop((sm, log, late_builder));
        let (_log, mut reopened) = open(dir.path()).expect("reopen");
        let (applied, _) = reopened.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(6)));
    }

    /// Builds and stores a snapshot of `sm`'s current state.
    async fn build(sm: &mut crate::StateMachineStore) -> openraft::storage::Snapshot<cluster::TypeConfig> {
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build")
    }

    #[tokio::test]
    async fn a_snapshot_stored_by_an_earlier_version_restores_and_gives_way_to_the_file() {
        use crate::db::{cf, CF_SM, SNAPSHOT_KEY, SNAPSHOT_LAST_LOG_KEY};
        use cluster::wire;

        let dir = tempfile::tempdir().expect("tempdir");
        {
            // Build a snapshot at 3, then store it the way earlier versions did: as values
            // in the state-machine column family, with no snapshot file.
            let (log, mut sm) = open(dir.path()).expect("open");
            sm.apply((1..=3).map(create).collect::<Vec<_>>())
                .await
                .expect("apply");
            let built = build(&mut sm).await;
            std::fs::remove_file(dir.path().join("state.snapshot")).expect("remove file");
            let legacy = super::super::StoredSnapshot {
                meta: built.meta.clone(),
                data: built.snapshot.into_inner(),
            };
            let db = log.db();
            db.put_cf(
                cf(db, CF_SM),
                SNAPSHOT_KEY,
                wire::encode(&legacy).expect("encode"),
            )
            .expect("put");
            db.put_cf(
                cf(db, CF_SM),
                SNAPSHOT_LAST_LOG_KEY,
                wire::encode(&built.meta.last_log_id).expect("encode"),
            )
            .expect("put");
        }
        let (log, mut sm) = open(dir.path()).expect("reopen");
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(3)), "restored from the stored value");
        assert!(dir.path().join("state.snapshot").exists(), "moved into the file");
        let db = log.db();
        assert!(
            db.get_cf(cf(db, CF_SM), SNAPSHOT_KEY).expect("get").is_none(),
            "the earlier version's value is removed"
        );

        // The moved snapshot counts as stored: a newer one replaces it.
        sm.apply(vec![create(4)]).await.expect("apply");
        build(&mut sm).await;
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(log_id(4)));
    }

    #[tokio::test]
    async fn truncation_removes_the_conflicting_suffix_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _sm) = open(dir.path()).expect("open");
        log.blocking_append((1..=5).map(create).collect::<Vec<_>>())
            .await
            .expect("append");
        log.truncate(log_id(3)).await.expect("truncate");
        let left = log.try_get_log_entries(0..10).await.expect("entries");
        assert_eq!(
            left.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            log.get_log_state().await.expect("state").last_log_id,
            Some(log_id(2))
        );
    }
}

#[test]
fn a_data_directory_refuses_to_start_as_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(crate::open_as(dir.path(), 2).expect("first open records node 2"));
    drop(crate::open_as(dir.path(), 2).expect("node 2 again"));
    match crate::open_as(dir.path(), 3) {
        Err(crate::StorageOpenError::WrongNode {
            stored: 2,
            configured: 3,
        }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("node 3 must not open node 2's data"),
    }
}

mod stored_format {
    use serde::{Deserialize, Serialize};

    use super::super::StoredSnapshot;
    use cluster::types::SnapshotMeta;
    use cluster::wire;

    /// The layout snapshots were stored in before their data was encoded as one block.
    #[derive(Serialize, Deserialize)]
    struct ByteByByte {
        meta: SnapshotMeta,
        data: Vec<u8>,
    }

    #[test]
    fn snapshots_stored_byte_by_byte_decode_and_encode_the_same() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let old = ByteByByte {
            meta: SnapshotMeta::default(),
            data: data.clone(),
        };
        let stored = wire::encode(&old).expect("encode");
        let decoded: StoredSnapshot = wire::decode_large(&stored).expect("decode");
        assert_eq!(decoded.data, data);
        assert_eq!(wire::encode(&decoded).expect("encode"), stored);
    }
}
