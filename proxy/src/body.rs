//! Body types: [`ProxyBody`], the body of every response the proxy sends, and
//! [`ClientBody`], a client's request body on its way upstream, streamed: when it goes wrong (bad
//! chunked encoding, shorter than its `Content-Length`, over `client_max_body_size`, no
//! bytes for `client_body_timeout`), the upstream request fails too, and [`BodyFault`]
//! tells [`crate::route`] that the client is to blame: a 400, 413 or 408 for the client,
//! and no mark against the upstream server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::balance::BodyError;

/// The body type of every response the proxy sends (an error ends it as cut short: no
/// last chunk for HTTP/1.1, RST_STREAM for HTTP/2).
pub(crate) type ProxyBody = BoxBody<Bytes, BodyError>;

/// Whether an answer of `status` has no body whatever its headers say (1xx, 204, 304;
/// RFC 9112 §6.3).
pub(crate) fn bodyless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// What went wrong with the client's body, shared between the body and the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyFault(Arc<AtomicU8>);

const NONE: u8 = 0;
const MALFORMED: u8 = 1;
const TOO_LARGE: u8 = 2;
const TIMEOUT: u8 = 3;

impl BodyFault {
    /// The status for the client when its body failed (None: it did not).
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self.0.load(Ordering::Acquire) {
            MALFORMED => Some(StatusCode::BAD_REQUEST),
            TOO_LARGE => Some(StatusCode::PAYLOAD_TOO_LARGE),
            TIMEOUT => Some(StatusCode::REQUEST_TIMEOUT),
            _ => None,
        }
    }

    fn set(&self, fault: u8) {
        let _ = self
            .0
            .compare_exchange(NONE, fault, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// A client's request body as hyper gives it, and what happens when it is dropped
/// before its end (the answer was made without reading it all: a 413, a 403, a
/// `return`): on HTTP/2 the stream is then reset (`RST_STREAM(NO_ERROR)`, RFC 9113
/// §8.1). Dropped at once, the reset leaves in the same write as the answer, and a
/// client still sending (curl 7.88) takes the stream for closed before it reads the
/// answer; so the body is kept [`RESET_AFTER`] longer, and the reset follows the answer
/// as nginx's does.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    http2: bool,
}

/// How long an HTTP/2 request body dropped before its end is kept (see [`RequestBody`]).
const RESET_AFTER: Duration = Duration::from_millis(100);

impl RequestBody {
    /// The body of a request of `version`.
    pub(crate) fn new(inner: Incoming, version: http::Version) -> Self {
        RequestBody {
            inner: Some(inner),
            http2: version == http::Version::HTTP_2,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// HTTP/1.1: the most of a body left unread by its answer that is read and dropped so
/// that the connection goes on (nginx's `ngx_http_discard_request_body`), and how long
/// that reading may wait for a byte. A longer body, or a client that stops sending,
/// closes the connection (with the lingering close) instead.
const DISCARD_MAX: u64 = 1 << 20;
const DISCARD_IDLE: Duration = Duration::from_secs(5);

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.http2 {
            runtime.spawn(async move {
                tokio::time::sleep(RESET_AFTER).await;
                drop(inner);
            });
        } else if inner.size_hint().upper().is_none_or(|n| n <= DISCARD_MAX) {
            // The answer (a `return`, an error page, an upstream's early answer) goes
            // out meanwhile; the requests pipelined after the body are served after it.
            runtime.spawn(discard(inner));
        }
    }
}

/// Read an HTTP/1.1 request body to its end and drop it (see [`DISCARD_MAX`]).
async fn discard(mut body: Incoming) {
    use http_body_util::BodyExt;
    let mut read = 0u64;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(DISCARD_IDLE, body.frame()).await {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > DISCARD_MAX {
            return;
        }
    }
}

/// Why the body ended early (the error the upstream request sees).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// The client's framing was wrong or the connection ended.
    #[error("client sent an invalid request body")]
    Malformed(#[source] hyper::Error),
    /// More than `client_max_body_size`.
    #[error("client sent a body over client_max_body_size ({0} bytes)")]
    TooLarge(u64),
    /// No bytes for `client_body_timeout`.
    #[error("client_body_timeout: no body bytes for {0:?}")]
    Timeout(Duration),
}

/// The client's body, limited and timed, recording its faults.
pub(crate) struct ClientBody {
    inner: RequestBody,
    fault: BodyFault,
    max: Option<u64>,
    seen: u64,
    timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl ClientBody {
    /// Wrap `inner`: at most `max` bytes, and at most `timeout` between two reads.
    pub(crate) fn new(
        inner: RequestBody,
        max: Option<u64>,
        timeout: Duration,
        fault: BodyFault,
    ) -> Self {
        ClientBody {
            inner,
            fault,
            max,
            seen: 0,
            timeout,
            idle: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

// === impl ClientBody ===

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(max) = this.max.filter(|&m| this.seen > m) {
                        this.fault.set(TOO_LARGE);
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge(max).into())));
                    }
                }
                let deadline = tokio::time::Instant::now() + this.timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.set(MALFORMED);
                Poll::Ready(Some(Err(ClientBodyError::Malformed(e).into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.fault.set(TIMEOUT);
                    return Poll::Ready(Some(Err(ClientBodyError::Timeout(this.timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
