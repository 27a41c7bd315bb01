//! nginx variables (`$host`, `$remote_addr`, `$proxy_add_x_forwarded_for`, …)
//! evaluated for one request, and [`Template`]s expanded with them.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use std::collections::BTreeMap;

use hsmgate_config::nginx::{Template, TemplatePart, VarMap};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::conn_info::ConnInfo;

/// The values of one request's variables.
#[derive(Debug)]
pub(crate) struct Vars<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// The client (`$remote_addr`): the peer, or whom a trusted peer names (realip).
    pub client: std::net::SocketAddr,
    /// Request headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// `GET`…
    pub method: &'a str,
    /// Path and query as received.
    pub request_uri: &'a str,
    /// The normalised path (`$uri`), as a `rewrite` left it.
    pub uri: &'a str,
    /// The arguments once a `rewrite` changed them (`None`: those of `request_uri`).
    pub args: Option<&'a str>,
    /// The variables `set` gave a value (others `set` declares are empty).
    pub set_vars: &'a [(String, String)],
    /// `$limit_req_status` and `$limit_conn_status` (empty before those checks).
    pub limit_status: (&'static str, &'static str),
    /// `HTTP/1.1`…
    pub protocol: &'a str,
    /// The `Host` (or `:authority`) as sent, with port.
    pub http_host: Option<&'a str>,
    /// The first `server_name` of the chosen server.
    pub server_name: &'a str,
    /// `$proxy_host` (the upstream name or address).
    pub proxy_host: &'a str,
    /// `$upstream_addr`.
    pub upstream_addr: &'a str,
    /// The response status (0 before there is one).
    pub status: u16,
    /// Body bytes sent to the client.
    pub body_bytes_sent: u64,
    /// When the request started.
    pub started: SystemTime,
    /// When the request started, by the monotonic clock (`$request_time` is read from
    /// it when asked for: most requests never ask).
    pub t0: Instant,
    /// `map` variables.
    pub maps: &'a BTreeMap<String, VarMap>,
    /// `$request_id`, made when first asked for.
    pub request_id: &'a OnceLock<String>,
    /// The upstream tries so far (`$upstream_status`, `$upstream_response_time`).
    pub upstream: &'a UpstreamTries,
    /// Request body bytes received (part of `$request_length`; 0 until read).
    pub request_body_length: u64,
    /// The response headers sent (`$sent_http_NAME`; empty before the response).
    pub sent_headers: &'a HeaderMap,
    /// The upstream's response headers (`$upstream_http_NAME`; empty unless kept).
    pub upstream_headers: &'a HeaderMap,
    /// The response head's size (`$bytes_sent` is it plus the body's bytes; 0 when no
    /// log format asks for it).
    pub head_bytes_sent: u64,
    /// The request's number on its connection and whether it was pipelined
    /// (`$connection_requests`, `$pipe`).
    pub on_conn: crate::route::OnConn,
    /// The whole answer was sent (`$request_completion`; the access log's line knows).
    pub completed: bool,
}

/// What each upstream try gave, in order (nginx's `$upstream_status` and
/// `$upstream_response_time` list one value per server tried, `, `-separated).
#[derive(Debug, Default)]
pub(crate) struct UpstreamTries {
    /// Tries that ended before the one answering.
    pub done: Vec<Tried>,
    /// The try whose response is being sent: its status, when it was sent and how long
    /// connecting took.
    pub answering: Option<Answering>,
}

/// An upstream try that ended without being the answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tried {
    /// The upstream's status, or 502 for an error and 504 for a timeout.
    pub status: u16,
    /// How long it took.
    pub time: Duration,
    /// When its response head came (None: none came).
    pub header: Option<Duration>,
}

