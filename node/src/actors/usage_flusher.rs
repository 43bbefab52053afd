//! The usage flusher: folds this node's per-key request counts into the replicated totals
//! every interval, one Raft write per report (never one per request). Counts whose report
//! was refused before being proposed are put back for the next report; counts of a report
//! whose outcome is unknown are not, so usage is never counted twice.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cluster::activity::{KeyUsageDelta, UsageReport, MAX_USAGE_REPORT_KEYS};
use cluster::{Command, NodeId};

use crate::clock::now_ms;
use crate::cluster_handle::{ClusterError, ClusterHandle};
use crate::dataplane::read_model::ReadModel;
use crate::dataplane::usage::UsageCell;

/// The actor that sends usage reports.
pub struct UsageFlusher {
    cluster: ClusterHandle,
    read_model: Arc<ReadModel>,
    node: NodeId,
    interval: Duration,
    flushing: bool,
}

impl UsageFlusher {
    pub fn new(cluster: ClusterHandle, read_model: Arc<ReadModel>, interval: Duration) -> Self {
        Self {
            node: cluster.id(),
            cluster,
            read_model,
            interval,
            flushing: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        let drained = self.read_model.usage_ledger().drain();
        if drained.is_empty() {
            return;
        }
        self.flushing = true;
        let cluster = self.cluster.clone();
        let node = self.node;
        ctx.spawn(
            async move { send_reports(&cluster, node, drained).await }
                .into_actor(self)
                .map(|_, actor, _| actor.flushing = false),
        );
    }
}

/// Sends what was counted since the last report right away; called on shutdown so that a
/// graceful stop loses no usage.
pub async fn flush_now(cluster: &ClusterHandle, read_model: &ReadModel) {
    let drained = read_model.usage_ledger().drain();
    if !drained.is_empty() {
        send_reports(cluster, cluster.id(), drained).await;
    }
}

async fn send_reports(cluster: &ClusterHandle, node: NodeId, drained: Vec<(Arc<UsageCell>, KeyUsageDelta)>) {
    for chunk in drained.chunks(MAX_USAGE_REPORT_KEYS) {
        let report = UsageReport {
            node,
            now_ms: now_ms(),
            keys: chunk.iter().map(|(_, delta)| delta.clone()).collect(),
        };
        match cluster.write(Command::RecordUsage(Box::new(report))).await {
            Ok(_) => {}
            Err(ClusterError::OutcomeUnknown(reason)) => {
                tracing::warn!(%reason, keys = chunk.len(), "usage report outcome unknown; not resent");
            }
            Err(error) => {
                tracing::debug!(%error, keys = chunk.len(), "usage report not written; kept for the next one");
                for (cell, delta) in chunk {
                    cell.restore(delta);
                }
            }
        }
    }
}

impl Actor for UsageFlusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |actor, ctx| actor.tick(ctx));
    }
}
