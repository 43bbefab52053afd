//! The client against scripted targets on loopback: what it writes, how it frames answers,
//! when it keeps a connection and when it must not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What a scripted target does with each request it reads on a connection.
#[derive(Clone, Copy)]
enum Script {
    /// Answers every request with `answer`, keeping the connection open.
    Answer(&'static [&'static [u8]]),
    /// Answers the first request, then closes without saying so (the keep-alive race).
    AnswerOnceThenClose(&'static [u8]),
    /// Answers every request with a body of this many bytes.
    Sized(usize),
}

/// A target on a free port; counts the connections it accepted.
struct Target {
    authority: Arc<str>,
    accepted: Arc<AtomicUsize>,
}

async fn target(script: Script) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let authority: Arc<str> = listener.local_addr().expect("addr").to_string().into();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, script));
        }
    });
    Target { authority, accepted }
}

/// Reads requests without bodies (up to the blank line) and answers them as scripted.
async fn serve(mut stream: TcpStream, script: Script) {
    let mut buf = Vec::new();
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        buf.drain(..end);
        match script {
            Script::Answer(pieces) => {
                for piece in pieces {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
            }
            Script::AnswerOnceThenClose(answer) => {
                let _ = stream.write_all(answer).await;
                return;
            }
            Script::Sized(length) => {
                let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n").into_bytes();
                answer.resize(answer.len() + length, b'z');
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn get<'a>(authority: &'a Arc<str>, head: &'a [u8]) -> Exchange<'a> {
    Exchange {
        authority,
        head,
        streamed: None,
        head_request: false,
        resend_if_stale: true,
        at: std::time::Instant::now(),
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok";

async fn body_of(response: UpstreamResponse) -> Vec<u8> {
    match response.body {
        ResponseBody::Empty => Vec::new(),
        ResponseBody::Full(bytes) => bytes.to_vec(),
        ResponseBody::Stream(mut stream) => {
            let mut body = Vec::new();
            while let Some(piece) = stream.next().await {
                body.extend_from_slice(&piece.expect("body piece"));
            }
            body
        }
    }
}

#[actix_rt::test]
async fn a_kept_alive_connection_carries_the_next_requests() {
    let target = target(Script::Answer(&[OK])).await;
    let client = UpstreamClient::default();
    for _ in 0..3 {
        let response = client.send(get(&target.authority, GET)).await.expect("answer");
        assert_eq!(response.head.status, 200);
        assert_eq!(body_of(response).await, b"ok");
    }
    assert_eq!(target.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.pool.idle_count(), 1);
}

#[actix_rt::test]
async fn a_pooled_connection_the_target_closed_is_replaced_only_when_resending_is_safe() {
    let target = target(Script::AnswerOnceThenClose(OK)).await;
    let client = UpstreamClient::default();
    let first = client.send(get(&target.authority, GET)).await.expect("answer");
    assert_eq!(body_of(first).await, b"ok");
    // The pooled connection is closed by now; an idempotent request goes out again on a
    // new connection.
    let second = client.send(get(&target.authority, GET)).await.expect("resent");
    assert_eq!(body_of(second).await, b"ok");
    assert_eq!(target.accepted.load(Ordering::SeqCst), 2);
    // A request that may not be repeated reports the closed connection instead.
    let mut once = get(&target.authority, GET);
    once.resend_if_stale = false;
    assert!(matches!(client.send(once).await, Err(SendError::Closed)));
    assert_eq!(target.accepted.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn a_chunked_answer_streams_piece_by_piece_and_frees_its_connection() {
    let target = target(Script::Answer(&[
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"7\r\n, world\r\n",
        b"0\r\n\r\n",
    ]))
    .await;
    let client = UpstreamClient::default();
    let response = client.send(get(&target.authority, GET)).await.expect("answer");
    assert_eq!(response.head.framing, Framing::Chunked);
    assert!(matches!(response.body, ResponseBody::Stream(_)));
    assert_eq!(body_of(response).await, b"hello, world");
    assert_eq!(client.pool.idle_count(), 1);
}

#[actix_rt::test]
async fn a_large_answer_streams_and_an_answer_ended_by_close_is_not_pooled() {
    let target_big = target(Script::Sized(100_000)).await;
    let client = UpstreamClient::default();
    let response = client
        .send(get(&target_big.authority, GET))
        .await
        .expect("answer");
    assert!(matches!(response.body, ResponseBody::Stream(_)));
    assert_eq!(body_of(response).await.len(), 100_000);
    assert_eq!(client.pool.idle_count(), 1);

    let until_close = target(Script::AnswerOnceThenClose(b"HTTP/1.1 200 OK\r\n\r\nbye")).await;
    let response = client
        .send(get(&until_close.authority, GET))
        .await
        .expect("answer");
    assert_eq!(body_of(response).await, b"bye");
    assert_eq!(
        client.pool.idle_count(),
        1,
        "only the first target's connection is kept"
    );
}

#[actix_rt::test]
async fn a_head_answer_has_no_body_whatever_its_length_says() {
    let target = target(Script::Answer(&[b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"])).await;
    let client = UpstreamClient::default();
    for _ in 0..2 {
        let mut head = get(&target.authority, b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\n");
        head.head_request = true;
        let response = client.send(head).await.expect("answer");
        assert_eq!(response.head.content_length, Some(9));
        assert!(matches!(response.body, ResponseBody::Empty));
    }
    assert_eq!(target.accepted.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn a_malformed_answer_is_an_error_and_its_connection_is_dropped() {
    let target = target(Script::Answer(&[
        b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
    ]))
    .await;
    let client = UpstreamClient::default();
    let error = client.send(get(&target.authority, GET)).await.err();
    assert!(matches!(error, Some(SendError::Head(HeadError::BadLength))));
    assert_eq!(client.pool.idle_count(), 0);
}

#[actix_rt::test]
async fn a_refused_connection_is_reported_as_never_reaching_the_target() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let authority: Arc<str> = listener.local_addr().expect("addr").to_string().into();
    drop(listener);
    let client = UpstreamClient::default();
    let error = client.send(get(&authority, GET)).await.err().expect("refused");
    assert!(error.is_connect(), "{error}");
}

#[actix_rt::test]
async fn probes_report_the_status_and_fail_on_silence() {
    let target = target(Script::Answer(&[
        b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n",
    ]))
    .await;
    let client = UpstreamClient::default();
    let url = format!("http://{}/health?deep=1", target.authority);
    assert_eq!(client.probe(&url, Duration::from_secs(5)).await, Some(503));

    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/health", silent.local_addr().expect("addr"));
    assert_eq!(client.probe(&url, Duration::from_millis(200)).await, None);
}
