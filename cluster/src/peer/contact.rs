//! When this node last had evidence of a leader backed by a quorum, so the proxy can refuse
//! credentials once its replica may be missing revocations (guarantee 2).
//!
//! A leader stamps the time of its last quorum acknowledgement and sends its age with every
//! AppendEntries ([`QUORUM_ACK_AGE_HEADER`]); a follower that accepts the entries stamps that
//! same moment. A deposed leader cut off with some followers in a minority stops getting
//! quorum acknowledgements, so it and the followers it still reaches all go stale, even
//! though they keep talking to each other.

use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
        }
    }
}

impl LeaderContact {
    /// Records contact that happened `age` ago.
    pub fn touch(&self, age: Duration) {
        let at = Instant::now()
            .checked_sub(age)
            .unwrap_or(self.origin)
            .saturating_duration_since(self.origin);
        let at_ms = u64::try_from(at.as_millis()).unwrap_or(NEVER - 1);
        // Contacts are reported from several places; keep the latest.
        let _ = self
            .last_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == NEVER || at_ms > old).then_some(at_ms)
            });
    }

    /// Returns how long ago the last contact was, or `None` if there never was one.
    pub fn age(&self) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == NEVER {
            return None;
        }
        let now = self.origin.elapsed();
        Some(now.saturating_sub(Duration::from_millis(last)))
    }

    /// Returns whether the last contact is older than `max_staleness` (or never happened).
    pub fn is_stale(&self, max_staleness: Duration) -> bool {
        self.age().is_none_or(|age| age > max_staleness)
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
            last_ms: AtomicU64::new(NEVER),
        };
        contact.touch(Duration::from_secs(10));
        assert!(contact.is_stale(Duration::from_secs(5)));
        contact.touch(Duration::ZERO);
        contact.touch(Duration::from_secs(30));
        assert!(!contact.is_stale(Duration::from_secs(5)));
    }
}
