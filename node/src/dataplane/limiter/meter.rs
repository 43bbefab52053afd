//! One limit as this node spends it: the slices of capacity the cluster granted, spent one
//! request at a time without leaving the node, and what to report and ask for next.
//!
//! Every admitted request is paid for from a slice, so what this node admits never exceeds
//! what it was granted. A slice is spent only inside its window and before its lease ends
//! (both by this node's clock, which also stamped the request that got it); after that it
//! is closed and its exact spend is reported, which gives the rest back to the cluster.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cluster::command::{SliceAnswer, SliceAsk};
use cluster::limits::{Credit, SpendReport, Window};
use cluster::{Limit, MeterId, Period, Unit};
use tokio::sync::Notify;

/// A slice is sized to last about this long at the recent request rate.
const SLICE_TARGET_MS: i64 = 1_000;
/// Shortest span a request rate is measured over.
const MIN_RATE_SPAN_MS: i64 = 100;
/// After the cluster had nothing left to grant, how long to refuse before asking again
/// (capacity comes back when other nodes report unspent slices).
const EXHAUSTED_RECHECK_MS: i64 = 1_000;

/// What taking one request from a meter gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted; `slice` is what to refund if another limit refuses the request.
    Admitted(Admission),
    /// The window's capacity is used up cluster-wide.
    Refused(Refusal),
    /// Nothing held: wait for the quota leaser's next grant.
    Wait,
    /// Nothing held and the last ask for more failed: the cluster is out of reach.
    Unreachable,
}

/// An admitted request's standing against one limit, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub slice: Option<u64>,
    pub limit: u64,
    /// What is left cluster-wide as far as this node knows: the ungranted capacity after
    /// its last grant plus what it still holds.
    pub remaining: u64,
    pub reset_ms: i64,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// A rate limit (`rate_limited`) rather than a calendar quota (`quota_exceeded`).
    pub rate: bool,
    pub unit: Unit,
    pub limit: u64,
    pub reset_ms: i64,
}

/// What reserving an amount (an AI request's upper bound of tokens or cost) gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    Taken(Portion),
    Refused(Refusal),
    Wait,
    Unreachable,
}

/// An amount taken from held slices, remembered so that what the request did not use can
/// be given back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Portion {
    /// `(slice id, amount)` in the order taken.
    parts: Vec<(u64, u64)>,
    window: Option<Window>,
}

