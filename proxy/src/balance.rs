//! Upstream groups at run time: nginx's smooth weighted round-robin over the
//! `server`s of an `upstream` block (a `proxy_pass host:port` is a group of one),
//! with a keep-alive connection pool per group. `down` servers are skipped;
//! `backup` servers are used only when a request could not connect to any primary.
//! Passive health as nginx: `max_fails` failures (default 1) take a server out of the
//! rotation for `fail_timeout` (default 10 s); when every primary is out, all are tried.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hsmgate_config::nginx::UpstreamGroup;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Errors of a request body on its way upstream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, BodyError>;

/// One group: its servers, the round-robin state and the connection pool.
#[derive(Debug)]
pub struct Balancer {
    /// `$proxy_host`: the group name or the `host:port` (without `:80`).
    pub name: String,
    servers: Vec<Peer>,
    current: Mutex<Vec<i64>>,
    /// The client (one connection pool for the group).
    pub client: Client<HttpConnector, UpstreamBody>,
}

#[derive(Debug)]
struct Peer {
    addr: String,
    weight: i64,
    backup: bool,
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
            max_fails,
            fail_timeout,
            health: Mutex::new(Health::default()),
        }
    }

    fn available(&self, now: Instant) -> bool {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.out_until.is_none_or(|t| t <= now)
    }
}

impl Balancer {
    /// A group from an `upstream` block; `connect_timeout` from the location.
    pub fn group(name: &str, group: &UpstreamGroup, connect_timeout: Duration) -> Balancer {
        let servers = group
            .servers
            .iter()
            .filter(|s| !s.down)
            .map(|s| Peer::new(&s.addr, s.weight, s.backup, s.max_fails, s.fail_timeout))
            .collect();
        Self::new(name.to_owned(), servers, group.keepalive, connect_timeout)
    }

    /// A group of one server (`proxy_pass http://host:port`), pooled.
    pub fn single(addr: &str, connect_timeout: Duration) -> Balancer {
        let name = addr.strip_suffix(":80").unwrap_or(addr).to_owned();
        // nginx: a lone server is never taken out of the rotation.
        let peer = Peer::new(addr, 1, false, 0, Duration::ZERO);
        Self::new(name, vec![peer], Some(256), connect_timeout)
    }

    fn new(
        name: String,
        servers: Vec<Peer>,
        keepalive: Option<u32>,
        connect_timeout: Duration,
    ) -> Balancer {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(keepalive.unwrap_or(0) as usize)
            .build(connector);
        let current = Mutex::new(vec![0; servers.len()]);
        Balancer {
            name,
            servers,
            current,
            client,
        }
    }

    /// The servers to try for one request, best first: primaries from the
    /// round-robin pick on, then backups.
    pub fn order(&self) -> Vec<&str> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let all: Vec<usize> = (0..self.servers.len())
            .filter(|&i| !self.servers[i].backup)
            .collect();
        let up: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.servers[i].available(now))
            .collect();
        let primaries = if up.is_empty() { all } else { up };
        let mut out = Vec::with_capacity(self.servers.len());
        if !primaries.is_empty() {
            // nginx's smooth weighted round-robin.
            let total: i64 = primaries.iter().map(|&i| self.servers[i].weight).sum();
            let mut best = primaries[0];
            for &i in &primaries {
                current[i] += self.servers[i].weight;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            out.push(self.servers[best].addr.as_str());
            let pos = primaries.iter().position(|&i| i == best).unwrap_or(0);
            for k in 1..primaries.len() {
                out.push(
                    self.servers[primaries[(pos + k) % primaries.len()]]
                        .addr
                        .as_str(),
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use hsmgate_config::nginx::UpstreamServer;

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
            location: hsmgate_config::model::Location {
                file: "f".into(),
                line: 1,
                col: 1,
            },
        };
        let b = Balancer::group("app", &group, Duration::from_secs(1));
        let picks: Vec<String> = (0..12).map(|_| b.order()[0].to_owned()).collect();
        assert_eq!(picks.iter().filter(|p| *p == "a:1").count(), 10);
        assert_eq!(picks.iter().filter(|p| *p == "b:1").count(), 2);
        assert_eq!(b.order().last().copied(), Some("c:1"));
        assert_eq!(Balancer::single("h:80", Duration::from_secs(1)).name, "h");
    }

    #[tokio::test]
    async fn failed_servers_leave_the_rotation_for_fail_timeout() {
        let mut a = server("a:1", 1, false);
        a.fail_timeout = Duration::from_millis(200);
        let group = UpstreamGroup {
            servers: vec![a, server("b:1", 1, false)],
            keepalive: None,
            location: hsmgate_config::model::Location {
                file: "f".into(),
                line: 1,
                col: 1,
            },
        };
        let b = Balancer::group("app", &group, Duration::from_secs(1));
        b.failed("a:1");
        for _ in 0..4 {
            assert_eq!(b.order(), ["b:1"]);
        }
        b.failed("b:1");
        assert_eq!(b.order().len(), 2, "all out: all are tried");
        std::thread::sleep(Duration::from_millis(250));
        let firsts: Vec<&str> = (0..4).map(|_| b.order()[0]).collect();
        assert!(firsts.contains(&"a:1"), "{firsts:?}");
        let single = Balancer::single("h:1", Duration::from_secs(1));
        single.failed("h:1");
        assert_eq!(single.order(), ["h:1"]);
    }
}
