//! Per-key request counting on this node. The hot path adds to atomics; the usage flusher
//! drains them into a replicated report now and then (never one Raft write per request).
//!
//! A report visits only the keys used since the last one: a cell puts itself on its
//! [`UsageLedger`] when it is first counted after a drain, so a node serving a few keys out
//! of a million does not walk the million every interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cluster::activity::{KeyUsageDelta, ModelUsage, STATUS_CLASSES};

/// The cells counted since the last drain.
#[derive(Debug, Default)]
pub struct UsageLedger {
    touched: Mutex<Vec<Arc<UsageCell>>>,
}

impl UsageLedger {
    /// Takes the counts of every cell counted since the last drain, with their cells (to
    /// put counts back when a report is not written).
    pub fn drain(&self) -> Vec<(Arc<UsageCell>, KeyUsageDelta)> {
        let touched = std::mem::take(&mut *self.touched.lock().unwrap_or_else(PoisonError::into_inner));
        touched
            .into_iter()
            .filter_map(|cell| {
                // Cleared before the counts are taken: a request counted after the counts
                // were taken finds the flag cleared and puts the cell back on the ledger.
                cell.touched.store(false, Ordering::SeqCst);
                let delta = cell.drain()?;
                Some((cell, delta))
            })
            .collect()
    }
}

/// Requests of one key on this node since the last report.
#[derive(Debug, Default)]
pub struct UsageCell {
    key_id: String,
    /// Where the cell goes when first counted after a drain.
    ledger: Arc<UsageLedger>,
    /// Whether the cell is on the ledger.
    touched: AtomicBool,
    by_class: [AtomicU64; STATUS_CLASSES],
    last_used_ms: AtomicI64,
    /// Model tokens and cost of AI routes, by `provider/model` (AI requests only).
    models: Mutex<HashMap<String, ModelUsage>>,
    /// Items of personal data masked in prompts, by kind.
    pii_masked: Mutex<BTreeMap<String, u64>>,
}

impl UsageCell {
    /// A cell for `key_id` that reports itself to `ledger`.
    pub fn new(key_id: &str, ledger: Arc<UsageLedger>) -> Self {
        Self {
            key_id: key_id.to_owned(),
            ledger,
            ..Self::default()
        }
    }

    /// Counts one request answered with `status` at `now_ms`.
    pub fn record(self: &Arc<Self>, status: u16, now_ms: i64) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        // Sequentially consistent with the ledger's drain: see `touch`.
        self.by_class[class].fetch_add(1, Ordering::SeqCst);
        // Most requests land in a millisecond already recorded: reading first spares the
        // workers a write to the shared cache line.
        if now_ms > self.last_used_ms.load(Ordering::Relaxed) {
            self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
        self.touch();
    }

    /// Counts one completion of `model` (`provider/model`).
    pub fn record_model(self: &Arc<Self>, model: &str, usage: &ModelUsage) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.entry(model.to_owned()).or_default().add(usage);
        drop(models);
        self.touch();
    }

    /// Counts the items masked in one prompt, by kind (never their values).
    pub fn record_pii<K: AsRef<str>>(self: &Arc<Self>, counts: impl IntoIterator<Item = (K, u64)>) {
        let mut masked = self.pii_masked.lock().unwrap_or_else(PoisonError::into_inner);
        for (kind, count) in counts {
            if count > 0 {
                let total = masked.entry(kind.as_ref().to_owned()).or_default();
                *total = total.saturating_add(count);
            }
        }
        drop(masked);
        self.touch();
    }

    /// Puts the cell on the ledger unless it is there already. Called after counting: the
    /// drain clears the flag before it takes the counts, so a count it missed is always
    /// followed by this finding the flag cleared (all four operations are sequentially
    /// consistent), and the count goes into the next report.
    fn touch(self: &Arc<Self>) {
        if !self.touched.load(Ordering::SeqCst) && !self.touched.swap(true, Ordering::SeqCst) {
            self.ledger
                .touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.clone());
        }
    }

    /// Takes the counts accumulated since the last drain, if there are any.
    fn drain(&self) -> Option<KeyUsageDelta> {
        let by_class: [u64; STATUS_CLASSES] =
            std::array::from_fn(|i| self.by_class[i].swap(0, Ordering::SeqCst));
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
            key_id: self.key_id.clone(),
            by_class,
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
            models,
            pii_masked,
        })
    }

    /// Puts back counts whose report was not written, so the next report carries them.
    pub fn restore(self: &Arc<Self>, delta: &KeyUsageDelta) {
        for (cell, n) in self.by_class.iter().zip(delta.by_class) {
            cell.fetch_add(n, Ordering::SeqCst);
        }
        self.touch();
        for (model, usage) in &delta.models {
            self.record_model(model, usage);
        }
        self.record_pii(delta.pii_masked.iter().map(|(kind, n)| (kind, *n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(ledger: &UsageLedger) -> Vec<KeyUsageDelta> {
        ledger.drain().into_iter().map(|(_, delta)| delta).collect()
    }

    #[test]
    fn requests_are_counted_by_status_class_and_drained_once() {
        let ledger = Arc::new(UsageLedger::default());
        let cell = Arc::new(UsageCell::new("key_a", ledger.clone()));
        cell.record(200, 10);
        cell.record(204, 30);
        cell.record(404, 20);
        cell.record(503, 5);
        let delta = drained(&ledger).pop().expect("counts");
        assert_eq!(delta.key_id, "key_a");
        assert_eq!(delta.by_class, [0, 2, 0, 1, 1]);
        assert_eq!(delta.last_used_ms, 30);
        assert!(drained(&ledger).is_empty());
        cell.restore(&delta);
        assert_eq!(
            drained(&ledger).pop().expect("restored").by_class,
            [0, 2, 0, 1, 1]
        );
    }

    #[test]
    fn a_drain_visits_only_the_cells_counted_since_the_last_one() {
        let ledger = Arc::new(UsageLedger::default());
        let cells: Vec<Arc<UsageCell>> = (0..1_000)
            .map(|i| Arc::new(UsageCell::new(&format!("key_{i}"), ledger.clone())))
            .collect();
        cells[7].record(200, 1);
        cells[7].record(200, 2);
        cells[42].record_model("openai/gpt", &ModelUsage::default());
        assert_eq!(ledger.touched.lock().expect("ledger").len(), 2);
        let mut ids: Vec<String> = drained(&ledger).into_iter().map(|d| d.key_id).collect();
        ids.sort();
        assert_eq!(ids, ["key_42", "key_7"]);
        assert!(ledger.touched.lock().expect("ledger").is_empty());
        cells[7].record(500, 3);
        assert_eq!(drained(&ledger).pop().map(|d| d.by_class), Some([0, 0, 0, 0, 1]));
    }

    #[test]
    fn counts_racing_a_drain_are_reported_once_and_never_lost() {
        let ledger = Arc::new(UsageLedger::default());
        let cell = Arc::new(UsageCell::new("key_a", ledger.clone()));
        let counters: Vec<_> = (0..2)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || {
                    for i in 0..200_000 {
                        cell.record(200, i);
                    }
                })
            })
            .collect();
        let mut total = 0;
        while counters.iter().any(|t| !t.is_finished()) {
            total += drained(&ledger).iter().map(|d| d.by_class[1]).sum::<u64>();
        }
        for counter in counters {
            counter.join().expect("counter");
        }
        total += drained(&ledger).iter().map(|d| d.by_class[1]).sum::<u64>();
        assert_eq!(total, 400_000);
    }
}
