//! Reading an upstream's response head: its status, the headers the client may see, and
//! how the body after it is framed (RFC 9112 §6.3).

use std::mem::MaybeUninit;
use std::ops::Range;

use actix_web::http::StatusCode;
use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::dataplane::hop_by_hop::{listed_in_connection, HopByHop};
use crate::dataplane::incoming::{lower_case_names, Field, FieldIter, Headers};

/// Longest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields one response head may carry.
const MAX_HEADERS: usize = 128;

/// How the body after a head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows the head.
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunked coding, ended by its last chunk.
    Chunked,
    /// The body ends when the upstream closes the connection.
    UntilClose,
}

/// A parsed final (non-1xx) response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The head as received, with its field names lower-cased; `fields` are spans of it.
    raw: Bytes,
    /// The end-to-end fields: without hop-by-hop ones, those `Connection` lists, and the
    /// framing headers (`Content-Length`, `Transfer-Encoding`), which the proxy sets anew.
    /// Kept as spans so that relaying a field costs a copy of its bytes and nothing more.
    fields: Vec<Field>,
    /// The length the upstream announced, kept for the answer to a HEAD request.
    pub content_length: Option<u64>,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body is read.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The end-to-end headers as (lower-case name, value), in the order received. A name
    /// is a token (RFC 9110 §5.1), a value holds no control character other than tab.
    pub fn headers(&self) -> FieldIter<'_> {
        Headers::Spans {
            buf: &self.raw,
            fields: &self.fields,
        }
        .iter()
    }
}

/// The upstream's answer cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the response head is malformed: {0}")]
    Malformed(httparse::Error),
    #[error("the response head is longer than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the response's Content-Length is invalid")]
    BadLength,
    #[error("the upstream switched protocols, which the proxy does not relay")]
    SwitchingProtocols,
}

/// What one parse of a complete head found.
struct Parsed {
    length: usize,
    code: u16,
    http11: bool,
    /// The end-to-end fields (see [`ResponseHead::fields`]).
    fields: Vec<Field>,
    content_length: Option<u64>,
    chunked: Option<bool>,
    close: bool,
}

/// Parses the head at the start of `buf`, removing it from `buf`. Returns `Ok(None)` while
/// the head is incomplete. Informational (1xx) heads are consumed and skipped.
/// `head_request`: the request was HEAD, so no body follows whatever the head announces.
pub fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        let Some(parsed) = parse_one(buf)? else {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        };
        if parsed.code == 101 {
            return Err(HeadError::SwitchingProtocols);
        }
        if parsed.code < 200 {
            buf.advance(parsed.length);
            continue;
        }
        let status =
            StatusCode::from_u16(parsed.code).map_err(|_| HeadError::Malformed(httparse::Error::Status))?;
        let raw = buf.split_to(parsed.length).freeze();
        let no_body = head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = match (no_body, parsed.chunked, parsed.content_length) {
            (true, _, _) => Framing::Empty,
            (false, Some(true), _) => Framing::Chunked,
            (false, Some(false), _) | (false, None, None) => Framing::UntilClose,
            (false, None, Some(0)) => Framing::Empty,
            (false, None, Some(length)) => Framing::Length(length),
        };
        // A body framed by closing cannot share its connection, and a message carrying both
        // framings is suspect (RFC 9112 §6.3): its connection is not reused either.
        let keep_alive = parsed.http11
            && !parsed.close
            && framing != Framing::UntilClose
            && !(parsed.chunked.is_some() && parsed.content_length.is_some());
        return Ok(Some(ResponseHead {
            status,
            raw,
            fields: parsed.fields,
            content_length: parsed.content_length,
            framing,
            keep_alive,
        }));
    }
}

