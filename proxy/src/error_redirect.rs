//! nginx's `error_page CODE… [=[RESPONSE]] TARGET`: an answer with a status an
//! `error_page` of its location names is replaced.
//!
//! - Which answers: those hsmgate makes itself (403, 404, 401, 413, 500, 502, 504, a
//!   bare `return CODE`), and an upstream's only with `proxy_intercept_errors on`; not a
//!   `return CODE TEXT`, which the configuration wrote out (as in nginx).
//! - `/uri[?args]`: an internal redirect. The request goes through the server's
//!   rewrites and the location search again with that URI and those arguments, as a GET
//!   (a HEAD stays a HEAD) without its body; a location that would serve files (no
//!   `proxy_pass`, no `return`) answers with the file under its `root`, the one case
//!   where hsmgate reads a file for a client (nginx's `error_page 500 502 503 504
//!   /50x.html; location = /50x.html { root …; }`).
//! - `@name`: the named location, with the URI and the method unchanged (the body is not
//!   sent again).
//! - Anything else (`https://…`): a redirect, 302 unless `=301`, `=303`, `=307`, `=308`.
//! - The status: the error's own, `=CODE`'s, or with `=` alone the page's own answer's.
//! - Once per request, unless `recursive_error_pages on` (then at most
//!   [`MAX_URI_CHANGES`] times).

use bytes::Bytes;
use hsmgate_config::nginx::{
    ErrorPage, ErrorPageStatus, ErrorPageTarget, MAX_URI_CHANGES, Matcher, ProxySettings, Server,
};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ProxyBody;
use crate::error_page::error_page;
use crate::generation::Generation;
use crate::reqlog::LogCtx;
use crate::rewrite_phase::{ActionRef, Routed, UriChange};
use crate::route::{Abort, RequestHead, answer};

/// The largest file an `error_page` answers with (error pages are small; a larger file
/// is an error, not something to load into memory).
const MAX_PAGE_FILE: u64 = 1 << 20;

/// In the extensions of an answer `error_page` must not replace: a `return CODE TEXT`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written;

/// In the extensions of an answer its upstream sent, where the location has `error_page`s
/// (`proxy_intercept_errors` decides whether they replace it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromUpstream;

/// `resp`, or what the `error_page` of `settings` for its status answers instead; the
/// settings of the location that answered.
pub(crate) async fn apply<'s>(
    generation: &Generation,
    server: &'s Server,
    settings: &'s ProxySettings,
    resp: Response<ProxyBody>,
    head: &RequestHead,
    log: &mut LogCtx,
) -> Result<(Response<ProxyBody>, &'s ProxySettings), Abort> {
    let (mut resp, mut settings) = (resp, settings);
    // Whether another error may go to a page: at first yes; after a page, if the location
    // that sent the request there had `recursive_error_pages on` (as nginx decides it).
    let mut another = true;
    // The challenges of the answers replaced so far (see `keep_challenges`).
    let mut challenges: Vec<HeaderValue> = Vec::new();
    for _ in 0..MAX_URI_CHANGES {
        let status = resp.status().as_u16();
        let from_upstream = resp.extensions().get::<FromUpstream>().is_some();
        if !another
            || (from_upstream && !settings.proxy_intercept_errors)
            || resp.extensions().get::<Written>().is_some()
        {
            break;
        }
        another = settings.recursive_error_pages;
        let Some(page) = settings
            .error_pages
            .iter()
            .find(|p| p.codes.contains(&status))
        else {
            break;
        };
        tracing::debug!(status, target = ?page.target, "error_page");
        if status == 401 {
            challenges.extend(
                resp.headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .cloned(),
            );
        }
        let (next, next_settings) = go(generation, server, settings, page, head, log).await?;
        settings = next_settings;
        resp = next;
        let code = match (page.status, &page.target) {
            (_, ErrorPageTarget::Redirect(_)) | (ErrorPageStatus::FromTarget, _) => None,
            (ErrorPageStatus::Original, _) => Some(status),
            (ErrorPageStatus::Set(c), _) => Some(c),
        };
        if let Some(code) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
            *resp.status_mut() = code;
        }
    }
    keep_challenges(resp.headers_mut(), challenges);
    Ok((resp, settings))
}

/// nginx keeps a 401's `WWW-Authenticate` (`auth_basic`'s realm, an `auth_request`
/// service's challenge, an intercepted upstream's) through `error_page`, whatever the page answers
/// (a file, a named location, an upstream, a redirect): a custom 401 page still makes a
/// browser ask for credentials. The kept challenges come first, then the page's own.
fn keep_challenges(headers: &mut http::HeaderMap, mut challenges: Vec<HeaderValue>) {
    if challenges.is_empty() {
        return;
    }
    challenges.extend(headers.get_all(header::WWW_AUTHENTICATE).iter().cloned());
    headers.remove(header::WWW_AUTHENTICATE);
    for c in challenges {
        headers.append(header::WWW_AUTHENTICATE, c);
    }
}

