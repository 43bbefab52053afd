//! Exact cluster-wide limits through granted slices (the pure core of issue 4).
//!
//! Every admitted request is paid for from a slice of capacity the cluster granted to the
//! node that admitted it, so the requests admitted by all nodes together never exceed the
//! limit. The rules that keep that sum exact:
//!
//! - a slice belongs to one window; a slice of a window that has ended is void;
//! - what a slice may have paid for counts as consumed until its node reports the exact
//!   number it spent: a node that dies or is cut off may have spent its whole slice, so
//!   its last slice stays consumed; a later report (the node came back) credits the rest;
//! - a node reports the spend of its earlier slices whenever it asks for a new one, so a
//!   crash can lose at most the node's outstanding slices;
//! - a node also lists the slices it holds; a slice of the same process (incarnation) that
//!   is neither held nor reported never reached it (the answer was lost or timed out, and
//!   a node asks again only after its previous ask was answered or given up), so it paid
//!   for nothing and is given back at once;
//! - slices shrink as the window's capacity runs out, down to one request, so that what a
//!   crash can strand stays small and nearly the whole limit is usable.
//!
//! Time is the proposer's stamped `now_ms`; nothing here reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Each node's share of the remaining capacity is divided further by this, so that a
/// single slice is a small part of what is left.
const SLICE_DIVISOR: u64 = 8;

/// How a limit's windows are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Period {
    /// Fixed windows of this many seconds, aligned to the Unix epoch.
    Seconds(u64),
    /// Calendar days in UTC.
    Day,
    /// Calendar months in UTC.
    Month,
}

/// One window: `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    /// Returns whether `now_ms` lies inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }
}

impl Period {
    /// Returns the window that contains `now_ms`.
    pub fn window_at(self, now_ms: i64) -> Window {
        match self {
            Period::Seconds(secs) => {
                let length = i64::try_from(secs.max(1))
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000);
                let start = now_ms.div_euclid(length) * length;
                Window {
                    start_ms: start,
                    end_ms: start.saturating_add(length),
                }
            }
            Period::Day => {
                let start = now_ms.div_euclid(DAY_MS) * DAY_MS;
                Window {
                    start_ms: start,
                    end_ms: start + DAY_MS,
                }
            }
            Period::Month => {
                let (year, month, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Window {
                    start_ms: days_from_civil(year, month, 1) * DAY_MS,
                    end_ms: days_from_civil(next_year, next_month, 1) * DAY_MS,
                }
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What a limit counts. Requests cost one each; tokens and money are admitted against an
/// upper-bound estimate and settled with the provider's reported usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Unit {
    Requests,
    /// Prompt plus completion tokens of AI requests.
    Tokens,
    /// Cost of AI requests in millionths of a US dollar, from the providers' price tables.
    MicroUsd,
}

/// A limit on a key or a tenant: at most `amount` of `unit` per window of `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub amount: u64,
    pub period: Period,
    pub unit: Unit,
}

impl Limit {
    /// A limit on the number of requests.
    pub fn requests(amount: u64, period: Period) -> Self {
        Self {
            amount,
            period,
            unit: Unit::Requests,
        }
    }

    /// Returns whether the limit is a rate limit (short fixed windows, refusals say
    /// `rate_limited`) rather than a quota (calendar periods, `quota_exceeded`).
    pub fn is_rate(&self) -> bool {
        matches!(self.period, Period::Seconds(_))
    }
}

/// Whose requests a meter counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    Key(String),
    Tenant(String),
}

/// One limit of one subject: a subject has at most one limit per unit and period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MeterId {
    pub subject: Subject,
    pub period: Period,
    pub unit: Unit,
}

/// One granted slice that its node has not yet reported on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub node: NodeId,
    /// The process of `node` it was granted to (a restarted node cannot vouch for the
    /// slices of its previous life).
    pub incarnation: u64,
    pub size: u64,
    /// After this (the requester's stamped time) the node must not spend from the slice.
    pub expires_at_ms: i64,
}

/// The capacity of one limit in one window and the slices granted from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLedger {
    pub window: Window,
    pub limit: u64,
    /// Requests the reported slices paid for.
    pub settled: u64,
    /// Asks applied in this window (every node's, granted or not): how much Raft traffic
    /// the limit costs.
    pub asks: u64,
    /// Slices not yet reported on, by id. Each may have paid for its whole size: its node
    /// may have spent all of it and died before saying so.
    pub open: BTreeMap<u64, Slice>,
}