impl Portion {
    /// What the portion holds in all.
    pub fn amount(&self) -> u64 {
        self.parts.iter().map(|(_, amount)| amount).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct HeldSlice {
    id: u64,
    window: Window,
    size: u64,
    spent: u64,
    expires_at_ms: i64,
}

impl HeldSlice {
    fn spendable(&self, now_ms: i64) -> bool {
        self.spent < self.size && now_ms < self.expires_at_ms && self.window.contains(now_ms)
    }
}

#[derive(Debug, Default)]
struct Held {
    slices: VecDeque<HeldSlice>,
    /// Closed slices whose spend the cluster has not been told yet.
    reports: Vec<SpendReport>,
    /// The cluster granted nothing for this window; refuse until the recheck time.
    exhausted: Option<(Window, i64)>,
    /// The last grant left nothing ungranted in this window: a reservation larger than
    /// what is held is refused until the recheck time.
    drained: Option<(Window, i64)>,
    /// What waiting reservations want in all.
    waiting_amount: u64,
    /// Unused capacity of reported slices to give back.
    credits: Vec<Credit>,
    /// Ungranted capacity cluster-wide after the last grant.
    cluster_remaining: u64,
    /// Requests taken or waited for since the last ask, counted from `demand_since_ms`.
    demand: u64,
    demand_since_ms: i64,
    waiting: u32,
    /// An ask is in flight: its want, and the reports and credits it carries.
    asking: Option<(u64, Vec<SpendReport>, Vec<Credit>)>,
    last_grant: u64,
    /// The replicated state no longer has this limit.
    gone: bool,
    /// The last ask failed; requests that find nothing held are refused at once until
    /// an ask succeeds (the leaser keeps asking while they come).
    unreachable: bool,
}

impl Held {
    /// Moves slices that can no longer be spent to the reports.
    fn close_spent(&mut self, now_ms: i64) {
        let reports = &mut self.reports;
        self.slices.retain(|slice| {
            let open = slice.spendable(now_ms);
            if !open {
                reports.push(SpendReport {
                    slice_id: slice.id,
                    spent: slice.spent,
                });
            }
            open
        });
    }

    fn available(&self) -> u64 {
        self.slices.iter().map(|s| s.size - s.spent).sum()
    }

    fn count_demand(&mut self, now_ms: i64, amount: u64) {
        if self.demand == 0 {
            self.demand_since_ms = now_ms;
        }
        self.demand = self.demand.saturating_add(amount);
    }

    /// Adds `amount` to the credits of the window starting at `window_start_ms`.
    fn credit(&mut self, window_start_ms: i64, amount: u64) {
        match self
            .credits
            .iter_mut()
            .find(|c| c.window_start_ms == window_start_ms)
        {
            Some(credit) => credit.amount = credit.amount.saturating_add(amount),
            None => self.credits.push(Credit {
                window_start_ms,
                amount,
            }),
        }
    }

    fn refusal_pending(&self, now_ms: i64) -> Option<Window> {
        [self.exhausted, self.drained]
            .into_iter()
            .flatten()
            .find(|(window, recheck_at)| window.contains(now_ms) && now_ms < *recheck_at)
            .map(|(window, _)| window)
    }

    fn low(&self) -> bool {
        self.available().saturating_mul(2) < self.last_grant.max(2)
    }
}

/// One limit of one key or tenant on this node.
#[derive(Debug)]
pub struct LocalMeter {
    id: MeterId,
    amount: AtomicU64,
    held: Mutex<Held>,
    granted: Notify,
}

impl LocalMeter {
    pub fn new(id: MeterId, limit: &Limit) -> Self {
        Self {
            id,
            amount: AtomicU64::new(limit.amount),
            held: Mutex::default(),
            granted: Notify::new(),
        }
    }

    /// Follows the replicated state: called whenever a key using this limit is applied,
    /// with the limit as it now stands (a changed count keeps the ledger's window; a limit
    /// the cluster had reported gone is back).
    pub fn set_limit(&self, limit: &Limit) {
        self.amount.store(limit.amount, Ordering::Relaxed);
        self.held().gone = false;
    }

    /// What the meter's limit counts.
    pub fn unit(&self) -> Unit {
        self.id.unit
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn window_end(&self, now_ms: i64) -> i64 {
        self.id.period.window_at(now_ms).end_ms
    }

    /// Takes one request. The second value says the leaser should ask for more now.
    pub fn take(&self, now_ms: i64) -> (Take, bool) {
        let limit = self.amount.load(Ordering::Relaxed);
        let mut held = self.held();
        held.close_spent(now_ms);
        if held.gone {
            let admission = Admission {
                slice: None,
                limit,
                remaining: limit,
                reset_ms: self.window_end(now_ms),
            };
            return (Take::Admitted(admission), false);
        }
        if let Some(slice) = held.slices.front_mut() {
            slice.spent += 1;
            let (id, reset_ms) = (slice.id, slice.window.end_ms);
            held.count_demand(now_ms, 1);
            let remaining = held.cluster_remaining.saturating_add(held.available());
            let wake = held.asking.is_none() && held.low();
            let admission = Admission {
                slice: Some(id),
                limit,
                remaining,
                reset_ms,
            };
            return (Take::Admitted(admission), wake);
        }
        match held.exhausted {
            Some((window, recheck_at)) if window.contains(now_ms) && now_ms < recheck_at => {
                (Take::Refused(self.refusal(limit, window)), false)
            }
            _ if held.unreachable => {
                held.count_demand(now_ms, 1);
                (Take::Unreachable, held.asking.is_none())
            }
            _ => {
                held.exhausted = None;
                (Take::Wait, held.asking.is_none())
            }
        }
    }

    fn refusal(&self, limit: u64, window: Window) -> Refusal {
        Refusal {
            rate: matches!(self.id.period, Period::Seconds(_)),
            unit: self.id.unit,
            limit,
            reset_ms: window.end_ms,
        }
    }

    /// Takes `amount` at once from the held slices (an AI request's upper bound), all or
    /// nothing. The second value says the leaser should ask for more now.
    pub fn reserve(&self, now_ms: i64, amount: u64) -> (Reserve, bool) {
        let limit = self.amount.load(Ordering::Relaxed);
        let mut held = self.held();
        held.close_spent(now_ms);
        if held.gone || amount == 0 {
            return (Reserve::Taken(Portion::default()), false);
        }
        // More than the whole limit can never be admitted: refused without asking, so it
        // cannot draw the window's capacity to this node.
        if amount > limit {
            let window = self.id.period.window_at(now_ms);
            return (Reserve::Refused(self.refusal(limit, window)), false);
        }
        if held.available() >= amount {
            let portion = take_from(&mut held.slices, amount);
            held.count_demand(now_ms, amount);
            let wake = held.asking.is_none() && held.low();
            return (Reserve::Taken(portion), wake);
        }
        if let Some(window) = held.refusal_pending(now_ms) {
            return (Reserve::Refused(self.refusal(limit, window)), false);
        }
        if held.unreachable {
            held.count_demand(now_ms, amount);
            return (Reserve::Unreachable, held.asking.is_none());
        }
        held.exhausted = None;
        (Reserve::Wait, held.asking.is_none())
    }

    /// Takes up to `amount` from the held slices without waiting (a request used more
    /// than it reserved); returns what could not be taken.
    pub fn take_overrun(&self, now_ms: i64, amount: u64) -> u64 {
        let mut held = self.held();
        held.close_spent(now_ms);
        let available = held.available().min(amount);
        take_from(&mut held.slices, available);
        amount - available
    }

    /// Gives back `amount` of what `portion` took, latest slices first: into a slice still
    /// held, into a report not yet sent, or else as a credit to the window, once the
    /// slice's report has gone out.
    pub fn give_back(&self, portion: &Portion, amount: u64) {
        let mut left = amount.min(portion.amount());
        let mut held = self.held();
        for &(slice_id, taken) in portion.parts.iter().rev() {
            if left == 0 {
                break;
            }
            let back = taken.min(left);
            left -= back;
            if let Some(slice) = held.slices.iter_mut().find(|s| s.id == slice_id) {
                slice.spent = slice.spent.saturating_sub(back);
            } else if let Some(report) = held.reports.iter_mut().find(|r| r.slice_id == slice_id) {
                report.spent = report.spent.saturating_sub(back);
            } else if let Some(window) = portion.window {
                held.credit(window.start_ms, back);
            }
        }
        held.demand = held.demand.saturating_sub(amount);
    }

    /// Gives back one request taken from `slice` (another limit refused the request).
    pub fn refund(&self, slice: u64) {
        let mut held = self.held();
        if let Some(held_slice) = held.slices.iter_mut().find(|s| s.id == slice) {
            held_slice.spent = held_slice.spent.saturating_sub(1);
        } else if let Some(report) = held.reports.iter_mut().find(|r| r.slice_id == slice) {
            report.spent = report.spent.saturating_sub(1);
        }
        held.demand = held.demand.saturating_sub(1);
    }

    /// Returns a future that completes at the next grant (or failed ask). Create it before
    /// the `take` that answered `Wait`, so a grant in between is not missed.
    pub fn granted(&self) -> tokio::sync::futures::Notified<'_> {
        self.granted.notified()
    }

    /// Counts a request waiting for `amount` until the guard drops.
    pub fn waiter(&self, now_ms: i64, amount: u64) -> Waiter<'_> {
        let mut held = self.held();
        held.waiting += 1;
        held.waiting_amount = held.waiting_amount.saturating_add(amount);
        held.count_demand(now_ms, amount);
        Waiter { meter: self, amount }
    }

    /// What the quota leaser should send for this meter now, if anything: the spend of
    /// closed slices, and a request for more when little is left and requests want it.
    pub fn ask(&self, now_ms: i64) -> Option<SliceAsk> {
        let mut held = self.held();
        held.close_spent(now_ms);
        if held.asking.is_some() {
            return None;
        }
        let exhausted = held
            .exhausted
            .is_some_and(|(window, recheck_at)| window.contains(now_ms) && now_ms < recheck_at);
        let wanted = !held.gone && !exhausted && (held.waiting > 0 || (held.demand > 0 && held.low()));
        // A request costs one unit, which any slice covers: request limits keep to the fair
        // share, so that a burst of waiting requests on one node cannot take more.
        let need = if wanted && self.id.unit != Unit::Requests {
            held.waiting_amount.saturating_sub(held.available())
        } else {
            0
        };
        let want = if wanted {
            let span = (now_ms - held.demand_since_ms).max(MIN_RATE_SPAN_MS);
            let per_slice =
                u64::try_from(i128::from(held.demand) * i128::from(SLICE_TARGET_MS) / i128::from(span))
                    .unwrap_or(u64::MAX);
            per_slice.max(need).max(u64::from(held.waiting)).max(1)
        } else {
            0
        };
        if want == 0 && held.reports.is_empty() && held.credits.is_empty() {
            return None;
        }
        let reports = std::mem::take(&mut held.reports);
        let credits = std::mem::take(&mut held.credits);
        if want > 0 {
            held.demand = 0;
        }
        held.asking = Some((want, reports.clone(), credits.clone()));
        Some(SliceAsk {
            meter: self.id.clone(),
            want,
            need,
            reports,
            credits,
            held: held.slices.iter().map(|s| s.id).collect(),
        })
    }

    /// Closes every held slice and returns their spend reports (without asking for more),
    /// so that a node shutting down gives its unspent capacity back.
    pub fn release(&self) -> Option<SliceAsk> {
        let mut held = self.held();
        if held.asking.is_some() {
            return None;
        }
        let closed: Vec<SpendReport> = held
            .slices
            .drain(..)
            .map(|slice| SpendReport {
                slice_id: slice.id,
                spent: slice.spent,
            })
            .collect();
        held.reports.extend(closed);
        let reports = std::mem::take(&mut held.reports);
        let credits = std::mem::take(&mut held.credits);
        if reports.is_empty() && credits.is_empty() {
            return None;
        }
        held.asking = Some((0, reports.clone(), credits.clone()));
        Some(SliceAsk {
            meter: self.id.clone(),
            want: 0,
            need: 0,
            reports,
            credits,
            held: Vec::new(),
        })
    }

    /// Takes the cluster's answer to this node's last ask.
    pub fn absorb(&self, answer: &SliceAnswer, now_ms: i64) {
        let mut held = self.held();
        let want = held.asking.take().map_or(0, |(want, _, _)| want);
        held.unreachable = false;
        match answer {
            SliceAnswer::Granted(grant) => {
                held.cluster_remaining = grant.remaining;
                held.drained =
                    (grant.remaining == 0).then_some((grant.window, now_ms + EXHAUSTED_RECHECK_MS));
                if grant.size > 0 {
                    held.slices.push_back(HeldSlice {
                        id: grant.slice_id,
                        window: grant.window,
                        size: grant.size,
                        spent: 0,
                        expires_at_ms: grant.expires_at_ms,
                    });
                    held.last_grant = grant.size;
                    held.exhausted = None;
                } else if want > 0 {
                    held.exhausted = Some((grant.window, now_ms + EXHAUSTED_RECHECK_MS));
                }
            }
            SliceAnswer::NoLimit => held.gone = true,
        }
        drop(held);
        self.granted.notify_waiters();
    }

    /// The ask was not answered: its reports go out with the next one (a report the
    /// cluster already applied is ignored the second time). Its credits are dropped: an
    /// unanswered ask may still have been applied, and a credit applied twice would give
    /// back capacity that was used; a lost one only leaves unused capacity counted.
    pub fn ask_failed(&self) {
        let mut held = self.held();
        if let Some((_, reports, _credits)) = held.asking.take() {
            held.reports.extend(reports);
        }
        held.unreachable = true;
        drop(held);
        self.granted.notify_waiters();
    }

    /// Whether an ask is waiting for its answer.
    pub fn is_asking(&self) -> bool {
        self.held().asking.is_some()
    }

    /// Whether the meter holds nothing and owes no report, so it may be forgotten.
    pub fn is_idle(&self) -> bool {
        let held = self.held();
        held.slices.is_empty()
            && held.reports.is_empty()
            && held.credits.is_empty()
            && held.asking.is_none()
            && held.waiting == 0
    }
}

/// A request waiting for a grant; see [`LocalMeter::waiter`].
pub struct Waiter<'a> {
    meter: &'a LocalMeter,
    amount: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut held = self.meter.held();
        held.waiting = held.waiting.saturating_sub(1);
        held.waiting_amount = held.waiting_amount.saturating_sub(self.amount);
    }
}

