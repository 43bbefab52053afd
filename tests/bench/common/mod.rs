//! What the benchmarks share: `wrk` runs and their parsing, nginx instances with their own
//! config, and the table rows they print.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::support;

pub mod cpu;

/// Exits with a hint when `nginx` or `wrk` is missing.
pub fn require_tools() {
    for tool in ["nginx", "wrk"] {
        if Command::new(tool).arg("-v").output().is_err() {
            eprintln!("{tool} is not on the PATH; install it: apt-get install -y nginx-light wrk");
            std::process::exit(2);
        }
    }
}

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Requests completed in the run.
    pub requests: u64,
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Parses a wrk duration such as `812.00us`, `1.23ms` or `2.01s` into milliseconds.
fn parse_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

pub fn parse_wrk(output: &str) -> Run {
    let mut run = Run::default();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => run.p50_ms = parse_ms(value).unwrap_or(f64::NAN),
            ["99%", value] => run.p99_ms = parse_ms(value).unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => run.requests = n.parse().unwrap_or(0),
            ["Requests/sec:", value] => run.requests_per_sec = value.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    run
}

/// Runs wrk against `url`; with `delay_ms`, each connection pauses that long between
/// requests (a fixed offered load instead of a closed loop).
pub fn wrk(url: &str, key: &str, connections: u64, seconds: u64, delay_ms: Option<u64>, root: &Path) -> Run {
    let mut command = wrk_command(connections, seconds);
    command.arg("-H").arg(format!("Authorization: Bearer {key}"));
    if let Some(delay) = delay_ms {
        let script = root.join(format!("delay-{delay}.lua"));
        std::fs::write(&script, format!("function delay()\n  return {delay}\nend\n")).expect("write lua");
        command.arg("-s").arg(script);
    }
    run_wrk(command.arg(url), url)
}

/// Runs wrk against `url`, each request carrying the next bearer token of `tokens` (one
/// per line), so that a cache keyed by the token misses when the list outgrows it.
pub fn wrk_rotating(url: &str, tokens: &Path, connections: u64, seconds: u64, root: &Path) -> Run {
    let script = root.join("rotate.lua");
    std::fs::write(
        &script,
        "local tokens = {}\nlocal i = 0\n\
         function init(args)\n  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end\n\
           i = math.random(#tokens)\nend\n\
         function request()\n  i = i % #tokens + 1\n\
           return wrk.format(\"GET\", nil, { [\"Authorization\"] = \"Bearer \" .. tokens[i] })\nend\n",
    )
    .expect("write lua");
    let mut command = wrk_command(connections, seconds);
    command.arg("-s").arg(&script).arg(url).arg("--").arg(tokens);
    run_wrk(&mut command, url)
}

fn wrk_command(connections: u64, seconds: u64) -> Command {
    let threads = env_or("BENCH_WRK_THREADS", 1).min(connections);
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    command
}

fn run_wrk(command: &mut Command, url: &str) -> Run {
    let output = command.output().expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let run = parse_wrk(&text);
    assert!(
        run.requests_per_sec > 0.0,
        "wrk against {url} produced no result:\n{text}"
    );
    run
}

/// An nginx instance with its own config and prefix directory.
pub struct Nginx {
    child: Child,
}

impl Nginx {
    /// The master's process id; its workers are its children.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(root: &Path, name: &str, workers: &str, server: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let conf = format!(
            "worker_processes {workers};\ndaemon off;\npid {pid};\nerror_log {dir}/logs/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n{server}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            dir = dir.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        Self { child }
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers (after SIGKILL they live on as orphans
    /// holding their ports); SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        if kill(pid, Signal::SIGTERM).is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_http(url: &str) {
    support::wait_for(Duration::from_secs(10), url, || {
        support::send(support::http().get(url)).filter(|a| a.status < 500)
    });
}

pub fn row(system: &str, workers: &str, run: &Run) {
    println!(
        "| {system:<36} | {workers:>7} | {:>10.0} | {:>8.2} | {:>8.2} | {:>6} |",
        run.requests_per_sec, run.p50_ms, run.p99_ms, run.errors
    );
}

pub fn mean(runs: &[Run]) -> Run {
    let n = runs.len() as f64;
    Run {
        requests_per_sec: runs.iter().map(|r| r.requests_per_sec).sum::<f64>() / n,
        p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / n,
        p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / n,
        errors: runs.iter().map(|r| r.errors).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
    }
}
