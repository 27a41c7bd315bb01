//! [`Proxy`]: the proxy at run time: built from a configuration (keys opened, sockets
//! bound once per address), then served: an accept loop per address
//! ([`conn`](crate::conn)) reading the current [`Generation`] through a `watch` channel.
//!
//! It obeys one control path ([`Control`] messages, from [`crate::control`]): `Reload` builds the next generation off the async
//! workers and swaps it in only if everything opened (sockets of unchanged addresses
//! are kept, new ones bound, removed ones closed; open connections finish their requests
//! in progress on their generation, then close, as nginx's old workers do); `Quit` stops accepting and drains for the grace period; `Stop` does the
//! same with a one-second grace; `Reopen` reopens the log files.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hsmgate_config::Config;
use hsmgate_signer::SignerPool;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::conn::{accept_loop, bind, bind_admin};
use crate::control::Control;
use crate::error::ProxyError;
use crate::generation::{ConfigSource, Generation};
use crate::keys::{KeyDefaults, PoolCache};
use crate::site::{ListenSpec, Site};

/// The drain of a fast stop (SIGINT; SIGTERM for nginx configurations).
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);

/// A proxy ready to run: keys opened and checked, sockets bound.
#[derive(Debug)]
pub struct Proxy {
    source: Option<ConfigSource>,
    defaults: KeyDefaults,
    generation: Arc<Generation>,
    sockets: HashMap<SocketAddr, std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    on_reopen: Option<ReopenHook>,
}

/// Called on [`Control::Reopen`] besides the access logs.
#[derive(Clone)]
pub struct ReopenHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ReopenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReopenHook")
    }
}

impl Proxy {
    /// From a native configuration (no reload source). Needs no async runtime.
    pub fn build(config: &Config) -> Result<Proxy, ProxyError> {
        Self::from_site(
            Site::from_native(config),
            None,
            KeyDefaults::default(),
            None,
        )
    }

    /// From a configuration file (either format), reloadable.
    pub fn from_source(source: ConfigSource, defaults: KeyDefaults) -> Result<Proxy, ProxyError> {
        Self::from_source_with_admin(source, defaults, None)
    }

    /// [`from_source`](Self::from_source) with its admin listener already bound (`admin`;
    /// `None`: bound from the configuration), as [`crate::waiting`] hands it over.
    pub(crate) fn from_source_with_admin(
        source: ConfigSource,
        defaults: KeyDefaults,
        admin: Option<std::net::TcpListener>,
    ) -> Result<Proxy, ProxyError> {
        let site = load_logged(&source)?;
        Self::from_site(site, Some(source), defaults, admin)
    }

    fn from_site(
        site: Site,
        source: Option<ConfigSource>,
        defaults: KeyDefaults,
        admin: Option<std::net::TcpListener>,
    ) -> Result<Proxy, ProxyError> {
        let admin = match admin {
            Some(bound) => Some(bound),
            None => site.admin.map(bind_admin).transpose()?,
        };
        let generation = Generation::build(site, &defaults, &PoolCache::default())?;
        let mut sockets = HashMap::new();
        for l in generation.listeners.values() {
            sockets.insert(l.spec.addr, bind(&l.spec)?);
        }
        Ok(Proxy {
            source,
            defaults,
            generation: Arc::new(generation),
            sockets,
            admin,
            metrics: None,
            on_reopen: None,
        })
    }

    /// What `hsmgate -t` checks beyond the file: tokens, PINs, keys, certificates and
    /// TLS settings, without binding any socket.
    pub fn check(config: &Config) -> Result<(), ProxyError> {
        Generation::build(
            Site::from_native(config),
            &KeyDefaults::default(),
            &PoolCache::default(),
        )
        .map(drop)
    }

    /// [`check`](Self::check) for a configuration file of either format; the built
    /// generation is returned (keys still open).
    pub fn check_source(
        source: &ConfigSource,
        defaults: &KeyDefaults,
    ) -> Result<Generation, ProxyError> {
        let site = load_logged(source)?;
        Generation::build(site, defaults, &PoolCache::default())
    }

