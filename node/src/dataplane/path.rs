//! The one form of a request path the data plane matches and forwards.
//!
//! Upstreams normalise paths before routing them (merging slashes, decoding `%61`, dropping
//! `;params`, resolving `..`). If the gateway matched a different spelling than the one the
//! upstream finally serves, `//admin` or `/%61dmin` could reach a keyed route through a
//! public one, or widen a key's scope. So the gateway decodes what is safe to decode,
//! refuses what could be read two ways, and forwards exactly the path it matched.

use std::borrow::Cow;

use super::error::ProxyError;

/// Returns the canonical form of `path`, or refuses it:
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other
///   escapes are kept with upper-case hex;
/// - empty segments (`//`), `.` and `..` segments, `;`, `\`, control characters, and
///   escapes of `/`, `\`, `;`, `%` or control characters are refused.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, ProxyError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(ProxyError::InvalidPath);
    }
    let plain = bytes.iter().all(|&b| b != b'%' && allowed(b));
    let canonical: Cow<'_, str> = if plain {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(decode(bytes)?)
    };
    check_segments(&canonical)?;
    Ok(canonical)
}

fn allowed(byte: u8) -> bool {
    byte > 0x20 && byte < 0x7f && byte != b';' && byte != b'\\'
}

fn decode(bytes: &[u8]) -> Result<String, ProxyError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            if !allowed(byte) {
                return Err(ProxyError::InvalidPath);
            }
            out.push(char::from(byte));
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(ProxyError::InvalidPath)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(ProxyError::InvalidPath)?;
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(value));
        } else if value < 0x20 || value == 0x7f || matches!(value, b'/' | b'\\' | b';' | b'%') {
            return Err(ProxyError::InvalidPath);
        } else {
            out.push('%');
            out.push_str(&format!("{value:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

fn check_segments(path: &str) -> Result<(), ProxyError> {
    let rest = path.as_bytes().get(1..).unwrap_or_default();
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        // A trailing slash is an empty last segment; any other empty segment is `//`.
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return Err(ProxyError::InvalidPath);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass_unchanged_without_copying() {
        for path in [
            "/",
            "/api",
            "/api/v1/users/7",
            "/api/",
            "/a-b_c~d.e",
            "/x:y@z!$&'()*+,=",
        ] {
            assert!(
                matches!(canonical(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_normalised() {
        assert_eq!(canonical("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(canonical("/a%7e%2D").as_deref(), Ok("/a~-"));
        assert_eq!(
            canonical("/name%20with%2bplus").as_deref(),
            Ok("/name%20with%2Bplus")
        );
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for path in [
            "//admin",
            "/api//admin",
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/.%2E/admin",
            "/api/%2fadmin",
            "/api/%5cadmin",
            "/api\\admin",
            "/admin;x",
            "/admin%3bx",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "/%25",
            "relative",
            "",
        ] {
            assert_eq!(canonical(path), Err(ProxyError::InvalidPath), "{path:?}");
        }
    }
}
