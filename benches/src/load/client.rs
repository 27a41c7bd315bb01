//! Connections and one request per mode.
//!
//! A [`Lane`] is one request slot: it owns a reusable read buffer and, for keepalive, one
//! HTTP/1.1 connection; for h2, a handle on a connection shared by `--streams` lanes.
//! [`Shared`] holds what all lanes use: the TLS connector, the address, the pre-built request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cli::{Args, Mode};
use super::error::{ErrorKind, LoadError, connect_reason};
use super::http1 as raw;
use super::stats::Stats;
use super::target::Target;

/// How long a `Connection: close` exchange waits for the server to close after the response
/// (so that the server, not the load generator, holds the TIME_WAIT state).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Body = Empty<Bytes>;

/// What every lane uses.
pub(crate) struct Shared {
    mode: Mode,
    connector: TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    /// handshake/resume: the request bytes.
    raw_request: Bytes,
    /// keepalive/h2: request URI (origin-form for HTTP/1.1, absolute for h2) and headers.
    uri: Uri,
    headers: HeaderMap,
    timeout: Duration,
}

impl Shared {
    /// Prepares the connector and the request from the arguments.
    pub(crate) fn new(
        args: &Args,
        target: &Target,
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> Self {
        let h2 = args.mode == Mode::H2;
        let uri = if h2 {
            format!("https://{}{}", target.authority, target.path)
        } else {
            target.path.clone()
        };
        let uri = uri.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let mut headers = HeaderMap::new();
        let user_host = args.headers.iter().any(|h| h.name == header::HOST);
        if !h2
            && !user_host
            && let Ok(v) = HeaderValue::from_str(&target.authority)
        {
            headers.insert(header::HOST, v);
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static("hsmgate-load"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for h in &args.headers {
            headers.append(h.name.clone(), h.value.clone());
        }
        Shared {
            mode: args.mode,
            connector: TlsConnector::from(config),
            addr,
            server_name: target.server_name.clone(),
            raw_request: raw::request_bytes(&target.path, &target.authority, &args.headers),
            uri,
            headers,
            timeout: args.timeout,
        }
    }

    /// The mode.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Start-up check: TCP connect and TLS handshake once, with clear errors.
    pub(crate) async fn probe(&self, target: &Target) -> Result<(), LoadError> {
        let addr = self.addr.to_string();
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(self.addr)).await {
            Err(_) => {
                return Err(LoadError::Connect {
                    addr,
                    reason: format!("timed out after {:?}", self.timeout),
                });
            }
            Ok(Err(e)) => {
                return Err(LoadError::Connect {
                    addr,
                    reason: connect_reason(&e),
                });
            }
            Ok(Ok(tcp)) => tcp,
        };
        let handshake_err = |reason: String| LoadError::Handshake {
            addr: addr.clone(),
            name: target.server_name.to_str().into_owned(),
            reason,
        };
        let connect = self.connector.connect(self.server_name.clone(), tcp);
        let tls = match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => return Err(handshake_err(format!("timed out after {:?}", self.timeout))),
            Ok(Err(e)) => return Err(handshake_err(e.to_string())),
            Ok(Ok(tls)) => tls,
        };
        if self.mode == Mode::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(LoadError::NoH2(addr));
        }
        Ok(())
    }

    /// New TCP connection plus TLS handshake; also tells whether the session was resumed.
    async fn connect_tls(&self) -> Result<(TlsStream<TcpStream>, bool), ErrorKind> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ErrorKind::from_connect(&e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| ErrorKind::from_io(&e))?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        Ok((tls, resumed))
    }

    fn hyper_request(&self) -> Request<Body> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if self.mode == Mode::H2 {
            *req.version_mut() = Version::HTTP_2;
        }
        req
    }
}

/// One HTTP/2 connection shared by the lanes of a group.
#[derive(Debug, Default)]
pub(crate) struct H2Group(tokio::sync::Mutex<Option<http2::SendRequest<Body>>>);

