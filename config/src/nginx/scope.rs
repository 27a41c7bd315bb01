//! Settings every level shares (`http`, `server`, `location`): the proxy,
//! header, timeout, body-size and log directives, kept per level in a
//! [`Scope`] and merged with nginx's inheritance rules.

use std::time::Duration;

use super::build::Ctx;
use super::model::{
    AccessLog, AccessMatch, AccessRule, AddHeader, AuthBasic, ClientLimits, CookieFlags, ErrorLog,
    ErrorPage, ErrorPageStatus, ErrorPageTarget, HttpVersion, NextUpstream, ProxySettings, RealIp,
    RealIpHeader, ValueMatch, ValueRewrite,
};
use super::parse::{Arg, Directive};
use super::proxy_ssl::ProxySslScope;
use super::template::Template;
use super::tls::TlsScope;
use super::values::{parse_number, parse_size, parse_time};
use crate::error::ConfigError;

/// Where a [`Scope`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Http,
    Server,
    Location,
}

/// Flags of nginx's core module hsmgate applies: name, default, allowed in a location.
const FLAGS: [(&str, bool, bool); 7] = [
    ("absolute_redirect", true, true),
    ("port_in_redirect", true, true),
    ("merge_slashes", true, false),
    ("underscores_in_headers", false, false),
    ("ignore_invalid_headers", true, false),
    ("proxy_pass_request_body", true, true),
    ("proxy_pass_request_headers", true, true),
];

/// Settings of one level before merging (`None`: not set at this level).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    headers: Option<Vec<(String, Template)>>,
    add_headers: Option<Vec<AddHeader>>,
    /// `proxy_hide_header` and `proxy_pass_header` (inherited together).
    hide_pass: Option<(Vec<String>, Vec<String>)>,
    http_version: Option<HttpVersion>,
    timeouts: [Option<Duration>; 3],
    body: Option<Option<u64>>,
    keepalive: Option<Duration>,
    access: Option<Vec<AccessLog>>,
    errors: Option<Vec<ErrorLog>>,
    client: ClientScope,
    pub(crate) tls: TlsScope,
    pub(crate) proxy_ssl: ProxySslScope,
    request_buffering: Option<bool>,
    body_buffer: Option<u64>,
    next_upstream: Option<NextUpstream>,
    /// `allow` / `deny` of this level, in order.
    rules: Option<Vec<AccessRule>>,
    /// `proxy_next_upstream_tries` and `_timeout` (each inherited on its own).
    next_tries: Option<u32>,
    next_time_limit: Option<Duration>,
    /// `auth_basic`: the realm, `Some(None)` for `off`.
    auth_realm: Option<Option<Template>>,
    /// `auth_basic_user_file` (inherited on its own).
    auth_file: Option<std::path::PathBuf>,
    error_pages: Option<Vec<ErrorPage>>,
    satisfy_any: Option<bool>,
    /// `set_real_ip_from` (a level with its own inherits none), `real_ip_header`,
    /// `real_ip_recursive`.
    real_ip_from: Option<Vec<AccessMatch>>,
    real_ip_header: Option<RealIpHeader>,
    real_ip_recursive: Option<bool>,
    /// `proxy_cookie_path` and `proxy_cookie_domain` (each an array: a level with its
    /// own inherits none; `off` is an empty one).
    cookie_path: Option<Vec<ValueRewrite>>,
    cookie_domain: Option<Vec<ValueRewrite>>,
    cookie_flags: Option<Vec<CookieFlags>>,
    /// `auth_request` (`Some(None)`: `off`) and `auth_request_set`s.
    auth_request: Option<Option<String>>,
    auth_request_set: Option<Vec<super::SetVar>>,
    proxy_method: Option<String>,
    expires: Option<super::Expires>,
    proxy_set_body: Option<Template>,
    /// `limit_req`, `limit_conn` and their settings.
    limits: super::limits::LimitsScope,
    /// `proxy_redirect`s, likewise (`None` at every level: nginx's `default`).
    redirect: Option<Vec<ValueRewrite>>,
    /// A location's `proxy_pass` read so far, as the rule `proxy_redirect default`
    /// stands for (nginx requires the `proxy_pass` first).
    pub(crate) pass_default: Option<ValueRewrite>,
    intercept_errors: Option<bool>,
    recursive_error_pages: Option<bool>,
    /// `limit_rate`, `limit_rate_after` (bytes; 0: none).
    limit_rate: Option<u64>,
    limit_rate_after: Option<u64>,
    /// `absolute_redirect`, `port_in_redirect`, `merge_slashes`,
    /// `underscores_in_headers`, `ignore_invalid_headers`, by that index.
    flags: [Option<bool>; FLAGS.len()],
    root: Option<std::path::PathBuf>,
    /// `types` (a level's own list replaces the inherited one) and `default_type`.
    types: Option<std::sync::Arc<std::collections::HashMap<String, String>>>,
    default_type: Option<String>,
}

