//! The quota leaser: obtains this node's slices of every limit through Raft, before the
//! local slice runs out, many meters in one command. It also reports what closed slices
//! spent, which gives their unspent capacity back to the cluster.
//!
//! One batch is in flight at a time; requests that find nothing held wake the leaser and
//! wait for its next batch, so a burst of them costs one Raft write.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cluster::command::{SliceAsk, SliceBatch};
use cluster::state::MAX_SLICE_ASKS;
use cluster::{Command, Response};

use crate::clock::now_ms;
use crate::cluster_handle::ClusterHandle;
use crate::dataplane::limiter::{Limiter, LocalMeter};

/// How long a granted slice may be spent. A slice of a node that died or was cut off
/// stays counted as spent (it may have been), but stops shrinking the others' share once
/// its lease is over.
pub const LEASE_MS: i64 = 2_000;
/// How often the leaser looks at the meters without being woken (reports of slices whose
/// lease ran out, asks ahead of demand).
const TICK: Duration = Duration::from_millis(100);
/// Pause after a batch that could not be written, so an unreachable leader is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest the leaser waits for a batch's answer. Requests that hold nothing wait for it,
/// so a node out of reach of the leader refuses them after this instead of hanging.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a shutdown spends giving held capacity back.
const RELEASE_DEADLINE: Duration = Duration::from_secs(3);

/// The actor; its work runs as one future in its context.
pub struct QuotaLeaser {
    cluster: ClusterHandle,
    limiter: Arc<Limiter>,
}

impl QuotaLeaser {
    pub fn new(cluster: ClusterHandle, limiter: Arc<Limiter>) -> Self {
        Self { cluster, limiter }
    }
}

impl Actor for QuotaLeaser {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let cluster = self.cluster.clone();
        let limiter = self.limiter.clone();
        ctx.spawn(
            async move {
                while !limiter.is_closed() {
                    let _ = tokio::time::timeout(TICK, limiter.leaser_woken()).await;
                    if limiter.is_closed() {
                        break;
                    }
                    let asks = limiter
                        .meters()
                        .into_iter()
                        .filter_map(|meter| meter.ask(now_ms()).map(|ask| (meter, ask)))
                        .collect();
                    if !send(&cluster, &limiter, asks).await {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Gives back every held slice's unspent capacity; called on shutdown, after the proxy
/// stopped admitting. Waits for an ask still in flight (its grant is given back too), for
/// at most `RELEASE_DEADLINE`.
pub async fn release_all(cluster: &ClusterHandle, limiter: &Limiter) {
    limiter.close();
    let deadline = tokio::time::Instant::now() + RELEASE_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let meters = limiter.meters();
        let asks: Vec<_> = meters
            .iter()
            .filter_map(|meter| meter.release().map(|ask| (meter.clone(), ask)))
            .collect();
        let in_flight = meters.iter().any(|meter| meter.is_asking());
        if asks.is_empty() && !in_flight {
            return;
        }
        if !send(cluster, limiter, asks).await || in_flight {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tracing::warn!(
        "shutdown did not give back every held slice; the rest stays counted until its window ends"
    );
}

/// Proposes the asks in batches and hands each meter its answer. Returns false when a
/// batch could not be written (its meters keep their reports for the next one).
async fn send(cluster: &ClusterHandle, limiter: &Limiter, asks: Vec<(Arc<LocalMeter>, SliceAsk)>) -> bool {
    let mut all_written = true;
    let mut asks = asks.into_iter().peekable();
    while asks.peek().is_some() {
        let (meters, asks): (Vec<_>, Vec<_>) = asks.by_ref().take(MAX_SLICE_ASKS).unzip();
        let batch = SliceBatch {
            node: cluster.id(),
            incarnation: limiter.incarnation(),
            now_ms: now_ms(),
            lease_ms: LEASE_MS,
            asks,
        };
        let written =
            tokio::time::timeout(ASK_TIMEOUT, cluster.write(Command::GrantSlices(Box::new(batch)))).await;
        match written {
            Ok(Ok(written)) => match written.response {
                Response::Slices(answers) if answers.len() == meters.len() => {
                    metrics::counter!("credentialflow_quota_asks_total", "outcome" => "answered")
                        .increment(1);
                    for answer in &answers {
                        if let cluster::command::SliceAnswer::Granted(grant) = answer {
                            if grant.size > 0 {
                                metrics::counter!("credentialflow_quota_slices_granted_total").increment(1);
                                metrics::counter!("credentialflow_quota_capacity_granted_total")
                                    .increment(grant.size);
                            }
                        }
                    }
                    let now = now_ms();
                    for (meter, answer) in meters.iter().zip(&answers) {
                        meter.absorb(answer, now);
                    }
                    continue;
                }
                other => tracing::error!(?other, "slice batch answered unexpectedly"),
            },
            Ok(Err(error)) => tracing::debug!(%error, meters = meters.len(), "slice batch not written"),
            // A grant that was applied after all stays counted until its window ends: it
            // may strand capacity, never overshoot. Reports are sent again.
            Err(_) => tracing::debug!(meters = meters.len(), "slice batch not answered in time"),
        }
        all_written = false;
        metrics::counter!("credentialflow_quota_asks_total", "outcome" => "failed").increment(1);
        for meter in &meters {
            meter.ask_failed();
        }
    }
    all_written
}
