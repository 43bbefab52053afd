//! The proxy (data plane) listener. Routing and forwarding arrive with the data-plane
//! work; until a route table exists every request is answered `404 no_route` in the
//! data plane's JSON error format, so clients already see the final error contract.

use actix_web::{web, HttpResponse};

/// Registers the proxy routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.default_service(web::to(no_route));
}

async fn no_route() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": { "code": "no_route", "message": "no route matches this request" }
    }))
}