/// The [`ClientLimits`] directives of one level.
#[derive(Debug, Clone, Copy, Default)]
struct ClientScope {
    header_buffer_size: Option<u64>,
    large_header_buffers: Option<(u32, u64)>,
    header_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    proxy_protocol_timeout: Option<Duration>,
    http2_max_concurrent_streams: Option<u32>,
    keepalive_requests: Option<u64>,
    keepalive_time: Option<Duration>,
}

impl Scope {
    /// Fills what this level leaves unset from `outer` (lists are taken
    /// whole: a level with its own `proxy_set_header` inherits none).
    pub(crate) fn inherit(&mut self, outer: &Scope) {
        macro_rules! fill { ($($f:ident),*) => { $(if self.$f.is_none() { self.$f = outer.$f.clone(); })* } }
        fill!(
            headers,
            add_headers,
            hide_pass,
            http_version,
            body,
            keepalive,
            access,
            errors
        );
        let (c, o) = (&mut self.client, outer.client);
        c.header_buffer_size = c.header_buffer_size.or(o.header_buffer_size);
        c.large_header_buffers = c.large_header_buffers.or(o.large_header_buffers);
        c.header_timeout = c.header_timeout.or(o.header_timeout);
        c.body_timeout = c.body_timeout.or(o.body_timeout);
        c.send_timeout = c.send_timeout.or(o.send_timeout);
        c.handshake_timeout = c.handshake_timeout.or(o.handshake_timeout);
        c.proxy_protocol_timeout = c.proxy_protocol_timeout.or(o.proxy_protocol_timeout);
        c.http2_max_concurrent_streams = c
            .http2_max_concurrent_streams
            .or(o.http2_max_concurrent_streams);
        c.keepalive_requests = c.keepalive_requests.or(o.keepalive_requests);
        c.keepalive_time = c.keepalive_time.or(o.keepalive_time);
        for (t, o) in self.timeouts.iter_mut().zip(outer.timeouts) {
            *t = t.or(o);
        }
        self.tls.inherit(&outer.tls);
        self.proxy_ssl.inherit(&outer.proxy_ssl);
        self.request_buffering = self.request_buffering.or(outer.request_buffering);
        self.body_buffer = self.body_buffer.or(outer.body_buffer);
        if self.next_upstream.is_none() {
            self.next_upstream = outer.next_upstream.clone();
        }
        if self.rules.is_none() {
            self.rules = outer.rules.clone();
        }
        self.next_tries = self.next_tries.or(outer.next_tries);
        self.next_time_limit = self.next_time_limit.or(outer.next_time_limit);
        if self.auth_realm.is_none() {
            self.auth_realm = outer.auth_realm.clone();
        }
        if self.auth_file.is_none() {
            self.auth_file = outer.auth_file.clone();
        }
        if self.error_pages.is_none() {
            self.error_pages = outer.error_pages.clone();
        }
        if self.root.is_none() {
            self.root = outer.root.clone();
        }
        if self.types.is_none() {
            self.types = outer.types.clone();
        }
        if self.default_type.is_none() {
            self.default_type = outer.default_type.clone();
        }
        self.intercept_errors = self.intercept_errors.or(outer.intercept_errors);
        self.limit_rate = self.limit_rate.or(outer.limit_rate);
        self.limit_rate_after = self.limit_rate_after.or(outer.limit_rate_after);
        self.satisfy_any = self.satisfy_any.or(outer.satisfy_any);
        if self.real_ip_from.is_none() {
            self.real_ip_from = outer.real_ip_from.clone();
        }
        if self.real_ip_header.is_none() {
            self.real_ip_header = outer.real_ip_header.clone();
        }
        self.real_ip_recursive = self.real_ip_recursive.or(outer.real_ip_recursive);
        if self.cookie_path.is_none() {
            self.cookie_path = outer.cookie_path.clone();
        }
        if self.expires.is_none() {
            self.expires = outer.expires.clone();
        }
        if self.proxy_method.is_none() {
            self.proxy_method = outer.proxy_method.clone();
        }
        if self.proxy_set_body.is_none() {
            self.proxy_set_body = outer.proxy_set_body.clone();
        }
        if self.auth_request.is_none() {
            self.auth_request = outer.auth_request.clone();
        }
        if self.auth_request_set.is_none() {
            self.auth_request_set = outer.auth_request_set.clone();
        }
        if self.cookie_flags.is_none() {
            self.cookie_flags = outer.cookie_flags.clone();
        }
        if self.cookie_domain.is_none() {
            self.cookie_domain = outer.cookie_domain.clone();
        }
        if self.redirect.is_none() {
            self.redirect = outer.redirect.clone();
        }
        self.limits.inherit(&outer.limits);
        self.recursive_error_pages = self.recursive_error_pages.or(outer.recursive_error_pages);
        for (mine, theirs) in self.flags.iter_mut().zip(outer.flags) {
            *mine = mine.or(theirs);
        }
    }

