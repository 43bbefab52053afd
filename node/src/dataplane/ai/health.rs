//! How each provider has been doing on this node: a smoothed time to the response head
//! (which `lowest_latency` orders by) and a run of failures that holds a provider down
//! for a while (it is then tried last, after every other candidate).
//!
//! Requests send their observations to the provider monitor actor, the only writer; the
//! data plane reads the published snapshot without a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use arc_swap::ArcSwap;

/// Consecutive failures that hold a provider down.
const FAILURES_TO_DOWN: u32 = 3;
/// How long a provider is held down; after that the next request tries it again, and one
/// more failure holds it down again.
const DOWN_MS: i64 = 10_000;
/// What a failed attempt counts as in the latency average.
const FAILURE_LATENCY_US: u64 = 30_000_000;

/// One attempt at a provider: how long until the response head, and whether it failed
/// (connect error, timeout, 429 or 5xx).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Observation {
    pub provider: String,
    pub elapsed: Duration,
    pub failed: bool,
}

/// A provider's standing on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStatus {
    /// Smoothed time to the response head in microseconds; 0 until measured.
    pub latency_us: u64,
    pub consecutive_failures: u32,
    pub down_until_ms: i64,
}

impl ProviderStatus {
    pub fn is_down(&self, now_ms: i64) -> bool {
        now_ms < self.down_until_ms
    }

    fn observe(&mut self, observation: &Observation, now_ms: i64) {
        let sample = if observation.failed {
            FAILURE_LATENCY_US
        } else {
            u64::try_from(observation.elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .max(1)
        };
        self.latency_us = if self.latency_us == 0 {
            sample
        } else {
            (self.latency_us.saturating_mul(7).saturating_add(sample)) / 8
        }
        .max(1);
        if observation.failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= FAILURES_TO_DOWN {
                self.down_until_ms = now_ms + DOWN_MS;
            }
        } else {
            self.consecutive_failures = 0;
            self.down_until_ms = 0;
        }
    }
}

/// Every provider's standing, published as a snapshot.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    statuses: ArcSwap<HashMap<String, ProviderStatus>>,
}

impl ProviderHealth {
    /// The current standings, read without a lock.
    pub fn snapshot(&self) -> Arc<HashMap<String, ProviderStatus>> {
        self.statuses.load_full()
    }

    /// Folds one observation in. Called by the single writer, the provider monitor.
    pub fn observe(&self, observation: &Observation, now_ms: i64) {
        let mut statuses = HashMap::clone(&self.statuses.load());
        let status = statuses.entry(observation.provider.clone()).or_default();
        status.observe(observation, now_ms);
        let status = *status;
        self.statuses.store(Arc::new(statuses));
        metrics::gauge!("credentialflow_provider_latency_seconds", "provider" => observation.provider.clone())
            .set(status.latency_us as f64 / 1e6);
        metrics::gauge!("credentialflow_provider_up", "provider" => observation.provider.clone())
            .set(if status.is_down(now_ms) { 0.0 } else { 1.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(failed: bool) -> Observation {
        Observation {
            provider: "p".into(),
            elapsed: Duration::from_millis(10),
            failed,
        }
    }

    #[test]
    fn a_run_of_failures_holds_a_provider_down_for_a_while() {
        let mut status = ProviderStatus::default();
        status.observe(&observation(true), 0);
        status.observe(&observation(true), 0);
        assert!(!status.is_down(0));
        status.observe(&observation(true), 0);
        assert!(status.is_down(DOWN_MS - 1));
        assert!(!status.is_down(DOWN_MS), "tried again after the pause");
        status.observe(&observation(false), DOWN_MS);
        assert_eq!(status.consecutive_failures, 0);
    }

    #[test]
    fn latency_is_an_average_that_failures_push_up() {
        let mut status = ProviderStatus::default();
        status.observe(&observation(false), 0);
        assert_eq!(status.latency_us, 10_000);
        status.observe(&observation(true), 0);
        assert!(status.latency_us > 3_000_000);
    }
}