/// Takes `amount` (no more than the slices hold) from the slices, front first.
fn take_from(slices: &mut VecDeque<HeldSlice>, amount: u64) -> Portion {
    let mut portion = Portion::default();
    let mut left = amount;
    for slice in slices.iter_mut() {
        if left == 0 {
            break;
        }
        let taken = (slice.size - slice.spent).min(left);
        if taken > 0 {
            slice.spent += taken;
            left -= taken;
            portion.parts.push((slice.id, taken));
            portion.window = Some(slice.window);
        }
    }
    portion
}

#[cfg(test)]
mod tests {
    use cluster::limits::Grant;
    use cluster::Subject;

    use super::*;

    const NOW: i64 = 1_700_000_010_000;

    fn meter() -> LocalMeter {
        let id = MeterId {
            subject: Subject::Key("key_a".into()),
            period: Period::Seconds(60),
            unit: Unit::Requests,
        };
        LocalMeter::new(id, &Limit::requests(100, Period::Seconds(60)))
    }

    fn grant(meter: &LocalMeter, slice_id: u64, size: u64, now: i64) {
        let window = Period::Seconds(60).window_at(now);
        meter.absorb(
            &SliceAnswer::Granted(Grant {
                slice_id,
                window,
                size,
                expires_at_ms: now + 2_000,
                remaining: 50,
            }),
            now,
        );
    }