    /// The merged settings, with nginx's defaults.
    /// The `proxy_redirect` rules of a level that passes to `pass` (nginx's `default`
    /// when none is written at any level).
    pub(crate) fn redirects(&self, pass: Option<&ValueRewrite>) -> Vec<ValueRewrite> {
        match &self.redirect {
            Some(rules) => rules.clone(),
            None => pass.cloned().into_iter().collect(),
        }
    }

    /// Flag `i` of [`FLAGS`], its default where no level wrote it.
    fn flag(&self, i: usize) -> bool {
        self.flags[i].unwrap_or(FLAGS[i].1)
    }

    pub(crate) fn settings(&self) -> ProxySettings {
        let t = |i: usize| self.timeouts[i].unwrap_or(Duration::from_secs(60));
        ProxySettings {
            access_rules: self.rules.clone().unwrap_or_default(),
            auth_basic: match (&self.auth_realm, &self.auth_file) {
                (Some(Some(realm)), Some(file)) => Some(AuthBasic {
                    realm: realm.clone(),
                    user_file: file.clone(),
                }),
                _ => None,
            },
            error_pages: self.error_pages.clone().unwrap_or_default(),
            satisfy_any: self.satisfy_any.unwrap_or(false),
            proxy_redirect: self.redirects(None),
            limits: self.limits.limits(),
            proxy_cookie_path: self.cookie_path.clone().unwrap_or_default(),
            proxy_cookie_domain: self.cookie_domain.clone().unwrap_or_default(),
            proxy_cookie_flags: self.cookie_flags.clone().unwrap_or_default(),
            auth_request: self.auth_request.clone().flatten(),
            auth_request_set: self.auth_request_set.clone().unwrap_or_default(),
            real_ip: self
                .real_ip_from
                .clone()
                .filter(|from| !from.is_empty())
                .map(|from| RealIp {
                    from,
                    header: (self.real_ip_header.clone())
                        .unwrap_or_else(|| RealIpHeader::Header("x-real-ip".into())),
                    recursive: self.real_ip_recursive.unwrap_or(false),
                }),
            proxy_intercept_errors: self.intercept_errors.unwrap_or(false),
            limit_rate: self.limit_rate.unwrap_or(0),
            limit_rate_after: self.limit_rate_after.unwrap_or(0),
            recursive_error_pages: self.recursive_error_pages.unwrap_or(false),
            absolute_redirect: self.flag(0),
            port_in_redirect: self.flag(1),
            merge_slashes: self.flag(2),
            underscores_in_headers: self.flag(3),
            ignore_invalid_headers: self.flag(4),
            proxy_pass_request_body: self.flag(5),
            proxy_pass_request_headers: self.flag(6),
            proxy_method: self.proxy_method.clone(),
            expires: self.expires.clone().unwrap_or_default(),
            limit_except: None,
            proxy_set_body: self.proxy_set_body.clone(),
            root: self.root.clone(),
            mime: {
                let d = super::model::MimeTypes::default();
                super::model::MimeTypes {
                    by_ext: self.types.clone().unwrap_or(d.by_ext),
                    default: self.default_type.clone().unwrap_or(d.default),
                }
            },
            proxy_set_header: self.headers.clone().unwrap_or_default(),
            add_header: self.add_headers.clone().unwrap_or_default(),
            proxy_hide_header: self
                .hide_pass
                .as_ref()
                .map_or_else(Vec::new, |h| h.0.clone()),
            proxy_pass_header: self
                .hide_pass
                .as_ref()
                .map_or_else(Vec::new, |h| h.1.clone()),
            proxy_http_version: self.http_version.unwrap_or(HttpVersion::Http10),
            proxy_connect_timeout: t(0),
            proxy_read_timeout: t(1),
            proxy_send_timeout: t(2),
            client_max_body_size: self.body.unwrap_or(Some(1 << 20)),
            proxy_request_buffering: self.request_buffering.unwrap_or(true),
            proxy_next_upstream: NextUpstream {
                tries: self.next_tries.unwrap_or(0),
                time_limit: self.next_time_limit.filter(|t| !t.is_zero()),
                ..self.next_upstream.clone().unwrap_or_default()
            },
            client_body_buffer_size: self.body_buffer.unwrap_or(16 << 10),
            proxy_ssl: self.proxy_ssl.settings(),
            keepalive_timeout: self.keepalive.unwrap_or(Duration::from_secs(75)),
            access_logs: self.access.clone().unwrap_or_default(),
            error_logs: self.errors.clone().unwrap_or_default(),
            client: {
                let (c, d) = (self.client, ClientLimits::default());
                ClientLimits {
                    header_buffer_size: c.header_buffer_size.unwrap_or(d.header_buffer_size),
                    large_header_buffers: c.large_header_buffers.unwrap_or(d.large_header_buffers),
                    header_timeout: c.header_timeout.unwrap_or(d.header_timeout),
                    body_timeout: c.body_timeout.unwrap_or(d.body_timeout),
                    send_timeout: c.send_timeout.unwrap_or(d.send_timeout),
                    handshake_timeout: c.handshake_timeout.unwrap_or(d.handshake_timeout),
                    proxy_protocol_timeout: (c.proxy_protocol_timeout)
                        .unwrap_or(d.proxy_protocol_timeout),
                    http2_max_concurrent_streams: c
                        .http2_max_concurrent_streams
                        .unwrap_or(d.http2_max_concurrent_streams),
                    keepalive_requests: c.keepalive_requests.unwrap_or(d.keepalive_requests),
                    keepalive_time: c.keepalive_time.unwrap_or(d.keepalive_time),
                }
            },
        }
    }

