//! `geo [$ADDRESS] $NAME { … }` (nginx's `ngx_http_geo_module`): a variable whose value is
//! chosen by the client's address (`$remote_addr`, after `set_real_ip_from`; or the
//! address another variable holds): the most specific `CIDR VALUE` that contains it,
//! with `ranges` the `FROM-TO VALUE` that contains it, else `default` (empty when not
//! given). `delete CIDR` removes a network an earlier line added. Values are text. The
//! usual use: `geo $limited { default 1; 10.0.0.0/8 0; }` with a `map` to an empty
//! `limit_req` key, so that trusted networks are not limited. `proxy` and
//! `proxy_recursive` are refused: `set_real_ip_from` does that job.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::build::Ctx;
use super::map::VarMap;
use super::parse::Directive;
use super::template::{Template, TemplatePart};
use crate::error::ConfigError;

/// The networks and ranges of a `geo` block, indexed for lookups that do not scan the
/// table (a GeoIP list has hundreds of thousands of lines): a hash lookup per prefix
/// length in use, longest first, and a binary search of the ranges.
#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    /// Networks, the longest prefix first.
    nets: Vec<(IpNet, Template)>,
    /// Where each network is in `nets`.
    net_at: HashMap<IpNet, usize>,
    /// The prefix lengths in use, longest first: IPv4's, IPv6's.
    lens: [Vec<u8>; 2],
    /// `ranges` lines, by their start (they do not overlap).
    ranges: Vec<(IpAddr, IpAddr, Template)>,
}

impl GeoTable {
    /// The table of `nets` and `ranges` (which must not overlap).
    fn new(mut nets: Vec<(IpNet, Template)>, mut ranges: Vec<(IpAddr, IpAddr, Template)>) -> Self {
        nets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let net_at = (nets.iter().enumerate())
            .map(|(i, (n, _))| (*n, i))
            .collect();
        let mut lens: [Vec<u8>; 2] = Default::default();
        for (n, _) in &nets {
            let family = &mut lens[usize::from(matches!(n, IpNet::V6(_)))];
            if family.last() != Some(&n.prefix_len()) {
                family.push(n.prefix_len());
            }
        }
        ranges.sort_by_key(|(from, ..)| *from);
        GeoTable {
            nets,
            net_at,
            lens,
            ranges,
        }
    }

    /// The value for `address` (a text address, IPv4-mapped IPv6 read as IPv4), if a
    /// network or range holds it: the most specific network, else the range.
    pub fn lookup(&self, address: &str) -> Option<&Template> {
        let ip = address.trim().parse::<IpAddr>().ok()?.to_canonical();
        for &len in &self.lens[usize::from(ip.is_ipv6())] {
            let net = IpNet::new(ip, len).ok()?.trunc();
            if let Some(&i) = self.net_at.get(&net) {
                return Some(&self.nets[i].1);
            }
        }
        let after = self.ranges.partition_point(|(from, ..)| *from <= ip);
        let (from, to, t) = self.ranges.get(after.checked_sub(1)?)?;
        (from.is_ipv4() == ip.is_ipv4() && ip <= *to).then_some(t)
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
    let mut nets: Vec<(IpNet, Template)> = Vec::new();
    let mut range_list: Vec<(IpAddr, IpAddr, Template)> = Vec::new();
    let mut default = Template::default();
    let mut ranges = false;
    // Where each network is in `table.nets`, and the ranges by their start: lookups
    // while reading (a GeoIP list has hundreds of thousands of lines), not scans.
    let mut net_at: HashMap<IpNet, usize> = Default::default();
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
                    nets.retain(|(n, _)| *n != net);
                    net_at = (nets.iter().enumerate())
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
                range_list.push((from, to, literal(&v.value)));
            }
            (_, [v]) => {
                let net = parse_net(key)
                    .ok_or_else(|| ctx.invalid(e, e.at, format!("invalid network \"{key}\"")))?;
                match net_at.get(&net) {
                    Some(&i) => nets[i].1 = literal(&v.value),
                    None => {
                        net_at.insert(net, nets.len());
                        nets.push((net, literal(&v.value)));
                    }
                }
            }
            _ => return Err(ctx.arguments(e, "invalid number of the geo parameters")),
        }
    }
    let table = GeoTable::new(nets, range_list);
    let map = VarMap {
        source,
        exact: Default::default(),
        wildcards: Default::default(),
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
