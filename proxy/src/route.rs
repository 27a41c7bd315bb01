//! One request through a generation, as nginx would route it: the server by
//! address and `Host`, the location by nginx's matching order, then `return` or
//! `proxy_pass` (with nginx's URI replacement, `proxy_set_header` templates, the
//! default `Host: $proxy_host` and `Connection: close`), `add_header`,
//! `client_max_body_size` (413) and the access log line once the body is sent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hsmgate_config::nginx::{
    AccessRule, AddHeader, LocationBlock, ProxyPass, ProxySettings, Return, Template,
    proxy_pass_uri, request_target, select_server,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use smallvec::SmallVec;

use crate::balance::UpstreamBody;
use crate::body::{BodyFault, ClientBody, ProxyBody};
use crate::conn_info::ConnInfo;
use crate::error::error_chain;
use crate::error_page::{bad_request_page, error_page, header_too_large_page, page};
use crate::generation::Generation;
use crate::h1guard::REJECT;
use crate::hop_by_hop::{copy_end_to_end, strip_hop_by_hop};
use crate::metrics::UpstreamResult;
use crate::reqlog::{LogCtx, LoggedBody, request_event};
use crate::rewrite_phase::{ActionRef, Routed, UriChange};
use crate::spool::Spooled;
use crate::upstream_h1::LeaveOut;
use crate::upstream_pool::SendError;
use crate::uri::{normalize, valid_host};
use crate::vars::{Answering, Tried, Vars};

/// One warning per process when no temporary file can be made for a request body.
static NO_TEMP_FILE_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The `Server` of hsmgate's answers (nginx sends `nginx` with `server_tokens off`).
const SERVER: &str = "hsmgate";

/// `return 444`: close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed without a response (return 444)")]
pub(crate) struct Abort;

/// Where a request stands on its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OnConn {
    /// Its number (the first is 1; `$connection_requests`).
    pub number: u64,
    /// Its head came in the read that ended the request before it (`$pipe`).
    pub pipelined: bool,
}

/// Serve one request, counted in [`REQUESTS`](crate::metrics::REQUESTS) by status;
/// `stream`, an HTTP/2 stream's count on its connection (`keepalive_timeout`), is held
/// until the answer has been sent, as the request's other counts are.
pub(crate) async fn handle(
    generation: Arc<Generation>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    on_conn: OnConn,
    stream: Option<crate::keepalive_limits::StreamOpen>,
) -> Result<Response<ProxyBody>, Abort> {
    let answer = serve(generation, conn, req, on_conn, stream).await;
    crate::metrics::request(match &answer {
        Ok(resp) => resp.status().as_u16(),
        Err(Abort) => 444,
    });
    answer
}

