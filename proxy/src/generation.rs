//! A generation: everything one configuration builds — the [`Site`], opened keys
//! (signer pools), rustls settings per listening address, upstream groups and access
//! log targets. Built off the async workers (PKCS#11 calls block), then swapped in
//! whole; connections keep the generation they were accepted on until they close.
//!
//! The format is chosen by the file name: `*.toml` is the native format, anything
//! else is read as nginx syntax.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hsmgate_config::Location;
use hsmgate_config::nginx::{
    AccessLog, Action, LocationBlock, LocationStep, NginxOptions, ProxyPass, ProxySettings, Server,
    ServerName, UpstreamRef,
};
use http::HeaderName;

use crate::balance::Balancer;
use crate::client_cert::ClientAuth;
use crate::error::ProxyError;
use crate::keys::{KeyDefaults, KeyOpener, PoolCache};
use crate::site::{ListenSpec, Site, at};
use crate::tls::{self, ServerKeys, SniResolver};
use rustls::sign::CertifiedKey;

/// Where the configuration comes from (`-c`, `-p`, `-g`, flags and `HSMGATE_*`).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file; empty when flags and the environment stand for it.
    pub path: PathBuf,
    /// nginx's `-p`.
    pub prefix: Option<PathBuf>,
    /// nginx's `-g`.
    pub globals: Option<String>,
    /// Flags and `HSMGATE_*` variables over a native file, or instead of one.
    pub overrides: hsmgate_config::Overrides,
}

impl ConfigSource {
    /// True for the native TOML format (`*.toml`, or no file).
    pub fn is_native(&self) -> bool {
        self.path.as_os_str().is_empty() || self.path.extension().is_some_and(|e| e == "toml")
    }

    /// Read and validate the file (no keys opened). Warnings are returned as text.
    pub fn load(&self) -> Result<(Site, Vec<String>), ProxyError> {
        if self.is_native() {
            let file = Some(self.path.as_path()).filter(|p| !p.as_os_str().is_empty());
            let config = self.overrides.load(file)?;
            let warnings = config.warnings.iter().map(ToString::to_string).collect();
            return Ok((Site::from_native(&config), warnings));
        }
        let opts = NginxOptions {
            prefix: self.prefix.clone(),
            globals: self.globals.clone(),
        };
        let config = hsmgate_config::nginx::load(&self.path, &opts)?;
        let warnings = config.warnings.iter().map(ToString::to_string).collect();
        let mut site = Site::from_nginx(self.path.clone(), config);
        // --admin / HSMGATE_ADMIN in the environment win over the file's env line.
        if let Some(addr) = self.overrides.admin_addr()? {
            site.admin = Some(addr);
        }
        // The admin listener cannot share a proxy address (TOML refuses it where it is
        // written; here, before a bind fails at start).
        if let Some(addr) = site.admin.filter(|a| a.port() != 0)
            && site.listens.iter().any(|l| l.addr == addr)
        {
            return Err(ProxyError::Invalid(format!(
                "the admin address {addr} is also a \"listen\" address of {}; give the admin listener a port of its own",
                self.path.display()
            )));
        }
        Ok((site, warnings))
    }

    /// The `nginx -T` dump of the files read, and for the native format the flags and
    /// variables over them (or instead of a file). A `pin-value` is shown as `***`.
    pub fn dump(&self) -> Result<Option<String>, ProxyError> {
        let text = if self.is_native() {
            let mut text = std::fs::read_to_string(&self.path)
                .ok()
                .map(|t| format!("# configuration file {}:\n{t}\n", self.path.display()))
                .unwrap_or_default();
            let given = self.overrides.describe();
            if !given.is_empty() {
                text.push_str(match self.path.as_os_str().is_empty() {
                    true => "# configuration from flags and environment variables:\n",
                    false => "# flags and environment variables over it:\n",
                });
                for line in given {
                    text.push_str(&format!("#   {line}\n"));
                }
            }
            text
        } else {
            let opts = NginxOptions {
                prefix: self.prefix.clone(),
                globals: self.globals.clone(),
            };
            hsmgate_config::nginx::load(&self.path, &opts)?.dump()
        };
        Ok((!text.is_empty()).then(|| hsmgate_config::mask_pin_value(&text)))
    }
}

