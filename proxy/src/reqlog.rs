//! The access log side of a request: what its line needs (owned, as the line is
//! written when the response body has been sent), and the response body wrapper that
//! counts the bytes and writes the line when the body ends or is dropped.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame};

use crate::access_log::{AccessLogWriter, escape};
use crate::body::ProxyBody;
use crate::conn_info::ConnInfo;
use crate::generation::Generation;
use crate::vars::{UpstreamTries, Vars};

/// What the access log line needs, owned (it is written when the body is done).
pub(crate) struct LogCtx {
    pub(crate) generation: Arc<Generation>,
    pub(crate) conn: Arc<ConnInfo>,
    /// The client: the connection's peer, or the address `set_real_ip_from` lets a
    /// trusted peer name (`$remote_addr`).
    pub(crate) client: std::net::SocketAddr,
    pub(crate) headers: HeaderMap,
    pub(crate) method: http::Method,
    pub(crate) request_uri: String,
    pub(crate) uri: String,
    /// `$args` once a `rewrite` changed them (`None`: the request's).
    pub(crate) args: Option<String>,
    /// The variables `set` gave a value, in the order first set.
    pub(crate) set_vars: Vec<(String, String)>,
    /// `$limit_req_status`, `$limit_conn_status`.
    pub(crate) limit_status: (&'static str, &'static str),
    /// The `limit_conn` slots this request holds until its answer is sent.
    pub(crate) limit_slots: Vec<crate::limits::ConnSlot>,
    pub(crate) protocol: &'static str,
    pub(crate) http_host: Option<String>,
    pub(crate) server_name: String,
    pub(crate) proxy_host: Arc<str>,
    pub(crate) upstream_addr: String,
    pub(crate) started: SystemTime,
    pub(crate) t0: Instant,
    pub(crate) status: u16,
    pub(crate) targets: Vec<crate::generation::LogTarget>,
    /// `$request_id`, made when first used.
    pub(crate) request_id: OnceLock<String>,
    /// The upstream tries (`$upstream_status`, `$upstream_response_time`).
    pub(crate) upstream: UpstreamTries,
    /// Request body bytes read (`$request_length`).
    pub(crate) request_body_length: u64,
    /// The response headers, when a log format has `$sent_http_NAME`.
    pub(crate) sent_headers: HeaderMap,
    /// The response head's size (`$bytes_sent` without the body), when a log format
    /// has `$bytes_sent`; see [`head_bytes`].
    pub(crate) head_bytes: u64,
    /// The upstream's response headers (`$upstream_http_NAME`), kept when
    /// `keep_upstream_headers` says something reads them.
    pub(crate) upstream_headers: HeaderMap,
    pub(crate) keep_upstream_headers: bool,
    /// The request's number on its connection and whether it was pipelined
    /// (`$connection_requests`, `$pipe`).
    pub(crate) on_conn: crate::route::OnConn,
}

/// An event about a request at tracing level `$level`, with nginx's context before its
/// own fields (connection, client, server, request, host: what `error_line` writes and
/// log watchers read). `$ctx` is an [`ErrorContext`].
macro_rules! request_event {
    ($level:ident, $ctx:expr, $($rest:tt)*) => {{
        let c: $crate::reqlog::ErrorContext = $ctx;
        tracing::$level!(
            conn = c.conn,
            client = %c.client,
            server = %c.server,
            request = %c.request,
            host = %c.host,
            $($rest)*
        )
    }};
}
pub(crate) use request_event;

/// What nginx writes after an error log line's message about a request: its connection
/// number and `client: …, server: …, request: "…", host: "…"` (see `error_line`).
pub(crate) struct ErrorContext {
    pub(crate) conn: u64,
    pub(crate) client: std::net::IpAddr,
    pub(crate) server: String,
    pub(crate) request: String,
    pub(crate) host: String,
}

impl LogCtx {
    /// This request's [`ErrorContext`].
    pub(crate) fn error_context(&self) -> ErrorContext {
        ErrorContext {
            conn: self.conn.id,
            client: self.client.ip().to_canonical(),
            server: self.server_name.clone(),
            request: format!("{} {} {}", self.method, self.request_uri, self.protocol),
            host: self.http_host.clone().unwrap_or_default(),
        }
    }

    /// The context of a subrequest to `uri` (`auth_request`): the same connection,
    /// client, request line and variables, its own URI and upstream.
    pub(crate) fn subrequest(&self, uri: &str, args: Option<&str>) -> LogCtx {
        LogCtx {
            generation: Arc::clone(&self.generation),
            conn: Arc::clone(&self.conn),
            client: self.client,
            headers: self.headers.clone(),
            method: http::Method::GET,
            request_uri: self.request_uri.clone(),
            uri: uri.to_owned(),
            args: Some(args.unwrap_or("").to_owned()),
            set_vars: self.set_vars.clone(),
            limit_status: self.limit_status,
            limit_slots: Vec::new(),
            protocol: self.protocol,
            http_host: self.http_host.clone(),
            server_name: self.server_name.clone(),
            proxy_host: Arc::default(),
            upstream_addr: String::new(),
            started: self.started,
            t0: Instant::now(),
            status: 0,
            targets: Vec::new(),
            request_id: self.request_id.clone(),
            upstream: UpstreamTries::default(),
            request_body_length: 0,
            sent_headers: HeaderMap::new(),
            head_bytes: 0,
            upstream_headers: HeaderMap::new(),
            keep_upstream_headers: true,
            on_conn: self.on_conn,
        }
    }

