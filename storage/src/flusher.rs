//! Group commit: appends are written to the WAL without syncing and queued here; one thread
//! syncs the WAL once for everything queued and only then acknowledges each append.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use cluster::TypeConfig;
use openraft::storage::LogFlushed;
use rocksdb::DB;

/// The handle that queues append acknowledgements for the flusher thread.
pub(crate) struct Flusher {
    queue: Option<Sender<LogFlushed<TypeConfig>>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread for `db`.
    pub(crate) fn start(db: Arc<DB>) -> std::io::Result<Self> {
        let (queue, pending) = channel();
        let thread = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || run(&db, &pending))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `callback` to be completed after the next WAL sync.
    pub(crate) fn acknowledge_after_sync(&self, callback: LogFlushed<TypeConfig>) {
        let sent = match &self.queue {
            Some(queue) => queue.send(callback).map_err(|unsent| unsent.0),
            None => Err(callback),
        };
        if let Err(callback) = sent {
            // The thread is gone: fail the append rather than acknowledge it unsynced.
            callback.log_io_completed(Err(std::io::Error::other("WAL flusher thread stopped")));
        }
    }
}

impl Drop for Flusher {
    /// Closes the queue and joins the thread, so that its handle on the database is released
    /// before the store counts as closed (RocksDB must not outlive process teardown).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &DB, pending: &Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let synced = db.flush_wal(true).map_err(std::io::Error::other);
        metrics_batch_size(batch.len());
        for callback in batch {
            callback.log_io_completed(match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

fn metrics_batch_size(size: usize) {
    tracing::trace!(appends = size, "WAL synced for a batch of appends");
}