    /// Serve `/metrics` from this Prometheus handle.
    pub fn with_metrics(
        mut self,
        handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Proxy {
        self.metrics = handle;
        self
    }

    /// Also call `f` on [`Control::Reopen`] (e.g. to reopen the error log).
    pub fn on_reopen(mut self, f: ReopenHook) -> Proxy {
        self.on_reopen = Some(f);
        self
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .sockets
            .values()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        addrs.sort();
        addrs
    }

    /// The admin listener's address, if one is configured (useful with port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// A signer pool of the configuration (with one token key, its pool; with several,
    /// any one of them).
    pub fn pool(&self) -> Option<&SignerPool> {
        self.generation.pools.pools().next()
    }

    /// The current generation.
    pub fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }

    /// Serve until `shutdown` completes, then drain for at most the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let (tx, rx) = mpsc::channel(4);
        let stop = async move {
            shutdown.await;
            let _ = tx.send(Control::Quit).await;
            // Keep the sender alive so the control loop sees Quit, not a closed channel.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            r = self.run_controlled(rx) => r,
            _ = stop => Ok(()),
        }
    }

    /// Serve, obeying `control` until a stop; a closed channel is a graceful stop.
    pub async fn run_controlled(
        mut self,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<(), ProxyError> {
        let draining = Arc::new(AtomicBool::new(false));
        let (gen_tx, gen_rx) = watch::channel(Arc::clone(&self.generation));
        let admin = self.start_admin(&draining, gen_rx.clone())?;
        // The proxy lets go of its generation: each one lives as long as the watch
        // channel or an open connection holds it (its signer pools too).
        let Proxy {
            source,
            defaults,
            generation,
            sockets,
            on_reopen,
            ..
        } = self;
        let graceful = Arc::new(crate::drain::Drain::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let ids = Arc::new(AtomicU64::new(0));
        // Sized by the configuration at start (a reload does not resize it).
        let limit = generation.site.connections.map(|n| {
            crate::reusable::enable(n);
            Arc::new(Semaphore::new(n))
        });
        let mut accept_loops = Vec::new();
        let mut live: HashSet<SocketAddr> = HashSet::new();
        let spawn_loop = |addr: SocketAddr, socket: std::net::TcpListener| {
            let listener = TcpListener::from_std(socket).map_err(|source| ProxyError::Io {
                what: format!("listener {addr}"),
                source,
            })?;
            if let Ok(actual) = listener.local_addr() {
                tracing::info!(address = %actual, "listening");
            }
            Ok::<_, ProxyError>(tokio::spawn(accept_loop(
                addr,
                listener,
                gen_rx.clone(),
                Arc::clone(&graceful),
                stop_rx.clone(),
                Arc::clone(&ids),
                limit.clone(),
            )))
        };
        for (addr, socket) in sockets {
            live.insert(addr);
            accept_loops.push(spawn_loop(addr, socket)?);
        }
        crate::notify::notify("READY=1");
        crate::metrics::config_loaded(true, false);
        generation.start_stapling();
        let mut current = generation;
        // SIGTERM drains gracefully for the native format, stops fast for nginx's.
        let native = source.as_ref().is_none_or(ConfigSource::is_native);
        let mut fast = loop {
            match control.recv().await {
                Some(Control::Reload) => {
                    crate::notify::reloading();
                    // Signals are read while the reload runs (a token's login or a name
                    // lookup may hang): a stop abandons it, and the old configuration
                    // stops as it would have.
                    let (outcome, stop) = {
                        let reloading = reload(source.as_ref(), &defaults, &current, &live);
                        tokio::pin!(reloading);
                        loop {
                            tokio::select! {
                                r = &mut reloading => break (Some(r), None),
                                c = control.recv() => match c {
                                    Some(Control::Reopen) => reopen_logs(on_reopen.as_ref()),
                                    Some(Control::Reload) => {
                                        tracing::info!("reload signal during a reload: ignored");
                                    }
                                    Some(Control::Stop) => break (None, Some(true)),
                                    Some(Control::Terminate) => break (None, Some(!native)),
                                    Some(Control::Quit) | None => break (None, Some(false)),
                                },
                            }
                        }
                    };
                    if let Some(fast) = stop {
                        tracing::warn!("stop signal during a reload: the reload is abandoned");
                        break fast;
                    }
                    let Some(outcome) = outcome else { continue };
                    match outcome {
                        Ok((next, sockets)) => {
                            live = next.addrs().into_iter().collect();
                            // The old generation's connections finish (after their
                            // answers in progress) and their clients reconnect to this one.
                            current.retired.signal();
                            current = Arc::new(next);
                            current.start_stapling();
                            let _ = gen_tx.send(Arc::clone(&current));
                            for (addr, socket) in sockets {
                                // A socket tokio cannot take is logged; the proxy serves on.
                                match spawn_loop(addr, socket) {
                                    Ok(l) => accept_loops.push(l),
                                    Err(e) => tracing::error!("{e}"),
                                }
                            }
                            tracing::info!(config = %current.site.source.display(), "configuration reloaded");
                            crate::metrics::config_loaded(true, true);
                        }
                        Err(e) => {
                            tracing::error!(
                                "reload failed, the previous configuration keeps serving: {e}"
                            );
                            crate::metrics::config_loaded(false, true);
                        }
                    }
                    crate::notify::notify("READY=1");
                }
                Some(Control::Reopen) => reopen_logs(on_reopen.as_ref()),
                Some(Control::Stop) => break true,
                Some(Control::Terminate) => break !native,
                Some(Control::Quit) | None => break false,
            }
        };
        crate::notify::notify("STOPPING=1");
        draining.store(true, Ordering::Release);
        let grace = if fast {
            FAST_STOP_GRACE.min(current.site.grace)
        } else {
            current.site.grace
        };
        tracing::info!(
            ?grace,
            fast,
            "shutting down: no new connections, draining open ones"
        );
        let _ = stop_tx.send(true);
        for l in accept_loops {
            let _ = l.await;
        }
        let graceful =
            Arc::try_unwrap(graceful).expect("accept loops have ended and dropped their handles");
        let drained = graceful.shutdown();
        tokio::pin!(drained);
        let mut deadline = tokio::time::Instant::now() + grace;
        let mut listening = true;
        loop {
            tokio::select! {
                () = &mut drained => {
                    tracing::info!("all connections drained");
                    break;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(?grace, "grace period over; closing the remaining connections");
                    break;
                }
                c = control.recv(), if listening && !fast => match c {
                    // A second stop signal cuts a graceful drain short.
                    Some(Control::Stop | Control::Terminate) => {
                        tracing::info!("stop signal during the drain: closing the remaining connections within 1 s");
                        fast = true;
                        deadline = deadline.min(tokio::time::Instant::now() + FAST_STOP_GRACE);
                    }
                    Some(_) => {}
                    None => listening = false,
                },
            }
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        crate::access_log::AccessLogWriter::get().flush();
        Ok(())
    }

    /// Serve the admin endpoints; they read the generation `generation` carries, so
    /// they follow reloads (all keys of the current configuration).
    fn start_admin(
        &mut self,
        draining: &Arc<AtomicBool>,
        generation: watch::Receiver<Arc<Generation>>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, ProxyError> {
        let Some(socket) = self.admin.take() else {
            tracing::info!(
                "no admin listener (/healthz /readyz /metrics /status): set one with [admin] \
                 address, --admin, HSMGATE_ADMIN, or `env HSMGATE_ADMIN=ADDR;` in an nginx file"
            );
            return Ok(None);
        };
        let addr = socket.local_addr().ok();
        let listener = TcpListener::from_std(socket).map_err(|source| ProxyError::Io {
            what: "admin listener".into(),
            source,
        })?;
        if let Some(addr) = addr {
            tracing::info!(address = %addr, "admin listening (/healthz /readyz /metrics /status)");
        }
        let state = crate::admin::AdminState {
            generation,
            draining: Arc::clone(draining),
            metrics: self.metrics.clone(),
            started: std::time::Instant::now(),
        };
        Ok(Some(tokio::spawn(crate::admin::serve(listener, state))))
    }
}

/// SIGUSR1: the access logs, and the error log through `hook`, reopened.
fn reopen_logs(hook: Option<&ReopenHook>) {
    tracing::info!("reopening log files");
    crate::access_log::AccessLogWriter::get().reopen();
    if let Some(f) = hook {
        (f.0)();
    }
}

/// Build the next generation (off the async workers) and bind its new addresses.
async fn reload(
    source: Option<&ConfigSource>,
    defaults: &KeyDefaults,
    current: &Arc<Generation>,
    live: &HashSet<SocketAddr>,
) -> Result<(Generation, Vec<(SocketAddr, std::net::TcpListener)>), ProxyError> {
    let Some(source) = source.cloned() else {
        return Err(ProxyError::Invalid(
            "this proxy was not started from a configuration file".into(),
        ));
    };
    let name = match source.path.as_os_str().is_empty() {
        true => hsmgate_config::ENVIRONMENT.to_owned(),
        false => source.path.display().to_string(),
    };
    tracing::info!(config = %name, "reloading the configuration");
    let defaults = defaults.clone();
    let previous = current.pools.clone();
    let next = tokio::task::spawn_blocking(move || {
        let site = load_logged(&source)?;
        Generation::build(site, &defaults, &previous)
    })
    .await
    .map_err(|e| ProxyError::Invalid(format!("reload task failed: {e}")))??;
    if next.site.admin != current.site.admin {
        tracing::warn!(
            was = ?current.site.admin,
            now = ?next.site.admin,
            "the admin listener's address changed: it takes effect when hsmgate restarts"
        );
    }
    let mut sockets = Vec::new();
    for spec in &next.site.listens {
        if !live.contains(&spec.addr) {
            sockets.push((spec.addr, bind(spec)?));
        } else if let Some(old) = current.site.listens.iter().find(|o| o.addr == spec.addr)
            && socket_changed(old, spec)
        {
            tracing::warn!(addr = %spec.addr, "the listen options of this address changed: they take effect when hsmgate restarts (its socket is kept across reloads)");
        }
    }
    Ok((next, sockets))
}

/// Whether a kept address's socket-level `listen` options differ (`reuseport`,
/// `ipv6only`, `backlog`, `deferred`, `so_keepalive`, `fastopen`, `rcvbuf`, `sndbuf`).
fn socket_changed(old: &ListenSpec, new: &ListenSpec) -> bool {
    (old.reuseport, old.ipv6only, old.backlog, &old.socket)
        != (new.reuseport, new.ipv6only, new.backlog, &new.socket)
}

/// Load the configuration, logging its warnings.
fn load_logged(source: &ConfigSource) -> Result<Site, ProxyError> {
    let (site, warnings) = source.load()?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_socket_option_of_a_kept_address_is_noticed() {
        let spec = |backlog: u32, deferred: bool| ListenSpec {
            addr: "127.0.0.1:443".parse().unwrap(),
            ssl: true,
            http2: false,
            reuseport: false,
            ipv6only: true,
            backlog,
            socket: hsmgate_config::nginx::SocketOptions {
                deferred,
                ..Default::default()
            },
            protocols: None,
            proxy_protocol: false,
        };
        assert!(!socket_changed(&spec(511, false), &spec(511, false)));
        assert!(socket_changed(&spec(511, false), &spec(511, true)));
        assert!(socket_changed(&spec(511, false), &spec(1024, false)));
        // What is not a socket option (TLS, HTTP/2) is applied by the reload itself.
        let mut h2 = spec(511, false);
        h2.http2 = true;
        assert!(!socket_changed(&spec(511, false), &h2));
    }
}
