//! What the data plane reads of a client's request: the parts that decide its route, its
//! caller and the head sent upstream, apart from the HTTP server that parsed it, so that
//! forwarding does not depend on actix-web's request type.

use std::net::IpAddr;
use std::ops::Range;

use actix_http::header::map::Iter as MapIter;
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::HttpRequest;

/// A client's request head as the proxy sees it.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a Method,
    /// The path as received, before it is made canonical.
    pub path: &'a str,
    /// The query string without its `?`; empty when there is none.
    pub query: &'a str,
    pub headers: Headers<'a>,
    /// The client's address, for `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    /// The request came over TLS, for `X-Forwarded-Proto`.
    pub tls: bool,
}

impl<'a> Incoming<'a> {
    /// A HEAD request: its answer carries no body, whatever the head announces.
    pub fn is_head(&self) -> bool {
        *self.method == Method::HEAD
    }

    /// The head of a request actix-web parsed, on a listener that is or is not TLS.
    pub fn of(req: &'a HttpRequest, tls: bool) -> Self {
        Self {
            method: req.method(),
            path: req.path(),
            query: req.query_string(),
            headers: Headers::Map(req.headers()),
            peer: req.peer_addr().map(|addr| addr.ip()),
            tls,
        }
    }
}

/// A request's header fields as whichever front parsed them, with lower-case names. The
/// HTTP/1.1 front's fields stay where they were read: building a map of them for every
/// request cost more than the few lookups a request makes (README, "Proxy against nginx").
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// As actix-web parsed them.
    Map(&'a HeaderMap),
    /// As the HTTP/1.1 front parsed them: where each field is in `buf`, in the order
    /// received. The names are tokens (RFC 9110 §5.1), lower-cased in place, and the
    /// values hold no control characters other than tab.
    Spans { buf: &'a [u8], fields: &'a [Field] },
}

/// Where one header field's name and value are in the buffer they were read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

impl Field {
    /// The place in `buf` of a field `httparse` read from it.
    pub fn of(buf: &[u8], field: &httparse::Header<'_>) -> Self {
        Self {
            name: span_in(buf, field.name.as_bytes()),
            value: span_in(buf, field.value),
        }
    }
}

/// Where `part`, a slice of `buf`, lies in it.
pub fn span_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// Lower-cases the names of `fields` in `buf`, so that looking a field up compares bytes.
pub fn lower_case_names(buf: &mut [u8], fields: &[Field]) {
    for field in fields {
        if let Some(name) = buf.get_mut(field.name.clone()) {
            name.make_ascii_lowercase();
        }
    }
}

impl<'a> Headers<'a> {
    /// The first value of the field `name` (lower case).
    pub fn get(self, name: &str) -> Option<&'a [u8]> {
        match self {
            Headers::Map(map) => map.get(name).map(|value| value.as_bytes()),
            Headers::Spans { buf, fields } => fields
                .iter()
                .find(|field| buf.get(field.name.clone()) == Some(name.as_bytes()))
                .and_then(|field| buf.get(field.value.clone())),
        }
    }

    /// Every value of the field `name` (lower case), in order.
    pub fn get_all(self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(field, _)| *field == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// Every field as (lower-case name, value), in order.
    pub fn iter(self) -> FieldIter<'a> {
        match self {
            Headers::Map(map) => FieldIter::Map(map.iter()),
            Headers::Spans { buf, fields } => FieldIter::Spans(buf, fields.iter()),
        }
    }
}

/// The fields of [`Headers`], in order.
pub enum FieldIter<'a> {
    Map(MapIter<'a>),
    Spans(&'a [u8], std::slice::Iter<'a, Field>),
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            FieldIter::Map(iter) => iter
                .next()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            FieldIter::Spans(buf, iter) => {
                iter.find_map(|field| Some((buf.get(field.name.clone())?, buf.get(field.value.clone())?)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    /// The same fields, once as a map and once as spans of a buffer.
    fn both(pairs: &[(&str, &str)]) -> (HeaderMap, Vec<u8>, Vec<Field>) {
        let mut map = HeaderMap::new();
        let mut buf = Vec::new();
        let mut fields = Vec::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
            let name_at = buf.len();
            buf.extend_from_slice(name.as_bytes());
            let value_at = buf.len();
            buf.extend_from_slice(value.as_bytes());
            fields.push(Field {
                name: name_at..value_at,
                value: value_at..buf.len(),
            });
        }
        (map, buf, fields)
    }

    #[test]
    fn both_forms_answer_alike() {
        let (map, buf, fields) = both(&[("host", "a"), ("connection", "x"), ("connection", "y")]);
        for headers in [
            Headers::Map(&map),
            Headers::Spans {
                buf: &buf,
                fields: &fields,
            },
        ] {
            assert_eq!(headers.get("host"), Some(&b"a"[..]));
            assert_eq!(headers.get("connection"), Some(&b"x"[..]));
            assert_eq!(headers.get("absent"), None);
            let all: Vec<_> = headers.get_all("connection").collect();
            assert_eq!(all, [&b"x"[..], &b"y"[..]]);
            assert_eq!(headers.iter().count(), 3);
        }
    }
}