/// The upstream try whose response the client gets.
#[derive(Debug, Clone)]
pub(crate) struct Answering {
    /// The upstream's status.
    pub status: u16,
    /// When the request was sent (connecting included).
    pub sent: Instant,
    /// How long connecting took (zero on a kept connection).
    pub connect: Duration,
    /// From the request sent to the response head received (`$upstream_header_time`).
    pub header: Duration,
    /// The response body's bytes received from the upstream so far
    /// (`$upstream_response_length`; counted only when a log format reads it).
    pub received: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl UpstreamTries {
    fn statuses(&self) -> String {
        let answering = self.answering.iter().map(|a| a.status);
        let all: Vec<String> = (self.done.iter().map(|t| t.status))
            .chain(answering)
            .map(|s| s.to_string())
            .collect();
        all.join(", ")
    }

    /// Seconds with milliseconds; the answering try's until now (its body is done when
    /// the access log line is written).
    fn times(&self) -> String {
        let answering = self.answering.iter().map(|a| a.sent.elapsed());
        let done = self.done.iter().map(|t| t.time);
        seconds(done.chain(answering))
    }

    /// `$upstream_connect_time`: the answering try's; `-` for a try that failed (its
    /// connect time is not known apart from the failure).
    fn connect_times(&self) -> String {
        let failed = self.done.iter().map(|_| "-".to_owned());
        let answering = self.answering.iter().map(|a| one_time(a.connect));
        failed.chain(answering).collect::<Vec<_>>().join(", ")
    }

    /// `$upstream_header_time`: each try's time to its response head; `-` for a try
    /// that got none.
    fn header_times(&self) -> String {
        let done = (self.done.iter()).map(|t| t.header.map_or("-".to_owned(), one_time));
        let answering = self.answering.iter().map(|a| one_time(a.header));
        done.chain(answering).collect::<Vec<_>>().join(", ")
    }

    /// `$upstream_response_length`: each try's response body bytes (0 for one whose
    /// body was not read).
    fn lengths(&self) -> String {
        let done = self.done.iter().map(|_| "0".to_owned());
        let answering = (self.answering.iter()).map(|a| {
            (a.received.as_ref())
                .map_or(0, |r| r.load(std::sync::atomic::Ordering::Relaxed))
                .to_string()
        });
        done.chain(answering).collect::<Vec<_>>().join(", ")
    }
}

/// A duration as nginx writes it (`0.004`).
fn one_time(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Durations as nginx writes them (`0.004`), `, `-separated.
fn seconds(times: impl Iterator<Item = Duration>) -> String {
    let all: Vec<String> = times.map(one_time).collect();
    all.join(", ")
}

/// How deep `map` values may refer to other maps (a loop ends as an empty value).
const MAP_DEPTH: u8 = 8;

impl Vars<'_> {
    /// `$host`: `Host` without the port (as nginx's `ngx_http_validate_host`, all after
    /// the first `:` outside brackets) and without a trailing dot, lower-cased, else the
    /// server name.
    pub(crate) fn host(&self) -> String {
        match self.http_host {
            Some(h) if !h.is_empty() => {
                let name = match h.starts_with('[') {
                    true => strip_port(h),
                    false => h.split(':').next().unwrap_or(h),
                };
                let name = name.strip_suffix('.').unwrap_or(name);
                name.to_ascii_lowercase()
            }
            _ => self.server_name.to_owned(),
        }
    }

    /// The value of variable `name` (without `$`); unknown ones are empty.
    pub(crate) fn get(&self, name: &str) -> Cow<'_, str> {
        self.get_at(name, 0)
    }

