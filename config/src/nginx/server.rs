//! `server` blocks: `listen`, `server_name`, certificates and the checks
//! nginx makes across servers (one `default_server` per address; `ssl` and
//! `http2` belong to the address, whichever server says them).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use regex::Regex;

use super::build::Ctx;
use super::cond::server_if;
use super::location::{build_location, check_duplicates, parse_return};
use super::model::{
    CertPair, KeySource, Listen, LocationBlock, Server, ServerName, SoKeepalive, SocketOptions,
    UpstreamGroup,
};
use super::parse::{Directive, Pos};
use super::rewrite::{ServerStep, parse_rewrite, parse_set};
use super::scope::{Level, Scope, set};
use super::values::{listen_addr, parse_flag, parse_number, parse_size, parse_time};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::model::ConfigWarning;
use crate::pkcs11_uri::parse_key_string;

/// One `server`; also returns where each `listen` is.
pub(crate) fn build_server(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    body: &[Directive],
    http: &Scope,
    upstreams: &BTreeMap<String, UpstreamGroup>,
) -> Result<(Server, Vec<Pos>), ConfigError> {
    let mut scope = Scope::default();
    let (mut listens, mut listen_pos, mut names, mut locations) = (vec![], vec![], vec![], vec![]);
    let mut server_return = None;
    let (mut steps, mut http2, mut ssl) = (Vec::new(), None, None);
    for s in body {
        match s.name.as_str() {
            "listen" => {
                listens.push(listen(ctx, s)?);
                listen_pos.push(s.at);
            }
            "server_name" => {
                for a in ctx.args(s, 1, usize::MAX)? {
                    names.push(server_name(&a.value).map_err(|e| ctx.invalid(s, a.at, e))?);
                }
            }
            "location" => locations.push(s),
            "return" => {
                let r = parse_return(ctx, s)?;
                server_return.get_or_insert(r);
            }
            "if" | "rewrite" | "set" | "break" => {
                let step = match s.name.as_str() {
                    "if" => ServerStep::If(server_if(&mut *ctx, s)?),
                    "set" => ServerStep::Set(parse_set(ctx, s)?),
                    "break" => {
                        ctx.args(s, 0, 0)?;
                        ServerStep::Break
                    }
                    _ => ServerStep::Rewrite(parse_rewrite(ctx, s)?),
                };
                match server_return {
                    // As in nginx: the rewrite directives run in order, `return` stops.
                    Some(_) => ctx.warn(
                        s.at,
                        format!(
                            "\"{}\" is never used: a \"return\" before it answers first",
                            s.name
                        ),
                    ),
                    None => steps.push(step),
                }
            }
            "http2" => {
                let on = flag(ctx, s)?;
                set(ctx, s, &mut http2, on)?;
            }
            "ssl" => ssl_on(ctx, s, &mut ssl)?,
            _ if scope.directive(ctx, s, Level::Server)? => {}
            _ => ctx.other(s)?,
        }
    }
    if listens.is_empty() {
        listens.push(Listen {
            addr: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 80),
            ssl: false,
            http2: false,
            default_server: false,
            reuseport: false,
            ipv6only: None,
            backlog: None,
            socket: SocketOptions::default(),
            proxy_protocol: false,
        });
        listen_pos.push(d.at);
    }
    if ssl.or(ctx.ssl) == Some(true) {
        listens.iter_mut().for_each(|l| l.ssl = true);
    }
    if http2.or(ctx.http2) == Some(true) {
        // `http2 on;` (nginx 1.25.1+): as `listen … http2` on each address.
        listens.iter_mut().for_each(|l| l.http2 = true);
    }
    scope.inherit(http);
    scope.tls.check(ctx)?;
    let certs = cert_pairs(ctx, &scope)?;
    // `ssl_reject_handshake on` (nginx 1.19.4): a server that refuses every handshake
    // needs no certificate.
    let rejects = scope.tls.settings().reject_handshake;
    if let Some(i) = listens
        .iter()
        .position(|l| l.ssl)
        .filter(|_| certs.is_empty() && !rejects)
    {
        let reason = "no \"ssl_certificate\" is defined for the listen ... ssl directive";
        let at = listen_pos[i];
        return Err(ctx.err(
            at,
            ConfigErrorKind::Invalid {
                key: "listen".into(),
                reason: reason.into(),
            },
        ));
    }
    let mut built = Vec::new();
    for l in &locations {
        built.push(build_location(ctx, l, &scope, upstreams, None)?);
    }
    check_duplicates(ctx, &built, &locations)?;
    if built.is_empty() && server_return.is_none() && steps.is_empty() {
        let message = "this server has no \"location\" and no \"return\": nginx would serve \
                       files from its \"root\", hsmgate serves no files and answers 404"
            .to_owned();
        ctx.warn(d.at, message);
    }
    warn_file_locations(ctx, &built);
    let server = Server {
        listens,
        server_names: names,
        certs,
        tls: scope.tls.settings(),
        server_return,
        server_steps: steps,
        settings: scope.settings(),
        locations: built,
        location: ctx.loc(d.at),
    };
    Ok((server, listen_pos))
}

