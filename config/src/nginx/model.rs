//! The validated nginx model: what an nginx configuration means to hsmgate.
//!
//! Per-location settings are already merged (`http` → `server` → `location`)
//! with nginx's rules, so the proxy reads one [`ProxySettings`] per request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::parse::SourceFile;
use super::proxy_ssl::ProxySsl;
use super::template::{Template, TemplatePart};
use super::tls::TlsSettings;
use crate::model::{ConfigWarning, Location};
use crate::pkcs11_uri::Pkcs11Uri;

/// A loaded nginx configuration.
#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// `server` blocks, in file order.
    pub servers: Vec<Server>,
    /// `upstream` blocks by name.
    pub upstreams: BTreeMap<String, UpstreamGroup>,
    /// `user USER [GROUP]`: recorded so the binary may drop privileges after binding.
    pub user: Option<(String, Option<String>)>,
    /// `worker_processes`: hsmgate is one multi-threaded process; the value is
    /// only recorded (`None` = `auto` or unset).
    pub worker_processes: Option<u32>,
    /// `worker_shutdown_timeout`: how long a graceful stop waits for in-flight requests
    /// (`None`: hsmgate's default, [`crate::site::DEFAULT_GRACE`]).
    pub shutdown_timeout: Option<Duration>,
    /// `events { worker_connections N; }`: a connection limit hint (nginx's
    /// default is 512).
    pub worker_connections: Option<u32>,
    /// `pid`: where the running process writes its pid, used by `-s`
    /// (relative paths resolved against the prefix).
    pub pid: Option<PathBuf>,
    /// Main-level `error_log`s (empty: nginx's compiled-in default).
    pub error_logs: Vec<ErrorLog>,
    /// hsmgate's admin listener (`/healthz`, `/readyz`, `/metrics`, `/status`) from
    /// `env HSMGATE_ADMIN=ADDR;` (a line nginx accepts too).
    pub admin: Option<SocketAddr>,
    /// The access log of levels where no `access_log` is set: the replaced nginx's
    /// compiled-in `--http-log-path` ([`compiled_paths`](super::compiled_paths)).
    pub default_access_log: PathBuf,
    /// Where that default comes from (e.g. "Debian's nginx default"), for messages.
    pub default_access_log_origin: &'static str,
    /// The `http` block, named when the default access log cannot be opened.
    pub http_at: Option<Location>,
    /// `env NAME` / `env NAME=VALUE`: variables kept (or set) for the process.
    pub env: Vec<(String, Option<String>)>,
    /// `ssl_engine pkcs11;` was given (the only engine accepted).
    pub ssl_engine_pkcs11: bool,
    /// `log_format`s by name, including nginx's predefined `combined`.
    pub log_formats: BTreeMap<String, LogFormat>,
    /// `map` blocks by the variable they define (lower case, without `$`).
    pub maps: BTreeMap<String, super::VarMap>,
    /// `limit_req_zone`s and `limit_conn_zone`s.
    pub limit_zones: super::LimitZones,
    /// HA groups of HSMs (`map … $hsmgate_group_NAME { … }`), by name; a key names one
    /// with `x-hsmgate-group=NAME` in its URI.
    pub hsm_groups: BTreeMap<String, crate::model::HsmGroup>,
    /// nginx's prefix (`-p`): base of relative `pid`, `error_log`, `access_log` paths.
    pub prefix: PathBuf,
    /// The main file's directory: base of `include` and `ssl_*` file paths.
    pub conf_prefix: PathBuf,
    /// Ignored directives and dropped settings; the caller should log them.
    pub warnings: Vec<ConfigWarning>,
    pub(crate) files: Vec<SourceFile>,
}

impl NginxConfig {
    /// Every file read, in the order nginx reads them (the `-g` directives
    /// first, as `command line`, when given).
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// The files as `nginx -T` prints them: `# configuration file PATH:`,
    /// the text, then an empty line.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for f in self
            .files
            .iter()
            .filter(|f| f.path != std::path::Path::new("command line"))
        {
            out.push_str(&format!(
                "# configuration file {}:\n{}\n",
                f.path.display(),
                f.text
            ));
        }
        out
    }
}

/// One `server` block.
#[derive(Debug, Clone)]
pub struct Server {
    /// `listen` (nginx's default when absent: `*:80`).
    pub listens: Vec<Listen>,
    /// `server_name`s in order (empty: nginx's default `""`).
    pub server_names: Vec<ServerName>,
    /// Certificate/key pairs (e.g. RSA and ECDSA), inherited from `http` if none here.
    pub certs: Vec<CertPair>,
    /// TLS settings, merged with `http`'s.
    pub tls: TlsSettings,
    /// A server-level `return`, answered before any location is looked at.
    pub server_return: Option<Return>,
    /// Server-level `if (…) { return …; }` and `rewrite` before any `return`, run in
    /// order before [`server_return`](Self::server_return).
    pub server_steps: Vec<super::ServerStep>,
    /// Settings at server level (used when no location matches).
    pub settings: ProxySettings,
    /// `location` blocks in file order.
    pub locations: Vec<LocationBlock>,
    /// Where the block starts.
    pub location: Location,
}

