//! Per-key request counting on this node. The hot path adds to atomics; the usage flusher
//! drains them into a replicated report now and then (never one Raft write per request).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use cluster::activity::{KeyUsageDelta, ModelUsage, STATUS_CLASSES};

/// Requests of one key on this node since the last report.
#[derive(Debug, Default)]
pub struct UsageCell {
    by_class: [AtomicU64; STATUS_CLASSES],
    last_used_ms: AtomicI64,
    /// Model tokens and cost of AI routes, by `provider/model` (AI requests only).
    models: Mutex<HashMap<String, ModelUsage>>,
    /// Items of personal data masked in prompts, by kind.
    pii_masked: Mutex<BTreeMap<String, u64>>,
}

impl UsageCell {
    /// Counts one request answered with `status` at `now_ms`.
    pub fn record(&self, status: u16, now_ms: i64) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Counts one completion of `model` (`provider/model`).
    pub fn record_model(&self, model: &str, usage: &ModelUsage) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.entry(model.to_owned()).or_default().add(usage);
    }

    /// Counts the items masked in one prompt, by kind (never their values).
    pub fn record_pii<K: AsRef<str>>(&self, counts: impl IntoIterator<Item = (K, u64)>) {
        let mut masked = self.pii_masked.lock().unwrap_or_else(PoisonError::into_inner);
        for (kind, count) in counts {
            if count > 0 {
                let total = masked.entry(kind.as_ref().to_owned()).or_default();
                *total = total.saturating_add(count);
            }
        }
    }

    /// Takes the counts accumulated since the last drain, if there are any.
    pub fn drain(&self, key_id: &str) -> Option<KeyUsageDelta> {
        let by_class: [u64; STATUS_CLASSES] =
            std::array::from_fn(|i| self.by_class[i].swap(0, Ordering::Relaxed));
        let models: Vec<(String, ModelUsage)> =
            std::mem::take(&mut *self.models.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        let pii_masked: Vec<(String, u64)> =
            std::mem::take(&mut *self.pii_masked.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        if by_class.iter().all(|&n| n == 0) && models.is_empty() && pii_masked.is_empty() {
            return None;
        }
        Some(KeyUsageDelta {
            key_id: key_id.to_owned(),
            by_class,
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
            models,
            pii_masked,
        })
    }

    /// Puts back counts whose report was not written, so the next report carries them.
    pub fn restore(&self, delta: &KeyUsageDelta) {
        for (cell, n) in self.by_class.iter().zip(delta.by_class) {
            cell.fetch_add(n, Ordering::Relaxed);
        }
        for (model, usage) in &delta.models {
            self.record_model(model, usage);
        }
        self.record_pii(delta.pii_masked.iter().map(|(kind, n)| (kind, *n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_status_class_and_drained_once() {
        let cell = UsageCell::default();
        cell.record(200, 10);
        cell.record(204, 30);
        cell.record(404, 20);
        cell.record(503, 5);
        let delta = cell.drain("key_a").expect("counts");
        assert_eq!(delta.by_class, [0, 2, 0, 1, 1]);
        assert_eq!(delta.last_used_ms, 30);
        assert!(cell.drain("key_a").is_none());
        cell.restore(&delta);
        assert_eq!(cell.drain("key_a").expect("restored").by_class, [0, 2, 0, 1, 1]);
    }
}