impl WindowLedger {
    /// Requests the window's slices may have paid for.
    pub fn consumed(&self) -> u64 {
        self.settled
            .saturating_add(self.open.values().map(|s| s.size).sum::<u64>())
    }

    /// Capacity not yet granted.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.consumed())
    }

    /// Capacity each node holds in slices that may still be spent at `now_ms`.
    pub fn held_by_node(&self, now_ms: i64) -> BTreeMap<NodeId, u64> {
        let mut held = BTreeMap::new();
        for slice in self.open.values().filter(|s| now_ms < s.expires_at_ms) {
            *held.entry(slice.node).or_insert(0) += slice.size;
        }
        held
    }
}

/// Capacity a node gives back to a window after its slice was reported: an AI request
/// reserved an upper bound of tokens or cost and used less. Only what the node had
/// reported as spent and did not use is credited, so the ledger never undercounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    pub window_start_ms: i64,
    pub amount: u64,
}

/// A node's report of what it spent from one of its slices, sent once it stopped spending
/// from it (used up, lease over, or window over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendReport {
    pub slice_id: u64,
    pub spent: u64,
}

/// What a node asks for one limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRequest {
    pub node: NodeId,
    /// Identifies the requesting process; changes when the node restarts.
    pub incarnation: u64,
    /// The slices of this limit the node holds open (received, not yet reported).
    pub held: Vec<u64>,
    /// The limit as the replicated state holds it when the request is applied.
    pub limit: Limit,
    /// How much the node would like (about what it expects to admit in one lease); 0 asks
    /// for nothing and only reports.
    pub want: u64,
    /// What requests waiting at the node lack beyond what it holds: the slice is at least
    /// this large when the window has it, whatever the fair share (one AI request may need
    /// thousands of tokens at once).
    pub need: u64,
    /// How long the slice may be spent.
    pub lease_ms: i64,
    pub reports: Vec<SpendReport>,
    /// Unused capacity given back after its slice was reported; applied after `reports`.
    pub credits: Vec<Credit>,
    pub now_ms: i64,
}

/// The answer to a [`SliceRequest`]; `size` 0 means nothing was granted (the window is
/// exhausted, or the request asked for nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub slice_id: u64,
    pub window: Window,
    pub size: u64,
    pub expires_at_ms: i64,
    /// Capacity left ungranted in the window after this grant, for `RateLimit-Remaining`.
    pub remaining: u64,
}

/// The ledger of one limit's current window (older windows are void and dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub ledger: Option<WindowLedger>,
    pub next_slice_id: u64,
}

impl Meter {
    /// Returns the ledger if it is the window that contains `now_ms`.
    pub fn current(&self, period: Period, now_ms: i64) -> Option<&WindowLedger> {
        let window = period.window_at(now_ms);
        self.ledger.as_ref().filter(|ledger| ledger.window == window)
    }

