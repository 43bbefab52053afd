//! What the data plane reads of a client's request: the parts that decide its route, its
//! caller and the head sent upstream, apart from the HTTP server that parsed it, so that
//! forwarding does not depend on actix-web's request type.

use std::net::IpAddr;

use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::HttpRequest;

/// A client's request head as the proxy sees it.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a Method,
    /// The path as received, before it is made canonical.
    pub path: &'a str,
    /// The query string without its `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The client's address, for `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    /// The request came over TLS, for `X-Forwarded-Proto`.
    pub tls: bool,
}

impl<'a> Incoming<'a> {
    /// A HEAD request: its answer carries no body, whatever the head announces.
    pub fn is_head(&self) -> bool {
        *self.method == Method::HEAD
    }

    /// The head of a request actix-web parsed, on a listener that is or is not TLS.
    pub fn of(req: &'a HttpRequest, tls: bool) -> Self {
        Self {
            method: req.method(),
            path: req.path(),
            query: req.query_string(),
            headers: req.headers(),
            peer: req.peer_addr().map(|addr| addr.ip()),
            tls,
        }
    }
}
