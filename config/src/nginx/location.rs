//! `location` blocks, `proxy_pass` and `return`, with nginx's load-time rules:
//! no URI part in `proxy_pass` of a regex location, nested prefix locations
//! inside their parent's prefix, nothing nested in an exact location, no
//! duplicate locations.

use std::collections::BTreeMap;

use super::build::Ctx;
use super::cond::{LocationIf, condition};
use super::model::{Action, LocationBlock, Matcher, ProxyPass, Return, UpstreamGroup, UpstreamRef};
use super::parse::Directive;
use super::rewrite::{LocationStep, RewriteFlag, parse_rewrite, parse_set};
use super::scope::{Level, Scope};
use super::values::{host_port_or, resolves, unix_socket};
use crate::error::{ConfigError, ConfigErrorKind};

/// One `location` (and its nested ones), merged with `outer`.
pub(crate) fn build_location(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    outer: &Scope,
    upstreams: &BTreeMap<String, UpstreamGroup>,
    parent: Option<&Matcher>,
) -> Result<LocationBlock, ConfigError> {
    let body = ctx.block(d, 1, 2)?;
    let matcher = matcher(ctx, d)?;
    let named = matcher.pattern().starts_with('@');
    if named && parent.is_some() {
        return Err(ctx.invalid(
            d,
            d.at,
            format!(
                "location \"{}\" could not be inside another location: a named location \
                 is at the server level only",
                matcher.pattern()
            ),
        ));
    }
    if let Some(p) = parent {
        check_nesting(ctx, d, p, &matcher)?;
    }
    let mut scope = Scope::default();
    let (mut pass, mut ret, mut nested, mut pass_at) = (None, None, vec![], None);
    // `rewrite`s and `if`s in order; the `if`s are built once the location's own
    // settings are all read (a block merges with all of them).
    let mut pending: Vec<Result<LocationStep, &Directive>> = Vec::new();
    let mut internal = false;
    let mut stub_status = false;
    let mut limit_except = None;
    for s in body {
        match s.name.as_str() {
            "stub_status" => {
                ctx.args(s, 0, 1)?;
                stub_status = true;
            }
            "internal" => {
                ctx.args(s, 0, 0)?;
                if internal {
                    return Err(ctx.duplicate(s));
                }
                internal = true;
            }
            "rewrite" | "if" | "set" | "break" => {
                let step = match s.name.as_str() {
                    "rewrite" => Ok(LocationStep::Rewrite(parse_rewrite(ctx, s)?)),
                    "set" => Ok(LocationStep::Set(parse_set(ctx, s)?)),
                    "break" => {
                        ctx.args(s, 0, 0)?;
                        Ok(LocationStep::Break)
                    }
                    _ => Err(s),
                };
                match ret {
                    // As in nginx: the rewrite directives run in order, `return` stops.
                    Some(_) => ctx.warn(
                        s.at,
                        format!(
                            "\"{}\" is never used: a \"return\" before it answers first",
                            s.name
                        ),
                    ),
                    None => pending.push(step),
                }
            }
            "proxy_pass" => {
                let p = proxy_pass(ctx, s, &matcher, upstreams)?;
                // nginx has no `proxy_redirect default` for a URL with variables.
                scope.pass_default = (!p.has_variables()).then(|| p.default_redirect(&matcher));
                super::scope::set(ctx, s, &mut pass, p)?;
                pass_at = Some(s);
            }
            "return" => {
                let r = parse_return(ctx, s)?;
                ret.get_or_insert(r);
            }
            "location" => nested.push(s),
            "limit_except" => match limit_except {
                Some(_) => return Err(ctx.duplicate(s)),
                None => limit_except = Some(s),
            },
            _ if scope.directive(ctx, s, Level::Location)? => {}
            _ => ctx.other(s)?,
        }
    }
    scope.inherit(outer);
    if let (Some(p), Some(at)) = (&pass, pass_at)
        && p.https
    {
        check_proxy_ssl(ctx, at, &scope)?;
    }
    let mut locations = Vec::new();
    for n in &nested {
        locations.push(build_location(ctx, n, &scope, upstreams, Some(&matcher))?);
    }
    check_duplicates(ctx, &locations, &nested)?;
    let mut steps = Vec::new();
    for p in pending {
        steps.push(match p {
            Ok(step) => step,
            Err(d) => {
                let i = location_if(ctx, d, &scope, &matcher, upstreams, pass.as_ref())?;
                LocationStep::If(Box::new(i))
            }
        });
    }
    fn breaks(steps: &[LocationStep]) -> bool {
        steps.iter().any(|s| match s {
            LocationStep::Rewrite(r) => r.flag == RewriteFlag::Break,
            LocationStep::If(i) => breaks(&i.steps),
            LocationStep::Break => true,
            LocationStep::Set(_) => false,
        })
    }
    let breaks = breaks(&steps);
    if ret.is_some() && pass.is_some() && !breaks {
        ctx.warn(
            d.at,
            "\"proxy_pass\" is never used: \"return\" answers first".into(),
        );
    }
    let action = ret
        .map(Action::Return)
        .or(pass.clone().map(Action::ProxyPass))
        .or(stub_status.then_some(Action::StubStatus));
    let mut settings = scope.settings();
    settings.proxy_redirect = scope.redirects(scope.pass_default.as_ref());
    if let Some(d) = limit_except {
        settings.limit_except = Some(Box::new(build_limit_except(ctx, d, &scope, &settings)?));
    }
    Ok(LocationBlock {
        matcher,
        action,
        steps,
        internal,
        pass,
        settings,
        locations,
        location: ctx.loc(d.at),
    })
}

