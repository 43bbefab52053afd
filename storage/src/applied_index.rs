//! Waiting until this replica has applied a log index.
//!
//! A write a follower forwarded to the leader is answered once the follower has applied it
//! too, so the client finds its write on the node it wrote through. openraft's metrics
//! watch can tell when that is, but each waiter copies the whole metrics record and re-arms
//! a timer on every change of any metric: under write load, thousands of copies a second
//! and a wake-up of every waiter's thread each time. Here a waiter is queued under its
//! index and woken once, when that index is applied.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

/// The last applied index, and who waits for which index.
#[derive(Debug, Default)]
pub struct AppliedIndex {
    /// One past the last applied index; 0 while nothing is applied.
    next: AtomicU64,
    waiters: Mutex<BTreeMap<u64, Vec<oneshot::Sender<()>>>>,
}

impl AppliedIndex {
    /// Records that everything up to `index` is applied and wakes whoever waited for it.
    /// An index lower than one recorded before changes nothing.
    pub fn advance(&self, index: u64) {
        let next = index.saturating_add(1);
        self.next.fetch_max(next, Ordering::SeqCst);
        let released = {
            let mut waiters = self.lock();
            let pending = waiters.split_off(&next);
            std::mem::replace(&mut *waiters, pending)
        };
        for sender in released.into_values().flatten() {
            let _ = sender.send(());
        }
    }

    /// Returns whether `index` is applied.
    pub fn is_applied(&self, index: u64) -> bool {
        index < self.next.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for `index` to be applied; returns whether it was.
    pub async fn wait(&self, index: u64, timeout: Duration) -> bool {
        let Some(applied) = self.register(index) else {
            return true;
        };
        if tokio::time::timeout(timeout, applied).await.is_ok() {
            return true;
        }
        // Timed out: the receiver is gone, so drop this waiter's sender with any other
        // abandoned ones under the same index.
        let mut waiters = self.lock();
        if let Some(senders) = waiters.get_mut(&index) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiters.remove(&index);
            }
        }
        self.is_applied(index)
    }

    /// Queues a waiter for `index`, or returns `None` if it is applied already.
    fn register(&self, index: u64) -> Option<oneshot::Receiver<()>> {
        if self.is_applied(index) {
            return None;
        }
        let (sender, applied) = oneshot::channel();
        let mut waiters = self.lock();
        // Checked again under the lock: an `advance` that raised the index before this
        // check has released its waiters already; one after it will find this one.
        if self.is_applied(index) {
            return None;
        }
        waiters.entry(index).or_default().push(sender);
        Some(applied)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<oneshot::Sender<()>>>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn an_applied_index_needs_no_wait() {
        let applied = AppliedIndex::default();
        assert!(!applied.is_applied(0));
        applied.advance(5);
        assert!(applied.is_applied(0) && applied.is_applied(5) && !applied.is_applied(6));
        assert!(applied.wait(5, Duration::ZERO).await);
        assert_eq!(applied.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_advance_that_reaches_its_index_and_not_before() {
        let applied = Arc::new(AppliedIndex::default());
        let waiter = tokio::spawn({
            let applied = applied.clone();
            async move { applied.wait(10, LONG).await }
        });
        while applied.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        applied.advance(9);
        assert_eq!(applied.waiting(), 1, "index 9 must not release a waiter for 10");
        assert!(!waiter.is_finished());
        applied.advance(12);
        assert!(waiter.await.expect("waiter task"));
        assert_eq!(applied.waiting(), 0);
    }

    #[tokio::test]
    async fn an_index_never_goes_back() {
        let applied = AppliedIndex::default();
        applied.advance(7);
        applied.advance(3);
        assert!(applied.is_applied(7));
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_leaves_nothing_behind() {
        let applied = AppliedIndex::default();
        assert!(!applied.wait(4, Duration::from_millis(50)).await);
        assert_eq!(applied.waiting(), 0);
    }

    #[test]
    fn a_waiter_queued_while_its_index_is_being_applied_is_never_stranded() {
        for index in 0..20_000u64 {
            let applied = Arc::new(AppliedIndex::default());
            let start = Arc::new(std::sync::Barrier::new(2));
            let advancing = std::thread::spawn({
                let (applied, start) = (applied.clone(), start.clone());
                move || {
                    start.wait();
                    applied.advance(index);
                }
            });
            start.wait();
            let registered = applied.register(index);
            advancing.join().expect("advancing thread");
            if let Some(mut woken) = registered {
                assert_eq!(woken.try_recv(), Ok(()), "waiter for {index} stranded");
            }
        }
    }
}
