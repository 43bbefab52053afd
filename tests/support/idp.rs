//! A stand-in identity provider for the JWT tests: it publishes a JWKS document and an
//! OIDC discovery document over HTTP, can rotate its keys, and counts fetches. Tokens are
//! minted with the `jsonwebtoken` crate from the key pairs in `tests/fixtures/jwt`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

/// Reads a fixture file (`rsa1.pem`, `ec1.jwk.json`, ...).
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The public JWK of a fixture key pair (`rsa1`, `rsa2`, `ec1`, `ed1`).
pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).expect("fixture JWK")
}

#[derive(Default)]
struct Published {
    keys: Mutex<Vec<Value>>,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
    issuer: Mutex<String>,
}

/// The identity provider.
pub struct Idp {
    pub port: u16,
    published: Arc<Published>,
    server: Option<(ServerHandle, JoinHandle<()>)>,
}

impl Idp {
    /// Starts publishing `keys` (fixture names).
    pub fn start(keys: &[&str]) -> Self {
        let port = super::free_port();
        let published = Arc::new(Published::default());
        *published.issuer.lock().expect("issuer") = format!("http://127.0.0.1:{port}");
        let mut idp = Self {
            port,
            published,
            server: None,
        };
        idp.publish(keys);
        let (sender, receiver) = std::sync::mpsc::channel();
        let published = idp.published.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(published.clone()))
                    .route("/jwks.json", web::get().to(jwks))
                    .route("/.well-known/openid-configuration", web::get().to(discovery))
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(0)
            .bind(("127.0.0.1", port))
            .expect("bind idp port")
            .run();
            sender.send(server.handle()).expect("hand over the server handle");
            let _ = system.block_on(server);
        });
        idp.server = Some((receiver.recv().expect("idp started"), thread));
        idp
    }

    /// The issuer (`iss`) this IdP signs as.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.issuer())
    }

    /// Replaces the published keys (a rotation).
    pub fn publish(&self, keys: &[&str]) {
        *self.published.keys.lock().expect("keys") = keys.iter().map(|k| jwk(k)).collect();
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> u64 {
        self.published.discovery_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some((handle, thread)) = self.server.take() {
            futures::executor::block_on(handle.stop(false));
            let _ = thread.join();
        }
    }
}

async fn jwks(published: web::Data<Arc<Published>>) -> HttpResponse {
    published.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = published.keys.lock().map(|k| k.clone()).unwrap_or_default();
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=3600"))
        .json(json!({ "keys": keys }))
}

async fn discovery(published: web::Data<Arc<Published>>) -> HttpResponse {
    published.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = published.issuer.lock().map(|i| i.clone()).unwrap_or_default();
    HttpResponse::Ok().json(json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json") }))
}

/// Signs `claims` with fixture key `key` (`rsa1`, `ec1`, `ed1`, ...) as `alg`, naming
/// `kid` in the header.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(&format!("{key}.pem"));
    let encoding = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("fixture private key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).expect("sign")
}

/// Signs with an HMAC secret.
pub fn sign_hmac(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// A token with `alg: none` and no signature, as an attacker would send it.
pub fn unsigned(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}
