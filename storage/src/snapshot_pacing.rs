//! When another snapshot is worth what it costs.
//!
//! A snapshot encodes and writes the whole state on every node, so its cost grows with the
//! state, while what it saves (log kept on disk and replayed at restart) grows with the log
//! written since the last one. Snapshotting after a fixed number of entries therefore costs
//! more per write the more keys the cluster holds: at a few hundred thousand keys each
//! snapshot took every node one to two seconds of a shared core. Waiting until the log
//! written since the last snapshot is at least as large as that snapshot bounds the cost at
//! about one byte encoded per byte of log, whatever the size of the state, and the log
//! replayed at restart at about the size of the snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Byte counts shared by the log store (appends) and the state machine (snapshots).
#[derive(Debug, Default)]
pub struct SnapshotPacing {
    /// Encoded log bytes appended since the store was opened (plus the log found on open).
    log_bytes: AtomicU64,
    /// `log_bytes` when the last snapshot began.
    log_bytes_at_snapshot: AtomicU64,
    /// Size of the last snapshot's data.
    snapshot_bytes: AtomicU64,
}

impl SnapshotPacing {
    /// Pacing for a store that holds `log_bytes` of log beyond a snapshot of
    /// `snapshot_bytes` (both zero for a new store).
    pub fn new(log_bytes: u64, snapshot_bytes: u64) -> Self {
        Self {
            log_bytes: AtomicU64::new(log_bytes),
            log_bytes_at_snapshot: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
        }
    }

    /// Counts an append of `bytes` encoded entries.
    pub(crate) fn appended(&self, bytes: u64) {
        self.log_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Marks the start of a snapshot; pass the mark to [`SnapshotPacing::snapshot_stored`].
    pub(crate) fn snapshot_begins(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Records a snapshot of `bytes` that covers the log up to `mark`.
    pub(crate) fn snapshot_stored(&self, mark: u64, bytes: u64) {
        self.log_bytes_at_snapshot.store(mark, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Size of the last snapshot (0 before the first).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// Whether the log written since the last snapshot has outgrown it.
    pub fn log_outgrew_snapshot(&self) -> bool {
        let since = self
            .log_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.log_bytes_at_snapshot.load(Ordering::Relaxed));
        since >= self.snapshot_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_may_snapshot_at_once() {
        assert!(SnapshotPacing::default().log_outgrew_snapshot());
    }

    #[test]
    fn the_next_snapshot_waits_for_as_much_log_as_the_last_one_held() {
        let pacing = SnapshotPacing::default();
        pacing.appended(500);
        let mark = pacing.snapshot_begins();
        // Appends during the build count towards the next snapshot.
        pacing.appended(100);
        pacing.snapshot_stored(mark, 1_000);
        assert!(!pacing.log_outgrew_snapshot());
        pacing.appended(899);
        assert!(!pacing.log_outgrew_snapshot());
        pacing.appended(1);
        assert!(pacing.log_outgrew_snapshot());
    }

    #[test]
    fn log_found_on_open_counts() {
        let pacing = SnapshotPacing::new(2_000, 1_500);
        assert!(pacing.log_outgrew_snapshot());
        let pacing = SnapshotPacing::new(1_000, 1_500);
        assert!(!pacing.log_outgrew_snapshot());
    }
}