    fn get_at(&self, name: &str, depth: u8) -> Cow<'_, str> {
        if let Some((_, value)) = self.set_vars.iter().find(|(n, _)| n == name) {
            return value.as_str().into();
        }
        if let Some(map) = self.maps.get(name) {
            if depth >= MAP_DEPTH {
                return "".into();
            }
            let source = self.expand_at(&map.source, depth + 1);
            return match map.lookup_capturing(&source) {
                (value, None) => self.expand_at(value, depth + 1).into(),
                (value, Some(caps)) => self.expand_captured(value, &caps, depth + 1).into(),
            };
        }
        match name {
            "host" => self.host().into(),
            "http_host" => self.http_host.unwrap_or("").into(),
            // As text: the same key for the same client (nginx's is the raw bytes).
            "remote_addr" | "binary_remote_addr" => ip_text(self.client.ip()).into(),
            "limit_req_status" => self.limit_status.0.into(),
            "limit_conn_status" => self.limit_status.1.into(),
            // Empty for an address a request header named (it has no port), as nginx.
            "remote_port" => match self.client.port() {
                0 => String::new(),
                p => p.to_string(),
            }
            .into(),
            "realip_remote_addr" => ip_text(self.conn.peer.ip()).into(),
            "realip_remote_port" => self.conn.peer.port().to_string().into(),
            "proxy_protocol_addr" => (self.conn.proxy_protocol)
                .map_or(String::new(), |h| ip_text(h.source.ip()))
                .into(),
            "proxy_protocol_port" => (self.conn.proxy_protocol)
                .map_or(String::new(), |h| h.source.port().to_string())
                .into(),
            "proxy_protocol_server_addr" => (self.conn.proxy_protocol)
                .map_or(String::new(), |h| ip_text(h.destination.ip()))
                .into(),
            "proxy_protocol_server_port" => (self.conn.proxy_protocol)
                .map_or(String::new(), |h| h.destination.port().to_string())
                .into(),
            "proxy_add_x_forwarded_for" => {
                let ip = ip_text(self.client.ip());
                const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
                let existing: Vec<&str> = (self.headers.get_all(XFF).iter())
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if existing.is_empty() {
                    ip.into()
                } else {
                    format!("{}, {ip}", existing.join(", ")).into()
                }
            }
            "scheme" => if self.conn.tls.is_some() {
                "https"
            } else {
                "http"
            }
            .into(),
            "https" => if self.conn.tls.is_some() { "on" } else { "" }.into(),
            // nginx: `h2` over TLS, `h2c` in the clear, empty for HTTP/1.x.
            "http2" => match (self.protocol, &self.conn.tls) {
                ("HTTP/2.0", Some(_)) => "h2",
                ("HTTP/2.0", None) => "h2c",
                _ => "",
            }
            .into(),
            "document_uri" => self.uri.into(),
            "content_type" => header_values(self.headers, "content_type").into(),
            "content_length" => header_values(self.headers, "content_length").into(),
            "pid" => std::process::id().to_string().into(),
            "connection_requests" => self.on_conn.number.to_string().into(),
            "pipe" => if self.on_conn.pipelined { "p" } else { "." }.into(),
            // hsmgate does not compress answers (`gzip` is ignored): no ratio, as from
            // nginx without gzip.
            "gzip_ratio" => "".into(),
            "request_completion" => if self.completed { "OK" } else { "" }.into(),
            "upstream_header_time" => self.upstream.header_times().into(),
            "upstream_response_length" => self.upstream.lengths().into(),
            "ssl_session_reused" => match &self.conn.tls {
                Some(t) if t.resumed => "r",
                Some(_) => ".",
                None => "",
            }
            .into(),
            "ssl_curve" => self.conn.tls.as_ref().map_or("", |t| t.curve).into(),
            // 0-RTT data is never accepted (`ssl_early_data` stays off), so no request
            // comes in early data.
            "ssl_early_data" => "".into(),
            "request_uri" => self.request_uri.into(),
            "uri" => self.uri.into(),
            "args" | "query_string" => self.args().into(),
            "is_args" => match self.args {
                Some(args) if !args.is_empty() => "?",
                None if self.request_uri.contains('?') => "?",
                _ => "",
            }
            .into(),
            "server_name" => self.server_name.into(),
            "server_port" => self.conn.local_port.to_string().into(),
            "server_addr" => self.conn.local_ip.to_string().into(),
            "request_method" => self.method.into(),
            "server_protocol" => self.protocol.into(),
            "proxy_host" => self.proxy_host.into(),
            "ssl_protocol" => self.conn.tls.as_ref().map_or("", |t| t.protocol).into(),
            "ssl_cipher" => self.conn.tls.as_ref().map_or("", |t| t.cipher).into(),
            "ssl_client_verify" => match (&self.conn.tls, &self.conn.client_cert) {
                (None, _) => "".into(),
                (Some(_), None) => "NONE".into(),
                (Some(_), Some(c)) => c.verify.to_string().into(),
            },
            "ssl_client_s_dn" => self
                .conn
                .client_cert
                .as_ref()
                .map_or("", |c| c.s_dn.as_str())
                .into(),
            "ssl_client_escaped_cert" => self
                .conn
                .client_cert
                .as_ref()
                .map_or("", |c| c.escaped_cert.as_str())
                .into(),
            "ssl_client_i_dn" => self.cert(|c| c.i_dn.as_str().into()),
            "ssl_client_serial" => self.cert(|c| c.serial.as_str().into()),
            "ssl_client_fingerprint" => self.cert(|c| c.fingerprint.as_str().into()),
            "ssl_client_raw_cert" => self.cert(|c| c.raw_cert.as_str().into()),
            "ssl_client_v_start" => self.cert(|c| openssl_time(c.not_before).into()),
            "ssl_client_v_end" => self.cert(|c| openssl_time(c.not_after).into()),
            "ssl_client_v_remain" => self.cert(|c| {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                days_remaining(c.not_after, now).to_string().into()
            }),
            "status" => format!("{:03}", self.status).into(),
            "body_bytes_sent" => self.body_bytes_sent.to_string().into(),
            "bytes_sent" => (self.head_bytes_sent + self.body_bytes_sent)
                .to_string()
                .into(),
            "request" => format!("{} {} {}", self.method, self.request_uri, self.protocol).into(),
            "time_local" => time_local(self.started).into(),
            "request_time" => format!("{:.3}", self.t0.elapsed().as_secs_f64()).into(),
            "upstream_addr" => self.upstream_addr.into(),
            "connection" => self.conn.id.to_string().into(),
            // The user of an `Authorization: Basic` header, checked or not (as nginx).
            // No response cache: empty, as nginx's without one.
            "upstream_cache_status" => "".into(),
            "remote_user" => crate::auth_basic::credentials(self.headers)
                .map_or(String::new(), |(user, _)| user)
                .into(),
            "request_id" => self.request_id.get_or_init(request_id).as_str().into(),
            "msec" => msec(SystemTime::now()).into(),
            "time_iso8601" => time_iso8601(self.started).into(),
            "upstream_status" => self.upstream.statuses().into(),
            "upstream_response_time" => self.upstream.times().into(),
            "upstream_connect_time" => self.upstream.connect_times().into(),
            "request_length" => self.request_length().to_string().into(),
            "ssl_server_name" => self.conn.sni.as_deref().unwrap_or("").into(),
            "hostname" => hostname().into(),
            other => {
                if let Some(h) = other.strip_prefix("http_") {
                    header_values(self.headers, h).into()
                } else if let Some(h) = other.strip_prefix("sent_http_") {
                    header_values(self.sent_headers, h).into()
                } else if let Some(h) = other.strip_prefix("upstream_http_") {
                    header_values(self.upstream_headers, h).into()
                } else if let Some(name) = other.strip_prefix("arg_") {
                    arg(self.args(), name).into()
                } else if let Some(name) = other.strip_prefix("cookie_") {
                    cookie(self.headers, name).into()
                } else if let Some(name) = other.strip_prefix("upstream_cookie_") {
                    set_cookie(self.upstream_headers, name).into()
                } else {
                    "".into()
                }
            }
        }
    }

    /// `read` of the client certificate's details; empty without one.
    fn cert(
        &self,
        read: impl for<'c> Fn(&'c crate::client_cert::CertDetails) -> Cow<'c, str>,
    ) -> Cow<'_, str> {
        match self
            .conn
            .client_cert
            .as_ref()
            .and_then(|c| c.details.as_ref())
        {
            Some(details) => read(details),
            None => "".into(),
        }
    }

    /// `$request_length`: the request line, the header lines and the body. The head is
    /// counted as sent in the usual form (`Name: value` lines; HTTP/2 as if it were
    /// HTTP/1.1 text), not from the bytes received.
    fn request_length(&self) -> u64 {
        let line = self.method.len() + self.request_uri.len() + self.protocol.len() + 4;
        let fields: usize = (self.headers.iter())
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        (line + fields + 2) as u64 + self.request_body_length
    }

    /// `$args`: the query as received, or as a `rewrite` changed it.
    fn args(&self) -> &str {
        match self.args {
            Some(args) => args,
            None => self.request_uri.split_once('?').map_or("", |(_, q)| q),
        }
    }

    /// `template` with its variables replaced.
    pub(crate) fn expand(&self, template: &Template) -> String {
        self.expand_at(template, 0)
    }

    /// `template` with `$0`…`$9` and named groups from `caps` (a `map` key's regex) and
    /// the other variables as usual.
    fn expand_captured(
        &self,
        template: &Template,
        caps: &hsmgate_config::nginx::Captures,
        depth: u8,
    ) -> String {
        let mut out = String::new();
        for p in &template.parts {
            match p {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Var(v) => match caps.get(v) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&self.get_at(v, depth)),
                },
            }
        }
        out
    }

    fn expand_at(&self, template: &Template, depth: u8) -> String {
        let mut out = String::new();
        for p in &template.parts {
            match p {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Var(v) => out.push_str(&self.get_at(v, depth)),
            }
        }
        out
    }
}