async fn serve(
    generation: Arc<Generation>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    on_conn: OnConn,
    stream: Option<crate::keepalive_limits::StreamOpen>,
) -> Result<Response<ProxyBody>, Abort> {
    let in_progress = crate::conn_stats::request();
    let started = SystemTime::now();
    let t0 = Instant::now();
    let (mut parts, body) = req.into_parts();
    let body = crate::body::RequestBody::new(body, parts.version);
    let upgrade = crate::tunnel::wants_upgrade(parts.version, &parts.headers);
    // RFC 9112 §3.2.2: an absolute-form target's authority wins over `Host` (nginx's
    // `$host`); for HTTP/2 it is `:authority`. Routing and forwarding use this one name.
    let http_host = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // A head the HTTP/1.1 guard refused, or an HTTP/2 request nginx refuses.
    let refused = refusal(&parts);
    let request_uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let protocol = match parts.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    // A Host nginx refuses: 400 from the default server (and logged there).
    let bad_host = refused.is_some() || http_host.as_deref().is_some_and(|h| !valid_host(h));
    let http_host = http_host.filter(|_| !bad_host);
    let Some(server) = select_server(&generation.servers, conn.listen, http_host.as_deref()) else {
        return Ok(error_page(StatusCode::NOT_FOUND));
    };
    drop_invalid_headers(&server.settings, &mut parts.headers);
    let (http2, send_timeout) = (
        parts.version == Version::HTTP_2,
        server.settings.client.send_timeout,
    );
    let server_name = server.server_name_variable();
    let normalized =
        normalize(parts.uri.path(), server.settings.merge_slashes).filter(|_| !bad_host);
    // A path that normalises (and a Host nginx takes): the request is routed.
    let uri_ok = normalized.is_some();
    // nginx's realip at post-read: the server's settings (http's and its own).
    let client = (server.settings.real_ip.as_ref())
        .and_then(|r| crate::realip::client(r, &conn, &parts.headers))
        .unwrap_or(conn.peer);
    let mut log = LogCtx {
        generation: Arc::clone(&generation),
        conn: Arc::clone(&conn),
        client,
        headers: HeaderMap::new(),
        method: parts.method.clone(),
        request_uri,
        uri: normalized.unwrap_or_default(),
        args: None,
        set_vars: Vec::new(),
        limit_status: ("", ""),
        limit_slots: Vec::new(),
        protocol,
        http_host,
        server_name,
        proxy_host: Arc::default(),
        upstream_addr: String::new(),
        started,
        t0,
        status: 0,
        targets: Vec::new(),
        request_id: std::sync::OnceLock::new(),
        upstream: Default::default(),
        request_body_length: 0,
        sent_headers: HeaderMap::new(),
        head_bytes: 0,
        upstream_headers: HeaderMap::new(),
        keep_upstream_headers: false,
        on_conn,
    };
    let routed = match uri_ok {
        false => Routed {
            settings: &server.settings,
            action: None,
            location: None,
            uri_change: UriChange::None,
        },
        true => crate::rewrite_phase::route(server, &mut log, &parts.headers, false),
    };
    // Plain HTTP on a TLS address: nginx answers before any location, with the server's
    // settings (its `error_page 497`).
    let settings = match conn.plain_on_tls {
        true => &server.settings,
        false => routed.settings,
    };
    log.targets = generation.access_logs(settings);
    log.keep_upstream_headers =
        log.logs_upstream_headers() || reads_upstream_headers(&settings.add_header);
    // The request's headers outlive the request (the upstream takes them) where the
    // access log or an `add_header` value reads them (`$http_origin`, `$cookie_…`).
    if !log.targets.is_empty() || reads_request_headers(&settings.add_header) {
        log.headers = parts.headers.clone();
    }
    // The Host's name against the SNI (compared without regard to case).
    let host_name = log.http_host.as_deref().map(crate::vars::strip_port);
    let cert_refusal = client_cert_refusal(&conn, server, host_name);
    // Kept for an `error_page` that sends the request elsewhere (its body is not).
    let head = (!settings.error_pages.is_empty()).then(|| RequestHead::of(&parts));
    let mut resp = match uri_ok {
        _ if refused.is_some() => {
            refused.map_or_else(|| error_page(StatusCode::BAD_REQUEST), refusal_page)
        }
        _ if not_allowed(&parts) => {
            tracing::info!(method = %parts.method, "client sent {} method: 405", parts.method);
            let mut resp = error_page(StatusCode::METHOD_NOT_ALLOWED);
            // What follows a CONNECT (or a TRACE's body) is not read: HTTP/1.x closes.
            if parts.version < Version::HTTP_2 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
        _ if conn.plain_on_tls => {
            // nginx's page, under its internal status until `error_page` has looked.
            let mut resp = bad_request_page(PLAIN_ON_TLS);
            *resp.status_mut() = StatusCode::from_u16(TO_HTTPS).expect("a valid status");
            resp
        }
        _ if cert_refusal.is_some() => cert_refusal.expect("checked"),
        false => error_page(StatusCode::BAD_REQUEST),
        true => {
            answer(
                &generation,
                server,
                routed,
                parts,
                Some(body),
                &mut log,
                false,
            )
            .await?
        }
    };
    let mut settings = settings;
    let kept_head = head;
    if let Some(head) = &kept_head {
        // Boxed, as `file` in `answer`: an `error_page` that sends the request elsewhere
        // answers it again (with `answer`'s whole state), and unboxed that state is laid
        // out in every request's future. With both boxed (and the upstream connection's
        // TLS state boxed, `upstream_h1::Io`), a request's future went from 8.4 to 3.4 KB,
        // which the connection's task allocates and copies for each request.
        (resp, settings) = Box::pin(crate::error_redirect::apply(
            &generation,
            server,
            settings,
            resp,
            head,
            &mut log,
        ))
        .await?;
    }
    if conn.plain_on_tls {
        // No `error_page 497` took it: nginx's 400 page. Either way the connection closes.
        if resp.status().as_u16() == TO_HTTPS {
            *resp.status_mut() = StatusCode::BAD_REQUEST;
        }
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // nginx's own `Server` on every answer (an upstream's only with `proxy_pass_header
    // Server`); hyper adds `Date` (the upstream's is hidden).
    resp.headers_mut()
        .entry(header::SERVER)
        .or_insert(HeaderValue::from_static(SERVER));
    if log.headers.is_empty()
        && reads_request_headers(&settings.add_header)
        && let Some(head) = &kept_head
    {
        // An `error_page` led to a location whose `add_header`s read the request's.
        log.headers = head.headers.clone();
    }
    crate::expires::apply(&settings.expires, &mut resp, &log);
    add_headers(&settings.add_header, &mut resp, &log);
    if !log.targets.is_empty() && log.logs_sent_headers() {
        log.sent_headers = resp.headers().clone();
    }
    if upgrade {
        crate::tunnel::close_unless_switched(&mut resp);
    }
    log.status = resp.status().as_u16();
    if !log.targets.is_empty() && log.logs_bytes_sent() {
        log.head_bytes = crate::reqlog::head_bytes(&resp, log.protocol, &log.headers);
    }
    let (parts, body) = resp.into_parts();
    let rate = crate::limit_rate::Rate {
        per_second: settings.limit_rate,
        after: settings.limit_rate_after,
    };
    let body = LoggedBody {
        in_progress: Some(in_progress),
        stream,
        limit_slots: std::mem::take(&mut log.limit_slots),
        inner: crate::limit_rate::LimitRate::wrap(body, rate),
        sent: 0,
        log: (!log.targets.is_empty()).then(|| Box::new(log)),
    }
    .boxed();
    // HTTP/1.x: `send_timeout` is the connection's (`conn.rs`); an HTTP/2 stream's window
    // is its own.
    let body = match http2 {
        true => crate::h2_send_timeout::StreamSendTimeout::wrap(body, send_timeout),
        false => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// nginx's internal status for plain HTTP on a TLS address (`NGX_HTTP_TO_HTTPS`), which
/// `error_page 497` may send elsewhere; otherwise the client gets a 400.
const TO_HTTPS: u16 = 497;

/// What nginx's 400 page says then.
const PLAIN_ON_TLS: &str = "The plain HTTP request was sent to HTTPS port";

/// A routed request's answer, as nginx's access and content phases give it: `allow` /
/// `deny` (403), `auth_basic` (401), then the action: 404 without one (or, for the page
/// of an `error_page` (`files`), the file under `root`), `return`, the slash redirect,
/// a rewrite's redirect or cycle, `proxy_pass`. `body` is `None` for a request sent
/// elsewhere by `error_page` (its body is not passed on).
pub(crate) async fn answer(
    generation: &Generation,
    server: &hsmgate_config::nginx::Server,
    routed: Routed<'_>,
    parts: http::request::Parts,
    body: Option<crate::body::RequestBody>,
    log: &mut LogCtx,
    files: bool,
) -> Result<Response<ProxyBody>, Abort> {
    let Routed {
        settings,
        action,
        location,
        uri_change,
    } = routed;
    // nginx's access phase: after `return` and the slash redirect (rewrite and
    // find-config phases), before the content. nginx checks a declared body against
    // client_max_body_size earlier still (the find-config phase): a request too large
    // for a denied location is a 413.
    let past_rewrites = matches!(
        action,
        None | Some(ActionRef::Proxy(_) | ActionRef::StubStatus)
    );
    // A location's own answers (`return`, a rewrite's redirect, the slash redirect) come
    // after that check too: a declared body too large is a 413 (a server's `return`
    // answers before it).
    if !past_rewrites
        && location.is_some()
        && let Some(refusal) = too_large(&parts, settings, log)
    {
        return Ok(refusal);
    }
    // nginx's realip again at pre-access, with the location's settings, unless the
    // server's already changed the client (a `return` answered before this phase).
    if past_rewrites
        && log.client == log.conn.peer
        && let Some(r) = &settings.real_ip
        && let Some(c) = crate::realip::client(r, &log.conn, &parts.headers)
    {
        log.client = c;
    }
    let checked = past_rewrites && !body_too_large(declared_length(&parts), settings);
    // nginx's pre-access phase: `limit_req` (which may wait), `limit_conn`.
    if checked
        && let Some(refusal) =
            crate::limits::preaccess(&generation.limits, &settings.limits, log, &parts.headers)
                .await
    {
        return Ok(refusal);
    }
    if checked && let Some(refusal) = access(generation, server, settings, &parts, log).await {
        return Ok(refusal);
    }
    Ok(match action {
        // Boxed: reading a file is rare and its future (tokio's) large; unboxed it sized
        // every request's state.
        None if files => Box::pin(crate::error_redirect::file(settings, &log.uri)).await,
        None => error_page(StatusCode::NOT_FOUND),
        Some(ActionRef::Return(r)) => {
            if r.code == 444 {
                log.status = 444;
                return Err(Abort);
            }
            return_response(r, settings, &log.vars(&parts.headers))
        }
        Some(ActionRef::AddSlash) => {
            let vars = log.vars(&parts.headers);
            let args = vars.get("is_args").into_owned() + &vars.get("args");
            let url = absolute(settings, &vars, &format!("{}/{args}", log.uri));
            redirect(StatusCode::MOVED_PERMANENTLY, &url)
        }
        Some(ActionRef::Redirect(code, url)) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
            let url = absolute(settings, &log.vars(&parts.headers), &url);
            redirect(code, &escape_location(&url))
        }
        Some(ActionRef::Cycle) => error_page(StatusCode::INTERNAL_SERVER_ERROR),
        Some(ActionRef::StubStatus) => stub_status(&parts.method),
        Some(ActionRef::Proxy(p)) => {
            let location = location.expect("a proxy_pass action comes from a location");
            let to = Destination {
                settings,
                location,
                pass: p,
                uri_change,
            };
            // Boxed: the proxy's future is most of a request's state, and rustc lays an
            // awaited future out again in each caller's; boxed here, the connection's
            // per-request box (`conn.rs`) stays small and no layer copies it whole.
            Box::pin(proxy(generation, to, parts, body, log)).await
        }
    })
}

/// nginx's access phase: `allow`/`deny` (403), then `auth_basic` (401); with `satisfy
/// all` (the default) both must let the request through, with `satisfy any` one that is
/// configured (the refusal then is the 401 when `auth_basic` refused, else the 403).
async fn access(
    generation: &Generation,
    server: &hsmgate_config::nginx::Server,
    settings: &ProxySettings,
    parts: &http::request::Parts,
    log: &mut LogCtx,
) -> Option<Response<ProxyBody>> {
    let client = log.client.ip();
    let any = settings.satisfy_any;
    let forbidden = || {
        tracing::error!(%client, request = %log.request_uri, "access forbidden by rule");
        error_page(StatusCode::FORBIDDEN)
    };
    // The checks in nginx's order: `allow`/`deny`, `auth_basic`, `auth_request`. With
    // `satisfy all` the first refusal answers; with `any` the first pass lets the
    // request through, and if none passes the refusal is a 401 if one gave it.
    let rules = (!settings.access_rules.is_empty())
        .then(|| AccessRule::allows(&settings.access_rules, client));
    let mut refusal = None;
    match rules {
        Some(false) if !any => return Some(forbidden()),
        Some(false) => refusal = Some(forbidden()),
        Some(true) if any => return None,
        _ => {}
    }
    if let Some(auth) = &settings.auth_basic {
        match crate::auth_basic::check(auth, &parts.headers).await {
            Ok(()) if any => return None,
            Ok(()) => {}
            Err(e) => {
                let resp = auth_refusal(&e, auth, &log.vars(&parts.headers), log.error_context());
                if !any || resp.status() != StatusCode::UNAUTHORIZED {
                    return Some(resp);
                }
                refusal = Some(resp);
            }
        }
    }
    if let Some(uri) = &settings.auth_request {
        use crate::auth_request::Verdict;
        let verdict = Box::pin(crate::auth_request::check(
            generation, server, settings, uri, parts, log,
        ))
        .await;
        match verdict {
            Verdict::Allowed if any => return None,
            Verdict::Allowed => {}
            Verdict::Failed => return Some(error_page(StatusCode::INTERNAL_SERVER_ERROR)),
            Verdict::Refused(status, challenges) => {
                let mut resp = error_page(status);
                for c in challenges {
                    resp.headers_mut().append(header::WWW_AUTHENTICATE, c);
                }
                let keep = refusal
                    .as_ref()
                    .is_some_and(|r| r.status() == StatusCode::UNAUTHORIZED);
                if !any {
                    return Some(resp);
                }
                if !keep {
                    refusal = Some(resp);
                }
            }
        }
    }
    refusal
}

/// What an `error_page` needs of the request to send it elsewhere: its method, version
/// and headers.
pub(crate) struct RequestHead {
    pub(crate) method: http::Method,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl RequestHead {
    fn of(parts: &http::request::Parts) -> RequestHead {
        RequestHead {
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }
}

/// What nginx answers instead of serving, when the server `Host` selects verifies
/// client certificates: 421 when the client sent an SNI other than that `Host` (the
/// certificate was asked for by another server's rules); 400 "No required SSL
/// certificate was sent" with `ssl_verify_client on` and none; 400 "The SSL certificate
/// error" for one that failed verification.
fn client_cert_refusal(
    conn: &ConnInfo,
    server: &hsmgate_config::nginx::Server,
    host: Option<&str>,
) -> Option<Response<ProxyBody>> {
    use crate::client_cert::Verify;
    use hsmgate_config::nginx::VerifyClient;
    conn.tls.as_ref()?;
    if server.tls.verify_client == VerifyClient::Off {
        return None;
    }
    if let (Some(sni), Some(host)) = (&conn.sni, host)
        && !sni.eq_ignore_ascii_case(host)
    {
        return Some(error_page(StatusCode::MISDIRECTED_REQUEST));
    }
    let verify = conn.client_cert.as_ref().map(|c| &c.verify);
    match (server.tls.verify_client, verify) {
        (_, Some(Verify::Failed(why))) => {
            // nginx's line, at its level (`info`).
            tracing::info!(client = %conn.peer, "client SSL certificate verify error: ({why}): 400");
            Some(bad_request_page("The SSL certificate error"))
        }
        (VerifyClient::On, None | Some(Verify::None)) => {
            Some(bad_request_page("No required SSL certificate was sent"))
        }
        _ => None,
    }
}

/// The answer to a request `auth_basic` refused: 401 with the realm's challenge, or
/// 403 / 500 when the password file is missing / cannot be read; logged as nginx logs it.
fn auth_refusal(
    e: &crate::auth_basic::AuthError,
    auth: &hsmgate_config::nginx::AuthBasic,
    vars: &Vars<'_>,
    context: crate::reqlog::ErrorContext,
) -> Response<ProxyBody> {
    use crate::auth_basic::AuthError;
    // With nginx's context (what fail2ban's `nginx-http-auth` filter reads).
    match e {
        AuthError::NoCredentials => request_event!(info, context, "{e}"),
        _ => request_event!(error, context, "{e}"),
    }
    if e.status() != 401 {
        return error_page(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN));
    }
    let mut resp = error_page(StatusCode::UNAUTHORIZED);
    let realm = vars.expand(&auth.realm).replace('"', "\\\"");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The status (nginx's internal 494 for "Request Header Or Cookie Too Large") of a request
/// refused before routing: by [`crate::h1guard`] (HTTP/1.x), or an HTTP/2 request whose
/// `host` disagrees with `:authority` or that has two (RFC 9113 §8.3.1).
fn refusal(parts: &http::request::Parts) -> Option<u16> {
    // Only the HTTP/1 guard writes this header (and refuses a client's own); over
    // HTTP/2 it is a client's header like any other, forwarded as nginx forwards it.
    if let Some(code) = parts
        .headers
        .get(REJECT)
        .filter(|_| parts.version < Version::HTTP_2)
    {
        return Some(
            code.to_str()
                .ok()
                .and_then(|c| c.parse().ok())
                .filter(|c| (400..=599).contains(c))
                .unwrap_or(400),
        );
    }
    if let Some(code) = target_refusal(parts) {
        return Some(code);
    }
    if parts.version != Version::HTTP_2 {
        return None;
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    match (first, second, authority) {
        (None, None, None) => {
            tracing::info!("client sent neither :authority nor host (HTTP/2): 400");
            Some(400)
        }
        (Some(_), Some(_), _) => {
            tracing::info!("client sent duplicate host header (HTTP/2): 400");
            Some(400)
        }
        (Some(host), None, Some(authority)) if !host.as_bytes().eq_ignore_ascii_case(authority) => {
            tracing::info!("client sent a host header that differs from :authority (HTTP/2): 400");
            Some(400)
        }
        _ => None,
    }
}

/// The method and request target as nginx's request-line parser takes them: a method
/// of `A`–`Z`, `_` and `-` only; a target in origin form (`/…`), or absolute form with a
/// host and no userinfo (RFC 9110 §4.2.2 and §4.2.4). The authority form (`host:port`,
/// CONNECT's: hsmgate is no forward proxy) and the asterisk form (`OPTIONS *`: a
/// request to the server itself, never forwarded) are 400, as nginx answers them.
fn target_refusal(parts: &http::request::Parts) -> Option<u16> {
    let method = parts.method.as_str();
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        tracing::info!(%method, "client sent an invalid method: 400");
        return Some(400);
    }
    let uri = &parts.uri;
    if let Some(authority) = uri.authority() {
        if uri.scheme().is_none() && parts.version != Version::HTTP_2 {
            tracing::info!(target = %uri, "client sent a request target in authority form: 400");
            return Some(400);
        }
        if authority.as_str().contains('@') || authority.host().is_empty() {
            tracing::info!(target = %uri, "client sent an absolute URI with userinfo or no host: 400");
            return Some(400);
        }
        // RFC 3986 §3.2.3: a port is digits (or empty); `http://evil:abc/` was taken as
        // host `evil` (nginx: 400). HTTP/1 absolute form only: nginx does not check an
        // HTTP/2 `:authority`'s port.
        let text = authority.as_str();
        let after_host = &text[text.rfind(']').map_or(0, |i| i + 1)..];
        if let Some((_, port)) = after_host.rsplit_once(':')
            && parts.version < Version::HTTP_2
            && !port.bytes().all(|b| b.is_ascii_digit())
        {
            tracing::info!(target = %uri, "client sent an authority with an invalid port: 400");
            return Some(400);
        }
    }
    if !uri.path().starts_with('/') {
        tracing::info!(target = %uri, "client sent a request target not starting with /: 400");
        return Some(400);
    }
    None
}

/// nginx answers `TRACE` (and, since 1.21.1, `CONNECT`) with 405 once the head is read,
/// without routing: no upstream sees them. An HTTP/2 extended CONNECT (RFC 8441, with
/// `:protocol`, e.g. WebSocket) is not refused here (hyper accepts one only when it is
/// enabled; HTTP/1.1 upgrades are `GET`s).
fn not_allowed(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::TRACE
        || (parts.method == http::Method::CONNECT
            && parts.extensions.get::<hyper::ext::Protocol>().is_none())
}

/// RFC 9113 §8.2.3: HTTP/2 clients may split `cookie` into several fields; they are
/// joined with `"; "` into one before the request goes on as HTTP/1.1 (as nginx does).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// An upstream response's framing made right before it goes on: the status line is
/// HTTP/1.1 whatever the upstream spoke (an HTTP/1.0 answer would make an HTTP/1.1
/// client close its connection; hyper chunks a close-delimited body); a
/// `Content-Length` beside `Transfer-Encoding` is dropped (RFC 9112 §6.3: the encoding
/// wins, and the length would promise bytes the decoded body does not have); a 1xx or
/// 204 carries none (RFC 9110 §8.6; an HTTP/2 client refuses the response otherwise).
fn upstream_framing<B>(resp: &mut Response<B>) {
    *resp.version_mut() = Version::HTTP_11;
    let status = resp.status();
    let headers = resp.headers_mut();
    if headers.contains_key(header::TRANSFER_ENCODING)
        || status == StatusCode::NO_CONTENT
        || status.is_informational()
    {
        headers.remove(header::CONTENT_LENGTH);
    }
}

fn refusal_page(code: u16) -> Response<ProxyBody> {
    match code {
        494 => header_too_large_page(),
        code => error_page(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)),
    }
}

/// The body length a request declares (`Content-Length`), if it reads as one.
fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// nginx's 413 for a declared body over `client_max_body_size`, logged in its words,
/// level and context (a log watcher finds the client).
fn too_large(
    parts: &http::request::Parts,
    settings: &ProxySettings,
    log: &LogCtx,
) -> Option<Response<ProxyBody>> {
    let length = declared_length(parts);
    if !body_too_large(length, settings) {
        return None;
    }
    request_event!(
        error,
        log.error_context(),
        "client intended to send too large body: {} bytes",
        length.unwrap_or_default()
    );
    Some(error_page(StatusCode::PAYLOAD_TOO_LARGE))
}

/// A declared body `length` over `client_max_body_size`.
fn body_too_large(length: Option<u64>, settings: &ProxySettings) -> bool {
    matches!((settings.client_max_body_size, length), (Some(max), Some(len)) if len > max)
}

/// Where a request is proxied: the location's settings, the location, its
/// `proxy_pass`, and how a rewrite changed the URI.
pub(crate) struct Destination<'a> {
    pub(crate) settings: &'a ProxySettings,
    pub(crate) location: &'a LocationBlock,
    pub(crate) pass: &'a ProxyPass,
    pub(crate) uri_change: UriChange,
}

pub(crate) async fn proxy(
    generation: &Generation,
    to: Destination<'_>,
    mut parts: http::request::Parts,
    body: Option<crate::body::RequestBody>,
    log: &mut LogCtx,
) -> Response<ProxyBody> {
    let Destination {
        settings,
        location,
        pass,
        uri_change,
    } = to;
    if let Some(refusal) = too_large(&parts, settings, log) {
        return refusal;
    }
    let length = declared_length(&parts);
    // A URL with variables names its upstream (and maybe the URI) per request; `held`
    // keeps the upstream group found for the request.
    let (held, dynamic_uri);
    let balancer = match &pass.target {
        hsmgate_config::nginx::UpstreamRef::Dynamic(t)
        | hsmgate_config::nginx::UpstreamRef::DynamicUrl(t) => {
            let expanded = log.vars(&parts.headers).expand(t);
            // The scheme too from a variable: read from the value, as nginx reads it.
            let (https, url) = match &pass.target {
                hsmgate_config::nginx::UpstreamRef::DynamicUrl(_) => {
                    match hsmgate_config::nginx::url_scheme(&expanded) {
                        Some((https, skip)) => (https, &expanded[skip..]),
                        None => {
                            tracing::error!(url = %expanded, "invalid URL prefix in \"proxy_pass\" with variables: 500");
                            return error_page(StatusCode::INTERNAL_SERVER_ERROR);
                        }
                    }
                }
                _ => (pass.https, expanded.as_str()),
            };
            // The host ends at the URI part, or at arguments written right after it
            // (`http://b?q=1` sends `/?q=1`, as nginx).
            let (host, uri) = match url.find(['/', '?']) {
                Some(i) if url.as_bytes()[i] == b'?' => {
                    (&url[..i], Some(format!("/{}", &url[i..])))
                }
                Some(i) => (&url[..i], Some(url[i..].to_owned())),
                None => (url, None),
            };
            // Bytes a request target cannot carry (a space or non-ASCII, which a capture
            // of the decoded path may hold) go as `%XX`, as nginx sends them.
            let uri = uri.map(|u| match u.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                true => u,
                false => escape_location(&u),
            });
            if let Some(uri) = &uri
                && uri.parse::<http::uri::PathAndQuery>().is_err()
            {
                tracing::error!(uri = %uri, "invalid URI in \"proxy_pass\" with variables: 500");
                return error_page(StatusCode::INTERNAL_SERVER_ERROR);
            }
            dynamic_uri = uri;
            match generation.dynamic_balancer(https, settings, host) {
                Ok(b) => {
                    held = b;
                    // `$proxy_host` as written, without the scheme's port.
                    let port = if https { ":443" } else { ":80" };
                    log.proxy_host = Arc::from(host.strip_suffix(port).unwrap_or(host));
                    &*held
                }
                Err(why) => {
                    tracing::error!(path = %log.request_uri, "{why}: 502");
                    return error_page(StatusCode::BAD_GATEWAY);
                }
            }
        }
        _ => {
            dynamic_uri = None;
            match generation.balancer(pass, settings) {
                Some(b) => {
                    held = b;
                    log.proxy_host = Arc::clone(&held.proxy_host);
                    &*held
                }
                None => {
                    // Every static `proxy_pass` has its group made at load: a bug if not.
                    tracing::error!(path = %log.request_uri, target = ?pass.target, "no upstream group was prepared for this proxy_pass: 502");
                    return error_page(StatusCode::BAD_GATEWAY);
                }
            }
        }
    };
    let path = match (dynamic_uri, uri_change) {
        // A URI part with variables replaces the request's URI whole, as nginx passes it.
        (Some(uri), _) => uri,
        (None, uri_change) => match uri_change {
            UriChange::None => {
                proxy_pass_uri(location, pass.uri.as_deref(), &log.request_uri, &log.uri)
            }
            UriChange::Changed | UriChange::Break => {
                let args = log.args.as_deref().unwrap_or_default();
                let full = request_target(&log.uri, args);
                match uri_change {
                    UriChange::Break => full,
                    _ => proxy_pass_uri(location, pass.uri.as_deref(), &full, &log.uri),
                }
            }
        },
    };
    // `proxy_pass_request_headers off`: none of the client's headers but the body's
    // framing; `proxy_pass_request_body off` / `proxy_set_body`: not the client's body.
    // The `proxy_set_header` names, parsed once per configuration (an invalid one is
    // left out, as before).
    let names = generation.set_header_names(settings);
    let set: SmallVec<[(&HeaderName, &Template); 8]> =
        (names.iter().zip(&settings.proxy_set_header))
            .filter_map(|(name, (_, t))| Some((name.as_ref()?, t)))
            .collect();
    let mut headers = match settings.proxy_pass_request_headers {
        // Without the hop-by-hop headers, `Host` (set below), `Expect` (nginx never passes
        // it: hsmgate itself answers `100 Continue` as it reads) and those set below.
        true => {
            let skip = |name: &HeaderName| {
                name == header::HOST
                    || name == header::EXPECT
                    || set.iter().any(|(set, _)| set == name)
            };
            copy_end_to_end(&parts.headers, set.len() + 2, skip)
        }
        // Only the body's length (a chunked body is framed again by the upstream
        // client, as the hop-by-hop `Transfer-Encoding` is never passed on).
        false => {
            let mut h = HeaderMap::new();
            if let Some(v) = parts.headers.get(header::CONTENT_LENGTH) {
                h.insert(header::CONTENT_LENGTH, v.clone());
            }
            h
        }
    };
    let set_body = (settings.proxy_set_body.as_ref()).map(|t| log.vars(&parts.headers).expand(t));
    let body = body.filter(|_| settings.proxy_pass_request_body && set_body.is_none());
    if !settings.proxy_pass_request_body || set_body.is_some() {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut headers);
    }
    let (mut set_host, mut set_connection) = (false, false);
    {
        let vars = log.vars(&parts.headers);
        for (i, &(name, template)) in set.iter().enumerate() {
            set_host |= *name == header::HOST;
            set_connection |= *name == header::CONNECTION;
            // The expanded text becomes the value without a copy.
            let value = Bytes::from(vars.expand(template));
            match HeaderValue::from_maybe_shared(value) {
                Ok(v) if !v.is_empty() => {
                    headers.insert(name.clone(), v);
                }
                // An empty value sends no such header: none of the client's (left out of
                // the copy, or kept as the body's framing without it) nor one set before.
                _ if !settings.proxy_pass_request_headers
                    || set[..i].iter().any(|(earlier, _)| earlier == name) =>
                {
                    headers.remove(name);
                }
                _ => {}
            }
        }
    }
    if !set_host {
        // The group's own value, made once, unless the name came from variables.
        let value = match Arc::ptr_eq(&log.proxy_host, &balancer.proxy_host) {
            true => balancer.host_header.clone(),
            false => HeaderValue::from_str(&log.proxy_host).ok(),
        };
        if let Some(v) = value {
            headers.insert(header::HOST, v);
        }
    }
    if !set_connection {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // A tunnel when the client asks for one and the configuration forwards its Upgrade
    // (nginx forwards it only when `proxy_set_header Upgrade` says so).
    let client_upgrade = match crate::tunnel::wants_upgrade(parts.version, &parts.headers)
        && headers.contains_key(header::UPGRADE)
    {
        true => parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        false => None,
    };
    // `proxy_request_buffering on` (nginx's default): the body is read whole first, so
    // it can be sent again to the next server when a connection cannot be made (nginx's
    // `proxy_next_upstream error`), and one over client_max_body_size is a 413 before any
    // upstream is contacted. `off`: streamed as it arrives, and not retried.
    // A streamed body is counted as its Content-Length; a buffered one as read.
    log.request_body_length = length.unwrap_or(0);
    let fault = BodyFault::default();
    let mut buffered: Option<Spooled> = None;
    let mut streamed: Option<UpstreamBody> = None;
    match body.filter(|b| !b.is_end_stream()) {
        None => buffered = Some(Spooled::Memory(Bytes::new())),
        Some(body) if settings.proxy_request_buffering => {
            let max = settings.client_max_body_size;
            let memory = settings.client_body_buffer_size;
            match crate::spool::read(body, max, memory, settings.client.body_timeout).await {
                Ok(spooled) => {
                    // The body is here: nothing to continue (nginx does not pass Expect).
                    headers.remove(header::EXPECT);
                    headers.remove(header::TRANSFER_ENCODING);
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(spooled.len()));
                    log.request_body_length = spooled.len();
                    buffered = Some(spooled);
                }
                Err(crate::spool::SpoolError::Unspooled(u)) => {
                    let u = *u;
                    if !NO_TEMP_FILE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(error = %u.error, "request bodies over client_body_buffer_size are streamed (and not retried on another server): no temporary file can be made in $TMPDIR");
                    }
                    let max = max.map(|m| m.saturating_sub(u.seen));
                    let rest =
                        ClientBody::new(u.rest, max, settings.client.body_timeout, fault.clone());
                    streamed = Some(crate::spool::Prefixed::new(u.head, rest).boxed());
                }
                Err(e) => {
                    tracing::info!(path = %log.request_uri, error = %e, "request body not read");
                    return error_page(e.status());
                }
            }
        }
        Some(body) => {
            let timeout = settings.client.body_timeout;
            let client =
                ClientBody::new(body, settings.client_max_body_size, timeout, fault.clone());
            streamed = Some(client.boxed());
        }
    }
    if let Some(b) = set_body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        buffered = Some(Spooled::Memory(Bytes::from(b)));
        streamed = None;
    }
    let client = {
        // The variables only for a TLS name with variables.
        match balancer.client(|t| log.vars(&parts.headers).expand(t)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(upstream = %balancer.name, error = %e, "upstream TLS name: 502");
                return error_page(StatusCode::BAD_GATEWAY);
            }
        }
    };
    let retry = buffered.is_some();
    let order = {
        let key = (balancer.hash_key()).map(|k| log.vars(&parts.headers).expand(k));
        balancer.order(log.client.ip(), key.as_deref().unwrap_or(""))
    };
    // `proxy_next_upstream`: a request whose body is kept moves on after these failures,
    // once sent only if it is idempotent (or `non_idempotent` says so).
    let next = &settings.proxy_next_upstream;
    let idempotent = matches!(
        parts.method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    );
    let sent_may_move = idempotent || next.non_idempotent;
    // When the first try was sent (`proxy_next_upstream_timeout`).
    let mut first_try = None;
    // The request line's target (origin form), the same for every server tried.
    // (An absolute-form URI was built before, and a path not starting with `/` made it
    // invalid: still a 400.)
    let target = match path.starts_with('/') {
        true => http::Uri::try_from(path).ok(),
        false => None,
    };
    let Some(mut target) = target else {
        return error_page(StatusCode::BAD_REQUEST);
    };
    // The upstream's hop-by-hop and hidden headers are left out as its head is read,
    // unless something reads the headers as they came (`$upstream_http_…`): then they
    // are removed after the copy below.
    let hidden = |name: &str| settings.hides(name);
    let leave_out = match log.keep_upstream_headers {
        true => LeaveOut::default(),
        false => LeaveOut {
            hop_by_hop: true,
            hidden: Some(&hidden),
        },
    };
    for (n, addr) in order.iter().enumerate() {
        log.upstream_addr = (*addr).to_owned();
        let req_body: UpstreamBody = match (&buffered, streamed.take()) {
            (Some(b), _) if b.is_empty() => crate::balance::empty_body(),
            (Some(b), _) => b.body(),
            (None, Some(b)) => b,
            (None, None) => crate::balance::empty_body(),
        };
        let mut req = Request::new(req_body);
        *req.method_mut() = match &settings.proxy_method {
            Some(m) => {
                http::Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| parts.method.clone())
            }
            None => parts.method.clone(),
        };
        // The last try takes the target and the headers; earlier ones (retries) copy them
        // (the first copy of a target made from a `String` would allocate).
        let last = n + 1 == order.len();
        *req.uri_mut() = match last {
            true => std::mem::take(&mut target),
            false => target.clone(),
        };
        *req.headers_mut() = match last {
            true => std::mem::take(&mut headers),
            false => headers.clone(),
        };
        let sent_at = Instant::now();
        let first_try = *first_try.get_or_insert(sent_at);
        // In progress on `addr` (for `least_conn`) until its answer's body is read.
        let load = balancer.load(addr);
        // A timeout (`proxy_send_timeout`, `proxy_read_timeout`, connecting included)
        // apart from the other failures: nginx answers it with 504.
        let sent = match client
            .request(
                addr,
                req,
                crate::upstream_pool::Timeouts {
                    send: settings.proxy_send_timeout,
                    read: settings.proxy_read_timeout,
                },
                leave_out,
            )
            .await
        {
            Err(e @ SendError::TimedOut(..)) => Err(e),
            other => Ok(other),
        };
        let result = match &sent {
            Ok(Ok(_)) => UpstreamResult::Ok,
            Ok(Err(_)) => UpstreamResult::Error,
            Err(_) => UpstreamResult::Timeout,
        };
        // One clock read for the try's times (its log entries and the group's metrics).
        let took = sent_at.elapsed();
        balancer.times.record(result, took);
        // Another server is left, and `proxy_next_upstream_tries` / `_timeout` allow it
        // (the failure decides below whether it is tried).
        let another =
            retry && n + 1 < order.len() && next.may_try_another(n + 1, first_try.elapsed());
        match &sent {
            Ok(Ok(resp)) => {
                log.upstream.answering = Some(Answering {
                    status: resp.status().as_u16(),
                    sent: sent_at,
                    connect: resp.body().connect_time(),
                    header: took,
                    received: None,
                });
            }
            Ok(Err(_)) => log.upstream.done.push(Tried {
                status: 502,
                time: took,
                header: None,
            }),
            Err(_) => log.upstream.done.push(Tried {
                status: 504,
                time: took,
                header: None,
            }),
        }
        match sent {
            Ok(Ok(resp))
                if another && sent_may_move && next.statuses.contains(&resp.status().as_u16()) =>
            {
                let status = resp.status().as_u16();
                let header = log.upstream.answering.take().map(|a| a.header);
                log.upstream.done.push(Tried {
                    status,
                    time: sent_at.elapsed(),
                    header,
                });
                // nginx counts a 500, 502, 503 or 504 against the server, not a 403,
                // 404 or 429.
                if matches!(status, 500 | 502..=504) {
                    balancer.failed(addr);
                }
                tracing::warn!(upstream = %addr, group = %balancer.name, status, "upstream answered with a status proxy_next_upstream names; trying the next server");
            }
            Ok(Ok(mut resp)) => {
                balancer.succeeded(addr);
                if !settings.error_pages.is_empty() {
                    resp.extensions_mut()
                        .insert(crate::error_redirect::FromUpstream);
                }
                if log.keep_upstream_headers {
                    log.upstream_headers = resp.headers().clone();
                }
                if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                    upstream_framing(&mut resp);
                    if log.keep_upstream_headers {
                        strip_hop_by_hop(resp.headers_mut());
                        hide_headers(settings, resp.headers_mut());
                    }
                    let vars = log.vars(&parts.headers);
                    crate::proxy_redirect::rewrite(settings, resp.headers_mut(), &vars);
                    crate::set_cookie::rewrite(settings, resp.headers_mut(), &vars);
                    resp.body_mut().hold(load);
                    if log.logs_upstream_length()
                        && let Some(answering) = &mut log.upstream.answering
                    {
                        let received = Arc::default();
                        resp.body_mut().count_into(Arc::clone(&received));
                        answering.received = Some(received);
                    }
                    return resp.map(|b| b.boxed());
                }
                let Some(client) = client_upgrade else {
                    // A 101 nobody asked for cannot be passed on.
                    tracing::error!(upstream = %addr, "upstream switched protocols unasked: 502");
                    return error_page(StatusCode::BAD_GATEWAY);
                };
                // The upstream's own Upgrade and Connection, before hop-by-hop headers go.
                let upstream_headers = resp.headers().clone();
                strip_hop_by_hop(resp.headers_mut());
                hide_headers(settings, resp.headers_mut());
                let Some(upstream) = resp.body_mut().take_switched() else {
                    return error_page(StatusCode::BAD_GATEWAY);
                };
                crate::tunnel::switching_headers(&upstream_headers, resp.headers_mut());
                tokio::spawn(crate::tunnel::run(
                    client,
                    upstream,
                    settings.proxy_read_timeout,
                    (*addr).to_owned(),
                    parts.extensions.remove::<crate::drain::Watcher>(),
                ));
                return resp.map(|b| b.boxed());
            }
            // The client's body failed: the client's fault, not the server's.
            Ok(Err(e)) if fault.status().is_some() => {
                tracing::info!(upstream = %addr, path = %log.request_uri, error = %error_chain(&e), "client request body failed");
                return error_page(fault.status().unwrap_or(StatusCode::BAD_REQUEST));
            }
            // A connect timeout is a timeout, as nginx counts it.
            Ok(Err(e)) if e.is_connect_timeout() && another && next.timeout => {
                balancer.failed(addr);
                tracing::error!(upstream = %addr, group = %balancer.name, timeout = ?settings.proxy_connect_timeout, "upstream timed out while connecting; trying the next server");
            }
            Ok(Err(e)) if e.is_connect_timeout() => {
                balancer.failed(addr);
                request_event!(error, log.error_context(), upstream = %addr, timeout = ?settings.proxy_connect_timeout, "upstream timed out while connecting: 504");
                return error_page(StatusCode::GATEWAY_TIMEOUT);
            }
            // An invalid response head moves on only with `invalid_header`, as nginx.
            Ok(Err(e))
                if e.is_invalid_head() && another && next.invalid_header && sent_may_move =>
            {
                balancer.failed(addr);
                tracing::error!(upstream = %addr, group = %balancer.name, error = %error_chain(&e), "upstream sent an invalid response head; trying the next server");
            }
            Ok(Err(e)) if e.is_invalid_head() => {
                balancer.failed(addr);
                request_event!(error, log.error_context(), upstream = %addr, group = %balancer.name, error = %error_chain(&e), "upstream sent an invalid response head: 502");
                return error_page(StatusCode::BAD_GATEWAY);
            }
            Ok(Err(e)) if another && next.error && (e.is_connect() || sent_may_move) => {
                balancer.failed(addr);
                tracing::error!(upstream = %addr, group = %balancer.name, error = %error_chain(&e), "upstream failed; trying the next server");
            }
            Ok(Err(e)) => {
                balancer.failed(addr);
                request_event!(error, log.error_context(), upstream = %addr, group = %balancer.name, error = %error_chain(&e), "upstream request failed: 502");
                return error_page(StatusCode::BAD_GATEWAY);
            }
            Err(_) if fault.status().is_some() => {
                return error_page(fault.status().unwrap_or(StatusCode::REQUEST_TIMEOUT));
            }
            Err(e) if another && next.timeout && sent_may_move => {
                balancer.failed(addr);
                tracing::error!(upstream = %addr, group = %balancer.name, error = %e, "upstream timed out; trying the next server");
            }
            Err(e) => {
                balancer.failed(addr);
                request_event!(error, log.error_context(), upstream = %addr, error = %e, "upstream timed out: 504");
                return error_page(StatusCode::GATEWAY_TIMEOUT);
            }
        }
    }
    error_page(StatusCode::BAD_GATEWAY)
}

