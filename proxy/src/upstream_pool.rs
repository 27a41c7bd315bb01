//! Keep-alive connections to upstream servers, driven by the task of the request that
//! uses them.
//!
//! A request checks a connection out of the pool (or connects), and its own task writes
//! the request and reads the response head on it ([`crate::upstream_h1`], hsmgate's own
//! HTTP/1.1 client connection), then, through [`UpstreamResponseBody`], the body as the
//! client is sent it; at the end of the body the connection goes back to the pool, idle
//! and polled by nobody. No task, channel or wake-up sits between a request and its
//! upstream socket. A connection is bound to a request only while it is served, as in
//! nginx's `keepalive` cache (last in, first out; at most `keepalive` idle per server,
//! none kept with 0; dropped after 60 s idle).
//!
//! Taking an idle connection polls it once: one the server has closed (or written to
//! while idle) is dropped there. A request that finds its reused connection closed before
//! any answer is sent again on another when it is idempotent and has no body (as nginx
//! retries a cached connection); a `101` hands the connection to the tunnel.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, SizeHint};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::balance::{BodyError, UpstreamBody};
use crate::stall_timer::StallTimer;
use crate::upstream_h1::{
    Exchange, ExchangeError, Exchanged, Framing, H1Conn, H1Error, Io, LeaveOut, SendPhase,
};
use crate::upstream_stream::{Dial, UpstreamStream, connect_unix, unix_path};

/// How long an idle connection is kept (hyper's client kept them as long).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The connector of a pool: plain TCP, or TLS for `proxy_pass https://` (a Unix socket
/// is connected without it, [`crate::upstream_stream::connect_unix`]).
pub(crate) type Connector = HttpsConnector<Dial>;

/// One upstream connection.
struct Conn {
    h1: H1Conn,
    /// The server's `host:port`: its list in the pool.
    key: String,
    idle_since: Instant,
    /// `proxy_read_timeout` of the request it serves: the wait for the response head,
    /// then between reads of the body. One timer for the connection's life.
    stall: StallTimer,
}

/// A pool of keep-alive connections to the servers of one upstream group (and TLS name);
/// cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// `http` or `https` (what the connector is given to connect).
    scheme: &'static str,
    /// Idle connections kept per server (`keepalive`; 0 keeps none).
    keepalive: usize,
    /// Idle connections by server address (`host:port`), the most recent last.
    idle: Mutex<HashMap<String, Vec<Conn>, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("keepalive", &self.inner.keepalive)
            .finish_non_exhaustive()
    }
}

/// Why a request got no response from its server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (TCP, TLS or the connect timeout).
    #[error("connect error")]
    Connect(#[source] BodyError),
    /// The request failed on its connection.
    #[error("request failed")]
    Request(#[source] H1Error),
    /// The server took none of the request for `proxy_send_timeout`, or sent no
    /// response head within `proxy_read_timeout` (of connecting or of the request's end).
    #[error("timed out ({1:?}) {while_}", while_ = match .0 {
        Stalled::Send => "sending the request",
        Stalled::Read => "waiting for the response",
    })]
    TimedOut(Stalled, Duration),
}

impl SendError {
    /// The server could not be connected to (a request on an established connection
    /// failed otherwise).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }

    /// The server's response head was invalid (nginx's `invalid_header`, for
    /// `proxy_next_upstream`; an `error` otherwise).
    pub(crate) fn is_invalid_head(&self) -> bool {
        matches!(
            self,
            SendError::Request(H1Error::Parse(_) | H1Error::HeadTooLarge | H1Error::Invalid(_))
        )
    }

    /// The connect timeout (`proxy_connect_timeout`) ran out: a timeout, as nginx counts
    /// it (504, `proxy_next_upstream timeout`), not an error.
    pub(crate) fn is_connect_timeout(&self) -> bool {
        let SendError::Connect(e) = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
        while let Some(c) = cause {
            if c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                || c.is::<tokio::time::error::Elapsed>()
            {
                return true;
            }
            cause = c.source();
        }
        false
    }
}

