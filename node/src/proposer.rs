//! Group commit of writes.
//!
//! openraft 0.9 appends (and waits for the fsync of) one log entry per `client_write`, so
//! proposing each admin write on its own caps throughput at one write per fsync. A
//! [`Batcher`] gathers the writes that arrive while earlier ones are in flight and hands
//! them to a commit function together; every caller still gets its own outcome.
//!
//! - On the leader, the commit function proposes one [`Command::Batch`] entry: one fsync on
//!   a majority covers the whole batch.
//! - On a follower, it forwards the batch to the leader in one peer request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cluster::peer::ForwardError;
use cluster::types::{Node, NodeId, Raft};
use cluster::{Command, Outcome, Proposal, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A committed write: what `apply` answered, and where in the log.
#[derive(Debug, Clone)]
pub struct Written {
    pub response: Response,
    pub log_index: u64,
}

/// Most commands in one batch.
pub const MAX_BATCH: usize = 256;
/// Log entries a leader has in flight at once. Two let one batch append (fsync) while the
/// previous one replicates; more only split the queue into smaller batches, each paying its
/// own fsync (measured with the admin-write benchmark: 1, 2, 4 and 8 tried, 2 best).
pub const PROPOSALS_IN_FLIGHT: usize = 2;
/// Forwarded batches a follower has in flight at once. One: the writes that arrive while a
/// batch is with the leader all go in the next, so a follower sends as few peer requests as
/// the leader's commit rate allows, and each costs a round trip, the leader's decoding and
/// a wake-up on both sides. With 64 clients spread over three nodes, one gave 9–12% more
/// writes per second than two in paired runs of the admin-write benchmark; the leader's
/// own pipeline ([`PROPOSALS_IN_FLIGHT`]) keeps its depth.
pub const FORWARDS_IN_FLIGHT: usize = 1;
/// Queued writes before callers wait for room.
const QUEUE_DEPTH: usize = 4096;

/// A write and where its outcome goes.
struct Pending<E> {
    command: Command,
    reply: oneshot::Sender<Result<Written, E>>,
}

/// The handle callers submit writes through.
pub struct Batcher<E> {
    queue: mpsc::Sender<Pending<E>>,
}

impl<E> Clone for Batcher<E> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// What a batcher reports when it cannot deliver an outcome.
pub trait BatchError: Clone + Send + 'static {
    /// The write never left the queue: nothing was proposed.
    fn not_sent(reason: &str) -> Self;
    /// The write may have been proposed; whether it was applied is unknown.
    fn unknown(reason: &str) -> Self;
}

impl BatchError for ForwardError {
    fn not_sent(reason: &str) -> Self {
        ForwardError::Unavailable(reason.to_owned())
    }

    fn unknown(reason: &str) -> Self {
        ForwardError::OutcomeUnknown(reason.to_owned())
    }
}

impl<E: BatchError> Batcher<E> {
    /// Starts the batching task on `runtime`, with at most `max_in_flight` batches
    /// committing at once; `commit` turns a batch into one outcome per command, in order.
    pub fn start<F, Fut>(runtime: &Handle, max_in_flight: usize, commit: F) -> Self
    where
        F: Fn(Vec<Command>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Written, E>>> + Send + 'static,
    {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        runtime.spawn(run(pending, max_in_flight, commit));
        Self { queue }
    }

    /// Submits `command` and returns its outcome.
    pub async fn submit(&self, command: Command) -> Result<Written, E> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| E::not_sent("the write batcher has stopped"))?;
        outcome
            .await
            .map_err(|_| E::unknown("the write was dropped during shutdown"))?
    }
}

async fn run<E, F, Fut>(mut pending: mpsc::Receiver<Pending<E>>, max_in_flight: usize, commit: F)
where
    E: BatchError,
    F: Fn(Vec<Command>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<Written, E>>> + Send + 'static,
{
    // With no room at all nothing would ever commit.
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = pending.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let committed = commit(commands);
        tokio::spawn(async move {
            let mut outcomes = committed.await.into_iter();
            for reply in replies {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(E::unknown("the batch answered fewer outcomes than writes")));
                let _ = reply.send(outcome);
            }
            drop(slot);
        });
    }
}