/// A location with neither `proxy_pass` nor `return` is where nginx serves files (from
/// `root`, default `html`): hsmgate answers 404 there, which the operator must know.
fn warn_file_locations(ctx: &mut Ctx<'_>, locations: &[LocationBlock]) {
    for l in locations {
        if l.action.is_none() && l.steps.is_empty() {
            ctx.warnings.push(ConfigWarning {
                location: l.location.clone(),
                message: format!(
                    "location \"{}\" has no \"proxy_pass\" and no \"return\": nginx would \
                     serve files there (\"root\", \"index\", \"try_files\"), hsmgate serves no \
                     files and answers 404",
                    l.matcher.pattern()
                ),
            });
        }
        warn_file_locations(ctx, &l.locations);
    }
}

/// `on` or `off`.
/// `ssl on|off` (nginx before 1.25, in `http` or a server): every `listen` it covers is
/// a TLS one; warned as deprecated, in nginx's words.
pub(crate) fn ssl_on(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    slot: &mut Option<bool>,
) -> Result<(), ConfigError> {
    let on = flag(ctx, d)?;
    set(ctx, d, slot, on)?;
    ctx.warn(
        d.at,
        "the \"ssl\" directive is deprecated, use the \"listen ... ssl\" directive instead".into(),
    );
    Ok(())
}

pub(crate) fn flag(ctx: &Ctx<'_>, d: &Directive) -> Result<bool, ConfigError> {
    let arg = ctx.one(d)?;
    parse_flag(&arg.value).ok_or_else(|| {
        let reason = format!(
            "invalid value \"{}\", it must be \"on\" or \"off\"",
            arg.value
        );
        ctx.invalid(d, arg.at, reason)
    })
}

fn listen(ctx: &mut Ctx<'_>, d: &Directive) -> Result<Listen, ConfigError> {
    let args = ctx.args(d, 1, usize::MAX)?;
    let addr = listen_addr(&args[0].value).map_err(|e| ctx.invalid(d, args[0].at, e))?;
    let mut l = Listen {
        addr,
        ssl: false,
        http2: false,
        default_server: false,
        reuseport: false,
        ipv6only: None,
        backlog: None,
        socket: SocketOptions::default(),
        proxy_protocol: false,
    };
    let mut ignored = Vec::new();
    for a in &args[1..] {
        let bad = || ctx.invalid(d, a.at, format!("invalid parameter \"{}\"", a.value));
        // nginx's own words for a value it cannot read.
        let invalid = |what: &str| ctx.invalid(d, a.at, format!("invalid {what} \"{}\"", a.value));
        let (name, value) = a.value.split_once('=').unwrap_or((a.value.as_str(), ""));
        match (name, a.value.contains('=')) {
            ("ssl", false) => l.ssl = true,
            ("http2", false) => l.http2 = true,
            ("default_server" | "default", false) => l.default_server = true,
            ("reuseport", false) => l.reuseport = true,
            // Each address is bound on its own, as with `bind`.
            ("bind", false) => {}
            ("deferred", false) => l.socket.deferred = true,
            ("ipv6only", true) => l.ipv6only = Some(parse_flag(value).ok_or_else(bad)?),
            ("backlog", true) => l.backlog = Some(value.parse().map_err(|_| bad())?),
            ("so_keepalive", true) => {
                l.socket.keepalive = Some(so_keepalive(value).ok_or_else(|| {
                    let reason = format!("invalid so_keepalive value: \"{value}\"");
                    ctx.invalid(d, a.at, reason)
                })?);
            }
            ("fastopen", true) => {
                l.socket.fastopen = Some(parse_number(value).ok_or_else(|| invalid("fastopen"))?)
            }
            ("rcvbuf", true) => {
                l.socket.rcvbuf = Some(buffer_size(value).ok_or_else(|| invalid("rcvbuf"))?)
            }
            ("sndbuf", true) => {
                l.socket.sndbuf = Some(buffer_size(value).ok_or_else(|| invalid("sndbuf"))?)
            }
            // FreeBSD's; nginx on Linux says so and goes on.
            ("accept_filter", true) => ignored.push((
                a.at,
                format!(
                    "accept filters \"{}\" are not supported on this platform, ignored",
                    a.value
                ),
            )),
            ("proxy_protocol", false) => l.proxy_protocol = true,
            ("quic", false) => {
                let reason = format!("the \"{name}\" parameter is not supported by hsmgate");
                return Err(ctx.invalid(d, a.at, reason));
            }
            _ => return Err(bad()),
        }
    }
    for (at, message) in ignored {
        ctx.warn(at, message);
    }
    Ok(l)
}

