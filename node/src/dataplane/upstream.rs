//! Upstream targets: their health (shared by the health checker and request handlers
//! through atomics) and the choice of a target for one attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cluster::UpstreamTarget;
use rand::Rng;

/// Consecutive failed requests after which a target is ejected until a probe succeeds.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// Consecutive failed probes after which a target is marked down.
pub const DOWN_AFTER_FAILED_PROBES: u32 = 2;

/// What the data plane knows about one upstream address, shared by every route that
/// names it.
#[derive(Debug)]
pub struct TargetHealth {
    healthy: AtomicBool,
    request_failures: AtomicU32,
    probe_failures: AtomicU32,
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            request_failures: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
        }
    }
}

impl TargetHealth {
    /// Returns whether requests may be sent to the target.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A request got an answer that shows the target works.
    pub fn request_succeeded(&self) {
        if self.request_failures.load(Ordering::Relaxed) != 0 {
            self.request_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request could not connect to the target or its connection failed (an HTTP answer,
    /// even a 5xx, shows the target is up, and a client could provoke those at will).
    /// Returns whether this failure ejected the target.
    pub fn request_failed(&self) -> bool {
        let failures = self.request_failures.fetch_add(1, Ordering::Relaxed) + 1;
        failures >= EJECT_AFTER_FAILURES && self.healthy.swap(false, Ordering::Relaxed)
    }

    /// An active probe succeeded: the target is back in rotation. Returns whether it was
    /// down before.
    pub fn probe_succeeded(&self) -> bool {
        self.probe_failures.store(0, Ordering::Relaxed);
        self.request_failures.store(0, Ordering::Relaxed);
        !self.healthy.swap(true, Ordering::Relaxed)
    }

    /// An active probe failed. Returns whether this failure took the target down.
    pub fn probe_failed(&self) -> bool {
        let failures = self.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
        failures >= DOWN_AFTER_FAILED_PROBES && self.healthy.swap(false, Ordering::Relaxed)
    }
}

/// Health entries by target URL, kept across route-table rebuilds so that changing a route
/// does not forget what is known about its targets.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    by_url: Mutex<HashMap<String, Arc<TargetHealth>>>,
}

impl HealthRegistry {
    /// Returns the health entry of `url`, creating a healthy one if it is new.
    pub fn entry(&self, url: &str) -> Arc<TargetHealth> {
        let mut by_url = self
            .by_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_url.entry(url.to_owned()).or_default().clone()
    }

    /// Every target's URL and whether it is in rotation.
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        let by_url = self
            .by_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_url
            .iter()
            .map(|(url, health)| (url.clone(), health.is_healthy()))
            .collect()
    }

    /// Forgets targets no route names any more.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut by_url = self
            .by_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_url.retain(|url, _| keep(url));
    }
}

/// A target compiled for forwarding.
#[derive(Debug)]
pub struct Target {
    /// The configured URL, as the operator wrote it (health registry key).
    pub url: String,
    /// `scheme://host:port` and `base_path`: a health check's path is appended to it.
    pub base_url: String,
    /// The path the target is mounted under, without a trailing `/` (empty at the root):
    /// a request's path is appended to it.
    pub base_path: String,
    /// `host:port`: where connections go, and what the pool files them under.
    pub authority: Arc<str>,
    /// `authority` as the `Host` header sent upstream, built once.
    pub host_value: http1::HeaderValue,
    pub weight: u32,
    pub priority: u32,
    pub health: Arc<TargetHealth>,
}

impl Target {
    /// Compiles a configured target. Routes were validated before they were replicated,
    /// so a URL that does not parse here is skipped by the caller.
    pub fn compile(target: &UpstreamTarget, registry: &HealthRegistry) -> Option<Self> {
        let url = url::Url::parse(&target.url).ok()?;
        let port = url.port_or_known_default()?;
        // `Host`'s Display brackets IPv6 addresses, as an authority needs.
        let authority = format!("{}:{port}", url.host()?);
        let base_path = url.path().trim_end_matches('/').to_owned();
        Some(Self {
            url: target.url.clone(),
            base_url: format!("{}://{authority}{base_path}", url.scheme()),
            base_path,
            host_value: http1::HeaderValue::from_str(&authority).ok()?,
            authority: authority.into(),
            weight: target.weight,
            priority: target.priority,
            health: registry.entry(&target.url),
        })
    }
}

