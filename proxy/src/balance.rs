//! Upstream groups at run time: the `server`s of an `upstream` block (a `proxy_pass
//! host:port` is a group of one), the first one a request tries picked by the group's
//! method ([`crate::pick`]: nginx's smooth weighted round-robin by default,
//! `least_conn`, `ip_hash`, `hash`, `random`), the other primaries after it, with a
//! keep-alive connection pool per group. `down` servers are skipped;
//! `backup` servers are used only when a request could not connect to any primary.
//! Passive health as nginx: `max_fails` failures (default 1) take a server out of the
//! rotation for `fail_timeout` (default 10 s); when every primary is out, all are tried.
//!
//! `proxy_pass https://`: the pool is per (group, TLS settings) — the generation keys
//! groups by their location's `proxy_ssl_*` — and, within a group, per `proxy_ssl_name`
//! value (one pool when the name is constant; a name with variables such as `$host` gets
//! a pool per value, at most [`MAX_NAMED_POOLS`] kept).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::upstream_stream::Dial;
use bytes::Bytes;
use hsmgate_config::nginx::{BalanceMethod, Template, UpstreamGroup};
use http_body_util::combinators::BoxBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use smallvec::SmallVec;

/// Errors of a request body on its way upstream.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream.
pub(crate) type UpstreamBody = BoxBody<Bytes, BodyError>;

/// An empty body to send upstream.
pub(crate) fn empty_body() -> UpstreamBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}
/// A client with its connection pool (plain HTTP or TLS).
pub(crate) use crate::upstream_pool::UpstreamClient;

/// Pools kept for the values of a `proxy_ssl_name` with variables (all are dropped when
/// one more is needed: their connections close once idle).
pub(crate) const MAX_NAMED_POOLS: usize = 64;

/// TLS to a group's servers.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The rustls settings of the location's `proxy_ssl_*`.
    pub config: Arc<rustls::ClientConfig>,
    /// `proxy_ssl_name` (`None`: `$proxy_host`).
    pub name: Option<Template>,
}

/// One group: its servers, the round-robin state and the connection pool.
#[derive(Debug)]
pub struct Balancer {
    /// `$proxy_host`: the group name or the `host:port` (without the scheme's port).
    pub name: String,
    /// The same, shared with each request's log context, and as the upstream request's
    /// default `Host` (made once, not per request).
    pub(crate) proxy_host: Arc<str>,
    pub(crate) host_header: Option<http::HeaderValue>,
    servers: Vec<Peer>,
    /// The servers' weights, by index.
    weights: Vec<i64>,
    /// The primaries' indexes (`down` ones included: the hash methods index them all)
    /// and their weights, in that order.
    primaries: Vec<usize>,
    primary_weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
    method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    connect_timeout: Duration,
    keepalive: usize,
    /// The client of a plain group, or of the constant name of a TLS group.
    client: Option<UpstreamClient>,
    tls: Option<UpstreamTls>,
    named: Mutex<HashMap<String, UpstreamClient>>,
    /// Response times of this group's exchanges, by result (`/metrics`).
    pub(crate) times: crate::metrics::UpstreamTimes,
}

/// [`BalanceMethod`] ready to pick.
#[derive(Debug)]
enum Method {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash {
        key: Template,
        ring: Option<crate::pick::Ring>,
    },
    Random {
        two: bool,
    },
}

/// A request in progress on a server (for `least_conn`), until dropped.
#[derive(Debug)]
pub(crate) struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Peer {
    addr: String,
    weight: i64,
    backup: bool,
    /// `down`: kept (the hash methods index it) but never picked.
    down: bool,
    /// Requests in progress.
    active: Arc<AtomicUsize>,
    max_fails: u32,
    fail_timeout: Duration,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    fails: u32,
    out_until: Option<Instant>,
}