/// A listening address at run time.
#[derive(Debug, Clone)]
pub struct ListenerRt {
    /// How it is configured.
    pub spec: ListenSpec,
    /// The TLS settings (None: plain HTTP).
    pub tls: Option<TlsListener>,
    /// The default server's `keepalive_timeout`.
    pub keepalive: Duration,
    /// The default server's `ssl_handshake_timeout` (`[limits] handshake_timeout_ms`):
    /// the handshake comes before a server is chosen by name.
    pub handshake_timeout: Duration,
    /// The default server's `proxy_protocol_timeout`, for `listen … proxy_protocol`.
    pub proxy_protocol_timeout: Duration,
}

/// The TLS side of a listening address.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// The rustls settings of each server on the address, by where the server is
    /// written ([`ServerKeys::server`]), built once per generation.
    by_server: HashMap<Location, ServerTls>,
    /// The certificate choice, also asked which signer pool a ClientHello will use.
    pub resolver: Arc<SniResolver>,
}

/// The TLS settings of one server on one address.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls settings.
    pub config: Arc<rustls::ServerConfig>,
    /// TLS 1.3 is offered (for telling resumption attempts from full handshakes).
    pub tls13: bool,
    /// `ssl_verify_client on|optional`: how the client's chain is judged.
    pub client_auth: Option<Arc<ClientAuth>>,
}

// === impl TlsListener ===

impl TlsListener {
    /// The settings of the server this ClientHello selects (by SNI, nginx's rules).
    pub fn for_hello(&self, hello: &rustls::server::ClientHello<'_>) -> &ServerTls {
        self.by_server
            .get(&self.resolver.server(hello).server)
            .expect("the settings of every server the resolver chooses are built")
    }
}

/// Everything one configuration builds.
#[derive(Debug)]
pub struct Generation {
    /// The model.
    pub site: Site,
    /// The servers (shared with the TLS resolvers).
    pub servers: Arc<Vec<Server>>,
    /// By configured address.
    pub listeners: HashMap<SocketAddr, ListenerRt>,
    balancers: HashMap<String, Arc<Balancer>>,
    /// The same pools as the requests found them: by a `proxy_pass` and the settings in
    /// force, each by its address in `servers` (which this generation keeps, unchanged,
    /// for its life; a location's, an `if` block's or a `limit_except`'s), filled on
    /// first use so that the next request finds its pool without building its key.
    /// Bounded by the configuration's `proxy_pass` and settings blocks.
    by_location: dashmap::DashMap<(usize, usize), Arc<Balancer>, foldhash::fast::RandomState>,
    /// The `proxy_set_header` names of each settings block (by its address, as above),
    /// parsed once instead of per request (an invalid one: None, left out).
    set_names: dashmap::DashMap<usize, Arc<[Option<HeaderName>]>, foldhash::fast::RandomState>,
    /// The `host:port`s a `proxy_pass` with variables named, each with its pool, at most
    /// [`MAX_DYNAMIC_UPSTREAMS`] (more are served without a kept connection).
    dynamic: dashmap::DashMap<String, Arc<Balancer>>,
    /// The opened token keys.
    pub pools: PoolCache,
    log_paths: HashMap<PathBuf, Arc<PathBuf>>,
    /// `limit_req_zone`s and `limit_conn_zone`s (kept across a reload that keeps them).
    pub(crate) limits: crate::limits::Zones,
    /// Signalled when a reload replaces this generation: its client connections finish.
    pub(crate) retired: crate::drain::Drain,
    /// The certificates whose OCSP responses are fetched (`ssl_stapling on`).
    staples: Vec<Arc<crate::ocsp::Staple>>,
    /// What building found wrong but served around (`file:line: message`), for `-t`.
    pub warnings: Vec<String>,
}

