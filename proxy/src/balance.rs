//! Upstream groups at run time: nginx's smooth weighted round-robin over the
//! `server`s of an `upstream` block (a `proxy_pass host:port` is a group of one),
//! with a keep-alive connection pool per group. `down` servers are skipped;
//! `backup` servers are used only when a request could not connect to any primary.

use std::sync::Mutex;
use std::time::Duration;

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
}

impl Balancer {
    /// A group from an `upstream` block; `connect_timeout` from the location.
    pub fn group(name: &str, group: &UpstreamGroup, connect_timeout: Duration) -> Balancer {
        let servers = group
            .servers
            .iter()
            .filter(|s| !s.down)
            .map(|s| Peer {
                addr: s.addr.clone(),
                weight: i64::from(s.weight.max(1)),
                backup: s.backup,
            })
            .collect();
        Self::new(name.to_owned(), servers, group.keepalive, connect_timeout)
    }

    /// A group of one server (`proxy_pass http://host:port`), pooled.
    pub fn single(addr: &str, connect_timeout: Duration) -> Balancer {
        let name = addr.strip_suffix(":80").unwrap_or(addr).to_owned();
        let peer = Peer {
            addr: addr.to_owned(),
            weight: 1,
            backup: false,
        };
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
        let primaries: Vec<usize> = (0..self.servers.len())
            .filter(|&i| !self.servers[i].backup)
            .collect();
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
                .filter(|s| s.backup)
                .map(|s| s.addr.as_str()),
        );
        out
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
}
