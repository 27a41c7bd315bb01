//! The rules of `proxy_redirect`, `proxy_cookie_path` and `proxy_cookie_domain` applied to
//! one header value, as nginx applies them (checked against Debian's nginx 1.22): the
//! first rule that matches wins; a text rule (variables expanded first) is a
//! case-sensitive prefix replaced by the replacement, or for a domain the whole value in
//! any case, a leading dot ignored on both sides and kept; a regex that matches replaces
//! the whole value, `$1`… its captures.

use hsmgate_config::nginx::{Template, TemplatePart, ValueMatch, ValueRewrite};

/// How a text rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    /// A `Location`, a `Refresh` URL, a cookie path.
    Prefix,
    /// A cookie domain.
    Domain,
}

/// The value the first of `rules` that matches `value` makes of it (`None`: none
/// matches).
pub(crate) fn apply(
    rules: &[ValueRewrite],
    value: &str,
    compare: Compare,
    var: &dyn Fn(&str) -> String,
) -> Option<String> {
    let no_captures = |_: usize| String::new();
    for rule in rules {
        match &rule.from {
            ValueMatch::Regex(re) => {
                if let Some(caps) = re.captures(value) {
                    let capture = |n: usize| caps.get(n).map_or("", |m| m.as_str()).to_owned();
                    return Some(expand(&rule.to, &capture, var));
                }
            }
            ValueMatch::Text(from) if compare == Compare::Domain => {
                let from = expand(from, &no_captures, var);
                let (dot, bare) = match value.strip_prefix('.') {
                    Some(bare) => (".", bare),
                    None => ("", value),
                };
                if bare.eq_ignore_ascii_case(from.trim_start_matches('.')) {
                    let to = expand(&rule.to, &no_captures, var);
                    return Some(format!("{dot}{}", to.trim_start_matches('.')));
                }
            }
            ValueMatch::Text(from) => {
                let from = expand(from, &no_captures, var);
                if let Some(rest) = value.strip_prefix(from.as_str()) {
                    return Some(expand(&rule.to, &no_captures, var) + rest);
                }
            }
        }
    }
    None
}

/// `t` with its variables and a regex's captures (`$0`…`$9`) filled in.
pub(crate) fn expand(
    t: &Template,
    capture: &dyn Fn(usize) -> String,
    var: &dyn Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    for p in &t.parts {
        match p {
            TemplatePart::Literal(s) => out.push_str(s),
            TemplatePart::Var(v) => match v.as_bytes() {
                [d @ b'0'..=b'9'] => out.push_str(&capture(usize::from(d - b'0'))),
                _ => out.push_str(&var(v)),
            },
        }
    }
    out
}

/// `$host` for tests: `compat.test`; other variables empty.
#[cfg(test)]
pub(crate) fn test_var(name: &str) -> String {
    match name {
        "host" => "compat.test".into(),
        _ => String::new(),
    }
}

/// A rule from nginx-like text, for tests: `~regex` or text, each with `$name` / `$N`.
#[cfg(test)]
pub(crate) fn rule(from: &str, to: &str) -> ValueRewrite {
    fn template(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(TemplatePart::Literal(rest[..at].into()));
            }
            let name = &rest[at + 1..];
            let len = match name.starts_with(|c: char| c.is_ascii_digit()) {
                true => 1,
                false => name
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(name.len()),
            };
            parts.push(TemplatePart::Var(name[..len].into()));
            rest = &name[len..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.into()));
        }
        Template { parts }
    }
    let from = match from.strip_prefix('~') {
        Some(re) => ValueMatch::Regex(regex::Regex::new(re).expect("regex")),
        None => ValueMatch::Text(template(from)),
    };
    ValueRewrite {
        from,
        to: template(to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_var as var;

    #[test]
    fn the_first_matching_rule_rewrites() {
        let rules = [
            rule("http://$host/", "https://$host/"),
            rule("~^http://([^/]+)/app/(.*)$", "https://$1/$2"),
            rule("http://", "/x/"),
        ];
        let one = |v: &str| apply(&rules, v, Compare::Prefix, &var);
        assert_eq!(
            one("http://compat.test/a").as_deref(),
            Some("https://compat.test/a")
        );
        assert_eq!(one("http://h/app/p/q").as_deref(), Some("https://h/p/q"));
        assert_eq!(one("http://h/b").as_deref(), Some("/x/h/b"));
        assert_eq!(one("HTTP://h/b"), None, "a text prefix is case-sensitive");
        let domains = [rule(".backend.org", "$host")];
        let domain = |v: &str| apply(&domains, v, Compare::Domain, &var);
        assert_eq!(domain(".Backend.ORG").as_deref(), Some(".compat.test"));
        assert_eq!(domain("backend.org").as_deref(), Some("compat.test"));
        assert_eq!(domain("x.backend.org"), None, "the whole domain");
    }
}
