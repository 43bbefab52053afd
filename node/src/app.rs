//! `credentialflow serve`: wires storage, Raft, the three listeners and the actors, and
//! shuts them down in order on SIGTERM.

use actix::Actor;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use cluster::NodeInfo;

use std::sync::Arc;

use crate::actors::announcer::Announcer;
use crate::actors::health_checker::HealthChecker;
use crate::actors::janitor::ExpiryJanitor;
use crate::actors::quota_leaser::QuotaLeaser;
use crate::actors::usage_flusher::UsageFlusher;
use crate::admin::{self, AdminContext, AdminTokenDigest};
use crate::admin_token::{self, TokenSource};
use crate::cluster_handle::ClusterHandle;
use crate::config::NodeConfig;
use crate::dataplane::read_model::ReadModel;
use crate::dataplane::upstream_client::UpstreamClient;
use crate::dataplane::{self, ProxyContext};
use crate::raft_runtime::RaftRuntime;
use crate::{clock, peer_server};

/// Seconds in-flight requests get to finish after SIGTERM.
const GRACEFUL_SHUTDOWN_SECS: u64 = 10;

/// Runs the node until SIGTERM or SIGINT.
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (token, source) = admin_token::resolve(config.admin_token.as_deref(), &config.data_dir)
        .context("cannot read or write the admin token")?;
    match &source {
        TokenSource::Configured => tracing::info!("admin token taken from configuration"),
        TokenSource::Generated(path) => {
            tracing::info!(path = %path.display(), "admin token generated and written (mode 0600)")
        }
        TokenSource::Existing(path) => {
            tracing::info!(path = %path.display(), "admin token read from the data directory")
        }
    }
    let digest = web::Data::new(AdminTokenDigest::of(&token));
    drop(token);

    let read_model = Arc::new(ReadModel::default());
    let runtime = RaftRuntime::start().context("cannot start the Raft runtime")?;
    let cluster = ClusterHandle::start(&config, runtime.handle(), read_model.clone())
        .await
        .context("cannot start the Raft node")?;

    let peer_cluster = web::Data::new(cluster.clone());
    let peer = HttpServer::new(move || {
        App::new()
            .app_data(peer_cluster.clone())
            .configure(peer_server::routes)
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS)
    .bind(config.peer_addr)
    .with_context(|| format!("cannot bind the peer listener on {}", config.peer_addr))?
    .run();

    let admin_context = web::Data::new(AdminContext {
        cluster: cluster.clone(),
        revoke_wait: config.max_staleness.min(std::time::Duration::from_secs(2)),
        max_staleness: config.max_staleness,
    });
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_context.clone())
            .app_data(digest.clone())
            .configure(admin::routes)
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS)
    .bind(config.admin_addr)
    .with_context(|| format!("cannot bind the admin listener on {}", config.admin_addr))?
    .run();

    let proxy_context = web::Data::new(ProxyContext {
        read_model: read_model.clone(),
        contact: cluster.leader_contact().clone(),
        max_staleness: config.max_staleness,
    });
    let proxy = HttpServer::new(move || {
        App::new()
            .app_data(proxy_context.clone())
            .app_data(web::Data::new(UpstreamClient::default()))
            .configure(dataplane::routes)
    })
    .workers(config.workers)
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS)
    .bind(config.proxy_addr)
    .with_context(|| format!("cannot bind the proxy listener on {}", config.proxy_addr))?
    .run();

    let servers = [peer.handle(), admin.handle(), proxy.handle()];
    let peer_task = actix_rt::spawn(peer);
    let admin_task = actix_rt::spawn(admin);
    let proxy_task = actix_rt::spawn(proxy);

    let janitor = ExpiryJanitor::new(cluster.clone(), config.expiry_interval).start();
    let health_checker = HealthChecker::new(read_model.clone()).start();
    let quota_leaser = QuotaLeaser::new(cluster.clone(), read_model.limiter().clone()).start();
    let usage_flusher =
        UsageFlusher::new(cluster.clone(), read_model.clone(), config.usage_flush_interval).start();
    let announcer = Announcer::new(
        cluster.clone(),
        NodeInfo {
            id: config.id,
            peer_addr: config.advertised_peer_addr.clone(),
            admin_addr: config.admin_addr.to_string(),
            proxy_addr: config.proxy_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            registered_at_ms: clock::now_ms(),
        },
    )
    .start();

    tracing::info!(
        node_id = config.id,
        proxy = %config.proxy_addr,
        admin = %config.admin_addr,
        peer = %config.peer_addr,
        data_dir = %config.data_dir.display(),
        "credentialflow node started"
    );

    let signal = wait_for_signal().await;
    tracing::info!(signal, "shutting down: draining in-flight requests");
    drop(janitor);
    drop(announcer);
    drop(health_checker);
    drop(usage_flusher);
    drop(quota_leaser);
    let [peer_handle, admin_handle, proxy_handle] = servers;
    proxy_handle.stop(true).await;
    crate::actors::usage_flusher::flush_now(&cluster, &read_model).await;
    crate::actors::quota_leaser::release_all(&cluster, read_model.limiter()).await;
    admin_handle.stop(true).await;
    cluster.shutdown().await;
    peer_handle.stop(true).await;
    for task in [peer_task, admin_task, proxy_task] {
        if let Ok(Err(error)) = task.await {
            tracing::warn!(%error, "listener ended with an error");
        }
    }
    drop(cluster);
    runtime.stop();
    tracing::info!("shutdown complete");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
