//! Parting candidates that stood at the same moment.
//!
//! openraft 0.9 draws a node's election timeout once, when the node starts, and looks at it
//! only on its tick (every 1.5 heartbeat intervals). Two nodes whose timeouts run out on the
//! same tick stand together, each votes for itself, and neither wins. Nothing is drawn anew
//! for the next round, so it ends on the same tick again: the cluster stays leaderless until
//! scheduling jitter parts the two (a failover of 6 s was seen, where 1.3–1.6 s is usual).
//!
//! Raft's remedy is a fresh random timeout for every election. This task supplies one by
//! holding back: each time this node stands, its own elections are switched off for a
//! freshly drawn while, and back on as soon as a leader is known or the while is over. The
//! node still answers votes meanwhile, so whichever candidate's wait ends first wins. It
//! never starts an election itself: an earlier attempt that stood again on a timer kept
//! three nodes outbidding each other's terms (term 116 after 29 s, no leader).

use std::sync::Weak;
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use rand::Rng;
use tokio::time::Instant;

use cluster::types::{Node, NodeId};

use super::Inner;

/// Whether the metrics show this node standing in an election no one has won yet.
fn standing_unwon(metrics: &RaftMetrics<NodeId, Node>) -> bool {
    metrics.state == ServerState::Candidate && metrics.current_leader.is_none()
}

/// How long this node sits out elections after standing: up to twice the shortest election
/// timeout, so that its next election comes at a random point beyond its fixed timeout
/// about half the time.
fn draw_hold_back(election_timeout_min: Duration) -> Duration {
    rand::thread_rng().gen_range(Duration::ZERO..election_timeout_min * 2)
}

/// Watches this node's candidacies until Raft stops.
pub(super) async fn part_split_votes(inner: Weak<Inner>, election_timeout_min: Duration) {
    let Some(mut changes) = inner.upgrade().map(|inner| inner.raft.metrics()) else {
        return;
    };
    let mut held_back_in_term = None;
    loop {
        if changes.changed().await.is_err() {
            return; // Raft has stopped.
        }
        let term = {
            let metrics = changes.borrow_and_update();
            if !standing_unwon(&metrics) || held_back_in_term == Some(metrics.current_term) {
                continue;
            }
            metrics.current_term
        };
        held_back_in_term = Some(term);
        let Some(raft) = inner.upgrade().map(|inner| inner.raft.clone()) else {
            return;
        };
        let until = Instant::now() + draw_hold_back(election_timeout_min);
        raft.runtime_config().elect(false);
        // Back on when the while is over, or earlier once this candidacy is decided.
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() || !standing_unwon(&changes.borrow_and_update()) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        raft.runtime_config().elect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_backs_are_drawn_anew_within_twice_the_shortest_timeout() {
        let min = Duration::from_millis(500);
        let draws: Vec<Duration> = (0..1000).map(|_| draw_hold_back(min)).collect();
        assert!(draws.iter().all(|d| *d < min * 2));
        assert!(draws.iter().any(|d| *d < min / 2) && draws.iter().any(|d| *d > min * 3 / 2));
    }

    #[test]
    fn only_an_unwon_candidacy_is_held_back() {
        let mut metrics = RaftMetrics::<NodeId, Node>::new_initial(1);
        metrics.state = ServerState::Candidate;
        assert!(standing_unwon(&metrics));
        metrics.current_leader = Some(2);
        assert!(!standing_unwon(&metrics), "a leader is known");
        metrics.current_leader = None;
        for state in [ServerState::Leader, ServerState::Follower, ServerState::Learner] {
            metrics.state = state;
            assert!(!standing_unwon(&metrics), "{state:?}");
        }
    }
}
