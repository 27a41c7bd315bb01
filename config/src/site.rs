//! The runtime model every configuration becomes, whatever its format: listeners
//! (address, TLS or plain) → servers (names, certificate/key pairs) → locations
//! (proxy to an upstream or `return`), with nginx's merged per-location settings.
//!
//! An nginx configuration maps one to one. A native TOML configuration becomes one
//! `default_server` on every listener with one `location /` that proxies to its
//! upstream, keeping the client's `Host` and setting `X-Forwarded-For` and
//! `X-Forwarded-Proto` — so both formats take the same request path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::Config;
use crate::model::{KeyRef, Location};
use crate::nginx::{
    AccessLog, Action, CertPair, ErrorLog, HttpVersion, KeySource, Listen, LocationBlock,
    LogFormat, Matcher, NginxConfig, ProxyPass, ProxySettings, Server, ServerName, SessionCache,
    SocketOptions, Template, TemplatePart, TlsSettings, TlsVersion, TokenKey, UpstreamGroup,
    UpstreamRef, VarMap,
};

/// How long a graceful stop (SIGQUIT) waits for in-flight requests when the
/// configuration does not say (nginx waits forever; a unit's `TimeoutStopSec`
/// should be longer than this).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Everything a configuration describes, before keys are opened or sockets bound.
#[derive(Debug, Clone)]
pub struct Site {
    /// The file it was read from.
    pub source: PathBuf,
    /// `server` blocks, in file order.
    pub servers: Vec<Server>,
    /// `upstream` blocks by name.
    pub upstreams: BTreeMap<String, UpstreamGroup>,
    /// One entry per distinct listening address.
    pub listens: Vec<ListenSpec>,
    /// `log_format`s by name (with `combined`).
    pub log_formats: BTreeMap<String, LogFormat>,
    /// `map` variables by name (nginx format only).
    pub maps: BTreeMap<String, VarMap>,
    /// `limit_req_zone`s and `limit_conn_zone`s (nginx format only).
    pub limit_zones: crate::nginx::LimitZones,
    /// HA groups of HSMs keys may name (nginx format: `$hsmgate_group_` maps).
    pub hsm_groups: BTreeMap<String, crate::HsmGroup>,
    /// `pid` file (nginx format only).
    pub pid: Option<PathBuf>,
    /// Main-level `error_log`s (nginx format only).
    pub error_logs: Vec<ErrorLog>,
    /// The access log of levels that set none (nginx format only).
    pub default_access_log: Option<DefaultAccessLog>,
    /// `env NAME=VALUE` pairs, applied while a PKCS#11 module is loaded.
    pub env: BTreeMap<String, String>,
    /// How long a graceful stop drains.
    pub grace: Duration,
    /// The admin listener (TOML `[admin]`; nginx `env HSMGATE_ADMIN=ADDR;`; both:
    /// `--admin`, `HSMGATE_ADMIN`).
    pub admin: Option<SocketAddr>,
    /// Where nginx's relative paths are resolved (`-p`).
    pub prefix: PathBuf,
    /// Read from the native (TOML) format.
    pub native: bool,
    /// Admission control settings (TOML `[admission]`); `None`: the defaults, changed by
    /// `HSMGATE_ADMISSION*` variables (nginx configurations).
    pub admission: Option<crate::Admission>,
    /// `worker_processes N`: runtime threads (None: one per CPU, at least
    /// [`MIN_RUNTIME_THREADS`](crate::defaults::MIN_RUNTIME_THREADS)).
    pub workers: Option<u32>,
    /// `user`: recorded; hsmgate does not switch users (use systemd's `User=`).
    pub user: Option<String>,
    /// Open client connections at most: `worker_connections` (default 512) times
    /// `worker_processes` (default one per CPU), as nginx's processes would allow.
    /// None: no limit (native format).
    pub connections: Option<usize>,
}