    /// Handles `d` if it is a setting allowed at `level`.
    pub(crate) fn directive(
        &mut self,
        ctx: &mut Ctx<'_>,
        d: &Directive,
        level: Level,
    ) -> Result<bool, ConfigError> {
        let size = |ctx: &Ctx<'_>, arg: &Arg| {
            parse_size(&arg.value).ok_or_else(|| ctx.invalid(d, arg.at, "invalid size"))
        };
        let time = |ctx: &Ctx<'_>, arg: &Arg| {
            parse_time(&arg.value).ok_or_else(|| ctx.invalid(d, arg.at, "invalid time"))
        };
        if self.limits.directive(ctx, d)? {
            return Ok(true);
        }
        match d.name.as_str() {
            "default_type" => self.default_type = Some(ctx.one(d)?.value.clone()),
            "types" => {
                let mut by_ext = std::collections::HashMap::new();
                for t in ctx.block(d, 0, 0)? {
                    if t.args.is_empty() {
                        return Err(ctx.arguments(t, "invalid number of arguments"));
                    }
                    for ext in &t.args {
                        // The first type given for an extension is kept, as nginx warns
                        // and keeps it.
                        by_ext
                            .entry(ext.value.to_ascii_lowercase())
                            .or_insert_with(|| t.name.clone());
                    }
                }
                self.types = Some(std::sync::Arc::new(by_ext));
            }
            "proxy_set_header" => {
                let args = ctx.args(d, 2, 2)?;
                let value = ctx.template(d, &args[1])?;
                self.headers
                    .get_or_insert_with(Vec::new)
                    .push((args[0].value.clone(), value));
            }
            "add_header" => {
                let args = ctx.args(d, 2, 3)?;
                let always = match args.get(2) {
                    None => false,
                    Some(a) if a.value == "always" => true,
                    Some(a) => {
                        return Err(ctx.invalid(
                            d,
                            a.at,
                            format!("invalid parameter \"{}\"", a.value),
                        ));
                    }
                };
                let value = ctx.template(d, &args[1])?;
                let name = args[0].value.clone();
                self.add_headers
                    .get_or_insert_with(Vec::new)
                    .push(AddHeader {
                        name,
                        value,
                        always,
                    });
            }
            n @ ("proxy_hide_header" | "proxy_pass_header") => {
                let name = ctx.one(d)?.value.to_ascii_lowercase();
                let (hide, pass) = self.hide_pass.get_or_insert_with(Default::default);
                match n {
                    "proxy_hide_header" => hide.push(name),
                    _ => pass.push(name),
                }
            }
            "proxy_http_version" => {
                let arg = ctx.one(d)?;
                let v = match arg.value.as_str() {
                    "1.0" => HttpVersion::Http10,
                    "1.1" => HttpVersion::Http11,
                    _ => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            format!("invalid value \"{}\"", arg.value),
                        ));
                    }
                };
                set(ctx, d, &mut self.http_version, v)?;
            }
            n @ ("proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout") => {
                let i = [
                    "proxy_connect_timeout",
                    "proxy_read_timeout",
                    "proxy_send_timeout",
                ]
                .iter()
                .position(|x| *x == n)
                .unwrap_or(0);
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.timeouts[i], v)?;
            }
            "keepalive_timeout" => {
                let args = ctx.args(d, 1, 2)?;
                let v = time(ctx, &args[0])?;
                if let Some(a) = args.get(1) {
                    time(ctx, a)?;
                }
                set(ctx, d, &mut self.keepalive, v)?;
            }
            "client_max_body_size" => {
                let arg = ctx.one(d)?;
                let v =
                    parse_size(&arg.value).ok_or_else(|| ctx.invalid(d, arg.at, "invalid size"))?;
                set(ctx, d, &mut self.body, Some(v).filter(|&v| v != 0))?;
            }
            rule @ ("allow" | "deny") => {
                let arg = ctx.one(d)?;
                let matches = match arg.value.as_str() {
                    "all" => AccessMatch::All,
                    "unix:" => AccessMatch::Unix,
                    v => match v.parse::<ipnet::IpNet>() {
                        Ok(net) => {
                            if net != net.trunc() {
                                ctx.warn(
                                    arg.at,
                                    format!("low address bits of {v} are meaningless"),
                                );
                            }
                            AccessMatch::Net(net.trunc())
                        }
                        Err(_) => match v.parse::<std::net::IpAddr>() {
                            Ok(ip) => AccessMatch::Net(ip.into()),
                            Err(_) => {
                                let reason = format!("invalid parameter \"{v}\"");
                                return Err(ctx.invalid(d, arg.at, reason));
                            }
                        },
                    },
                };
                self.rules.get_or_insert_with(Vec::new).push(AccessRule {
                    allow: rule == "allow",
                    matches,
                });
            }
            "expires" => {
                let e = super::expires::expires(ctx, d)?;
                set(ctx, d, &mut self.expires, e)?;
            }
            "proxy_method" => {
                let arg = ctx.one(d)?;
                let v = &arg.value;
                let token = !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
                if !token {
                    return Err(ctx.invalid(d, arg.at, format!("invalid method \"{v}\"")));
                }
                let m = v.clone();
                set(ctx, d, &mut self.proxy_method, m)?;
            }
            "proxy_set_body" => {
                let v = ctx.template(d, ctx.one(d)?)?;
                set(ctx, d, &mut self.proxy_set_body, v)?;
            }
            "auth_request" => {
                let arg = ctx.one(d)?;
                let uri = match arg.value.as_str() {
                    "off" => None,
                    v if v.starts_with('/') => Some(v.to_owned()),
                    v => return Err(ctx.invalid(d, arg.at, format!("invalid URI \"{v}\""))),
                };
                set(ctx, d, &mut self.auth_request, uri)?;
            }
            "auth_request_set" => {
                let v = super::rewrite::parse_set(ctx, d)?;
                self.auth_request_set.get_or_insert_with(Vec::new).push(v);
            }
            "proxy_cookie_flags" => {
                let args = ctx.args(d, 1, 5)?;
                let list = &mut self.cookie_flags;
                if let [off] = args
                    && off.value == "off"
                {
                    if list.is_some() {
                        return Err(ctx.duplicate(d));
                    }
                    *list = Some(Vec::new());
                } else {
                    if list.as_ref().is_some_and(Vec::is_empty) {
                        return Err(ctx.duplicate(d));
                    }
                    let [cookie, flags @ ..] = args else {
                        unreachable!("at least one argument")
                    };
                    if flags.is_empty() {
                        let v = &cookie.value;
                        return Err(ctx.invalid(
                            d,
                            cookie.at,
                            format!("invalid parameter \"{v}\""),
                        ));
                    }
                    let cookie_match = match cookie.value.strip_prefix('~') {
                        Some(re) => ValueMatch::Regex(regex::Regex::new(re).map_err(|e| {
                            ctx.invalid(d, cookie.at, format!("invalid regex \"{re}\": {e}"))
                        })?),
                        None => ValueMatch::Text(Template {
                            parts: vec![super::TemplatePart::Literal(cookie.value.clone())],
                        }),
                    };
                    let mut templates = Vec::new();
                    for f in flags {
                        templates.push(ctx.template(d, f)?);
                    }
                    list.get_or_insert_with(Vec::new).push(CookieFlags {
                        cookie: cookie_match,
                        flags: templates,
                    });
                }
            }
            "proxy_redirect" | "proxy_cookie_path" | "proxy_cookie_domain" => {
                let list = match d.name.as_str() {
                    "proxy_redirect" => &mut self.redirect,
                    "proxy_cookie_path" => &mut self.cookie_path,
                    _ => &mut self.cookie_domain,
                };
                let args = ctx.args(d, 1, 2)?;
                // As nginx: `off` with rules at the same level is a duplicate.
                let off = list.as_ref().is_some_and(Vec::is_empty);
                match args {
                    [off_arg] if off_arg.value == "off" => {
                        if list.is_some() {
                            return Err(ctx.duplicate(d));
                        }
                        *list = Some(Vec::new());
                    }
                    [default] if default.value == "default" && d.name == "proxy_redirect" => {
                        let Some(rule) = self.pass_default.clone() else {
                            return Err(ctx.invalid(
                                d,
                                d.at,
                                "\"proxy_redirect default\" should be placed after the \
                                 \"proxy_pass\" directive",
                            ));
                        };
                        if off {
                            return Err(ctx.duplicate(d));
                        }
                        list.get_or_insert_with(Vec::new).push(rule);
                    }
                    [from, to] => {
                        if off {
                            return Err(ctx.duplicate(d));
                        }
                        let rule = value_rewrite(ctx, d, from, to)?;
                        list.get_or_insert_with(Vec::new).push(rule);
                    }
                    _ => return Err(ctx.invalid(d, args[0].at, "invalid parameter")),
                }
            }
            "set_real_ip_from" => {
                let arg = ctx.one(d)?;
                let m = match arg.value.as_str() {
                    "unix:" => AccessMatch::Unix,
                    v => AccessMatch::Net(
                        v.parse::<ipnet::IpNet>()
                            .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                            .map_err(|_| {
                                ctx.invalid(d, arg.at, format!("invalid address \"{v}\""))
                            })?,
                    ),
                };
                self.real_ip_from.get_or_insert_with(Vec::new).push(m);
            }
            "real_ip_header" => {
                let arg = ctx.one(d)?;
                let h = match arg.value.to_ascii_lowercase().as_str() {
                    "proxy_protocol" => RealIpHeader::ProxyProtocol,
                    name if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                    {
                        RealIpHeader::Header(name.to_owned())
                    }
                    _ => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            format!("invalid header name \"{}\"", arg.value),
                        ));
                    }
                };
                set(ctx, d, &mut self.real_ip_header, h)?;
            }
            "real_ip_recursive" => {
                let on = super::server::flag(ctx, d)?;
                set(ctx, d, &mut self.real_ip_recursive, on)?;
            }
            "satisfy" => {
                let arg = ctx.one(d)?;
                let any = match arg.value.as_str() {
                    "any" => true,
                    "all" => false,
                    v => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            format!("invalid value \"{v}\", it must be \"all\" or \"any\""),
                        ));
                    }
                };
                set(ctx, d, &mut self.satisfy_any, any)?;
            }
            "error_page" => {
                let page = error_page(ctx, d)?;
                self.error_pages.get_or_insert_with(Vec::new).push(page);
            }
            name @ ("limit_rate" | "limit_rate_after") => {
                let arg = ctx.one(d)?;
                if arg.value.contains('$') {
                    // nginx (1.17.0 and later) reads a variable's value per request.
                    ctx.warn(
                        d.at,
                        format!(
                            "\"{name}\" with a variable is NOT ENFORCED: only a size is \
                             (responses go as fast as the client reads them)"
                        ),
                    );
                    return Ok(true);
                }
                let v =
                    parse_size(&arg.value).ok_or_else(|| ctx.invalid(d, arg.at, "invalid size"))?;
                let field = match name {
                    "limit_rate" => &mut self.limit_rate,
                    _ => &mut self.limit_rate_after,
                };
                set(ctx, d, field, v)?;
            }
            "proxy_intercept_errors" => {
                let on = super::server::flag(ctx, d)?;
                set(ctx, d, &mut self.intercept_errors, on)?;
            }
            name if FLAGS
                .iter()
                .any(|(n, _, location)| *n == name && (*location || level != Level::Location)) =>
            {
                let on = super::server::flag(ctx, d)?;
                let i = FLAGS.iter().position(|(n, ..)| *n == name).expect("found");
                set(ctx, d, &mut self.flags[i], on)?;
            }
            "recursive_error_pages" => {
                let on = super::server::flag(ctx, d)?;
                set(ctx, d, &mut self.recursive_error_pages, on)?;
            }
            "root" => {
                // nginx's `root` is relative to its prefix; hsmgate reads only the pages
                // `error_page` names from it, and says so.
                let arg = ctx.one(d)?;
                if arg.value.contains('$') {
                    return Err(ctx.invalid(d, arg.at, "variables in the path are not supported"));
                }
                let path = ctx.prefix_path(&arg.value);
                set(ctx, d, &mut self.root, path)?;
                ctx.warn(
                    d.at,
                    "\"root\" is used only for the pages \"error_page\" names: hsmgate serves \
                     no other files (locations where nginx would serve them are warned about)"
                        .into(),
                );
            }
            "auth_basic" => {
                let arg = ctx.one(d)?;
                let realm = match arg.value.as_str() {
                    "off" => None,
                    _ => Some(ctx.template(d, arg)?),
                };
                set(ctx, d, &mut self.auth_realm, realm)?;
            }
            "auth_basic_user_file" => {
                let arg = ctx.one(d)?;
                if arg.value.contains('$') {
                    return Err(ctx.invalid(
                        d,
                        arg.at,
                        "variables in the file name are not supported",
                    ));
                }
                let path = ctx.conf_path(&arg.value);
                set(ctx, d, &mut self.auth_file, path)?;
            }
            "proxy_next_upstream_tries" => {
                let arg = ctx.one(d)?;
                let v = parse_number(&arg.value)
                    .ok_or_else(|| ctx.invalid(d, arg.at, "invalid number"))?;
                set(ctx, d, &mut self.next_tries, v)?;
            }
            "proxy_next_upstream_timeout" => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.next_time_limit, v)?;
            }
            "proxy_next_upstream" => {
                let args = ctx.args(d, 1, 16)?;
                let mut next = NextUpstream {
                    error: false,
                    invalid_header: false,
                    timeout: false,
                    statuses: Vec::new(),
                    non_idempotent: false,
                    tries: 0,
                    time_limit: None,
                };
                for arg in args {
                    match arg.value.as_str() {
                        "off" if args.len() == 1 => {}
                        "error" => next.error = true,
                        "invalid_header" => next.invalid_header = true,
                        "timeout" => next.timeout = true,
                        "non_idempotent" => next.non_idempotent = true,
                        s => match s.strip_prefix("http_").and_then(|c| c.parse::<u16>().ok()) {
                            Some(code @ (500 | 502 | 503 | 504 | 403 | 404 | 429)) => {
                                next.statuses.push(code)
                            }
                            _ => {
                                let reason = format!(
                                    "invalid value \"{s}\" (error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, off)"
                                );
                                return Err(ctx.invalid(d, arg.at, reason));
                            }
                        },
                    }
                }
                set(ctx, d, &mut self.next_upstream, next)?;
            }
            "proxy_request_buffering" => {
                let arg = ctx.one(d)?;
                let v = super::values::parse_flag(&arg.value).ok_or_else(|| {
                    let reason = format!(
                        "invalid value \"{}\", it must be \"on\" or \"off\"",
                        arg.value
                    );
                    ctx.invalid(d, arg.at, reason)
                })?;
                set(ctx, d, &mut self.request_buffering, v)?;
            }
            "client_body_buffer_size" => {
                let v = size(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.body_buffer, v)?;
            }
            n if n.starts_with("proxy_ssl_") && self.proxy_ssl.directive(ctx, d)? => {}
            "access_log" => {
                let log = access_log(ctx, d)?;
                self.access.get_or_insert_with(Vec::new).push(log);
            }
            "error_log" => {
                let log = error_log(ctx, d)?;
                // Checked as nginx checks it, but one process log serves every block.
                ctx.warn(
                    d.at,
                    "\"error_log\" in an http, server or location block is checked but \
                     not used: every error goes to the main-level error_log (the first one)"
                        .into(),
                );
                self.errors.get_or_insert_with(Vec::new).push(log);
            }
            "client_header_buffer_size" if level != Level::Location => {
                let arg = ctx.one(d)?;
                let v = size(ctx, arg)?;
                set(ctx, d, &mut self.client.header_buffer_size, v)?;
            }
            "large_client_header_buffers" if level != Level::Location => {
                let args = ctx.args(d, 2, 2)?;
                let number = args[0]
                    .value
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| ctx.invalid(d, args[0].at, "invalid value"))?;
                let v = size(ctx, &args[1])?;
                if v < 1024 {
                    return Err(ctx.invalid(d, args[1].at, "a buffer of at least 1k is needed"));
                }
                set(ctx, d, &mut self.client.large_header_buffers, (number, v))?;
            }
            "client_header_timeout" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.header_timeout, v)?;
            }
            "send_timeout" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.send_timeout, v)?;
            }
            n @ ("send_timeout" | "client_body_timeout") if level == Level::Location => {
                time(ctx, ctx.one(d)?)?;
                ctx.warn(
                    d.at,
                    format!(
                        "\"{n}\" in a location is not used: hsmgate applies the server's (its \
                         address's default server's) to the whole connection"
                    ),
                );
            }
            "client_body_timeout" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.body_timeout, v)?;
            }
            "proxy_protocol_timeout" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.proxy_protocol_timeout, v)?;
            }
            "ssl_handshake_timeout" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.handshake_timeout, v)?;
            }
            "http2_max_concurrent_streams" if level != Level::Location => {
                let v = number(ctx, d)?;
                set(ctx, d, &mut self.client.http2_max_concurrent_streams, v)?;
            }
            "keepalive_requests" if level != Level::Location => {
                let v = number(ctx, d)?;
                set(ctx, d, &mut self.client.keepalive_requests, v)?;
            }
            "keepalive_time" if level != Level::Location => {
                let v = time(ctx, ctx.one(d)?)?;
                set(ctx, d, &mut self.client.keepalive_time, v)?;
            }
            n @ ("keepalive_requests" | "keepalive_time") => {
                let arg = ctx.one(d)?;
                let valid = match n {
                    "keepalive_requests" => arg.value.parse::<u64>().is_ok(),
                    _ => time(ctx, arg).is_ok(),
                };
                if !valid {
                    return Err(ctx.invalid(d, arg.at, "invalid value"));
                }
                ctx.warn(
                    d.at,
                    format!(
                        "\"{n}\" in a location is not used: hsmgate applies the server's \
                         (its address's default server's) to the whole connection"
                    ),
                );
            }
            _ if level != Level::Location => return self.tls.directive(ctx, d),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The one argument of `d`, a number.
