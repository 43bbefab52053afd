//! One timer a connection keeps for its whole life and moves lazily. Arming a tokio timer
//! for every wait (the keep-alive before each request, the answer's timeout after it)
//! takes the timer wheel's lock twice per wait, to insert and to remove; on the proxy's
//! hot path that was a measurable share of its work. Here a later deadline costs a store:
//! the timer fires at the earlier one, finds the deadline has moved, and re-arms once.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

/// A deadline that can be moved without touching the timer wheel.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// The deadline in force; `None` while nothing is timed.
    at: Option<Instant>,
}

impl Default for Deadline {
    fn default() -> Self {
        Self::new()
    }
}

impl Deadline {
    /// A deadline with nothing timed yet.
    pub fn new() -> Self {
        Self {
            // Far enough to never fire before the first `set` moves it.
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + FAR)),
            at: None,
        }
    }

    /// Times whatever is awaited next to end at `at`.
    pub fn set(&mut self, at: Instant) {
        self.at = Some(at);
    }

    /// Completes once the deadline set last has passed; never, while none is set.
    pub fn expired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_expired(cx))
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        // A deadline earlier than the timer's is the one case that costs a re-arm up front.
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if self.sleep.deadline() >= at {
                return Poll::Ready(());
            }
            // Fired for a deadline since moved later.
            self.sleep.as_mut().reset(at);
        }
    }
}

/// Longer than any deadline the proxy sets, and well inside what tokio's timer can hold.
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_fires_at_its_new_time_and_not_before() {
        let start = Instant::now();
        let mut deadline = Deadline::new();
        deadline.set(start + Duration::from_secs(5));
        // Armed at 5 s, then moved to 8 s without re-arming.
        tokio::select! {
            _ = deadline.expired() => panic!("fired before 5 s"),
            _ = tokio::time::sleep(Duration::from_secs(4)) => {}
        }
        deadline.set(start + Duration::from_secs(8));
        deadline.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_earlier_fires_at_its_new_time() {
        let start = Instant::now();
        let mut deadline = Deadline::new();
        deadline.set(start + Duration::from_secs(30));
        tokio::select! {
            _ = deadline.expired() => panic!("fired early"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        deadline.set(start + Duration::from_secs(2));
        deadline.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_fires_while_no_deadline_is_set() {
        let mut deadline = Deadline::new();
        tokio::select! {
            _ = deadline.expired() => panic!("fired with no deadline"),
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
