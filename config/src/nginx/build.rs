//! Validation of the directive tree into [`NginxConfig`]: the main, `events`,
//! `http` and `upstream` contexts, and the settings every level shares
//! ([`Scope`], merged with nginx's inheritance rules).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ignored;
use super::lexer::raw_offset;
use super::map::VarMap;
use super::model::Server;
use super::model::{
    BalanceMethod, LogEscape, LogFormat, NginxConfig, UpstreamGroup, UpstreamServer,
};
use super::parse::{Arg, Directive, Pos, Sources};
use super::scope::{Level, Scope, error_log, set};
use super::server::{build_server, check_listens};
use super::template::{Template, TemplateError};
use super::values::{parse_time, upstream_addr};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::model::{ConfigWarning, Location};

/// Every directive hsmgate implements somewhere (to tell "not allowed here"
/// from "unknown").
const KNOWN: &[&str] = &[
    "user",
    "worker_processes",
    "pid",
    "error_log",
    "env",
    "ssl_engine",
    "events",
    "http",
    "worker_connections",
    "server",
    "upstream",
    "keepalive",
    "log_format",
    "access_log",
    "proxy_set_header",
    "add_header",
    "proxy_hide_header",
    "proxy_pass_header",
    "proxy_http_version",
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "client_max_body_size",
    "keepalive_timeout",
    "listen",
    "server_name",
    "location",
    "return",
    "rewrite",
    "set",
    "proxy_pass",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_ecdh_curve",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_session_ticket_key",
    "map",
    "if",
    "http2",
    "ssl",
    "proxy_ssl_verify",
    "proxy_ssl_trusted_certificate",
    "proxy_ssl_verify_depth",
    "proxy_ssl_server_name",
    "proxy_ssl_name",
    "proxy_ssl_protocols",
    "proxy_ssl_ciphers",
    "proxy_ssl_session_reuse",
    "proxy_ssl_certificate",
    "proxy_ssl_certificate_key",
    "proxy_request_buffering",
    "client_body_buffer_size",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "allow",
    "deny",
    "auth_basic",
    "satisfy",
    "set_real_ip_from",
    "proxy_redirect",
    "auth_request",
    "ssl_crl",
    "ssl_stapling_verify",
    "ssl_stapling_responder",
    "ssl_trusted_certificate",
    "geo",
    "stub_status",
    "expires",
    "proxy_pass_request_body",
    "proxy_pass_request_headers",
    "proxy_method",
    "proxy_set_body",
    "auth_request_set",
    "proxy_cookie_flags",
    "send_timeout",
    "keepalive_requests",
    "keepalive_time",
    "worker_shutdown_timeout",
    "absolute_redirect",
    "port_in_redirect",
    "merge_slashes",
    "underscores_in_headers",
    "ignore_invalid_headers",
    "limit_req_zone",
    "limit_conn_zone",
    "limit_req",
    "limit_conn",
    "limit_req_status",
    "limit_conn_status",
    "limit_req_dry_run",
    "limit_conn_dry_run",
    "limit_req_log_level",
    "limit_conn_log_level",
    "proxy_cookie_path",
    "proxy_cookie_domain",
    "real_ip_header",
    "real_ip_recursive",
    "proxy_protocol_timeout",
    "internal",
    "error_page",
    "proxy_intercept_errors",
    "recursive_error_pages",
    "limit_rate",
    "limit_rate_after",
    "limit_except",
    "split_clients",
    "root",
    "auth_basic_user_file",
];

const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// What validation needs: the sources (for locations), the two prefixes and
/// what it has gathered so far.
pub(crate) struct Ctx<'a> {
    pub(crate) sources: &'a Sources,
    pub(crate) prefix: &'a Path,
    pub(crate) conf_prefix: &'a Path,
    pub(crate) warnings: Vec<ConfigWarning>,
    pub(crate) log_formats: BTreeMap<String, LogFormat>,
    /// The variables `map` blocks define (known before any other `http` directive).
    pub(crate) map_names: std::collections::BTreeSet<String>,
    /// The variables `set` declares anywhere (usable before their `set`, as in nginx).
    pub(crate) set_names: std::collections::BTreeSet<String>,
    /// The `map` blocks, by the variable they define.
    pub(crate) maps: BTreeMap<String, VarMap>,
    /// HA groups of HSMs (`map … $hsmgate_group_NAME`), by name.
    pub(crate) hsm_groups: BTreeMap<String, crate::model::HsmGroup>,
    /// `http2 on|off` in `http` (nginx 1.25.1+), the default of each server.
    pub(crate) http2: Option<bool>,
    /// `ssl on|off` in `http` (nginx before 1.25), the default of each server.
    pub(crate) ssl: Option<bool>,
    /// `limit_req_zone`s and `limit_conn_zone`s (read before the rest of `http`).
    pub(crate) limit_zones: super::limits::LimitZones,
}

