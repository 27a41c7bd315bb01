//! The admin listener, plain HTTP: `/healthz` (the process answers), `/readyz` (every
//! configured key has at least one healthy HSM member, and the proxy is not draining;
//! the body lists the members' states), and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hsmgate_signer::SignerPool;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Install the process-wide Prometheus recorder (once), returning its handle.
pub fn install_recorder() -> Option<PrometheusHandle> {
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )
        });
    match builder.and_then(|b| b.install_recorder()) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// The signer pool (readiness).
    pub pool: SignerPool,
    /// Set when the proxy is draining: `/readyz` turns false.
    pub draining: Arc<AtomicBool>,
    /// The Prometheus handle, if a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// Serve the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let members = state.pool.describe_members();
            if state.draining.load(Ordering::Acquire) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: draining\n{members}\n"),
                )
            } else if state.pool.ready() {
                text(StatusCode::OK, format!("ready\n{members}\n"))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: no healthy HSM member\n{members}\n"),
                )
            }
        }
        "/metrics" => match &state.metrics {
            Some(handle) => {
                let mut resp = text(StatusCode::OK, handle.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            None => text(StatusCode::NOT_FOUND, "no metrics recorder\n".into()),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
