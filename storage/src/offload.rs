//! Long synchronous work off the Raft runtime's thread.
//!
//! The Raft runtime has a single worker thread (fewer thread hand-offs per write), so a
//! snapshot encoded or decoded in place would stall heartbeats and replication for as long
//! as it takes. Such work runs through [`offload`], which hands the runtime to another
//! thread for its duration.

/// Runs `call` so that the other tasks of a multi-threaded runtime keep running meanwhile;
/// on a current-thread runtime (unit tests) it simply runs.
pub(crate) fn offload<T>(call: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}