    /// Whether a log format this request is written with reads the upstream's headers
    /// (`$upstream_http_NAME`, `$upstream_cookie_NAME`).
    pub(crate) fn logs_upstream_headers(&self) -> bool {
        self.logs_var(crate::vars::reads_upstream_headers)
    }

    pub(crate) fn vars<'a>(&'a self, headers: &'a HeaderMap) -> Vars<'a> {
        self.vars_sent(headers, 0, false)
    }

    /// Whether a log format this request is written with uses
    /// `$upstream_response_length` (then the upstream's body bytes are counted).
    pub(crate) fn logs_upstream_length(&self) -> bool {
        self.logs_var(|v| v == "upstream_response_length")
    }

    fn vars_sent<'a>(&'a self, headers: &'a HeaderMap, sent: u64, completed: bool) -> Vars<'a> {
        Vars {
            conn: &self.conn,
            client: self.client,
            headers,
            method: self.method.as_str(),
            request_uri: &self.request_uri,
            uri: &self.uri,
            args: self.args.as_deref(),
            set_vars: &self.set_vars,
            limit_status: self.limit_status,
            protocol: self.protocol,
            http_host: self.http_host.as_deref(),
            server_name: &self.server_name,
            proxy_host: &self.proxy_host,
            upstream_addr: &self.upstream_addr,
            status: self.status,
            body_bytes_sent: sent,
            started: self.started,
            t0: self.t0,
            maps: &self.generation.site.maps,
            request_id: &self.request_id,
            upstream: &self.upstream,
            request_body_length: self.request_body_length,
            sent_headers: &self.sent_headers,
            upstream_headers: &self.upstream_headers,
            head_bytes_sent: self.head_bytes,
            on_conn: self.on_conn,
            completed,
        }
    }

    /// Whether a log format this request is written with uses `$sent_http_NAME`
    /// (then the response headers are kept for the line).
    pub(crate) fn logs_sent_headers(&self) -> bool {
        self.logs_var(|v| v.starts_with("sent_http_"))
    }

    /// Whether a log format this request is written with uses `$bytes_sent` (then the
    /// response head's size is counted).
    pub(crate) fn logs_bytes_sent(&self) -> bool {
        self.logs_var(|v| v == "bytes_sent")
    }

    fn logs_var(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.targets.iter().any(|t| {
            (self.generation.site.log_formats.get(&t.format)).is_some_and(|f| {
                f.template
                    .parts
                    .iter()
                    .any(|p| matches!(p, hsmgate_config::nginx::TemplatePart::Var(v) if wanted(v)))
            })
        })
    }

    fn write(&self, sent: u64, completed: bool) {
        let vars = self.vars_sent(&self.headers, sent, completed);
        for target in &self.targets {
            let Some(f) = self.generation.site.log_formats.get(&target.format) else {
                continue;
            };
            // `if=`: not logged when the condition is empty or `0`.
            if let Some(condition) = &target.condition {
                let value = vars.expand(condition);
                if value.is_empty() || value == "0" {
                    continue;
                }
            }
            let mut line = String::new();
            for p in &f.template.parts {
                match p {
                    hsmgate_config::nginx::TemplatePart::Literal(s) => line.push_str(s),
                    hsmgate_config::nginx::TemplatePart::Var(v) => {
                        let value = vars.get(v);
                        if value.is_empty() && f.escape != hsmgate_config::nginx::LogEscape::Json {
                            line.push('-');
                        } else {
                            line.push_str(&escape(&value, f.escape));
                        }
                    }
                }
            }
            AccessLogWriter::get().log(&target.path, line);
        }
    }
}

/// The size of `resp`'s head as hyper writes it on HTTP/1.x, for `$bytes_sent`: the
/// status line, each header (`name: value` and its line end), the `date` header hyper
/// adds when there is none, the framing header it adds when there is none (a
/// `content-length` for a body of known size, else `transfer-encoding: chunked` on
/// HTTP/1.1), the `connection` header it adds for the request's `Connection` (`close`
/// on HTTP/1.1, `keep-alive` on HTTP/1.0), and the blank line. Header names are
/// counted as they are (hyper writes them in lower case; the length does not depend on
/// case). Not counted: a chunked body's framing. On HTTP/2 (`h2`) it is the text size
/// of the status line, the fields and `date`, with no framing or `connection` header:
/// nginx counts the HPACK-encoded frames instead.
pub(crate) fn head_bytes<B: Body>(
    resp: &http::Response<B>,
    protocol: &str,
    request: &HeaderMap,
) -> u64 {
    use http::header;
    let http10 = protocol == "HTTP/1.0";
    let h2 = protocol.starts_with("HTTP/2");
    let asks = |token: &str| {
        request.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let status = resp.status();
    let reason = status.canonical_reason().unwrap_or("");
    // "HTTP/1.1 200 OK\r\n"
    let mut n = 9 + 3 + 1 + reason.len() + 2;
    for (name, value) in resp.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    let headers = resp.headers();
    if !headers.contains_key(header::DATE) {
        // "date: Tue, 01 Dec 2026 12:00:00 GMT\r\n"
        n += 6 + 29 + 2;
    }
    if !crate::body::bodyless(status)
        && !h2
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        match resp.body().size_hint().exact() {
            // "content-length: N\r\n"
            Some(len) => n += 16 + len.to_string().len() + 2,
            // "transfer-encoding: chunked\r\n" (HTTP/1.0: delimited by the close)
            None if !http10 => n += 28,
            None => {}
        }
    }
    if !h2 && !headers.contains_key(header::CONNECTION) {
        if !http10 && asks("close") {
            // "connection: close\r\n"
            n += 19;
        } else if http10 && asks("keep-alive") {
            // "connection: keep-alive\r\n"
            n += 24;
        }
    }
    (n + 2) as u64
}

