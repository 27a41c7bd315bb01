//! Sockets and connections: binding with the `listen` options, the accept loop of one
//! address (which follows the current generation and ends when its address leaves the
//! configuration or on stop), and one connection: TLS handshake (bounded in time),
//! then HTTP/1.1 or HTTP/2 by hyper, each request routed by [`route`](crate::route)
//! on the generation the connection was accepted on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use hsmgate_config::nginx::{CipherSuite, select_server};

use crate::conn_info::{ConnInfo, TlsInfo};
use crate::door::{AtAccept, Early, Pass, Refusal, Verdict};
use crate::error::ProxyError;
use crate::generation::{Generation, ListenerRt, ServerTls, TlsListener};
use crate::h1guard::{H1Guard, HeadLimits};
use crate::hello::HelloKind;
use crate::keepalive_limits::ConnLimits;
use crate::metrics::{self, HandshakeResult};
use crate::send_timeout::SendTimeout;
use crate::site::ListenSpec;
use hsmgate_signer::Gate;

/// An HTTP/2 stream's send buffer (`max_send_buf_size`): 64 KB, a default window's.
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// How long a connection told to finish (HTTP/2: GOAWAY, then a PING whose answer lets
/// the final GOAWAY go) may take before it is closed once idle: a PING's round trip on
/// any real network, with room to spare.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// HTTP/2 streams a client may open and reset before they are served, per connection,
/// before the connection is closed with ENHANCE_YOUR_CALM (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 streams hsmgate may reset because of the client's protocol errors, per
/// connection, before it closes the connection (hyper's default is 1024).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 128;

/// Bind a listening socket with the `listen` options.
pub(crate) fn bind(spec: &ListenSpec) -> Result<std::net::TcpListener, ProxyError> {
    use socket2::{Domain, Socket, Type};
    let addr = spec.addr;
    let err = |source| ProxyError::Bind {
        what: "listener",
        addr,
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if spec.reuseport {
        socket.set_reuse_port(true).map_err(err)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(spec.ipv6only).map_err(err)?;
    }
    socket_options(&socket, spec);
    socket.bind(&addr.into()).map_err(err)?;
    socket
        .listen(i32::try_from(spec.backlog).unwrap_or(511))
        .map_err(err)?;
    // After listen(2), as nginx: Linux keeps TCP_FASTOPEN's queue from then on.
    if let Some(queue) = spec.socket.fastopen {
        warn_unset(
            addr,
            "TCP_FASTOPEN",
            crate::sockopt::set_fastopen(&socket, queue),
        );
    }
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

/// The `listen` parameters' socket options (`deferred`, `so_keepalive=`, `rcvbuf=`,
/// `sndbuf=`), set on the listening socket before it listens; accepted connections
/// inherit them. As nginx, an option the system refuses is reported and the address
/// served without it.
fn socket_options(socket: &socket2::Socket, spec: &ListenSpec) {
    use hsmgate_config::nginx::SoKeepalive;
    let (addr, o) = (spec.addr, &spec.socket);
    if let Some(size) = o.rcvbuf {
        warn_unset(
            addr,
            "SO_RCVBUF",
            socket.set_recv_buffer_size(size as usize),
        );
    }
    if let Some(size) = o.sndbuf {
        warn_unset(
            addr,
            "SO_SNDBUF",
            socket.set_send_buffer_size(size as usize),
        );
    }
    match o.keepalive {
        None => {}
        Some(SoKeepalive::Off) => warn_unset(addr, "SO_KEEPALIVE", socket.set_keepalive(false)),
        Some(SoKeepalive::On {
            idle,
            interval,
            count,
        }) => {
            warn_unset(addr, "SO_KEEPALIVE", socket.set_keepalive(true));
            // One option at a time, as nginx: one the kernel refuses (TCP_KEEPIDLE over
            // 32767 s) leaves the others set.
            let secs = |n: u32| Duration::from_secs(u64::from(n));
            let one = socket2::TcpKeepalive::new;
            if let Some(n) = idle {
                let r = socket.set_tcp_keepalive(&one().with_time(secs(n)));
                warn_unset(addr, "TCP_KEEPIDLE", r);
            }
            if let Some(n) = interval {
                let r = socket.set_tcp_keepalive(&one().with_interval(secs(n)));
                warn_unset(addr, "TCP_KEEPINTVL", r);
            }
            if let Some(n) = count {
                let r = socket.set_tcp_keepalive(&one().with_retries(n));
                warn_unset(addr, "TCP_KEEPCNT", r);
            }
        }
    }
    if o.deferred {
        // nginx's 1 s: the kernel accepts a connection that sent nothing after that, so an
        // idle client still meets the handshake timeout.
        warn_unset(
            addr,
            "TCP_DEFER_ACCEPT",
            crate::sockopt::set_defer_accept(socket, 1),
        );
    }
}

fn warn_unset(addr: SocketAddr, option: &str, result: std::io::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(%addr, option, error = %e, "setsockopt failed; the address is served without it");
    }
}

/// Bind the admin listener.
pub(crate) fn bind_admin(addr: SocketAddr) -> Result<std::net::TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind {
        what: "admin listener",
        addr,
        source,
    };
    let socket = std::net::TcpListener::bind(addr).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket)
}