/// Parses one head without consuming it; a complete head's field names are lower-cased in
/// place.
fn parse_one(buf: &mut [u8]) -> Result<Option<Parsed>, HeadError> {
    let mut fields = Vec::new();
    let (length, code, http11) = {
        // Left uninitialised: the parser writes only the slots it fills, and clearing all
        // 128 (4 KB) for every answer is work for nothing.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(HeadError::Malformed(error)),
        };
        let code = response
            .code
            .ok_or(HeadError::Malformed(httparse::Error::Status))?;
        fields.reserve_exact(response.headers.len());
        fields.extend(response.headers.iter().map(|field| Field::of(buf, field)));
        (length, code, response.version == Some(1))
    };
    lower_case_names(buf, &fields);
    let buf = &*buf;
    let text = |range: &Range<usize>| buf.get(range.clone()).unwrap_or_default();
    let connection: SmallVec<[&[u8]; 2]> = fields
        .iter()
        .filter(|field| text(&field.name) == b"connection")
        .map(|field| text(&field.value))
        .collect();
    let close = listed_in_connection(connection.iter().copied(), b"close");
    let hop_by_hop = HopByHop::new(|| connection.iter().copied());
    let mut content_length = None;
    let mut chunked = None;
    let mut bad_length = false;
    // Only the end-to-end fields stay.
    fields.retain(|field| {
        let (name, value) = (text(&field.name), text(&field.value));
        match name {
            b"content-length" => {
                match parse_length(value) {
                    Some(length) if content_length.is_none_or(|earlier| earlier == length) => {
                        content_length = Some(length)
                    }
                    _ => bad_length = true,
                }
                false
            }
            b"transfer-encoding" => {
                // The last coding decides; a later field overrides an earlier one.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                false
            }
            _ => !hop_by_hop.drops(name),
        }
    });
    if bad_length {
        return Err(HeadError::BadLength);
    }
    Ok(Some(Parsed {
        length,
        code,
        http11,
        fields,
        content_length,
        chunked,
        close,
    }))
}

/// Parses a Content-Length value: decimal digits only (a list of equal values, which some
/// servers send, is accepted as one).
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut lengths = value.split(|&b| b == b',').map(|part| {
        let digits = part.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
    });
    let first = lengths.next()??;
    lengths.all(|l| l == Some(first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], head_request: bool) -> Result<Option<ResponseHead>, HeadError> {
        parse(&mut BytesMut::from(input), head_request)
    }

    fn header<'a>(head: &'a ResponseHead, name: &str) -> Option<&'a [u8]> {
        head.headers()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    #[test]
    fn a_head_is_parsed_and_removed_from_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"[..],
        );
        let head = parse(&mut buf, false).expect("valid").expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(header(&head, "content-type"), Some(&b"text/plain"[..]));
        assert_eq!(header(&head, "x-a"), Some(&b"1"[..]));
        assert_eq!(header(&head, "content-length"), None);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_leaves_the_buffer_alone() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse(&mut buf, false).expect("valid").is_none());
        assert_eq!(buf.len(), 27);
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Big: "[..]);
        huge.extend_from_slice(&vec![b'a'; MAX_HEAD_BYTES]);
        assert_eq!(parse(&mut huge, false).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn informational_heads_are_skipped() {
        let head = parse_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(header(&head, "link"), None);
        assert_eq!(
            parse_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\n", false).err(),
            Some(HeadError::SwitchingProtocols)
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |input: &[u8], head_request| {
            let head = parse_all(input, head_request).expect("valid").expect("complete");
            (head.framing, head.keep_alive)
        };
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (Framing::Chunked, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false),
            (Framing::Length(2), false)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            (Framing::Length(2), false)
        );
        let head = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.content_length, Some(7));
    }

    #[test]
    fn connection_level_headers_never_reach_the_client() {
        let (names, keep_alive) = relayed(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(names, ["x-end"]);
        assert!(keep_alive);
    }

    /// The names of the headers relayed from a complete head, and whether its connection
    /// stays open.
    fn relayed(input: &[u8]) -> (Vec<String>, bool) {
        let head = parse_all(input, false).expect("valid").expect("complete");
        let names = head
            .headers()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect();
        (names, head.keep_alive)
    }

    #[test]
    fn a_field_named_by_a_closing_connection_is_dropped_too() {
        let (names, keep_alive) = relayed(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: 1\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(names, ["x-end"]);
        assert!(!keep_alive);
    }

    #[test]
    fn bad_lengths_and_malformed_heads_are_errors() {
        for input in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(
                parse_all(input, false).err(),
                Some(HeadError::BadLength),
                "{input:?}"
            );
        }
        let same = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        assert_eq!(same.framing, Framing::Length(4));
        assert!(matches!(
            parse_all(b"HTTP/1.1 2000 OK\r\n\r\n", false),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"garbage\r\n\r\n", false),
            Err(HeadError::Malformed(_))
        ));
    }
}
