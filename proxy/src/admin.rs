//! The admin listener, plain HTTP: `/healthz` (the process answers), `/readyz` (every
//! key of the *current* generation has at least one HSM member that can sign, and the
//! proxy is not draining; the body lists each key's members), `/metrics` (Prometheus
//! text format) and `/status` ([`status`](crate::status): JSON with
//! `?format=json` or `Accept: application/json`, else the HTML page of
//! [`status_page`](crate::status_page)). The state follows reloads through the same
//! `watch` channel the accept loops read.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::generation::Generation;

/// Buckets of a signature's CPU time (seconds), 50 µs … 50 ms.
const SIGN_CPU: [f64; 9] = [
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
];

/// Install the process-wide Prometheus recorder (once), returning its handle.
pub fn install_recorder() -> Option<PrometheusHandle> {
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| {
            // A signature's CPU: P-256 in a software token ~0.1 ms, RSA-2048 ~1.7 ms.
            b.set_buckets_for_metric(
                Matcher::Full(hsmgate_signer::metrics::CALL_CPU.into()),
                &SIGN_CPU,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(crate::metrics::FILE_KEY_SIGN_CPU.into()),
                &SIGN_CPU,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )
        });
    match builder.and_then(|b| b.install_recorder()) {
        Ok(handle) => {
            crate::metrics::recorder_installed();
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

/// What the admin endpoints look at.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The current generation (its signer pools), following reloads.
    pub generation: watch::Receiver<Arc<Generation>>,
    /// Set when the proxy is draining: `/readyz` turns false.
    pub draining: Arc<AtomicBool>,
    /// The Prometheus handle, if a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// When the admin listener started (uptime in `/status`).
    pub started: Instant,
}

/// The most admin connections open at once (a scraper, probes, `hsmgate top`): past it,
/// the oldest is closed for the new one, so that the admin port can neither take the
/// file descriptors the proxy and the HSM's module need nor be filled up with idle
/// connections that keep the kubelet's probes out.
const MAX_CONNECTIONS: usize = 64;

/// How long a request head may take, and an idle connection may stay.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may last, whatever it does.
const MAX_LIFETIME: Duration = Duration::from_secs(120);

/// Serve the admin endpoints on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, state: AdminState) {
    serve_with(listener, move |req| route(req, &state)).await;
}

/// The admin endpoints while hsmgate waits to start (see `crate::waiting`): alive, not
/// ready, and why (`why`, updated by the waiting loop); `/metrics` as when serving.
pub(crate) async fn serve_waiting(
    listener: TcpListener,
    why: Arc<std::sync::Mutex<String>>,
    metrics: Option<PrometheusHandle>,
) {
    serve_with(listener, move |req| {
        let why = why.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(refused) = refuse_method(req) {
            return refused;
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" | "/status" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: not started: {why}\n"),
            ),
            "/metrics" => metrics_page(metrics.as_ref()),
            _ => not_found(),
        }
    })
    .await;
}

/// Accept admin connections (at most [`MAX_CONNECTIONS`] open) and answer each request
/// with `answer`.
async fn serve_with(
    listener: TcpListener,
    answer: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) {
    let mut open: std::collections::VecDeque<tokio::task::AbortHandle> = Default::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                crate::conn::warn_accept(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        open.retain(|task| !task.is_finished());
        if open.len() >= MAX_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
        }
        let answer = answer.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = answer(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_LIFETIME, served).await;
        });
        open.push_back(task.abort_handle());
    }
}

/// `405` for a method other than GET and HEAD on one of the endpoints.
fn refuse_method(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let known = matches!(
        req.uri().path(),
        "/healthz" | "/readyz" | "/metrics" | "/status"
    );
    if known && req.method() != Method::GET && req.method() != Method::HEAD {
        let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        (answer.headers_mut()).insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Some(answer);
    }
    None
}

fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    if let Some(refused) = refuse_method(req) {
        return refused;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readyz(state),
        "/status" if wants_json(req) => {
            let generation = Arc::clone(&state.generation.borrow());
            let status = crate::status::build(
                &generation,
                state.draining.load(Ordering::Acquire),
                state.started.elapsed(),
            );
            match serde_json::to_string_pretty(&status) {
                Ok(body) => with_type(text(StatusCode::OK, body + "\n"), "application/json"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/status" => with_type(
            text(StatusCode::OK, crate::status_page::PAGE.to_owned()),
            "text/html; charset=utf-8",
        ),
        "/metrics" => {
            // Gauges that mirror a state are written from it now, so a scrape right
            // after `/status` shows the same member states.
            (state.generation.borrow().pools.pools()).for_each(|p| p.publish_states());
            metrics_page(state.metrics.as_ref())
        }
        _ => not_found(),
    }
}

/// `/metrics`: the Prometheus exposition, or 404 without a recorder.
fn metrics_page(handle: Option<&PrometheusHandle>) -> Response<Full<Bytes>> {
    match handle {
        Some(handle) => with_type(
            text(
                StatusCode::OK,
                hsmgate_signer::metrics::hide_retired(&handle.render()),
            ),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        None => text(StatusCode::NOT_FOUND, "no metrics recorder\n".into()),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz, /metrics, /status\n".into(),
    )
}

/// Ready when not draining and every key of the current generation has a member that
/// can sign; the body lists each key's members.
fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    let generation = Arc::clone(&state.generation.borrow());
    let mut pools: Vec<_> = generation.pools.pools().collect();
    pools.sort_by(|a, b| (a.group_name(), a.key_name()).cmp(&(b.group_name(), b.key_name())));
    let members: String = pools
        .iter()
        .map(|p| {
            format!(
                "{} ({}): {}\n",
                p.group_name(),
                p.key_name(),
                p.describe_members()
            )
        })
        .collect();
    let unable: Vec<&str> = pools
        .iter()
        .filter(|p| !p.ready())
        .map(|p| p.group_name())
        .collect();
    if state.draining.load(Ordering::Acquire) {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: draining\n{members}"),
        )
    } else if unable.is_empty() {
        text(StatusCode::OK, format!("ready\n{members}"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: no healthy HSM member for {}\n{members}",
                unable.join(", ")
            ),
        )
    }
}

/// `/status?format=json`, or an `Accept` header that names JSON before HTML.
fn wants_json(req: &Request<Incoming>) -> bool {
    let query = req.uri().query().unwrap_or("");
    if query.split('&').any(|p| p == "format=json") {
        return true;
    }
    if query.split('&').any(|p| p == "format=html") {
        return false;
    }
    accepts_json(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    )
}

fn accepts_json(accept: &str) -> bool {
    let json = accept.find("application/json");
    let html = accept.find("text/html");
    match (json, html) {
        (Some(j), Some(h)) => j < h,
        (Some(_), None) => true,
        _ => false,
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    with_type(resp, "text/plain; charset=utf-8")
}

fn with_type(mut resp: Response<Full<Bytes>>, content_type: &'static str) -> Response<Full<Bytes>> {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::accepts_json;

    #[test]
    fn json_is_chosen_by_the_accept_header() {
        assert!(accepts_json("application/json"));
        assert!(accepts_json("application/json, text/html;q=0.5"));
        assert!(!accepts_json(
            "text/html,application/xhtml+xml,application/json;q=0.9"
        ));
        assert!(!accepts_json("*/*"));
        assert!(!accepts_json(""));
    }
}
