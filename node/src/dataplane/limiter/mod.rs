//! Exact cluster-wide limits on the hot path: a request is admitted by taking one unit
//! from each of its key's and tenant's local meters, all or none. Capacity comes from
//! slices the quota leaser obtains through Raft; a request finds the leader only when
//! this node holds nothing for a limit, and then waits for the leaser's next grant.
//!
//! - [`meter`]: one limit's held slices, spends, reports and asks.

pub mod meter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use cluster::{Limit, MeterId, Unit};
use tokio::sync::Notify;

pub use meter::{Admission, LocalMeter, Portion, Refusal, Reserve, Take};

/// Longest a request waits for capacity when this node holds none (normally one Raft
/// round trip). Once an ask has failed, requests are refused at once instead.
const GRANT_WAIT: Duration = Duration::from_secs(2);

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Every meter this node spends from, and the bell that wakes the quota leaser.
#[derive(Debug)]
pub struct Limiter {
    /// Identifies this process to the cluster's ledgers, which give back a grant that
    /// never reached it (see `cluster::limits`); random, so a restart changes it.
    incarnation: u64,
    meters: Mutex<HashMap<MeterId, Arc<LocalMeter>>>,
    wake: Notify,
    /// Set on shutdown: the leaser stops asking, so held capacity can be given back.
    closed: AtomicBool,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            incarnation: rand::random(),
            meters: Mutex::default(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Limiter {
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Returns the meter of `id`, creating it on first use. A meter outlives changes of
    /// its limit's count: what it holds stays valid for its window.
    pub fn meter(&self, id: MeterId, limit: &Limit) -> Arc<LocalMeter> {
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        let meter = meters
            .entry(id.clone())
            .or_insert_with(|| Arc::new(LocalMeter::new(id, limit)));
        meter.set_limit(limit);
        meter.clone()
    }

    /// Returns every meter, forgetting those no key refers to any more that hold nothing
    /// and owe no report.
    pub fn meters(&self) -> Vec<Arc<LocalMeter>> {
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        meters.retain(|_, meter| Arc::strong_count(meter) > 1 || !meter.is_idle());
        meters.values().cloned().collect()
    }

    /// Stops the quota leaser for good (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Asks the quota leaser to look at the meters now.
    pub fn wake_leaser(&self) {
        self.wake.notify_one();
    }

    /// Completes when a request asked for the leaser.
    pub async fn leaser_woken(&self) {
        self.wake.notified().await;
    }

    /// Admits one request arriving at `now_ms` against every meter in `meters`, all or
    /// none. Returns the standing against the tightest limit, for the response headers.
    pub async fn admit(
        &self,
        meters: &[Arc<LocalMeter>],
        now_ms: i64,
    ) -> Result<Option<Admission>, LimitError> {
        let mut taken: Vec<(&LocalMeter, u64)> = Vec::with_capacity(meters.len());
        let mut tightest: Option<Admission> = None;
        // Set by the first meter that has to wait; the wait is shared by all meters.
        let mut deadline = None;
        for meter in meters {
            match self.take_one(meter, now_ms, &mut deadline).await {
                Ok(admission) => {
                    if let Some(slice) = admission.slice {
                        taken.push((meter, slice));
                    }
                    if tightest.is_none_or(|t| admission.remaining < t.remaining) {
                        tightest = Some(admission);
                    }
                }
                Err(error) => {
                    for (meter, slice) in taken {
                        meter.refund(slice);
                    }
                    return Err(error);
                }
            }
        }
        Ok(tightest)
    }

    /// Takes one request from `meter`. The common case, a slice held, costs one short lock;
    /// only a meter holding nothing registers for the leaser's next grant and waits.
    async fn take_one(
        &self,
        meter: &LocalMeter,
        now_ms: i64,
        deadline: &mut Option<tokio::time::Instant>,
    ) -> Result<Admission, LimitError> {
        match self.take_now(meter, now_ms) {
            Take::Wait => {}
            decided => return Self::decided(decided),
        }
        self.wait_for(meter, 1, deadline, |now| match self.take_now(meter, now) {
            Take::Wait => None,
            decided => Some(Self::decided(decided)),
        })
        .await
    }

    /// Waits until `attempt` decides, retrying after each grant to `meter`, until the
    /// shared `deadline`; meanwhile counts a waiter for `amount`, so the leaser asks for it.
    async fn wait_for<T>(
        &self,
        meter: &LocalMeter,
        amount: u64,
        deadline: &mut Option<tokio::time::Instant>,
        mut attempt: impl FnMut(i64) -> Option<Result<T, LimitError>>,
    ) -> Result<T, LimitError> {
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + GRANT_WAIT);
        loop {
            // Registered before taking again, so a grant landing in between is not missed.
            let granted = meter.granted();
            tokio::pin!(granted);
            granted.as_mut().enable();
            let now = crate::clock::now_ms();
            if let Some(decided) = attempt(now) {
                return decided;
            }
            let _waiting = meter.waiter(now, amount);
            self.wake_leaser();
            if tokio::time::timeout_at(deadline, granted).await.is_err() {
                return Err(LimitError::Unavailable);
            }
        }
    }

    /// Reserves an AI request's upper bound against each `(meter, amount)`, all or none.
    /// Settle the reservation with the real usage once it is known; dropped unsettled, it
    /// stays spent in full (never less than was used).
    pub async fn reserve(
        &self,
        amounts: &[(Arc<LocalMeter>, u64)],
        now_ms: i64,
    ) -> Result<Reservation, LimitError> {
        let mut reservation = Reservation {
            portions: Vec::with_capacity(amounts.len()),
        };
        let mut deadline = None;
        for (meter, amount) in amounts {
            let attempt = |now| {
                let (reserve, wake) = meter.reserve(now, *amount);
                if wake {
                    self.wake_leaser();
                }
                match reserve {
                    Reserve::Taken(portion) => Some(Ok(portion)),
                    Reserve::Refused(refusal) => Some(Err(LimitError::Refused(refusal))),
                    Reserve::Unreachable => Some(Err(LimitError::Unavailable)),
                    Reserve::Wait => None,
                }
            };
            let taken = match attempt(now_ms) {
                Some(decided) => decided,
                None => self.wait_for(meter, *amount, &mut deadline, attempt).await,
            };
            match taken {
                Ok(portion) => reservation.portions.push((meter.clone(), portion)),
                Err(error) => {
                    reservation.release();
                    return Err(error);
                }
            }
        }
        Ok(reservation)
    }

    /// Takes from `meter`, waking the leaser when the meter asks for it.
    fn take_now(&self, meter: &LocalMeter, now_ms: i64) -> Take {
        let (take, wake) = meter.take(now_ms);
        if wake {
            self.wake_leaser();
        }
        take
    }

    /// The outcome of a take that needs no waiting.
    fn decided(take: Take) -> Result<Admission, LimitError> {
        match take {
            Take::Admitted(admission) => Ok(admission),
            Take::Refused(refusal) => Err(LimitError::Refused(refusal)),
            Take::Unreachable | Take::Wait => Err(LimitError::Unavailable),
        }
    }
}

/// What an AI request reserved from its key's and tenant's token and budget meters.
#[derive(Debug, Default)]
pub struct Reservation {
    portions: Vec<(Arc<LocalMeter>, Portion)>,
}

impl Reservation {
    /// Settles with what the request really used, `used(unit)`: the unused rest goes back
    /// (to the slice, or as a credit once the slice was reported); an amount used beyond
    /// the reservation is taken from what this node holds, and what it does not hold is
    /// counted as an overrun.
    pub fn settle(mut self, used: impl Fn(Unit) -> u64) {
        let now = crate::clock::now_ms();
        for (meter, portion) in std::mem::take(&mut self.portions) {
            let reserved = portion.amount();
            let used = used(meter.unit());
            if used <= reserved {
                meter.give_back(&portion, reserved - used);
            } else {
                let short = meter.take_overrun(now, used - reserved);
                if short > 0 {
                    metrics::counter!("credentialflow_limit_overrun_total").increment(short);
                    tracing::warn!(
                        meter = ?meter.unit(),
                        short,
                        "a request used more than its reservation and this node held too little"
                    );
                }
            }
        }
    }

