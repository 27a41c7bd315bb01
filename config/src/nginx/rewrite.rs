//! `rewrite REGEX REPLACEMENT [last|break|redirect|permanent]`, in a `server` and in a
//! `location`, as nginx's rewrite module runs it: the regex is matched against the
//! normalised, decoded path (`$uri`); the replacement may use the regex's captures
//! (`$1`…`$9`, `$0` the whole match) and variables.
//!
//! - A replacement that starts with `http://`, `https://` or `$scheme`, or the flags
//!   `redirect` (302) and `permanent` (301), answer with a redirect (a path is made
//!   absolute with the request's scheme and host, as `return` does).
//! - Otherwise the request's URI changes. With `?` in the replacement its arguments are
//!   the new ones, and the request's own follow them after `&`; without one the
//!   request's arguments stay. A trailing `?` drops the request's arguments.
//! - `last` ends this block's rewrite directives (a server's `return` after it
//!   included); in a `location` the locations are searched again with the new URI.
//!   `break` ends them too; in a `location` the request is then served there (by its
//!   `proxy_pass`, which sends the whole changed URI upstream, not its own URI part). No
//!   flag goes on with the next directive; in a `location` the locations are then
//!   searched again if the URI changed. A server's changed URI is what its locations
//!   are matched against.
//! - Ten URI changes for one request end it with a 500, as nginx's "rewrite or internal
//!   redirection cycle".

use regex::Regex;

use super::build::Ctx;
use super::cond::{LocationIf, ServerIf};
use super::parse::Directive;
use super::template::{Template, TemplatePart};
use crate::error::ConfigError;
use crate::model::Location;

/// One rewrite-module directive of a `server`, in the order written.
#[derive(Debug, Clone)]
pub enum ServerStep {
    /// `if (…) { return …; }`.
    If(ServerIf),
    /// `rewrite`.
    Rewrite(Rewrite),
    /// `set`.
    Set(SetVar),
    /// `break`: the server's other rewrite-module directives are skipped.
    Break,
}

/// One rewrite-module directive of a `location` (or of an `if` block in one, which
/// holds no `if`), in the order written.
#[derive(Debug, Clone)]
pub enum LocationStep {
    /// `rewrite`.
    Rewrite(Rewrite),
    /// `if (…) { … }`.
    If(Box<LocationIf>),
    /// `set`.
    Set(SetVar),
    /// `break`: the location's other rewrite-module directives (its `return` too) are
    /// skipped, and the request is served in it.
    Break,
}

/// `set $NAME VALUE`: the variable (a name no built-in or `map` variable has) takes the
/// value, variables expanded, when the directive runs; until then it is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct SetVar {
    /// The name, without `$`, lower case.
    pub name: String,
    /// The value.
    pub value: Template,
    /// Where the directive is.
    pub location: Location,
}

/// `set $NAME VALUE;`
pub(crate) fn parse_set(ctx: &Ctx<'_>, d: &Directive) -> Result<SetVar, ConfigError> {
    let args = ctx.args(d, 2, 2)?;
    let name = set_name(&args[0].value).ok_or_else(|| {
        ctx.invalid(
            d,
            args[0].at,
            format!("invalid variable name \"{}\"", args[0].value),
        )
    })?;
    let builtin = super::template::SUPPORTED_VARIABLES.contains(&name.as_str())
        || super::template::SUPPORTED_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
        || ctx.map_names.contains(&name)
        || capture_index(&name).is_some();
    if builtin {
        return Err(ctx.invalid(
            d,
            args[0].at,
            format!("the \"${name}\" variable cannot be set: hsmgate (or a \"map\") provides it"),
        ));
    }
    Ok(SetVar {
        value: ctx.template(d, &args[1])?,
        name,
        location: ctx.loc(d.at),
    })
}

/// The name `set`'s first argument declares (`$name`, lower case), if it is one.
pub(crate) fn set_name(arg: &str) -> Option<String> {
    let name = arg.strip_prefix('$')?;
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| name.to_ascii_lowercase())
}

/// How many times one request's URI may change (nginx's `NGX_HTTP_MAX_URI_CHANGES`).
pub const MAX_URI_CHANGES: usize = 10;

/// One `rewrite` directive.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The pattern as written.
    pub pattern: String,
    /// Compiled.
    pub regex: Regex,
    /// The replacement, a trailing `?` taken off (see [`keep_args`](Self::keep_args)).
    pub replacement: Template,
    /// The flag.
    pub flag: RewriteFlag,
    /// The redirect's status (301 or 302), when the rewrite answers with one.
    pub redirect: Option<u16>,
    /// The request's arguments are appended (false when the replacement ends with `?`).
    pub keep_args: bool,
    /// Where the directive is.
    pub location: Location,
}

