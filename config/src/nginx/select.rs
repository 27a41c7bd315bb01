//! Request routing with nginx's rules: [`select_server`] (by address, then
//! `Host`), [`location_match`] and [`proxy_pass_uri`].

use std::net::SocketAddr;

use super::model::{LocationBlock, Matcher, Server, ServerName};

/// The location nginx would pick for `path` (the normalised path, without the
/// query string).
///
/// At each level: an exact `=` match wins at once; otherwise the longest
/// matching prefix is remembered and its nested locations are searched; if
/// that prefix is `^~`, regexes are not tried; else the regexes of the level
/// are tried in config order and the first match wins (its nested locations
/// are searched too); else the remembered prefix is used.
pub fn location_match<'a>(locations: &'a [LocationBlock], path: &str) -> Option<&'a LocationBlock> {
    let mut found = None;
    find(locations, path, &mut found);
    found
}

/// One level of nginx's `ngx_http_core_find_location`; true: stop searching.
fn find<'a>(
    locations: &'a [LocationBlock],
    path: &str,
    found: &mut Option<&'a LocationBlock>,
) -> bool {
    if let Some(exact) = locations
        .iter()
        .find(|l| matches!(&l.matcher, Matcher::Exact(p) if p == path))
    {
        *found = Some(exact);
        return true;
    }
    let prefix = locations
        .iter()
        .filter(|l| match &l.matcher {
            Matcher::Prefix(p) | Matcher::PrefixNoRegex(p) => path.starts_with(p.as_str()),
            _ => false,
        })
        .max_by_key(|l| l.matcher.pattern().len());
    let mut noregex = false;
    if let Some(p) = prefix {
        *found = Some(p);
        noregex = matches!(p.matcher, Matcher::PrefixNoRegex(_));
        if find(&p.locations, path, found) {
            return true;
        }
    }
    if noregex {
        return false;
    }
    for l in locations {
        if matches!(&l.matcher, Matcher::Regex { regex, .. } if regex.is_match(path)) {
            *found = Some(l);
            find(&l.locations, path, found);
            return true;
        }
    }
    false
}

/// The URI sent upstream, as nginx builds it. Without a URI part (`target_uri`
/// `None`) the request URI (`request_uri`, path and query as received) is passed
/// unchanged. With one (`/v1/` in `proxy_pass http://b/v1/;`) the normalised,
/// decoded path (`uri`, nginx's `$uri`) has the location's prefix replaced by it,
/// is escaped again as nginx's `ngx_escape_uri` does (`escape_uri`), and the
/// request's query (`?args`, as received) is kept. So the path that selected the
/// location is the one rewritten: `//pfx/a`, `/pfx//a` and `/pfx/%61` all become
/// `/v1/a`. (Regex locations cannot have a URI part; the loader rejects it.)
pub fn proxy_pass_uri(
    location: &LocationBlock,
    target_uri: Option<&str>,
    request_uri: &str,
    uri: &str,
) -> String {
    let Some(target) = target_uri else {
        return request_uri.to_owned();
    };
    let rest = match &location.matcher {
        Matcher::Exact(p) | Matcher::Prefix(p) | Matcher::PrefixNoRegex(p) => {
            uri.strip_prefix(p.as_str()).unwrap_or(uri)
        }
        Matcher::Regex { .. } => return request_uri.to_owned(),
    };
    let mut out = String::with_capacity(target.len() + rest.len() + 8);
    out.push_str(target);
    escape_uri(rest, &mut out);
    if let Some((_, args)) = request_uri.split_once('?') {
        out.push('?');
        out.push_str(args);
    }
    out
}

/// The request target of a rewritten URI: the path (decoded, as `$uri`) escaped as
/// nginx escapes it, then `?args` when there are arguments.
pub fn request_target(uri: &str, args: &str) -> String {
    let mut out = String::with_capacity(uri.len() + args.len() + 8);
    escape_uri(uri, &mut out);
    if !args.is_empty() {
        out.push('?');
        out.push_str(args);
    }
    out
}

/// Appends `path` to `out` escaped as nginx's `ngx_escape_uri(…, NGX_ESCAPE_URI)`:
/// control characters, space, `#`, `%`, `?`, DEL and non-ASCII bytes become `%XX`
/// (upper-case hex); `/` and the rest stay. Also `<`, `>` and `` ` ``, which nginx
/// sends as they are but an HTTP request target cannot carry (`http::Uri` refuses
/// them); the upstream decodes them to the same path.
fn escape_uri(path: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path.as_bytes() {
        let escape = b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'?' | b'<' | b'>' | b'`');
        if escape {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push(b as char);
        }
    }
}

/// The server nginx would pick for a connection to `local_addr` with `Host`
/// `host` (a port in `host` is ignored). Servers listening on exactly
/// `local_addr` are the candidates, or if none, those on the wildcard address
/// of that port. Among them: an exact name, then the longest leading wildcard
/// (`*.example.com`, `.example.com`), then the longest trailing wildcard
/// (`www.example.*`), then the first matching regex in config order, else the
/// `default_server` of the address, else the first server on it.
pub fn select_server<'a>(
    servers: &'a [Server],
    local_addr: SocketAddr,
    host: Option<&str>,
) -> Option<&'a Server> {
    select_server_index(servers, local_addr, host).map(|i| &servers[i])
}

