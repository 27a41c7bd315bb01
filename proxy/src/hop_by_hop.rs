//! Hop-by-hop headers (RFC 9110 §7.6.1): removed from requests on their way upstream
//! and from responses on their way back, with the headers `Connection` names.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `name` is one of the hop-by-hop headers (not counting those `Connection` names).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The tokens `Connection` lists (comma-separated, trimmed; empty ones included).
pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    (headers.get_all(header::CONNECTION).iter())
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// A `Connection` token that names a header (anything but empty, `close`, `keep-alive`
/// and `upgrade`, which name none or one removed anyway).
pub(crate) fn names_a_header(token: &[u8]) -> bool {
    !(token.is_empty()
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"upgrade"))
}

/// `Connection` lists `token` (case aside).
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Remove the hop-by-hop headers and those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too. The usual tokens (`close`,
    // `keep-alive`, `upgrade`) name no header or one removed below: nothing to collect.
    let tokens = || connection_tokens(headers).filter(|t| names_a_header(t));
    if tokens().next().is_some() {
        let named: Vec<HeaderName> = tokens()
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Most heads carry none of them or one (`Connection`): a look at the few names
    // there is cheaper than seven hashed removals.
    let present = (headers.keys())
        .filter_map(|k| HOP_BY_HOP.iter().position(|h| h == k))
        .fold(0u8, |seen, i| seen | 1 << i);
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
}

/// A copy of `headers` without the hop-by-hop ones, those `Connection` names, and those
/// `skip` says, with room for `more`: one pass, where a copy and removals cost about
/// twice as much.
pub(crate) fn copy_end_to_end(
    headers: &HeaderMap,
    more: usize,
    skip: impl Fn(&HeaderName) -> bool,
) -> HeaderMap {
    // Whether `Connection` names any header (then each name is looked up in it).
    let names_any = connection_tokens(headers).any(names_a_header);
    let mut out = HeaderMap::with_capacity(headers.len() + more);
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || skip(name)
            || (names_any && connection_has(headers, name.as_str()))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let copy = copy_end_to_end(&h, 0, |_| false);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        assert_eq!(copy, h);
    }

    #[test]
    fn the_copy_keeps_repeated_headers_in_order_and_skips_what_it_is_told() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append(header::HOST, HeaderValue::from_static("h"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let copy = copy_end_to_end(&h, 2, |n| n == header::HOST);
        let all: Vec<(&str, &[u8])> = copy
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(all, [("x-a", &b"1"[..]), ("x-a", &b"2"[..])]);
    }
}