/// The access log where no level sets `access_log`: the replaced nginx's compiled-in
/// path ([`crate::nginx::compiled_paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultAccessLog {
    /// The file.
    pub path: PathBuf,
    /// Where the path comes from, e.g. "Debian's nginx default".
    pub origin: &'static str,
    /// The `http` block, if any (named when the file cannot be opened).
    pub http_at: Option<Location>,
}

/// A listening address and how it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The address (as configured; port 0 asks the OS for one).
    pub addr: SocketAddr,
    /// TLS on this address.
    pub ssl: bool,
    /// ALPN `h2` offered.
    pub http2: bool,
    /// `SO_REUSEPORT`.
    pub reuseport: bool,
    /// `IPV6_V6ONLY` for IPv6 addresses (nginx's default: on).
    pub ipv6only: bool,
    /// `listen(2)` backlog (nginx's default 511).
    pub backlog: u32,
    /// Options of the listening socket (`listen … deferred so_keepalive=…`).
    pub socket: SocketOptions,
    /// TLS versions forced by the native format's listener (else the default server's).
    pub protocols: Option<Vec<TlsVersion>>,
    /// `listen … proxy_protocol`: a PROXY protocol header starts every connection.
    pub proxy_protocol: bool,
}

impl Site {
    /// The model of an nginx configuration.
    pub fn from_nginx(source: PathBuf, config: NginxConfig) -> Site {
        let env = config
            .env
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        let listens = listen_specs(&config.servers);
        Site {
            source,
            listens,
            servers: config.servers,
            upstreams: config.upstreams,
            log_formats: config.log_formats,
            maps: config.maps,
            limit_zones: config.limit_zones,
            hsm_groups: config.hsm_groups,
            pid: Some(
                config
                    .pid
                    .unwrap_or_else(|| PathBuf::from(crate::defaults::PID_FILE)),
            ),
            error_logs: config.error_logs,
            default_access_log: Some(DefaultAccessLog {
                path: config.default_access_log,
                origin: config.default_access_log_origin,
                http_at: config.http_at,
            }),
            env,
            grace: config.shutdown_timeout.unwrap_or(DEFAULT_GRACE),
            admin: config.admin,
            prefix: config.prefix,
            native: false,
            admission: None,
            workers: config.worker_processes,
            user: config.user.map(|(u, _)| u),
            connections: Some(connection_limit(
                config.worker_connections,
                config.worker_processes,
            )),
        }
    }