fn number<T: std::str::FromStr>(ctx: &Ctx<'_>, d: &Directive) -> Result<T, ConfigError> {
    let arg = ctx.one(d)?;
    (arg.value.parse::<T>()).map_err(|_| ctx.invalid(d, arg.at, "invalid number"))
}

pub(crate) fn set<T>(
    ctx: &Ctx<'_>,
    d: &Directive,
    slot: &mut Option<T>,
    value: T,
) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ctx.duplicate(d));
    }
    *slot = Some(value);
    Ok(())
}

pub(crate) fn access_log(ctx: &Ctx<'_>, d: &Directive) -> Result<AccessLog, ConfigError> {
    let args = ctx.args(d, 1, 6)?;
    if args[0].value == "off" {
        return match args.len() {
            1 => Ok(AccessLog::Off),
            _ => Err(ctx.arguments(d, "invalid number of arguments")),
        };
    }
    let format = args.get(1).map_or("combined", |a| a.value.as_str());
    if let Some(a) = args
        .get(1)
        .filter(|_| !ctx.log_formats.contains_key(format))
    {
        return Err(ctx.invalid(d, a.at, format!("unknown log format \"{format}\"")));
    }
    let mut condition = None;
    for a in args.iter().skip(2) {
        if a.value.starts_with("if=") {
            let arg = a.tail("if=".len());
            condition = Some(std::sync::Arc::new(ctx.template(d, &arg)?));
        } else if !(a.value.starts_with("buffer=") || a.value.starts_with("flush=")) {
            return Err(ctx.invalid(
                d,
                a.at,
                format!("parameter \"{}\" is not supported", a.value),
            ));
        }
    }
    if args[0].value.starts_with("syslog:") || args[0].value.contains('$') {
        return Err(ctx.invalid(d, args[0].at, "only plain file paths are supported"));
    }
    Ok(AccessLog::File {
        path: ctx.prefix_path(&args[0].value),
        format: format.to_owned(),
        condition,
        at: ctx.loc(d.at),
    })
}