impl Ctx<'_> {
    pub(crate) fn loc(&self, at: Pos) -> Location {
        self.sources.location(at)
    }

    pub(crate) fn err(&self, at: Pos, kind: ConfigErrorKind) -> ConfigError {
        self.sources.error(at, kind)
    }

    /// A bad value of `d` at `at`.
    pub(crate) fn invalid(&self, d: &Directive, at: Pos, reason: impl Into<String>) -> ConfigError {
        let key = d.name.clone();
        self.err(
            at,
            ConfigErrorKind::Invalid {
                key,
                reason: reason.into(),
            },
        )
    }

    pub(crate) fn duplicate(&self, d: &Directive) -> ConfigError {
        self.invalid(d, d.at, "directive is duplicate")
    }

    pub(crate) fn warn(&mut self, at: Pos, message: String) {
        let location = self.loc(at);
        self.warnings.push(ConfigWarning { location, message });
    }

    pub(crate) fn arguments(&self, d: &Directive, reason: &'static str) -> ConfigError {
        let directive = d.name.clone();
        self.err(d.at, ConfigErrorKind::Arguments { directive, reason })
    }

    /// The arguments of a simple directive (no block), `min..=max` of them.
    pub(crate) fn args<'d>(
        &self,
        d: &'d Directive,
        min: usize,
        max: usize,
    ) -> Result<&'d [Arg], ConfigError> {
        if d.block.is_some() {
            return Err(self.arguments(d, "no terminating \";\""));
        }
        if !(min..=max).contains(&d.args.len()) {
            return Err(self.arguments(d, "invalid number of arguments"));
        }
        Ok(&d.args)
    }

    /// The single argument of a simple directive.
    pub(crate) fn one<'d>(&self, d: &'d Directive) -> Result<&'d Arg, ConfigError> {
        Ok(&self.args(d, 1, 1)?[0])
    }

    /// The body of a block directive with `min..=max` arguments.
    pub(crate) fn block<'d>(
        &self,
        d: &'d Directive,
        min: usize,
        max: usize,
    ) -> Result<&'d [Directive], ConfigError> {
        let Some(block) = &d.block else {
            return Err(self.arguments(d, "no opening \"{\""));
        };
        if !(min..=max).contains(&d.args.len()) {
            return Err(self.arguments(d, "invalid number of arguments"));
        }
        Ok(block)
    }

    /// `arg` of `d` as a [`Template`]; errors point into the argument.
    pub(crate) fn template(&self, d: &Directive, arg: &Arg) -> Result<Template, ConfigError> {
        self.template_with(d, arg, &|_| false)
    }

    /// [`template`](Self::template), also accepting the variables `extra` knows (a
    /// `rewrite`'s captures).
    pub(crate) fn template_with(
        &self,
        d: &Directive,
        arg: &Arg,
        extra: &dyn Fn(&str) -> bool,
    ) -> Result<Template, ConfigError> {
        // `$0`…`$9`: the captures of the regex that matched last (a location's, an
        // `if`'s, a `rewrite`'s; in a `map` value, its key's), empty without one.
        let known = |name: &str| {
            self.map_names.contains(name)
                || self.set_names.contains(name)
                || super::rewrite::capture_index(name).is_some()
                || extra(name)
        };
        Template::parse_with(&arg.value, &known).map_err(|e| {
            // `offset` is into the unescaped value: back to the text as written.
            let start = arg.at.offset + usize::from(arg.quoted);
            let text = &self.sources.files[arg.at.file].text;
            let at = |offset: usize| Pos {
                offset: start
                    + text
                        .get(start..)
                        .map_or(offset, |raw| raw_offset(raw, offset)),
                ..arg.at
            };
            match e {
                TemplateError::InvalidName(o) => self.invalid(d, at(o), "invalid variable name"),
                TemplateError::Unknown(o, variable) => {
                    let directive = d.name.clone();
                    self.err(
                        at(o),
                        ConfigErrorKind::UnknownVariable {
                            directive,
                            variable,
                        },
                    )
                }
            }
        })
    }

    /// A path relative to the prefix (`pid`, logs).
    pub(crate) fn prefix_path(&self, p: &str) -> PathBuf {
        self.prefix.join(p)
    }

    /// A path relative to the conf prefix (`ssl_*` files).
    pub(crate) fn conf_path(&self, p: &str) -> PathBuf {
        self.conf_prefix.join(p)
    }

    /// A directive this context does not handle: ignored with a warning if it
    /// is in the safe list, else an error.
    pub(crate) fn other(&mut self, d: &Directive) -> Result<(), ConfigError> {
        if let Some(why) = ignored::refused(&d.name) {
            return Err(self.invalid(d, d.at, why));
        }
        if let Some(why) = ignored::reason(&d.name) {
            self.check_shape(d)?;
            self.warn(d.at, format!("\"{}\" ignored: {why}", d.name));
            return Ok(());
        }
        if d.name.contains('=') {
            // No directive has a `=`: the rest of an unquoted PKCS#11 URI, cut at a `;`
            // (its PIN not echoed).
            let kind = ConfigErrorKind::Invalid {
                key: crate::env::mask_pin_value(&d.name),
                reason: "is not a directive: quote a PKCS#11 URI (\"engine:pkcs11:pkcs11:…\"), whose `;` otherwise ends the directive".into(),
            };
            return Err(self.err(d.at, kind));
        }
        let directive = d.name.clone();
        Err(self.err(
            d.at,
            match KNOWN.contains(&d.name.as_str()) {
                true => ConfigErrorKind::NotAllowedHere { directive },
                false => ConfigErrorKind::UnknownDirective { directive },
            },
        ))
    }

    /// The arguments of an ignored directive, checked as nginx's `-t` checks them.
    fn check_shape(&self, d: &Directive) -> Result<(), ConfigError> {
        use ignored::Shape;
        let Some(shape) = ignored::shape(&d.name) else {
            return Ok(());
        };
        match shape {
            Shape::One => {
                self.one(d)?;
            }
            Shape::Some => {
                self.args(d, 1, usize::MAX)?;
            }
            Shape::Flag => {
                let arg = self.one(d)?;
                if super::values::parse_flag(&arg.value).is_none() {
                    let reason = format!(
                        "invalid value \"{}\", it must be \"on\" or \"off\"",
                        arg.value
                    );
                    return Err(self.invalid(d, arg.at, reason));
                }
            }
            Shape::File => {
                self.readable_file(d)?;
            }
        }
        Ok(())
    }

    /// The one argument of `d` as a file under the conf prefix, which must be readable
    /// (as `nginx -t` loads it).
    pub(crate) fn readable_file(&self, d: &Directive) -> Result<PathBuf, ConfigError> {
        let arg = self.one(d)?;
        let path = self.conf_path(&arg.value);
        if let Err(e) = std::fs::File::open(&path) {
            let reason = format!("cannot read \"{}\": {e}", path.display());
            return Err(self.invalid(d, arg.at, reason));
        }
        Ok(path)
    }
}