/// One `listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The address; `8443` means `0.0.0.0:8443`, `*:443` too; `localhost` is `127.0.0.1`.
    pub addr: SocketAddr,
    /// `ssl`.
    pub ssl: bool,
    /// `http2` (offer ALPN `h2`).
    pub http2: bool,
    /// `default_server` (or `default`).
    pub default_server: bool,
    /// `reuseport`.
    pub reuseport: bool,
    /// `ipv6only=on|off` (nginx's default: on).
    pub ipv6only: Option<bool>,
    /// `backlog=N`.
    pub backlog: Option<u32>,
    /// `deferred`, `so_keepalive=`, `fastopen=`, `rcvbuf=`, `sndbuf=`.
    pub socket: SocketOptions,
    /// `proxy_protocol`: every connection starts with a PROXY protocol header (v1 or
    /// v2) from the load balancer in front.
    pub proxy_protocol: bool,
}

/// The `listen` parameters that set options of the listening socket, as nginx sets them
/// on Linux (accepted connections inherit them). nginx allows them on one `listen` of
/// an address; here any `listen` of the address may give them, the last one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `deferred`: `TCP_DEFER_ACCEPT` of 1 s, as nginx: a connection is accepted once
    /// its first bytes (the ClientHello) have arrived.
    pub deferred: bool,
    /// `so_keepalive=on|off|[keepidle]:[keepintvl]:[keepcnt]`.
    pub keepalive: Option<SoKeepalive>,
    /// `fastopen=N`: `TCP_FASTOPEN` with a queue of N.
    pub fastopen: Option<u32>,
    /// `rcvbuf=SIZE`: `SO_RCVBUF`.
    pub rcvbuf: Option<u32>,
    /// `sndbuf=SIZE`: `SO_SNDBUF`.
    pub sndbuf: Option<u32>,
}

impl SocketOptions {
    /// Those of `other` that it sets replace these.
    pub fn merge(&mut self, other: &SocketOptions) {
        self.deferred |= other.deferred;
        self.keepalive = other.keepalive.or(self.keepalive);
        self.fastopen = other.fastopen.or(self.fastopen);
        self.rcvbuf = other.rcvbuf.or(self.rcvbuf);
        self.sndbuf = other.sndbuf.or(self.sndbuf);
    }
}

/// `so_keepalive=`: TCP keep-alive probes on accepted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoKeepalive {
    /// `off`: `SO_KEEPALIVE` cleared.
    Off,
    /// `on`, or `keepidle:keepintvl:keepcnt` with any part left empty for the system's
    /// default (`TCP_KEEPIDLE`, `TCP_KEEPINTVL` in seconds, `TCP_KEEPCNT`).
    On {
        /// `TCP_KEEPIDLE`, seconds.
        idle: Option<u32>,
        /// `TCP_KEEPINTVL`, seconds.
        interval: Option<u32>,
        /// `TCP_KEEPCNT`.
        count: Option<u32>,
    },
}

/// One `server_name`, lower-cased.
#[derive(Debug, Clone)]
pub enum ServerName {
    /// `example.com` (and `""`, which matches a request without `Host`).
    Exact(String),
    /// `*.example.com`, `.example.com` (also matches `example.com`) or `www.example.*`.
    Wildcard(String),
    /// `~regex`, compiled (case-sensitively, as nginx does).
    Regex(Regex),
}

impl ServerName {
    /// nginx's `$server_name` when this is the server's first name: as written
    /// (lower-cased), `example.org` for `.example.org`, and a regex with its `~`.
    pub fn variable_value(&self) -> String {
        match self {
            Self::Exact(n) => n.clone(),
            Self::Wildcard(w) => w.strip_prefix('.').unwrap_or(w).to_owned(),
            Self::Regex(r) => format!("~{}", r.as_str()),
        }
    }
}

impl Server {
    /// nginx's `$server_name`: the first `server_name` ([`ServerName::variable_value`]),
    /// empty when none is written.
    pub fn server_name_variable(&self) -> String {
        self.server_names
            .first()
            .map(ServerName::variable_value)
            .unwrap_or_default()
    }
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertPair {
    /// PEM chain, resolved against the conf prefix.
    pub cert: PathBuf,
    /// The key.
    pub key: KeySource,
    /// Where `ssl_certificate_key` is.
    pub location: Location,
    /// Where `ssl_certificate` is (TOML: `certificate`, or the flag or variable).
    pub cert_location: Location,
}

/// Where a private key is.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `engine:pkcs11:pkcs11:…` or `pkcs11:…`: in a token whose module and PIN are found
    /// as nginx's engine would (the URI, OpenSSL's configuration, the defaults), or in the
    /// HA group its `x-hsmgate-group` names.
    Pkcs11(Box<Pkcs11Uri>),
    /// In one token whose settings are all given (the TOML format's `[pkcs11]`).
    Token(Box<TokenKey>),
    /// A PEM file, resolved against the conf prefix.
    File(PathBuf),
}

