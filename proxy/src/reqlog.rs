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
    pub(crate) headers: HeaderMap,
    pub(crate) method: String,
    pub(crate) request_uri: String,
    pub(crate) uri: String,
    pub(crate) protocol: &'static str,
    pub(crate) http_host: Option<String>,
    pub(crate) server_name: String,
    pub(crate) proxy_host: String,
    pub(crate) upstream_addr: String,
    pub(crate) started: SystemTime,
    pub(crate) t0: Instant,
    pub(crate) status: u16,
    pub(crate) targets: Vec<(Arc<std::path::PathBuf>, String)>,
    /// `$request_id`, made when first used.
    pub(crate) request_id: OnceLock<String>,
    /// The upstream tries (`$upstream_status`, `$upstream_response_time`).
    pub(crate) upstream: UpstreamTries,
    /// Request body bytes read (`$request_length`).
    pub(crate) request_body_length: u64,
    /// The response headers, when a log format has `$sent_http_NAME`.
    pub(crate) sent_headers: HeaderMap,
}

impl LogCtx {
    pub(crate) fn vars<'a>(&'a self, headers: &'a HeaderMap) -> Vars<'a> {
        self.vars_sent(headers, 0)
    }

    fn vars_sent<'a>(&'a self, headers: &'a HeaderMap, sent: u64) -> Vars<'a> {
        Vars {
            conn: &self.conn,
            headers,
            method: &self.method,
            request_uri: &self.request_uri,
            uri: &self.uri,
            protocol: self.protocol,
            http_host: self.http_host.as_deref(),
            server_name: &self.server_name,
            proxy_host: &self.proxy_host,
            upstream_addr: &self.upstream_addr,
            status: self.status,
            body_bytes_sent: sent,
            started: self.started,
            elapsed: self.t0.elapsed(),
            maps: &self.generation.site.maps,
            request_id: &self.request_id,
            upstream: &self.upstream,
            request_body_length: self.request_body_length,
            sent_headers: &self.sent_headers,
        }
    }

    /// Whether a log format this request is written with uses `$sent_http_NAME`
    /// (then the response headers are kept for the line).
    pub(crate) fn logs_sent_headers(&self) -> bool {
        self.targets.iter().any(|(_, format)| {
            (self.generation.site.log_formats.get(format)).is_some_and(|f| {
                f.template.parts.iter().any(|p| {
                    matches!(p, hsmgate_config::nginx::TemplatePart::Var(v) if v.starts_with("sent_http_"))
                })
            })
        })
    }

    fn write(&self, sent: u64) {
        let vars = self.vars_sent(&self.headers, sent);
        for (path, format) in &self.targets {
            let Some(f) = self.generation.site.log_formats.get(format) else {
                continue;
            };
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
            AccessLogWriter::get().log(path, line);
        }
    }
}

/// A response body that counts the bytes sent and writes the access log line when
/// it ends (or is dropped).
pub(crate) struct LoggedBody {
    pub(crate) inner: ProxyBody,
    pub(crate) sent: u64,
    pub(crate) log: Option<Box<LogCtx>>,
}

impl LoggedBody {
    fn finish(&mut self) {
        if let Some(log) = self.log.take() {
            log.write(self.sent);
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
            Poll::Ready(None) => this.finish(),
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
        self.finish();
    }
}
