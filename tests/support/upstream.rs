//! A real upstream HTTP server for black-box tests: it echoes what it received, counts
//! requests, streams uploads without buffering them, and can be stopped and started again
//! on the same port to play a failing target.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde_json::json;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body_bytes: u64,
}

#[derive(Default)]
struct Record {
    seen: Mutex<Vec<Seen>>,
    requests: AtomicU64,
}

/// One upstream server.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    record: Arc<Record>,
    server: Option<(ServerHandle, JoinHandle<()>)>,
}

impl Upstream {
    /// Starts an upstream named `name` on a free port.
    pub fn start(name: &str) -> Self {
        let mut upstream = Self {
            name: name.to_owned(),
            port: super::free_port(),
            record: Arc::default(),
            server: None,
        };
        upstream.resume();
        upstream
    }

    /// The base URL routes use for this upstream.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests served since start.
    pub fn requests(&self) -> u64 {
        self.record.requests.load(Ordering::SeqCst)
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.record
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the server at once, dropping open connections, like a crashed process.
    pub fn kill(&mut self) {
        if let Some((handle, thread)) = self.server.take() {
            futures::executor::block_on(handle.stop(false));
            let _ = thread.join();
        }
    }

    /// Starts serving again on the same port.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "upstream {} already running", self.name);
        let (sender, receiver) = std::sync::mpsc::channel();
        let record = self.record.clone();
        let name = self.name.clone();
        let port = self.port;
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(record.clone()))
                    .app_data(web::Data::new(name.clone()))
                    .app_data(web::PayloadConfig::new(usize::MAX))
                    .route(
                        "/health",
                        web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route("/delay/{ms}", web::get().to(slow))
                    .route("/pieces/{count}", web::get().to(pieces))
                    .route("/own-request-id", web::get().to(own_request_id))
                    .default_service(web::to(echo))
            })
            .workers(2)
            .disable_signals()
            .shutdown_timeout(0)
            .bind(("127.0.0.1", port))
            .expect("bind upstream port")
            .run();
            sender.send(server.handle()).expect("hand over the server handle");
            let _ = system.block_on(server);
        });
        let handle = receiver.recv().expect("upstream started");
        self.server = Some((handle, thread));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answers after `ms` milliseconds: an upstream slower than a route's timeout.
async fn slow(ms: web::Path<u64>) -> HttpResponse {
    actix_rt::time::sleep(std::time::Duration::from_millis(ms.into_inner())).await;
    HttpResponse::Ok().body("late")
}

/// Streams `count` numbered lines, each its own chunk of a chunked answer (no length).
async fn pieces(count: web::Path<u32>) -> HttpResponse {
    let lines =
        (0..count.into_inner()).map(|i| Ok::<_, actix_web::Error>(web::Bytes::from(format!("piece {i}\n"))));
    HttpResponse::Ok().streaming(futures::stream::iter(lines))
}

/// Answers with a request id of its own, as many services do.
async fn own_request_id() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("x-request-id", "from-the-upstream"))
        .body("ok")
}

async fn echo(
    req: HttpRequest,
    mut payload: web::Payload,
    record: web::Data<Arc<Record>>,
    name: web::Data<String>,
) -> HttpResponse {
    // Count the body as it streams in; never hold it.
    let mut body_bytes = 0u64;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(bytes) => body_bytes += bytes.len() as u64,
            Err(_) => return HttpResponse::BadRequest().finish(),
        }
    }
    let mut headers = BTreeMap::new();
    for (header, value) in req.headers() {
        let value = value.to_str().unwrap_or("<binary>").to_owned();
        headers
            .entry(header.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let path = match req.query_string() {
        "" => req.path().to_owned(),
        query => format!("{}?{query}", req.path()),
    };
    record.requests.fetch_add(1, Ordering::SeqCst);
    record
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Seen {
            method: req.method().to_string(),
            path: path.clone(),
            headers,
            body_bytes,
        });
    HttpResponse::Ok().json(json!({ "upstream": name.as_str(), "path": path, "body_bytes": body_bytes }))
}
