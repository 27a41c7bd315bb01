//! nginx's `limit_req_zone`, `limit_conn_zone` (in `http`) and the `limit_req`,
//! `limit_conn` and `_status`, `_dry_run`, `_log_level` directives that use them (in
//! `http`, `server`, `location`), read as nginx 1.22 reads them.

use std::collections::BTreeMap;

use super::build::Ctx;
use super::parse::Directive;
use super::template::Template;
use super::values::{parse_number, parse_size};
use crate::error::ConfigError;
use crate::model::Location;

/// nginx's smallest zone: 8 pages.
const MIN_ZONE: u64 = 8 * 4096;

/// `limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReqZone {
    /// The key a request is counted under (empty: not limited).
    pub key: Template,
    /// The zone's size in bytes (bounds how many keys it holds).
    pub size: u64,
    /// The rate in thousandths of a request per second (`2r/s`: 2000; `30r/m`: 500).
    pub rate_milli: u64,
    /// Where it was defined.
    pub location: Location,
}

/// `limit_conn_zone KEY zone=NAME:SIZE`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConnZone {
    /// The key a request is counted under (empty: not limited).
    pub key: Template,
    /// The zone's size in bytes (bounds how many keys it holds).
    pub size: u64,
    /// Where it was defined.
    pub location: Location,
}

/// The zones of an `http` block, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitZones {
    /// `limit_req_zone`s.
    pub req: BTreeMap<String, LimitReqZone>,
    /// `limit_conn_zone`s.
    pub conn: BTreeMap<String, LimitConnZone>,
}

/// One `limit_req zone=NAME [burst=N] [nodelay|delay=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReq {
    /// The `limit_req_zone`.
    pub zone: String,
    /// Requests beyond the rate that wait (or pass at once, up to `delay`); more are
    /// refused.
    pub burst: u64,
    /// Excess requests passed without delay (`nodelay`: all of the burst; default 0).
    pub delay: u64,
}

/// One `limit_conn NAME N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConn {
    /// The `limit_conn_zone`.
    pub zone: String,
    /// Requests of one key in progress at once.
    pub max: u32,
}

/// `limit_req_log_level` / `limit_conn_log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitLogLevel {
    /// `info`.
    Info,
    /// `notice`.
    Notice,
    /// `warn`.
    Warn,
    /// `error` (the default).
    #[default]
    Error,
}

/// A level's limits, merged as nginx merges them: the `limit_req`s and the
/// `limit_conn`s are arrays (a level with its own inherits none), the rest each on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `limit_req`s.
    pub req: Vec<LimitReq>,
    /// `limit_req_status` (default 503).
    pub req_status: u16,
    /// `limit_req_dry_run` (default off): counted and logged, not refused or delayed.
    pub req_dry_run: bool,
    /// `limit_req_log_level` (refusals; delays one level lower).
    pub req_log_level: LimitLogLevel,
    /// `limit_conn`s.
    pub conn: Vec<LimitConn>,
    /// `limit_conn_status` (default 503).
    pub conn_status: u16,
    /// `limit_conn_dry_run`.
    pub conn_dry_run: bool,
    /// `limit_conn_log_level`.
    pub conn_log_level: LimitLogLevel,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            req: Vec::new(),
            req_status: 503,
            req_dry_run: false,
            req_log_level: LimitLogLevel::Error,
            conn: Vec::new(),
            conn_status: 503,
            conn_dry_run: false,
            conn_log_level: LimitLogLevel::Error,
        }
    }
}

/// What one level writes; [`LimitsScope::inherit`] fills the rest from the outer one.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitsScope {
    req: Option<Vec<LimitReq>>,
    req_status: Option<u16>,
    req_dry_run: Option<bool>,
    req_log_level: Option<LimitLogLevel>,
    conn: Option<Vec<LimitConn>>,
    conn_status: Option<u16>,
    conn_dry_run: Option<bool>,
    conn_log_level: Option<LimitLogLevel>,
}

