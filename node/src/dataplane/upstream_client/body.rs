//! A response body streamed from its connection as the client takes it; once the body has
//! been read to its end, the connection goes back to the pool.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::Stream;

use super::chunked::{ChunkedDecoder, Decoded};
use super::conn::Conn;
use super::pool::Pool;

/// How the rest of the body is delimited.
pub enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// The body of one response, read from its connection on demand.
pub struct BodyStream {
    conn: Option<Conn>,
    remaining: Remaining,
    keep_alive: bool,
    pool: Rc<Pool>,
}

impl BodyStream {
    pub fn new(conn: Conn, remaining: Remaining, keep_alive: bool, pool: Rc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            remaining,
            keep_alive,
            pool,
        }
    }

    /// The body ended cleanly: its connection may serve the next request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive {
                self.pool.put(conn);
            }
        }
    }

    /// The next piece of the body already read, or `None` if more must be read first.
    fn next_buffered(&mut self) -> Option<Option<io::Result<Bytes>>> {
        let conn = self.conn.as_mut()?;
        match &mut self.remaining {
            Remaining::Length(0) => {
                self.finish();
                Some(None)
            }
            Remaining::Length(left) => {
                if conn.buf.is_empty() {
                    return None;
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                let data = conn.buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.finish();
                }
                Some(Some(Ok(data)))
            }
            Remaining::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => Some(Some(Ok(data))),
                Ok(Decoded::Done) => {
                    self.finish();
                    Some(None)
                }
                Ok(Decoded::NeedMore) => None,
                Err(error) => {
                    self.conn = None;
                    Some(Some(Err(io::Error::new(io::ErrorKind::InvalidData, error))))
                }
            },
            Remaining::UntilClose => (!conn.buf.is_empty()).then(|| Some(Ok(conn.buf.split().freeze()))),
        }
    }
}

impl Stream for BodyStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.next_buffered() {
                return Poll::Ready(item);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(match this.remaining {
                        Remaining::UntilClose => None,
                        _ => Some(Err(io::ErrorKind::UnexpectedEof.into())),
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}