    /// Gives everything back: the request never reached a provider.
    pub fn release(&mut self) {
        for (meter, portion) in self.portions.drain(..) {
            meter.give_back(&portion, portion.amount());
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the limit of this window is used up")]
    Refused(Refusal),
    #[error("this node could not obtain capacity from the cluster in time")]
    Unavailable,
}

impl LimitError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::Refused(refusal) if refusal.unit == Unit::Tokens => "token_limit_exceeded",
            LimitError::Refused(refusal) if refusal.unit == Unit::MicroUsd => "budget_exceeded",
            LimitError::Refused(refusal) if refusal.rate => "rate_limited",
            LimitError::Refused(_) => "quota_exceeded",
            LimitError::Unavailable => "limit_unavailable",
        }
    }

    /// The refusal as a response: 429 with `Retry-After` and the `RateLimit-*` headers, or
    /// 503 when capacity could not be obtained.
    pub fn response(&self, now_ms: i64) -> HttpResponse {
        let (status, retry_after, message) = match self {
            LimitError::Refused(refusal) => (
                StatusCode::TOO_MANY_REQUESTS,
                seconds_until(refusal.reset_ms, now_ms),
                match refusal.unit {
                    Unit::Tokens => {
                        "the key's or tenant's token limit leaves too little for this request in this window"
                    }
                    Unit::MicroUsd => {
                        "the key's or tenant's budget leaves too little for this request in this period"
                    }
                    Unit::Requests if refusal.rate => {
                        "the key's or tenant's rate limit is reached for this window"
                    }
                    Unit::Requests => "the key's or tenant's quota is used up for this period",
                },
            ),
            LimitError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                1,
                "this node could not obtain capacity from the cluster in time",
            ),
        };
        let mut response = HttpResponse::build(status)
            .insert_header((RETRY_AFTER, retry_after))
            .json(serde_json::json!({ "error": { "code": self.code(), "message": message } }));
        if let LimitError::Refused(refusal) = self {
            let standing = Admission {
                slice: None,
                limit: refusal.limit,
                remaining: 0,
                reset_ms: refusal.reset_ms,
            };
            insert_headers(response.headers_mut(), &standing, now_ms);
        }
        response
    }
}

