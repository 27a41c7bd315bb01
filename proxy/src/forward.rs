//! Forwarding a request to the upstream over plain HTTP/1.1 with keep-alive: hop-by-hop
//! headers removed, `Host` kept from the client, `X-Forwarded-For` appended to and
//! `X-Forwarded-Proto: https` set. An unreachable upstream is a 502, a slow one a 504.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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

/// A client for one upstream, with its connection pool.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Incoming>,
    upstream: String,
    request_timeout: Duration,
}

impl Forwarder {
    /// A forwarder to `upstream` (host:port).
    pub fn new(upstream: &hsmgate_config::Upstream) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Forwarder {
            client,
            upstream: upstream.address.clone(),
            request_timeout: upstream.request_timeout,
        }
    }

    /// Forward one request from `peer`; never fails: errors become 502/504 responses.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri: Uri = match format!("http://{}{}", self.upstream, path).parse() {
            Ok(uri) => uri,
            Err(_) => return status(StatusCode::BAD_REQUEST, "bad request target\n"),
        };
        // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need a Host header.
        if !req.headers().contains_key(header::HOST)
            && let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        append_forwarded_for(headers, peer);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));

        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                resp.map(|b| b.boxed())
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.upstream, %method, %path, error = %error_chain(&e), "upstream request failed: 502");
                status(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: upstream unavailable\n",
                )
            }
            Err(_) => {
                tracing::warn!(upstream = %self.upstream, %method, %path, timeout = ?self.request_timeout, "upstream did not answer in time: 504");
                status(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n")
            }
        }
    }
}

/// A short response made by the proxy itself.
pub fn status(code: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

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

/// The HTML of [`error_page`] (also the body of redirects).
pub fn page(code: StatusCode) -> String {
    // nginx's reason phrases where they differ from RFC 9110's.
    let reason = match code.as_u16() {
        413 => "Request Entity Too Large",
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

/// `X-Forwarded-For: <existing>, <peer>` as nginx's `$proxy_add_x_forwarded_for`.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_canonical().to_string();
    let existing: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if existing.is_empty() {
        ip
    } else {
        format!("{}, {ip}", existing.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
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

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer: SocketAddr = "[::ffff:10.1.2.3]:5555".parse().expect("addr");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, peer);
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        append_forwarded_for(&mut h, "192.0.2.9:1".parse().expect("addr"));
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3, 192.0.2.9");
    }
}