/// Removes the upstream response headers nginx would not pass: `proxy_hide_header`s and
/// its defaults (`Server`, `Date`, `X-Pad`, `X-Accel-*`) but for `proxy_pass_header`s.
fn hide_headers(settings: &ProxySettings, headers: &mut HeaderMap) {
    // One pass finds the hidden names present (few: an upstream's `Date` and `Server`),
    // kept without allocating; more than fit are found by further passes.
    loop {
        let mut found: [Option<HeaderName>; 4] = Default::default();
        let mut n = 0;
        for name in headers.keys().filter(|n| settings.hides(n.as_str())) {
            if n == found.len() {
                break;
            }
            found[n] = Some(name.clone());
            n += 1;
        }
        for name in found.iter_mut().filter_map(Option::take) {
            headers.remove(name);
        }
        if n < found.len() {
            return;
        }
    }
}

/// nginx's `ignore_invalid_headers on` (the default): a request header whose name has
/// other characters than letters, digits and `-` (and `_` with `underscores_in_headers
/// on`) is dropped, for the variables and the upstream alike, and logged at info level
/// as nginx logs it.
fn drop_invalid_headers(settings: &ProxySettings, headers: &mut HeaderMap) {
    if !settings.ignore_invalid_headers {
        return;
    }
    // Names are lower case here: letters, digits and `-`, by a table (asked of every
    // byte of every request's names).
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
            b += 1;
        }
        t
    };
    let underscores = settings.underscores_in_headers;
    let valid = |n: &HeaderName| {
        (n.as_str().bytes()).all(|b| PLAIN[usize::from(b)] || (underscores && b == b'_'))
    };
    if headers.keys().all(valid) {
        return;
    }
    let invalid: Vec<HeaderName> = headers.keys().filter(|n| !valid(n)).cloned().collect();
    for name in invalid {
        tracing::info!(header = %name, "client sent invalid header line: ignored");
        headers.remove(name);
    }
}

