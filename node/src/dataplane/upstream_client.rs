//! The HTTP client the data plane and the health checker send upstream with: hyper's pooled
//! client, one per worker thread, so each worker keeps its own keep-alive connections and
//! a request never waits on another thread.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Errors a request body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Any request body the proxy sends.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Longest time to establish a TCP connection to a target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections are closed after this long: below common upstream idle timeouts
/// (5 s for actix-web, 60 s for nginx), so the pool rarely hands out a connection the
/// upstream is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A pooled HTTP/1.1 client.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, UpstreamBody>,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        Self { client }
    }
}

impl UpstreamClient {
    /// Sends a request; the answer's body streams from the connection.
    pub async fn send(
        &self,
        request: http1::Request<UpstreamBody>,
    ) -> Result<http1::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// Sends a bodiless GET (health probes) and returns the status.
    pub async fn probe(&self, uri: &str, timeout: Duration) -> Option<u16> {
        let request = http1::Request::get(uri)
            .header(http1::header::HOST, authority_of(uri))
            .body(empty())
            .ok()?;
        let response = tokio::time::timeout(timeout, self.send(request))
            .await
            .ok()?
            .ok()?;
        Some(response.status().as_u16())
    }
}

/// An empty request body.
pub fn empty() -> UpstreamBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn authority_of(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}