/// A key in one token, with the token's settings resolved (module, PIN source, sessions,
/// queue, deadline, capacity).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenKey {
    /// The key.
    pub uri: Pkcs11Uri,
    /// The token's settings.
    pub pkcs11: crate::model::Pkcs11Config,
}

/// A `location` block.
#[derive(Debug, Clone)]
pub struct LocationBlock {
    /// The modifier and pattern.
    pub matcher: Matcher,
    /// `proxy_pass` or `return` (`return` wins when both are given, as the
    /// rewrite phase runs first). `None`: nginx would serve files; hsmgate
    /// answers 404.
    pub action: Option<Action>,
    /// `rewrite`s and `if`s written before any `return`, run in order before the action.
    pub steps: Vec<super::LocationStep>,
    /// `internal`: reached only by an internal redirect (a `rewrite` or an
    /// `error_page`); a client's request for it is a 404.
    pub internal: bool,
    /// The `proxy_pass`, also where a `return` answers first: a `rewrite … break`
    /// before the `return` skips it, and the request is proxied.
    pub pass: Option<ProxyPass>,
    /// Settings merged from `http`, `server` and enclosing locations.
    pub settings: ProxySettings,
    /// Nested `location`s.
    pub locations: Vec<LocationBlock>,
    /// Where the block starts.
    pub location: Location,
}

/// How a location matches.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `= /path`
    Exact(String),
    /// `/prefix`
    Prefix(String),
    /// `^~ /prefix`: when the longest prefix, regexes are not tried.
    PrefixNoRegex(String),
    /// `~ re` or `~* re`.
    Regex {
        /// `~*`.
        case_insensitive: bool,
        /// The pattern as written.
        pattern: String,
        /// Compiled (with `(?i)` for `~*`).
        regex: super::ngx_regex::NgxRegex,
    },
}

/// The kind of [`Matcher`], for comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationModifier {
    /// `=`
    Exact,
    /// none
    Prefix,
    /// `^~`
    PrefixNoRegex,
    /// `~` (false) or `~*` (true).
    Regex {
        /// `~*`.
        case_insensitive: bool,
    },
}

impl Matcher {
    /// The modifier.
    pub fn modifier(&self) -> LocationModifier {
        match self {
            Self::Exact(_) => LocationModifier::Exact,
            Self::Prefix(_) => LocationModifier::Prefix,
            Self::PrefixNoRegex(_) => LocationModifier::PrefixNoRegex,
            Self::Regex {
                case_insensitive, ..
            } => LocationModifier::Regex {
                case_insensitive: *case_insensitive,
            },
        }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        match self {
            Self::Exact(p) | Self::Prefix(p) | Self::PrefixNoRegex(p) => p,
            Self::Regex { pattern, .. } => pattern,
        }
    }
}

/// What a location does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `proxy_pass`.
    ProxyPass(ProxyPass),
    /// `return`.
    Return(Return),
    /// `stub_status`: nginx's connection and request counts.
    StubStatus,
}

/// `proxy_pass http[s]://TARGET[URI]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPass {
    /// `https://`: TLS to the upstream, with the location's `proxy_ssl_*`.
    pub https: bool,
    /// The backend.
    pub target: UpstreamRef,
    /// The URI part (`/v1/` in `http://b/v1/`), which replaces the matched
    /// location prefix; `None`: the request URI is passed unchanged.
    pub uri: Option<String>,
    /// The URL as written (for `proxy_redirect default`).
    pub url: String,
}

impl ProxyPass {
    /// Whether the URL has variables (evaluated per request).
    pub fn has_variables(&self) -> bool {
        matches!(
            self.target,
            UpstreamRef::Dynamic(_) | UpstreamRef::DynamicUrl(_)
        )
    }

    /// nginx's `proxy_redirect default` in a location matched by `matcher`: the URL as
    /// written becomes the location's name (`http://b/v1/` → `/api/`), or with no URI
    /// part the URL and `/` becomes `/`.
    pub fn default_redirect(&self, matcher: &Matcher) -> ValueRewrite {
        let literal = |s: String| Template {
            parts: vec![TemplatePart::Literal(s)],
        };
        let (from, to) = match &self.uri {
            Some(_) => (self.url.clone(), matcher.pattern().to_owned()),
            None => (format!("{}/", self.url), "/".to_owned()),
        };
        ValueRewrite {
            from: ValueMatch::Text(literal(from)),
            to: literal(to),
        }
    }
}

