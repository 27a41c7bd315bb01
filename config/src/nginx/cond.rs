//! `if (CONDITION) { return …; }` at server level: the form certbot writes in the
//! port-80 server it manages (`if ($host = example.com) { return 301
//! https://$host$request_uri; }`), and the usual `if ($scheme != "https")` or
//! `if ($request_method !~ ^(GET|HEAD)$)` guards; and [`LocationIf`], the block of an
//! `if` in a location (built by the location reader: `rewrite`, `return`, `proxy_pass`
//! and settings inside).
//!
//! Conditions as nginx's rewrite module reads them: `($var)` (true when not empty
//! and not `0`), `($var = value)`, `($var != value)` (exact, case-sensitive;
//! `value` may hold variables), `($var ~ re)`, `~*`, `!~`, `!~*`. File tests
//! (`-f`, `-d`, `-e`, `-x`) are refused: hsmgate serves no files. Inside a server's
//! block only `return` is accepted; an `if` inside an `if` is refused.

use super::build::Ctx;
use super::location::parse_return;
use super::model::{ProxyPass, ProxySettings, Return};
use super::parse::{Arg, Directive};
use super::template::{Template, TemplateError, TemplatePart};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::model::Location;

/// A server-level `if` whose block is a `return`.
#[derive(Debug, Clone)]
pub struct ServerIf {
    /// What is tested.
    pub condition: Condition,
    /// The block's `set`s and `rewrite`s written before its `return`, run in order when
    /// it holds.
    pub steps: Vec<super::rewrite::ServerStep>,
    /// Answered when it holds (after the steps), if the block has one.
    pub ret: Option<Return>,
    /// Where the `if` is.
    pub location: Location,
}

/// `if (…) { … }` in a location: when the condition holds, the block's settings (its
/// own, merged with the location's) serve the request, and its `rewrite`s and `return`
/// run before the location's next directives.
#[derive(Debug, Clone)]
pub struct LocationIf {
    /// What is tested.
    pub condition: Condition,
    /// The block's `rewrite`s and `set`s written before its `return`.
    pub steps: Vec<super::rewrite::LocationStep>,
    /// The block's `return`.
    pub ret: Option<Return>,
    /// The block's `proxy_pass`, else the location's.
    pub pass: Option<ProxyPass>,
    /// The block's settings, merged with the location's (`add_header` and the other
    /// arrays: a block with its own inherits none).
    pub settings: ProxySettings,
    /// Where the `if` is.
    pub location: Location,
}

/// An `if` condition; `var` is a variable name without `$`.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `($var)`: not empty and not `0`.
    Set(String),
    /// `($var = value)` or, with `negate`, `!=`.
    Equals {
        /// The variable tested.
        var: String,
        /// The value compared with (variables expanded per request).
        value: Template,
        /// `!=`.
        negate: bool,
    },
    /// `($var ~ re)`, `~*` (case-insensitive), `!~`, `!~*`.
    Matches {
        /// The variable tested.
        var: String,
        /// Compiled (with `(?i)` for `~*`; PCRE's look-around too).
        regex: super::ngx_regex::NgxRegex,
        /// `!~`, `!~*`.
        negate: bool,
    },
}

impl Condition {
    /// Whether the condition holds; `get` gives a variable's value and `expand` a
    /// template's.
    pub fn holds(
        &self,
        get: &dyn Fn(&str) -> String,
        expand: &dyn Fn(&Template) -> String,
    ) -> bool {
        match self {
            Self::Set(var) => {
                let v = get(var);
                !v.is_empty() && v != "0"
            }
            Self::Equals { var, value, negate } => (get(var) == expand(value)) != *negate,
            Self::Matches { var, regex, negate } => regex.is_match(&get(var)) != *negate,
        }
    }

    /// [`holds`](Self::holds), and what a regex condition (`~`, `~*`, `!~`, `!~*`) did to
    /// the captures, as nginx's rewrite module does: `Some(Some(…))` when its regex
    /// matched (the negated forms too), `Some(None)` when it did not (nginx then empties
    /// `$1`…), `None` for a condition without a regex.
    pub fn holds_capturing(
        &self,
        get: &dyn Fn(&str) -> String,
        expand: &dyn Fn(&Template) -> String,
    ) -> (bool, Option<Option<super::ngx_regex::Captures>>) {
        match self {
            Self::Matches { var, regex, negate } => {
                let subject = get(var);
                let caps = regex.captures(&subject);
                (caps.is_some() != *negate, Some(caps))
            }
            _ => (self.holds(get, expand), None),
        }
    }
}

/// The names of the named groups (`(?<name>…)`, `(?P<name>…)`) written in `text`, lower
/// case: the variables a regex there may set (found before the regexes are compiled, so
/// that any directive may use them, as in nginx).
pub(crate) fn capture_group_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("(?") {
        let rest = &text[i + 2..];
        let rest = rest.strip_prefix('P').unwrap_or(rest);
        let Some(rest) = rest.strip_prefix('<') else {
            continue;
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with('>') {
            names.push(rest[..end].to_ascii_lowercase());
        }
    }
    names
}