pub(crate) fn error_log(ctx: &Ctx<'_>, d: &Directive) -> Result<ErrorLog, ConfigError> {
    const LEVELS: [&str; 8] = [
        "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
    ];
    let args = ctx.args(d, 1, 2)?;
    let level = args.get(1).map_or("error", |a| a.value.as_str());
    if let Some(a) = args.get(1).filter(|_| !LEVELS.contains(&level)) {
        return Err(ctx.invalid(d, a.at, format!("invalid log level \"{level}\"")));
    }
    let target = args[0].value.as_str();
    let path = match target {
        "stderr" => None,
        t if t.starts_with("syslog:") || t.starts_with("memory:") => {
            return Err(ctx.invalid(d, args[0].at, "only a file or stderr is supported"));
        }
        t => Some(ctx.prefix_path(t)),
    };
    Ok(ErrorLog {
        path,
        level: level.to_owned(),
    })
}

/// `error_page CODE… [=[RESPONSE]] TARGET`.
fn error_page(ctx: &Ctx<'_>, d: &Directive) -> Result<ErrorPage, ConfigError> {
    let args = ctx.args(d, 2, usize::MAX)?;
    let (target, rest) = args.split_last().expect("at least two arguments");
    let (status, codes) = match rest.split_last() {
        Some((last, codes)) if last.value.starts_with('=') => {
            let status = match &last.value[1..] {
                "" => ErrorPageStatus::FromTarget,
                n => ErrorPageStatus::Set(
                    n.parse::<u16>()
                        .ok()
                        .filter(|c| (100..=999).contains(c))
                        .ok_or_else(|| {
                            ctx.invalid(d, last.at, format!("invalid value \"{}\"", last.value))
                        })?,
                ),
            };
            (status, codes)
        }
        _ => (ErrorPageStatus::Original, rest),
    };
    if codes.is_empty() {
        return Err(ctx.invalid(d, d.at, "invalid number of arguments"));
    }
    let codes = codes
        .iter()
        .map(|a| match a.value.parse::<u16>() {
            Ok(c) if (300..=599).contains(&c) && c != 499 => Ok(c),
            _ => Err(ctx.invalid(
                d,
                a.at,
                format!("value \"{}\" must be between 300 and 599", a.value),
            )),
        })
        .collect::<Result<Vec<u16>, _>>()?;
    let target = if let Some(name) = target.value.strip_prefix('@') {
        if name.is_empty() {
            return Err(ctx.invalid(d, target.at, "empty location name"));
        }
        ErrorPageTarget::Named(target.value.clone())
    } else if target.value.starts_with('/') {
        ErrorPageTarget::Uri(ctx.template(d, target)?)
    } else {
        ErrorPageTarget::Redirect(ctx.template(d, target)?)
    };
    Ok(ErrorPage {
        codes,
        status,
        target,
    })
}

