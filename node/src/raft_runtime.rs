//! The dedicated tokio runtime openraft runs on, so that request load on the actix workers
//! can never starve heartbeats and trigger elections.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A tokio runtime on its own threads, alive until [`RaftRuntime::stop`].
pub struct RaftRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RaftRuntime {
    /// Starts the runtime with one worker thread named `raft`.
    ///
    /// One worker: Raft's tasks (the core, the state-machine worker, replication streams and
    /// their connections) pass every write along from task to task, and on one thread a
    /// hand-off needs no wake-up of another. Measured with the admin-write benchmark against
    /// two workers: +6% at one client, +15% at 64 to the leader. Long synchronous work
    /// (snapshots) is handed off so that it cannot stall heartbeats.
    pub fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("raft-runtime".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Returns a handle for spawning onto the runtime.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs `future` on the Raft runtime and waits for it from any executor.
    pub async fn run<F>(handle: &Handle, future: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        handle.spawn(future).await
    }

    /// Stops the runtime and joins its thread.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
