//! `proxy_cookie_path` and `proxy_cookie_domain`: the `path` and `domain` attributes of
//! an upstream's `Set-Cookie` headers rewritten as nginx rewrites them (checked against
//! Debian's nginx 1.22): attribute names in any case; the first rule that matches wins; a
//! text path is a case-sensitive prefix replaced by the replacement; a text domain
//! matches the whole value in any case, a leading dot ignored on both sides and kept; a
//! regex (`~`, `~*`) that matches replaces the whole value, `$1`… its captures.
//!
//! `proxy_cookie_flags`: the first rule whose cookie matches (its name in any case, or a
//! regex) sets or removes `Secure`, `HttpOnly` and `SameSite`, as nginx does: a flag
//! already there stays as written, a `SameSite` is replaced where it stands, the others
//! are appended (`Secure`, `HttpOnly`, `SameSite`, in that order); `no…` removes them.

use hsmgate_config::nginx::{CookieFlags, ProxySettings, ValueMatch, ValueRewrite};
use http::HeaderMap;
use http::header::{HeaderValue, SET_COOKIE};

use crate::value_rewrite::{Compare, apply};
use crate::vars::Vars;

/// Rewrite the `Set-Cookie`s of `headers` by `settings`' rules.
pub(crate) fn rewrite(settings: &ProxySettings, headers: &mut HeaderMap, vars: &Vars<'_>) {
    let (paths, domains) = (&settings.proxy_cookie_path, &settings.proxy_cookie_domain);
    let flags = &settings.proxy_cookie_flags;
    let none = paths.is_empty() && domains.is_empty() && flags.is_empty();
    if none || !headers.contains_key(SET_COOKIE) {
        return;
    }
    let var = |name: &str| vars.get(name).into_owned();
    let mut changed = false;
    let values: Vec<HeaderValue> = (headers.get_all(SET_COOKIE).iter())
        .map(|v| {
            let new = v.to_str().ok().and_then(|s| {
                let rewritten = rewrite_one(s, paths, domains, &var);
                let cookie = rewritten.as_deref().unwrap_or(s);
                set_flags(cookie, flags, &var).or(rewritten)
            });
            let new = new.and_then(|s| HeaderValue::from_str(&s).ok());
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

/// `cookie` with the flags of the first of `rules` that names it (`None`: unchanged).
fn set_flags(cookie: &str, rules: &[CookieFlags], var: &dyn Fn(&str) -> String) -> Option<String> {
    let name = cookie.split(';').next()?.split_once('=')?.0.trim();
    let rule = rules.iter().find(|r| match &r.cookie {
        ValueMatch::Regex(re) => re.is_match(name),
        ValueMatch::Text(t) => t.to_string().eq_ignore_ascii_case(name),
    })?;
    // `Some(true)`: set; `Some(false)`: removed; `None`: as it is.
    let (mut secure, mut httponly, mut samesite) = (None, None, None::<Option<&str>>);
    for flag in &rule.flags {
        let flag = crate::value_rewrite::expand(flag, &|_| String::new(), var).to_ascii_lowercase();
        match flag.as_str() {
            "secure" => secure = Some(true),
            "nosecure" => secure = Some(false),
            "httponly" => httponly = Some(true),
            "nohttponly" => httponly = Some(false),
            "samesite=strict" => samesite = Some(Some("Strict")),
            "samesite=lax" => samesite = Some(Some("Lax")),
            "samesite=none" => samesite = Some(Some("None")),
            "nosamesite" => samesite = Some(None),
            other => tracing::debug!(flag = other, "proxy_cookie_flags: unknown flag ignored"),
        }
    }
    let mut parts = cookie.split(';');
    let mut out: Vec<String> = vec![parts.next()?.to_owned()];
    let (mut has_secure, mut has_httponly, mut has_samesite) = (false, false, false);
    for seg in parts {
        let key = seg
            .trim()
            .split('=')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match key.as_str() {
            "secure" if secure == Some(false) => {}
            "httponly" if httponly == Some(false) => {}
            "samesite" => match samesite {
                Some(None) => {}
                Some(Some(v)) => {
                    let indent = &seg[..seg.len() - seg.trim_start().len()];
                    out.push(format!("{indent}SameSite={v}"));
                    has_samesite = true;
                }
                None => out.push(seg.to_owned()),
            },
            _ => {
                has_secure |= key == "secure";
                has_httponly |= key == "httponly";
                out.push(seg.to_owned());
            }
        }
    }
    if secure == Some(true) && !has_secure {
        out.push(" Secure".into());
    }
    if httponly == Some(true) && !has_httponly {
        out.push(" HttpOnly".into());
    }
    if let Some(Some(v)) = samesite
        && !has_samesite
    {
        out.push(format!(" SameSite={v}"));
    }
    let new = out.join(";");
    (new != cookie).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value_rewrite::{rule, test_var as var};

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

    fn flags(cookie: &str, flags: &[&str]) -> CookieFlags {
        let cookie = match cookie.strip_prefix('~') {
            Some(re) => ValueMatch::Regex(regex::Regex::new(re).expect("regex")),
            None => rule(cookie, "").from,
        };
        let flags = flags.iter().map(|f| rule("", f).to).collect();
        CookieFlags { cookie, flags }
    }

    #[test]
    fn flags_are_set_and_removed_as_nginx_sets_them() {
        // Debian's nginx 1.22 with these rules and cookies.
        let cookies = [
            "sid=1; Path=/; HttpOnly",
            "pref=2; secure; SameSite=None",
            "other=3",
            "Tok=4; samesite=lax; Secure; httponly",
        ];
        let run = |rules: &[CookieFlags]| -> Vec<String> {
            (cookies.iter())
                .map(|c| set_flags(c, rules, &var).unwrap_or_else(|| (*c).to_owned()))
                .collect()
        };
        assert_eq!(
            run(&[flags("~", &["secure", "httponly", "samesite=strict"])]),
            [
                "sid=1; Path=/; HttpOnly; Secure; SameSite=Strict",
                "pref=2; secure; SameSite=Strict; HttpOnly",
                "other=3; Secure; HttpOnly; SameSite=Strict",
                "Tok=4; SameSite=Strict; Secure; httponly",
            ]
        );
        assert_eq!(
            run(&[
                flags("sid", &["secure", "samesite=lax"]),
                flags("~^p", &["nosecure", "nosamesite"]),
                flags("~", &["httponly"]),
            ]),
            [
                "sid=1; Path=/; HttpOnly; Secure; SameSite=Lax",
                "pref=2",
                "other=3; HttpOnly",
                "Tok=4; samesite=lax; Secure; httponly",
            ]
        );
        assert_eq!(
            run(&[
                flags("tok", &["nohttponly", "nosecure"]),
                flags("~^T", &["samesite=none"]),
            ]),
            [
                "sid=1; Path=/; HttpOnly",
                "pref=2; secure; SameSite=None",
                "other=3",
                "Tok=4; samesite=lax",
            ]
        );
        assert_eq!(set_flags("x=1", &[flags("x", &["bogus"])], &var), None);
    }
}