impl Peer {
    fn new(addr: &str, weight: u32, backup: bool, max_fails: u32, fail_timeout: Duration) -> Peer {
        Peer {
            addr: addr.to_owned(),
            weight: i64::from(weight.max(1)),
            backup,
            down: false,
            active: Arc::new(AtomicUsize::new(0)),
            max_fails,
            fail_timeout,
            health: Mutex::new(Health::default()),
        }
    }

    fn available(&self, now: Instant) -> bool {
        if self.down {
            return false;
        }
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.out_until.is_none_or(|t| t <= now)
    }
}

/// The servers to try for one request, best first (on the stack for up to four: no
/// allocation per request for the usual group).
pub(crate) type Order<'a> = SmallVec<[&'a str; 4]>;

/// Indices of servers, on the stack for up to eight.
type Servers = SmallVec<[usize; 8]>;

impl Balancer {
    /// A group from an `upstream` block; `connect_timeout` from the location; `tls` for
    /// `proxy_pass https://`.
    pub fn group(
        name: &str,
        group: &UpstreamGroup,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Balancer {
        let servers: Vec<Peer> = (group.servers.iter())
            .map(|s| Peer {
                down: s.down,
                ..Peer::new(&s.addr, s.weight, s.backup, s.max_fails, s.fail_timeout)
            })
            .collect();
        let mut b = Self::new(
            name.to_owned(),
            servers,
            group.keepalive,
            connect_timeout,
            tls,
        );
        b.method = match &group.method {
            BalanceMethod::RoundRobin => Method::RoundRobin,
            BalanceMethod::LeastConn => Method::LeastConn,
            BalanceMethod::IpHash => Method::IpHash,
            BalanceMethod::Random { two } => Method::Random { two: *two },
            BalanceMethod::Hash { key, consistent } => {
                let names: Vec<&str> = (b.primaries.iter())
                    .map(|&i| b.servers[i].addr.as_str())
                    .collect();
                Method::Hash {
                    key: key.clone(),
                    ring: consistent.then(|| crate::pick::Ring::new(&names, &b.primary_weights)),
                }
            }
        };
        b
    }

    /// A group of one server (`proxy_pass http[s]://host:port`), pooled.
    pub fn single(addr: &str, connect_timeout: Duration, tls: Option<UpstreamTls>) -> Balancer {
        let port = if tls.is_some() { ":443" } else { ":80" };
        let name = addr.strip_suffix(port).unwrap_or(addr).to_owned();
        // nginx: a lone server is never taken out of the rotation.
        let peer = Peer::new(addr, 1, false, 0, Duration::ZERO);
        let mut b = Self::new(name, vec![peer], Some(256), connect_timeout, tls);
        if crate::upstream_stream::unix_path(addr).is_some() {
            // nginx's `$proxy_host` (and so the `Host` sent) for a Unix socket.
            b.proxy_host = Arc::from("localhost");
            b.host_header = Some(http::HeaderValue::from_static("localhost"));
        }
        b
    }

    fn new(
        name: String,
        servers: Vec<Peer>,
        keepalive: Option<u32>,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Balancer {
        let current = Mutex::new(vec![0; servers.len()]);
        let weights: Vec<i64> = servers.iter().map(|p| p.weight).collect();
        let primaries: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].backup).collect();
        let primary_weights = primaries.iter().map(|&i| weights[i]).collect();
        let mut b = Balancer {
            weights,
            primaries,
            primary_weights,
            scheme: if tls.is_some() { "https" } else { "http" },
            times: crate::metrics::UpstreamTimes::new(&name),
            proxy_host: Arc::from(name.as_str()),
            host_header: http::HeaderValue::from_str(&name).ok(),
            name,
            servers,
            current,
            method: Method::RoundRobin,
            connect_timeout,
            keepalive: keepalive.unwrap_or(0) as usize,
            client: None,
            tls,
            named: Mutex::new(HashMap::new()),
        };
        b.client = match &b.tls {
            None => Some(b.build_client(None)),
            Some(t) => match t
                .name
                .as_ref()
                .map_or(Some(b.name.clone()), |n| n.as_literal())
            {
                // A constant name: one pool, built now (a bad name fails per request).
                Some(n) => crate::upstream_tls::server_name(&n)
                    .ok()
                    .map(|n| b.build_client(Some(n))),
                None => None,
            },
        };
        b
    }