/// A response body that counts the bytes sent and writes the access log line when
/// it ends (or is dropped).
pub(crate) struct LoggedBody {
    /// The request counted in progress (`stub_status`'s Writing) until its answer ends.
    pub(crate) in_progress: Option<crate::conn_stats::Gauge>,
    /// The HTTP/2 stream counted open on its connection until its answer ends.
    pub(crate) stream: Option<crate::keepalive_limits::StreamOpen>,
    /// The `limit_conn` slots of the request, released when the answer has been sent.
    pub(crate) limit_slots: Vec<crate::limits::ConnSlot>,
    pub(crate) inner: ProxyBody,
    pub(crate) sent: u64,
    pub(crate) log: Option<Box<LogCtx>>,
}

impl LoggedBody {
    /// The answer ended: `completed` when all of it was sent.
    fn finish(&mut self, completed: bool) {
        self.limit_slots.clear();
        self.in_progress = None;
        self.stream = None;
        if let Some(log) = self.log.take() {
            log.write(self.sent, completed);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = crate::balance::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // A body known to be empty (a HEAD's, a 204's) is not polled: it is complete.
        let completed = self.inner.is_end_stream();
        self.finish(completed);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
    use http_body_util::{Empty, Full};
    use hyper::body::{Body, Frame};

    use super::head_bytes;

    /// The bytes of a head written as these lines, for comparison.
    fn written(lines: &[&str]) -> u64 {
        lines.iter().map(|l| l.len() + 2).sum::<usize>() as u64 + 2
    }

    const DATE: &str = "date: Wed, 02 Dec 2026 04:27:00 GMT";

    /// A body whose size is not known in advance (a streamed upstream body).
    struct Unknown;

    impl Body for Unknown {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(None)
        }
    }

    #[test]
    fn counts_the_headers_hyper_adds() {
        let keep_alive = HeaderMap::new();
        // A body of known size: hyper adds content-length and date.
        let resp = Response::new(Full::new(Bytes::from_static(b"hello")));
        assert_eq!(
            head_bytes(&resp, "HTTP/1.1", &keep_alive),
            written(&["HTTP/1.1 200 OK", "content-length: 5", DATE])
        );
        // An unknown size: chunked on HTTP/1.1, delimited by the close on HTTP/1.0.
        let mut unknown = Response::new(Unknown);
        *unknown.status_mut() = StatusCode::BAD_GATEWAY;
        assert_eq!(
            head_bytes(&unknown, "HTTP/1.1", &keep_alive),
            written(&[
                "HTTP/1.1 502 Bad Gateway",
                "transfer-encoding: chunked",
                DATE
            ])
        );
        assert_eq!(
            head_bytes(&unknown, "HTTP/1.0", &keep_alive),
            written(&["HTTP/1.1 502 Bad Gateway", DATE])
        );
        // HTTP/2: the fields' text, no framing or connection header.
        assert_eq!(
            head_bytes(&unknown, "HTTP/2.0", &keep_alive),
            written(&["HTTP/1.1 502 Bad Gateway", DATE])
        );
        // No body allowed: no framing header; a date already there is not added; the
        // request's close is answered.
        let mut close = HeaderMap::new();
        close.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        let mut none = Response::new(Empty::<Bytes>::new());
        *none.status_mut() = StatusCode::NO_CONTENT;
        none.headers_mut().insert(
            header::DATE,
            HeaderValue::from_static("Wed, 02 Dec 2026 04:27:00 GMT"),
        );
        assert_eq!(
            head_bytes(&none, "HTTP/1.1", &close),
            written(&["HTTP/1.1 204 No Content", DATE, "connection: close"])
        );
        // HTTP/1.0 keep-alive is confirmed.
        let mut ka = HeaderMap::new();
        ka.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let resp = Response::new(Empty::<Bytes>::new());
        assert_eq!(
            head_bytes(&resp, "HTTP/1.0", &ka),
            written(&[
                "HTTP/1.1 200 OK",
                "content-length: 0",
                DATE,
                "connection: keep-alive"
            ])
        );
    }
}