impl LimitsScope {
    /// Reads `d` if it is one of the limit directives of a level (`false`: it is not).
    pub(crate) fn directive(&mut self, ctx: &Ctx<'_>, d: &Directive) -> Result<bool, ConfigError> {
        match d.name.as_str() {
            "limit_req" => {
                let r = limit_req(ctx, d)?;
                let list = self.req.get_or_insert_with(Vec::new);
                if list.iter().any(|l| l.zone == r.zone) {
                    return Err(ctx.duplicate(d));
                }
                list.push(r);
            }
            "limit_conn" => {
                let args = ctx.args(d, 2, 2)?;
                let zone = args[0].value.clone();
                if !ctx.limit_zones.conn.contains_key(&zone) {
                    return Err(ctx.invalid(d, args[0].at, unknown_zone("limit_conn", &zone)));
                }
                let max = parse_number(&args[1].value)
                    .filter(|&n| n > 0 && n <= 65535)
                    .ok_or_else(|| {
                        let v = &args[1].value;
                        ctx.invalid(
                            d,
                            args[1].at,
                            format!("invalid number of connections \"{v}\""),
                        )
                    })?;
                let list = self.conn.get_or_insert_with(Vec::new);
                if list.iter().any(|l| l.zone == zone) {
                    return Err(ctx.duplicate(d));
                }
                list.push(LimitConn { zone, max });
            }
            "limit_req_status" | "limit_conn_status" => {
                let arg = ctx.one(d)?;
                let code = parse_number(&arg.value)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| (400..=599).contains(n))
                    .ok_or_else(|| ctx.invalid(d, arg.at, "value must be between 400 and 599"))?;
                let slot = match d.name.as_str() {
                    "limit_req_status" => &mut self.req_status,
                    _ => &mut self.conn_status,
                };
                super::scope::set(ctx, d, slot, code)?;
            }
            "limit_req_dry_run" | "limit_conn_dry_run" => {
                let on = super::server::flag(ctx, d)?;
                let slot = match d.name.as_str() {
                    "limit_req_dry_run" => &mut self.req_dry_run,
                    _ => &mut self.conn_dry_run,
                };
                super::scope::set(ctx, d, slot, on)?;
            }
            "limit_req_log_level" | "limit_conn_log_level" => {
                let arg = ctx.one(d)?;
                let level = match arg.value.as_str() {
                    "info" => LimitLogLevel::Info,
                    "notice" => LimitLogLevel::Notice,
                    "warn" => LimitLogLevel::Warn,
                    "error" => LimitLogLevel::Error,
                    v => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            format!(
                                "invalid value \"{v}\", it must be \"info\", \"notice\", \"warn\" or \"error\""
                            ),
                        ));
                    }
                };
                let slot = match d.name.as_str() {
                    "limit_req_log_level" => &mut self.req_log_level,
                    _ => &mut self.conn_log_level,
                };
                super::scope::set(ctx, d, slot, level)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Takes what this level did not write from `outer`.
    pub(crate) fn inherit(&mut self, outer: &LimitsScope) {
        if self.req.is_none() {
            self.req = outer.req.clone();
        }
        if self.conn.is_none() {
            self.conn = outer.conn.clone();
        }
        self.req_status = self.req_status.or(outer.req_status);
        self.req_dry_run = self.req_dry_run.or(outer.req_dry_run);
        self.req_log_level = self.req_log_level.or(outer.req_log_level);
        self.conn_status = self.conn_status.or(outer.conn_status);
        self.conn_dry_run = self.conn_dry_run.or(outer.conn_dry_run);
        self.conn_log_level = self.conn_log_level.or(outer.conn_log_level);
    }

    /// The merged limits, defaults where no level wrote one.
    pub(crate) fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            req: self.req.clone().unwrap_or_default(),
            req_status: self.req_status.unwrap_or(d.req_status),
            req_dry_run: self.req_dry_run.unwrap_or(d.req_dry_run),
            req_log_level: self.req_log_level.unwrap_or(d.req_log_level),
            conn: self.conn.clone().unwrap_or_default(),
            conn_status: self.conn_status.unwrap_or(d.conn_status),
            conn_dry_run: self.conn_dry_run.unwrap_or(d.conn_dry_run),
            conn_log_level: self.conn_log_level.unwrap_or(d.conn_log_level),
        }
    }
}

fn unknown_zone(directive: &str, zone: &str) -> String {
    format!("no \"{directive}_zone\" named \"{zone}\" is defined in the \"http\" block")
}

