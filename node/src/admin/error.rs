//! Admin API errors: one enum, a stable code per variant, one mapping to HTTP status.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use cluster::validate::FieldError;
use cluster::Rejection;
use serde::Serialize;

use crate::cluster_handle::ClusterError;

/// An admin API error, rendered as `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request does not match the schema: {0}")]
    Schema(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("the body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    #[error("invalid id {0:?}")]
    InvalidId(String),
    #[error("a valid admin token is required: Authorization: Bearer <token>")]
    Unauthorized,
    #[error("the {role} role may not do this")]
    Forbidden { role: &'static str },
    #[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Rejected(Rejection),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Returns the stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Schema(_) | ApiError::Validation(_) => "validation_failed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Rejected(rejection) => rejection.code(),
            ApiError::Cluster(error) => match error {
                ClusterError::NoLeader => "not_leader_unavailable",
                ClusterError::OutcomeUnknown(_) => "outcome_unknown",
                ClusterError::MembershipRefused(_) => "membership_change_refused",
                ClusterError::CatchUpTimeout { .. } => "catch_up_timeout",
                ClusterError::NotMember { .. } => "not_found",
                ClusterError::Unavailable(_) => "unavailable",
            },
            ApiError::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<FieldDetail<'a>>>,
}

#[derive(Serialize)]
struct FieldDetail<'a> {
    field: &'a str,
    reason: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::Schema(_)
            | ApiError::Validation(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidId(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Rejected(rejection) => match rejection {
                Rejection::KeyNotFound { .. }
                | Rejection::RouteNotFound { .. }
                | Rejection::TenantNotFound { .. }
                | Rejection::AdminTokenNotFound { .. }
                | Rejection::ProviderNotFound { .. } => StatusCode::NOT_FOUND,
                Rejection::Invalid { .. } => StatusCode::BAD_REQUEST,
                Rejection::KeyExists { .. }
                | Rejection::SecretCollision
                | Rejection::KeyRevoked { .. }
                | Rejection::KeyExpired { .. } => StatusCode::CONFLICT,
            },
            ApiError::Cluster(error) => match error {
                ClusterError::NoLeader | ClusterError::OutcomeUnknown(_) | ClusterError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ClusterError::MembershipRefused(_) => StatusCode::CONFLICT,
                ClusterError::CatchUpTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                ClusterError::NotMember { .. } => StatusCode::NOT_FOUND,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            ApiError::Validation(problems) => Some(
                problems
                    .iter()
                    .map(|p| FieldDetail {
                        field: &p.field,
                        reason: &p.reason,
                    })
                    .collect(),
            ),
            _ => None,
        };
        let message = match self {
            ApiError::Validation(problems) => problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.reason))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"credentialflow-admin\""));
        }
        if let ApiError::TooManyAttempts { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response.json(Body {
            error: Detail {
                code: self.code(),
                message,
                details,
            },
        })
    }
}
