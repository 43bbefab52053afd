//! When this node last had evidence of a leader backed by a quorum, so the proxy can refuse
//! credentials once its replica may be missing revocations (guarantee 2).
//!
//! A leader stamps the time of its last quorum acknowledgement and sends its age with every
//! AppendEntries ([`QUORUM_ACK_AGE_HEADER`]). A follower that accepts the entries offers that
//! moment together with the leader's commit index, and the moment counts only once the
//! follower has applied up to that index: a node catching up is not fresh until it has
//! caught up. A deposed leader cut off with some followers in a minority stops getting
//! quorum acknowledgements, so it and the followers it still reaches all go stale, even
//! though they keep talking to each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The AppendEntries header carrying how long ago (in ms) the sending leader last heard
/// from a quorum.
pub const QUORUM_ACK_AGE_HEADER: &str = "x-credentialflow-quorum-ack-age-ms";

/// Marker for "never heard from a leader".
const NEVER: u64 = u64::MAX;

/// The time of the last contact with a leader, readable without a lock.
#[derive(Debug)]
pub struct LeaderContact {
    origin: Instant,
    /// Milliseconds since `origin` of the last contact, or [`NEVER`].
    last_ms: AtomicU64,
    /// A follower's contact waiting for the state machine to reach the leader's commit
    /// index: `(commit_index, ms since origin)`. The oldest offer waits; newer ones are
    /// dropped until it is promoted, so a steady stream of appends cannot postpone it.
    pending: Mutex<Option<(u64, u64)>>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
            pending: Mutex::new(None),
        }
    }
}

impl LeaderContact {
    /// Records contact that happened `age` ago.
    pub fn touch(&self, age: Duration) {
        if let Some(at_ms) = self.ms_since_origin(age) {
            self.record(at_ms);
        }
    }

    /// Offers contact that happened `age` ago with a leader that had committed up to
    /// `commit_index`; it counts once [`applied`](Self::applied) reaches that index.
    pub fn offer(&self, commit_index: u64, age: Duration) {
        let Some(at_ms) = self.ms_since_origin(age) else {
            return;
        };
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.is_none() {
            *pending = Some((commit_index, at_ms));
        }
    }

    /// Tells the clock how far the state machine has applied; promotes a waiting offer.
    pub fn applied(&self, applied_index: u64) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((commit_index, at_ms)) = *pending {
            if applied_index >= commit_index {
                *pending = None;
                drop(pending);
                self.record(at_ms);
            }
        }
    }

    /// The moment `age` ago, in ms since this clock's origin; `None` when it lies before
    /// the origin (evidence older than this process proves nothing about its replica).
    fn ms_since_origin(&self, age: Duration) -> Option<u64> {
        let at = Instant::now().checked_sub(age)?;
        let since = at.checked_duration_since(self.origin)?;
        Some(u64::try_from(since.as_millis()).unwrap_or(NEVER - 1))
    }

    fn record(&self, at_ms: u64) {
        // Contacts are reported from several places; keep the latest.
        let _ = self
            .last_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == NEVER || at_ms > old).then_some(at_ms)
            });
    }

    /// Returns how long ago the last contact was, or `None` if there never was one.
    pub fn age(&self) -> Option<Duration> {
        self.age_at(Instant::now())
    }

    /// [`Self::age`] as of `now`.
    fn age_at(&self, now: Instant) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == NEVER {
            return None;
        }
        let now = now.saturating_duration_since(self.origin);
        Some(now.saturating_sub(Duration::from_millis(last)))
    }

    /// Returns whether the last contact is older than `max_staleness` (or never happened).
    pub fn is_stale(&self, max_staleness: Duration) -> bool {
        self.is_stale_at(max_staleness, Instant::now())
    }

    /// [`Self::is_stale`] as of `now`, for a caller that has read the clock already.
    pub fn is_stale_at(&self, max_staleness: Duration, now: Instant) -> bool {
        self.age_at(now).is_none_or(|age| age > max_staleness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_stale_until_it_hears_from_a_leader() {
        let contact = LeaderContact::default();
        assert!(contact.is_stale(Duration::from_secs(5)));
        contact.touch(Duration::ZERO);
        assert!(!contact.is_stale(Duration::from_secs(5)));
    }

    #[test]
    fn an_old_contact_is_stale_and_never_replaces_a_newer_one() {
        let contact = LeaderContact {
            origin: Instant::now() - Duration::from_secs(60),
            ..LeaderContact::default()
        };
        contact.touch(Duration::from_secs(10));
        assert!(contact.is_stale(Duration::from_secs(5)));
        contact.touch(Duration::ZERO);
        contact.touch(Duration::from_secs(30));
        assert!(!contact.is_stale(Duration::from_secs(5)));
    }

    #[test]
    fn evidence_older_than_the_process_is_ignored() {
        let contact = LeaderContact::default();
        contact.touch(Duration::from_secs(3600));
        assert_eq!(contact.age(), None);
        contact.offer(1, Duration::from_secs(3600));
        contact.applied(1);
        assert_eq!(contact.age(), None);
    }

    #[test]
    fn an_offer_counts_only_once_its_commit_index_is_applied() {
        let contact = LeaderContact::default();
        contact.offer(10, Duration::ZERO);
        contact.applied(9);
        assert!(contact.is_stale(Duration::from_secs(5)), "still catching up");
        contact.offer(20, Duration::ZERO); // the older offer keeps waiting
        contact.applied(10);
        assert!(!contact.is_stale(Duration::from_secs(5)));
    }
}