impl UpstreamClient {
    /// A pool connecting through `connector`, keeping at most `keepalive` idle
    /// connections per server.
    pub(crate) fn new(
        connector: Connector,
        keepalive: usize,
        scheme: &'static str,
    ) -> UpstreamClient {
        UpstreamClient {
            inner: Arc::new(Inner {
                connector,
                scheme,
                keepalive,
                idle: Mutex::new(HashMap::default()),
            }),
        }
    }

    /// Send `req` (its URI in origin form: `/path?query`) to the server at `addr`
    /// (`host:port`) and wait for the response head: `timeouts.read`
    /// (`proxy_read_timeout`) bounds connecting and the wait from the request's end to the
    /// head, `timeouts.send` (`proxy_send_timeout`) a wait for the server to take more of
    /// the request. The body of the response keeps
    /// reading the connection; a `Host` is added from `addr` when the request has none.
    pub(crate) async fn request(
        &self,
        addr: &str,
        mut req: Request<UpstreamBody>,
        timeouts: Timeouts,
        leave_out: LeaveOut<'_>,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        let called = tokio::time::Instant::now();
        if !req.headers().contains_key(HOST) {
            let value = HeaderValue::from_str(host_of(addr, self.inner.scheme));
            req.headers_mut()
                .insert(HOST, value.unwrap_or(HeaderValue::from_static("")));
        }
        // An idempotent request without a body can be sent again (once) when a kept
        // connection closes before answering it: the server's keep-alive timeout raced
        // it, as nginx retries a cached connection (the exchange keeps such a request
        // until it is answered, so nothing is copied).
        let mut sent_again = false;
        loop {
            let started = Instant::now();
            let (mut conn, reused) = match self.checkout(addr) {
                Some(conn) => (conn, true),
                // Boxed: connecting is the rare path, and its future (the TCP and TLS
                // connector's) would otherwise make every request's state that much larger.
                None => {
                    match tokio::time::timeout_at(
                        called + timeouts.read,
                        Box::pin(self.connect(addr)),
                    )
                    .await
                    {
                        Ok(conn) => (conn?, false),
                        Err(_) => return Err(SendError::TimedOut(Stalled::Read, timeouts.read)),
                    }
                }
            };
            conn.stall.begin(called);
            let connect_time = match reused {
                true => Duration::ZERO,
                false => started.elapsed(),
            };
            let exchanged = exchange(&mut conn, req, timeouts, leave_out).await;
            match exchanged {
                Ok(Exchanged::Switched(resp, rest)) => {
                    // The connection now carries another protocol: the tunnel's.
                    let switched = Some((conn.h1.into_io(), rest));
                    let resp =
                        resp.map(|()| UpstreamResponseBody::switched(switched, connect_time));
                    return Ok(resp);
                }
                Ok(Exchanged::Head(resp, framing)) => {
                    let pool = Some(self.clone());
                    let resp = resp.map(|()| UpstreamResponseBody {
                        framing,
                        connect_time,
                        load: None,
                        conn: Some(conn),
                        pool,
                        read_timeout: timeouts.read,
                        failed: None,
                        switched: None,
                        received: None,
                    });
                    return Ok(resp);
                }
                Err(Failed::Unsent(r, _)) if reused => {
                    // A kept connection the server closed under us: nothing was written,
                    // so the request goes again (on another kept one, or a new one).
                    req = *r;
                }
                Err(Failed::Sent(e, Some(r)))
                    if e.is_incomplete_message() && reused && !sent_again && idempotent(&r) =>
                {
                    tracing::debug!(error = %e, "kept upstream connection closed before answering: sending the request again");
                    sent_again = true;
                    req = *r;
                }
                Err(Failed::Unsent(_, e) | Failed::Sent(e, _)) => {
                    return Err(SendError::Request(e));
                }
                Err(Failed::TimedOut(which, after)) => {
                    return Err(SendError::TimedOut(which, after));
                }
            }
        }
    }

