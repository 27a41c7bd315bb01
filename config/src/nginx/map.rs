//! `map SOURCE $NAME { … }` (nginx's `ngx_http_map_module`): a variable whose value is
//! chosen by matching another string. As nginx: exact keys match ignoring case, then
//! (with `hostnames`) wildcard names (`*.example.com`, `.example.com`, `www.example.*`,
//! the longest first), then `~regex` / `~*regex` keys in order, then `default` (empty when
//! not given). Values may hold variables, including other maps'. `volatile` is accepted
//! (hsmgate caches no map value). A value may use its `~regex` key's captures, `$1`…
//! and named groups.
//!
//! The usual use is WebSocket proxying:
//! `map $http_upgrade $connection_upgrade { default upgrade; '' close; }`.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};

use super::build::Ctx;
use super::ngx_regex::{Captures, captures_of};
use super::parse::Directive;
use super::template::{Template, TemplatePart};
use crate::error::ConfigError;
use crate::model::Location;

/// One `map` block.
#[derive(Debug, Clone)]
pub struct VarMap {
    /// What is matched (`$http_upgrade`).
    pub source: Template,
    /// Exact keys, lower-cased.
    pub exact: HashMap<String, Template>,
    /// `hostnames` wildcard keys.
    pub wildcards: Wildcards,
    /// `~` / `~*` keys, in file order.
    pub regexes: Vec<(Regex, Template)>,
    /// `default` (empty when not given).
    pub default: Template,
    /// A `geo` block's networks: the value is chosen by address instead.
    pub geo: Option<super::GeoTable>,
    /// A `split_clients` block's shares: the value is chosen by the source's hash.
    pub split: Option<super::SplitTable>,
    /// The block.
    pub location: Location,
}

/// A `hostnames` wildcard key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapKey {
    /// `*.example.com` (subdomains) or `.example.com` (the name and its subdomains),
    /// stored as `.example.com`; `bare` when the name itself matches too.
    Suffix {
        /// `.example.com`, lower case.
        suffix: String,
        /// `.example.com` form: `example.com` itself matches.
        bare: bool,
    },
    /// `www.example.*`, stored as `www.example.`.
    Prefix(String),
}

/// A map's `hostnames` wildcard keys, by their fixed part: a lookup tries each of the
/// value's suffixes and prefixes at a dot (a few hash lookups), not every key.
#[derive(Debug, Clone, Default)]
pub struct Wildcards {
    /// `*.example.com` by `.example.com`.
    star: HashMap<String, Template>,
    /// `.example.com` by `example.com` (it matches that name too).
    dotted: HashMap<String, Template>,
    /// `www.example.*` by `www.example.`.
    prefixes: HashMap<String, Template>,
}

impl Wildcards {
    /// Adds `key`; false if the same key was there already.
    fn insert(&mut self, key: MapKey, value: Template) -> bool {
        let (map, fixed) = match key {
            MapKey::Suffix {
                suffix,
                bare: false,
            } => (&mut self.star, suffix),
            MapKey::Suffix { suffix, bare: true } => (&mut self.dotted, suffix[1..].to_owned()),
            MapKey::Prefix(prefix) => (&mut self.prefixes, prefix),
        };
        match map.entry(fixed) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(value);
                true
            }
        }
    }

    /// The value for `name` (lower case), as nginx: the longest suffix wildcard that
    /// matches (`.example.com` matches `example.com` itself too), else the longest
    /// prefix wildcard.
    pub fn lookup(&self, name: &str) -> Option<&Template> {
        if let Some(t) = self.dotted.get(name) {
            return Some(t);
        }
        if !self.star.is_empty() || !self.dotted.is_empty() {
            for (i, _) in name.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(t) =
                    (self.star.get(&name[i..])).or_else(|| self.dotted.get(&name[i + 1..]))
                {
                    return Some(t);
                }
            }
        }
        if !self.prefixes.is_empty() {
            let dots = name.rmatch_indices('.').filter(|(i, _)| i + 1 < name.len());
            for (i, _) in dots {
                if let Some(t) = self.prefixes.get(&name[..=i]) {
                    return Some(t);
                }
            }
        }
        None
    }
}

impl VarMap {
    /// The value template for a source value.
    pub fn lookup(&self, value: &str) -> &Template {
        self.choose(value).0
    }