/// An address as nginx writes it (an IPv4-mapped IPv6 one as IPv4). IPv4 is written by
/// hand: `Display` through the formatter cost about 1,300 instructions, and
/// `$proxy_add_x_forwarded_for` asks for it on every proxied request.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
            out
        }
        v6 => v6.to_string(),
    }
}

/// Whether `name` is a variable hsmgate computes itself (not a `map`'s or a `set`'s,
/// whose values may read anything).
pub(crate) fn is_builtin(name: &str) -> bool {
    hsmgate_config::nginx::SUPPORTED_VARIABLES.contains(&name)
        || hsmgate_config::nginx::SUPPORTED_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// A time as OpenSSL's `ASN1_TIME_print` writes it (nginx's `$ssl_client_v_start`):
/// `Dec  3 08:00:00 2026 GMT`.
fn openssl_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%b %e %H:%M:%S %Y GMT").to_string())
        .unwrap_or_default()
}

/// `$ssl_client_v_remain`: whole days until `not_after`, 0 within the last day or
/// after it (as nginx counts).
fn days_remaining(not_after: i64, now: i64) -> i64 {
    if not_after < now.saturating_add(86_400) {
        0
    } else {
        (not_after - now) / 86_400
    }
}

/// The values of header `name` (`_` for `-`), `, `-separated (`; ` for `Cookie`, as
/// nginx joins cookie fields); bytes that are not UTF-8 (a Latin-1 `é`) read as `�`
/// rather than the value lost.
fn header_values(headers: &HeaderMap, name: &str) -> String {
    let dashed = name.replace('_', "-");
    let mut values: Vec<Cow<'_, str>> = (headers.get_all(dashed.as_str()).iter())
        .map(|v| lossy(v))
        .collect();
    // nginx compares a header's name with `-` read as `_`: `$http_x_foo` is `X_Foo`
    // too, when `underscores_in_headers` kept it.
    if dashed != name {
        values.extend(headers.get_all(name).iter().map(|v| lossy(v)));
    }
    match dashed == "cookie" {
        true => values.join("; "),
        false => values.join(", "),
    }
}