/// A `proxy_pass` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamRef {
    /// An `upstream` block of that name.
    Named(String),
    /// `host:port` (port 80, or 443 for `https://`, when not written), or `unix:/path`
    /// (`http://unix:/path:/uri`: a Unix domain socket, plain HTTP only).
    Addr(String),
    /// A URL with variables (`http://$backend`, `http://app$request_uri`): what follows
    /// the scheme, expanded per request and split at its first `/` into an `upstream`
    /// block's name or a `host[:port]`, and a URI that replaces the request's whole.
    Dynamic(Template),
    /// A URL whose scheme is a variable's too (`proxy_pass $backend;`,
    /// `proxy_pass $upstream_proto://$upstream_app:$upstream_port;`): expanded per
    /// request, it must start with `http://` or `https://` (else nginx's 500), and the
    /// rest is read as [`UpstreamRef::Dynamic`]'s.
    DynamicUrl(Template),
}

/// `return code [text|URL]` or `return URL` (302).
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    /// The status; 444 closes the connection without a response.
    pub code: u16,
    /// For 301, 302, 303, 307, 308: the `Location`; otherwise the body.
    pub text_or_url: Option<Template>,
}

/// `limit_except METHOD… { … }`: nginx's implicit location for the other methods.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitExcept {
    /// The methods the location's own settings serve (`GET` brings `HEAD`).
    pub methods: Vec<String>,
    /// The settings of every other method.
    pub settings: ProxySettings,
}

impl LimitExcept {
    /// Whether `method` is one the block leaves alone.
    pub fn allows(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
            || (method == "HEAD" && self.methods.iter().any(|m| m == "GET"))
    }
}

impl ProxySettings {
    /// The settings a request with `method` gets here: the `limit_except` block's for a
    /// method it does not list, else these.
    pub fn for_method(&self, method: &str) -> &ProxySettings {
        match &self.limit_except {
            Some(l) if !l.allows(method) => &l.settings,
            _ => self,
        }
    }
}

