//! Admin authentication: `Authorization: Bearer <token>` on every `/v1/` call.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};

use super::error::ApiError;

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

/// Proof that the request carried the admin token; take it as a handler argument. Its
/// `actor` names the credential in the audit log without revealing it.
pub struct Admin {
    pub actor: String,
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Admin, ApiError> {
    let digest = req
        .app_data::<web::Data<AdminTokenDigest>>()
        .ok_or_else(|| ApiError::Internal("admin token not configured".into()))?;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ApiError::Unauthorized)?;
    if digest.matches(presented) {
        Ok(Admin {
            actor: digest.actor_id(),
        })
    } else {
        Err(ApiError::Unauthorized)
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