/// The main context.
pub(crate) fn build(
    ctx: &mut Ctx<'_>,
    main: &[Directive],
    main_file: &Path,
) -> Result<NginxConfig, ConfigError> {
    let combined = LogFormat {
        escape: LogEscape::Default,
        template: Template::parse(COMBINED).expect("nginx's combined format"),
    };
    ctx.log_formats.insert("combined".into(), combined);
    let (mut user, mut workers, mut pid, mut events, mut http) = (None, None, None, None, None);
    let mut shutdown_timeout = None;
    let mut error_logs = Vec::new();
    let mut env = Vec::new();
    let mut admission_vars: Vec<(String, String, &Directive, Pos)> = Vec::new();
    let mut engine = None;
    let mut admin = None;
    for d in main {
        match d.name.as_str() {
            "user" => {
                let a = ctx.args(d, 1, 2)?;
                set(
                    ctx,
                    d,
                    &mut user,
                    (a[0].value.clone(), a.get(1).map(|g| g.value.clone())),
                )?;
            }
            "worker_shutdown_timeout" => {
                let arg = ctx.one(d)?;
                let t = parse_time(&arg.value)
                    .ok_or_else(|| ctx.invalid(d, arg.at, "invalid value"))?;
                set(ctx, d, &mut shutdown_timeout, t)?;
            }
            "worker_processes" => {
                let arg = ctx.one(d)?;
                let n = match arg.value.as_str() {
                    "auto" => None,
                    v => Some(
                        v.parse::<u32>()
                            .map_err(|_| ctx.invalid(d, arg.at, "invalid value"))?,
                    ),
                };
                set(ctx, d, &mut workers, n)?;
            }
            "pid" => {
                let path = ctx.prefix_path(&ctx.one(d)?.value);
                set(ctx, d, &mut pid, path)?;
            }
            "error_log" => {
                if !error_logs.is_empty() {
                    ctx.warn(
                        d.at,
                        "a second main-level \"error_log\" is checked but not written: \
                         hsmgate writes to the first one only"
                            .into(),
                    );
                }
                error_logs.push(error_log(ctx, d)?);
            }
            "env" => {
                let arg = ctx.one(d)?;
                let v = &arg.value;
                // `env HSMGATE_ADMIN=ADDR;`: hsmgate's admin listener, spelled so that
                // nginx -t accepts the same file.
                if let Some(addr) = v.strip_prefix("HSMGATE_ADMIN=") {
                    let parsed = addr.parse::<std::net::SocketAddr>().map_err(|_| {
                        ctx.invalid(
                            d,
                            arg.at,
                            format!("HSMGATE_ADMIN: \"{addr}\" is not an IP:port address"),
                        )
                    })?;
                    set(ctx, d, &mut admin, parsed)?;
                }
                let (name, value) = match v.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (v.as_str(), None),
                };
                // Admission settings are checked here, where the directive is.
                if name.starts_with(crate::Admission::ENV_ENABLED) {
                    if !crate::Admission::ENV_ALL.contains(&name) {
                        ctx.warn(
                            arg.at,
                            format!(
                                "unknown admission setting {name} (known: {}); it is ignored",
                                crate::Admission::ENV_ALL.join(", ")
                            ),
                        );
                    } else if let Some(value) = value {
                        // Checked together after the last line (the maximum wait is
                        // checked against the target set on another line).
                        admission_vars.push((name.to_owned(), value.to_owned(), d, arg.at));
                    }
                }
                env.push((name.to_owned(), value.map(str::to_owned)));
            }
            "ssl_engine" => {
                let arg = ctx.one(d)?;
                if arg.value != "pkcs11" {
                    let reason = format!(
                        "engine \"{}\" is not supported: only \"pkcs11\" (keys named by PKCS#11 URIs)",
                        arg.value
                    );
                    return Err(ctx.invalid(d, arg.at, reason));
                }
                set(ctx, d, &mut engine, ())?;
            }
            "events" => {
                let block = ctx.block(d, 0, 0)?;
                let connections = events_block(ctx, block)?;
                set(ctx, d, &mut events, connections)?;
            }
            "http" => {
                let block = ctx.block(d, 0, 0)?;
                set(ctx, d, &mut http, (block, ctx.loc(d.at)))?;
            }
            _ => ctx.other(d)?,
        }
    }
    // The admission settings of every `env` line, as one set (the last line of a name
    // wins, as for the process's variables); an error is located at its variable's line.
    if let Err(e) = crate::Admission::from_vars(|k| {
        (admission_vars.iter().rev())
            .find(|(name, ..)| name == k)
            .map(|(_, value, ..)| value.clone())
    }) {
        let (_, _, d, at) = (admission_vars.iter().rev())
            .find(|(name, ..)| *name == e.var)
            .or(admission_vars.last())
            .expect("an error comes from a variable set on an env line");
        return Err(ctx.invalid(d, *at, e.to_string()));
    }
    let Some(worker_connections) = events else {
        return Err(ConfigError {
            file: main_file.to_path_buf(),
            line: 0,
            col: 0,
            kind: ConfigErrorKind::Invalid {
                key: "events".into(),
                reason: "no \"events\" section in configuration".into(),
            },
        });
    };
    let (servers, upstreams) = match &http {
        Some((block, _)) => http_block(ctx, block)?,
        None => Default::default(),
    };
    let compiled = super::compiled_paths();
    Ok(NginxConfig {
        servers,
        upstreams,
        user,
        worker_processes: workers.flatten(),
        shutdown_timeout,
        worker_connections,
        pid,
        error_logs,
        admin,
        default_access_log: compiled.http_log.clone(),
        default_access_log_origin: compiled.origin,
        http_at: http.map(|(_, at)| at),
        env,
        ssl_engine_pkcs11: engine.is_some(),
        log_formats: std::mem::take(&mut ctx.log_formats),
        maps: std::mem::take(&mut ctx.maps),
        limit_zones: std::mem::take(&mut ctx.limit_zones),
        hsm_groups: std::mem::take(&mut ctx.hsm_groups),
        prefix: ctx.prefix.to_path_buf(),
        conf_prefix: ctx.conf_prefix.to_path_buf(),
        warnings: std::mem::take(&mut ctx.warnings),
        files: Vec::new(),
    })
}