/// The methods `limit_except` may name (nginx's list).
const LIMIT_EXCEPT_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "MKCOL",
    "COPY",
    "MOVE",
    "OPTIONS",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
];

/// The directives a `limit_except` block may hold (nginx's `NGX_HTTP_LMT_CONF` ones
/// that hsmgate implements).
const LIMIT_EXCEPT_DIRECTIVES: &[&str] = &[
    "allow",
    "deny",
    "auth_basic",
    "auth_basic_user_file",
    "access_log",
];

/// `limit_except METHOD… { … }` in a location whose scope is `outer` and settings
/// `location`: as nginx's implicit location, the block's settings merged with the
/// location's serve every method it does not list.
fn build_limit_except(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    outer: &Scope,
    location: &super::model::ProxySettings,
) -> Result<super::model::LimitExcept, ConfigError> {
    let body = ctx.block(d, 1, usize::MAX)?;
    let mut methods = Vec::new();
    for a in &d.args {
        let m = a.value.to_ascii_uppercase();
        if !LIMIT_EXCEPT_METHODS.contains(&m.as_str()) {
            return Err(ctx.invalid(d, a.at, format!("invalid method \"{}\"", a.value)));
        }
        methods.push(m);
    }
    let mut scope = Scope::default();
    for s in body {
        if !LIMIT_EXCEPT_DIRECTIVES.contains(&s.name.as_str()) {
            return Err(ctx.err(
                s.at,
                ConfigErrorKind::NotAllowedHere {
                    directive: s.name.clone(),
                },
            ));
        }
        if !scope.directive(ctx, s, Level::Location)? {
            ctx.other(s)?;
        }
    }
    scope.inherit(outer);
    let mut settings = scope.settings();
    settings.proxy_redirect = location.proxy_redirect.clone();
    Ok(super::model::LimitExcept { methods, settings })
}

/// `if (CONDITION) { … }` in a location whose settings are `outer`: `rewrite`s and a
/// `return`, a `proxy_pass` of its own, and settings (merged with the location's).
fn location_if(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    outer: &Scope,
    matcher: &Matcher,
    upstreams: &BTreeMap<String, UpstreamGroup>,
    location_pass: Option<&ProxyPass>,
) -> Result<LocationIf, ConfigError> {
    let body = ctx.block(d, 1, usize::MAX)?;
    let condition = condition(ctx, d)?;
    let mut scope = Scope::default();
    let (mut steps, mut ret, mut pass) = (Vec::new(), None, None);
    for s in body {
        match s.name.as_str() {
            "rewrite" | "set" | "break" if ret.is_some() => ctx.warn(
                s.at,
                format!(
                    "\"{}\" is never used: a \"return\" before it answers first",
                    s.name
                ),
            ),
            "rewrite" => steps.push(LocationStep::Rewrite(parse_rewrite(ctx, s)?)),
            "set" => steps.push(LocationStep::Set(parse_set(ctx, s)?)),
            "break" => {
                ctx.args(s, 0, 0)?;
                steps.push(LocationStep::Break);
            }
            "return" => {
                let r = parse_return(ctx, s)?;
                ret.get_or_insert(r);
            }
            "proxy_pass" => {
                let p = proxy_pass(ctx, s, matcher, upstreams)?;
                if p.uri.is_some() {
                    return Err(ctx.invalid(
                        s,
                        s.args[0].at,
                        "\"proxy_pass\" cannot have URI part inside \"if\" statement",
                    ));
                }
                scope.pass_default = (!p.has_variables()).then(|| p.default_redirect(matcher));
                super::scope::set(ctx, s, &mut pass, p)?;
            }
            "if" | "location" => {
                return Err(ctx.err(
                    s.at,
                    ConfigErrorKind::NotAllowedHere {
                        directive: s.name.clone(),
                    },
                ));
            }
            _ if scope.directive(ctx, s, Level::Location)? => {}
            _ => ctx.other(s)?,
        }
    }
    scope.inherit(outer);
    let mut settings = scope.settings();
    let default =
        (scope.pass_default.clone()).or_else(|| location_pass.map(|p| p.default_redirect(matcher)));
    settings.proxy_redirect = scope.redirects(default.as_ref());
    Ok(LocationIf {
        condition,
        steps,
        ret,
        pass: pass.or_else(|| location_pass.cloned()),
        settings,
        location: ctx.loc(d.at),
    })
}