/// Settings of one level, merged with nginx's inheritance rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// `allow` / `deny`, in order (a level with any inherits none of the outer ones).
    pub access_rules: Vec<AccessRule>,
    /// `auth_basic` with its `auth_basic_user_file` (`None`: off, or no file).
    pub auth_basic: Option<AuthBasic>,
    /// `satisfy any` (true) or `all` (false, the default): whether `allow`/`deny` or
    /// `auth_basic` alone lets a request through.
    pub satisfy_any: bool,
    /// `set_real_ip_from` with `real_ip_header` and `real_ip_recursive` (`None`: no
    /// trusted address, the client is the connection's peer).
    pub real_ip: Option<RealIp>,
    /// `auth_request URI` (`off`: `None`): the request is let through when a
    /// subrequest to `URI` answers 2xx, refused with its 401 or 403, else a 500.
    pub auth_request: Option<String>,
    /// `auth_request_set $NAME VALUE`s: set after the subrequest, from its variables
    /// (`$upstream_http_NAME`, `$upstream_status`); a level with its own inherits none.
    pub auth_request_set: Vec<super::SetVar>,
    /// `limit_req` and `limit_conn` with their settings.
    pub limits: super::Limits,
    /// `proxy_redirect`s: an upstream's `Location` and `Refresh` rewritten (the first
    /// that matches; a level with its own inherits none; `off`: none). With none written
    /// at any level, a location's is nginx's `default`, from its `proxy_pass`
    /// ([`ProxyPass::default_redirect`]).
    pub proxy_redirect: Vec<ValueRewrite>,
    /// `proxy_cookie_path`s: the `path` attribute of upstream `Set-Cookie`s rewritten
    /// (the first that matches; a level with its own inherits none; `off`: none).
    pub proxy_cookie_path: Vec<ValueRewrite>,
    /// `proxy_cookie_domain`s: the `domain` attribute, likewise.
    pub proxy_cookie_domain: Vec<ValueRewrite>,
    /// `proxy_cookie_flags`: `Secure`, `HttpOnly`, `SameSite` set or removed (the first
    /// rule whose cookie matches; a level with its own inherits none; `off`: none).
    pub proxy_cookie_flags: Vec<CookieFlags>,
    /// `error_page`s (a level with its own inherits none of the outer ones).
    pub error_pages: Vec<ErrorPage>,
    /// `proxy_intercept_errors` (default off): an upstream's answer with a status an
    /// `error_page` names is replaced as hsmgate's own errors are.
    pub proxy_intercept_errors: bool,
    /// `limit_rate` (bytes per second; default 0, no limit): how fast an answer's body
    /// is sent to the client, per request.
    pub limit_rate: u64,
    /// `limit_rate_after` (bytes; default 0): how much of a body goes before
    /// `limit_rate` applies.
    pub limit_rate_after: u64,
    /// `recursive_error_pages` (default off): an error of the page an `error_page` went
    /// to may go to another.
    pub recursive_error_pages: bool,
    /// `absolute_redirect` (default on): the redirects hsmgate makes (and `Location`s
    /// `proxy_redirect` made relative) name scheme, host and port; off: as written.
    pub absolute_redirect: bool,
    /// `port_in_redirect` (default on): such a redirect names the server's port when not
    /// the scheme's default.
    pub port_in_redirect: bool,
    /// `merge_slashes` (default on): `//` in a request path is one `/` for location
    /// matching and `$uri`.
    pub merge_slashes: bool,
    /// `underscores_in_headers` (default off): request headers with `_` in their name
    /// are kept (else dropped, with `ignore_invalid_headers`).
    pub underscores_in_headers: bool,
    /// `ignore_invalid_headers` (default on): request headers whose name has characters
    /// other than letters, digits and `-` (and `_` with `underscores_in_headers`) are
    /// dropped.
    pub ignore_invalid_headers: bool,
    /// `expires` (default off): `Expires` and `Cache-Control` of successful answers.
    pub expires: super::Expires,
    /// `limit_except METHOD… { … }` of a location: the settings a request whose method
    /// is not listed gets instead (the location's, with the block's `allow`/`deny`,
    /// `auth_basic` and `access_log`).
    pub limit_except: Option<Box<LimitExcept>>,
    /// `proxy_pass_request_body` (default on): off sends the upstream no body.
    pub proxy_pass_request_body: bool,
    /// `proxy_pass_request_headers` (default on): off sends the upstream none of the
    /// client's headers (only `proxy_set_header`s, `Host`, `Connection`).
    pub proxy_pass_request_headers: bool,
    /// `proxy_method`: the method of the upstream request (`None`: the client's).
    pub proxy_method: Option<String>,
    /// `proxy_set_body`: the body sent to the upstream instead of the client's.
    pub proxy_set_body: Option<Template>,
    /// `root`: where a location that serves files reads them from. hsmgate reads files
    /// only for the page of an `error_page` (nginx's `/50x.html` pattern).
    pub root: Option<PathBuf>,
    /// `types` and `default_type`: the `Content-Type` of a `return CODE TEXT` answer,
    /// by the request URI's extension as nginx chooses it.
    pub mime: MimeTypes,
    /// `proxy_set_header`s (not inherited by a level that has its own). The
    /// proxy adds nginx's defaults `Host: $proxy_host` and `Connection: close`
    /// unless these set them.
    pub proxy_set_header: Vec<(String, Template)>,
    /// `add_header NAME VALUE [always]` (same inheritance rule).
    pub add_header: Vec<AddHeader>,
    /// `proxy_hide_header`s: upstream response headers not passed to the client, besides
    /// nginx's defaults ([`HIDDEN_BY_DEFAULT`]). Lower case. A level that sets
    /// `proxy_hide_header` or `proxy_pass_header` inherits neither list (nginx's rule).
    pub proxy_hide_header: Vec<String>,
    /// `proxy_pass_header`s: headers of [`HIDDEN_BY_DEFAULT`] passed after all. Lower case.
    pub proxy_pass_header: Vec<String>,
    /// `proxy_http_version` (default 1.0).
    pub proxy_http_version: HttpVersion,
    /// `proxy_connect_timeout` (default 60s).
    pub proxy_connect_timeout: Duration,
    /// `proxy_read_timeout` (default 60s).
    pub proxy_read_timeout: Duration,
    /// `proxy_send_timeout` (default 60s).
    pub proxy_send_timeout: Duration,
    /// `proxy_next_upstream` (default `error timeout`): when a request moves to the
    /// group's next server.
    pub proxy_next_upstream: NextUpstream,
    /// `client_max_body_size` in bytes (default 1m); `None`: unlimited (`0`).
    pub client_max_body_size: Option<u64>,
    /// `proxy_request_buffering` (default on): the whole request body is read before an
    /// upstream is chosen, so a request with a body can move to the next server.
    pub proxy_request_buffering: bool,
    /// `client_body_buffer_size` (default 16k): a buffered body larger than this is
    /// kept in an unlinked temporary file instead of memory.
    pub client_body_buffer_size: u64,
    /// `proxy_ssl_*`: TLS to `proxy_pass https://` upstreams.
    pub proxy_ssl: ProxySsl,
    /// `keepalive_timeout` (default 75s; `0` disables keep-alive).
    pub keepalive_timeout: Duration,
    /// `access_log`s (empty: not set at any level, nginx's default
    /// `logs/access.log combined`; `[Off]`: off).
    pub access_logs: Vec<AccessLog>,
    /// `error_log`s of this level (empty: the main ones).
    pub error_logs: Vec<ErrorLog>,
    /// What a client may send (`http` and `server` levels).
    pub client: ClientLimits,
}