/// `if (…) { … }` in a server block: `set`, `rewrite` and `return`, as nginx's rewrite
/// module allows there (certbot's `if ($host = …) { return 301 …; }`, the AWS load
/// balancer's `if ($http_x_forwarded_proto != 'https') { set $r 1; }`, the old
/// `if ($host = 'www.…') { rewrite ^/(.*)$ https://…/$1 permanent; }`).
pub(crate) fn server_if(ctx: &mut Ctx<'_>, d: &Directive) -> Result<ServerIf, ConfigError> {
    use super::rewrite::{ServerStep, parse_rewrite, parse_set};
    let body = ctx.block(d, 1, usize::MAX)?;
    let condition = condition(ctx, d)?;
    let mut ret = None;
    let mut steps = Vec::new();
    for s in body {
        match s.name.as_str() {
            "return" if ret.is_none() => ret = Some(parse_return(ctx, s)?),
            "return" => {}
            "set" | "rewrite" | "break" if ret.is_some() => ctx.warn(
                s.at,
                format!(
                    "\"{}\" is never used: a \"return\" before it answers first",
                    s.name
                ),
            ),
            "set" => steps.push(ServerStep::Set(parse_set(ctx, s)?)),
            "rewrite" => steps.push(ServerStep::Rewrite(parse_rewrite(ctx, s)?)),
            "break" => {
                ctx.args(s, 0, 0)?;
                steps.push(ServerStep::Break);
            }
            _ => {
                return Err(ctx.invalid(
                    s,
                    s.at,
                    "only \"return\", \"rewrite\", \"set\" and \"break\" are supported inside \
                     an \"if\" in a server block",
                ));
            }
        }
    }
    Ok(ServerIf {
        condition,
        steps,
        ret,
        location: ctx.loc(d.at),
    })
}

pub(crate) fn condition(ctx: &Ctx<'_>, d: &Directive) -> Result<Condition, ConfigError> {
    let invalid = |a: &Arg| ctx.invalid(d, a.at, format!("invalid condition \"{}\"", a.value));
    let first = &d.args[0];
    let last = &d.args[d.args.len() - 1];
    if !first.value.starts_with('(') {
        return Err(invalid(first));
    }
    if !last.value.ends_with(')') {
        return Err(invalid(last));
    }
    // The words between the parentheses, with the parentheses taken off.
    let mut words: Vec<(String, &Arg)> = d.args.iter().map(|a| (a.value.clone(), a)).collect();
    words[0].0.remove(0);
    let n = words.len();
    words[n - 1].0.pop();
    words.retain(|(w, a)| !w.is_empty() || a.quoted);
    // A word as a template, errors at its argument.
    let template = |w: &str, a: &Arg| {
        Template::parse_with(w, &|n| {
            ctx.map_names.contains(n) || ctx.set_names.contains(n)
        })
        .map_err(|e| match e {
            TemplateError::Unknown(_, variable) => ctx.err(
                a.at,
                ConfigErrorKind::UnknownVariable {
                    directive: d.name.clone(),
                    variable,
                },
            ),
            TemplateError::InvalidName(_) => invalid(a),
        })
    };
    let var = |(w, a): &(String, &Arg)| match template(w, a)?.parts.as_slice() {
        [TemplatePart::Var(v)] => Ok(v.clone()),
        _ => Err(invalid(a)),
    };
    match words.as_slice() {
        [one] if one.0.starts_with('$') => Ok(Condition::Set(var(one)?)),
        [op, _] if op.0.starts_with('-') || op.0.starts_with("!-") => Err(ctx.invalid(
            d,
            op.1.at,
            format!(
                "file test \"{}\" is not supported: hsmgate serves no files",
                op.0
            ),
        )),
        [v, (op, op_arg), (value, value_arg)] => {
            let var = var(v)?;
            match op.as_str() {
                "=" | "!=" => {
                    let value = template(value, value_arg)?;
                    Ok(Condition::Equals {
                        var,
                        value,
                        negate: op == "!=",
                    })
                }
                "~" | "~*" | "!~" | "!~*" => {
                    let ci = op.ends_with('*');
                    let source = if ci {
                        format!("(?i){value}")
                    } else {
                        value.clone()
                    };
                    let regex = super::ngx_regex::NgxRegex::new(&source).map_err(|e| {
                        ctx.invalid(d, value_arg.at, format!("invalid regex \"{value}\": {e}"))
                    })?;
                    Ok(Condition::Matches {
                        var,
                        regex,
                        negate: op.starts_with('!'),
                    })
                }
                _ => Err(ctx.invalid(d, op_arg.at, format!("unexpected \"{op}\" in condition"))),
            }
        }
        _ => Err(invalid(first)),
    }
}

#[cfg(test)]
mod capture_tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn named_groups_are_found_before_compiling_and_captured() {
        assert_eq!(
            capture_group_names("~(?i)^(?<start>.*)(?P<Temp>x)(?<=y)(?:z)(?<rest>.*)$"),
            ["start", "temp", "rest"]
        );
        let re = Regex::new("^/app/(?<app>[a-z]+)/(.*)$").expect("regex");
        let caps = super::super::ngx_regex::captures_of(&re, "/app/shop/x").expect("matches");
        assert_eq!(caps.get("1"), Some("shop"));
        assert_eq!(caps.get("2"), Some("x"));
        assert_eq!(caps.get("9"), Some(""));
        assert_eq!(caps.get("app"), Some("shop"));
        assert_eq!(caps.get("host"), None);
        assert!(super::super::ngx_regex::captures_of(&re, "/other").is_none());
    }
}