#[derive(Debug)]
enum Conn {
    OneShot,
    H1(Option<http1::SendRequest<Body>>),
    H2 {
        group: Arc<H2Group>,
        sender: Option<http2::SendRequest<Body>>,
    },
}

/// The result of one request on a lane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    /// When the response was complete, or why the request failed.
    pub(crate) result: Result<Instant, ErrorKind>,
    /// `Some(resumed)` if the request made a new TLS connection.
    pub(crate) handshake: Option<bool>,
    /// When it ended (success or failure).
    pub(crate) ended: Instant,
}

impl Exchange {
    /// Records this exchange into `stats`, latency counted from `origin`.
    pub(crate) fn record(&self, stats: &mut Stats, origin: Instant) {
        if let Some(resumed) = self.handshake {
            stats.record_handshake(resumed);
        }
        match self.result {
            Ok(done) => stats.record_ok(done.saturating_duration_since(origin)),
            Err(kind) => {
                stats.record_error(kind);
                if kind == ErrorKind::TlsAlert {
                    stats.record_alert(self.ended.saturating_duration_since(origin));
                }
            }
        }
    }
}

/// One request slot (see the module doc).
#[derive(Debug)]
pub(crate) struct Lane {
    conn: Conn,
    buf: Vec<u8>,
    handshake: Option<bool>,
}

impl Lane {
    /// A lane for a connection-per-request mode, or for keepalive.
    pub(crate) fn new(mode: Mode) -> Self {
        let conn = match mode {
            Mode::Keepalive => Conn::H1(None),
            Mode::H2 => Conn::H2 {
                group: Arc::default(),
                sender: None,
            },
            Mode::Handshake | Mode::Resume => Conn::OneShot,
        };
        Lane {
            conn,
            buf: Vec::new(),
            handshake: None,
        }
    }

    /// The lanes of a run: `connections` lanes, or for h2 `connections` groups of
    /// `streams` lanes each sharing one connection.
    pub(crate) fn set(mode: Mode, connections: usize, streams: usize) -> Vec<Lane> {
        if mode != Mode::H2 {
            return (0..connections).map(|_| Lane::new(mode)).collect();
        }
        let mut lanes = Vec::with_capacity(connections * streams);
        for _ in 0..connections {
            let group = Arc::new(H2Group::default());
            lanes.extend((0..streams).map(|_| Lane {
                conn: Conn::H2 {
                    group: group.clone(),
                    sender: None,
                },
                buf: Vec::new(),
                handshake: None,
            }));
        }
        lanes
    }

    /// Runs one request (connecting first if needed) within the per-request timeout.
    pub(crate) async fn request(&mut self, shared: &Shared) -> Exchange {
        self.handshake = None;
        let result = match tokio::time::timeout(shared.timeout, self.request_inner(shared)).await {
            Ok(r) => r,
            Err(_) => {
                // An HTTP/1.1 connection with a request cut off midway cannot be reused.
                if let Conn::H1(slot) = &mut self.conn {
                    *slot = None;
                }
                Err(ErrorKind::Timeout)
            }
        };
        Exchange {
            result,
            handshake: self.handshake.take(),
            ended: Instant::now(),
        }
    }

    async fn request_inner(&mut self, shared: &Shared) -> Result<Instant, ErrorKind> {
        match &mut self.conn {
            Conn::OneShot => one_shot(shared, &mut self.buf, &mut self.handshake).await,
            Conn::H1(slot) => keepalive(shared, slot, &mut self.handshake).await,
            Conn::H2 { group, sender } => h2(shared, group, sender, &mut self.handshake).await,
        }
    }
}

/// handshake/resume: connect, handshake, one `Connection: close` request, read the response.
async fn one_shot(
    shared: &Shared,
    buf: &mut Vec<u8>,
    handshake: &mut Option<bool>,
) -> Result<Instant, ErrorKind> {
    let (mut tls, resumed) = shared.connect_tls().await?;
    *handshake = Some(resumed);
    let io_err = |e: std::io::Error| ErrorKind::from_io(&e);
    tls.write_all(&shared.raw_request).await.map_err(io_err)?;
    tls.flush().await.map_err(io_err)?;
    let status = raw::read_response(&mut tls, buf).await?;
    let done = Instant::now();
    let _ = tokio::time::timeout(CLOSE_GRACE, raw::drain(&mut tls, buf)).await;
    match ErrorKind::from_status(status) {
        Some(kind) => Err(kind),
        None => Ok(done),
    }
}