/// Upstream response headers nginx does not pass to the client unless
/// `proxy_pass_header` names them (`ngx_http_proxy_hide_headers`): it sends its own
/// `Server` and `Date`, and the `X-Accel-*` ones are instructions to nginx itself.
pub const HIDDEN_BY_DEFAULT: &[&str] = &[
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

impl ProxySettings {
    /// Whether the upstream response header `name` (lower case, as `http` keeps names)
    /// is kept from the client: `proxy_hide_header`, or nginx's defaults unless
    /// `proxy_pass_header` names it.
    pub fn hides(&self, name: &str) -> bool {
        // Asked for every header of every response: the defaults all begin with `d`, `s`
        // or `x`, which most names do not.
        let default = matches!(name.as_bytes().first(), Some(b'd' | b's' | b'x'))
            && HIDDEN_BY_DEFAULT.contains(&name);
        self.proxy_hide_header.iter().any(|h| h == name)
            || (default && !self.proxy_pass_header.iter().any(|h| h == name))
    }
}

/// Limits on a client's requests (`http` and `server` levels; the default server of an
/// address sets them for its connections). nginx's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// `client_header_buffer_size` (default 1k). nginx reads a head into this buffer
    /// first; it changes memory use, not what is accepted, and is only recorded.
    pub header_buffer_size: u64,
    /// `large_client_header_buffers NUMBER SIZE` (default 4 8k): a request line longer
    /// than SIZE is a 414, a header line longer than SIZE or a head longer than
    /// NUMBER × SIZE a 400 ("Request Header Or Cookie Too Large"); for HTTP/2, the
    /// longest header field and header list.
    pub large_header_buffers: (u32, u64),
    /// `client_header_timeout` (default 60s): how long reading a request head may take.
    pub header_timeout: Duration,
    /// `client_body_timeout` (default 60s): how long reading a request body may pause.
    pub body_timeout: Duration,
    /// `send_timeout` (default 60s): how long a write of an answer may wait for the
    /// client to read (per connection: the address's default server's).
    pub send_timeout: Duration,
    /// `ssl_handshake_timeout` (nginx 1.25.5; default here 10 s): how long a client may
    /// take from its connection to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// `http2_max_concurrent_streams` (default 128).
    pub http2_max_concurrent_streams: u32,
    /// `proxy_protocol_timeout` (default 30s): how long the PROXY protocol header of a
    /// `listen … proxy_protocol` connection may take.
    pub proxy_protocol_timeout: Duration,
    /// `keepalive_requests` (default 1000): how many requests one client connection
    /// serves; the answer to the last one closes it (HTTP/1.1 `Connection: close`,
    /// HTTP/2 GOAWAY), as nginx does.
    pub keepalive_requests: u64,
    /// `keepalive_time` (default 1h): how long one client connection serves
    /// requests; the first answer after that closes it, as for `keepalive_requests`.
    pub keepalive_time: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_buffer_size: 1 << 10,
            large_header_buffers: (4, 8 << 10),
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            handshake_timeout: crate::defaults::HANDSHAKE_TIMEOUT,
            http2_max_concurrent_streams: 128,
            proxy_protocol_timeout: Duration::from_secs(30),
            keepalive_requests: 1000,
            keepalive_time: Duration::from_secs(3600),
        }
    }
}

/// `error_page CODE… [=[RESPONSE]] TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// The statuses it applies to (300–599).
    pub codes: Vec<u16>,
    /// The status of the answer.
    pub status: ErrorPageStatus,
    /// Where the request goes.
    pub target: ErrorPageTarget,
}

/// The status of an `error_page`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPageStatus {
    /// No `=`: the error's own status.
    Original,
    /// `=CODE`.
    Set(u16),
    /// `=` alone: the status of the page's own answer.
    FromTarget,
}

/// Where an `error_page` sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorPageTarget {
    /// `/uri[?args]`: an internal redirect (the method becomes GET, HEAD stays), the
    /// locations searched for the URI.
    Uri(Template),
    /// `@name`: the named location, URI unchanged.
    Named(String),
    /// Anything else (`http://…`): a redirect, 302 unless `=301`, `=303`, `=307` or `=308`.
    Redirect(Template),
}

/// One `proxy_redirect`, `proxy_cookie_path` or `proxy_cookie_domain` rule: an upstream
/// header value (`Location`, `Refresh`'s URL, a `Set-Cookie` attribute) that matches is
/// replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueRewrite {
    /// What is matched.
    pub from: ValueMatch,
    /// The replacement (variables, and a regex's captures `$1`…).
    pub to: Template,
}

