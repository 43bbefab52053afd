//! Headers that describe one connection rather than the message (RFC 9110 §7.6.1): the
//! proxy drops them in both directions, with any the sender lists in `Connection`.

/// Returns whether `name` (lower case) is hop-by-hop by definition.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection"
            | b"keep-alive"
            | b"proxy-connection"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
    )
}

/// Whether a header the gateway is configured to send (a route's header, its upstream
/// credential, a forwarded claim; `name` in lower case) may go upstream: what concerns only
/// the connection, and how the body is delimited, are the gateway's alone to say. Checked
/// when routes compile, not per request.
pub fn is_configurable(name: &[u8]) -> bool {
    !is_hop_by_hop(name) && name != b"content-length"
}

/// [`is_hop_by_hop`] for a field name in any case.
fn is_hop_by_hop_token(token: &[u8]) -> bool {
    // Longer than every hop-by-hop name.
    let mut lower = [0u8; 20];
    let Some(lower) = lower.get_mut(..token.len()) else {
        return false;
    };
    for (to, from) in lower.iter_mut().zip(token) {
        *to = from.to_ascii_lowercase();
    }
    is_hop_by_hop(lower)
}

/// Returns whether `name` (lower case) is listed in the `Connection` header `values`, that
/// is, declared hop-by-hop by the sender.
pub fn listed_in_connection<'a>(values: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> bool {
    tokens(values).any(|token| token.eq_ignore_ascii_case(name))
}

/// Which of a message's fields stay on this hop: the hop-by-hop ones, and those its
/// `Connection` header values (read afresh through `values`) list.
pub struct HopByHop<F> {
    values: F,
    /// Whether the list names any field that is not hop-by-hop already. Nearly every message
    /// says only `keep-alive` (or nothing): then no field needs checking against the list,
    /// which spares a scan of it for every field of the message.
    names_fields: bool,
}

impl<'a, F, I> HopByHop<F>
where
    F: Fn() -> I,
    I: Iterator<Item = &'a [u8]>,
{
    pub fn new(values: F) -> Self {
        let names_fields = tokens(values()).any(|token| !token.is_empty() && !is_hop_by_hop_token(token));
        Self { values, names_fields }
    }

    /// Returns whether the field `name` (lower case) must not be relayed.
    pub fn drops(&self, name: &[u8]) -> bool {
        is_hop_by_hop(name) || (self.names_fields && listed_in_connection((self.values)(), name))
    }
}

/// The comma-separated tokens of `Connection` header values, trimmed.
fn tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values.flat_map(|value| value.split(|&b| b == b',').map(<[u8]>::trim_ascii))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lists_name_hop_by_hop_headers_in_any_case() {
        let values: [&[u8]; 2] = [b"keep-alive, X-Trace", b"close"];
        assert!(listed_in_connection(values.into_iter(), b"x-trace"));
        assert!(listed_in_connection(values.into_iter(), b"close"));
        assert!(!listed_in_connection(values.into_iter(), b"x-other"));
    }

    #[test]
    fn only_a_connection_list_naming_other_fields_needs_checking() {
        let names_fields = |values: &[&[u8]]| HopByHop::new(|| values.iter().copied()).names_fields;
        assert!(!names_fields(&[b"keep-alive", b"Keep-Alive, TE"]));
        assert!(!names_fields(&[]));
        assert!(names_fields(&[b"keep-alive, X-Trace"]));
        // `close` is an option, but a field of that name would still be listed.
        assert!(names_fields(&[b"close"]));
    }

    #[test]
    fn fields_are_dropped_when_hop_by_hop_or_listed() {
        let values: [&[u8]; 2] = [b"keep-alive", b"X-Trace , close"];
        let hop = HopByHop::new(|| values.iter().copied());
        for dropped in ["x-trace", "close", "keep-alive", "te", "upgrade"] {
            assert!(hop.drops(dropped.as_bytes()), "{dropped}");
        }
        assert!(!hop.drops(b"x-other"));
        let none: [&[u8]; 0] = [];
        let hop = HopByHop::new(|| none.iter().copied());
        assert!(hop.drops(b"transfer-encoding"));
        assert!(!hop.drops(b"x-trace"));
    }

    #[test]
    fn end_to_end_headers_are_not_hop_by_hop() {
        assert!(is_hop_by_hop(b"transfer-encoding"));
        assert!(!is_hop_by_hop(b"content-type"));
        assert!(!is_hop_by_hop(b"x-request-id"));
    }
}