fn events_block(ctx: &mut Ctx<'_>, block: &[Directive]) -> Result<Option<u32>, ConfigError> {
    let mut connections = None;
    for d in block {
        match d.name.as_str() {
            "worker_connections" => {
                let arg = ctx.one(d)?;
                let n = arg
                    .value
                    .parse()
                    .map_err(|_| ctx.invalid(d, arg.at, "invalid number"))?;
                set(ctx, d, &mut connections, n)?;
            }
            _ => ctx.other(d)?,
        }
    }
    Ok(connections)
}

type Servers = (Vec<Server>, BTreeMap<String, UpstreamGroup>);

/// The names `set $NAME …` declares in `block` and the blocks inside it, and the named
/// groups of the regexes written there (a location's, an `if`'s, a `rewrite`'s, a `map`
/// key's): variables a request may give a value.
fn collect_set_names(block: &[Directive], names: &mut std::collections::BTreeSet<String>) {
    for d in block {
        for text in std::iter::once(&d.name).chain(d.args.iter().map(|a| &a.value)) {
            if text.contains("(?") {
                names.extend(super::cond::capture_group_names(text));
            }
        }
        if (d.name == "set" || d.name == "auth_request_set")
            && let Some(name) = d
                .args
                .first()
                .and_then(|a| super::rewrite::set_name(&a.value))
        {
            names.insert(name);
        }
        if let Some(inner) = &d.block {
            collect_set_names(inner, names);
        }
    }
}

