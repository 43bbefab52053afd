//! One keep-alive connection to a target, with the bytes read from it but not yet used.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Free buffer space below which a read first grows the buffer.
const MIN_READ_SPACE: usize = 4 * 1024;
/// How much a read buffer grows by.
const READ_CHUNK: usize = 16 * 1024;
/// Longest time to establish a TCP connection to a target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How [`Conn::write_unless_target_speaks`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    All,
    /// The target sent bytes before the write was done; what is left is still in the buffer.
    TargetSpoke,
    /// The target closed the connection before the write was done.
    TargetClosed,
}

/// A TCP connection to one target.
pub struct Conn {
    stream: TcpStream,
    /// Read from the connection and not yet consumed. Empty whenever the connection idles.
    pub buf: BytesMut,
    /// The target's `host:port`, which the pool files the connection under.
    pub authority: Arc<str>,
    /// When the connection last went idle.
    pub idle_since: Instant,
    /// Whether the connection has carried a request before the current one.
    pub reused: bool,
}

impl Conn {
    /// Opens a connection to `authority` (`host:port`, names resolved by the system).
    pub async fn connect(authority: &Arc<str>) -> io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**authority))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            authority: authority.clone(),
            idle_since: Instant::now(),
            reused: false,
        })
    }

    /// Reads what the connection has into `buf`; `Ok(0)` means the peer closed it.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_READ_SPACE {
            self.buf.reserve(READ_CHUNK);
        }
        // `poll_read`, unlike `try_read_buf`, takes a read that did not fill the buffer as
        // proof that the socket is drained; the next poll then waits for the kernel's word
        // instead of spending a system call on `EAGAIN` (one per proxied request).
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// [`Conn::poll_fill`] as a future.
    pub async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes all of `bytes` (vectored, when they are several pieces) unless the target
    /// sends something first, which is then in `buf`: a target may answer (a 413, say)
    /// before it has read the whole request, and stop reading, so a write that waited for
    /// room would wait forever.
    pub async fn write_unless_target_speaks(&mut self, bytes: &mut impl Buf) -> io::Result<Written> {
        poll_fn(|cx| loop {
            if let Poll::Ready(filled) = self.poll_fill(cx) {
                return Poll::Ready(filled.map(|read| match read {
                    0 => Written::TargetClosed,
                    _ => Written::TargetSpoke,
                }));
            }
            if !bytes.has_remaining() {
                return Poll::Ready(Ok(Written::All));
            }
            match tokio_util::io::poll_write_buf(Pin::new(&mut self.stream), cx, bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}
