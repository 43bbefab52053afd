use super::*;

fn served(head: &[u8]) -> Head {
    match examine(head) {
        Ok(Some(head)) => head,
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(head)),
        Err(Declined) => panic!("declined: {:?}", String::from_utf8_lossy(head)),
    }
}

fn declined(head: &[u8]) -> bool {
    matches!(examine(head), Err(Declined))
}

#[test]
fn a_plain_request_is_served_with_its_target_and_headers() {
    let raw =
        b"GET /v1/things?page=2 HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer k\r\n\r\nGET /next";
    let head = served(raw);
    assert_eq!(head.length, raw.len() - b"GET /next".len());
    assert_eq!(head.method, Method::GET);
    assert_eq!(&raw[head.target], b"/v1/things?page=2");
    assert_eq!(
        head.headers.get("host").map(HeaderValue::as_bytes),
        Some(&b"api.example"[..])
    );
    assert_eq!(head.headers.len(), 2);
}

#[test]
fn an_incomplete_head_waits_for_more() {
    assert!(matches!(examine(b"GET / HTTP/1.1\r\nHost: a"), Ok(None)));
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
    let head = served(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n");
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