    #[test]
    fn a_limit_reported_gone_admits_freely_until_it_is_set_again() {
        let meter = meter();
        let _ = meter.ask(NOW);
        meter.absorb(&SliceAnswer::NoLimit, NOW);
        assert!(matches!(meter.take(NOW).0, Take::Admitted(a) if a.slice.is_none()));
        meter.set_limit(&Limit::requests(5, Period::Seconds(60)));
        assert_eq!(meter.take(NOW).0, Take::Wait);
    }

    #[test]
    fn nothing_held_means_wait_and_ask() {
        let meter = meter();
        assert_eq!(meter.take(NOW), (Take::Wait, true));
        let _waiting = meter.waiter(NOW, 1);
        let ask = meter.ask(NOW).expect("a waiting request asks");
        assert!(ask.want >= 1 && ask.reports.is_empty());
        assert!(meter.ask(NOW).is_none(), "one ask in flight");
    }

    #[test]
    fn a_slice_admits_exactly_its_size_then_is_reported() {
        let meter = meter();
        let _ = meter.ask(NOW);
        grant(&meter, 7, 3, NOW);
        for _ in 0..3 {
            assert!(matches!(meter.take(NOW).0, Take::Admitted(a) if a.slice == Some(7)));
        }
        assert_eq!(meter.take(NOW + 1).0, Take::Wait);
        let ask = meter.ask(NOW + 1).expect("reports and asks");
        assert_eq!(
            ask.reports,
            [SpendReport {
                slice_id: 7,
                spent: 3
            }]
        );
    }