/// Proposes `commands` as one log entry and returns each command's outcome.
pub async fn propose_to_raft(
    raft: Raft,
    commands: Vec<Command>,
    commit_timeout: Duration,
) -> Vec<Result<Written, ForwardError>> {
    let count = commands.len();
    let proposal = match <[Command; 1]>::try_from(commands) {
        Ok([single]) => Proposal::One(single),
        Err(commands) => Proposal::Batch(commands),
    };
    match tokio::time::timeout(commit_timeout, raft.client_write(proposal)).await {
        Ok(Ok(reply)) => {
            let log_index = reply.log_id.index;
            let responses = match reply.data {
                Outcome::One(response) => vec![response],
                Outcome::Batch(responses) => responses,
            };
            responses
                .into_iter()
                .map(|response| Ok(Written { response, log_index }))
                .collect()
        }
        Ok(Err(RaftError::Fatal(fatal))) => {
            vec![Err(ForwardError::OutcomeUnknown(format!("raft stopped: {fatal}"))); count]
        }
        Ok(Err(error)) => vec![Err(write_error(error)); count],
        Err(_) => vec![
            Err(ForwardError::OutcomeUnknown(
                "the write did not commit in time".into()
            ));
            count
        ],
    }
}

/// Maps openraft's write error onto the forwarding protocol's.
pub fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ForwardError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ForwardError::NotLeader {
            leader: forward.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(refused)) => {
            ForwardError::MembershipRefused(refused.to_string())
        }
        RaftError::Fatal(fatal) => ForwardError::Unavailable(fatal.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;

    fn revoke(id: &str) -> Command {
        Command::RevokeKey {
            id: id.to_owned(),
            now_ms: 0,
        }
    }

    /// A commit function that records each batch's size, holds the first batch until
    /// `release` is notified, and answers every command.
    fn holding_the_first(
        sizes: Arc<Mutex<Vec<usize>>>,
        release: Arc<Notify>,
    ) -> impl Fn(Vec<Command>) -> futures::future::BoxFuture<'static, Vec<Result<Written, ForwardError>>>
           + Send
           + Sync
           + 'static {
        move |commands| {
            let (sizes, release) = (sizes.clone(), release.clone());
            Box::pin(async move {
                let first = {
                    let mut sizes = sizes.lock().expect("sizes");
                    sizes.push(commands.len());
                    sizes.len() == 1
                };
                if first {
                    release.notified().await;
                }
                let answer = || {
                    Ok(Written {
                        response: Response::Empty,
                        log_index: 1,
                    })
                };
                commands.iter().map(|_| answer()).collect()
            })
        }
    }

    /// Submits one write, holds its commit until `later` more writes have queued behind it,
    /// then lets everything commit. Returns the sizes of the batches that had left when the
    /// first was released, and of all of them, in the order they left.
    async fn batch_sizes(max_in_flight: usize, later: usize) -> (Vec<usize>, Vec<usize>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let batcher: Batcher<ForwardError> = Batcher::start(
            &Handle::current(),
            max_in_flight,
            holding_the_first(sizes.clone(), release.clone()),
        );
        let mut writes = vec![tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(revoke("first")).await }
        })];
        for _ in 0..1_000 {
            if !sizes.lock().expect("sizes").is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            !sizes.lock().expect("sizes").is_empty(),
            "the first write never left"
        );
        for i in 0..later {
            let batcher = batcher.clone();
            writes.push(tokio::spawn(async move {
                batcher.submit(revoke(&i.to_string())).await
            }));
        }
        // Let the later writes queue (and, with room, start committing) before the first
        // batch is released.
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        let before_release = sizes.lock().expect("sizes").clone();
        release.notify_one();
        for write in writes {
            assert!(write.await.expect("join").is_ok());
        }
        let sizes = sizes.lock().expect("sizes").clone();
        (before_release, sizes)
    }

    #[tokio::test]
    async fn with_one_batch_in_flight_the_writes_that_wait_go_together() {
        assert_eq!(batch_sizes(1, 5).await, (vec![1], vec![1, 5]));
    }

    #[tokio::test]
    async fn with_room_for_two_a_second_batch_leaves_while_the_first_commits() {
        let (before_release, sizes) = batch_sizes(2, 5).await;
        assert_eq!(before_release.len(), 2, "{before_release:?}");
        assert_eq!(sizes[0], 1);
        assert_eq!(sizes.iter().sum::<usize>(), 6);
    }
}