fn http_block(ctx: &mut Ctx<'_>, block: &[Directive]) -> Result<Servers, ConfigError> {
    let mut scope = Scope::default();
    let mut upstreams = BTreeMap::new();
    let mut servers = Vec::new();
    // `set` variables too may be used anywhere: their names first.
    collect_set_names(block, &mut ctx.set_names);
    // `map` variables may be used before their block (nginx resolves them at the end):
    // their names first, then the blocks, whose values may use each other.
    for d in block
        .iter()
        .filter(|d| d.name == "geo" || d.name == "split_clients")
    {
        let var = d.args.last().map(|a| a.value.as_str()).unwrap_or_default();
        if let Some(name) = super::rewrite::set_name(var)
            && !ctx.map_names.insert(name)
        {
            return Err(ctx.invalid(d, d.at, format!("duplicate \"{var}\" variable")));
        }
    }
    for d in block.iter().filter(|d| d.name == "map") {
        let name = super::map::defined_name(ctx, d)?;
        if !ctx.map_names.insert(name.clone()) {
            return Err(ctx.invalid(
                d,
                d.args[1].at,
                format!("duplicate \"{}\" variable", d.args[1].value),
            ));
        }
    }
    for d in block.iter().filter(|d| d.name == "geo") {
        let (name, map) = super::geo::geo_map(ctx, d)?;
        ctx.maps.insert(name, map);
    }
    for d in block.iter().filter(|d| d.name == "split_clients") {
        let (name, map) = super::split_clients::split_map(ctx, d)?;
        ctx.maps.insert(name, map);
    }
    for d in block.iter().filter(|d| d.name == "map") {
        let name = super::map::defined_name(ctx, d)?;
        if let Some(group) = name.strip_prefix(super::hsm_group::PREFIX) {
            let g = super::hsm_group::group(ctx, d, group)?;
            ctx.hsm_groups.insert(group.to_owned(), g);
            continue;
        }
        let (name, map) = super::map::var_map(ctx, d)?;
        ctx.maps.insert(name, map);
    }
    ctx.limit_zones = super::limits::zones(ctx, block)?;
    for d in block {
        match d.name.as_str() {
            "map" | "geo" | "split_clients" | "limit_req_zone" | "limit_conn_zone" => {}
            "server" => servers.push(d),
            "upstream" => {
                let body = ctx.block(d, 1, 1)?;
                let name = d.args[0].value.clone();
                if upstreams.contains_key(&name) {
                    return Err(ctx.invalid(
                        d,
                        d.args[0].at,
                        format!("duplicate upstream \"{name}\""),
                    ));
                }
                let group = upstream(ctx, d, body)?;
                upstreams.insert(name, group);
            }
            "log_format" => log_format(ctx, d)?,
            "http2" => {
                let on = super::server::flag(ctx, d)?;
                let mut slot = ctx.http2;
                set(ctx, d, &mut slot, on)?;
                ctx.http2 = slot;
            }
            "ssl" => {
                let mut slot = ctx.ssl;
                super::server::ssl_on(ctx, d, &mut slot)?;
                ctx.ssl = slot;
            }
            _ if scope.directive(ctx, d, Level::Http)? => {}
            _ => ctx.other(d)?,
        }
    }
    let mut out = Vec::new();
    let mut listen_pos = Vec::new();
    for d in servers {
        let body = ctx.block(d, 0, 0)?;
        let (server, pos) = build_server(ctx, d, body, &scope, &upstreams)?;
        out.push(server);
        listen_pos.push(pos);
    }
    check_listens(ctx, &mut out, &listen_pos)?;
    Ok((out, upstreams))
}

