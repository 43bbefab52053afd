use super::*;

/// The head at the start of `raw`, with the buffer as examining left it and its fields.
fn served(raw: &[u8]) -> (Head, Vec<u8>, Vec<Field>) {
    let mut buf = raw.to_vec();
    let mut fields = Vec::new();
    match examine(&mut buf, &mut fields) {
        Ok(Some(head)) => (head, buf, fields),
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
        Err(Declined) => panic!("declined: {:?}", String::from_utf8_lossy(raw)),
    }
}

fn declined(raw: &[u8]) -> bool {
    matches!(examine(&mut raw.to_vec(), &mut Vec::new()), Err(Declined))
}

#[test]
fn a_plain_request_is_served_with_its_target_and_headers() {
    let raw =
        b"GET /v1/things?page=2 HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer k\r\n\r\nGET /next";
    let (head, buf, fields) = served(raw);
    assert_eq!(head.length, raw.len() - b"GET /next".len());
    assert_eq!(head.method, Method::GET);
    assert_eq!(&raw[head.target], b"/v1/things?page=2");
    let headers = Headers::Spans {
        buf: &buf,
        fields: &fields,
    };
    assert_eq!(headers.get("host"), Some(&b"api.example"[..]));
    assert_eq!(headers.get("authorization"), Some(&b"Bearer k"[..]));
    let names: Vec<_> = headers.iter().map(|(name, _)| name).collect();
    assert_eq!(names, [&b"host"[..], b"authorization"], "lower-cased, in order");
}

#[test]
fn an_incomplete_head_waits_for_more() {
    let mut buf = b"GET / HTTP/1.1\r\nHost: a".to_vec();
    assert!(matches!(examine(&mut buf, &mut Vec::new()), Ok(None)));
}

#[test]
fn bodies_and_connection_options_go_to_actix() {
    assert!(declined(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
    assert!(declined(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    // Both framings at once is a smuggling attempt; actix refuses it.
    assert!(declined(
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    assert!(declined(
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(declined(
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    ));
    assert!(declined(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(declined(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(declined(b"GET http://elsewhere/ HTTP/1.1\r\n\r\n"));
    assert!(declined(b"CONNECT host:443 HTTP/1.1\r\n\r\n"));
    assert!(declined(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"));
}

#[test]
fn an_empty_body_and_keep_alive_are_served() {
    let (head, _, _) = served(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_eq!(head.method, Method::POST);
}

#[test]
fn too_many_header_fields_go_to_actix() {
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        raw.extend_from_slice(format!("x-field-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert!(declined(&raw));
}
