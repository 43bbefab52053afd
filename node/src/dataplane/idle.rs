//! An idle timeout for a streamed body: once the response head is forwarded, an upstream
//! that stops sending would otherwise hold the client connection and a worker slot forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

/// The upstream sent nothing for longer than the allowed idle time.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} while streaming the body")]
pub struct Idle(Duration);

/// Ends `inner` with [`Idle`] when no item arrives within `limit` of the previous one.
pub struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<S, T, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: Into<Box<dyn std::error::Error>>,
{
    type Item = Result<T, Box<dyn std::error::Error>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let next = Instant::now() + this.limit;
                this.deadline.as_mut().reset(next);
                Poll::Ready(item.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Idle(this.limit))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_an_error_and_a_lively_one_does_not() {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<u8, std::io::Error>>();
        let mut body = IdleTimeout::new(receiver, Duration::from_secs(5));
        sender.unbounded_send(Ok(1)).expect("send");
        assert!(matches!(body.next().await, Some(Ok(1))));
        tokio::time::advance(Duration::from_secs(4)).await;
        sender.unbounded_send(Ok(2)).expect("send");
        assert!(
            matches!(body.next().await, Some(Ok(2))),
            "4 s apart is within the limit"
        );
        let started = Instant::now();
        assert!(matches!(body.next().await, Some(Err(_))));
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(sender);
    }
}