/// [`select_server`] as the server's index in `servers`.
pub fn select_server_index(
    servers: &[Server],
    local_addr: SocketAddr,
    host: Option<&str>,
) -> Option<usize> {
    // One server on the address: it answers whatever the Host (every rule below ends at
    // it), so no list and no lower-cased copy of the name (once per request).
    if let Some(only) = sole_server(servers, local_addr) {
        return Some(only);
    }
    let candidates = listening_on(servers, local_addr);
    let fallback = candidates
        .iter()
        .find(|(_, d)| *d)
        .or(candidates.first())
        .map(|(i, _)| *i);
    let Some(host) = host else {
        return fallback;
    };
    let host = normalize_host(host);
    let names = || {
        candidates
            .iter()
            .flat_map(|(i, _)| servers[*i].server_names.iter().map(move |n| (*i, n)))
    };
    if let Some((i, _)) = names().find(|(_, n)| matches!(n, ServerName::Exact(e) if *e == host)) {
        return Some(i);
    }
    let leading = longest(names().filter_map(|(i, n)| match n {
        ServerName::Wildcard(w) if w.starts_with('.') || w.starts_with("*.") => {
            let suffix = w.trim_start_matches('*');
            let hit = host.ends_with(suffix) || (w.starts_with('.') && host == suffix[1..]);
            hit.then_some((i, w.len()))
        }
        _ => None,
    }));
    if let Some(i) = leading {
        return Some(i);
    }
    let trailing = longest(names().filter_map(|(i, n)| match n {
        ServerName::Wildcard(w) if w.ends_with(".*") => {
            host.starts_with(&w[..w.len() - 1]).then_some((i, w.len()))
        }
        _ => None,
    }));
    if let Some(i) = trailing {
        return Some(i);
    }
    if let Some((i, _)) =
        names().find(|(_, n)| matches!(n, ServerName::Regex(r) if r.is_match(&host)))
    {
        return Some(i);
    }
    fallback
}

/// The servers (index, `default_server`) listening on exactly `local_addr`, or if none,
/// on the wildcard address of its port, in file order.
pub fn listening_on(servers: &[Server], local_addr: SocketAddr) -> Vec<(usize, bool)> {
    let on = |want: SocketAddr| -> Vec<(usize, bool)> {
        servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.listens
                    .iter()
                    .find(|l| l.addr == want)
                    .map(|l| (i, l.default_server))
            })
            .collect()
    };
    let candidates = on(local_addr);
    if !candidates.is_empty() {
        return candidates;
    }
    on(port_wildcard(local_addr))
}

/// The wildcard address (`0.0.0.0` or `::`) of `addr`'s port, whose servers take the
/// connections to an address no server names.
fn port_wildcard(addr: SocketAddr) -> SocketAddr {
    let any = match addr {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(any, addr.port())
}

/// The server listening on `local_addr` when it is the only one (looking at the port's
/// wildcard address, as [`listening_on`] does, when none names the address itself).
fn sole_server(servers: &[Server], local_addr: SocketAddr) -> Option<usize> {
    let on = |want: SocketAddr| {
        let mut them = (servers.iter().enumerate())
            .filter(move |(_, s)| s.listens.iter().any(|l| l.addr == want))
            .map(|(i, _)| i);
        (them.next(), them.next())
    };
    match on(local_addr) {
        (Some(i), None) => Some(i),
        (Some(_), Some(_)) => None,
        (None, _) => match on(port_wildcard(local_addr)) {
            (Some(i), None) => Some(i),
            _ => None,
        },
    }
}

/// Lower-cased, without a port and a trailing dot (as server names are kept).
pub fn normalize_host(host: &str) -> String {
    let host = match host.strip_prefix('[') {
        // `[::1]:443` → `[::1]`; an unclosed `[` (a client's bytes) stays as it is.
        Some(v6) => match v6.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        },
        None => host.split(':').next().unwrap_or(host),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The server of the longest matching wildcard; the first one written wins a tie.
fn longest(matches: impl Iterator<Item = (usize, usize)>) -> Option<usize> {
    matches
        .fold(None, |best: Option<(usize, usize)>, c| {
            if best.is_none_or(|b| c.1 > b.1) {
                Some(c)
            } else {
                best
            }
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::{escape_uri, normalize_host};

    #[test]
    fn escapes_as_ngx_escape_uri() {
        let mut out = String::new();
        escape_uri("a b#c%d?e/~A\u{e9}\u{7f}<`>\"{}", &mut out);
        assert_eq!(out, "a%20b%23c%25d%3Fe/~A%C3%A9%7F%3C%60%3E\"{}");
    }

    #[test]
    fn hosts_from_clients_never_panic() {
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
        assert_eq!(normalize_host("["), "[");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("WWW.Example.test.:8443"), "www.example.test");
        assert_eq!(normalize_host(""), "");
    }
}