/// nginx's `absolute_redirect on` (the default): a redirect to `/path` names scheme,
/// host and, with `port_in_redirect on` (the default), the server's port when not the
/// scheme's default; `absolute_redirect off` leaves it as written.
pub(crate) fn absolute(settings: &ProxySettings, vars: &Vars<'_>, target: &str) -> String {
    if !target.starts_with('/') || !settings.absolute_redirect {
        return target.to_owned();
    }
    let scheme = vars.get("scheme");
    let default = if scheme == "https" { 443 } else { 80 };
    let port = match vars.conn.local_port {
        _ if !settings.port_in_redirect => String::new(),
        p if p == default => String::new(),
        p => format!(":{p}"),
    };
    format!("{scheme}://{}{port}{target}", vars.host())
}

/// A `rewrite`'s redirect target as a `Location` value, or a `proxy_pass` URI made of
/// variables: bytes a header or a request target cannot carry
/// (controls, space, non-ASCII, which a capture of the decoded path may hold) as `%XX`.
fn escape_location(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for &b in url.as_bytes() {
        match b {
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// nginx's `stub_status` page (GET and HEAD; other methods 405, as nginx).
fn stub_status(method: &http::Method) -> Response<ProxyBody> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut resp = Response::new(
        Full::new(Bytes::from(crate::conn_stats::page()))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// A redirect with nginx's page.
fn redirect(code: StatusCode, url: &str) -> Response<ProxyBody> {
    let mut resp = error_page(code);
    if let Ok(v) = HeaderValue::from_str(url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub(crate) fn return_response(
    r: &Return,
    settings: &ProxySettings,
    vars: &Vars<'_>,
) -> Response<ProxyBody> {
    let code = StatusCode::from_u16(r.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let redirect = matches!(r.code, 301 | 302 | 303 | 307 | 308);
    let text = r.text_or_url.as_ref().map(|t| vars.expand(t)).map(|t| {
        if redirect {
            absolute(settings, vars, &t)
        } else {
            t
        }
    });
    // nginx: a redirect and a bare `return 4xx|5xx` get the standard page.
    let html = redirect || (text.is_none() && r.code >= 400);
    let (body, location): (String, Option<String>) = match (redirect, text) {
        (true, url) => (page(code), url),
        (false, Some(text)) => (text, None),
        (false, None) if html => (page(code), None),
        (false, None) => (String::new(), None),
    };
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    // A 204 or 304 has no body, and nginx sends no type with it (an `add_header
    // Content-Type …` of a CORS preflight is then the only one).
    if !matches!(r.code, 204 | 304) {
        // Text the configuration wrote: typed as nginx types it, by the URI's extension
        // (`types`), else `default_type`.
        let ct = match html {
            true => HeaderValue::from_static("text/html"),
            false => HeaderValue::from_str(settings.mime.for_uri(vars.uri))
                .unwrap_or(HeaderValue::from_static("text/plain")),
        };
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(url) = location.and_then(|u| HeaderValue::from_str(&u).ok()) {
        resp.headers_mut().insert(header::LOCATION, url);
    }
    if !html {
        // `return CODE TEXT`: what the configuration wrote, which `error_page` keeps.
        resp.extensions_mut().insert(crate::error_redirect::Written);
    }
    resp
}

/// Whether an `add_header` value reads the upstream's headers (`$upstream_http_NAME`,
/// `$upstream_cookie_NAME`).
fn reads_upstream_headers(list: &[AddHeader]) -> bool {
    (list.iter().flat_map(|h| &h.value.parts)).any(|p| {
        matches!(p, hsmgate_config::nginx::TemplatePart::Var(v) if crate::vars::reads_upstream_headers(v))
    })
}

/// Whether an `add_header` value reads the request's headers: `$http_NAME`,
/// `$cookie_NAME`, `$remote_user`, `$proxy_add_x_forwarded_for`, or a `map` (which may).
fn reads_request_headers(list: &[AddHeader]) -> bool {
    list.iter().flat_map(|h| &h.value.parts).any(|p| match p {
        hsmgate_config::nginx::TemplatePart::Var(v) => {
            v.starts_with("http_")
                || v.starts_with("cookie_")
                || matches!(v.as_str(), "remote_user" | "proxy_add_x_forwarded_for")
                || !crate::vars::is_builtin(v)
        }
        hsmgate_config::nginx::TemplatePart::Literal(_) => false,
    })
}

/// `add_header`: only on 200, 201, 204, 206, 301, 302, 303, 304, 307, 308 unless `always`.
fn add_headers(list: &[AddHeader], resp: &mut Response<ProxyBody>, log: &LogCtx) {
    if list.is_empty() {
        return;
    }
    let ok = matches!(
        resp.status().as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    );
    // The request's headers when a value reads them (see `reads_request_headers`).
    let vars = log.vars(&log.headers);
    for h in list.iter().filter(|h| ok || h.always) {
        let value = vars.expand(&h.value);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&value),
        ) && !value.is_empty()
        {
            resp.headers_mut().append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_upstream_headers_are_all_removed_however_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        let text = "events {} http { server { listen 127.0.0.1:1;
            location / { proxy_hide_header X-Secret; proxy_pass http://127.0.0.1:9; } } }";
        std::fs::write(&path, text).expect("write");
        let config = hsmgate_config::nginx::load(&path, &Default::default()).expect("load");
        let settings = &config.servers[0].locations[0].settings;
        let mut headers = HeaderMap::new();
        // More hidden names than one pass keeps (`Date`, `Server`, `X-Accel-*`, …).
        for name in hsmgate_config::nginx::HIDDEN_BY_DEFAULT.iter().chain(&[
            "x-secret",
            "content-type",
            "x-kept",
        ]) {
            headers.append(*name, HeaderValue::from_static("1"));
            headers.append(*name, HeaderValue::from_static("2"));
        }
        hide_headers(settings, &mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
        assert_eq!(headers.get_all("x-kept").iter().count(), 2);
    }

    #[test]
    fn trace_and_connect_are_not_allowed() {
        let parts = |method: &str, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .expect("request")
                .into_parts()
                .0
        };
        assert!(not_allowed(&parts("TRACE", "/")));
        assert!(not_allowed(&parts("CONNECT", "example.test:443")));
        assert!(!not_allowed(&parts("GET", "/ws")));
        assert!(!not_allowed(&parts("OPTIONS", "*")));
        let mut extended = parts("CONNECT", "https://example.test/chat");
        extended
            .extensions
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(!not_allowed(&extended));
    }
}