/// The last argument of `rewrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteFlag {
    /// None: the next directive follows.
    Continue,
    /// `last`.
    Last,
    /// `break`.
    Break,
    /// `redirect` (302).
    Redirect,
    /// `permanent` (301).
    Permanent,
}

/// What a matching `rewrite` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// Answer with a redirect: the status and the `Location` (arguments appended; a path
    /// is still to be made absolute).
    Redirect {
        /// 301 or 302.
        code: u16,
        /// The target.
        url: String,
    },
    /// The request's URI is now `uri` (decoded, as `$uri`) with arguments `args`.
    Uri {
        /// The new path.
        uri: String,
        /// The new arguments (empty: none).
        args: String,
    },
}

impl Rewrite {
    /// The rewrite of a request whose path is `uri` and arguments `args` (`var` gives a
    /// variable's value), if the regex matches, and what it captured (`$1`… for the
    /// directives after it), from the one match.
    pub fn apply(
        &self,
        uri: &str,
        args: &str,
        var: &dyn Fn(&str) -> String,
    ) -> Option<(Rewritten, super::ngx_regex::Captures)> {
        let caps = super::ngx_regex::captures_of(&self.regex, uri)?;
        // The first `?` written in the replacement starts its arguments (one inside a
        // variable's value does not).
        let mut text = String::new();
        let mut query_at = None;
        for part in &self.replacement.parts {
            match part {
                TemplatePart::Literal(s) => {
                    if query_at.is_none()
                        && let Some(i) = s.find('?')
                    {
                        query_at = Some(text.len() + i);
                    }
                    text.push_str(s);
                }
                TemplatePart::Var(name) => match capture_index(name) {
                    Some(n) => text.push_str(caps.numbered.get(n).map_or("", String::as_str)),
                    None => text.push_str(&var(name)),
                },
            }
        }
        let add = self.keep_args && !args.is_empty();
        if let Some(code) = self.redirect {
            if add {
                text.push(if query_at.is_some() { '&' } else { '?' });
                text.push_str(args);
            }
            return Some((Rewritten::Redirect { code, url: text }, caps));
        }
        let (uri, new_args) = match query_at {
            Some(i) => {
                let mut new_args = text[i + 1..].to_owned();
                if add {
                    new_args.push('&');
                    new_args.push_str(args);
                }
                text.truncate(i);
                (text, new_args)
            }
            None if self.keep_args => (text, args.to_owned()),
            None => (text, String::new()),
        };
        let done = Rewritten::Uri {
            uri,
            args: new_args,
        };
        Some((done, caps))
    }
}

/// `$0`…`$9`: the capture's index.
pub fn capture_index(name: &str) -> Option<usize> {
    match name.as_bytes() {
        [d @ b'0'..=b'9'] => Some(usize::from(d - b'0')),
        _ => None,
    }
}