/// A header value as text, bytes that are not UTF-8 read as `�` (borrowed when it is
/// UTF-8 already).
fn lossy(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// `$arg_NAME`: the first `NAME=value` of the query (name compared ignoring case, the
/// value as sent, not decoded), as nginx's `ngx_http_arg`.
fn arg<'u>(query: &'u str, name: &str) -> &'u str {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v)
}

/// `$cookie_NAME`: the value of the first cookie `NAME` of the `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or_else(String::new, |(_, v)| v.to_owned())
}

/// `$upstream_cookie_NAME`: the value of the first `Set-Cookie` of that name (compared
/// ignoring case, as nginx), up to its first `;`.
fn set_cookie(headers: &HeaderMap, name: &str) -> String {
    (headers.get_all(http::header::SET_COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map_or_else(String::new, |(_, v)| v.trim().to_owned())
}

/// Whether variable `name` reads the upstream's response headers.
pub(crate) fn reads_upstream_headers(name: &str) -> bool {
    name.starts_with("upstream_http_") || name.starts_with("upstream_cookie_")
}

/// `$request_id`: 16 random bytes as 32 hex digits (nginx's format).
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Not expected (the system RNG); a unique value still.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `$msec`: seconds since the epoch with milliseconds (`1796158453.150`).
fn msec(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// `$hostname`: the system's host name (`gethostname`), read once.
fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|n| n.trim().to_owned())
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// `host[:port]` → `host` (`[v6]:port` → `[v6]`).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    // One pass over the bytes (asked for every request's Host): the only colon, followed
    // by digits alone, begins the port.
    let mut colon = None;
    for (i, &b) in host.as_bytes().iter().enumerate() {
        match b {
            b':' if colon.is_some() => return host,
            b':' => colon = Some(i),
            b'0'..=b'9' => {}
            _ if colon.is_some() => return host,
            _ => {}
        }
    }
    match colon {
        Some(i) => &host[..i],
        None => host,
    }
}

/// nginx's `$time_local`: `27/Nov/2026:07:42:44 +0100`, in the system's time zone (`TZ`,
/// else `/etc/localtime`; UTC when neither is readable), read once per process.
pub(crate) fn time_local(t: SystemTime) -> String {
    time_in(t, local_zone())
}

pub(crate) fn local_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: OnceLock<jiff::tz::TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC))
}

