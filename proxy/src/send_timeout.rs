//! nginx's `send_timeout`: a client that takes no bytes of an answer for that long (the
//! socket's send buffer stays full, so a write cannot go on) has its connection closed,
//! as nginx closes it ("client timed out while sending response to client"). The
//! timeout runs only while a write waits, and starts again after every write that goes
//! on, so a slow reader that keeps reading is served however long the answer takes. It
//! holds a connection, and the upstream connection of its answer, no longer than that.
//!
//! An HTTP/2 stream whose window the client keeps closed writes nothing, so it is not
//! covered here (the connection's other streams go on).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection's IO whose writes give up after `timeout` without progress.
///
/// Cheap on the common path: a write that goes on only clears `stalled_since`; a write
/// that waits notes when the wait began (once per wait). One timer per connection, set
/// when it first waits and not moved on progress: when it fires early (a later wait),
/// it is set again for that wait's deadline, so a busy connection costs at most one
/// timer change per `timeout`.
pub(crate) struct SendTimeout<I> {
    io: I,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait began (`None`: the last write went on).
    stalled_since: Option<tokio::time::Instant>,
}

impl<I> SendTimeout<I> {
    /// `io` with `timeout` (zero: none).
    pub(crate) fn new(io: I, timeout: Duration) -> Self {
        SendTimeout {
            io,
            timeout,
            timer: None,
            stalled_since: None,
        }
    }

    /// `polled`, or a timeout error once a write has waited `timeout`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        if self.timeout.is_zero() {
            return polled;
        }
        let since = *self
            .stalled_since
            .get_or_insert_with(tokio::time::Instant::now);
        let deadline = since + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= deadline {
                self.stalled_since = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "client timed out ({:?}, send_timeout) while sending response to client",
                        self.timeout
                    ),
                )));
            }
            // Set for an earlier wait: now for this one.
            timer.as_mut().reset(deadline);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_too_long_fails_and_progress_restarts_the_clock() {
        // A pipe of 16 bytes nobody reads: the second write waits.
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = SendTimeout::new(near, Duration::from_secs(60));
        io.write_all(&[0; 16]).await.expect("fits");
        let stalled = tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            let e = io.write_all(&[0; 16]).await.expect_err("times out");
            (e.kind(), t.elapsed())
        });
        let (kind, after) = stalled.await.expect("task");
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(after, Duration::from_secs(60));
        // A reader that takes a byte now and then keeps the writer going.
        let (near, mut far2) = tokio::io::duplex(4);
        let mut io = SendTimeout::new(near, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 4];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                tokio::io::AsyncReadExt::read_exact(&mut far2, &mut b)
                    .await
                    .expect("read");
            }
        });
        io.write_all(&[1; 40])
            .await
            .expect("each stall is shorter than the timeout");
        drop(far.shutdown().await);
        reader.abort();
    }
}