    /// Applies a node's reports and grants it a slice of the current window. Pure.
    pub fn grant(&mut self, request: &SliceRequest) -> Grant {
        let window = request.limit.period.window_at(request.now_ms);
        let slice_id = self.next_slice_id;
        self.next_slice_id += 1;
        let refused = Grant {
            slice_id,
            window,
            size: 0,
            expires_at_ms: request.now_ms,
            remaining: 0,
        };
        let ledger = match &mut self.ledger {
            Some(ledger) if ledger.window == window => ledger,
            // A requester whose clock lags behind the window the ledger already moved to
            // gets nothing: granting from its window would reopen a closed one.
            Some(ledger) if ledger.window.start_ms > window.start_ms => return refused,
            slot => slot.insert(WindowLedger {
                window,
                limit: request.limit.amount,
                settled: 0,
                asks: 0,
                open: BTreeMap::new(),
            }),
        };
        // A lowered limit takes effect at once; a raised one adds capacity.
        ledger.limit = request.limit.amount;
        ledger.asks += 1;
        ledger.open.retain(|id, slice| {
            slice.node != request.node
                || slice.incarnation != request.incarnation
                || request.held.contains(id)
                || request.reports.iter().any(|r| r.slice_id == *id)
        });
        for report in &request.reports {
            if ledger
                .open
                .get(&report.slice_id)
                .is_some_and(|slice| slice.node == request.node)
            {
                if let Some(slice) = ledger.open.remove(&report.slice_id) {
                    ledger.settled = ledger.settled.saturating_add(report.spent.min(slice.size));
                }
            }
        }
        for credit in &request.credits {
            if credit.window_start_ms == ledger.window.start_ms {
                ledger.settled = ledger.settled.saturating_sub(credit.amount);
            }
        }
        let remaining = ledger.remaining();
        if request.want.max(request.need) == 0 || remaining == 0 {
            return Grant { remaining, ..refused };
        }
        // Other nodes that may still spend share what is left; a node whose lease ran out
        // no longer competes for it.
        let holders = ledger
            .open
            .values()
            .filter(|s| s.node != request.node && request.now_ms < s.expires_at_ms)
            .map(|s| s.node)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64
            + 1;
        let fair_share = (remaining / (holders * SLICE_DIVISOR)).max(1);
        let size = request
            .want
            .max(request.need)
            .min(fair_share.max(request.need))
            .min(remaining);
        let expires_at_ms = request
            .now_ms
            .saturating_add(request.lease_ms.max(1))
            .min(window.end_ms);
        ledger.open.insert(
            slice_id,
            Slice {
                node: request.node,
                incarnation: request.incarnation,
                size,
                expires_at_ms,
            },
        );
        Grant {
            slice_id,
            window,
            size,
            expires_at_ms,
            remaining: remaining - size,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn calendar_windows_follow_utc_days_and_months() {
        // 2024-02-29T12:00:00Z
        let leap_noon = days_from_civil(2024, 2, 29) * DAY_MS + DAY_MS / 2;
        let day = Period::Day.window_at(leap_noon);
        assert_eq!(day.start_ms, days_from_civil(2024, 2, 29) * DAY_MS);
        assert_eq!(day.end_ms - day.start_ms, DAY_MS);
        let month = Period::Month.window_at(leap_noon);
        assert_eq!(month.start_ms, days_from_civil(2024, 2, 1) * DAY_MS);
        assert_eq!(month.end_ms, days_from_civil(2024, 3, 1) * DAY_MS);
        assert_eq!((month.end_ms - month.start_ms) / DAY_MS, 29);
        let december = Period::Month.window_at(days_from_civil(2025, 12, 31) * DAY_MS);
        assert_eq!(december.end_ms, days_from_civil(2026, 1, 1) * DAY_MS);
        assert_eq!(civil_from_days(days_from_civil(1969, 12, 31)), (1969, 12, 31));
    }

    #[test]
    fn fixed_windows_are_epoch_aligned_and_contain_their_instant() {
        let window = Period::Seconds(60).window_at(T0 + 12_345);
        assert_eq!(window.start_ms % 60_000, 0);
        assert!(window.contains(T0 + 12_345));
        assert!(!window.contains(window.end_ms));
    }

    fn request(node: NodeId, want: u64, reports: Vec<SpendReport>, now: i64) -> SliceRequest {
        SliceRequest {
            node,
            incarnation: 0,
            held: Vec::new(),
            limit: Limit::requests(300, Period::Seconds(60)),
            want,
            need: 0,
            lease_ms: 2_000,
            reports,
            credits: Vec::new(),
            now_ms: T0 + now,
        }
    }

    #[test]
    fn slices_shrink_to_one_and_the_limit_is_fully_usable() {
        let mut meter = Meter::default();
        let mut admitted = 0;
        let mut previous: Option<Grant> = None;
        loop {
            let reports = previous
                .map(|g| {
                    vec![SpendReport {
                        slice_id: g.slice_id,
                        spent: g.size,
                    }]
                })
                .unwrap_or_default();
            let grant = meter.grant(&request(1, 1_000, reports, 0));
            if grant.size == 0 {
                break;
            }
            admitted += grant.size;
            previous = Some(grant);
        }
        assert_eq!(
            admitted, 300,
            "one node spending everything it gets uses the whole limit"
        );
    }

    #[test]
    fn an_unreported_slice_stays_consumed_until_its_node_reports() {
        let mut meter = Meter::default();
        let dead = meter.grant(&request(1, 1_000, vec![], 0));
        assert!(dead.size > 2);
        let consumed = |meter: &Meter| meter.ledger.as_ref().expect("ledger").consumed();
        // Long after its lease the slice still counts whole: its node may have spent it.
        let other = meter.grant(&request(2, 1, vec![], 30_000));
        assert_eq!(consumed(&meter), dead.size + other.size);
        // The node comes back and reports: only what it spent stays consumed.
        let report = |spent| {
            vec![SpendReport {
                slice_id: dead.slice_id,
                spent,
            }]
        };
        meter.grant(&request(1, 0, report(2), 31_000));
        assert_eq!(consumed(&meter), 2 + other.size);
        // A second report of the same slice changes nothing.
        meter.grant(&request(1, 0, report(0), 32_000));
        assert_eq!(consumed(&meter), 2 + other.size);
    }

    #[test]
    fn a_node_whose_lease_ran_out_no_longer_shrinks_the_others_share() {
        let mut meter = Meter::default();
        meter.grant(&request(1, 1_000, vec![], 0));
        let while_held = meter.grant(&request(2, 1_000, vec![], 1)).size;
        let mut fresh = meter.clone();
        let after_lease = fresh.grant(&request(2, 1_000, vec![], 5_000)).size;
        let during_lease = meter.grant(&request(2, 1_000, vec![], 1_000)).size;
        assert!(after_lease > during_lease, "{after_lease} vs {during_lease}");
        assert!(while_held > 0);
    }

    #[test]
    fn a_requester_behind_the_ledgers_window_gets_nothing() {
        let mut meter = Meter::default();
        let later = meter.grant(&request(1, 10, vec![], 60_000));
        let earlier = meter.grant(&request(2, 10, vec![], 30_000));
        assert_eq!(earlier.size, 0);
        assert_eq!(meter.ledger.as_ref().expect("ledger").window, later.window);
    }

    #[test]
    fn a_grant_that_never_reached_its_node_is_given_back_at_its_next_ask() {
        let mut meter = Meter::default();
        let consumed = |meter: &Meter| meter.ledger.as_ref().expect("ledger").consumed();
        let kept = meter.grant(&request(1, 10, vec![], 0));
        let mut ask = request(1, 10, vec![], 1);
        ask.held = vec![kept.slice_id];
        let lost = meter.grant(&ask);
        assert_eq!(consumed(&meter), kept.size + lost.size);
        let mut next = request(1, 0, vec![], 2);
        next.held = vec![kept.slice_id];
        meter.grant(&next);
        assert_eq!(consumed(&meter), kept.size, "the lost grant paid for nothing");

        // After a restart the node cannot vouch for its earlier slices: they stay counted.
        let mut restarted = request(1, 0, vec![], 3);
        restarted.incarnation = 1;
        meter.grant(&restarted);
        assert_eq!(consumed(&meter), kept.size);
    }

    #[test]
    fn a_new_window_starts_empty_and_old_slices_are_void() {
        let mut meter = Meter::default();
        let first = meter.grant(&request(1, 1_000, vec![], 0));
        let next = meter.grant(&request(1, 1_000, vec![], 60_000));
        assert_ne!(first.window, next.window);
        let ledger = meter.ledger.as_ref().expect("ledger");
        assert_eq!(ledger.window, next.window);
        assert_eq!(ledger.open.keys().copied().collect::<Vec<_>>(), [next.slice_id]);
    }

    #[test]
    fn a_need_larger_than_the_fair_share_is_granted_when_the_window_has_it() {
        let mut meter = Meter::default();
        let mut ask = request(1, 1, vec![], 0);
        ask.need = 200;
        let first = meter.grant(&ask);
        assert_eq!(first.size, 200, "well over 300 / 8");
        ask.need = 500;
        ask.held = vec![first.slice_id];
        let partial = meter.grant(&ask);
        assert_eq!(
            (partial.size, partial.remaining),
            (100, 0),
            "what is left, so smaller requests can use it"
        );
    }

    #[test]
    fn credits_give_back_reported_capacity_of_their_own_window_only() {
        let mut meter = Meter::default();
        let slice = meter.grant(&request(1, 100, vec![], 0));
        let report = vec![SpendReport {
            slice_id: slice.slice_id,
            spent: slice.size,
        }];
        meter.grant(&request(1, 0, report, 1));
        let consumed = |meter: &Meter| meter.ledger.as_ref().expect("ledger").consumed();
        assert_eq!(consumed(&meter), slice.size);
        let mut credit = request(1, 0, vec![], 2);
        credit.credits = vec![
            Credit {
                window_start_ms: slice.window.start_ms,
                amount: 3,
            },
            Credit {
                window_start_ms: slice.window.start_ms - 60_000,
                amount: 1_000,
            },
        ];
        meter.grant(&credit);
        assert_eq!(consumed(&meter), slice.size - 3);
        credit.credits = vec![Credit {
            window_start_ms: slice.window.start_ms,
            amount: u64::MAX,
        }];
        meter.grant(&credit);
        assert_eq!(consumed(&meter), 0, "never below nothing");
    }

    #[test]
    fn reports_for_other_nodes_slices_are_ignored() {
        let mut meter = Meter::default();
        let theirs = meter.grant(&request(1, 1_000, vec![], 0));
        meter.grant(&request(
            2,
            1,
            vec![SpendReport {
                slice_id: theirs.slice_id,
                spent: 0,
            }],
            1,
        ));
        assert!(meter
            .ledger
            .as_ref()
            .expect("ledger")
            .open
            .contains_key(&theirs.slice_id));
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A node asks for a slice, reporting the slices it has closed.
        Ask {
            node: NodeId,
            want: u64,
            advance_ms: i64,
        },
        /// A node stops spending from one of its open slices after spending a fraction.
        Close { node: NodeId, pick: usize, percent: u8 },
        /// A node asks but never receives the answer (it timed out, or the link broke).
        LostAsk { node: NodeId, want: u64 },
        /// A node crashes and restarts: whatever it held was spent in full and is never
        /// reported; the new process knows nothing of it.
        Restart { node: NodeId },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1u64..4, 1u64..200, 0i64..15_000)
                .prop_map(|(node, want, advance_ms)| Step::Ask { node, want, advance_ms }),
            2 => (1u64..4, any::<usize>(), 0u8..=100)
                .prop_map(|(node, pick, percent)| Step::Close { node, pick, percent }),
            1 => (1u64..4, 1u64..200).prop_map(|(node, want)| Step::LostAsk { node, want }),
            1 => (1u64..4).prop_map(|node| Step::Restart { node }),
        ]
    }

