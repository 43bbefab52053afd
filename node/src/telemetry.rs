//! Prometheus metrics, served on `GET /metrics` of the admin listener.
//!
//! Hot-path metrics are registered once, when a route is compiled, and only incremented
//! per request (an atomic add), so metrics cost the proxy no map lookup and no allocation.
//! Cluster gauges (Raft term, leader, indexes, apply lag, snapshot) and upstream health are
//! read when Prometheus scrapes. Labels never carry a credential: routes, targets, status
//! classes and stable error codes only.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::cluster_handle::ClusterView;

/// Installs the process-wide recorder; returns the handle `/metrics` renders from.
pub fn install() -> Option<PrometheusHandle> {
    let handle = match PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .and_then(|builder| builder.install_recorder())
    {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
            return None;
        }
    };
    describe_counter!(
        "credentialflow_requests_total",
        "Proxy requests by route and status class."
    );
    describe_histogram!(
        "credentialflow_request_duration_seconds",
        "Time from request to response head, by route."
    );
    describe_counter!(
        "credentialflow_refusals_total",
        "Requests the proxy answered itself, by stable error code (auth failures, limits, ...)."
    );
    describe_gauge!(
        "credentialflow_upstream_up",
        "1 while an upstream target is in rotation."
    );
    describe_gauge!("credentialflow_raft_term", "Current Raft term.");
    describe_gauge!(
        "credentialflow_raft_leader",
        "Id of the known leader (0 when none)."
    );
    describe_gauge!("credentialflow_raft_is_leader", "1 on the leader.");
    describe_gauge!("credentialflow_raft_last_log_index", "Last log index held.");
    describe_gauge!("credentialflow_raft_applied_index", "Last log index applied.");
    describe_gauge!(
        "credentialflow_raft_commit_index",
        "On the leader: the highest index a majority of voters holds."
    );
    describe_gauge!(
        "credentialflow_raft_apply_lag",
        "Entries held but not yet applied."
    );
    describe_gauge!(
        "credentialflow_raft_snapshot_index",
        "Log index of the last snapshot."
    );
    describe_counter!(
        "credentialflow_quota_asks_total",
        "Slice batches the quota leaser proposed, by outcome."
    );
    describe_counter!(
        "credentialflow_quota_slices_granted_total",
        "Slices granted to this node."
    );
    describe_counter!(
        "credentialflow_quota_capacity_granted_total",
        "Requests' worth of capacity granted to this node."
    );
    Some(handle)
}

/// One route's request metrics, registered when the route is compiled.
#[derive(Debug)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let class = |class: &'static str| counter!("credentialflow_requests_total", "route" => route.to_owned(), "status" => class);
        Self {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: histogram!("credentialflow_request_duration_seconds", "route" => route.to_owned()),
        }
    }

    /// Counts one request answered with `status` after `elapsed`.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Counts a request the proxy refused itself, by its stable code.
pub fn refusal(code: &'static str) {
    counter!("credentialflow_refusals_total", "code" => code).increment(1);
}

/// Sets the cluster and upstream gauges just before a scrape renders them.
pub fn observe(view: &ClusterView, targets: &[(String, bool)]) {
    let index = |value: Option<u64>| value.unwrap_or(0) as f64;
    gauge!("credentialflow_raft_term").set(view.term as f64);
    gauge!("credentialflow_raft_leader").set(index(view.leader_id));
    gauge!("credentialflow_raft_is_leader").set(f64::from(u8::from(view.leader_id == Some(view.node_id))));
    gauge!("credentialflow_raft_last_log_index").set(index(view.last_log_index));
    gauge!("credentialflow_raft_applied_index").set(index(view.last_applied));
    if let Some(commit) = view.commit_index {
        gauge!("credentialflow_raft_commit_index").set(commit as f64);
    }
    gauge!("credentialflow_raft_apply_lag")
        .set(index(view.last_log_index).max(index(view.last_applied)) - index(view.last_applied));
    gauge!("credentialflow_raft_snapshot_index").set(index(view.snapshot_index));
    for (url, up) in targets {
        gauge!("credentialflow_upstream_up", "target" => url.clone()).set(f64::from(u8::from(*up)));
    }
}