fn time_in(t: SystemTime, zone: &jiff::tz::TimeZone) -> String {
    formatted(t, zone, "%d/%b/%Y:%H:%M:%S %z")
}

/// The time of an nginx error log line: `2026/11/27 07:42:44`, in the system's time zone.
pub(crate) fn time_error_log(t: SystemTime) -> String {
    formatted(t, local_zone(), "%Y/%m/%d %H:%M:%S")
}

/// nginx's `$time_iso8601`: `2026-11-27T07:42:44+01:00`, in the system's time zone.
pub(crate) fn time_iso8601(t: SystemTime) -> String {
    formatted(t, local_zone(), ISO8601)
}

const ISO8601: &str = "%Y-%m-%dT%H:%M:%S%:z";

fn formatted(t: SystemTime, zone: &jiff::tz::TimeZone, format: &str) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(zone.clone()).strftime(format).to_string()
}

#[cfg(test)]
mod ip_text_tests {
    use std::net::IpAddr;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "192.168.1.9",
            "255.255.255.255",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(super::ip_text(ip), a);
        }
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(super::ip_text(mapped), "10.1.2.3");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(super::ip_text(v6), "2001:db8::1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_local_is_nginx_format_in_the_zone() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_761_764);
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(time_in(t, &utc), "27/Nov/2026:06:42:44 +0000");
        assert_eq!(
            time_in(SystemTime::UNIX_EPOCH, &utc),
            "01/Jan/1970:00:00:00 +0000"
        );
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin");
        if let Ok(berlin) = berlin {
            assert_eq!(time_in(t, &berlin), "27/Nov/2026:07:42:44 +0100");
        }
        let fixed = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(time_in(t, &fixed), "27/Nov/2026:01:42:44 -0500");
        assert_eq!(formatted(t, &fixed, ISO8601), "2026-11-27T01:42:44-05:00");
        assert_eq!(formatted(t, &utc, ISO8601), "2026-11-27T06:42:44+00:00");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_158_453_050);
        assert_eq!(msec(t), "1796158453.050");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("Example.com:8443"), "Example.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("a.b:"), "a.b");
        assert_eq!(strip_port("a:b:1"), "a:b:1");
        assert_eq!(strip_port("a.b:1x"), "a.b:1x");
        assert_eq!(strip_port("a1.b2:80"), "a1.b2");
    }

    #[test]
    fn variables() {
        let conn = ConnInfo {
            peer: "10.0.0.7:5000".parse().expect("addr"),
            listen: "127.0.0.1:443".parse().expect("addr"),
            local_port: 443,
            local_ip: [127, 0, 0, 1].into(),
            tls: Some(crate::conn_info::TlsInfo {
                protocol: "TLSv1.3",
                cipher: "TLS_AES_128_GCM_SHA256",
                curve: "X25519",
                resumed: true,
            }),
            sni: None,
            client_cert: None,
            id: 9,
            proxy_protocol: None,
            plain_on_tls: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4".parse().expect("value"));
        headers.insert("user-agent", "curl/8".parse().expect("value"));
        headers.append("cookie", "a=1; Sess=xyz".parse().expect("value"));
        headers.append("cookie", "b=2".parse().expect("value"));
        headers.insert("content-type", "application/json".parse().expect("value"));
        let mut sent = HeaderMap::new();
        sent.insert("content-type", "text/plain".parse().expect("value"));
        let mut from_upstream = HeaderMap::new();
        for c in ["sid=1; Path=/", "Theme = dark ; HttpOnly", "sid=2"] {
            from_upstream.append("set-cookie", c.parse().expect("value"));
        }
        let request_id = OnceLock::new();
        let upstream = UpstreamTries {
            done: vec![
                Tried {
                    status: 502,
                    time: Duration::from_millis(4),
                    header: None,
                },
                Tried {
                    status: 503,
                    time: Duration::from_millis(9),
                    header: Some(Duration::from_millis(7)),
                },
            ],
            answering: Some(Answering {
                status: 200,
                sent: Instant::now(),
                connect: Duration::from_millis(2),
                header: Duration::from_millis(3),
                received: Some(std::sync::Arc::new(12.into())),
            }),
        };
        let v = Vars {
            conn: &conn,
            client: conn.peer,
            headers: &headers,
            method: "GET",
            request_uri: "/a/b?x=1&Foo=b%20r&foo=2&bare",
            args: None,
            set_vars: &[],
            limit_status: ("PASSED", ""),
            uri: "/a/b",
            protocol: "HTTP/1.1",
            http_host: Some("WWW.Example.test:443"),
            server_name: "www.example.test",
            proxy_host: "app",
            upstream_addr: "",
            status: 200,
            body_bytes_sent: 0,
            started: SystemTime::now(),
            t0: Instant::now(),
            maps: &BTreeMap::new(),
            request_id: &request_id,
            upstream: &upstream,
            request_body_length: 5,
            sent_headers: &sent,
            upstream_headers: &from_upstream,
            head_bytes_sent: 0,
            on_conn: crate::route::OnConn {
                number: 3,
                pipelined: true,
            },
            completed: true,
        };
        assert_eq!(v.get("host"), "www.example.test");
        assert_eq!(v.get("proxy_add_x_forwarded_for"), "1.2.3.4, 10.0.0.7");
        assert_eq!(v.get("scheme"), "https");
        assert_eq!(v.get("args"), "x=1&Foo=b%20r&foo=2&bare");
        assert_eq!(v.get("http_user_agent"), "curl/8");
        assert_eq!(
            v.get("request"),
            "GET /a/b?x=1&Foo=b%20r&foo=2&bare HTTP/1.1"
        );
        assert_eq!(v.get("arg_foo"), "b%20r");
        assert_eq!(
            (v.get("arg_x"), v.get("arg_bare"), v.get("arg_no")),
            ("1".into(), "".into(), "".into())
        );
        assert_eq!(v.get("cookie_sess"), "xyz");
        assert_eq!(v.get("cookie_b"), "2");
        assert_eq!(v.get("cookie_c"), "");
        assert_eq!(v.get("sent_http_content_type"), "text/plain");
        assert_eq!(v.get("sent_http_x_none"), "");
        let id = v.get("request_id").into_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(v.get("request_id"), id, "stable within a request");
        assert_eq!(v.get("upstream_status"), "502, 503, 200");
        assert!(
            v.get("upstream_response_time")
                .starts_with("0.004, 0.009, 0.0")
        );
        assert_eq!(v.get("upstream_connect_time"), "-, -, 0.002");
        assert_eq!(v.get("upstream_header_time"), "-, 0.007, 0.003");
        assert_eq!(v.get("upstream_response_length"), "0, 0, 12");
        assert_eq!(v.get("connection_requests"), "3");
        assert_eq!(
            (v.get("pipe"), v.get("gzip_ratio")),
            ("p".into(), "".into())
        );
        assert_eq!(v.get("request_completion"), "OK");
        assert_eq!(
            (v.get("ssl_protocol"), v.get("ssl_cipher")),
            ("TLSv1.3".into(), "TLS_AES_128_GCM_SHA256".into())
        );
        assert_eq!(
            (v.get("ssl_session_reused"), v.get("ssl_curve")),
            ("r".into(), "X25519".into())
        );
        assert_eq!(
            (v.get("http2"), v.get("ssl_early_data")),
            ("".into(), "".into())
        );
        assert_eq!(v.get("document_uri"), "/a/b");
        assert_eq!(
            (v.get("content_type"), v.get("content_length")),
            ("application/json".into(), "".into())
        );
        assert_eq!(v.get("pid"), std::process::id().to_string());
        assert_eq!(v.get("ssl_client_serial"), "", "no client certificate");
        assert_eq!(
            (v.get("upstream_cookie_sid"), v.get("upstream_cookie_theme")),
            ("1".into(), "dark".into())
        );
        assert_eq!(v.get("upstream_cookie_none"), "");
        assert_eq!(
            v.get("upstream_http_set_cookie"),
            "sid=1; Path=/, Theme = dark ; HttpOnly, sid=2"
        );
        // "GET /a/b?... HTTP/1.1\r\n", five header lines, "\r\n", the body.
        let line = "GET /a/b?x=1&Foo=b%20r&foo=2&bare HTTP/1.1\r\n".len();
        let fields = "x-forwarded-for: 1.2.3.4\r\nuser-agent: curl/8\r\n".len()
            + "cookie: a=1; Sess=xyz\r\ncookie: b=2\r\n".len()
            + "content-type: application/json\r\n".len();
        assert_eq!(v.get("request_length"), (line + fields + 2 + 5).to_string());
        assert_eq!(v.get("ssl_server_name"), "");
        assert_eq!(v.get("server_addr"), "127.0.0.1");
        assert_eq!(
            (v.get("https"), v.get("is_args")),
            ("on".into(), "?".into())
        );
        assert!(!v.get("hostname").is_empty());
        assert_eq!(
            v.get("msec").split_once('.').map(|(_, ms)| ms.len()),
            Some(3)
        );
    }

    #[test]
    fn certificate_times_as_openssl_prints_them() {
        // 2026-12-03 08:00:00 UTC; a one-digit day is padded with a space.
        assert_eq!(openssl_time(1_796_284_800), "Dec  3 08:00:00 2026 GMT");
        assert_eq!(openssl_time(1_797_494_399), "Dec 17 07:59:59 2026 GMT");
        let now = 1_796_284_800;
        assert_eq!(days_remaining(now + 86_399, now), 0, "within the last day");
        assert_eq!(days_remaining(now - 5, now), 0, "expired");
        assert_eq!(days_remaining(now + 86_400, now), 1);
        assert_eq!(days_remaining(now + 30 * 86_400 + 5, now), 30);
    }
}