impl Generation {
    /// Open keys, check certificates, make TLS settings and upstream groups. Blocking.
    pub fn build(
        site: Site,
        defaults: &KeyDefaults,
        previous: &PoolCache,
    ) -> Result<Generation, ProxyError> {
        let mut opener = KeyOpener {
            defaults,
            env: &site.env,
            groups: &site.hsm_groups,
            admission: site.admission.as_ref(),
            previous,
            next: PoolCache::default(),
        };
        // Each server's pairs, by where the server is written.
        let mut keys: HashMap<Location, Arc<ServerKeys>> = HashMap::new();
        let mut staples = Vec::new();
        let mut warnings = Vec::new();
        for server in &site.servers {
            let mut pairs = Vec::new();
            for pair in &server.certs {
                pairs.push(opener.pair(pair)?);
            }
            if let Some(path) = &server.tls.stapling_file {
                let ocsp =
                    tls::read_ocsp(path).map_err(|e| located(e, &server.tls, &server.location))?;
                for pair in &mut pairs {
                    let mut certified = CertifiedKey::clone(&pair.certified);
                    certified.ocsp = Some(ocsp.clone());
                    pair.certified = Arc::new(certified);
                }
            }
            if let Some(fetch) = &server.tls.stapling_fetch {
                for pair in &mut pairs {
                    match crate::ocsp::Staple::new(Arc::clone(&pair.certified), fetch) {
                        Ok(s) => {
                            let s = Arc::new(s);
                            staples.push(Arc::clone(&s));
                            pair.staple = Some(s);
                        }
                        // nginx's warning: the server serves without stapling.
                        Err(e) => {
                            let w = format!("{}: \"ssl_stapling\" ignored, {e}", fetch.at);
                            tracing::warn!("{w}");
                            warnings.push(w);
                        }
                    }
                }
            }
            if pairs.is_empty()
                && server.listens.iter().any(|l| l.ssl)
                && !server.tls.reject_handshake
            {
                return Err(ProxyError::At {
                    at: at(&server.location),
                    source: Box::new(ProxyError::Invalid(
                        "no \"ssl_certificate\" is defined for the server with a \"listen ... ssl\""
                            .into(),
                    )),
                });
            }
            let server = server.location.clone();
            keys.insert(server.clone(), Arc::new(ServerKeys { server, pairs }));
        }
        let servers = Arc::new(site.servers.clone());
        let mut listeners = HashMap::new();
        let mut caches = tls::SharedCaches::default();
        for spec in &site.listens {
            let Some((_, server)) = site.default_server(spec.addr) else {
                continue;
            };
            let tls = if spec.ssl {
                let on: Vec<(&Server, &Arc<ServerKeys>)> = site
                    .servers_on(spec.addr)
                    .map(|(_, s)| (s, &keys[&s.location]))
                    .collect();
                // The first server of the address with a certificate, else the default.
                let fallback = on
                    .iter()
                    .map(|(_, k)| *k)
                    .find(|k| !k.pairs.is_empty())
                    .unwrap_or(&keys[&server.location]);
                let resolver = Arc::new(SniResolver::new(
                    Arc::clone(&servers),
                    on.iter().map(|(s, k)| (Arc::clone(k), exact_names(s))),
                    spec.addr,
                    Arc::clone(fallback),
                ));
                let mut by_server = HashMap::new();
                for (s, k) in &on {
                    // A server without a certificate is never chosen (the resolver
                    // falls back), unless no server of the address has one.
                    if k.pairs.is_empty() && k.server != fallback.server {
                        continue;
                    }
                    let located = |e| located(e, &s.tls, &s.location);
                    let client_auth = ClientAuth::load(&s.tls).map_err(located)?.map(Arc::new);
                    let config = tls::server_config(
                        spec,
                        &s.tls,
                        Arc::clone(&resolver),
                        &mut caches,
                        client_auth.as_deref(),
                    )
                    .map_err(located)?;
                    let tls13 = spec
                        .protocols
                        .as_ref()
                        .unwrap_or(&s.tls.protocols)
                        .contains(&hsmgate_config::nginx::TlsVersion::Tls13);
                    by_server.insert(
                        s.location.clone(),
                        ServerTls {
                            config,
                            tls13,
                            client_auth,
                        },
                    );
                }
                Some(TlsListener {
                    by_server,
                    resolver,
                })
            } else {
                None
            };
            listeners.insert(
                spec.addr,
                ListenerRt {
                    spec: spec.clone(),
                    tls,
                    keepalive: server.settings.keepalive_timeout,
                    handshake_timeout: server.settings.client.handshake_timeout,
                    proxy_protocol_timeout: server.settings.client.proxy_protocol_timeout,
                },
            );
        }
        let mut generation = Generation {
            servers,
            listeners,
            balancers: HashMap::new(),
            by_location: dashmap::DashMap::default(),
            set_names: dashmap::DashMap::default(),
            dynamic: dashmap::DashMap::new(),
            pools: opener.next,
            log_paths: HashMap::new(),
            limits: crate::limits::Zones::build(&site.limit_zones),
            retired: crate::drain::Drain::new(),
            staples,
            warnings,
            site,
        };
        generation.prepare_locations()?;
        Ok(generation)
    }

