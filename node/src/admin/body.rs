//! The JSON body extractor of the admin API: size-limited, content-type checked, and every
//! failure an [`ApiError`] with a stable code.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// A JSON body of type `T`. An empty body reads as `{}`, so bodies whose fields are all
/// optional may be omitted.
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for AdminJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_headers(req);
        let mut payload = payload.take();
        Box::pin(async move {
            checked?;
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::InvalidJson(e.to_string()))?;
                if body.len() + chunk.len() > MAX_ADMIN_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge {
                        limit: MAX_ADMIN_BODY_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(AdminJson)
        })
    }
}

fn check_headers(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let essence = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_ADMIN_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_ADMIN_BODY_BYTES,
        });
    }
    Ok(())
}

/// Parses a body; syntax errors are `invalid_json`, schema errors `validation_failed`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ApiError::Schema(error.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson(error.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            parse::<Example>(b"{\"name\":"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(parse::<Example>(b"nope"), Err(ApiError::InvalidJson(_))));
        assert!(matches!(
            parse::<Example>(b"{\"name\":1}"),
            Err(ApiError::Schema(_))
        ));
        assert!(matches!(
            parse::<Example>(b"{\"name\":\"a\",\"x\":1}"),
            Err(ApiError::Schema(_))
        ));
        assert!(matches!(parse::<Example>(b""), Err(ApiError::Schema(_))));
        assert!(parse::<Example>(b"{\"name\":\"a\"}").is_ok());
    }
}
