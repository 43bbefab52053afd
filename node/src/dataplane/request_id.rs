//! The id that ties a request's answer, its upstream request and its log lines together:
//! the caller's `X-Request-Id` when it is sane, else a fresh random one. Held inline, so
//! that giving every request an id costs no allocation.

use std::fmt;

use actix_web::http::header::{HeaderName, HeaderValue};
use rand::RngCore;

use super::incoming::Headers;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller id kept; a longer one is replaced.
const MAX_LEN: usize = 128;

/// A request's id: 1 to 128 visible ASCII characters.
#[derive(Clone)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// Keeps the caller's `X-Request-Id` when it is sane, else makes one.
    pub fn of(headers: Headers<'_>) -> Self {
        headers
            .get(X_REQUEST_ID.as_str())
            .and_then(Self::kept)
            .unwrap_or_else(Self::generated)
    }

    fn kept(value: &[u8]) -> Option<Self> {
        let sane = !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(u8::is_ascii_graphic);
        sane.then(|| {
            let mut bytes = [0; MAX_LEN];
            bytes[..value.len()].copy_from_slice(value);
            Self {
                len: value.len() as u8,
                bytes,
            }
        })
    }

    /// 128 random bits in hex.
    fn generated() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let mut bytes = [0; MAX_LEN];
        for (pair, byte) in bytes.chunks_exact_mut(2).zip(raw) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 15)];
        }
        Self { len: 32, bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The id as a header value, for an answer built by actix.
    pub fn header_value(&self) -> HeaderValue {
        // Visible ASCII only, so always a valid value.
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;

    use super::*;

    fn with_id(value: &[u8]) -> RequestId {
        let mut map = HeaderMap::new();
        map.insert(X_REQUEST_ID, HeaderValue::from_bytes(value).expect("value"));
        RequestId::of(Headers::Map(&map))
    }

    #[test]
    fn a_sane_caller_id_is_kept_and_anything_else_replaced() {
        assert_eq!(with_id(b"abc-123").as_bytes(), b"abc-123");
        let longest = vec![b'a'; MAX_LEN];
        assert_eq!(with_id(&longest).as_bytes(), &longest[..]);
        for insane in [&[b'a'; MAX_LEN + 1][..], b"has space", "caf\u{e9}".as_bytes()] {
            let replaced = with_id(insane);
            assert_eq!(replaced.as_bytes().len(), 32, "{insane:?}");
            assert!(replaced.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }

    #[test]
    fn made_ids_differ() {
        let none = HeaderMap::new();
        let made = RequestId::of(Headers::Map(&none));
        assert_eq!(made.as_bytes().len(), 32);
        assert_ne!(made.as_bytes(), RequestId::of(Headers::Map(&none)).as_bytes());
        assert_eq!(made.header_value().as_bytes(), made.as_bytes());
    }
}