/// `rewrite REGEX REPLACEMENT [FLAG];`
pub(crate) fn parse_rewrite(ctx: &Ctx<'_>, d: &Directive) -> Result<Rewrite, ConfigError> {
    let args = ctx.args(d, 2, 3)?;
    let (pattern, replacement) = (&args[0], &args[1]);
    let regex = Regex::new(&pattern.value).map_err(|e| {
        ctx.invalid(
            d,
            pattern.at,
            format!("invalid regex \"{}\": {e}", pattern.value),
        )
    })?;
    let flag = match args.get(2).map(|a| (a.value.as_str(), a)) {
        None => RewriteFlag::Continue,
        Some(("last", _)) => RewriteFlag::Last,
        Some(("break", _)) => RewriteFlag::Break,
        Some(("redirect", _)) => RewriteFlag::Redirect,
        Some(("permanent", _)) => RewriteFlag::Permanent,
        Some((other, a)) => {
            return Err(ctx.invalid(d, a.at, format!("invalid parameter \"{other}\"")));
        }
    };
    let mut written = replacement.clone();
    let keep_args = !written.value.ends_with('?');
    if !keep_args {
        written.value.pop();
    }
    // A capture the regex does not have is empty, as in nginx.
    let template = ctx.template_with(d, &written, &|name| capture_index(name).is_some())?;
    let absolute = ["http://", "https://", "$scheme"]
        .iter()
        .any(|p| written.value.starts_with(p));
    let redirect = match flag {
        RewriteFlag::Permanent => Some(301),
        RewriteFlag::Redirect => Some(302),
        _ if absolute => Some(302),
        _ => None,
    };
    if redirect.is_none() && !written.value.starts_with('/') && !written.value.starts_with('$') {
        return Err(ctx.invalid(
            d,
            replacement.at,
            format!(
                "the replacement \"{}\" is neither a path (\"/…\") nor a redirect \
                 (\"http://…\", \"https://…\", \"$scheme…\", or the flag \"redirect\" or \
                 \"permanent\")",
                replacement.value
            ),
        ));
    }
    Ok(Rewrite {
        pattern: pattern.value.clone(),
        regex,
        replacement: template,
        flag,
        redirect,
        keep_args,
        location: ctx.loc(d.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(pattern: &str, replacement: &str, flag: RewriteFlag) -> Rewrite {
        let keep_args = !replacement.ends_with('?');
        let written = replacement.strip_suffix('?').unwrap_or(replacement);
        let absolute = ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| written.starts_with(p));
        Rewrite {
            pattern: pattern.into(),
            regex: Regex::new(pattern).unwrap(),
            replacement: Template::parse_with(written, &|n| capture_index(n).is_some()).unwrap(),
            flag,
            redirect: match flag {
                RewriteFlag::Permanent => Some(301),
                RewriteFlag::Redirect => Some(302),
                _ if absolute => Some(302),
                _ => None,
            },
            keep_args,
            location: Location::whole("t.conf"),
        }
    }

    fn var(name: &str) -> String {
        match name {
            "host" => "example.com".into(),
            "scheme" => "https".into(),
            _ => String::new(),
        }
    }

    fn uri(u: &str, a: &str) -> Option<Rewritten> {
        Some(Rewritten::Uri {
            uri: u.into(),
            args: a.into(),
        })
    }

    #[test]
    fn captures_replace_the_path_and_the_arguments_stay() {
        let r = rewrite("^/api/(.*)$", "/$1", RewriteFlag::Break);
        assert_eq!(
            r.apply("/api/v1/users", "", &var).map(|(d, _)| d),
            uri("/v1/users", "")
        );
        assert_eq!(
            r.apply("/api/x", "a=1", &var).map(|(d, _)| d),
            uri("/x", "a=1")
        );
        assert_eq!(r.apply("/other", "a=1", &var).map(|(d, _)| d), None);
        // `$10` is `$1` then `0`; `$0` is the whole match.
        let r = rewrite("^/(a)(b)$", "/$10/$0/$2", RewriteFlag::Last);
        assert_eq!(
            r.apply("/ab", "", &var).map(|(d, _)| d),
            uri("/a0//ab/b", "")
        );
    }

    #[test]
    fn arguments_in_the_replacement_come_first_and_a_trailing_question_mark_drops_the_requests() {
        let r = rewrite("^/users/(.*)$", "/show?user=$1", RewriteFlag::Last);
        assert_eq!(
            r.apply("/users/ann", "x=1", &var).map(|(d, _)| d),
            uri("/show", "user=ann&x=1")
        );
        assert_eq!(
            r.apply("/users/ann", "", &var).map(|(d, _)| d),
            uri("/show", "user=ann")
        );
        let r = rewrite("^/users/(.*)$", "/show?user=$1?", RewriteFlag::Last);
        assert_eq!(
            r.apply("/users/ann", "x=1", &var).map(|(d, _)| d),
            uri("/show", "user=ann")
        );
        let r = rewrite("^/old$", "/new?", RewriteFlag::Break);
        assert_eq!(
            r.apply("/old", "x=1", &var).map(|(d, _)| d),
            uri("/new", "")
        );
    }

    #[test]
    fn redirects_by_flag_or_by_scheme_keep_the_arguments_unless_told() {
        let r = rewrite("^(.*)$", "https://$host$1", RewriteFlag::Permanent);
        assert_eq!(
            r.apply("/a b", "q=1", &var).map(|(d, _)| d),
            Some(Rewritten::Redirect {
                code: 301,
                url: "https://example.com/a b?q=1".into()
            })
        );
        let r = rewrite("^", "$scheme://$host/x?y=1", RewriteFlag::Continue);
        assert_eq!(
            r.apply("/", "q=1", &var).map(|(d, _)| d),
            Some(Rewritten::Redirect {
                code: 302,
                url: "https://example.com/x?y=1&q=1".into()
            })
        );
        let r = rewrite("^", "https://$host$request_uri?", RewriteFlag::Permanent);
        assert_eq!(
            r.apply("/p", "q=1", &var).map(|(d, _)| d),
            Some(Rewritten::Redirect {
                code: 301,
                url: "https://example.com".into()
            })
        );
        let r = rewrite("^/old/(.*)", "/new/$1", RewriteFlag::Redirect);
        assert_eq!(
            r.apply("/old/x", "", &var).map(|(d, _)| d),
            Some(Rewritten::Redirect {
                code: 302,
                url: "/new/x".into()
            })
        );
    }
}