/// Picks the target for the next attempt: weighted random among the healthy targets of the
/// lowest priority group that has one, skipping targets this request already tried.
/// `targets` is sorted by priority.
pub fn choose<'a>(targets: &'a [Target], tried: &[usize]) -> Option<(usize, &'a Target)> {
    let mut start = 0;
    while start < targets.len() {
        let priority = targets[start].priority;
        let end = start
            + targets[start..]
                .iter()
                .take_while(|t| t.priority == priority)
                .count();
        let usable = |i: &usize| targets[*i].health.is_healthy() && !tried.contains(i);
        let total: u64 = (start..end)
            .filter(usable)
            .map(|i| u64::from(targets[i].weight))
            .sum();
        if total > 0 {
            let mut pick = rand::thread_rng().gen_range(0..total);
            for i in (start..end).filter(usable) {
                let weight = u64::from(targets[i].weight);
                if pick < weight {
                    return Some((i, &targets[i]));
                }
                pick -= weight;
            }
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(spec: &[(u32, u32)]) -> Vec<Target> {
        let registry = HealthRegistry::default();
        spec.iter()
            .enumerate()
            .map(|(i, (weight, priority))| {
                Target::compile(
                    &UpstreamTarget {
                        weight: *weight,
                        priority: *priority,
                        ..UpstreamTarget::new(format!("http://127.0.0.1:{}", 9000 + i))
                    },
                    &registry,
                )
                .expect("valid target")
            })
            .collect()
    }

    #[test]
    fn the_lowest_healthy_priority_group_is_used() {
        let t = targets(&[(1, 0), (1, 0), (1, 1)]);
        for _ in 0..50 {
            assert!(choose(&t, &[]).expect("a target").0 < 2);
        }
        t[0].health.healthy.store(false, Ordering::Relaxed);
        t[1].health.healthy.store(false, Ordering::Relaxed);
        assert_eq!(choose(&t, &[]).expect("fall over").0, 2);
        t[2].health.healthy.store(false, Ordering::Relaxed);
        assert!(choose(&t, &[]).is_none());
    }

    #[test]
    fn tried_targets_are_skipped_then_the_next_group_is_used() {
        let t = targets(&[(1, 0), (1, 0), (1, 5)]);
        let (first, _) = choose(&t, &[]).expect("a target");
        let (second, _) = choose(&t, &[first]).expect("the other one");
        assert_ne!(first, second);
        assert_eq!(choose(&t, &[first, second]).expect("next group").0, 2);
    }

    #[test]
    fn weights_shape_the_share_of_traffic() {
        let t = targets(&[(9, 0), (1, 0)]);
        let heavy = (0..2000)
            .filter(|_| choose(&t, &[]).expect("a target").0 == 0)
            .count();
        assert!((1600..=1990).contains(&heavy), "heavy target got {heavy} of 2000");
    }

    #[test]
    fn failures_eject_and_a_probe_restores() {
        let health = TargetHealth::default();
        assert!(!health.request_failed());
        health.request_succeeded();
        assert!(!health.request_failed());
        assert!(!health.request_failed());
        assert!(health.request_failed(), "third consecutive failure ejects");
        assert!(!health.is_healthy());
        assert!(health.probe_succeeded());
        assert!(health.is_healthy());
        assert!(!health.probe_failed());
        assert!(health.probe_failed());
    }

    #[test]
    fn ipv6_targets_get_one_pair_of_brackets() {
        let target = Target::compile(
            &UpstreamTarget::new("http://[::1]:8081"),
            &HealthRegistry::default(),
        )
        .expect("valid");
        assert_eq!(&*target.authority, "[::1]:8081");
        assert_eq!(target.base_url, "http://[::1]:8081");
        assert_eq!(target.base_path, "");
        assert_eq!(target.host_value, "[::1]:8081");
    }

    #[test]
    fn compiled_targets_keep_their_base_path() {
        let registry = HealthRegistry::default();
        let target = Target::compile(
            &UpstreamTarget {
                url: "http://localhost:8081/v2/".into(),
                weight: 1,
                priority: 0,
            },
            &registry,
        )
        .expect("valid");
        assert_eq!(target.base_url, "http://localhost:8081/v2");
        assert_eq!(target.base_path, "/v2");
        assert!(Arc::ptr_eq(
            &target.health,
            &registry.entry("http://localhost:8081/v2/")
        ));
    }
}