    /// [`lookup`](Self::lookup), with the captures of the `~regex` key that chose the
    /// value when the value may use them (`~^/old/(.*)$ /new/$1;`, a named group).
    pub fn lookup_capturing(&self, value: &str) -> (&Template, Option<Captures>) {
        let (t, regex) = self.choose(value);
        let uses = |r: &Regex| {
            r.capture_names().flatten().next().is_some()
                || t.parts.iter().any(|p| {
                    matches!(p, TemplatePart::Var(v) if super::rewrite::capture_index(v).is_some())
                })
        };
        match regex {
            Some(r) if uses(r) => (t, captures_of(r, value)),
            _ => (t, None),
        }
    }

    /// The value template for a source value, and the `~regex` key that chose it, if
    /// one did.
    fn choose(&self, value: &str) -> (&Template, Option<&Regex>) {
        if let Some(geo) = &self.geo {
            return (geo.lookup(value).unwrap_or(&self.default), None);
        }
        if let Some(split) = &self.split {
            return (split.lookup(value).unwrap_or(&self.default), None);
        }
        let lower = value.to_ascii_lowercase();
        if let Some(t) = (self.exact.get(&lower)).or_else(|| self.wildcards.lookup(&lower)) {
            return (t, None);
        }
        match self.regexes.iter().find(|(r, _)| r.is_match(value)) {
            Some((r, t)) => (t, Some(r)),
            None => (&self.default, None),
        }
    }
}

/// The variable a `map` directive defines (lower case, without `$`), checked.
pub(crate) fn defined_name(ctx: &Ctx<'_>, d: &Directive) -> Result<String, ConfigError> {
    ctx.block(d, 2, 2)?;
    variable_name(ctx, d, &d.args[1])
}

/// The variable `arg` of `d` names (`$name`: lower case, without `$`), or nginx's
/// "invalid variable name" at it (`map`, `geo`, `split_clients`).
pub(crate) fn variable_name(
    ctx: &Ctx<'_>,
    d: &Directive,
    arg: &super::parse::Arg,
) -> Result<String, ConfigError> {
    match arg.value.strip_prefix('$') {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(n.to_ascii_lowercase())
        }
        _ => Err(ctx.invalid(
            d,
            arg.at,
            format!("invalid variable name \"{}\"", arg.value),
        )),
    }
}

/// A `map` block into its [`VarMap`].
pub(crate) fn var_map(ctx: &mut Ctx<'_>, d: &Directive) -> Result<(String, VarMap), ConfigError> {
    let name = defined_name(ctx, d)?;
    let body = ctx.block(d, 2, 2)?;
    let source = ctx.template(d, &d.args[0])?;
    let mut map = VarMap {
        source,
        exact: HashMap::new(),
        wildcards: Wildcards::default(),
        regexes: Vec::new(),
        default: Template::default(),
        geo: None,
        split: None,
        location: ctx.loc(d.at),
    };
    let mut hostnames = false;
    let mut default_seen = false;
    for e in body {
        if e.block.is_some() {
            return Err(ctx.arguments(e, "unexpected \"{\""));
        }
        // In a map block the "directive name" is the key.
        let key = e.name.as_str();
        match (key, e.args.len()) {
            ("hostnames", 0) => {
                hostnames = true;
                continue;
            }
            ("volatile", 0) => continue,
            (_, 1) => {}
            _ => return Err(ctx.arguments(e, "invalid number of the map parameters")),
        }
        let value = ctx.template(e, &e.args[0])?;
        if key == "default" {
            if default_seen {
                return Err(ctx.invalid(e, e.at, "duplicate default map parameter"));
            }
            default_seen = true;
            map.default = value;
        } else if let Some(pattern) = key.strip_prefix('~') {
            let (pattern, ci) = match pattern.strip_prefix('*') {
                Some(p) => (p, true),
                None => (pattern, false),
            };
            let regex = RegexBuilder::new(pattern)
                .case_insensitive(ci)
                .build()
                .map_err(|err| {
                    ctx.invalid(e, e.at, format!("invalid regex \"{pattern}\": {err}"))
                })?;
            map.regexes.push((regex, value));
        } else {
            let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
            let wildcard = match hostnames {
                true if key.starts_with("*.") => Some(MapKey::Suffix {
                    suffix: key[1..].to_owned(),
                    bare: false,
                }),
                true if key.starts_with('.') && key.len() > 1 => Some(MapKey::Suffix {
                    suffix: key.clone(),
                    bare: true,
                }),
                true if key.ends_with(".*") => {
                    Some(MapKey::Prefix(key[..key.len() - 1].to_owned()))
                }
                _ => None,
            };
            let duplicate = match wildcard {
                Some(w) => !map.wildcards.insert(w, value),
                None => map.exact.insert(key.clone(), value).is_some(),
            };
            if duplicate {
                return Err(ctx.invalid(e, e.at, format!("conflicting parameter \"{key}\"")));
            }
        }
    }
    Ok((name, map))
}

