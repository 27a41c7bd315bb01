//! The proxy: listeners bound at build time, an accept loop per listener, a TLS
//! handshake per connection (bounded in time), then HTTP/1.1 or HTTP/2 served by hyper
//! with each request forwarded upstream. Shutdown stops accepting and drains the open
//! connections for at most the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hsmgate_config::Config;
use hsmgate_signer::{GroupSettings, SignerPool};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::error::ProxyError;
use crate::forward::Forwarder;
use crate::tls;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy ready to run: signer started, key checked, sockets bound.
#[derive(Debug)]
pub struct Proxy {
    listeners: Vec<(std::net::TcpListener, Arc<ServerConfig>)>,
    forwarder_config: hsmgate_config::Upstream,
    pool: SignerPool,
    grace: Duration,
    admin: Option<std::net::TcpListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Proxy {
    /// Start the signer pool, check the certificate against the token key, build the TLS
    /// settings and bind every listener. Needs no async runtime.
    pub fn build(config: &Config) -> Result<Proxy, ProxyError> {
        let (pool, key) = Self::signing(config)?;
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let server_config = tls::server_config(l, &key)?;
            let socket =
                std::net::TcpListener::bind(l.address).map_err(|source| ProxyError::Bind {
                    addr: l.address,
                    source,
                })?;
            socket
                .set_nonblocking(true)
                .map_err(|source| ProxyError::Bind {
                    addr: l.address,
                    source,
                })?;
            listeners.push((socket, server_config));
        }
        let admin = match config.admin {
            Some(addr) => {
                let socket = std::net::TcpListener::bind(addr)
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                socket
                    .set_nonblocking(true)
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                Some(socket)
            }
            None => None,
        };
        Ok(Proxy {
            listeners,
            forwarder_config: config.upstream.clone(),
            pool,
            grace: config.shutdown_grace,
            admin,
            metrics: None,
        })
    }

    /// What `hsmgate -t` checks beyond the file: the token, PIN, key, certificate and
    /// TLS settings, without binding any socket.
    pub fn check(config: &Config) -> Result<(), ProxyError> {
        let (_pool, key) = Self::signing(config)?;
        for l in &config.listeners {
            tls::server_config(l, &key)?;
        }
        Ok(())
    }

    fn signing(
        config: &Config,
    ) -> Result<(SignerPool, Arc<rustls::sign::CertifiedKey>), ProxyError> {
        let chain = tls::load_chain(&config.tls.certificate_chain)?;
        // Every HSM member's key is checked against the certificate's before use.
        let expected = tls::expected_key(&chain, &config.tls.certificate_chain)?;
        let settings = GroupSettings::from_config(config, Some(expected))?;
        let pool = SignerPool::start_group(settings)?;
        let key = tls::certified_key(
            chain,
            &config.tls.certificate_chain,
            &pool,
            &config.tls.key.uri.to_string(),
        )?;
        Ok((pool, key))
    }

    /// Serve `/metrics` from this Prometheus handle.
    pub fn with_metrics(
        mut self,
        handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Proxy {
        self.metrics = handle;
        self
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The signer pool.
    pub fn pool(&self) -> &SignerPool {
        &self.pool
    }

    /// Serve until `shutdown` completes, then drain for at most the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let forwarder = Forwarder::new(&self.forwarder_config);
        // Accept loops hold the Arc to make a watcher per connection; once they have
        // stopped, it is unwrapped to signal the drain.
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut accept_loops = Vec::new();
        for (socket, server_config) in self.listeners {
            let addr = socket.local_addr().map_err(|source| ProxyError::Io {
                what: "listener address".into(),
                source,
            })?;
            let listener = TcpListener::from_std(socket).map_err(|source| ProxyError::Io {
                what: format!("listener {addr}"),
                source,
            })?;
            tracing::info!(address = %addr, "listening");
            let acceptor = TlsAcceptor::from(server_config);
            let ctx = ConnContext {
                acceptor,
                forwarder: forwarder.clone(),
            };
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                ctx,
                Arc::clone(&graceful),
                stop_rx.clone(),
            )));
        }
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin = match self.admin {
            Some(socket) => {
                let addr = socket.local_addr().ok();
                let listener = TcpListener::from_std(socket).map_err(|source| ProxyError::Io {
                    what: "admin listener".into(),
                    source,
                })?;
                if let Some(addr) = addr {
                    tracing::info!(address = %addr, "admin listening (/healthz /readyz /metrics)");
                }
                let state = crate::admin::AdminState {
                    pool: self.pool.clone(),
                    draining: Arc::clone(&draining),
                    metrics: self.metrics.clone(),
                };
                Some(tokio::spawn(crate::admin::serve(listener, state)))
            }
            None => None,
        };
        shutdown.await;
        draining.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(grace = ?self.grace, "shutting down: no new connections, draining open ones");
        let _ = stop_tx.send(true);
        for l in accept_loops {
            let _ = l.await;
        }
        let graceful =
            Arc::try_unwrap(graceful).expect("accept loops have ended and dropped their handles");
        match tokio::time::timeout(self.grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections drained"),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "grace period over; closing the remaining connections")
            }
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        Ok(())
    }
}

/// What every connection of a listener needs.
#[derive(Clone)]
struct ConnContext {
    acceptor: TlsAcceptor,
    forwarder: Forwarder,
}

async fn accept_loop(
    listener: TcpListener,
    ctx: ConnContext,
    graceful: Arc<GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let watcher = graceful.watcher();
                tokio::spawn(serve_connection(stream, peer, ctx.clone(), watcher));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, ctx: ConnContext, watcher: Watcher) {
    let _ = stream.set_nodelay(true);
    // The handshake may call the signer, which waits off the async workers.
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let forwarder = ctx.forwarder;
    let service = service_fn(move |req| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, std::convert::Infallible>(forwarder.forward(req, peer).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