pub(crate) async fn accept_loop(
    addr: SocketAddr,
    listener: TcpListener,
    mut generations: watch::Receiver<Arc<Generation>>,
    graceful: Arc<crate::drain::Drain>,
    mut stop: watch::Receiver<bool>,
    ids: Arc<AtomicU64>,
    limit: Option<Arc<Semaphore>>,
) {
    // Kernel receive times for admission's door (accepted sockets inherit the option).
    if let Err(e) = crate::arrival::enable(&listener) {
        tracing::warn!(address = %addr, error = %e, "SO_TIMESTAMPNS: admission will not see the accept queue's wait");
    }
    // Every accepted socket has the listener's port (`$server_port`): asked once, not
    // with a getsockname per connection.
    let local_port = listener.local_addr().map_or(addr.port(), |a| a.port());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
            changed = generations.changed() => {
                if changed.is_err() || !generations.borrow().listeners.contains_key(&addr) {
                    tracing::info!(address = %addr, "listener closed: not in the configuration any more");
                    break;
                }
                continue;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                // Bounded: at the limit, idle connections make room; with none idle, the
                // new connection waits (the next ones in the kernel's backlog) until one
                // closes.
                let permit = match &limit {
                    None => None,
                    Some(sem) => match room(sem, &mut stop).await {
                        Some(permit) => Some(permit),
                        None => break,
                    },
                };
                let generation = Arc::clone(&generations.borrow());
                let Some(listener_rt) = generation.listeners.get(&addr).cloned() else {
                    break;
                };
                // A wildcard address's connections say which address they reached (one
                // getsockname each); a listen address names it.
                let local_ip = match addr.ip().is_unspecified() {
                    true => stream.local_addr().map_or(addr.ip(), |a| a.ip()),
                    false => addr.ip(),
                };
                let conn = ConnInfo {
                    peer,
                    listen: addr,
                    local_port,
                    local_ip,
                    tls: None,
                    sni: None,
                    client_cert: None,
                    id: ids.fetch_add(1, Ordering::Relaxed) + 1,
                    proxy_protocol: None,
                    plain_on_tls: false,
                };
                let accepted = std::time::Instant::now();
                let active = crate::conn_stats::accepted();
                // While admission control would not admit a full handshake at once, a
                // TLS connection whose ClientHello is here already is shed right here if
                // it must be (see `door`), or its task takes what was read and decided.
                let early = match &listener_rt.tls {
                    Some(tls) if !listener_rt.spec.proxy_protocol && tls.resolver.saturated() => {
                        match crate::door::at_accept(&stream, tls, peer, accepted) {
                            AtAccept::Done => continue,
                            AtAccept::Hand(early) => early,
                        }
                    }
                    _ => Early::Nothing,
                };
                let watcher = graceful.watcher();
                let configs = Configs {
                    accepted: generation,
                    live: generations.clone(),
                };
                tokio::spawn(async move {
                    serve_connection(stream, conn, listener_rt, configs, watcher, accepted, early)
                        .await;
                    drop(permit);
                    drop(active);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn_accept(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A slot of the connection limit for a connection accepted: at once if one is free;
/// else, as nginx, idle connections are told to close (`reusable`; not while most
/// connections are in their handshake, a flood of new ones), again every
/// [`ROOM_RETRY`] while none is free. `None`: the server stops.
async fn room(
    sem: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(sem).try_acquire_owned() {
        return Some(permit);
    }
    warn_limit(sem);
    loop {
        crate::reusable::reclaim(sem.available_permits());
        tokio::select! {
            p = Arc::clone(sem).acquire_owned() => return p.ok(),
            _ = stop.changed() => return None,
            () = tokio::time::sleep(ROOM_RETRY) => {}
        }
    }
}

/// How often a connection waiting for room asks idle connections to close again (those
/// busy when it first asked may have finished their request).
const ROOM_RETRY: Duration = Duration::from_millis(250);

/// Whether a warning last given at `last` (seconds since the epoch) may be given again,
/// `every` seconds apart; if so, `last` is now.
fn may_warn(last: &AtomicU64, every: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = last.load(Ordering::Relaxed);
    (before == 0 || now >= before + every)
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// An `accept` failure (out of file descriptors), logged at most once a minute (the
/// accept loops, the proxy's and the admin listener's, retry every 50 ms).
pub(crate) fn warn_accept(e: &std::io::Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if may_warn(&LAST, 60) {
        tracing::warn!(error = %e, "accept failed (logged at most once a minute)");
    }
}

/// nginx's "worker_connections are not enough, reusing connections", at most once a
/// second.
fn warn_limit(sem: &Semaphore) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if may_warn(&LAST, 1) {
        tracing::warn!(
            available = sem.available_permits(),
            "connection limit reached (worker_connections × worker_processes): idle connections closed to make room; with none idle, not accepting until a connection closes"
        );
    }
}

/// The configuration a connection was accepted under, and the live one. A request the
/// connection begins after a reload has retired its configuration is served with the
/// live one (and the connection closes after it): no request begun after a reload sees
/// the configuration it replaced, as from nginx, whose old workers close their idle
/// connections at a reload (where a request the client sends at that moment is lost).
#[derive(Debug, Clone)]
struct Configs {
    accepted: Arc<Generation>,
    live: watch::Receiver<Arc<Generation>>,
}

impl Configs {
    /// The configuration of a request begun now on a connection to `listen` whose own
    /// configuration is `retired` or not: the live one if it still listens there.
    fn for_request(&self, retired: bool, listen: SocketAddr) -> Arc<Generation> {
        if retired {
            let live = self.live.borrow();
            if live.listeners.contains_key(&listen) {
                return Arc::clone(&live);
            }
        }
        Arc::clone(&self.accepted)
    }
}

// A function returning an `async move` block, not an `async fn`: an `async fn` keeps
// its arguments twice in its state (as passed and as its locals; rust-lang/rust#62958),
// and this state is every connection's task.
#[allow(clippy::manual_async_fn)]
fn serve_connection(
    mut stream: TcpStream,
    mut conn: ConnInfo,
    listener: ListenerRt,
    configs: Configs,
    watcher: crate::drain::Watcher,
    accepted: std::time::Instant,
    early: Early,
) -> impl Future<Output = ()> + Send {
    async move {
        let reading = crate::conn_stats::reading();
        if listener.spec.proxy_protocol {
            let timeout = listener.proxy_protocol_timeout;
            // Boxed, as the handshake below: its timer is not kept in every task.
            match Box::pin(tokio::time::timeout(
                timeout,
                crate::proxy_protocol::read(&mut stream),
            ))
            .await
            {
                Ok(Ok(header)) => conn.proxy_protocol = header,
                Ok(Err(e)) => {
                    tracing::info!(peer = %conn.peer, error = %e, "PROXY protocol header refused: connection closed");
                    return;
                }
                Err(_) => {
                    tracing::info!(peer = %conn.peer, ?timeout, "no PROXY protocol header in time: connection closed");
                    return;
                }
            }
        }
        let Some(tls_listener) = &listener.tls else {
            let _ = stream.set_nodelay(true);
            let speak = match listener.spec.http2 {
                true => Speak::Either,
                false => Speak::Http1,
            };
            drop(reading);
            Box::pin(serve_http(
                stream, conn, &listener, configs, watcher, speak, accepted,
            ))
            .await;
            return;
        };
        // Admission, then the handshake; the signer waits off the async workers.
        let peer = conn.peer;
        let mut resumption = false;
        // Boxed, with its timer: the handshake's state is freed when it ends, instead of
        // sizing the connection's task for its whole life. Its result is taken apart in a
        // block of its own, so that it is not kept in the task's state either.
        let served = {
            let shook = Box::pin(tokio::time::timeout(
                listener.handshake_timeout,
                handshake(stream, tls_listener, peer, accepted, &mut resumption, early),
            ))
            .await;
            match shook {
                Ok(Shook::Tls(tls, server)) => {
                    drop(reading);
                    served_tls(tls, server, conn, &listener, configs, watcher, accepted)
                }
                Ok(Shook::Plain(stream, read)) => {
                    // nginx answers every request on it with 497 (error_page) or its 400 page.
                    tracing::info!(%peer, "client sent plain HTTP request to HTTPS port");
                    let _ = stream.set_nodelay(true);
                    conn.plain_on_tls = true;
                    drop(reading);
                    let io = crate::prefixed::Prefixed::new(read, stream);
                    let speak = Speak::Http1;
                    Box::pin(serve_http(
                        io, conn, &listener, configs, watcher, speak, accepted,
                    ))
                }
                Ok(Shook::Failed) => return,
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    metrics::handshake(
                        HandshakeResult::Timeout,
                        "unknown",
                        resumption,
                        Duration::ZERO,
                    );
                    return;
                }
            }
        };
        served.await;
    }
}

/// A connection's HTTP, boxed (as every connection's HTTP part: hyper's connection,
/// with HTTP/1.1's and HTTP/2's states side by side, and the TLS session are most of a
/// connection's state, and held in the task they would size it, about 10 KB, from the
/// accept on, a shed connection's too, copied whole when spawned and when finished).
type Served<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The HTTP of a TLS connection whose handshake is done, on the settings of `server`.
fn served_tls<'a>(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    server: ServerTls,
    mut conn: ConnInfo,
    listener: &'a ListenerRt,
    configs: Configs,
    watcher: crate::drain::Watcher,
    accepted: std::time::Instant,
) -> Served<'a> {
    let session = tls.get_ref().1;
    conn.tls = Some(TlsInfo {
        protocol: match session.protocol_version() {
            v @ Some(_) => metrics::version_label(v),
            None => "",
        },
        cipher: (session.negotiated_cipher_suite())
            .and_then(|s| CipherSuite::from_name(&format!("{:?}", s.suite())))
            .map_or("", CipherSuite::openssl_name),
        curve: (session.negotiated_key_exchange_group())
            .map_or("", |g| crate::conn_info::curve_name(g.name())),
        resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    });
    conn.sni = session.server_name().map(str::to_owned);
    conn.client_cert = server
        .client_auth
        .as_ref()
        .map(|auth| Arc::new(auth.check(session.peer_certificates())));
    // What ALPN chose: HTTP/2 only after `h2`; HTTP/1.1 otherwise (an HTTP/2 preface is
    // then a 400, as from nginx).
    let speak = match session.alpn_protocol() {
        Some(b"h2") => Speak::Http2,
        _ => Speak::Http1,
    };
    let tls = crate::tls_io::FlushingTls(tls);
    Box::pin(serve_http(
        tls, conn, listener, configs, watcher, speak, accepted,
    ))
}

pin_project_lite::pin_project! {
    /// hyper-util's connection with or without HTTP/1.1 upgrades, told to finish alike.
    #[project = HttpConnProj]
    enum HttpConn<A, B> {
        Plain { #[pin] conn: A },
        Upgrades { #[pin] conn: B },
    }
}

type ServeError = Box<dyn std::error::Error + Send + Sync>;

impl<A, B> Future for HttpConn<A, B>
where
    A: Future<Output = Result<(), ServeError>>,
    B: Future<Output = Result<(), ServeError>>,
{
    type Output = Result<(), ServeError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            HttpConnProj::Plain { conn } => conn.poll(cx),
            HttpConnProj::Upgrades { conn } => conn.poll(cx),
        }
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speak {
    Http1,
    Http2,
    /// A plain `listen … http2` address: HTTP/1.1, or HTTP/2 with prior knowledge.
    Either,
}

/// How a TLS address's first bytes ended.
// The TLS variant is the common one and is moved out at once: boxing it would cost an
// allocation per handshake for nothing.
#[allow(clippy::large_enum_variant)]
enum Shook {
    /// A TLS connection, and the server whose settings it took.
    Tls(tokio_rustls::server::TlsStream<TcpStream>, ServerTls),
    /// Plain HTTP (nginx's 497), with the bytes read so far.
    Plain(TcpStream, Vec<u8>),
    /// Closed (shed, refused, failed; counted and logged).
    Failed,
}

/// Read the ClientHello (or take what the accept loop read and decided, `early`), admit
/// a full handshake (or shed it with an alert before any key exchange), then complete
/// the handshake with the admission in scope so that the signature claims the permit.
///
/// Counts the handshake in [`HANDSHAKES`](crate::metrics::HANDSHAKES) (the caller
/// counts a timeout); `resumption` is set when the ClientHello attempts one. Returns
/// the connection with the settings of the server its ClientHello selected.
async fn handshake(
    mut stream: TcpStream,
    listener: &TlsListener,
    peer: SocketAddr,
    accepted_at: std::time::Instant,
    resumption: &mut bool,
    early: Early,
) -> Shook {
    let failed = |resumption: bool| {
        metrics::handshake(
            HandshakeResult::Failed,
            "unknown",
            resumption,
            Duration::ZERO,
        )
    };
    let first = match early {
        Early::Decided(decided) => Ok(*decided),
        Early::Closing(state, refusal) => {
            let answered = || refusal.answered(accepted_at);
            let _ = crate::hello::close_after(&mut stream, refusal.alert, state, answered).await;
            return Shook::Failed;
        }
        Early::Read(first) => Err(Some(first)),
        Early::Nothing => Err(None),
    };
    let (hello, verdict) = match first {
        Ok(decided) => decided,
        Err(first) => match crate::hello::read(&mut stream, first).await {
            Ok(hello) => {
                let verdict = crate::door::decide(listener, &hello, accepted_at, false);
                (hello, verdict)
            }
            Err(crate::hello::HelloError::Plain(read)) => return Shook::Plain(stream, read),
            // A TCP health check: no handshake was attempted, none is counted.
            Err(crate::hello::HelloError::Silent) => {
                tracing::trace!(%peer, "connection closed before a ClientHello");
                return Shook::Failed;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                failed(false);
                return Shook::Failed;
            }
        },
    };
    let crate::door::Go {
        server,
        pool,
        kind,
        pass,
        started,
    } = match verdict {
        Verdict::Go(go) => go,
        Verdict::Reject => {
            Refusal::reject(peer, &hello)
                .send(&mut stream, accepted_at)
                .await;
            return Shook::Failed;
        }
        Verdict::Fallback => {
            Refusal::fallback(peer).send(&mut stream, accepted_at).await;
            return Shook::Failed;
        }
        Verdict::Shed(reason) => {
            Refusal::shed(peer, reason)
                .send(&mut stream, accepted_at)
                .await;
            return Shook::Failed;
        }
    };
    let (accepted, arrived) = (hello.accepted, hello.arrived);
    *resumption = kind == HelloKind::Resumption;
    // A full handshake the accept loop let through is admitted here.
    let pass = match (pass, &pool) {
        (Some(pass), _) => Ok(pass),
        (None, Some(pool)) => crate::door::admit(pool.limiter(), arrived, accepted_at),
        (None, None) => Ok(Pass::Open),
    };
    let gate = match pass {
        // No limiter for the key the door saw; rustls may choose a token's key when it
        // signs all the same (see `Gate::Unadmitted`).
        Ok(Pass::Open) => Gate::Unadmitted,
        Ok(Pass::Resumption) => Gate::Resumption,
        Ok(Pass::Admitted(permit)) => Gate::Admitted(permit),
        Ok(Pass::Wait(ticket)) => match ticket.wait().await {
            Ok(permit) => Gate::Admitted(permit),
            Err(reason) => {
                Refusal::shed(peer, reason)
                    .send(&mut stream, accepted_at)
                    .await;
                return Shook::Failed;
            }
        },
        Err(reason) => {
            Refusal::shed(peer, reason)
                .send(&mut stream, accepted_at)
                .await;
            return Shook::Failed;
        }
    };
    // A client that closed or reset while its full handshake waited (in the accept
    // queue, the admission queue) is not signed for.
    if kind == HelloKind::Full && crate::hello::client_gone(&stream) {
        tracing::debug!(%peer, "TLS handshake not begun: the client closed before its signature");
        if let Gate::Admitted(permit) = gate {
            permit.give_back_unused();
        }
        failed(false);
        return Shook::Failed;
    }
    // Admitted (a shed connection needs no socket option: its alert leaves with its FIN).
    let _ = stream.set_nodelay(true);
    // `into_stream` processes the ClientHello, and so signs, as it is called: the step
    // runs with the admission in scope, and the rest of the handshake (a second
    // ClientHello after a HelloRetryRequest signs there) with what the step left of it.
    let start = tokio_rustls::StartHandshake::from_parts(accepted, stream);
    let config = Arc::clone(&server.config);
    let step = move || hsmgate_signer::admission_scope_sync(gate, || start.into_stream(config));
    // A token that computes in this process, slowly (a software token's RSA): the step
    // runs on a signer thread, which signs with its own session, and this task waits
    // without holding a worker thread (see the signer's `offload`).
    let limiter = pool.as_ref().map(|p| Arc::clone(p.limiter()));
    let offload = pool.filter(|p| kind == HelloKind::Full && p.offloads());
    let (accept, gate) = match offload {
        Some(pool) => match pool.offload(step).await {
            Ok(done) => done,
            // No signer thread could take it: here, the signature by the usual path.
            Err(hsmgate_signer::Offloaded::Returned(step)) => step(),
            Err(hsmgate_signer::Offloaded::Lost) => {
                tracing::debug!(%peer, "TLS handshake failed: its signing step waited past the signature deadline");
                failed(false);
                return Shook::Failed;
            }
        },
        None => step(),
    };
    // A slot the step did not sign with (it answered with a HelloRetryRequest) is given
    // back: the rest of the handshake waits for the client, which may never answer.
    let (result, shed) = hsmgate_signer::admission_scope(gate.after_first_step(), accept).await;
    match result {
        Ok(tls) => {
            let session = tls.get_ref().1;
            let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            // Counted once resumed: a resumption attempt that fell back to a full
            // handshake is counted admitted or shed instead, not both.
            if let Some(limiter) = limiter.filter(|_| resumed) {
                limiter.note_resumption();
            }
            metrics::handshake(
                HandshakeResult::Ok,
                metrics::version_label(session.protocol_version()),
                resumed,
                started.elapsed(),
            );
            metrics::handshake_wait(resumed, crate::arrival::waited(arrived, accepted_at));
            Shook::Tls(tls, server)
        }
        Err(e) if shed.is_some() => {
            // A resumption that fell back to a full handshake and found no slot: shed
            // (rustls has sent `internal_error`), timed to the alert written.
            tracing::debug!(%peer, reason = ?shed, "handshake shed");
            metrics::handshake(
                HandshakeResult::Shed,
                "unknown",
                false,
                accepted_at.elapsed(),
            );
            drop(e);
            Shook::Failed
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            failed(*resumption);
            Shook::Failed
        }
    }
}

async fn serve_http<I>(
    io: I,
    conn: ConnInfo,
    listener: &ListenerRt,
    configs: Configs,
    mut watcher: crate::drain::Watcher,
    speak: Speak,
    accepted: std::time::Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let generation = &configs.accepted;
    let peer = conn.peer;
    // The default server of the address sets the client limits (as in nginx).
    let limits = select_server(&generation.servers, listener.spec.addr, None)
        .map(|s| s.settings.client)
        .unwrap_or_default();
    let conn = Arc::new(conn);
    let mut retired = generation.retired.watcher();
    let keepalive = Arc::new(ConnLimits::new(
        accepted,
        limits.keepalive_requests,
        limits.keepalive_time,
        [watcher.clone(), retired.clone()],
    ));
    let counted = Arc::clone(&keepalive);
    // A connection that may speak HTTP/2.
    let http2 = speak != Speak::Http1;
    let (buffers, size) = limits.large_header_buffers;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let head = HeadLimits {
        line: size,
        total: size.saturating_mul(buffers as usize),
        timeout: limits.header_timeout,
        http2,
    };
    let mut io = H1Guard::new(SendTimeout::new(io, limits.send_timeout), head, peer);
    io.note_heads(Arc::clone(keepalive.head_begun()));
    if !listener.keepalive.is_zero() {
        io.keepalive(Arc::clone(&keepalive), listener.keepalive);
    }
    // At the connection limit, an idle connection may be closed for a new one.
    let _registered = crate::reusable::register(conn.id, &keepalive);
    let pipelined = io.pipelined();
    // Boxed: hyper keeps one slot per connection sized for the service's future, for the
    // connection's whole life; a box holds a request's state only while it is served.
    // An upgrade request carries the connection's drain watcher to its tunnel, which
    // outlives the connection's HTTP (`tunnel::run`).
    let tunnel_drain = watcher.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(tunnel_drain.clone());
        }
        let ((number, last), version) = (counted.count(), req.version());
        let on_conn = crate::route::OnConn {
            number,
            pipelined: pipelined.take(number),
        };
        let (generation, conn, counted) = (
            configs.for_request(counted.retired(), conn.listen),
            Arc::clone(&conn),
            Arc::clone(&counted),
        );
        // A request (an HTTP/2 stream) is open until its answer is done: for HTTP/2's
        // `keepalive_timeout`, and for whether the connection is idle (`reusable`).
        let stream = Some(counted.stream());
        Box::pin(async move {
            let mut response = crate::route::handle(generation, conn, req, on_conn, stream).await?;
            let delimited = ConnLimits::close_delimited(version, &response);
            if delimited {
                // An HTTP/1.0 answer: hyper adds `keep-alive` to any other version's.
                *response.version_mut() = http::Version::HTTP_10;
            }
            if last || counted.draining() || delimited {
                counted.close_after(version, &mut response);
            }
            Ok::<_, crate::route::Abort>(response)
        })
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut builder = match speak {
        Speak::Http1 => builder.http1_only(),
        Speak::Http2 => builder.http2_only(),
        Speak::Either => builder,
    };
    // The wait for the next request is the guard's (`H1Guard::keepalive`), and so is a
    // head's own timeout.
    if listener.keepalive.is_zero() {
        builder.http1().keep_alive(false);
    }
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        // What a stream may hold of its answer beyond what the client's window lets
        // out (hyper's default, 400 KB, is about 100 MB for a connection of 128 streams
        // whose client stops reading).
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_header_list_size(u32::try_from(head.total).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams the client opens and resets before they
        // are served; h2's default, stated.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        // Streams the client makes us reset with protocol errors (CVE-2025-8671 style).
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    // HTTP/1.1 with upgrades: a `101` answer hands the connection to the tunnel
    // (route.rs). After ALPN `h2`, HTTP/2 alone: a client that then speaks HTTP/1.1 fails
    // the preface, as with nginx (hyper-util's upgradeable connection reads the version
    // from the first bytes whatever the builder says).
    let served = match speak {
        Speak::Http2 => HttpConn::Plain {
            conn: builder.serve_connection(TokioIo::new(io), service),
        },
        Speak::Http1 | Speak::Either => HttpConn::Upgrades {
            conn: builder.serve_connection_with_upgrades(TokioIo::new(io), service),
        },
    };
    tokio::pin!(served);
    // Served to its end; told to finish (HTTP/1.1: after the request in progress, or
    // at once when idle; HTTP/2: GOAWAY) when the drain begins. When a reload replaces
    // its configuration, or its last request has been served, HTTP/2 is told the same;
    // HTTP/1.1 closes after its next answer, which says `Connection: close` (an idle
    // connection closed by the server races with the client's next request, which
    // would be lost; a client told `close` sends none), and which the live
    // configuration gives if that request begins after the reload (`Configs`).
    // A drain (or, for HTTP/2, a reload) closes the connection once it is idle after a
    // request: one still in its TLS handshake, its HTTP/2 preface, or the head of a
    // request is served first (that request's answer then closes it), as nginx closes
    // only its idle keep-alive connections when it stops.
    let mut finishing = false;
    let mut told = false;
    let mut finish_began = std::time::Instant::now();
    let overstay = u64::from(limits.http2_max_concurrent_streams);
    let ended = loop {
        tokio::select! {
            biased;
            ended = served.as_mut() => break ended,
            // A client that does not answer the GOAWAY's PING (or keeps opening streams
            // after it) is closed once idle after FINISH_GRACE.
            () = keepalive.finished_late(finish_began, FINISH_GRACE, overstay), if finishing => {
                tracing::debug!(%peer, "connection told to finish did not within {FINISH_GRACE:?}: closed");
                break Ok(());
            }
            () = watcher.draining(), if !told => {
                told = true;
                continue;
            }
            () = retired.draining(), if !told && http2 => {
                told = true;
                continue;
            }
            () = keepalive.served_and_idle(), if told && !finishing => {}
            () = keepalive.spent(), if !finishing && http2 => {}
            () = keepalive.idle(listener.keepalive), if !finishing && http2 && !listener.keepalive.is_zero() => {
                tracing::debug!(%peer, "HTTP/2 connection idle for keepalive_timeout: GOAWAY");
            }
            () = keepalive.closed_for_room(), if !finishing => {
                tracing::debug!(%peer, "idle connection closed for a new one at the connection limit");
            }
        }
        finishing = true;
        finish_began = std::time::Instant::now();
        // HTTP/1.1: close after the request in progress; HTTP/2: GOAWAY.
        match served.as_mut().project() {
            HttpConnProj::Plain { conn } => conn.graceful_shutdown(),
            HttpConnProj::Upgrades { conn } => conn.graceful_shutdown(),
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