#[cfg(test)]
mod tests {
    use crate::nginx::TemplatePart;
    use crate::nginx::tests::{FILE, http, load_str};

    fn load(body: &str) -> Result<crate::nginx::NginxConfig, String> {
        load_str(&http(body)).map_err(|e| e.to_string())
    }

    fn var(t: &crate::nginx::Template) -> String {
        t.as_literal().unwrap_or_else(|| match &t.parts[..] {
            [TemplatePart::Var(v)] => format!("${v}"),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn the_websocket_map_and_its_use_before_the_block() {
        let c = load(
            "proxy_set_header Connection $connection_upgrade;\n\
             map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        )
        .unwrap();
        let m = &c.maps["connection_upgrade"];
        assert_eq!(var(&m.source), "$http_upgrade");
        assert_eq!(var(m.lookup("websocket")), "upgrade");
        assert_eq!(var(m.lookup("")), "close");
    }

    #[test]
    fn exact_ignores_case_then_wildcards_then_regexes_then_default() {
        let c = load(
            "map $http_host $tenant {\n hostnames;\n default none;\n Example.COM exact;\n\
             *.example.com sub;\n .shop.test shop;\n www.example.* pre;\n ~^api\\d+\\. re;\n\
             ~*^ADMIN\\. ci;\n}\n map $tenant $pool { default $tenant; none idle; }",
        )
        .unwrap();
        let m = &c.maps["tenant"];
        for (host, want) in [
            ("example.com", "exact"),
            ("EXAMPLE.com", "exact"),
            ("a.example.com", "sub"),
            ("shop.test", "shop"),
            ("x.shop.test", "shop"),
            ("www.example.org", "pre"),
            ("api7.other", "re"),
            ("Api7.other", "none"),
            ("admin.other", "ci"),
            ("elsewhere", "none"),
        ] {
            assert_eq!(var(m.lookup(host)), want, "{host}");
        }
        assert_eq!(var(c.maps["pool"].lookup("x")), "$tenant");
        // As nginx: a suffix wildcard before any prefix one; the longest of each first.
        let c = load(
            "map $http_host $w {\n hostnames;\n default none;\n *.example.org suf;\n\
             www.example.* pre;\n www.* short;\n *.b.example.org deep;\n .example.net dot;\n}",
        )
        .unwrap();
        for (host, want) in [
            ("www.example.org", "suf"),
            ("a.b.example.org", "deep"),
            ("b.example.org", "suf"),
            ("www.example.com", "pre"),
            ("www.other.com", "short"),
            ("example.net", "dot"),
            ("x.y.example.net", "dot"),
            ("example.org", "none"),
            ("www.", "none"),
        ] {
            assert_eq!(var(c.maps["w"].lookup(host)), want, "{host}");
        }
    }

    #[test]
    fn bad_maps_name_file_and_line() {
        for (http, want) in [
            ("map $host b { }", "invalid variable name \"b\""),
            (
                "map $host $b { x; }",
                "invalid number of the map parameters",
            ),
            (
                "map $host $b { default 1; default 2; }",
                "duplicate default",
            ),
            ("map $host $b { x 1; X 2; }", "conflicting parameter \"x\""),
            ("map $host $b { ~( 1; }", "invalid regex"),
            (
                "map $host $b { }\nmap $uri $b { }",
                "duplicate \"$b\" variable",
            ),
            ("map $nope $b { }", "unknown \"nope\" variable"),
            ("map $host $b;", "no opening"),
        ] {
            let e = load(http).expect_err(http);
            assert!(
                e.contains(want) && e.contains(&format!("{FILE}:")),
                "{http}: {e}"
            );
        }
    }
}
