//! `proxy_cookie_path` and `proxy_cookie_domain`: the `path` and `domain` attributes of
//! an upstream's `Set-Cookie` headers rewritten as nginx rewrites them (checked against
//! Debian's nginx 1.22): attribute names in any case; the first rule that matches wins; a
//! text path is a case-sensitive prefix replaced by the replacement; a text domain
//! matches the whole value in any case, a leading dot ignored on both sides and kept; a
//! regex (`~`, `~*`) that matches replaces the whole value, `$1`… its captures.

use hsmgate_config::nginx::{ProxySettings, ValueRewrite};
use http::HeaderMap;
use http::header::{HeaderValue, SET_COOKIE};

use crate::value_rewrite::{Compare, apply};
use crate::vars::Vars;

/// Rewrite the `Set-Cookie`s of `headers` by `settings`' rules.
pub(crate) fn rewrite(settings: &ProxySettings, headers: &mut HeaderMap, vars: &Vars<'_>) {
    let (paths, domains) = (&settings.proxy_cookie_path, &settings.proxy_cookie_domain);
    if (paths.is_empty() && domains.is_empty()) || !headers.contains_key(SET_COOKIE) {
        return;
    }
    let var = |name: &str| vars.get(name).into_owned();
    let mut changed = false;
    let values: Vec<HeaderValue> = (headers.get_all(SET_COOKIE).iter())
        .map(|v| {
            let new = (v.to_str().ok())
                .and_then(|s| rewrite_one(s, paths, domains, &var))
                .and_then(|s| HeaderValue::from_str(&s).ok());
            changed |= new.is_some();
            new.unwrap_or_else(|| v.clone())
        })
        .collect();
    if changed {
        headers.remove(SET_COOKIE);
        for v in values {
            headers.append(SET_COOKIE, v);
        }
    }
}

/// `cookie` with its `path` and `domain` attributes rewritten (`None`: unchanged).
fn rewrite_one(
    cookie: &str,
    paths: &[ValueRewrite],
    domains: &[ValueRewrite],
    var: &dyn Fn(&str) -> String,
) -> Option<String> {
    let mut out = String::with_capacity(cookie.len() + 16);
    let mut changed = false;
    for (i, segment) in cookie.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        let rewritten =
            (i > 0)
                .then(|| segment.split_once('='))
                .flatten()
                .and_then(|(key, value)| {
                    let rules = match key.trim().to_ascii_lowercase().as_str() {
                        "path" => (paths, Compare::Prefix),
                        "domain" => (domains, Compare::Domain),
                        _ => return None,
                    };
                    let new = apply(rules.0, value, rules.1, var)?;
                    Some(format!("{key}={new}"))
                });
        match rewritten {
            Some(s) => {
                out.push_str(&s);
                changed = true;
            }
            None => out.push_str(segment),
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value_rewrite::rule;

    fn var(name: &str) -> String {
        match name {
            "host" => "compat.test".into(),
            _ => String::new(),
        }
    }

    #[test]
    fn attributes_are_rewritten_as_nginx_rewrites_them() {
        let paths = [rule("/app/", "/")];
        let domains = [rule("backend.local", "example.com")];
        let one = |c: &str| rewrite_one(c, &paths, &domains, &var);
        // What Debian's nginx 1.22 sent for the same rules and cookies.
        assert_eq!(
            one("sid=1; Path=/app/x; Domain=backend.local; HttpOnly").as_deref(),
            Some("sid=1; Path=/x; Domain=example.com; HttpOnly")
        );
        assert_eq!(
            one("u=3; Path=/APP/y"),
            None,
            "a path prefix is case-sensitive"
        );
        assert_eq!(
            one("v=4; Domain=BACKEND.LOCAL; Path=/").as_deref(),
            Some("v=4; Domain=example.com; Path=/")
        );
        assert_eq!(one("w=5; Max-Age=10"), None);
        assert_eq!(
            one("path=/app/; x=1"),
            None,
            "the cookie's own name=value is not an attribute"
        );
        // A regex replaces the whole value; a text domain keeps a leading dot.
        let paths = [rule("~^/user/([^/]+)", "/u/$1")];
        assert_eq!(
            rewrite_one("t=2; path=/user/ann/p", &paths, &[], &var).as_deref(),
            Some("t=2; path=/u/ann")
        );
        assert_eq!(rewrite_one("t=2; path=/User/ann", &paths, &[], &var), None);
        let domains = [rule(".foo.backend.org", "$host")];
        assert_eq!(
            rewrite_one("t=2; domain=.foo.backend.org; Secure", &[], &domains, &var).as_deref(),
            Some("t=2; domain=.compat.test; Secure")
        );
        // The first rule that matches wins.
        let paths = [rule("/app/", "/x/"), rule("/", "/root/")];
        assert_eq!(
            rewrite_one("a=1; Path=/app/x", &paths, &[], &var).as_deref(),
            Some("a=1; Path=/x/x")
        );
        assert_eq!(
            rewrite_one("a=1; Path=/", &paths, &[], &var).as_deref(),
            Some("a=1; Path=/root/")
        );
    }
}