/// One `proxy_cookie_flags COOKIE FLAG…`.
#[derive(Debug, Clone, PartialEq)]
pub struct CookieFlags {
    /// The cookie's name in any case, or `~regex` (`~` alone: every cookie).
    pub cookie: ValueMatch,
    /// `secure`, `httponly`, `samesite=strict|lax|none`, `nosecure`, `nohttponly`,
    /// `nosamesite` (variables allowed: read when the answer comes; others do nothing).
    pub flags: Vec<Template>,
}

/// Two regexes are equal when written alike.
impl PartialEq for ValueMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueMatch::Text(a), ValueMatch::Text(b)) => a == b,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// How a [`ValueRewrite`] matches.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// A prefix (case-sensitive: a `Location`, a cookie path), or a whole domain
    /// (case-insensitive, a leading dot ignored on both sides and kept in the result), as
    /// nginx compares them; variables expanded first.
    Text(Template),
    /// `~regex` or `~*regex` (case-insensitive): a match replaces the whole value.
    Regex(Regex),
}

/// nginx's realip module: a request from a trusted address (a load balancer) names its
/// client in a header, or in the connection's PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    /// `set_real_ip_from`: the trusted addresses (`unix:` never matches: hsmgate
    /// listens on no UNIX socket).
    pub from: Vec<AccessMatch>,
    /// `real_ip_header` (default `X-Real-IP`).
    pub header: RealIpHeader,
    /// `real_ip_recursive`: with `X-Forwarded-For`, the last address that is not trusted
    /// (else the last address).
    pub recursive: bool,
}

/// Where [`RealIp`] reads the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `proxy_protocol`: the source address of the connection's PROXY header.
    ProxyProtocol,
    /// A request header (lower case): `x-real-ip`, `x-forwarded-for`, or another.
    Header(String),
}

/// `auth_basic REALM` and `auth_basic_user_file FILE` (each inherited on its own, as in
/// nginx): a request needs the `Authorization: Basic` of a user in the file, whose
/// lines `user:hash[:comment]` are read at each request, as nginx does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthBasic {
    /// The realm (`WWW-Authenticate: Basic realm="…"`), variables expanded per request.
    pub realm: Template,
    /// The password file (relative paths from the configuration's directory).
    pub user_file: PathBuf,
}

/// One `allow` or `deny` rule (nginx's access module): the first rule whose addresses
/// hold the client's decides; none matching allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// `allow` (else `deny`).
    pub allow: bool,
    /// What it matches.
    pub matches: AccessMatch,
}

/// The addresses of an [`AccessRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMatch {
    /// `all`.
    All,
    /// An address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
    Net(ipnet::IpNet),
    /// `unix:`: connections over a UNIX socket, which hsmgate does not listen on.
    Unix,
}

impl AccessRule {
    /// Whether `rules` let `client` in: the first rule matching decides; none, allowed.
    /// An IPv4-mapped IPv6 address is matched as the IPv4 address, as nginx does.
    pub fn allows(rules: &[AccessRule], client: std::net::IpAddr) -> bool {
        let client = match client {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, std::net::IpAddr::V4),
            v4 => v4,
        };
        rules
            .iter()
            .find(|r| match r.matches {
                AccessMatch::All => true,
                AccessMatch::Net(net) => net.contains(&client),
                AccessMatch::Unix => false,
            })
            .is_none_or(|r| r.allow)
    }
}

/// `proxy_next_upstream`: the failures after which a request is passed to the next
/// server of its group (nginx's default `error timeout`). A request whose body was not
/// kept (`proxy_request_buffering off`) is never passed on, and a non-idempotent one
/// (POST, LOCK, PATCH) only with `non_idempotent`, once it has been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextUpstream {
    /// `error`: the connection failed, or the request could not be passed, or the
    /// response head not read (the connection closed or failed).
    pub error: bool,
    /// `invalid_header`: the response head was empty or invalid.
    pub invalid_header: bool,
    /// `timeout`: no response head within `proxy_read_timeout`.
    pub timeout: bool,
    /// `http_500`, `http_502`, `http_503`, `http_504`, `http_403`, `http_404`, `http_429`.
    pub statuses: Vec<u16>,
    /// `non_idempotent`.
    pub non_idempotent: bool,
    /// `proxy_next_upstream_tries N`: at most N servers tried, the first included (0,
    /// nginx's default: no limit).
    pub tries: u32,
    /// `proxy_next_upstream_timeout T`: no next server once T has passed since the first
    /// try began (0, nginx's default: no limit).
    pub time_limit: Option<Duration>,
}

impl Default for NextUpstream {
    fn default() -> Self {
        NextUpstream {
            error: true,
            invalid_header: false,
            timeout: true,
            statuses: Vec::new(),
            non_idempotent: false,
            tries: 0,
            time_limit: None,
        }
    }
}

impl NextUpstream {
    /// Whether a request that has tried `tried` servers, the first `elapsed` ago, may
    /// still move to another (the failure permitting it).
    pub fn may_try_another(&self, tried: usize, elapsed: Duration) -> bool {
        let within_tries = self.tries == 0 || tried < self.tries as usize;
        within_tries && self.time_limit.is_none_or(|limit| elapsed < limit)
    }
}