    /// The model of a native configuration: one server, one `location /`.
    pub fn from_native(config: &Config) -> Site {
        let at = config.tls.key.location.clone();
        let header = |name: &str, var: &str| {
            (
                name.to_owned(),
                Template {
                    parts: if var.is_empty() {
                        Vec::new()
                    } else {
                        vec![TemplatePart::Var(var.to_owned())]
                    },
                },
            )
        };
        let settings = ProxySettings {
            access_rules: Vec::new(),
            auth_basic: None,
            satisfy_any: false,
            real_ip: None,
            proxy_redirect: Vec::new(),
            limits: Default::default(),
            proxy_cookie_path: Vec::new(),
            proxy_cookie_flags: Vec::new(),
            auth_request: None,
            auth_request_set: Vec::new(),
            proxy_cookie_domain: Vec::new(),
            error_pages: Vec::new(),
            proxy_intercept_errors: false,
            limit_rate: 0,
            limit_rate_after: 0,
            recursive_error_pages: false,
            absolute_redirect: true,
            port_in_redirect: true,
            merge_slashes: true,
            // The native format passes every header hyper accepts, as before.
            underscores_in_headers: true,
            ignore_invalid_headers: false,
            proxy_pass_request_body: true,
            proxy_pass_request_headers: true,
            proxy_method: None,
            expires: Default::default(),
            limit_except: None,
            proxy_set_body: None,
            root: None,
            mime: crate::nginx::MimeTypes::default(),
            proxy_set_header: vec![
                header("Host", "http_host"),
                header("X-Forwarded-For", "proxy_add_x_forwarded_for"),
                header("X-Forwarded-Proto", "scheme"),
                header("Connection", ""),
            ],
            add_header: Vec::new(),
            // nginx's defaults: the upstream's Server, Date, X-Pad, X-Accel-* are hidden.
            proxy_hide_header: Vec::new(),
            proxy_pass_header: Vec::new(),
            proxy_http_version: HttpVersion::Http11,
            proxy_connect_timeout: config.upstream.connect_timeout,
            proxy_read_timeout: config.upstream.request_timeout,
            proxy_send_timeout: config.upstream.request_timeout,
            client_max_body_size: config.limits.max_body_size,
            proxy_request_buffering: true,
            proxy_next_upstream: crate::nginx::NextUpstream::default(),
            client_body_buffer_size: 16 << 10,
            proxy_ssl: Default::default(),
            keepalive_timeout: config.limits.keepalive_timeout,
            access_logs: vec![AccessLog::Off],
            error_logs: Vec::new(),
            client: config.limits.client,
        };
        let pass = ProxyPass {
            https: false,
            target: UpstreamRef::Addr(config.upstream.address.clone()),
            uri: None,
            url: format!("http://{}", config.upstream.address),
        };
        let location = LocationBlock {
            matcher: Matcher::Prefix("/".into()),
            action: Some(Action::ProxyPass(pass.clone())),
            steps: Vec::new(),
            internal: false,
            pass: Some(pass),
            settings: settings.clone(),
            locations: Vec::new(),
            location: at.clone(),
        };
        let listens: Vec<Listen> = config
            .listeners
            .iter()
            .map(|l| Listen {
                addr: l.address,
                ssl: true,
                http2: l.http2,
                default_server: true,
                reuseport: false,
                ipv6only: None,
                backlog: None,
                socket: SocketOptions::default(),
                proxy_protocol: false,
            })
            .collect();
        let pair = |chain: &PathBuf, at: &Location, key: &KeyRef| CertPair {
            cert: chain.clone(),
            key: native_key(config, key),
            location: key.location.clone(),
            cert_location: at.clone(),
        };
        // `[tls]`'s pair, with the `[[tls.pair]]`s that list no server names beside it.
        let mut certs = vec![pair(
            &config.tls.certificate_chain,
            &config.tls.certificate_location,
            &config.tls.key,
        )];
        let unnamed = config
            .tls
            .pairs
            .iter()
            .filter(|p| p.server_names.is_empty());
        certs.extend(unnamed.map(|p| pair(&p.certificate_chain, &p.certificate_location, &p.key)));
        let server = Server {
            listens,
            server_names: Vec::new(),
            certs,
            tls: TlsSettings {
                protocols: vec![TlsVersion::Tls12, TlsVersion::Tls13],
                ciphers: config.tls.ciphers.clone(),
                // `[tls] ciphers` lists TLS 1.3 suites itself.
                tls13_suites: Vec::new(),
                // The server's order (`[tls] ciphers`, or rustls': AES-256-GCM,
                // AES-128-GCM, ChaCha20 per version, forward-secret ECDHE only): scanners
                // flag the client's order.
                prefer_server_ciphers: true,
                session_cache: SessionCache::Cache {
                    builtin: Some(256),
                    shared: None,
                },
                session_timeout: config.tls.session_timeout,
                session_tickets: config.tls.session_tickets,
                session_ticket_keys: config.tls.session_ticket_keys.clone(),
                client_certificate: config.tls.client_certificate.clone(),
                verify_client: config.tls.verify_client,
                verify_depth: config.tls.verify_depth,
                crl: None,
                files_at: crate::nginx::TlsFilesAt {
                    client_certificate: (config.tls.client_certificate_at.as_ref())
                        .map(|at| at.to_string()),
                    crl: None,
                    stapling_file: None,
                    ticket_keys: (config.tls.session_ticket_keys.iter())
                        .filter_map(|_| config.tls.session_ticket_keys_at.as_ref())
                        .map(|at| at.to_string())
                        .collect(),
                },
                stapling_file: None,
                stapling_fetch: config.tls.ocsp.clone(),
                reject_handshake: false,
                ecdh_curves: Vec::new(),
            },
            server_return: None,
            server_steps: Vec::new(),
            settings,
            locations: vec![location],
            location: at,
        };
        // One more server per list of `server_names` (the first pair that lists them
        // names it: its place is its key's), on every listener, not the default.
        let mut servers = vec![server];
        for p in config
            .tls
            .pairs
            .iter()
            .filter(|p| !p.server_names.is_empty())
        {
            let same = |s: &&mut Server| {
                let mut names: Vec<String> = s.server_names.iter().map(server_name_text).collect();
                let mut ours = p.server_names.clone();
                names.sort();
                ours.sort();
                names == ours
            };
            if let Some(s) = servers.iter_mut().skip(1).find(same) {
                s.certs
                    .push(pair(&p.certificate_chain, &p.certificate_location, &p.key));
                continue;
            }
            let mut named = servers[0].clone();
            for l in &mut named.listens {
                l.default_server = false;
            }
            named.server_names = p.server_names.iter().map(|n| server_name(n)).collect();
            named.certs = vec![pair(&p.certificate_chain, &p.certificate_location, &p.key)];
            named.location = p.key.location.clone();
            servers.push(named);
        }
        let mut listens = listen_specs(&servers[..1]);
        for (spec, l) in listens.iter_mut().zip(&config.listeners) {
            let mut p = Vec::new();
            if l.tls12 {
                p.push(TlsVersion::Tls12);
            }
            if l.tls13 {
                p.push(TlsVersion::Tls13);
            }
            spec.protocols = Some(p);
        }
        Site {
            source: config.source.clone(),
            servers,
            upstreams: BTreeMap::new(),
            listens,
            log_formats: BTreeMap::new(),
            maps: BTreeMap::new(),
            limit_zones: Default::default(),
            hsm_groups: config
                .hsm
                .iter()
                .map(|g| (g.name.clone(), g.clone()))
                .collect(),
            pid: None,
            error_logs: Vec::new(),
            default_access_log: None,
            env: BTreeMap::new(),
            grace: config.shutdown_grace,
            admin: config.admin,
            prefix: config
                .source
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            native: true,
            admission: Some(config.admission),
            workers: config.runtime_threads,
            user: None,
            connections: None,
        }
    }