    /// The most recently idle live connection to `key`, if any.
    fn checkout(&self, key: &str) -> Option<Conn> {
        if self.inner.keepalive == 0 {
            return None;
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        // The oldest first: expired ones are dropped from the front.
        let expired = list
            .iter()
            .take_while(|c| now.duration_since(c.idle_since) >= IDLE_TIMEOUT)
            .count();
        list.drain(..expired);
        while let Some(mut conn) = list.pop() {
            if conn.h1.poll_idle() {
                return Some(conn);
            }
        }
        None
    }

    /// Return a connection whose exchange is complete; dropped (closed) when it cannot
    /// take another request or the server has `keepalive` idle ones already.
    fn checkin(&self, mut conn: Conn) {
        if self.inner.keepalive == 0 || !conn.h1.poll_idle() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match idle.get_mut(conn.key.as_str()) {
            Some(list) => list,
            None => idle.entry(conn.key.clone()).or_default(),
        };
        if list.len() < self.inner.keepalive {
            list.push(conn);
        }
    }

    async fn connect(&self, addr: &str) -> Result<Conn, SendError> {
        if let Some(path) = unix_path(addr) {
            let io = connect_unix(path)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            return Ok(Conn::new(MaybeHttpsStream::Http(io), addr));
        }
        let uri = format!("{}://{addr}/", self.inner.scheme)
            .parse::<Uri>()
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        Ok(Conn::new(io, addr))
    }
}

impl Conn {
    /// A new connection to the server at `addr`.
    fn new(io: MaybeHttpsStream<UpstreamStream>, addr: &str) -> Conn {
        Conn {
            h1: H1Conn::new(Box::new(TokioIo::new(io))),
            key: addr.to_owned(),
            idle_since: Instant::now(),
            stall: StallTimer::default(),
        }
    }
}

/// A request that may be sent again (RFC 9110 §9.2.2).
fn idempotent(req: &Request<UpstreamBody>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// How one exchange failed.
enum Failed {
    /// Before any of the request was written: the request is given back.
    Unsent(Box<Request<UpstreamBody>>, H1Error),
    /// After; with the request when it had no body and got no answer.
    Sent(H1Error, Option<Box<Request<UpstreamBody>>>),
    /// A wait ran out (the connection is not reusable).
    TimedOut(Stalled, Duration),
}

/// Send `req` on `conn` and wait for the response head, each wait bounded by its timeout
/// of `timeouts` (the first counted from when `conn.stall` began).
async fn exchange(
    conn: &mut Conn,
    req: Request<UpstreamBody>,
    timeouts: Timeouts,
    leave_out: LeaveOut<'_>,
) -> Result<Exchanged, Failed> {
    let mut ex = Exchange::new(req, leave_out);
    std::future::poll_fn(|cx| {
        let sent = conn.h1.sent();
        match conn.h1.poll_exchange(cx, &mut ex) {
            Poll::Ready(Ok(head)) => {
                conn.stall.progressed();
                Poll::Ready(Ok(head))
            }
            Poll::Ready(Err(ExchangeError::Unsent(req, e))) => {
                Poll::Ready(Err(Failed::Unsent(req, e)))
            }
            Poll::Ready(Err(ExchangeError::Sent(e, req))) => Poll::Ready(Err(Failed::Sent(e, req))),
            Poll::Pending => {
                // As nginx: `proxy_send_timeout` between two writes the server takes,
                // `proxy_read_timeout` from the request's end to its answer; a wait for
                // the client's body is the client's (`client_body_timeout`).
                if conn.h1.sent() != sent {
                    conn.stall.progressed();
                }
                let (timeout, which) = match conn.h1.send_phase() {
                    SendPhase::Blocked => (timeouts.send, Stalled::Send),
                    SendPhase::Sent => (timeouts.read, Stalled::Read),
                    SendPhase::AwaitingBody => {
                        conn.stall.progressed();
                        return Poll::Pending;
                    }
                };
                match conn.stall.poll_waited(cx, timeout) {
                    Poll::Ready(()) => Poll::Ready(Err(Failed::TimedOut(which, timeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    })
    .await
}

/// An upstream exchange's two timeouts (nginx's `proxy_send_timeout` and
/// `proxy_read_timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) send: Duration,
    pub(crate) read: Duration,
}

/// Which of an exchange's waits ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// The server took none of the request for `proxy_send_timeout`.
    Send,
    /// Connecting, or the answer, for `proxy_read_timeout`.
    Read,
}

/// The body of an upstream response: reading it reads the connection, which goes back
/// to the pool when the body is complete (or is dropped complete).
pub(crate) struct UpstreamResponseBody {
    /// How much is left, and how it is delimited.
    framing: Framing,
    /// None once the body has ended (or failed).
    conn: Option<Conn>,
    pool: Option<UpstreamClient>,
    /// `proxy_read_timeout` between two reads of the body (the connection's timer).
    read_timeout: Duration,
    /// The request counted in progress on its server until the body is read.
    load: Option<crate::balance::Load>,
    /// An error held for one poll (see [`Body::poll_frame`]).
    failed: Option<BodyError>,
    /// After a `101`: the connection, and what its server sent after the head, for the
    /// tunnel to take.
    switched: Option<(Io, Bytes)>,
    /// Where the body's bytes are counted, when something reads the count.
    received: Option<Arc<AtomicU64>>,
    /// How long connecting to the server took (TCP, and TLS for `https://`): zero on a
    /// kept connection (nginx's `$upstream_connect_time`). Carried here rather than in
    /// the response's extensions, which would cost two allocations per response.
    connect_time: Duration,
}

/// The upstream sent nothing of the body for `proxy_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream timed out ({0:?}) while sending the response body")]
pub(crate) struct BodyTimeout(Duration);

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponseBody {
    /// The empty body of a `101`, holding the switched connection.
    fn switched(switched: Option<(Io, Bytes)>, connect_time: Duration) -> UpstreamResponseBody {
        UpstreamResponseBody {
            connect_time,
            framing: Framing::Done,
            conn: None,
            pool: None,
            read_timeout: Duration::ZERO,
            load: None,
            failed: None,
            switched,
            received: None,
        }
    }

    /// How long connecting to the server took (zero on a kept connection).
    pub(crate) fn connect_time(&self) -> Duration {
        self.connect_time
    }

    /// The connection of a `101` and what followed its head (once).
    pub(crate) fn take_switched(&mut self) -> Option<(Io, Bytes)> {
        self.switched.take()
    }

    /// Keeps the request counted on its server (`least_conn`) until the body is read.
    pub(crate) fn hold(&mut self, load: Option<crate::balance::Load>) {
        self.load = load;
    }

    /// Adds the body's bytes to `received` as they come (`$upstream_response_length`).
    pub(crate) fn count_into(&mut self, received: Arc<AtomicU64>) {
        self.received = Some(received);
    }

    /// The body is complete: the connection goes back to the pool if it can be reused.
    fn release(&mut self) {
        self.load = None;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            pool.checkin(conn);
        }
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(conn) = &mut this.conn else {
            return Poll::Ready(None);
        };
        match conn.h1.poll_body(cx, &mut this.framing) {
            Poll::Ready(Some(Ok(frame))) => {
                conn.stall.progressed();
                if let (Some(received), Some(data)) = (&this.received, frame.data_ref()) {
                    received.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.framing == Framing::Done {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                this.load = None;
                // What the client was given of the body goes out before the error ends
                // its answer (hyper's server drops what it holds unwritten at an error):
                // the error waits for the next poll, as nginx sends what it has, then
                // closes.
                this.failed = Some(Box::new(e));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            // nginx's `proxy_read_timeout` between two reads: the body is cut short (the
            // client sees it end early) when the upstream sends nothing of it for so long.
            Poll::Pending => match conn.stall.poll_waited(cx, this.read_timeout) {
                Poll::Ready(()) => {
                    // Not reusable: the rest of the response is still to come.
                    this.conn = None;
                    this.load = None;
                    this.framing = Framing::Done;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout(this.read_timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamResponseBody {
    fn drop(&mut self) {
        // Dropped complete (a body the server never had to poll, such as a HEAD's or a
        // 304's): reusable. Dropped before its end: the connection closes.
        if self.is_end_stream() {
            self.release();
        }
    }
}

/// The `Host` of a request to `addr` (`host:port`): without the scheme's default port.
fn host_of<'a>(addr: &'a str, scheme: &str) -> &'a str {
    let default = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    addr.strip_suffix(default).unwrap_or(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_leaves_out_the_default_port() {
        assert_eq!(host_of("app:80", "http"), "app");
        assert_eq!(host_of("app:8080", "http"), "app:8080");
        assert_eq!(host_of("app:443", "http"), "app:443");
        assert_eq!(host_of("[::1]:443", "https"), "[::1]");
        assert_eq!(host_of("10.0.0.1:80", "https"), "10.0.0.1:80");
    }
}