    /// Starts keeping this generation's OCSP responses fresh (one task per stapled
    /// certificate, ending when a reload replaces the generation or it is dropped).
    pub(crate) fn start_stapling(self: &Arc<Self>) {
        for staple in &self.staples {
            let generation = Arc::downgrade(self);
            let retired = move || {
                generation
                    .upgrade()
                    .is_none_or(|g| g.retired.is_signalled())
            };
            tokio::spawn(crate::ocsp::run(Arc::downgrade(staple), retired));
        }
    }

    /// Upstream groups and access logs of every location.
    fn prepare_locations(&mut self) -> Result<(), ProxyError> {
        let servers = Arc::clone(&self.servers);
        for s in servers.iter() {
            self.prepare_settings(&s.settings)?;
            let mut stack: Vec<&LocationBlock> = s.locations.iter().collect();
            while let Some(l) = stack.pop() {
                stack.extend(l.locations.iter());
                self.prepare_settings(&l.settings)?;
                if let Some(Action::ProxyPass(p)) = &l.action {
                    self.prepare_pass(p, &l.settings, &l.location)?;
                }
                // An `if` block's own `proxy_pass`, with the block's settings.
                let mut steps: Vec<&LocationStep> = l.steps.iter().collect();
                while let Some(step) = steps.pop() {
                    if let LocationStep::If(block) = step {
                        steps.extend(block.steps.iter());
                        self.prepare_settings(&block.settings)?;
                        if let Some(p) = &block.pass {
                            self.prepare_pass(p, &block.settings, &block.location)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The upstream group of a `proxy_pass` with the `settings` of its block at
    /// `location`. Checked at load also for a URL with variables, whose upstreams are
    /// found per request (`dynamic_balancer`).
    fn prepare_pass(
        &mut self,
        p: &ProxyPass,
        settings: &ProxySettings,
        location: &Location,
    ) -> Result<(), ProxyError> {
        let tls = upstream_tls(p.https, settings).map_err(|e| ProxyError::At {
            at: at(location),
            source: Box::new(e),
        })?;
        let key = balancer_key(&p.target, p.https, settings);
        if !p.has_variables() && !self.balancers.contains_key(&key) {
            let b = self.new_balancer(&p.target, settings.proxy_connect_timeout, tls);
            self.balancers.insert(key, Arc::new(b));
        }
        Ok(())
    }

    fn prepare_settings(&mut self, settings: &ProxySettings) -> Result<(), ProxyError> {
        for (path, origin) in self.access_log_targets(settings) {
            if self.log_paths.contains_key(&path) {
                continue;
            }
            crate::access_log::check_open(&path).map_err(|source| ProxyError::Io {
                what: format!("open access log {} ({origin})", path.display()),
                source,
            })?;
            self.log_paths.insert(path.clone(), Arc::new(path));
        }
        Ok(())
    }

    /// The files a level logs to, each with what leads to it (for errors): the
    /// `access_log` directive, or the default where none is set.
    fn access_log_targets(&self, settings: &ProxySettings) -> Vec<(PathBuf, String)> {
        if settings.access_logs.is_empty() {
            return self
                .site
                .default_access_log
                .iter()
                .map(|d| {
                    let why = match &d.http_at {
                        Some(at) => {
                            format!("{}: no access_log in the http block at {at}", d.origin)
                        }
                        None => format!("{}: no access_log is set", d.origin),
                    };
                    (d.path.clone(), why)
                })
                .collect();
        }
        settings
            .access_logs
            .iter()
            .filter_map(|l| match l {
                AccessLog::Off => None,
                AccessLog::File { path, at, .. } => {
                    Some((path.clone(), format!("access_log at {at}")))
                }
            })
            .collect()
    }

    /// Access log targets of a level.
    pub fn access_logs(&self, settings: &ProxySettings) -> Vec<LogTarget> {
        if settings.access_logs.is_empty() {
            return (self.site.default_access_log.iter())
                .filter_map(|d| self.log_paths.get(&d.path))
                .map(|p| LogTarget {
                    path: Arc::clone(p),
                    format: "combined".to_owned(),
                    condition: None,
                })
                .collect();
        }
        (settings.access_logs.iter())
            .filter_map(|l| match l {
                AccessLog::Off => None,
                AccessLog::File {
                    path,
                    format,
                    condition,
                    ..
                } => self.log_paths.get(path).map(|p| LogTarget {
                    path: Arc::clone(p),
                    format: format.clone(),
                    condition: condition.clone(),
                }),
            })
            .collect()
    }

    /// The upstream group of a `proxy_pass` in a location with `settings`.
    pub fn balancer(&self, pass: &ProxyPass, settings: &ProxySettings) -> Option<Arc<Balancer>> {
        let at = location_key(pass, settings);
        if let Some(b) = self.by_location.get(&at) {
            return Some(Arc::clone(&b));
        }
        let b = self
            .balancers
            .get(&balancer_key(&pass.target, pass.https, settings))?;
        self.by_location.insert(at, Arc::clone(b));
        Some(Arc::clone(b))
    }

    /// The names of `settings.proxy_set_header`, in order (None: an invalid name).
    pub(crate) fn set_header_names(&self, settings: &ProxySettings) -> Arc<[Option<HeaderName>]> {
        let at = std::ptr::from_ref(settings) as usize;
        if let Some(names) = self.set_names.get(&at) {
            return Arc::clone(&names);
        }
        let names: Arc<[Option<HeaderName>]> = (settings.proxy_set_header.iter())
            .map(|(name, _)| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        self.set_names.insert(at, Arc::clone(&names));
        names
    }

    /// The upstream a `proxy_pass` with variables names this time: `host`, its host part
    /// as evaluated, is an `upstream` block's name (without regard to case) or a
    /// `host[:port]`, resolved when connecting; or why neither (a 502).
    pub fn dynamic_balancer(
        &self,
        https: bool,
        settings: &ProxySettings,
        host: &str,
    ) -> Result<Arc<Balancer>, String> {
        let named = (self.site.upstreams.keys()).find(|n| n.eq_ignore_ascii_case(host));
        let target = match named {
            Some(name) => UpstreamRef::Named(name.clone()),
            None => UpstreamRef::Addr(
                dynamic_addr(host, if https { 443 } else { 80 })
                    .ok_or_else(|| format!("invalid upstream host \"{host}\" in \"proxy_pass\""))?,
            ),
        };
        let key = balancer_key(&target, https, settings);
        // A location's own `proxy_pass` with the same settings shares its pool.
        if let Some(b) = self.balancers.get(&key) {
            return Ok(Arc::clone(b));
        }
        if let Some(b) = self.dynamic.get(&key) {
            return Ok(Arc::clone(&b));
        }
        let tls = upstream_tls(https, settings).map_err(|e| e.to_string())?;
        let b = Arc::new(self.new_balancer(&target, settings.proxy_connect_timeout, tls));
        // Upstream blocks are as many as the configuration has; addresses are bounded.
        if named.is_some() || self.dynamic.len() < MAX_DYNAMIC_UPSTREAMS {
            self.dynamic.insert(key, Arc::clone(&b));
        }
        Ok(b)
    }

    /// The pool of `target` (an `upstream` block, or one address; not
    /// [`UpstreamRef::Dynamic`], whose targets are these per request).
    fn new_balancer(
        &self,
        target: &UpstreamRef,
        timeout: Duration,
        tls: Option<crate::balance::UpstreamTls>,
    ) -> Balancer {
        match target {
            UpstreamRef::Named(n) => match self.site.upstreams.get(n) {
                Some(g) => Balancer::group(n, g, timeout, tls),
                None => Balancer::single(&format!("{n}:80"), timeout, tls),
            },
            UpstreamRef::Addr(a) => Balancer::single(a, timeout, tls),
            UpstreamRef::Dynamic(_) | UpstreamRef::DynamicUrl(_) => {
                unreachable!("a dynamic target is resolved first")
            }
        }
    }

    /// The listening addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.site.listens.iter().map(|l| l.addr).collect()
    }

    /// The pid file, resolved against the prefix.
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.site
            .pid
            .as_ref()
            .map(|p| resolve(&self.site.prefix, p))
    }
}

fn resolve(prefix: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        prefix.join(p)
    }
}

/// A server's exact `server_name`s (the resolver's map; wildcards and regexes follow
/// nginx's rules over the servers).
fn exact_names(server: &Server) -> Vec<String> {
    (server.server_names.iter())
        .filter_map(|n| match n {
            ServerName::Exact(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// How many `host:port`s named by `proxy_pass` variables keep a pool of their own.
const MAX_DYNAMIC_UPSTREAMS: usize = 256;

/// A location's `proxy_pass` and settings by their addresses (see `by_location`).
fn location_key(pass: &ProxyPass, settings: &ProxySettings) -> (usize, usize) {
    (
        std::ptr::from_ref(pass) as usize,
        std::ptr::from_ref(settings) as usize,
    )
}

/// Where a request is logged: a file, a `log_format` name, and nginx's `if=` condition.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub path: Arc<PathBuf>,
    pub format: String,
    pub condition: Option<Arc<hsmgate_config::nginx::Template>>,
}

/// One pool per (upstream, connect timeout, TLS settings).
fn balancer_key(target: &UpstreamRef, https: bool, settings: &ProxySettings) -> String {
    let ms = settings.proxy_connect_timeout.as_millis();
    let tls = match https {
        true => format!("|{:?}", settings.proxy_ssl),
        false => String::new(),
    };
    match target {
        UpstreamRef::Named(n) => format!("{n}|{ms}{tls}"),
        UpstreamRef::Addr(a) => format!("={a}|{ms}{tls}"),
        UpstreamRef::Dynamic(t) => format!("${t:?}|{ms}{tls}"),
        UpstreamRef::DynamicUrl(t) => format!("$${t:?}|{ms}{tls}"),
    }
}

/// The TLS settings of a `proxy_pass https://` in a location with `settings`.
fn upstream_tls(
    https: bool,
    settings: &ProxySettings,
) -> Result<Option<crate::balance::UpstreamTls>, ProxyError> {
    Ok(match https {
        true => Some(crate::balance::UpstreamTls {
            config: crate::upstream_tls::client_config(&settings.proxy_ssl)?,
            name: settings.proxy_ssl.name.clone(),
        }),
        false => None,
    })
}

/// `host[:port]` (a name, an IPv4 address or a bracketed IPv6 one) with `port` when none
/// is written; `None` for anything else.
fn dynamic_addr(host: &str, port: u16) -> Option<String> {
    let (name, port) = match host.strip_prefix('[') {
        Some(v6) => {
            let (addr, rest) = v6.split_once(']')?;
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match rest {
                "" => port,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (format!("[{addr}]"), port)
        }
        None => {
            let (name, port) = match host.split_once(':') {
                Some((n, p)) => (n, p.parse::<u16>().ok()?),
                None => (host, port),
            };
            let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
            if name.is_empty() || !name.bytes().all(valid) {
                return None;
            }
            (name.to_owned(), port)
        }
    };
    (port != 0).then(|| format!("{name}:{port}"))
}

/// `e` placed where the configuration names what failed: the directive that names the
/// file, if known, else the server.
fn located(
    e: ProxyError,
    tls: &hsmgate_config::nginx::TlsSettings,
    server: &Location,
) -> ProxyError {
    let named = match &e {
        ProxyError::At { .. } => return e,
        ProxyError::TlsFile {
            directive, path, ..
        } => tls.files_at.of(directive, path, tls),
        ProxyError::TicketKey { file, .. } => tls.files_at.of("ssl_session_ticket_key", file, tls),
        _ => None,
    };
    ProxyError::At {
        at: named.map_or_else(|| at(server), str::to_owned),
        source: Box::new(e),
    }
}