/// `limit_req zone=NAME [burst=N] [nodelay|delay=N]`.
fn limit_req(ctx: &Ctx<'_>, d: &Directive) -> Result<LimitReq, ConfigError> {
    let args = ctx.args(d, 1, 3)?;
    let (mut zone, mut burst, mut delay, mut nodelay) = (None, 0, 0, false);
    for a in args {
        let v = a.value.as_str();
        let number = |n: &str, what: &str| {
            parse_number(n)
                .map(u64::from)
                .ok_or_else(|| ctx.invalid(d, a.at, format!("invalid {what} value \"{v}\"")))
        };
        if let Some(name) = v.strip_prefix("zone=") {
            if !ctx.limit_zones.req.contains_key(name) {
                return Err(ctx.invalid(d, a.at, unknown_zone("limit_req", name)));
            }
            zone = Some(name.to_owned());
        } else if let Some(n) = v.strip_prefix("burst=") {
            burst = number(n, "burst")?;
        } else if let Some(n) = v.strip_prefix("delay=") {
            delay = number(n, "delay")?;
        } else if v == "nodelay" {
            nodelay = true;
        } else {
            return Err(ctx.invalid(d, a.at, format!("invalid parameter \"{v}\"")));
        }
    }
    let Some(zone) = zone else {
        return Err(ctx.invalid(d, d.at, "\"zone\" parameter is required"));
    };
    Ok(LimitReq {
        zone,
        burst,
        delay: if nodelay { u64::MAX } else { delay },
    })
}

/// The `limit_req_zone`s and `limit_conn_zone`s of an `http` block (read before any
/// `limit_req` or `limit_conn`, which may come first).
pub(crate) fn zones(ctx: &Ctx<'_>, block: &[Directive]) -> Result<LimitZones, ConfigError> {
    let mut zones = LimitZones::default();
    for d in block {
        let req = match d.name.as_str() {
            "limit_req_zone" => true,
            "limit_conn_zone" => false,
            _ => continue,
        };
        // nginx 1.22 wants the rate of a `limit_req_zone` (`sync` is NGINX Plus').
        let args = if req {
            ctx.args(d, 3, 3)?
        } else {
            ctx.args(d, 2, 2)?
        };
        let key = ctx.template(d, &args[0])?;
        if key.parts.is_empty() {
            return Err(ctx.invalid(d, args[0].at, "an empty key"));
        }
        let (mut zone, mut rate) = (None, None);
        for a in &args[1..] {
            let v = a.value.as_str();
            if let Some(z) = v.strip_prefix("zone=") {
                let invalid = || ctx.invalid(d, a.at, format!("invalid zone size \"{v}\""));
                let (name, size) = z.split_once(':').ok_or_else(invalid)?;
                let size = parse_size(size).ok_or_else(invalid)?;
                if name.is_empty() {
                    return Err(invalid());
                }
                if size < MIN_ZONE {
                    return Err(ctx.invalid(d, a.at, format!("zone \"{name}\" is too small")));
                }
                zone = Some((name.to_owned(), size));
            } else if let Some(r) = v.strip_prefix("rate=").filter(|_| req) {
                let invalid = || ctx.invalid(d, a.at, format!("invalid rate \"{v}\""));
                let (n, per_minute) = match (r.strip_suffix("r/s"), r.strip_suffix("r/m")) {
                    (Some(n), _) => (n, false),
                    (None, Some(n)) => (n, true),
                    _ => return Err(invalid()),
                };
                let n = parse_number(n).filter(|&n| n > 0).ok_or_else(invalid)?;
                let milli = u64::from(n) * 1000;
                rate = Some(if per_minute { milli / 60 } else { milli }.max(1));
            } else {
                return Err(ctx.invalid(d, a.at, format!("invalid parameter \"{v}\"")));
            }
        }
        let Some((name, size)) = zone else {
            return Err(ctx.invalid(
                d,
                d.at,
                format!("\"{}\" must have \"zone\" parameter", d.name),
            ));
        };
        let location = ctx.loc(d.at);
        let taken = zones.req.contains_key(&name) || zones.conn.contains_key(&name);
        if taken {
            return Err(ctx.invalid(d, args[1].at, format!("duplicate zone \"{name}\"")));
        }
        if req {
            let Some(rate_milli) = rate else {
                return Err(ctx.invalid(
                    d,
                    d.at,
                    "\"limit_req_zone\" must have \"rate\" parameter",
                ));
            };
            let zone = LimitReqZone {
                key,
                size,
                rate_milli,
                location,
            };
            zones.req.insert(name, zone);
        } else {
            zones.conn.insert(
                name,
                LimitConnZone {
                    key,
                    size,
                    location,
                },
            );
        }
    }
    Ok(zones)
}