    /// A slice as its node sees it.
    struct Held {
        node: NodeId,
        grant: Grant,
        /// What the node admitted from it; an open slice is assumed spent in full.
        spent: u64,
        closed: bool,
        reported: bool,
        /// The node's process restarted: nobody will report this slice.
        abandoned: bool,
    }

    proptest! {
        /// For any interleaving of grants, spends, reports, lease expiries (a node that never
        /// reports is one that died) and window changes, what all nodes admit in a window
        /// never exceeds the limit, and neither does what the ledger counts as consumed.
        #[test]
        fn admitted_never_exceeds_the_limit(steps in proptest::collection::vec(step(), 1..150)) {
            let mut meter = Meter::default();
            let mut now = 0i64;
            let mut held: Vec<Held> = Vec::new();
            let mut incarnations = [0u64; 4];
            // What one node sends: its closed slices as reports, its open ones as held.
            let ask = |held: &mut Vec<Held>, node: NodeId, want: u64, now: i64, incarnation: u64| {
                let mut request = request(node, want, Vec::new(), now);
                request.incarnation = incarnation;
                for h in held.iter_mut().filter(|h| h.node == node && !h.abandoned && !h.reported) {
                    if h.closed {
                        h.reported = true;
                        request.reports.push(SpendReport { slice_id: h.grant.slice_id, spent: h.spent });
                    } else {
                        request.held.push(h.grant.slice_id);
                    }
                }
                request
            };
            for step in steps {
                match step {
                    Step::Ask { node, want, advance_ms } => {
                        now += advance_ms;
                        let request = ask(&mut held, node, want, now, incarnations[node as usize]);
                        let grant = meter.grant(&request);
                        prop_assert!(grant.window.contains(T0 + now));
                        if grant.size > 0 {
                            held.push(Held { node, grant, spent: grant.size, closed: false, reported: false, abandoned: false });
                        }
                    }
                    Step::LostAsk { node, want } => {
                        let request = ask(&mut held, node, want, now, incarnations[node as usize]);
                        meter.grant(&request);
                    }
                    Step::Restart { node } => {
                        for h in held.iter_mut().filter(|h| h.node == node && !h.reported) {
                            h.abandoned = true;
                            if !h.closed {
                                h.spent = h.grant.size;
                            }
                        }
                        incarnations[node as usize] += 1;
                    }
                    Step::Close { node, pick, percent } => {
                        let open: Vec<usize> = (0..held.len())
                            .filter(|&i| held[i].node == node && !held[i].closed && !held[i].abandoned)
                            .collect();
                        if !open.is_empty() {
                            let h = &mut held[open[pick % open.len()]];
                            h.spent = h.grant.size * u64::from(percent) / 100;
                            h.closed = true;
                        }
                    }
                }
                if let Some(ledger) = &meter.ledger {
                    let admitted: u64 =
                        held.iter().filter(|h| h.grant.window == ledger.window).map(|h| h.spent).sum();
                    prop_assert!(admitted <= 300, "{} admitted in one window", admitted);
                    prop_assert!(ledger.consumed() <= 300, "{} consumed", ledger.consumed());
                    prop_assert!(admitted <= ledger.consumed());
                }
            }
        }
    }
}