/// `proxy_redirect|proxy_cookie_path|domain FROM TO`: `FROM` text (with variables) or
/// `~regex` / `~*regex`.
fn value_rewrite(
    ctx: &Ctx<'_>,
    d: &Directive,
    from: &Arg,
    to: &Arg,
) -> Result<ValueRewrite, ConfigError> {
    let domain = d.name == "proxy_cookie_domain";
    let from_match = match from.value.strip_prefix('~') {
        Some(re) => {
            // A domain regex is always case-insensitive and takes no `~*` (nginx reads
            // the `*` as part of the regex, which then fails to compile); a path's
            // `~*` is the case-insensitive form.
            let (ci, re) = match re.strip_prefix('*') {
                _ if domain => (true, re),
                Some(re) => (true, re),
                None => (false, re),
            };
            let source = if ci {
                format!("(?i){re}")
            } else {
                re.to_owned()
            };
            let regex = regex::Regex::new(&source)
                .map_err(|e| ctx.invalid(d, from.at, format!("invalid regex \"{re}\": {e}")))?;
            ValueMatch::Regex(regex)
        }
        None => ValueMatch::Text(ctx.template(d, from)?),
    };
    // `$1`… are accepted for a text rule too, as nginx accepts them (empty there).
    let to = ctx.template_with(d, to, &|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())?;
    Ok(ValueRewrite {
        from: from_match,
        to,
    })
}
