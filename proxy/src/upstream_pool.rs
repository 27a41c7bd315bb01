//! Keep-alive connections to upstream servers, driven by the task of the request that
//! uses them.
//!
//! hyper's pooled client (`hyper_util::client::legacy`) runs every upstream connection
//! in a task of its own: each request crosses from the client connection's task to that
//! task and back (request, response head, body chunks), and a response with a body
//! spawns one more task per request to return the connection to the pool. Here a request
//! checks a connection out of the pool (or connects), and its own task polls hyper's
//! HTTP/1 [`Connection`](hyper::client::conn::http1::Connection) while it waits for the
//! response head and, through [`UpstreamResponseBody`], while the client is sent the
//! body; at the end of the body the connection goes back to the pool, idle and polled by
//! nobody. A connection is bound to a request only while it is served, as in nginx's
//! `keepalive` cache (last in, first out; at most `keepalive` idle per server, none kept
//! with 0; dropped after 60 s idle).
//!
//! Taking an idle connection polls it once: one the server has closed (or written to
//! while idle) is dropped there. A request that finds its reused connection closed before
//! any of it was written is sent again on another (as hyper's client does); a `101`
//! hands the connection to a task of its own, which completes the upgrade.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::balance::{BodyError, UpstreamBody};
use crate::stall_timer::StallTimer;

/// The most header lines an upstream's response head may have.
const MAX_RESPONSE_HEADERS: usize = 1024;

/// How long an idle connection is kept (hyper's client kept them as long).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The connector of a pool: plain TCP, or TLS for `proxy_pass https://`.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// A connection's dispatcher (hyper's `Connection`, with upgrades), polled by whichever
/// task uses the connection.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the sending half and the dispatcher to poll.
struct Conn {
    send: http1::SendRequest<UpstreamBody>,
    /// In a mutex only to be `Sync` (as response bodies must be): reached by `get_mut`,
    /// never locked.
    drive: Mutex<Driver>,
    /// The dispatcher has completed (closed, failed or upgraded): never polled again.
    ended: bool,
    idle_since: Instant,
    /// `proxy_read_timeout` of the request it serves: the wait for the response head,
    /// then between reads of the body. One timer for the connection's life.
    stall: StallTimer,
}

impl Conn {
    /// Poll the dispatcher (unless it has completed); true once it has.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        let drive = self.drive.get_mut().unwrap_or_else(|e| e.into_inner());
        if !self.ended && drive.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }

    /// Poll the dispatcher once without a task (nothing is woken later): false when the
    /// connection has ended (closed by the server, or an error).
    fn poll_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.poll_ended(&mut cx) && !self.send.is_closed()
    }
}

/// A pool of keep-alive connections to the servers of one upstream group (and TLS name);
/// cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// Idle connections kept per server (`keepalive`; 0 keeps none).
    keepalive: usize,
    /// Idle connections by server address (`host:port`), the most recent last.
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("keepalive", &self.inner.keepalive)
            .finish_non_exhaustive()
    }
}

/// How long connecting to the server took (TCP, and TLS for `https://`), in the extensions
/// of each response: zero on a kept connection (nginx's `$upstream_connect_time`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectTime(pub(crate) Duration);

