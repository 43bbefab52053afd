//! Headers that describe one connection rather than the message (RFC 9110 §7.6.1): the
//! proxy drops them in both directions, with any the sender lists in `Connection`.

/// Returns whether `name` (lower case) is hop-by-hop by definition.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Returns whether `name` (lower case) is listed in the `Connection` header `values`, that
/// is, declared hop-by-hop by the sender.
pub fn listed_in_connection<'a>(mut values: impl Iterator<Item = &'a [u8]>, name: &str) -> bool {
    values.any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lists_name_hop_by_hop_headers_in_any_case() {
        let values: [&[u8]; 2] = [b"keep-alive, X-Trace", b"close"];
        assert!(listed_in_connection(values.into_iter(), "x-trace"));
        assert!(listed_in_connection(values.into_iter(), "close"));
        assert!(!listed_in_connection(values.into_iter(), "x-other"));
    }

    #[test]
    fn end_to_end_headers_are_not_hop_by_hop() {
        assert!(is_hop_by_hop("transfer-encoding"));
        assert!(!is_hop_by_hop("content-type"));
        assert!(!is_hop_by_hop("x-request-id"));
    }
}
