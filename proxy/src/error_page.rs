//! What every forwarded request and every answer of the proxy's own share: the response
//! body type, hop-by-hop headers (removed in both directions), nginx-shaped error pages
//! and error chains for the log. The forwarding itself is in [`crate::route`].

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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

/// A page in nginx's shape for a status hsmgate answers itself (`<center>hsmgate`
/// where nginx says `nginx`), as `text/html`.
pub fn error_page(code: StatusCode) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(page(code)))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// nginx's 400 for a header line or head over `large_client_header_buffers` (its
/// internal 494, "Request Header Or Cookie Too Large").
pub fn header_too_large_page() -> Response<ProxyBody> {
    bad_request_page("Request Header Or Cookie Too Large")
}

/// nginx's 400 pages with their own title (`why`): header too large, client
/// certificate missing or failed.
pub fn bad_request_page(why: &str) -> Response<ProxyBody> {
    let html = format!(
        "<html>\r\n<head><title>400 {why}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{why}</center>\r\n<hr><center>hsmgate</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = error_page(StatusCode::BAD_REQUEST);
    *resp.body_mut() = Full::new(Bytes::from(html))
        .map_err(|never| match never {})
        .boxed();
    resp
}

/// The HTML of [`error_page`] (also the body of redirects).
pub fn page(code: StatusCode) -> String {
    // nginx's reason phrases where they differ from RFC 9110's.
    let reason = match code.as_u16() {
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        504 => "Gateway Time-out",
        302 => "Found",
        _ => code.canonical_reason().unwrap_or(""),
    };
    let n = code.as_u16();
    format!(
        "<html>\r\n<head><title>{n} {reason}</title></head>\r\n<body>\r\n<center><h1>{n} {reason}</h1></center>\r\n<hr><center>hsmgate</center>\r\n</body>\r\n</html>\r\n"
    )
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
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
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
