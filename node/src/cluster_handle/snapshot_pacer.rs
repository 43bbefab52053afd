//! Asks openraft for a snapshot when one is due: at least `snapshot_threshold` entries
//! since the last one (the configured floor, as before) and a log written since then at
//! least as large as that snapshot ([`storage::SnapshotPacing`] says why). openraft's own
//! policy can only count entries, so it is set to never snapshot on its own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use cluster::types::LogId;
use storage::SnapshotPacing;

use super::Inner;

/// How often the pacer looks; a snapshot may start this much later than it could have.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Checks until the node stops.
pub(super) async fn pace_snapshots(inner: Weak<Inner>, pacing: Arc<SnapshotPacing>, threshold: u64) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let (last_applied, snapshot) = {
            let metrics = inner.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.last_applied, metrics.snapshot)
        };
        if !snapshot_due(last_applied, snapshot, threshold, &pacing) {
            continue;
        }
        // openraft ignores the request while a snapshot is being built.
        if inner.raft.trigger().snapshot().await.is_err() {
            return; // Raft has stopped.
        }
    }
}

/// Whether enough entries and enough log bytes have gone by since the last snapshot.
fn snapshot_due(
    last_applied: Option<LogId>,
    snapshot: Option<LogId>,
    threshold: u64,
    pacing: &SnapshotPacing,
) -> bool {
    let next_unsnapshotted = snapshot.map_or(0, |id| id.index + 1);
    let applied_end = last_applied.map_or(0, |id| id.index + 1);
    applied_end.saturating_sub(next_unsnapshotted) >= threshold && pacing.log_outgrew_snapshot()
}

#[cfg(test)]
mod tests {
    use cluster::types::NodeId;
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(1, NodeId::from(1u64)), index))
    }

    #[test]
    fn entries_below_the_threshold_are_never_enough() {
        let pacing = SnapshotPacing::default();
        assert!(!snapshot_due(None, None, 20, &pacing));
        assert!(!snapshot_due(log_id(18), None, 20, &pacing));
        assert!(snapshot_due(log_id(19), None, 20, &pacing));
        assert!(!snapshot_due(log_id(38), log_id(19), 20, &pacing));
        assert!(snapshot_due(log_id(39), log_id(19), 20, &pacing));
    }

    #[test]
    fn enough_entries_wait_for_the_log_to_outgrow_the_last_snapshot() {
        let small_log = SnapshotPacing::new(999, 1_000);
        assert!(!snapshot_due(log_id(5_000), log_id(19), 20, &small_log));
        let grown_log = SnapshotPacing::new(1_000, 1_000);
        assert!(snapshot_due(log_id(5_000), log_id(19), 20, &grown_log));
    }
}