/// Why a request got no response from its server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (TCP, TLS or the connect timeout).
    #[error("connect error")]
    Connect(#[source] BodyError),
    /// The request failed on its connection.
    #[error("request failed")]
    Request(#[source] hyper::Error),
    /// The connection ended without an answer to the request.
    #[error("connection closed before the response")]
    Closed,
    /// No response head within `proxy_read_timeout` (connecting included).
    #[error("timed out ({0:?}) waiting for the response")]
    TimedOut(Duration),
}

impl SendError {
    /// The server could not be connected to (a request on an established connection
    /// failed otherwise).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl UpstreamClient {
    /// A pool connecting through `connector`, keeping at most `keepalive` idle
    /// connections per server.
    pub(crate) fn new(connector: Connector, keepalive: usize) -> UpstreamClient {
        UpstreamClient {
            inner: Arc::new(Inner {
                connector,
                keepalive,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Send `req` (an absolute URI: `http[s]://host:port/path`) to its server and wait for
    /// the response head, polling the connection in this task, for at most `timeout`
    /// (`proxy_read_timeout`; connecting included). The body of the response keeps
    /// polling it; a `Host` is added from the URI when the request has none.
    pub(crate) async fn request(
        &self,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        let called = tokio::time::Instant::now();
        let uri = req.uri().clone();
        let key = uri.authority().map_or("", |a| a.as_str());
        if let Some(host) = uri.host() {
            req.headers_mut().entry(HOST).or_insert_with(|| {
                let value = match uri.port() {
                    Some(p) if !is_default_port(&uri, p.as_u16()) => format!("{host}:{p}"),
                    _ => host.to_owned(),
                };
                HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
            });
        }
        *req.uri_mut() = origin_form(&uri);
        // An idempotent request without a body can be sent again (once) when a kept
        // connection closes before answering it: the server's keep-alive timeout raced
        // it, as nginx retries a cached connection. The copy is made only for a kept
        // connection (none without `keepalive`, nginx's default).
        let mut sent_again = false;
        loop {
            let started = Instant::now();
            let (mut conn, reused) = match self.checkout(key) {
                Some(conn) => (conn, true),
                // Boxed: connecting is the rare path, and its future (the TCP and TLS
                // connector's) would otherwise make every request's state that much larger.
                None => {
                    match tokio::time::timeout_at(called + timeout, Box::pin(self.connect(&uri)))
                        .await
                    {
                        Ok(conn) => (conn?, false),
                        Err(_) => return Err(SendError::TimedOut(timeout)),
                    }
                }
            };
            conn.stall.begin(called);
            let again = match reused && !sent_again {
                true => replayable(&req),
                false => None,
            };
            let connect_time = ConnectTime(match reused {
                true => Duration::ZERO,
                false => started.elapsed(),
            });
            let exchanged = exchange(&mut conn, req, timeout).await.map(|mut resp| {
                resp.extensions_mut().insert(connect_time);
                resp
            });
            match exchanged {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    // The upgrade completes when the dispatcher sees the 101 through: a task
                    // of its own (the tunnel waits for it), the connection not reused.
                    if !conn.ended {
                        let Conn { send, drive, .. } = conn;
                        let drive = drive.into_inner().unwrap_or_else(|e| e.into_inner());
                        tokio::spawn(async move {
                            let _ = drive.await;
                            drop(send);
                        });
                    }
                    return Ok(resp.map(|inner| UpstreamResponseBody {
                        load: None,
                        inner,
                        conn: None,
                        pool: None,
                        read_timeout: timeout,
                    }));
                }
                Ok(resp) => {
                    let pool = Some((self.clone(), key.to_owned()));
                    return Ok(resp.map(|inner| UpstreamResponseBody {
                        load: None,
                        inner,
                        conn: Some(conn),
                        pool,
                        read_timeout: timeout,
                    }));
                }
                Err(Failed::Unsent(r, _)) if reused => {
                    // A kept connection the server closed under us: nothing was written,
                    // so the request goes again (on another kept one, or a new one).
                    req = *r;
                }
                Err(Failed::Sent(e)) if e.is_incomplete_message() && again.is_some() => {
                    tracing::debug!(error = %e, "kept upstream connection closed before answering: sending the request again");
                    sent_again = true;
                    req = again.expect("checked");
                }
                Err(Failed::Unsent(_, e) | Failed::Sent(e)) => return Err(SendError::Request(e)),
                Err(Failed::Ended) => return Err(SendError::Closed),
                Err(Failed::TimedOut) => return Err(SendError::TimedOut(timeout)),
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
            if conn.poll_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Return a connection whose exchange is complete; dropped (closed) when it cannot
    /// take another request or the server has `keepalive` idle ones already.
    fn checkin(&self, key: String, mut conn: Conn) {
        if self.inner.keepalive == 0 || !conn.poll_alive() || !conn.send.is_ready() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < self.inner.keepalive {
            list.push(conn);
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<Conn, SendError> {
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        // An upstream's response head may have more than hyper's 100 header lines
        // (nginx counts none, only the bytes: `proxy_buffer_size`).
        let (send, conn) = http1::Builder::new()
            .max_headers(MAX_RESPONSE_HEADERS)
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        Ok(Conn {
            send,
            drive: Mutex::new(Box::pin(conn.with_upgrades())),
            ended: false,
            idle_since: Instant::now(),
            stall: StallTimer::default(),
        })
    }
}

/// A copy of `req` to send again, if it is idempotent (RFC 9110 §9.2.2) and has no
/// body.
fn replayable(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    use http::Method;
    use http_body_util::BodyExt;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// How one exchange failed.
enum Failed {
    /// Before any of the request was written: the request is given back.
    Unsent(Box<Request<UpstreamBody>>, hyper::Error),
    /// After.
    Sent(hyper::Error),
    /// The connection ended and the request got no answer (not expected of hyper).
    Ended,
    /// No response head within the timeout (the connection is not reusable).
    TimedOut,
}

/// Send `req` on `conn` and wait for the response head, polling the connection here,
/// until `timeout` after the wait `conn.stall` began.
async fn exchange(
    conn: &mut Conn,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failed> {
    let mut sent = std::pin::pin!(conn.send.try_send_request(req));
    std::future::poll_fn(|cx| {
        let ended = conn.poll_ended(cx);
        match sent.as_mut().poll(cx) {
            Poll::Ready(Ok(resp)) => {
                conn.stall.progressed();
                Poll::Ready(Ok(resp))
            }
            Poll::Ready(Err(mut e)) => Poll::Ready(Err(match e.take_message() {
                Some(req) => Failed::Unsent(Box::new(req), e.into_error()),
                None => Failed::Sent(e.into_error()),
            })),
            // The dispatcher answers every request before it ends; in case it does not.
            Poll::Pending if ended => Poll::Ready(Err(Failed::Ended)),
            Poll::Pending => match conn.stall.poll_waited(cx, timeout) {
                Poll::Ready(()) => Poll::Ready(Err(Failed::TimedOut)),
                Poll::Pending => Poll::Pending,
            },
        }
    })
    .await
}

/// The body of an upstream response: reading it polls the connection, which goes back
/// to the pool when the body is complete (or is dropped complete).
pub(crate) struct UpstreamResponseBody {
    inner: Incoming,
    conn: Option<Conn>,
    pool: Option<(UpstreamClient, String)>,
    /// `proxy_read_timeout` between two reads of the body (the connection's timer).
    read_timeout: Duration,
    /// The request counted in progress on its server until the body is read.
    load: Option<crate::balance::Load>,
}

/// The upstream sent nothing of the body for `proxy_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream timed out ({0:?}) while sending the response body")]
pub(crate) struct BodyTimeout(Duration);

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponseBody {
    /// Keeps the request counted on its server (`least_conn`) until the body is read.
    pub(crate) fn hold(&mut self, load: Option<crate::balance::Load>) {
        self.load = load;
    }

    /// The body is complete: the connection goes back to the pool if it can be reused.
    fn release(&mut self) {
        self.load = None;
        if let (Some(conn), Some((pool, key))) = (self.conn.take(), self.pool.take()) {
            pool.checkin(key, conn);
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
        // What the dispatcher has already read, then more from the connection.
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(conn) = &mut this.conn
                && conn.poll_ended(cx)
            {
                // Ended (closed after this response, or failed): not reusable; the body
                // sees the end or the error through its channel.
                this.conn = None;
            }
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        // nginx's `proxy_read_timeout` between two reads: the body is cut short (the
        // client sees it end early) when the upstream sends nothing of it for so long. A
        // body whose connection has ended reads only what the dispatcher already has.
        if let Some(conn) = &mut this.conn {
            match polled {
                Poll::Ready(_) => conn.stall.progressed(),
                Poll::Pending => {
                    if conn.stall.poll_waited(cx, this.read_timeout).is_ready() {
                        // Not reusable: the rest of the response is still to come.
                        this.conn = None;
                        let timeout = this.read_timeout;
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
                    }
                }
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamResponseBody {
    fn drop(&mut self) {
        // Dropped complete (a body the server never had to poll, such as a HEAD's or a
        // 304's): reusable. Dropped before its end: the connection closes.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

fn is_default_port(uri: &Uri, port: u16) -> bool {
    matches!(
        (uri.scheme_str(), port),
        (Some("http"), 80) | (Some("https"), 443)
    )
}

/// `/path?query` of an absolute URI, as an HTTP/1.1 request line has it.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(p.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query() {
        let u: Uri = "http://h:81/a/b?x=1".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/a/b?x=1");
        let u: Uri = "http://h:81".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/");
        let u: Uri = "https://h:443/".parse().unwrap();
        assert!(is_default_port(&u, 443));
        assert!(!is_default_port(&u, 80));
    }
}
