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
/// Batches in flight at once. Two let one batch append (fsync) while the previous one
/// replicates; more only split the queue into smaller batches, each paying its own fsync
/// (measured with the admin-write benchmark: 1, 2, 4 and 8 tried, 2 best).
const MAX_IN_FLIGHT: usize = 2;
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
    /// Starts the batching task on `runtime`; `commit` turns a batch into one outcome per
    /// command, in order.
    pub fn start<F, Fut>(runtime: &Handle, commit: F) -> Self
    where
        F: Fn(Vec<Command>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Written, E>>> + Send + 'static,
    {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        runtime.spawn(run(pending, commit));
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

async fn run<E, F, Fut>(mut pending: mpsc::Receiver<Pending<E>>, commit: F)
where
    E: BatchError,
    F: Fn(Vec<Command>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<Written, E>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
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