    fn build_client(&self, name: Option<rustls::pki_types::ServerName<'static>>) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.enforce_http(false);
        let connector = match (&self.tls, name) {
            (Some(tls), Some(name)) => HttpsConnectorBuilder::new()
                .with_tls_config((*tls.config).clone())
                .https_or_http()
                .with_server_name_resolver(FixedServerNameResolver::new(name))
                .enable_http1()
                .wrap_connector(Dial(http)),
            _ => HttpsConnector::from((Dial(http), empty_tls())),
        };
        UpstreamClient::new(connector, self.keepalive, self.scheme)
    }

    /// The client (and pool) for one request: `expand` gives the value of a
    /// `proxy_ssl_name` with variables. Err: the name is not a valid server name.
    pub(crate) fn client(
        &self,
        expand: impl Fn(&Template) -> String,
    ) -> Result<UpstreamClient, String> {
        let name = match (&self.client, &self.tls) {
            (Some(c), _) => return Ok(c.clone()),
            (None, None) => unreachable!("a plain group always has its client"),
            (None, Some(t)) => t.name.as_ref().map_or_else(|| self.name.clone(), expand),
        };
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = named.get(&name) {
            return Ok(c.clone());
        }
        let server_name = crate::upstream_tls::server_name(&name)?;
        let client = self.build_client(Some(server_name));
        if named.len() >= MAX_NAMED_POOLS {
            named.clear();
        }
        named.insert(name, client.clone());
        Ok(client)
    }

    /// The key of a `hash` group, which [`Balancer::order`] wants expanded.
    pub(crate) fn hash_key(&self) -> Option<&Template> {
        match &self.method {
            Method::Hash { key, .. } => Some(key),
            _ => None,
        }
    }

    /// One request in progress on `addr` until the [`Load`] drops.
    pub(crate) fn load(&self, addr: &str) -> Option<Load> {
        let peer = self.servers.iter().find(|p| p.addr == addr)?;
        peer.active.fetch_add(1, Ordering::Relaxed);
        Some(Load(Arc::clone(&peer.active)))
    }