fn log_format(ctx: &mut Ctx<'_>, d: &Directive) -> Result<(), ConfigError> {
    let args = ctx.args(d, 2, usize::MAX)?;
    let name = args[0].value.clone();
    if ctx.log_formats.contains_key(&name) {
        return Err(ctx.invalid(
            d,
            args[0].at,
            format!("duplicate \"log_format\" name \"{name}\""),
        ));
    }
    let (escape, strings) = match args[1].value.strip_prefix("escape=") {
        Some(e) => {
            let escape = match e {
                "default" => LogEscape::Default,
                "json" => LogEscape::Json,
                "none" => LogEscape::None,
                _ => {
                    return Err(ctx.invalid(
                        d,
                        args[1].at,
                        format!("unknown log format escaping \"{e}\""),
                    ));
                }
            };
            (escape, &args[2..])
        }
        None => (LogEscape::Default, &args[1..]),
    };
    let mut template = Template::default();
    for a in strings {
        template.parts.extend(ctx.template(d, a)?.parts);
    }
    ctx.log_formats.insert(name, LogFormat { escape, template });
    Ok(())
}

fn upstream(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    body: &[Directive],
) -> Result<UpstreamGroup, ConfigError> {
    let mut servers = Vec::new();
    let mut keepalive = None;
    let mut method = None;
    for s in body {
        match s.name.as_str() {
            "server" => {
                let server = upstream_server(ctx, s)?;
                // As nginx: a method that has no backups refuses one after it.
                if server.backup
                    && matches!(
                        method,
                        Some(
                            BalanceMethod::IpHash
                                | BalanceMethod::Hash { .. }
                                | BalanceMethod::Random { .. }
                        )
                    )
                {
                    let at = s
                        .args
                        .iter()
                        .find(|a| a.value == "backup")
                        .map_or(s.at, |a| a.at);
                    return Err(ctx.invalid(
                        s,
                        at,
                        "balancing method does not support parameter \"backup\"",
                    ));
                }
                servers.push(server);
            }
            "keepalive" => {
                let arg = ctx.one(s)?;
                let n = arg.value.parse().ok().filter(|&n| n > 0);
                let n = n.ok_or_else(|| ctx.invalid(s, arg.at, "invalid value"))?;
                set(ctx, s, &mut keepalive, n)?;
            }
            "least_conn" | "ip_hash" | "hash" | "random" => {
                let m = balance_method(ctx, s)?;
                if method.is_some() {
                    return Err(ctx.invalid(s, s.at, "load balancing method redefined"));
                }
                method = Some(m);
            }
            "keepalive_timeout" | "keepalive_time" => {
                let arg = ctx.one(s)?;
                if parse_time(&arg.value).is_none() {
                    return Err(ctx.invalid(s, arg.at, "invalid value"));
                }
                ctx.warn(
                    s.at,
                    format!(
                        "\"{}\" ignored: an idle upstream connection is kept 60 s (nginx's \
                         default keepalive_timeout), and a busy one as long as it serves",
                        s.name
                    ),
                );
            }
            // The group's state is shared by every connection already (one process).
            "zone" => {
                let args = ctx.args(s, 1, 2)?;
                if let Some(size) = args.get(1)
                    && super::values::parse_size(&size.value).is_none()
                {
                    return Err(ctx.invalid(
                        s,
                        size.at,
                        format!("invalid zone size \"{}\"", size.value),
                    ));
                }
            }
            _ => ctx.other(s)?,
        }
    }
    if servers.is_empty() {
        return Err(ctx.invalid(d, d.at, "no servers are inside upstream"));
    }
    Ok(UpstreamGroup {
        servers,
        keepalive,
        method: method.unwrap_or_default(),
        location: ctx.loc(d.at),
    })
}