fn matcher(ctx: &Ctx<'_>, d: &Directive) -> Result<Matcher, ConfigError> {
    let (modifier, pattern, at) = match d.args.as_slice() {
        [m, p] => (m.value.as_str(), p.value.clone(), p.at),
        [p] => {
            let v = p.value.as_str();
            match ["=", "~*", "~", "^~"]
                .into_iter()
                .find(|m| v.starts_with(m) && v.len() > m.len())
            {
                Some(m) => (m, v[m.len()..].to_owned(), p.at),
                None => ("", v.to_owned(), p.at),
            }
        }
        _ => unreachable!("ctx.block checked 1..=2 arguments"),
    };
    if pattern.starts_with('@') {
        // A named location (`error_page`'s `@name`): kept as an exact location whose
        // pattern no request path can equal (every path starts with `/`).
        if !modifier.is_empty() || pattern.len() == 1 {
            return Err(ctx.invalid(d, at, format!("invalid location name \"{pattern}\"")));
        }
        return Ok(Matcher::Exact(pattern));
    }
    let regex = |ci: bool| {
        let source = if ci {
            format!("(?i){pattern}")
        } else {
            pattern.clone()
        };
        super::ngx_regex::NgxRegex::new(&source)
            .map_err(|e| ctx.invalid(d, at, format!("invalid regex \"{pattern}\": {e}")))
    };
    Ok(match modifier {
        "=" => Matcher::Exact(pattern),
        "" => Matcher::Prefix(pattern),
        "^~" => Matcher::PrefixNoRegex(pattern),
        "~" => Matcher::Regex {
            case_insensitive: false,
            regex: regex(false)?,
            pattern,
        },
        "~*" => Matcher::Regex {
            case_insensitive: true,
            regex: regex(true)?,
            pattern,
        },
        m => {
            return Err(ctx.invalid(
                d,
                d.args[0].at,
                format!("invalid location modifier \"{m}\""),
            ));
        }
    })
}

fn check_nesting(
    ctx: &Ctx<'_>,
    d: &Directive,
    parent: &Matcher,
    child: &Matcher,
) -> Result<(), ConfigError> {
    let (p, c) = (parent.pattern(), child.pattern());
    match (parent, child) {
        (Matcher::Exact(_), _) => Err(ctx.invalid(
            d,
            d.at,
            format!("location \"{c}\" cannot be inside the exact location \"{p}\""),
        )),
        (Matcher::Regex { .. }, _) | (_, Matcher::Regex { .. }) => Ok(()),
        _ if !c.starts_with(p) => Err(ctx.invalid(
            d,
            d.at,
            format!("location \"{c}\" is outside location \"{p}\""),
        )),
        _ => Ok(()),
    }
}

/// nginx's "duplicate location" check for one level.
pub(crate) fn check_duplicates(
    ctx: &Ctx<'_>,
    built: &[LocationBlock],
    ds: &[&Directive],
) -> Result<(), ConfigError> {
    for (i, l) in built.iter().enumerate() {
        let same = |o: &LocationBlock| match (&o.matcher, &l.matcher) {
            (Matcher::Exact(a), Matcher::Exact(b)) => a == b,
            (
                Matcher::Prefix(a) | Matcher::PrefixNoRegex(a),
                Matcher::Prefix(b) | Matcher::PrefixNoRegex(b),
            ) => a == b,
            _ => false,
        };
        if built[..i].iter().any(same) {
            return Err(ctx.invalid(
                ds[i],
                ds[i].at,
                format!("duplicate location \"{}\"", l.matcher.pattern()),
            ));
        }
    }
    Ok(())
}

