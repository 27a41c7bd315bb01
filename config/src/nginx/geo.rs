//! `geo [$ADDRESS] $NAME { … }` (nginx's `ngx_http_geo_module`): a variable whose value is
//! chosen by the client's address (`$remote_addr`, after `set_real_ip_from`; or the
//! address another variable holds): the most specific `CIDR VALUE` that contains it,
//! with `ranges` the `FROM-TO VALUE` that contains it, else `default` (empty when not
//! given). `delete CIDR` removes a network an earlier line added. Values are text. The
//! usual use: `geo $limited { default 1; 10.0.0.0/8 0; }` with a `map` to an empty
//! `limit_req` key, so that trusted networks are not limited. `proxy` and
//! `proxy_recursive` are refused: `set_real_ip_from` does that job.

use std::net::IpAddr;

use ipnet::IpNet;

use super::build::Ctx;
use super::map::VarMap;
use super::parse::Directive;
use super::template::{Template, TemplatePart};
use crate::error::ConfigError;

/// The networks and ranges of a `geo` block.
#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    /// Networks, the longest prefix first.
    pub nets: Vec<(IpNet, Template)>,
    /// `ranges` lines, in file order.
    pub ranges: Vec<(IpAddr, IpAddr, Template)>,
}

impl GeoTable {
    /// The value for `address` (a text address, IPv4-mapped IPv6 read as IPv4), if a
    /// network or range holds it.
    pub fn lookup(&self, address: &str) -> Option<&Template> {
        let ip = address.trim().parse::<IpAddr>().ok()?.to_canonical();
        if let Some((_, t)) = self.nets.iter().find(|(n, _)| n.contains(&ip)) {
            return Some(t);
        }
        (self.ranges.iter())
            .find(|(from, to, _)| from.is_ipv4() == ip.is_ipv4() && *from <= ip && ip <= *to)
            .map(|(_, _, t)| t)
    }
}

/// A `geo` block into the [`VarMap`] that looks it up.
pub(crate) fn geo_map(ctx: &mut Ctx<'_>, d: &Directive) -> Result<(String, VarMap), ConfigError> {
    let body = ctx.block(d, 1, 2)?;
    let (source, var) = match d.args.as_slice() {
        [var] => (
            Template {
                parts: vec![TemplatePart::Var("remote_addr".into())],
            },
            var,
        ),
        [address, var] => (ctx.template(d, address)?, var),
        _ => unreachable!("one or two arguments"),
    };
    let name = super::map::variable_name(ctx, d, var)?;
    let literal = |s: &str| Template {
        parts: vec![TemplatePart::Literal(s.to_owned())],
    };
    let mut table = GeoTable::default();
    let mut default = Template::default();
    let mut ranges = false;
    // Where each network is in `table.nets`, and the ranges by their start: lookups
    // while reading (a GeoIP list has hundreds of thousands of lines), not scans.
    let mut net_at: std::collections::HashMap<IpNet, usize> = Default::default();
    let mut range_ends: std::collections::BTreeMap<IpAddr, IpAddr> = Default::default();
    for e in body {
        if e.block.is_some() {
            return Err(ctx.arguments(e, "unexpected \"{\""));
        }
        let key = e.name.as_str();
        match (key, e.args.as_slice()) {
            ("ranges", []) => ranges = true,
            ("proxy" | "proxy_recursive", _) => {
                return Err(ctx.invalid(
                    e,
                    e.at,
                    "\"proxy\" in a geo block is not supported: set_real_ip_from and \
                     real_ip_header make $remote_addr the client's address",
                ));
            }
            ("default", [v]) => default = literal(&v.value),
            ("delete", [net]) => {
                let net = parse_net(&net.value).ok_or_else(|| {
                    ctx.invalid(e, net.at, format!("invalid network \"{}\"", net.value))
                })?;
                if net_at.remove(&net).is_some() {
                    table.nets.retain(|(n, _)| *n != net);
                    net_at = (table.nets.iter().enumerate())
                        .map(|(i, (n, _))| (*n, i))
                        .collect();
                }
            }
            (_, [v]) if ranges => {
                let (from, to) = key
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse::<IpAddr>().ok()?, b.parse::<IpAddr>().ok()?)))
                    .filter(|(a, b)| a.is_ipv4() == b.is_ipv4() && a <= b)
                    .ok_or_else(|| ctx.invalid(e, e.at, format!("invalid range \"{key}\"")))?;
                // The ranges kept do not overlap: only the last one starting at or
                // before `to` can overlap this one.
                let overlap = (range_ends.range(..=to).next_back())
                    .filter(|(_, b)| from <= **b)
                    .map(|(a, b)| (*a, *b));
                if let Some((a, b)) = overlap {
                    return Err(ctx.invalid(
                        e,
                        e.at,
                        format!("range \"{key}\" overlaps \"{a}-{b}\""),
                    ));
                }
                range_ends.insert(from, to);
                table.ranges.push((from, to, literal(&v.value)));
            }
            (_, [v]) => {
                let net = parse_net(key)
                    .ok_or_else(|| ctx.invalid(e, e.at, format!("invalid network \"{key}\"")))?;
                match net_at.get(&net) {
                    Some(&i) => table.nets[i].1 = literal(&v.value),
                    None => {
                        net_at.insert(net, table.nets.len());
                        table.nets.push((net, literal(&v.value)));
                    }
                }
            }
            _ => return Err(ctx.arguments(e, "invalid number of the geo parameters")),
        }
    }
    // The most specific network first.
    table
        .nets
        .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    let map = VarMap {
        source,
        exact: Default::default(),
        wildcards: Vec::new(),
        regexes: Vec::new(),
        default,
        geo: Some(table),
        split: None,
        location: ctx.loc(d.at),
    };
    Ok((name, map))
}

/// `CIDR` or a single address, its host bits cleared (nginx warns and clears them).
fn parse_net(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n.trunc(),
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?
            }
            _ => IpNet::V6(v6),
        },
        v4 => v4,
    })
}