    #[test]
    fn a_slice_is_not_spent_after_its_lease_and_the_rest_is_given_back() {
        let meter = meter();
        let _ = meter.ask(NOW);
        grant(&meter, 1, 10, NOW);
        meter.take(NOW);
        assert_eq!(meter.take(NOW + 2_000).0, Take::Wait, "lease over");
        let ask = meter.ask(NOW + 2_000).expect("report");
        assert_eq!(
            ask.reports,
            [SpendReport {
                slice_id: 1,
                spent: 1
            }]
        );
    }

    #[test]
    fn an_exhausted_window_refuses_until_the_recheck() {
        let meter = meter();
        let _waiting = meter.waiter(NOW, 1);
        let _ = meter.ask(NOW);
        grant(&meter, 1, 0, NOW);
        let Take::Refused(refusal) = meter.take(NOW + 10).0 else {
            panic!("expected a refusal")
        };
        assert!(refusal.rate);
        assert_eq!(refusal.reset_ms, Period::Seconds(60).window_at(NOW).end_ms);
        assert!(meter.ask(NOW + 10).is_none(), "no ask while exhausted");
        assert_eq!(meter.take(NOW + EXHAUSTED_RECHECK_MS).0, Take::Wait);
    }

    #[test]
    fn refunds_and_failed_asks_lose_nothing() {
        let meter = meter();
        let _ = meter.ask(NOW);
        grant(&meter, 4, 2, NOW);
        meter.take(NOW);
        meter.refund(4);
        meter.take(NOW);
        meter.take(NOW);
        assert_eq!(meter.take(NOW).0, Take::Wait);
        let ask = meter.ask(NOW).expect("report");
        assert_eq!(
            ask.reports,
            [SpendReport {
                slice_id: 4,
                spent: 2
            }]
        );
        meter.ask_failed();
        assert_eq!(
            meter.take(NOW).0,
            Take::Unreachable,
            "refused at once while out of reach"
        );
        let again = meter.ask(NOW).expect("the report is sent again");
        assert_eq!(again.reports, ask.reports);
        assert!(again.want > 0, "and more is asked for the refused request");
    }

