//! The CPU time a system under test spends, read from `/proc`, so that a run can say what
//! each request cost the proxy that served it. Throughput on a shared 2-core machine moves
//! with whatever else runs; CPU per request moves much less.

use std::path::PathBuf;

/// The processes or threads whose CPU time is charged to one system.
pub enum Cpu {
    /// Whole processes (every thread of each).
    Processes(Vec<u32>),
    /// This process's threads whose name starts with the prefix.
    OwnThreads(&'static str),
    /// This process's children that have exited and been waited for: a load generator run
    /// to completion, when nothing else exits meanwhile.
    ReapedChildren,
}

impl Cpu {
    /// nginx's workers: the children of its master process.
    pub fn nginx_workers(master: u32) -> Self {
        let workers = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                stat_fields(&PathBuf::from(format!("/proc/{pid}/stat")))
                    .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                    == Some(master)
            })
            .collect();
        Self::Processes(workers)
    }

    /// User plus system time so far, in clock ticks.
    pub fn ticks(&self) -> u64 {
        if let Self::ReapedChildren = self {
            // cutime and cstime: fields 16 and 17 of stat(5).
            return stat_fields("/proc/self/stat".as_ref())
                .and_then(|fields| {
                    Some(fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?)
                })
                .unwrap_or(0);
        }
        let stats: Vec<PathBuf> = match self {
            Self::Processes(pids) => pids
                .iter()
                .map(|pid| format!("/proc/{pid}/stat").into())
                .collect(),
            Self::OwnThreads(prefix) => std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|task| {
                    std::fs::read_to_string(task.join("comm")).is_ok_and(|name| name.starts_with(prefix))
                })
                .map(|task| task.join("stat"))
                .collect(),
            Self::ReapedChildren => Vec::new(),
        };
        stats
            .iter()
            .filter_map(|path| {
                let fields = stat_fields(path)?;
                // utime and stime: fields 14 and 15 of stat(5), counted here from field 3.
                let user = fields.get(11)?.parse::<u64>().ok()?;
                let system = fields.get(12)?.parse::<u64>().ok()?;
                Some(user + system)
            })
            .sum()
    }
}

/// The fields of a stat file after the command name (which may hold spaces), from `state`.
fn stat_fields(path: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Microseconds of CPU per request, from a tick count over `requests`.
pub fn us_per_request(ticks: u64, requests: u64) -> f64 {
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space on every architecture.
    const TICKS_PER_SECOND: f64 = 100.0;
    if requests == 0 {
        return f64::NAN;
    }
    ticks as f64 / TICKS_PER_SECOND * 1e6 / requests as f64
}
