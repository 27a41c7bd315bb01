//! The pages hsmgate answers with itself, in nginx's shape (`<center>hsmgate` where
//! nginx says `nginx`): error statuses, the 400s with their own title, and the body of
//! redirects. Which page a request gets is decided in [`crate::route`].

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ProxyBody;

/// A page in nginx's shape for a status hsmgate answers itself (`<center>hsmgate`
/// where nginx says `nginx`), as `text/html`.
pub(crate) fn error_page(code: StatusCode) -> Response<ProxyBody> {
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
pub(crate) fn header_too_large_page() -> Response<ProxyBody> {
    bad_request_page("Request Header Or Cookie Too Large")
}

/// nginx's 400 pages with their own title (`why`): header too large, client
/// certificate missing or failed.
pub(crate) fn bad_request_page(why: &str) -> Response<ProxyBody> {
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
pub(crate) fn page(code: StatusCode) -> String {
    // nginx's reason phrases where they differ from RFC 9110's.
    let reason = match code.as_u16() {
        401 => "Authorization Required",
        405 => "Not Allowed",
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
