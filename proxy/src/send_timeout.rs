//! nginx's `send_timeout`: a client that takes no bytes of an answer for that long (the
//! socket's send buffer stays full, so a write cannot go on) has its connection closed,
//! as nginx closes it ("client timed out while sending response to client"). The
//! timeout runs only while a write waits, and starts again after every write that goes
//! on, so a slow reader that keeps reading is served however long the answer takes. It
//! holds a connection, and the upstream connection of its answer, no longer than that.
//!
//! An HTTP/2 stream whose window the client keeps closed writes nothing (the
//! connection's other streams go on), so it has a timeout of its own:
//! [`crate::h2_send_timeout`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stall_timer::StallTimer;

/// A connection's IO whose writes give up after `timeout` without progress (a
/// [`StallTimer`]: nothing on the common path but clearing a field).
pub(crate) struct SendTimeout<I> {
    io: I,
    timeout: Duration,
    stall: StallTimer,
}

impl<I> SendTimeout<I> {
    /// `io` with `timeout` (zero: none).
    pub(crate) fn new(io: I, timeout: Duration) -> Self {
        SendTimeout {
            io,
            timeout,
            stall: StallTimer::default(),
        }
    }

    /// `polled`, or a timeout error once a write has waited `timeout`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall.progressed();
            return polled;
        }
        if self.timeout.is_zero() || self.stall.poll_waited(cx, self.timeout).is_pending() {
            return polled;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "client timed out ({:?}, send_timeout) while sending response to client",
                self.timeout
            ),
        )))
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