/// The answer of `page`'s target, and the settings that apply there.
async fn go<'s>(
    generation: &Generation,
    server: &'s Server,
    settings: &'s ProxySettings,
    page: &ErrorPage,
    head: &RequestHead,
    log: &mut LogCtx,
) -> Result<(Response<ProxyBody>, &'s ProxySettings), Abort> {
    let routed = match &page.target {
        ErrorPageTarget::Redirect(t) => {
            let url = log.vars(&head.headers).expand(t);
            let code = match page.status {
                ErrorPageStatus::Set(c @ (301 | 302 | 303 | 307 | 308)) => c,
                _ => 302,
            };
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
            let mut resp = error_page(code);
            if let Ok(v) = HeaderValue::from_str(&url) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Ok((resp, settings));
        }
        ErrorPageTarget::Uri(t) => {
            let target = log.vars(&head.headers).expand(t);
            let (path, args) = target.split_once('?').unwrap_or((&target, ""));
            let Some(uri) = crate::uri::normalize(path, settings.merge_slashes) else {
                tracing::error!(target = %target, "error_page target is not a valid URI: 500");
                return Ok((error_page(StatusCode::INTERNAL_SERVER_ERROR), settings));
            };
            log.uri = uri;
            log.args = Some(args.to_owned());
            let mut routed = crate::rewrite_phase::route(server, log, &head.headers, true);
            if routed.uri_change == UriChange::None {
                routed.uri_change = UriChange::Changed;
            }
            routed
        }
        ErrorPageTarget::Named(name) => {
            let named = server
                .locations
                .iter()
                .find(|l| matches!(&l.matcher, Matcher::Exact(p) if p == name));
            let Some(l) = named else {
                tracing::error!(location = %name, "could not find named location: 500");
                return Ok((error_page(StatusCode::INTERNAL_SERVER_ERROR), settings));
            };
            Routed {
                settings: &l.settings,
                action: l.action.as_ref().map(ActionRef::from),
                location: Some(l),
                uri_change: UriChange::None,
            }
        }
    };
    let next_settings = routed.settings;
    // To a URI the method becomes GET (a HEAD stays); a named location keeps it.
    let get = !matches!(page.target, ErrorPageTarget::Named(_));
    let parts = head.parts(&log.uri, get);
    let resp = answer(generation, server, routed, parts, None, log, true).await?;
    Ok((resp, next_settings))
}

impl RequestHead {
    /// The request sent to an `error_page`'s target, without its body: with `get`, a
    /// GET (a HEAD stays one), else the request's method.
    fn parts(&self, uri: &str, get: bool) -> http::request::Parts {
        let method = match !get || self.method == http::Method::HEAD {
            true => self.method.clone(),
            false => http::Method::GET,
        };
        internal_request(method, uri, self.version, &self.headers)
    }
}

/// An internal request (an `error_page`'s, an `auth_request`'s subrequest) to `uri`:
/// `headers` without those of a body, which it does not have.
pub(crate) fn internal_request(
    method: http::Method,
    uri: &str,
    version: http::Version,
    headers: &http::HeaderMap,
) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri.parse().unwrap_or_default();
    parts.version = version;
    parts.headers = headers.clone();
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
    ] {
        parts.headers.remove(name);
    }
    parts
}

/// The file `uri` names under the location's `root` (nginx's static answer, for the
/// page of an `error_page` only): 404 without a `root`, for a directory or a missing
/// file; 403 when it cannot be read for permissions; 500 otherwise or when over
/// [`MAX_PAGE_FILE`].
pub(crate) async fn file(settings: &ProxySettings, uri: &str) -> Response<ProxyBody> {
    let Some(root) = &settings.root else {
        return error_page(StatusCode::NOT_FOUND);
    };
    if uri.ends_with('/') {
        return error_page(StatusCode::NOT_FOUND);
    }
    // `uri` is normalised: no `..` segment leaves the root.
    let path = root.join(uri.trim_start_matches('/'));
    let read = async {
        let meta = tokio::fs::metadata(&path).await?;
        if meta.is_dir() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        if meta.len() > MAX_PAGE_FILE {
            return Err(std::io::Error::other(format!(
                "over {MAX_PAGE_FILE} bytes: not an error page"
            )));
        }
        tokio::fs::read(&path).await
    };
    match read.await {
        Ok(bytes) => {
            let mut resp = Response::new(
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            let ct = content_type(uri);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            resp
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "open() failed");
            error_page(match e.kind() {
                std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            })
        }
    }
}

/// The `Content-Type` of an error page by its extension (nginx's `mime.types` for the
/// kinds error pages are made of; others `application/octet-stream`, Debian's
/// `default_type`).
fn content_type(uri: &str) -> &'static str {
    let ext = uri.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" | "shtml" => "text/html",
        "txt" => "text/plain",
        "css" => "text/css",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "text/xml",
        "svg" | "svgz" => "image/svg+xml",
        "png" => "image/png",
        "gif" => "image/gif",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_of_replaced_answers_come_first() {
        let mut headers = http::HeaderMap::new();
        keep_challenges(&mut headers, Vec::new());
        assert!(headers.is_empty());
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Page"));
        headers.insert(header::LOCATION, HeaderValue::from_static("/x"));
        let kept = vec![HeaderValue::from_static("Basic realm=\"A\"")];
        keep_challenges(&mut headers, kept);
        let all: Vec<_> = headers.get_all(header::WWW_AUTHENTICATE).iter().collect();
        assert_eq!(all, ["Basic realm=\"A\"", "Page"]);
        assert_eq!(headers[header::LOCATION], "/x");
    }

    #[test]
    fn content_types_of_error_pages() {
        assert_eq!(content_type("/50x.html"), "text/html");
        assert_eq!(content_type("/a/B.PNG"), "image/png");
        assert_eq!(content_type("/noext"), "application/octet-stream");
    }
}
