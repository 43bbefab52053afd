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
use crate::actors::provider_monitor::ProviderMonitor;
use crate::actors::quota_leaser::QuotaLeaser;
use crate::actors::usage_flusher::UsageFlusher;
use crate::admin::{self, AdminContext, AdminTokenDigest, AuthFailures};
use crate::admin_token::{self, TokenSource};
use crate::cluster_handle::ClusterHandle;
use crate::config::NodeConfig;
use crate::dataplane::read_model::ReadModel;
use crate::dataplane::upstream_client::UpstreamClient;
use crate::dataplane::{self, ProxyContext};
use crate::raft_runtime::RaftRuntime;
use crate::tls::{self, ReloadableCert};
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

    let read_model = Arc::new(ReadModel::with_master_key(config.master_key.clone()));
    let runtime = RaftRuntime::start().context("cannot start the Raft runtime")?;
    let cluster = ClusterHandle::start(&config, runtime.handle(), read_model.clone())
        .await
        .context("cannot start the Raft node")?;

    let peer_cluster = web::Data::new(cluster.clone());
    let listener_cert = config.tls.as_ref().map(ReloadableCert::load).transpose()?;
    let peer_cert = config
        .peer_tls
        .as_ref()
        .map(|files| ReloadableCert::load(&files.node))
        .transpose()?;
    let peer = HttpServer::new(move || {
        App::new()
            .app_data(peer_cluster.clone())
            .configure(peer_server::routes)
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS);
    let peer = match (&config.peer_tls, &peer_cert) {
        (Some(files), Some(cert)) => {
            peer.bind_rustls_0_23(config.peer_addr, tls::peer_server_config(files, cert.clone())?)
        }
        _ => peer.bind(config.peer_addr),
    }
    .with_context(|| format!("cannot bind the peer listener on {}", config.peer_addr))?
    .run();

    let admin_context = web::Data::new(AdminContext {
        cluster: cluster.clone(),
        revoke_wait: config.max_staleness.min(std::time::Duration::from_secs(2)),
        max_staleness: config.max_staleness,
        metrics: crate::telemetry::install(),
        master_key: config.master_key.clone(),
        read_model: read_model.clone(),
    });
    let auth_failures = web::Data::new(AuthFailures::new(config.admin_auth_failure_limit));
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_context.clone())
            .app_data(auth_failures.clone())
            .app_data(digest.clone())
            .configure(admin::routes)
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS);
    let admin = match &listener_cert {
        Some(cert) => admin.bind_rustls_0_23(config.admin_addr, tls::server_config(cert.clone())?),
        None => admin.bind(config.admin_addr),
    }
    .with_context(|| format!("cannot bind the admin listener on {}", config.admin_addr))?
    .run();

    let provider_health = Arc::new(dataplane::ai::health::ProviderHealth::default());
    let proxy_context = web::Data::new(ProxyContext {
        read_model: read_model.clone(),
        contact: cluster.leader_contact().clone(),
        max_staleness: config.max_staleness,
        tls: listener_cert.is_some(),
        ai: dataplane::ai::AiContext {
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()
                .context("cannot build the provider client")?,
            health: provider_health.clone(),
            monitor: ProviderMonitor::new(provider_health).start().recipient(),
        },
    });
    // Set when the node stops, so that the proxy's idle connections close at once.
    let (stop_front, front_stopping) = tokio::sync::watch::channel(false);
    let proxy = match &listener_cert {
        Some(cert) => HttpServer::new(move || {
            App::new()
                .app_data(proxy_context.clone())
                .app_data(web::Data::new(UpstreamClient::default()))
                .configure(dataplane::routes)
        })
        .workers(config.workers)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(GRACEFUL_SHUTDOWN_SECS)
        .bind_rustls_0_23(config.proxy_addr, tls::server_config(cert.clone())?)
        .map(HttpServer::run),
        None => dataplane::http1::listener::bind(
            config.proxy_addr,
            config.workers,
            GRACEFUL_SHUTDOWN_SECS,
            proxy_context,
            front_stopping,
        )
        .map(|builder| builder.run()),
    }
    .with_context(|| format!("cannot bind the proxy listener on {}", config.proxy_addr))?;
    let servers = [peer.handle(), admin.handle(), proxy.handle()];
    let peer_task = actix_rt::spawn(peer);
    let admin_task = actix_rt::spawn(admin);
    let proxy_task = actix_rt::spawn(proxy);

    let janitor = ExpiryJanitor::new(cluster.clone(), read_model.clone(), config.expiry_interval).start();
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

    let reloadable = Reloadable {
        listener: listener_cert,
        peer: peer_cert,
        peer_files: config.peer_tls.clone(),
        cluster: cluster.clone(),
    };
    let signal = wait_for_signal(&reloadable).await;
    tracing::info!(signal, "shutting down: draining in-flight requests");
    drop(janitor);
    drop(announcer);
    drop(health_checker);
    drop(usage_flusher);
    drop(quota_leaser);
    let [peer_handle, admin_handle, proxy_handle] = servers;
    let _ = stop_front.send(true);
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
async fn wait_for_signal(reloadable: &Reloadable) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => reloadable.reload(),
        }
    }
}

/// What SIGHUP reloads: the listeners' and the peer certificates.
struct Reloadable {
    listener: Option<Arc<ReloadableCert>>,
    peer: Option<Arc<ReloadableCert>>,
    peer_files: Option<crate::config::PeerTlsFiles>,
    cluster: ClusterHandle,
}

impl Reloadable {
    fn reload(&self) {
        for (name, cert) in [("listener", &self.listener), ("peer", &self.peer)] {
            if let Some(cert) = cert {
                match cert.reload() {
                    Ok(()) => tracing::info!(certificate = name, "certificate reloaded"),
                    Err(error) => {
                        tracing::error!(certificate = name, %error, "certificate not reloaded; keeping the old one")
                    }
                }
            }
        }
        if let Some(files) = &self.peer_files {
            match tls::peer_client(files) {
                Ok(material) => self.cluster.reload_peer_tls(material),
                Err(error) => tracing::error!(%error, "peer client certificate not reloaded"),
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal(_reloadable: &Reloadable) -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