/// keepalive: (re)connect when needed, then one request on the persistent connection.
async fn keepalive(
    shared: &Shared,
    slot: &mut Option<http1::SendRequest<Body>>,
    handshake: &mut Option<bool>,
) -> Result<Instant, ErrorKind> {
    let hyper_err = |e: hyper::Error| ErrorKind::from_hyper(&e);
    let mut fresh = false;
    let sender = loop {
        if slot.is_none() {
            let (tls, resumed) = shared.connect_tls().await?;
            *handshake = Some(resumed);
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(hyper_err)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *slot = Some(sender);
            fresh = true;
        }
        let Some(sender) = slot.as_mut() else {
            continue;
        };
        match sender.ready().await {
            Ok(()) => break sender,
            // The server closed the idle connection: reconnect once.
            Err(e) => {
                *slot = None;
                if fresh {
                    return Err(hyper_err(e));
                }
            }
        }
    };
    let result = exchange(sender.send_request(shared.hyper_request())).await;
    if result.is_err() {
        *slot = None;
    }
    result
}

/// h2: (re)connect the group's connection when needed, then one stream. A stream the
/// server never processed (RFC 9113 §8.7: a GOAWAY that did not take it,
/// REFUSED_STREAM) is sent again, once, on the group's next connection, as browsers do;
/// a server's keepalive_requests GOAWAY then costs no request.
async fn h2(
    shared: &Shared,
    group: &H2Group,
    sender: &mut Option<http2::SendRequest<Body>>,
    handshake: &mut Option<bool>,
) -> Result<Instant, ErrorKind> {
    let hyper_err = |e: hyper::Error| ErrorKind::from_hyper(&e);
    let mut retried = false;
    loop {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = None;
            let mut current = group.0.lock().await;
            if current.as_ref().is_none_or(|s| s.is_closed()) {
                *current = None;
                let (tls, resumed) = shared.connect_tls().await?;
                *handshake = Some(resumed);
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ErrorKind::Protocol);
                }
                let (s, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(hyper_err)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *current = Some(s);
            }
            *sender = current.clone();
        }
        let Some(s) = sender.as_mut() else {
            return Err(ErrorKind::Reset);
        };
        if let Err(e) = s.ready().await {
            *sender = None;
            return Err(hyper_err(e));
        }
        match s.send_request(shared.hyper_request()).await {
            Err(e) if !retried && unprocessed(&e) => {
                *sender = None;
                retried = true;
            }
            answer => return exchange(std::future::ready(answer)).await,
        }
    }
}

/// Whether a stream's failure says the server did not process it, so that it may be
/// sent again: never sent (the connection had closed), refused, or past a GOAWAY's last
/// stream.
fn unprocessed(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return unprocessed_h2(h2);
        }
        source = s.source();
    }
    false
}

/// The HTTP/2 part of [`unprocessed`]: refused, or past the server's GOAWAY.
fn unprocessed_h2(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// Awaits the response, reads the body to its end (discarding it), classifies the status.
async fn exchange(
    response: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> Result<Instant, ErrorKind> {
    let hyper_err = |e: hyper::Error| ErrorKind::from_hyper(&e);
    let response = response.await.map_err(hyper_err)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(hyper_err)?;
    }
    let done = Instant::now();
    match ErrorKind::from_status(status) {
        Some(kind) => Err(kind),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::unprocessed_h2;

    #[test]
    fn only_a_refused_stream_is_sent_again() {
        assert!(unprocessed_h2(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
        for reason in [
            h2::Reason::INTERNAL_ERROR,
            h2::Reason::CANCEL,
            h2::Reason::PROTOCOL_ERROR,
        ] {
            assert!(!unprocessed_h2(&h2::Error::from(reason)), "{reason:?}");
        }
    }
}
