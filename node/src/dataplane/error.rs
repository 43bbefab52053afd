//! Data-plane errors: the JSON body `{"error": {"code", "message"}}` with a stable code per
//! variant, the status it maps to, and the headers a client needs to react.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

/// Why the proxy answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("an API key is required: Authorization: Bearer <key> or X-API-Key: <key>")]
    MissingCredential,
    #[error("the API key is malformed or unknown")]
    InvalidCredential,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired or was rotated out")]
    Expired,
    #[error("the API key may not call this route")]
    Forbidden,
    #[error("no route matches this request")]
    NoRoute,
    #[error("the route does not allow this method")]
    MethodNotAllowed,
    #[error("this node has lost contact with the cluster leader and cannot vouch for credentials")]
    StaleReplica,
    #[error("every upstream target of the route is down")]
    NoHealthyUpstream,
    #[error("the upstream could not be reached or failed")]
    BadGateway,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the request body could not be read")]
    BadRequestBody,
    #[error("the path has empty, '.' or '..' segments, or characters an upstream could read another way")]
    InvalidPath,
    #[error("the bearer token is not a well-formed JWT")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    #[error("the token was issued by another issuer")]
    InvalidIssuer,
    #[error("the token is meant for another audience")]
    InvalidAudience,
    #[error("the token's signature does not verify")]
    InvalidSignature,
    #[error("the token's signing algorithm is not accepted on this route")]
    UnsupportedAlgorithm,
    #[error("no known key fits the token's key id and algorithm")]
    UnknownSigningKey,
    #[error("the token lacks a claim this route requires")]
    MissingClaim,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("the issuer's signing keys could not be fetched")]
    JwksUnavailable,
    #[error("the route's upstream credential cannot be opened on this node")]
    UpstreamCredentialUnavailable,
    #[error("the route serves no such model")]
    UnknownModel,
    #[error("every provider of the model failed or refused")]
    ProvidersUnavailable,
}

impl ProxyError {
    /// Returns the stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::MissingCredential => "missing_credential",
            ProxyError::InvalidCredential => "invalid_credential",
            ProxyError::Revoked => "revoked",
            ProxyError::Expired => "expired",
            ProxyError::Forbidden => "forbidden",
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::StaleReplica => "stale_replica",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::BadGateway => "bad_gateway",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::InvalidPath => "invalid_path",
            ProxyError::InvalidToken => "invalid_token",
            ProxyError::TokenExpired => "token_expired",
            ProxyError::TokenNotYetValid => "token_not_yet_valid",
            ProxyError::InvalidIssuer => "invalid_issuer",
            ProxyError::InvalidAudience => "invalid_audience",
            ProxyError::InvalidSignature => "invalid_signature",
            ProxyError::UnsupportedAlgorithm => "unsupported_algorithm",
            ProxyError::UnknownSigningKey => "unknown_signing_key",
            ProxyError::MissingClaim => "missing_claim",
            ProxyError::TokenRevoked => "token_revoked",
            ProxyError::JwksUnavailable => "jwks_unavailable",
            ProxyError::UpstreamCredentialUnavailable => "upstream_credential_unavailable",
            ProxyError::UnknownModel => "model_not_found",
            ProxyError::ProvidersUnavailable => "providers_unavailable",
        }
    }
}

impl ResponseError for ProxyError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProxyError::MissingCredential
            | ProxyError::InvalidCredential
            | ProxyError::Revoked
            | ProxyError::Expired
            | ProxyError::InvalidToken
            | ProxyError::TokenExpired
            | ProxyError::TokenNotYetValid
            | ProxyError::InvalidIssuer
            | ProxyError::InvalidAudience
            | ProxyError::InvalidSignature
            | ProxyError::UnsupportedAlgorithm
            | ProxyError::UnknownSigningKey
            | ProxyError::MissingClaim
            | ProxyError::TokenRevoked => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::NoRoute | ProxyError::UnknownModel => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::StaleReplica
            | ProxyError::NoHealthyUpstream
            | ProxyError::JwksUnavailable
            | ProxyError::UpstreamCredentialUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadGateway | ProxyError::ProvidersUnavailable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequestBody | ProxyError::InvalidPath => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"credentialflow\""));
        }
        if matches!(
            self,
            ProxyError::StaleReplica | ProxyError::NoHealthyUpstream | ProxyError::JwksUnavailable
        ) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        }))
    }
}