/// `so_keepalive=` after the `=`: `on`, `off`, or `[keepidle][:[keepintvl][:[keepcnt]]]`
/// as nginx reads it: times in seconds (units `s m h d w M y`, no `ms`), a part left
/// out or 0 keeps the system's default, and at least one part must be set.
fn so_keepalive(v: &str) -> Option<SoKeepalive> {
    match v {
        "on" => {
            return Some(SoKeepalive::On {
                idle: None,
                interval: None,
                count: None,
            });
        }
        "off" => return Some(SoKeepalive::Off),
        _ => {}
    }
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() > 3 {
        return None;
    }
    let part = |i: usize| parts.get(i).copied().unwrap_or("");
    let secs = |s: &str| -> Option<Option<u32>> {
        if s.is_empty() {
            return Some(None);
        }
        if s.contains("ms") || !s.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let n = u32::try_from(parse_time(s)?.as_secs()).ok()?;
        Some((n > 0).then_some(n))
    };
    let count = match part(2) {
        "" => None,
        c => Some(parse_number(c)?).filter(|n| *n > 0),
    };
    let (idle, interval) = (secs(part(0))?, secs(part(1))?);
    if idle.is_none() && interval.is_none() && count.is_none() {
        return None;
    }
    Some(SoKeepalive::On {
        idle,
        interval,
        count,
    })
}

/// `rcvbuf=` / `sndbuf=` after the `=`: an nginx size that fits the socket option (0
/// asks for the system's smallest, as in nginx).
fn buffer_size(v: &str) -> Option<u32> {
    // nginx's `ngx_parse_size` here: `k` and `m` only.
    if v.ends_with(['g', 'G']) {
        return None;
    }
    parse_size(v).and_then(|n| u32::try_from(n).ok())
}

/// `server_name` value, lower-cased (regexes are kept as written).
fn server_name(v: &str) -> Result<ServerName, String> {
    if let Some(re) = v.strip_prefix('~') {
        return Regex::new(re)
            .map(ServerName::Regex)
            .map_err(|e| format!("invalid regex \"{re}\": {e}"));
    }
    let v = v.to_ascii_lowercase();
    let stars = v.matches('*').count();
    let wildcard = (stars == 1 && (v.starts_with("*.") || v.ends_with(".*")))
        || (stars == 0 && v.starts_with('.'));
    match (stars, wildcard) {
        (_, true) if v.len() > 2 => Ok(ServerName::Wildcard(v)),
        (0, false) => Ok(ServerName::Exact(v)),
        _ => Err(format!("invalid server name or wildcard \"{v}\"")),
    }
}

/// Pairs the i-th `ssl_certificate` with the i-th `ssl_certificate_key`.
fn cert_pairs(ctx: &mut Ctx<'_>, scope: &Scope) -> Result<Vec<CertPair>, ConfigError> {
    let certs = scope.tls.certs.clone().unwrap_or_default();
    let keys = scope.tls.keys.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let Some(key) = keys.get(i) else {
            let reason = format!(
                "no \"ssl_certificate_key\" is defined for certificate \"{}\"",
                cert.value
            );
            let kind = ConfigErrorKind::Invalid {
                key: "ssl_certificate".into(),
                reason,
            };
            return Err(ctx.err(cert.at, kind));
        };
        let invalid = |at, reason: &str| {
            ctx.err(
                at,
                ConfigErrorKind::Invalid {
                    key: "ssl_certificate_key".into(),
                    reason: reason.into(),
                },
            )
        };
        if cert.value.contains('$') || cert.value.starts_with("data:") || names_a_token(&cert.value)
        {
            let kind = ConfigErrorKind::Invalid {
                key: "ssl_certificate".into(),
                reason: "only a PEM file path is supported".into(),
            };
            return Err(ctx.err(cert.at, kind));
        }
        let source = if names_a_token(&key.value) {
            let uri = parse_key_string(&key.value).map_err(|e| {
                let at = Pos {
                    offset: key.at.offset + usize::from(key.quoted) + e.offset,
                    ..key.at
                };
                ctx.err(
                    at,
                    ConfigErrorKind::Uri {
                        key: "ssl_certificate_key".into(),
                        source: Box::new(e),
                    },
                )
            })?;
            if let Some(group) = &uri.group {
                let reason = if !ctx.hsm_groups.contains_key(group) {
                    Some(format!(
                        "no HA group \"{group}\" (a `map $host $hsmgate_group_{group} {{ … }}` block in http)"
                    ))
                } else if uri.token.is_some() || uri.serial.is_some() {
                    Some("with x-hsmgate-group the key URI names no token: each member names its own".into())
                } else if uri.pin_source.is_some() || uri.pin_value.is_some() {
                    Some(
                        "with x-hsmgate-group each member has its own PIN (pin_file or pin_env)"
                            .into(),
                    )
                } else if uri.object.is_none() && uri.id.is_none() {
                    Some("the URI must name the key object (object= or id=)".into())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(invalid(key.at, &reason));
                }
            }
            if uri.pin_value.is_some() {
                // Accepted in the path too, as libp11 does (guides write it there).
                ctx.warn(key.at, crate::validate::pkcs11::PIN_VALUE_WARNING.into());
            }
            KeySource::Pkcs11(Box::new(uri))
        } else if key.value.contains('$') || key.value.starts_with("data:") {
            return Err(invalid(
                key.at,
                "only a PEM file path or a PKCS#11 URI is supported",
            ));
        } else {
            KeySource::File(ctx.conf_path(&key.value))
        };
        out.push(CertPair {
            cert: ctx.conf_path(&cert.value),
            key: source,
            location: ctx.loc(key.at),
            cert_location: ctx.loc(cert.at),
        });
    }
    if keys.len() > certs.len() {
        let key = &keys[certs.len()];
        let kind = ConfigErrorKind::Invalid {
            key: "ssl_certificate_key".into(),
            reason: "no \"ssl_certificate\" for this key".into(),
        };
        return Err(ctx.err(key.at, kind));
    }
    Ok(out)
}

