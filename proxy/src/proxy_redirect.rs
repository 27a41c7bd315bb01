//! `proxy_redirect`: the upstream's `Location` and the URL of its `Refresh` rewritten as
//! nginx rewrites them (checked against Debian's nginx 1.22): the first rule that
//! matches ([`crate::value_rewrite`]); with none written, nginx's `default`, which turns
//! the `proxy_pass` URL into the location's name. A `Location` made relative is then
//! made absolute with the request's scheme, host and (when not the scheme's default)
//! the server's port, as nginx's `absolute_redirect on`; a `Refresh` URL is left as
//! rewritten. Values no rule matches pass unchanged.

use hsmgate_config::nginx::ProxySettings;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, LOCATION, REFRESH};

use crate::value_rewrite::{Compare, apply};
use crate::vars::Vars;

/// Rewrite `headers`' `Location` and `Refresh` by `settings`' `proxy_redirect`s.
pub(crate) fn rewrite(settings: &ProxySettings, headers: &mut HeaderMap, vars: &Vars<'_>) {
    let rules = &settings.proxy_redirect;
    if rules.is_empty() {
        return;
    }
    let var = |name: &str| vars.get(name).into_owned();
    let text = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        headers.get(name)?.to_str().ok().map(str::to_owned)
    };
    if let Some(location) = text(headers, &LOCATION)
        && let Some(new) = apply(rules, &location, Compare::Prefix, &var)
    {
        set(
            headers,
            LOCATION,
            &crate::route::absolute(settings, vars, &new),
        );
    }
    if let Some(refresh) = text(headers, &REFRESH)
        && let Some(at) = url_at(&refresh)
        && let Some(new) = apply(rules, &refresh[at..], Compare::Prefix, &var)
    {
        set(headers, REFRESH, &format!("{}{new}", &refresh[..at]));
    }
}

/// Where the URL in a `Refresh` value starts: after its first `url=`, in any case.
fn url_at(refresh: &str) -> Option<usize> {
    let lower = refresh.to_ascii_lowercase();
    lower.find("url=").map(|i| i + 4)
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_of_a_refresh_follows_url_in_any_case() {
        assert_eq!(url_at("3; url=/a"), Some(7));
        assert_eq!(url_at("0;URL=http://x/"), Some(6));
        assert_eq!(url_at("5"), None);
    }
}