/// `least_conn`, `ip_hash`, `hash KEY [consistent]`, `random [two [least_conn]]`.
fn balance_method(ctx: &Ctx<'_>, d: &Directive) -> Result<BalanceMethod, ConfigError> {
    Ok(match d.name.as_str() {
        "least_conn" => {
            ctx.args(d, 0, 0)?;
            BalanceMethod::LeastConn
        }
        "ip_hash" => {
            ctx.args(d, 0, 0)?;
            BalanceMethod::IpHash
        }
        "hash" => {
            let args = ctx.args(d, 1, 2)?;
            let consistent = match args.get(1) {
                None => false,
                Some(a) if a.value == "consistent" => true,
                Some(a) => {
                    return Err(ctx.invalid(d, a.at, format!("invalid parameter \"{}\"", a.value)));
                }
            };
            let key = ctx.template(d, &args[0])?;
            BalanceMethod::Hash { key, consistent }
        }
        _ => {
            let args = ctx.args(d, 0, 2)?;
            match args {
                [] => BalanceMethod::Random { two: false },
                [two] | [two, _] if two.value == "two" => {
                    if let Some(m) = args.get(1).filter(|m| m.value != "least_conn") {
                        return Err(ctx.invalid(
                            d,
                            m.at,
                            format!("invalid parameter \"{}\"", m.value),
                        ));
                    }
                    BalanceMethod::Random { two: true }
                }
                [other, ..] => {
                    return Err(ctx.invalid(
                        d,
                        other.at,
                        format!("invalid parameter \"{}\"", other.value),
                    ));
                }
            }
        }
    })
}

fn upstream_server(ctx: &Ctx<'_>, d: &Directive) -> Result<UpstreamServer, ConfigError> {
    let args = ctx.args(d, 1, 6)?;
    let addr = upstream_addr(&args[0].value, 80).map_err(|e| ctx.invalid(d, args[0].at, e))?;
    if crate::unix_socket_path(&addr).is_none() && !super::values::resolves(&addr) {
        let host = args[0].value.clone();
        return Err(ctx.err(args[0].at, ConfigErrorKind::HostNotFound { host }));
    }
    let mut s = UpstreamServer {
        addr,
        weight: 1,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
        down: false,
    };
    for a in &args[1..] {
        let bad = || ctx.invalid(d, a.at, format!("invalid parameter \"{}\"", a.value));
        match a.value.split_once('=') {
            Some(("weight", n)) => {
                s.weight = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0 && n <= 1_000_000)
                    .ok_or_else(bad)?;
            }
            Some(("max_fails", n)) => s.max_fails = n.parse().map_err(|_| bad())?,
            Some(("fail_timeout", t)) => s.fail_timeout = parse_time(t).ok_or_else(bad)?,
            None if a.value == "backup" => s.backup = true,
            None if a.value == "down" => s.down = true,
            _ => return Err(bad()),
        }
    }
    Ok(s)
}
