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
