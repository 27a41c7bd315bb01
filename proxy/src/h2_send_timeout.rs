//! `send_timeout` for an HTTP/2 stream: a client that keeps a stream's flow-control
//! window shut takes no bytes of its answer, while the connection's other streams (and
//! its socket) go on, so [`crate::send_timeout`] never sees a write wait.
//!
//! hyper sends a stream's body by taking one chunk of it and then waiting for window
//! capacity, and takes the next chunk only once that one is sent: while the window
//! stays shut the body is not polled at all, and so cannot time itself out. Here the
//! body notes when it handed a chunk over and when it was polled again; a watchdog task,
//! started with the first chunk of a body that has more to come, checks the gap. When a
//! chunk has waited `send_timeout` for the client, the rest of the body is dropped
//! there: the upstream connection it was reading closes and the upstream is free (as
//! nginx finalizes such a request: "client timed out"), and the stream is reset when
//! hyper next polls the body (the client opens its window) or when the connection ends.
//! The stream holds at most the one chunk hyper has until then.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::balance::BodyError;
use crate::body::ProxyBody;

/// The answer's body, or why it is gone; shared with the watchdog.
struct Shared {
    /// `None` once the watchdog cut it off.
    body: Option<ProxyBody>,
    /// Since when a chunk handed to hyper waits for the client (`None`: hyper is
    /// waiting for the body, or the body is complete).
    waiting_since: Option<Instant>,
    /// The body ended (or the stream was dropped): the watchdog stops.
    done: bool,
}

/// An HTTP/2 response body under `send_timeout`; see the module docs.
pub(crate) struct StreamSendTimeout {
    shared: Arc<Mutex<Shared>>,
    timeout: Duration,
    watching: bool,
    /// Ends the watchdog when the stream goes (reset by the client, or its
    /// connection closed) before its deadline.
    gone: Arc<tokio::sync::Notify>,
}

/// The body was dropped because the client kept the stream's window shut.
#[derive(Debug, thiserror::Error)]
#[error(
    "client timed out ({0:?}, send_timeout) while sending response to client (HTTP/2 stream window shut)"
)]
pub(crate) struct StreamTimedOut(Duration);

impl StreamSendTimeout {
    /// `body` under `timeout` (zero: returned as it is).
    pub(crate) fn wrap(body: ProxyBody, timeout: Duration) -> ProxyBody {
        if timeout.is_zero() || body.is_end_stream() {
            return body;
        }
        http_body_util::BodyExt::boxed(StreamSendTimeout {
            shared: Arc::new(Mutex::new(Shared {
                body: Some(body),
                waiting_since: None,
                done: false,
            })),
            timeout,
            watching: false,
            gone: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Body for StreamSendTimeout {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let timeout = self.timeout;
        let (polled, more) = {
            let mut shared = self.lock();
            // Polled again: the chunk before went out.
            shared.waiting_since = None;
            let Some(body) = shared.body.as_mut() else {
                shared.done = true;
                return Poll::Ready(Some(Err(Box::new(StreamTimedOut(timeout)))));
            };
            let polled = Pin::new(&mut *body).poll_frame(cx);
            let ended = body.is_end_stream();
            match &polled {
                Poll::Ready(Some(Ok(_))) if !ended => {
                    // hyper holds this chunk until the window lets it out.
                    shared.waiting_since = Some(Instant::now());
                }
                Poll::Ready(_) => shared.done = true,
                Poll::Pending => {}
            }
            // Set only for a chunk with more to come.
            (polled, shared.waiting_since.is_some())
        };
        if more && !self.watching {
            self.watching = true;
            tokio::spawn(watch(
                Arc::clone(&self.shared),
                timeout,
                Arc::clone(&self.gone),
            ));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.body.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        // Once cut, what is left of it is unknown (it ends with the error).
        shared
            .body
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl Drop for StreamSendTimeout {
    fn drop(&mut self) {
        // The stream is gone (ended, reset, or its connection closed): the rest of the
        // answer goes now (its upstream connection closes or returns to the pool, the
        // access log line is written), not when the watchdog next wakes, up to
        // `send_timeout` later; dropped outside the lock.
        let body = {
            let mut shared = self.lock();
            shared.done = true;
            shared.body.take()
        };
        drop(body);
        self.gone.notify_one();
    }
}

/// Wake at each chunk's deadline; drop the body once one has waited `timeout`.
async fn watch(shared: Arc<Mutex<Shared>>, timeout: Duration, gone: Arc<tokio::sync::Notify>) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = gone.notified() => return,
        }
        let cut = {
            let mut s = lock();
            if s.done || s.body.is_none() {
                return;
            }
            match s.waiting_since {
                Some(since) if since.elapsed() >= timeout => s.body.take(),
                Some(since) => {
                    deadline = since + timeout;
                    None
                }
                // Waiting for the upstream (its own timeout applies): check again later.
                None => {
                    deadline = Instant::now() + timeout;
                    None
                }
            }
        };
        if let Some(body) = cut {
            tracing::info!(
                timeout = ?timeout,
                "client timed out (send_timeout) while sending response to client: an HTTP/2 stream's window stayed shut; its answer is dropped"
            );
            // Dropped outside the lock: an upstream body closes its connection, and the
            // access log line of the request is written.
            drop(body);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A body of endless chunks that notes when it is dropped.
    struct Endless(Arc<AtomicBool>);

    impl Body for Endless {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_the_client_never_takes_drops_the_body_after_the_timeout() {
        let dropped = Arc::new(AtomicBool::new(false));
        let timeout = Duration::from_secs(60);
        let mut body = StreamSendTimeout::wrap(Endless(Arc::clone(&dropped)).boxed(), timeout);
        // A reader that takes a chunk every 50 s keeps it going (each wait < 60 s).
        for _ in 0..5 {
            body.frame().await.expect("a frame").expect("data");
            tokio::time::sleep(Duration::from_secs(50)).await;
            assert!(!dropped.load(Ordering::SeqCst));
        }
        // Then the window stays shut: the body is dropped 60 s after the last chunk.
        body.frame().await.expect("a frame").expect("data");
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the body is dropped at the timeout"
        );
        // When the stream is polled again it ends with the error (hyper resets it).
        let err = body.frame().await.expect("an error").expect_err("cut");
        assert!(err.to_string().contains("send_timeout"), "{err}");
    }

    /// A stream that goes (reset by the client, or its connection closed) while a chunk
    /// waits lets go of the rest of its answer at once, and its watchdog ends.
    #[tokio::test(start_paused = true)]
    async fn a_stream_dropped_while_waiting_lets_go_of_its_body_at_once() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut body = StreamSendTimeout::wrap(
            Endless(Arc::clone(&dropped)).boxed(),
            Duration::from_secs(60),
        );
        body.frame().await.expect("a frame").expect("data");
        tokio::task::yield_now().await;
        drop(body);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the upstream body is dropped"
        );
        // The watchdog ends too (nothing of it left once it has run).
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(metrics.num_alive_tasks(), 0, "the watchdog ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_or_short_body_starts_no_watchdog() {
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"))
            .map_err(|never| match never {})
            .boxed();
        let mut body = StreamSendTimeout::wrap(body, Duration::from_secs(60));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "hello"
        );
        assert!(body.frame().await.is_none());
    }
}
