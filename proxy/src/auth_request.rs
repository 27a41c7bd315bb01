//! nginx's `auth_request URI`: before a request is served, a subrequest to `URI` (a GET
//! with the request's headers and no body, through the location `URI` selects, internal
//! ones included, with that location's `proxy_pass` or `return`) decides: a 2xx lets the
//! request through, a 401 (with the subrequest's `WWW-Authenticate`) or a 403 refuses
//! it, anything else is a 500 ("auth request unexpected status" in the error log). The
//! `auth_request_set`s then run with the subrequest's variables (`$upstream_status`,
//! `$upstream_http_NAME`), whatever the outcome, as nginx runs them (checked against
//! Debian's nginx 1.22). A subrequest skips the access checks and limits of the
//! location it reaches, as nginx's do, and its answer's body is not read.

use hsmgate_config::nginx::{ProxySettings, Server};
use http::StatusCode;
use http::header::{self, HeaderValue};

use crate::generation::Generation;
use crate::reqlog::LogCtx;
use crate::rewrite_phase::{ActionRef, UriChange};

/// What the subrequest decided.
pub(crate) enum Verdict {
    /// 2xx: served.
    Allowed,
    /// 401 (with the subrequest's `WWW-Authenticate`s) or 403.
    Refused(StatusCode, Vec<HeaderValue>),
    /// Another status, or no answer: 500.
    Failed,
}

/// Runs `settings`' `auth_request` for the request `parts` of `log`, and its
/// `auth_request_set`s.
pub(crate) async fn check(
    generation: &Generation,
    server: &Server,
    settings: &ProxySettings,
    uri: &str,
    parts: &http::request::Parts,
    log: &mut LogCtx,
) -> Verdict {
    let (path, args) = match uri.split_once('?') {
        Some((p, a)) => (p, Some(a)),
        None => (uri, None),
    };
    let mut sub = log.subrequest(path, args);
    let mut routed = crate::rewrite_phase::route(server, &mut sub, &parts.headers, true);
    // The subrequest's own URI is what a `proxy_pass` maps (not the request's line).
    if routed.uri_change == UriChange::None {
        routed.uri_change = UriChange::Changed;
    }
    let sub_parts = crate::error_redirect::internal_request(
        http::Method::GET,
        uri,
        parts.version,
        &parts.headers,
    );
    let location_settings = routed.settings;
    let resp = match routed.action {
        Some(ActionRef::Proxy(p)) => {
            let Some(location) = routed.location else {
                return Verdict::Failed;
            };
            let to = crate::route::Destination {
                settings: location_settings,
                location,
                pass: p,
                uri_change: routed.uri_change,
            };
            Some(crate::route::proxy(generation, to, sub_parts, None, &mut sub).await)
        }
        Some(ActionRef::Return(r)) if r.code != 444 => {
            let vars = sub.vars(&parts.headers);
            Some(crate::route::return_response(r, location_settings, &vars))
        }
        Some(ActionRef::Redirect(code, _)) => StatusCode::from_u16(code)
            .ok()
            .map(crate::error_page::error_page),
        Some(ActionRef::StubStatus) => Some(crate::error_page::error_page(StatusCode::OK)),
        Some(ActionRef::AddSlash) => {
            Some(crate::error_page::error_page(StatusCode::MOVED_PERMANENTLY))
        }
        None => Some(crate::error_page::error_page(StatusCode::NOT_FOUND)),
        Some(ActionRef::Return(_) | ActionRef::Cycle) => None,
    };
    let status = resp.as_ref().map(|r| r.status());
    // `auth_request_set`: the subrequest's variables, into the request's.
    for set in &settings.auth_request_set {
        let value = sub.vars(&parts.headers).expand(&set.value);
        match log.set_vars.iter_mut().find(|(n, _)| *n == set.name) {
            Some(slot) => slot.1 = value,
            None => log.set_vars.push((set.name.clone(), value)),
        }
    }
    match (status, resp) {
        (Some(s), _) if s.is_success() => Verdict::Allowed,
        (Some(s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)), Some(resp)) => {
            let challenges = if s == StatusCode::UNAUTHORIZED {
                resp.headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            Verdict::Refused(s, challenges)
        }
        (s, _) => {
            let status = s.map_or(0, |s| s.as_u16());
            tracing::error!(client = %log.client.ip(), request = %log.request_uri, status, "auth request unexpected status: {status}");
            Verdict::Failed
        }
    }
}