/// Adds `RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) for `standing`.
pub fn insert_headers(headers: &mut HeaderMap, standing: &Admission, now_ms: i64) {
    for (name, value) in limit_headers(standing, now_ms) {
        headers.insert(name, value);
    }
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) for `standing`, for an answer
/// written without a header map.
pub fn limit_headers(standing: &Admission, now_ms: i64) -> [(HeaderName, HeaderValue); 3] {
    [
        (RATELIMIT_LIMIT, HeaderValue::from(standing.limit)),
        (RATELIMIT_REMAINING, HeaderValue::from(standing.remaining)),
        (
            RATELIMIT_RESET,
            HeaderValue::from(seconds_until(standing.reset_ms, now_ms)),
        ),
    ]
}

/// Whole seconds from `now_ms` to `at_ms`, rounded up, at least 1.
fn seconds_until(at_ms: i64, now_ms: i64) -> u64 {
    let ms = at_ms.saturating_sub(now_ms).max(1);
    u64::try_from(ms.div_euclid(1000) + i64::from(ms % 1000 != 0)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(seconds_until(10_000, 9_999), 1);
        assert_eq!(seconds_until(10_000, 8_000), 2);
        assert_eq!(seconds_until(10_000, 7_999), 3);
        assert_eq!(seconds_until(10_000, 20_000), 1);
    }
}
