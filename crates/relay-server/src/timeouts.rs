//! The header-read timeout of both ports (`RELAY_HEADER_READ_TIMEOUT`).
//!
//! Two parts, because hyper's own timeout starts only once the HTTP version is known:
//!
//! - [`FirstByteDeadline`], an acceptor: from the TCP accept, the TLS handshake (when TLS is
//!   on) and the first request byte must arrive within the timeout. Without it a client
//!   that connects and says nothing holds its socket and task for ever (axum-server reads
//!   the first bytes to tell HTTP/1 from HTTP/2 with no deadline).
//! - hyper's HTTP/1 `header_read_timeout` ([`configure`]): the whole request head must then
//!   arrive within the timeout. hyper restarts it when a keep-alive connection waits for its
//!   next request, so it is also the idle keep-alive limit.

use axum_server::accept::Accept;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Set hyper's HTTP/1 header-read timeout (and the timer it needs) on a server's builder.
pub fn configure(builder: &mut Builder<TokioExecutor>, header_read_timeout: Duration) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_read_timeout));
}

/// An acceptor wrapper: the inner accept (e.g. a TLS handshake) and the first byte read
/// from the stream must both happen within `timeout` of the accept.
#[derive(Clone, Debug)]
pub struct FirstByteDeadline<A> {
    inner: A,
    timeout: Duration,
}

impl<A> FirstByteDeadline<A> {
    /// Wrap `inner` with a deadline of `timeout`.
    pub fn new(inner: A, timeout: Duration) -> Self {
        FirstByteDeadline { inner, timeout }
    }
}

type AcceptFuture<T, S> = Pin<Box<dyn Future<Output = io::Result<(T, S)>> + Send>>;

impl<I, S, A> Accept<I, S> for FirstByteDeadline<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Deadlined<A::Stream>;
    type Service = A::Service;
    type Future = AcceptFuture<Self::Stream, Self::Service>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let deadline = Instant::now() + self.timeout;
        let accept = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = tokio::time::timeout_at(deadline, accept)
                .await
                .map_err(|_| timed_out())??;
            let deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
            Ok((
                Deadlined {
                    inner: stream,
                    deadline,
                },
                service,
            ))
        })
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no request within the header-read timeout",
    )
}

/// A stream whose reads fail with `TimedOut` if its first byte does not arrive by the
/// deadline; after that byte it is the inner stream.
#[derive(Debug)]
pub struct Deadlined<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlined<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlined<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
