//! The `credentialflow` binary.
//!
//! # Layout
//!
//! - [`cli`], [`config`]: flags, environment and TOML → a validated `NodeConfig`.
//! - [`app`]: `serve`: start-up and ordered shutdown.
//! - [`raft_runtime`], [`cluster_handle`]: openraft on its own runtime; writes, forwarding,
//!   membership and read barriers.
//! - [`proposer`]: group commit of concurrent writes into one log entry.
//! - [`peer_server`]: the peer listener (Raft RPCs, forwarded writes).
//! - [`admin`]: the admin API and health probes.
//! - [`proxy`]: the data-plane listener.
//! - [`actors`]: background duties (expiry janitor, node announcer).

#![forbid(unsafe_code)]

mod actors;
mod admin;
mod admin_token;
mod app;
mod certs;
mod cli;
mod clock;
mod cluster_handle;
mod config;
mod dataplane;
mod logging;
mod master_key;
mod peer_server;
mod proposer;
mod raft_runtime;
mod telemetry;
mod tls;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => {
            let config = match config::NodeConfig::load(&args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("credentialflow: {error}");
                    return ExitCode::from(2);
                }
            };
            logging::init(config.log_format, &config.log_filter);
            let system = actix_rt::System::new();
            match system.block_on(app::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "credentialflow stopped");
                    eprintln!("credentialflow: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Certs(cli::CertsCommand::Init(args)) => match certs::init(&args) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("credentialflow: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
