//! A small built-in HTTP/1.1 upstream for the demo and the tests: it answers every
//! request with a text page naming itself and echoing the request line, the headers it
//! received (so forwarded headers can be seen) and the request body. A query
//! parameter `delay_ms=N` delays the answer by N milliseconds (at most 60 s), to test
//! draining. The demo's variant ([`serve_logging`]) also prints an access line per
//! request on stdout, so the demo terminal shows requests as they arrive.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serve the echo page on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, name: &'static str) {
    serve_with(listener, name, false).await
}

/// [`serve`], printing one access line per request on stdout: the client (from
/// `X-Forwarded-For`), the request line, the status, the body size and the user agent.
pub async fn serve_logging(listener: TcpListener, name: &'static str) {
    serve_with(listener, name, true).await
}

async fn serve_with(listener: TcpListener, name: &'static str, log: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(move |req| async move {
                let line = log.then(|| access_line(&req));
                let response = echo(req, name).await;
                if let (Some(line), Ok(r)) = (line, &response) {
                    use hyper::body::Body;
                    let size = r.body().size_hint().exact().unwrap_or(0);
                    println!("{} {size}{}", line.0, line.1);
                }
                response
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let mut page = format!(
        "hello from {name}\n{} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        page.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let body = req.into_body().collect().await?.to_bytes();
    if !body.is_empty() {
        page.push('\n');
        page.push_str(&String::from_utf8_lossy(&body));
    }
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-upstream", name)
        .body(Full::new(Bytes::from(page)))
        .expect("static response parts are valid"))
}

/// The parts of an access line known before the answer: `client "request line" 200`
/// and ` "user agent"`.
fn access_line(req: &Request<Incoming>) -> (String, String) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let client = header("x-forwarded-for").unwrap_or_else(|| "-".into());
    let agent = header("user-agent").unwrap_or_else(|| "-".into());
    (
        format!(
            "access: {client} \"{} {} {:?}\" 200",
            req.method(),
            req.uri(),
            req.version()
        ),
        format!(" \"{agent}\""),
    )
}
