//! The least time one acknowledged admin write can take at one client in this design, from
//! three costs measured on the machine during the benchmark run.
//!
//! A write to the leader runs, in sequence and with nothing to overlap it:
//! - the client's HTTP round trip to the leader's admin listener;
//! - the admin worker's hand-off to the Raft runtime's thread and back (openraft runs on
//!   its own runtime, so that request load cannot starve heartbeats);
//! - the leader's fsync of the entry: openraft 0.9 replicates an entry only after the log
//!   store acknowledged it, and it is acknowledged only once durable;
//! - the leader's HTTP round trip to a follower's peer listener;
//! - the follower's hand-off from its peer worker to its Raft thread and back;
//! - the follower's fsync of the entry before it answers.
//!
//! Each is measured with nothing else done: no JSON, no key, no RocksDB, no apply. The sum
//! is a floor, and a real write costs more. A tighter one takes the leader's part from a
//! real write on a one-node cluster (the same path without the follower's leg) and adds
//! the follower's leg at its floor.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::closed_loop::{measure, Compose};

const SAMPLES: usize = 2000;

/// The three costs and a one-node write, each a median in microseconds.
pub struct WriteFloor {
    pub http_round_trip_us: f64,
    pub thread_round_trip_us: f64,
    pub fsync_us: f64,
    pub one_node_write_us: f64,
}

impl WriteFloor {
    /// Measures on this machine: HTTP against `admin_port`'s `/healthz`, fsync in `dir`, and
    /// `write` at one client against the one-node cluster's `one_node_port`.
    pub fn measure(admin_port: u16, dir: &Path, one_node_port: u16, write: Compose) -> Self {
        let one_node = measure(&[one_node_port], write, 1, Duration::from_secs(3), 201, 0);
        Self {
            http_round_trip_us: http_round_trip_us(admin_port),
            thread_round_trip_us: thread_round_trip_us(),
            fsync_us: fsync_us(dir),
            one_node_write_us: one_node.percentile_ms(50.0) * 1000.0,
        }
    }

    /// What the follower's leg costs at least: the leader's request to it, its hand-off to
    /// its Raft thread, its fsync.
    fn follower_leg_us(&self) -> f64 {
        self.http_round_trip_us + self.thread_round_trip_us + self.fsync_us
    }

    pub fn print(&self, etcd_one_client_leader_rps: Option<f64>) {
        let floor = 2.0 * self.follower_leg_us();
        let with_leader = self.one_node_write_us + self.follower_leg_us();
        println!("\none-client floor of this design, measured now (medians; a write pays each twice, leader and follower):");
        println!(
            "  HTTP/1.1 round trip on loopback (GET /healthz, one client) {:>7.1} µs",
            self.http_round_trip_us
        );
        println!(
            "  hand-off to another thread's tokio runtime and back        {:>7.1} µs",
            self.thread_round_trip_us
        );
        println!(
            "  fdatasync of a 400-byte overwrite                          {:>7.1} µs",
            self.fsync_us
        );
        println!(
            "  floor per write                                            {floor:>7.1} µs = at most {:.0} writes/s",
            1e6 / floor
        );
        println!(
            "  a write on a one-node cluster (all but the follower's leg) {:>7.1} µs",
            self.one_node_write_us
        );
        println!(
            "  that, plus the follower's leg at its floor                 {with_leader:>7.1} µs = at most {:.0} writes/s",
            1e6 / with_leader
        );
        if let Some(rps) = etcd_one_client_leader_rps {
            println!(
                "  2x etcd's one-client leader row ({rps:.0} writes/s) needs     {:>7.1} µs per write",
                1e6 / (2.0 * rps)
            );
        }
    }
}

/// Median latency of `GET /healthz` at one closed-loop client: both ends' socket calls and
/// wake-ups, and an HTTP parse on each side.
fn http_round_trip_us(port: u16) -> f64 {
    let get: Compose = Arc::new(|_, _, request: &mut Vec<u8>| {
        request.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    });
    let measured = measure(&[port], get, 1, Duration::from_secs(2), 200, 0);
    measured.percentile_ms(50.0) * 1000.0
}

/// Median time to send a message to a parked thread's current-thread tokio runtime and get
/// its answer back, as the admin worker does with the Raft runtime.
fn thread_round_trip_us() -> f64 {
    let (to_raft, mut raft_inbox) =
        tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
    let raft = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            while let Some(answer) = raft_inbox.recv().await {
                let _ = answer.send(());
            }
        });
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut samples = runtime.block_on(async move {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            // Long enough for the other thread to park, as it does between writes.
            std::thread::sleep(Duration::from_micros(200));
            let started = Instant::now();
            let (answer, answered) = tokio::sync::oneshot::channel();
            to_raft.send(answer).expect("raft thread");
            answered.await.expect("answer");
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        samples
    });
    let _ = raft.join();
    median(&mut samples)
}

/// Median time of a 400-byte overwrite and `fdatasync` in a preallocated, synced file: the
/// cheapest durable write the file system offers (a recycled WAL file, as the log store
/// uses).
fn fsync_us(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("probe file");
    file.write_all_at(&vec![0u8; 1 << 20], 0).expect("preallocate");
    file.sync_all().expect("sync");
    let record = [b'x'; 400];
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let started = Instant::now();
        file.write_all_at(&record, (i % 256) as u64 * 4096)
            .expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(path);
    median(&mut samples)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