    fn token_meter() -> LocalMeter {
        let id = MeterId {
            subject: Subject::Key("key_a".into()),
            period: Period::Seconds(60),
            unit: Unit::Tokens,
        };
        LocalMeter::new(
            id,
            &Limit {
                amount: 10_000,
                period: Period::Seconds(60),
                unit: Unit::Tokens,
            },
        )
    }

    #[test]
    fn a_reservation_spans_slices_all_or_nothing_and_asks_for_what_it_lacks() {
        let meter = token_meter();
        let _ = meter.ask(NOW);
        grant(&meter, 1, 300, NOW);
        assert_eq!(meter.reserve(NOW, 500).0, Reserve::Wait, "300 held, 500 needed");
        let _waiting = meter.waiter(NOW, 500);
        let ask = meter.ask(NOW).expect("asks");
        assert_eq!(ask.need, 200, "what the waiting reservation lacks");
        grant(&meter, 2, 200, NOW);
        let Reserve::Taken(portion) = meter.reserve(NOW, 500).0 else {
            panic!("expected the reservation to be taken")
        };
        assert_eq!(portion.amount(), 500);
        assert_eq!(meter.reserve(NOW, 1).0, Reserve::Wait, "nothing left");
    }

    #[test]
    fn a_reservation_larger_than_what_the_cluster_has_left_is_refused() {
        let meter = token_meter();
        assert!(
            matches!(meter.reserve(NOW, 10_001), (Reserve::Refused(_), false)),
            "more than the limit is refused without asking"
        );
        let _ = meter.ask(NOW);
        let window = Period::Seconds(60).window_at(NOW);
        meter.absorb(
            &SliceAnswer::Granted(Grant {
                slice_id: 1,
                window,
                size: 100,
                expires_at_ms: NOW + 2_000,
                remaining: 0,
            }),
            NOW,
        );
        let Reserve::Refused(refusal) = meter.reserve(NOW, 101).0 else {
            panic!("expected a refusal")
        };
        assert_eq!(refusal.unit, Unit::Tokens);
        assert!(
            matches!(meter.reserve(NOW, 100).0, Reserve::Taken(_)),
            "what is held still serves"
        );
    }

    fn taken(reserve: Reserve) -> Portion {
        match reserve {
            Reserve::Taken(portion) => portion,
            other => panic!("expected a portion, got {other:?}"),
        }
    }

    #[test]
    fn unused_reservations_go_back_to_the_slice_or_as_a_credit_once_reported() {
        let meter = token_meter();
        let _ = meter.ask(NOW);
        grant(&meter, 1, 1_000, NOW);
        let first = taken(meter.reserve(NOW, 600).0);
        meter.give_back(&first, 500);
        let rest = taken(meter.reserve(NOW, 900).0);
        assert_eq!(meter.reserve(NOW, 1).0, Reserve::Wait, "the slice is used up");
        let ask = meter.ask(NOW + 1).expect("reports the slice");
        assert_eq!(
            ask.reports,
            [SpendReport {
                slice_id: 1,
                spent: 1_000
            }]
        );
        grant(&meter, 2, 0, NOW + 1);
        meter.give_back(&rest, 150);
        let ask = meter.ask(NOW + 2).expect("the credit goes out");
        assert_eq!(
            ask.credits,
            [Credit {
                window_start_ms: Period::Seconds(60).window_at(NOW).start_ms,
                amount: 150
            }]
        );
        meter.ask_failed();
        assert!(
            meter.ask(NOW + 3).is_none_or(|again| again.credits.is_empty()),
            "a failed ask's credit is not sent again: it may have been applied"
        );
    }

    #[test]
    fn a_low_slice_asks_ahead_and_wants_about_one_second_of_traffic() {
        let meter = meter();
        let _ = meter.ask(NOW);
        grant(&meter, 1, 40, NOW);
        let mut woke = false;
        for i in 0..25 {
            woke |= meter.take(NOW + i * 20).1;
        }
        assert!(woke, "asks before the slice runs out");
        let ask = meter.ask(NOW + 500).expect("asks ahead");
        assert!(
            (40..=60).contains(&ask.want),
            "25 requests in 0.5 s wants ~50, got {}",
            ask.want
        );
    }
}
