//! Group commit of proposals on the leader.
//!
//! openraft 0.9 appends (and waits for the fsync of) one log entry per `client_write`, so
//! proposing each admin write on its own caps throughput at one write per fsync. The
//! proposer instead gathers the writes that arrive while earlier ones are committing into one
//! [`Command::Batch`] entry: one fsync on a majority covers all of them, and each caller still
//! gets its own outcome.

use std::sync::Arc;
use std::time::Duration;

use cluster::peer::{ForwardError, ForwardResponse};
use cluster::types::{Node, NodeId, Raft};
use cluster::{Command, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one log entry.
const MAX_BATCH: usize = 256;
/// Batches being committed at once; overlapping them keeps the leader's fsync and the
/// followers' replication busy at the same time.
const MAX_IN_FLIGHT: usize = 4;
/// Queued proposals before callers wait for room.
const QUEUE_DEPTH: usize = 4096;

/// A proposal and where its outcome goes.
struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<ForwardResponse, ForwardError>>,
}

/// The handle callers propose through.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batching task on `runtime`.
    pub fn start(raft: Raft, runtime: &Handle, commit_timeout: Duration) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        runtime.spawn(run(raft, pending, commit_timeout));
        Self { queue }
    }

    /// Proposes `command` and returns its outcome once committed and applied.
    pub async fn propose(&self, command: Command) -> Result<ForwardResponse, ForwardError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Proposal { command, reply })
            .await
            .map_err(|_| ForwardError::Unavailable("the proposer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| ForwardError::Unavailable("the proposal was dropped during shutdown".into()))?
    }
}

async fn run(raft: Raft, mut pending: mpsc::Receiver<Proposal>, commit_timeout: Duration) {
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
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch, commit_timeout).await;
            drop(slot);
        });
    }
}

/// Proposes one batch and hands every caller its own outcome.
async fn commit(raft: &Raft, batch: Vec<Proposal>, commit_timeout: Duration) {
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let single = commands.len() == 1;
    let entry = match single {
        true => commands.into_iter().next().unwrap_or(Command::Batch(Vec::new())),
        false => Command::Batch(commands),
    };
    let outcome = match tokio::time::timeout(commit_timeout, raft.client_write(entry)).await {
        Ok(Ok(reply)) => Ok((reply.data, reply.log_id.index)),
        Ok(Err(error)) => Err(write_error(error)),
        Err(_) => Err(ForwardError::Unavailable(
            "the write did not commit in time; its outcome is unknown".into(),
        )),
    };
    match outcome {
        Ok((response, log_index)) => {
            let responses = match (single, response) {
                (true, response) => vec![response],
                (false, Response::Batch(responses)) => responses,
                (false, other) => vec![other],
            };
            let mut responses = responses.into_iter();
            for reply in replies {
                let answer = match responses.next() {
                    Some(response) => Ok(ForwardResponse::Written { response, log_index }),
                    None => Err(ForwardError::Unavailable(
                        "the batch answered fewer outcomes than commands".into(),
                    )),
                };
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
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