fn proxy_pass(
    ctx: &Ctx<'_>,
    d: &Directive,
    m: &Matcher,
    upstreams: &BTreeMap<String, UpstreamGroup>,
) -> Result<ProxyPass, ConfigError> {
    let arg = ctx.one(d)?;
    let v = arg.value.as_str();
    let (https, skip) = match url_scheme(v) {
        Some(scheme) => scheme,
        // The scheme from a variable (`$backend`, `$proto://…`): read per request.
        None if v.starts_with('$') => {
            return Ok(ProxyPass {
                https: false,
                target: UpstreamRef::DynamicUrl(ctx.template(d, arg)?),
                uri: None,
                url: v.to_owned(),
            });
        }
        None => return Err(ctx.invalid(d, arg.at, "invalid URL prefix")),
    };
    if v.contains('$') {
        return dynamic_proxy_pass(ctx, d, arg, https, skip);
    }
    let rest = &v[skip..];
    let unix = unix_socket(rest, true).map_err(|e| ctx.invalid(d, arg.at, e))?;
    let (host, uri) = match (&unix, rest.find('/')) {
        (Some((addr, uri)), _) => (addr.as_str(), uri.clone()),
        (None, Some(i)) => (&rest[..i], Some(rest[i..].to_owned())),
        (None, None) => (rest, None),
    };
    let named = m.pattern().starts_with('@');
    if uri.is_some() && (named || matches!(m, Matcher::Regex { .. })) {
        return Err(ctx.invalid(
            d,
            arg.at,
            "\"proxy_pass\" cannot have URI part in location given by regular expression, \
             or inside named location",
        ));
    }
    let port = if https { 443 } else { 80 };
    let unix_servers = |name: &str| {
        (upstreams.get(name)).is_some_and(|g| {
            g.servers
                .iter()
                .any(|s| crate::unix_socket_path(&s.addr).is_some())
        })
    };
    if https && (unix.is_some() || unix_servers(host)) {
        return Err(ctx.invalid(
            d,
            arg.at,
            "TLS to an upstream on a unix domain socket is not supported (use http://)",
        ));
    }
    let target = match upstreams.contains_key(host) {
        true => UpstreamRef::Named(host.to_owned()),
        false if unix.is_some() => UpstreamRef::Addr(host.to_owned()),
        false => {
            let addr = host_port_or(host, port).map_err(|e| ctx.invalid(d, arg.at, e))?;
            if !resolves(&addr) {
                let host = host.to_owned();
                return Err(ctx.err(arg.at, ConfigErrorKind::HostNotFound { host }));
            }
            UpstreamRef::Addr(addr)
        }
    };
    let url = v.to_owned();
    Ok(ProxyPass {
        https,
        target,
        uri,
        url,
    })
}

/// The scheme of a `proxy_pass` URL (case aside): whether it is `https://`, and its
/// length; None for any other (nginx's "invalid URL prefix"). Read at load, and per
/// request for a URL whose scheme is a variable's.
pub fn url_scheme(url: &str) -> Option<(bool, usize)> {
    let starts = |p: &str| {
        url.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    match () {
        _ if starts("http://") => Some((false, 7)),
        _ if starts("https://") => Some((true, 8)),
        _ => None,
    }
}

/// `proxy_pass` with variables, as nginx evaluates it per request: what follows the
/// scheme (its first `skip` bytes) is expanded, then split at its first `/`: the host
/// part names an `upstream` block (without regard to case) or is a `host[:port]`
/// (resolved when connecting), and a URI part, if any, replaces the request's URI whole
/// (nginx passes it "as is").
fn dynamic_proxy_pass(
    ctx: &Ctx<'_>,
    d: &Directive,
    arg: &super::parse::Arg,
    https: bool,
    skip: usize,
) -> Result<ProxyPass, ConfigError> {
    Ok(ProxyPass {
        https,
        target: UpstreamRef::Dynamic(ctx.template(d, &arg.tail(skip))?),
        uri: None,
        url: arg.value.clone(),
    })
}

/// nginx's load-time checks of a location passing to `https://`: verification needs
/// trusted CAs, and a client certificate its key.
fn check_proxy_ssl(ctx: &Ctx<'_>, d: &Directive, scope: &Scope) -> Result<(), ConfigError> {
    let ssl = scope.proxy_ssl.settings();
    if ssl.verify && ssl.trusted_certificate.is_none() {
        return Err(ctx.invalid(
            d,
            d.at,
            "no proxy_ssl_trusted_certificate for proxy_ssl_verify",
        ));
    }
    match scope.proxy_ssl.unpaired() {
        Some(reason) => Err(ctx.invalid(d, d.at, reason)),
        None => Ok(()),
    }
}

/// `return code [text|URL]` / `return URL`.
pub(crate) fn parse_return(ctx: &Ctx<'_>, d: &Directive) -> Result<Return, ConfigError> {
    let args = ctx.args(d, 1, 2)?;
    let first = &args[0];
    let code = first.value.parse::<u16>().ok().filter(|&c| c <= 999);
    match (code, args.get(1)) {
        (Some(code), text) => {
            let text_or_url = text.map(|t| ctx.template(d, t)).transpose()?;
            Ok(Return { code, text_or_url })
        }
        (None, None)
            if ["http://", "https://", "$scheme"]
                .iter()
                .any(|p| first.value.starts_with(p)) =>
        {
            Ok(Return {
                code: 302,
                text_or_url: Some(ctx.template(d, first)?),
            })
        }
        (None, _) => Err(ctx.invalid(
            d,
            first.at,
            format!("invalid return code \"{}\"", first.value),
        )),
    }
}