/// `add_header`.
#[derive(Debug, Clone, PartialEq)]
pub struct AddHeader {
    /// Header name.
    pub name: String,
    /// Value template.
    pub value: Template,
    /// `always`: also on error responses.
    pub always: bool,
}

/// `proxy_http_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// `1.0`
    Http10,
    /// `1.1`
    Http11,
}

/// `access_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// `access_log off`.
    Off,
    /// `access_log PATH [FORMAT]` (format `combined` when not given).
    File {
        /// Resolved against the prefix.
        path: PathBuf,
        /// A key of [`NginxConfig::log_formats`].
        format: String,
        /// `if=CONDITION`: a request is logged unless the condition's value is empty or
        /// `0` (nginx's conditional logging).
        condition: Option<std::sync::Arc<Template>>,
        /// The `access_log` directive.
        at: Location,
    },
}

/// `log_format NAME [escape=…] STRING…`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFormat {
    /// `escape=`.
    pub escape: LogEscape,
    /// The strings, concatenated.
    pub template: Template,
}

/// `escape=` of `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEscape {
    /// `default`: `"`, `\` and control bytes as `\xHH`.
    Default,
    /// `json`.
    Json,
    /// `none`.
    None,
}

/// `error_log TARGET [LEVEL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLog {
    /// A file (resolved against the prefix), or `None` for `stderr`.
    pub path: Option<PathBuf>,
    /// `debug`, `info`, `notice`, `warn`, `error` (default), `crit`, `alert`, `emerg`.
    pub level: String,
}

/// `upstream NAME { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamGroup {
    /// `server` lines, in order.
    pub servers: Vec<UpstreamServer>,
    /// `keepalive N`: idle connections kept per worker.
    pub keepalive: Option<u32>,
    /// How a server is picked (`least_conn`, `ip_hash`, `hash`, `random`; default
    /// weighted round-robin).
    pub method: BalanceMethod,
    /// Where the block starts.
    pub location: Location,
}

/// An `upstream`'s load-balancing method.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BalanceMethod {
    /// nginx's smooth weighted round-robin (the default).
    #[default]
    RoundRobin,
    /// `least_conn`: the fewest requests in progress for its weight.
    LeastConn,
    /// `ip_hash`: by the client's address (an IPv4 address's first three bytes).
    IpHash,
    /// `hash KEY [consistent]`: by a key; `consistent`: ketama, few keys move when the
    /// servers change.
    Hash {
        /// The key.
        key: Template,
        /// `consistent`.
        consistent: bool,
    },
    /// `random [two [least_conn]]`: weighted random; `two`: the less loaded of two.
    Random {
        /// `two`.
        two: bool,
    },
}

/// `server ADDR [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// `host:port` (port 80 when not written), or `unix:/path` (a Unix domain socket).
    pub addr: String,
    /// `weight` (default 1).
    pub weight: u32,
    /// `max_fails` (default 1; 0 disables).
    pub max_fails: u32,
    /// `fail_timeout` (default 10s).
    pub fail_timeout: Duration,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
}

/// `types { TYPE EXT…; }` and `default_type TYPE` of a level (nginx's
/// `ngx_http_set_content_type`, for the answers hsmgate makes itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeTypes {
    /// Extension (lower case) → type; nginx's built-in three where no `types` is written.
    pub by_ext: std::sync::Arc<std::collections::HashMap<String, String>>,
    /// `default_type` (nginx's default: `text/plain`).
    pub default: String,
}

impl Default for MimeTypes {
    fn default() -> Self {
        MimeTypes {
            by_ext: std::sync::Arc::new(builtin_types()),
            default: "text/plain".into(),
        }
    }
}

/// nginx's `types` where none is configured.
pub(crate) fn builtin_types() -> std::collections::HashMap<String, String> {
    [
        ("html", "text/html"),
        ("gif", "image/gif"),
        ("jpg", "image/jpeg"),
    ]
    .into_iter()
    .map(|(e, t)| (e.to_owned(), t.to_owned()))
    .collect()
}

impl MimeTypes {
    /// The type of an answer to `uri` (the normalised path): by the extension of its
    /// last segment (case-insensitive), else `default_type`.
    pub fn for_uri(&self, uri: &str) -> &str {
        let last = uri.rsplit('/').next().unwrap_or(uri);
        let ext = match last.rsplit_once('.') {
            Some((_, ext)) if !ext.is_empty() => ext,
            _ => return &self.default,
        };
        let found = match ext.bytes().any(|b| b.is_ascii_uppercase()) {
            true => self.by_ext.get(&ext.to_ascii_lowercase()),
            false => self.by_ext.get(ext),
        };
        found.map_or(&self.default, String::as_str)
    }
}
