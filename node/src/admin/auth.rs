//! Admin authentication and roles: `Authorization: Bearer <token>` on every `/v1/` call,
//! either the node's bootstrap token (role admin) or a managed token from
//! `/v1/admin-tokens` (checked by its SHA-256 against the replicated state).

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest};
use cluster::admin_token::AdminRole;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AdminContext;

/// The SHA-256 of the admin token; the plaintext is not kept in memory after start-up.
#[derive(Clone)]
pub struct AdminTokenDigest([u8; 32]);

impl AdminTokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Returns the audit name of the token: `admin:` and 8 hex digits of its digest.
    pub fn actor_id(&self) -> String {
        let mut id = String::from("admin:");
        for byte in &self.0[..4] {
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }

    /// Compares digests, so the comparison time reveals nothing about the token.
    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// Proof that the request carried an admin credential whose role allows it; take it as a
/// handler argument. Its `actor` names the credential in the audit log without revealing
/// it: `admin:` and 8 hex digits for the bootstrap token, `token:<id>` for managed ones.
pub struct Admin {
    pub actor: String,
    pub role: AdminRole,
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|admin| authorize(req, admin)))
    }
}

/// Failed authentications allowed per source address per window, by default.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past this the oldest picture is dropped.
const MAX_TRACKED: usize = 10_000;

/// Failed admin authentications per source address, so a token cannot be guessed at
/// speed. Per node: each node protects its own listener.
#[derive(Debug)]
pub struct AuthFailures {
    /// Failures allowed per window; 0 turns the limit off.
    max_failures: u32,
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    pub fn new(max_failures: u32) -> Self {
        Self {
            max_failures,
            by_address: Mutex::default(),
        }
    }

    /// Returns how long `address` must wait, when it failed too often.
    fn blocked_for(&self, address: IpAddr) -> Option<Duration> {
        let failures = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        let (since, count) = failures.get(&address)?;
        let elapsed = since.elapsed();
        (self.max_failures > 0 && *count >= self.max_failures && elapsed < FAILURE_WINDOW)
            .then(|| FAILURE_WINDOW - elapsed)
    }

    fn record(&self, address: IpAddr) {
        let mut failures = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

fn authenticate(req: &HttpRequest) -> Result<Admin, ApiError> {
    let digest = req
        .app_data::<web::Data<AdminTokenDigest>>()
        .ok_or_else(|| ApiError::Internal("admin token not configured".into()))?;
    let context = req.app_data::<web::Data<AdminContext>>();
    let failures = req.app_data::<web::Data<AuthFailures>>();
    let address = req.peer_addr().map(|a| a.ip());
    if let (Some(failures), Some(address)) = (failures, address) {
        if let Some(wait) = failures.blocked_for(address) {
            return Err(ApiError::TooManyAttempts {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let found = presented.and_then(|presented| {
        if digest.matches(presented) {
            return Some(Admin {
                actor: digest.actor_id(),
                role: AdminRole::Admin,
            });
        }
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let applied = context?.cluster.shared().read();
        let token = applied.state.admin_token_by_hash(&hash)?;
        token.revoked_at_ms.is_none().then(|| Admin {
            actor: format!("token:{}", token.id),
            role: token.role,
        })
    });
    found.ok_or_else(|| {
        if let (Some(failures), Some(address)) = (failures, address) {
            failures.record(address);
        }
        ApiError::Unauthorized
    })
}

/// Whether `role` may make this request: auditors read; operators also write keys,
/// tenants, routes, providers and token revocations, and read all but admin tokens;
/// admins do all.
fn authorize(req: &HttpRequest, admin: Admin) -> Result<Admin, ApiError> {
    let pattern = req.match_pattern().unwrap_or_default();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let allowed = match admin.role {
        AdminRole::Admin => true,
        AdminRole::Auditor => read,
        AdminRole::Operator => {
            let operator_area = [
                "/v1/keys",
                "/v1/tenants",
                "/v1/routes",
                "/v1/revocations",
                "/v1/providers",
            ]
            .iter()
            .any(|area| pattern == *area || pattern.starts_with(&format!("{area}/")));
            let admin_only = pattern.starts_with("/v1/admin-tokens");
            (read && !admin_only) || operator_area
        }
    };
    if allowed {
        Ok(admin)
    } else {
        Err(ApiError::Forbidden {
            role: admin.role.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn request(authorization: Option<&str>) -> HttpRequest {
        let mut builder =
            TestRequest::default().app_data(web::Data::new(AdminTokenDigest::of("s3cret-admin-token")));
        if let Some(value) = authorization {
            builder = builder.insert_header((header::AUTHORIZATION, value));
        }
        builder.to_http_request()
    }

    #[test]
    fn only_the_exact_bearer_token_authenticates() {
        assert!(authenticate(&request(Some("Bearer s3cret-admin-token"))).is_ok());
        assert!(authenticate(&request(Some("bearer s3cret-admin-token"))).is_ok());
        assert!(authenticate(&request(Some("Bearer s3cret-admin-tokeN"))).is_err());
        assert!(authenticate(&request(Some("Basic s3cret-admin-token"))).is_err());
        assert!(authenticate(&request(Some("s3cret-admin-token"))).is_err());
        assert!(authenticate(&request(None)).is_err());
    }
}