    /// Servers with a `listen` on `addr` (or on the wildcard address of its port).
    pub fn servers_on(&self, addr: SocketAddr) -> impl Iterator<Item = (usize, &Server)> {
        self.servers
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.listens.iter().any(|l| l.addr == addr))
    }

    /// The default server of `addr`: the one marked `default_server`, else the first.
    pub fn default_server(&self, addr: SocketAddr) -> Option<(usize, &Server)> {
        let mut first = None;
        for (i, s) in self.servers_on(addr) {
            if s.listens.iter().any(|l| l.addr == addr && l.default_server) {
                return Some((i, s));
            }
            first.get_or_insert((i, s));
        }
        first
    }
}

/// One [`ListenSpec`] per distinct address; options written on any `listen` of the
/// address apply to it (nginx allows them once per address).
fn listen_specs(servers: &[Server]) -> Vec<ListenSpec> {
    let mut out: Vec<ListenSpec> = Vec::new();
    for l in servers.iter().flat_map(|s| &s.listens) {
        match out.iter_mut().find(|s| s.addr == l.addr) {
            Some(spec) => {
                spec.ssl |= l.ssl;
                spec.http2 |= l.http2;
                spec.reuseport |= l.reuseport;
                if let Some(v6) = l.ipv6only {
                    spec.ipv6only = v6;
                }
                if let Some(b) = l.backlog {
                    spec.backlog = b;
                }
                spec.socket.merge(&l.socket);
                spec.proxy_protocol |= l.proxy_protocol;
            }
            None => out.push(ListenSpec {
                addr: l.addr,
                ssl: l.ssl,
                http2: l.http2,
                reuseport: l.reuseport,
                ipv6only: l.ipv6only.unwrap_or(true),
                backlog: l.backlog.unwrap_or(511),
                socket: l.socket.clone(),
                protocols: None,
                proxy_protocol: l.proxy_protocol,
            }),
        }
    }
    out
}