    /// The servers to try for one request from `client` (`key`: a `hash` group's key
    /// expanded), best first: the primary the method picks, the other primaries after
    /// it, then the backups.
    pub fn order(&self, client: std::net::IpAddr, key: &str) -> Order<'_> {
        // A group of one server (no backup): it, unless `down`. nginx never takes a
        // lone server out of the rotation, so its health needs no look.
        if let [only] = &self.servers[..]
            && !only.backup
        {
            return match only.down {
                true => Order::new(),
                false => smallvec::smallvec![only.addr.as_str()],
            };
        }
        let now = Instant::now();
        let (primaries, weights) = (&self.primaries, &self.weights);
        let all: Servers = (primaries.iter().copied())
            .filter(|&i| !self.servers[i].down)
            .collect();
        let up: Servers = (all.iter().copied())
            .filter(|&i| self.servers[i].available(now))
            .collect();
        let usable = if up.is_empty() { all } else { up };
        let mut out = Order::new();
        if !usable.is_empty() {
            let can = |k: usize| usable.contains(&primaries[k]);
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let hashed = match &self.method {
                Method::IpHash => crate::pick::ip_hash(client, &self.primary_weights, can),
                Method::Hash {
                    ring: Some(ring), ..
                } => ring.pick(key.as_bytes(), can),
                Method::Hash { ring: None, .. } => {
                    crate::pick::key_hash(key.as_bytes(), &self.primary_weights, can)
                }
                _ => None,
            }
            .map(|k| primaries[k]);
            let active = || -> Vec<usize> {
                let n = self
                    .servers
                    .iter()
                    .map(|p| p.active.load(Ordering::Relaxed));
                n.collect()
            };
            let best = match (&self.method, hashed) {
                (_, Some(i)) => i,
                (Method::LeastConn, None) => {
                    let least = crate::pick::least_loaded(&active(), weights, &usable);
                    crate::pick::round_robin(&mut current, weights, &least)
                }
                (Method::Random { two }, None) => {
                    let first = crate::pick::random(weights, &usable);
                    let rest: Vec<usize> =
                        (usable.iter().copied()).filter(|&i| i != first).collect();
                    match (*two, rest.is_empty()) {
                        (true, false) => {
                            let second = crate::pick::random(weights, &rest);
                            crate::pick::least_loaded(&active(), weights, &[first, second])[0]
                        }
                        _ => first,
                    }
                }
                // Round-robin, and the hash methods after 20 unusable tries.
                _ => crate::pick::round_robin(&mut current, weights, &usable),
            };
            out.push(self.servers[best].addr.as_str());
            let pos = usable.iter().position(|&i| i == best).unwrap_or(0);
            for k in 1..usable.len() {
                out.push(self.servers[usable[(pos + k) % usable.len()]].addr.as_str());
            }
        }
        out.extend(
            self.servers
                .iter()
                .filter(|s| s.backup && s.available(now))
                .map(|s| s.addr.as_str()),
        );
        out
    }

    /// A request to `addr` failed (connect error, error, timeout).
    pub fn failed(&self, addr: &str) {
        let Some(peer) = self.servers.iter().find(|p| p.addr == addr) else {
            return;
        };
        if peer.max_fails == 0 {
            return;
        }
        let mut h = peer.health.lock().unwrap_or_else(|e| e.into_inner());
        h.fails += 1;
        if h.fails >= peer.max_fails {
            h.fails = 0;
            h.out_until = Some(Instant::now() + peer.fail_timeout);
            tracing::warn!(upstream = %self.name, server = %addr, for_ = ?peer.fail_timeout, "upstream server temporarily disabled");
        }
    }

    /// A request to `addr` got a response.
    pub fn succeeded(&self, addr: &str) {
        if let Some(peer) = self.servers.iter().find(|p| p.addr == addr) {
            let mut h = peer.health.lock().unwrap_or_else(|e| e.into_inner());
            h.fails = 0;
        }
    }
}