/// Cross-server checks: `ssl`/`http2` are per address (any server's `listen`
/// sets them for all), and at most one `default_server` per address.
pub(crate) fn check_listens(
    ctx: &Ctx<'_>,
    servers: &mut [Server],
    pos: &[Vec<Pos>],
) -> Result<(), ConfigError> {
    let mut flags: BTreeMap<SocketAddr, (bool, bool, bool)> = BTreeMap::new();
    for (s, p) in servers.iter().zip(pos) {
        for (l, at) in s.listens.iter().zip(p) {
            let f = flags.entry(l.addr).or_default();
            if l.default_server && f.2 {
                let reason = format!("a duplicate default server for {}", l.addr);
                return Err(ctx.err(
                    *at,
                    ConfigErrorKind::Invalid {
                        key: "listen".into(),
                        reason,
                    },
                ));
            }
            *f = (f.0 || l.ssl, f.1 || l.http2, f.2 || l.default_server);
        }
    }
    for l in servers.iter_mut().flat_map(|s| s.listens.iter_mut()) {
        let (ssl, http2, _) = flags[&l.addr];
        (l.ssl, l.http2) = (ssl, http2);
    }
    Ok(())
}

/// Whether a certificate or key value names a token (`engine:…` or `pkcs11:…`), in any
/// case and after blanks (RFC 7512's scheme is case-insensitive): such a value is never
/// taken for a file path, whose error would print it, PIN and all.
fn names_a_token(value: &str) -> bool {
    let v = value.trim_start().as_bytes();
    [&b"engine:"[..], b"pkcs11:"]
        .iter()
        .any(|p| v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(
            matches!(server_name("Example.COM"), Ok(ServerName::Exact(n)) if n == "example.com")
        );
        assert!(matches!(
            server_name("*.example.com"),
            Ok(ServerName::Wildcard(_))
        ));
        assert!(matches!(
            server_name("www.example.*"),
            Ok(ServerName::Wildcard(_))
        ));
        assert!(matches!(
            server_name(".example.com"),
            Ok(ServerName::Wildcard(_))
        ));
        assert!(matches!(
            server_name("~^(www|api)\\.example\\.com$"),
            Ok(ServerName::Regex(_))
        ));
        assert!(matches!(server_name(""), Ok(ServerName::Exact(n)) if n.is_empty()));
        assert!(server_name("w*w.example.com").is_err());
        // `$server_name` of a server whose first name is this one (nginx's merge of
        // server_name: a leading dot dropped, a regex with its `~`).
        let var = |v: &str| server_name(v).expect(v).variable_value();
        assert_eq!(var("*.Example.com"), "*.example.com");
        assert_eq!(var(".example.org"), "example.org");
        assert_eq!(var("www.example.*"), "www.example.*");
        assert_eq!(
            var("~^(?<sub>.+)\\.Regex\\.test$"),
            "~^(?<sub>.+)\\.Regex\\.test$"
        );
        assert_eq!(var("A.test"), "a.test");
        assert!(server_name("~(").is_err());
    }
}