/// `worker_connections` × `worker_processes` with nginx's defaults (512; `auto`, one
/// per CPU).
fn connection_limit(per_worker: Option<u32>, workers: Option<u32>) -> usize {
    let workers = workers.filter(|&w| w > 0).map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |w| w as usize,
    );
    per_worker.unwrap_or(512) as usize * workers
}

/// A key of a native configuration: in its HA group (named by the URI, as nginx
/// configurations do; validation wrote it there), or in the one `[pkcs11]` token.
fn native_key(config: &Config, key: &KeyRef) -> KeySource {
    match (&key.uri.group, &config.pkcs11) {
        (None, Some(pkcs11)) => KeySource::Token(Box::new(TokenKey {
            uri: key.uri.clone(),
            pkcs11: pkcs11.clone(),
        })),
        _ => KeySource::Pkcs11(Box::new(key.uri.clone())),
    }
}

/// A `server_names` entry of `[[tls.pair]]` as nginx's reader keeps it.
fn server_name(name: &str) -> ServerName {
    match name.starts_with('.') || name.starts_with("*.") || name.ends_with(".*") {
        true => ServerName::Wildcard(name.to_owned()),
        false => ServerName::Exact(name.to_owned()),
    }
}

/// The text of a [`server_name`].
fn server_name_text(name: &ServerName) -> String {
    match name {
        ServerName::Exact(n) | ServerName::Wildcard(n) => n.clone(),
        ServerName::Regex(r) => r.as_str().to_owned(),
    }
}

/// Where a configuration element is written, for messages.
pub fn at(location: &Location) -> String {
    match location.line {
        // A value from flags or variables: `file` names them.
        0 => location.file.display().to_string(),
        line => format!("{}:{line}", location.file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_config_becomes_one_server_with_location_slash() {
        let text = r#"
[[listener]]
address = "127.0.0.1:0"
[tls]
certificate = "/x/chain.pem"
key = "pkcs11:token=t;object=k?pin-value=1234"
[pkcs11]
module = "/x/m.so"
[upstream]
address = "127.0.0.1:9"
"#;
        let config =
            crate::load_str(text, std::path::Path::new("/x/h.toml")).expect("native config");
        let site = Site::from_native(&config);
        assert_eq!(site.workers, None, "one runtime thread per CPU by default");
        for (threads, want) in [("0", None), ("3", Some(3))] {
            let with = format!("{text}[runtime]\nthreads = {threads}\n");
            let c = crate::load_str(&with, std::path::Path::new("/x/h.toml")).expect("threads");
            assert_eq!(Site::from_native(&c).workers, want, "threads = {threads}");
        }
        assert_eq!(site.servers.len(), 1);
        assert_eq!(site.listens.len(), 1);
        assert!(site.listens[0].ssl);
        let loc = &site.servers[0].locations[0];
        assert!(matches!(&loc.matcher, Matcher::Prefix(p) if p == "/"));
        assert!(
            matches!(&loc.action, Some(Action::ProxyPass(p)) if p.target == UpstreamRef::Addr("127.0.0.1:9".into()))
        );
        assert!(site.default_server(site.listens[0].addr).is_some());
        // nginx's hidden upstream headers apply to the native format too.
        for name in crate::nginx::HIDDEN_BY_DEFAULT {
            assert!(loc.settings.hides(name), "{name}");
        }
        assert!(!loc.settings.hides("content-type"));
        assert_eq!(site.connections, None);
        assert_eq!(connection_limit(Some(100), Some(3)), 300);
        assert!(connection_limit(None, None) >= 512);
    }
}
