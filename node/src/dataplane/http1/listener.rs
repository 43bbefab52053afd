//! The plain proxy listener: actix-server's workers accept, the HTTP/1 loop serves, and
//! each worker keeps actix-web's proxy app behind actix-http's dispatcher for the
//! connections the loop hands over.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use actix_server::ServerBuilder;
use actix_service::{map_config, IntoServiceFactory as _, Service as _, ServiceFactory as _};
use actix_web::dev::{fn_factory, fn_service, AppConfig};
use actix_web::{web, App};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::prefixed::Prefixed;
use super::{serve, Front, Handover, HEAD_TIMEOUT, KEEP_ALIVE};
use crate::dataplane::read_model::WorkerView;
use crate::dataplane::upstream_client::UpstreamClient;
use crate::dataplane::{routes, ProxyContext};

/// Binds `addr` with `workers` worker threads.
pub fn bind(
    addr: SocketAddr,
    workers: usize,
    shutdown_timeout_secs: u64,
    ctx: web::Data<ProxyContext>,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<ServerBuilder> {
    actix_server::Server::build()
        .workers(workers)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout_secs)
        .bind("proxy", addr, move || {
            let ctx = ctx.clone();
            let stopping = stopping.clone();
            fn_factory(move || {
                let ctx = ctx.clone();
                let stopping = stopping.clone();
                async move {
                    let client = UpstreamClient::default();
                    let app = App::new()
                        .app_data(ctx.clone())
                        .app_data(web::Data::new(client.clone()))
                        .configure(routes);
                    let dispatcher = actix_http::HttpService::<Prefixed<TcpStream>, _, _>::build()
                        .keep_alive(actix_http::KeepAlive::Timeout(KEEP_ALIVE))
                        .client_request_timeout(HEAD_TIMEOUT)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(addr)
                        .h1(map_config(app.into_factory(), |_| AppConfig::default()))
                        .new_service(())
                        .await?;
                    let dispatcher = Rc::new(dispatcher);
                    let handover: Handover = Rc::new(move |io, peer| {
                        let dispatcher = dispatcher.clone();
                        Box::pin(async move {
                            if let Err(error) = dispatcher.call((io, peer)).await {
                                tracing::debug!(%error, "proxy connection ended with an error");
                            }
                        })
                    });
                    // The node's stop, passed on to this worker's own channel.
                    let (stop_here, stopping_here) = watch::channel(false);
                    let mut stopping = stopping.clone();
                    actix_rt::spawn(async move {
                        let _ = stopping.wait_for(|stopping| *stopping).await;
                        let _ = stop_here.send(true);
                    });
                    let ctx = ctx.into_inner();
                    let front = Front {
                        view: Rc::new(WorkerView::new(ctx.read_model.clone())),
                        ctx,
                        client,
                        handover,
                        stopping: stopping_here,
                    };
                    Ok::<_, ()>(fn_service(move |io: TcpStream| {
                        let front = front.clone();
                        async move {
                            serve(io, front).await;
                            Ok::<(), ()>(())
                        }
                    }))
                }
            })
        })
}