/// The TLS settings of a plain-HTTP connector (never used: `http://` URIs only).
fn empty_tls() -> Arc<rustls::ClientConfig> {
    static EMPTY: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = EMPTY.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    });
    Arc::clone(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmgate_config::nginx::UpstreamServer;

    const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn server(addr: &str, weight: u32, backup: bool) -> UpstreamServer {
        UpstreamServer {
            addr: addr.into(),
            weight,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            backup,
            down: false,
        }
    }

    #[tokio::test]
    async fn smooth_weighted_round_robin_with_backup_last() {
        let group = UpstreamGroup {
            servers: vec![
                server("a:1", 5, false),
                server("b:1", 1, false),
                server("c:1", 1, true),
            ],
            keepalive: Some(4),
            method: BalanceMethod::RoundRobin,
            location: hsmgate_config::Location {
                file: "f".into(),
                line: 1,
                col: 1,
            },
        };
        let b = Balancer::group("app", &group, Duration::from_secs(1), None);
        let picks: Vec<String> = (0..12).map(|_| b.order(CLIENT, "")[0].to_owned()).collect();
        assert_eq!(picks.iter().filter(|p| *p == "a:1").count(), 10);
        assert_eq!(picks.iter().filter(|p| *p == "b:1").count(), 2);
        assert_eq!(b.order(CLIENT, "").last().copied(), Some("c:1"));
        assert_eq!(
            Balancer::single("h:80", Duration::from_secs(1), None).name,
            "h"
        );
    }

    #[tokio::test]
    async fn failed_servers_leave_the_rotation_for_fail_timeout() {
        let mut a = server("a:1", 1, false);
        a.fail_timeout = Duration::from_millis(200);
        let group = UpstreamGroup {
            servers: vec![a, server("b:1", 1, false)],
            keepalive: None,
            method: BalanceMethod::RoundRobin,
            location: hsmgate_config::Location {
                file: "f".into(),
                line: 1,
                col: 1,
            },
        };
        let b = Balancer::group("app", &group, Duration::from_secs(1), None);
        b.failed("a:1");
        for _ in 0..4 {
            assert_eq!(&b.order(CLIENT, "")[..], ["b:1"]);
        }
        b.failed("b:1");
        assert_eq!(b.order(CLIENT, "").len(), 2, "all out: all are tried");
        std::thread::sleep(Duration::from_millis(250));
        let firsts: Vec<&str> = (0..4).map(|_| b.order(CLIENT, "")[0]).collect();
        assert!(firsts.contains(&"a:1"), "{firsts:?}");
        let single = Balancer::single("h:1", Duration::from_secs(1), None);
        single.failed("h:1");
        assert_eq!(&single.order(CLIENT, "")[..], ["h:1"]);
    }

    fn group(method: BalanceMethod, servers: Vec<UpstreamServer>) -> Balancer {
        let group = UpstreamGroup {
            servers,
            keepalive: None,
            method,
            location: hsmgate_config::Location {
                file: "f".into(),
                line: 1,
                col: 1,
            },
        };
        Balancer::group("app", &group, Duration::from_secs(1), None)
    }

    #[tokio::test]
    async fn least_conn_sends_to_the_least_loaded_server() {
        let b = group(
            BalanceMethod::LeastConn,
            vec![
                server("a:1", 1, false),
                server("b:1", 1, false),
                server("c:1", 1, true),
            ],
        );
        let busy = b.load("a:1");
        for _ in 0..3 {
            assert_eq!(&b.order(CLIENT, "")[..], ["b:1", "a:1", "c:1"]);
        }
        drop(busy);
        let firsts: Vec<&str> = (0..4).map(|_| b.order(CLIENT, "")[0]).collect();
        assert!(
            firsts.contains(&"a:1") && firsts.contains(&"b:1"),
            "ties round-robin: {firsts:?}"
        );
    }

    #[tokio::test]
    async fn hash_methods_keep_a_key_on_its_server_and_move_only_a_downed_one() {
        let servers = || {
            vec![
                server("a:1", 1, false),
                server("b:1", 1, false),
                server("c:1", 1, false),
            ]
        };
        for method in [
            BalanceMethod::IpHash,
            BalanceMethod::Hash {
                key: Template { parts: Vec::new() },
                consistent: false,
            },
            BalanceMethod::Hash {
                key: Template { parts: Vec::new() },
                consistent: true,
            },
        ] {
            let b = group(method.clone(), servers());
            let keys: Vec<(std::net::IpAddr, String)> = (0..40u8)
                .map(|n| (std::net::IpAddr::from([10, n, 0, 1]), format!("/k{n}")))
                .collect();
            let first = |b: &Balancer| -> Vec<String> {
                keys.iter()
                    .map(|(ip, k)| b.order(*ip, k)[0].to_owned())
                    .collect()
            };
            let before = first(&b);
            assert_eq!(first(&b), before, "{method:?}: stable");
            let mut down = servers();
            down[1].down = true;
            let after = first(&group(method.clone(), down));
            for (x, y) in before.iter().zip(&after) {
                if x != "b:1" {
                    assert_eq!(x, y, "{method:?}: only b's keys move");
                } else {
                    assert_ne!(y, "b:1");
                }
            }
            assert!(before.iter().any(|x| x == "b:1"), "{method:?}: {before:?}");
        }
    }
}
