//! A rustls client (tokio-rustls + hyper) that trusts the test CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A client config that trusts only `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let roots = ca_roots(ca_pem);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The certificates of the PEM file `ca_pem` as trust anchors.
pub fn ca_roots(ca_pem: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    roots
}

/// TCP connect + full TLS handshake to `addr` as `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// An HTTP/1.1 keep-alive connection through hsmgate.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    kind: Option<rustls::HandshakeKind>,
}

impl KeepAlive {
    pub async fn open(addr: SocketAddr, ca_pem: &Path) -> KeepAlive {
        Self::open_with(addr, client_config(ca_pem, &[b"http/1.1"])).await
    }

    /// With this client configuration (e.g. one that resumes).
    pub async fn open_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> KeepAlive {
        let tls = connect(addr, config).await.expect("handshake");
        let kind = tls.get_ref().1.handshake_kind();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        KeepAlive { sender, addr, kind }
    }

    /// Full or resumed.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.kind
    }

    /// GET `path`; the status and body.
    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let (status, _, body) = self.get_with_head(path).await;
        (status, body)
    }

    /// GET `path`; the status, the response headers and the body.
    pub async fn get_with_head(&mut self, path: &str) -> (u16, http::HeaderMap, String) {
        self.sender.ready().await.expect("connection still open");
        let req = http::Request::get(path)
            .header("host", self.addr.to_string())
            .body(Empty::new())
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(5), self.sender.send_request(req))
            .await
            .expect("response within 5 s")
            .expect("response");
        let status = resp.status().as_u16();
        let head = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }
}

/// One HTTP/2 GET on a new connection; the negotiated ALPN, status and body.
pub async fn h2_get(addr: SocketAddr, ca_pem: &Path, path: &str) -> (Option<Vec<u8>>, u16, String) {
    let (alpn, status, _, body) = h2_get_with_head(addr, ca_pem, path).await;
    (alpn, status, body)
}

/// [`h2_get`], with the response headers.
pub async fn h2_get_with_head(
    addr: SocketAddr,
    ca_pem: &Path,
    path: &str,
) -> (Option<Vec<u8>>, u16, http::HeaderMap, String) {
    let tls = connect(addr, client_config(ca_pem, &[b"h2", b"http/1.1"]))
        .await
        .expect("handshake");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("http2");
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let head = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        alpn,
        status,
        head,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// GET `path` on the (plain HTTP) admin listener: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("admin connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The sum of the Prometheus samples of `name` whose labels contain every one of
/// `labels` (e.g. `reason="queue_full"`) in a `/metrics` body; 0 when there are none.
pub fn metric(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// GET `path` on the admin listener with a blocking socket (for `poll`'s closures and
/// plain `#[test]`s): (status, body).
pub fn admin_get_blocking(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("admin connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `/status?format=json`, parsed.
pub fn status_json(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = admin_get_blocking(addr, "/status?format=json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// The state of member `name` in a `/status` document (any key).
pub fn member_state(status: &serde_json::Value, name: &str) -> Option<String> {
    status["keys"]
        .as_array()?
        .iter()
        .flat_map(|k| k["members"].as_array().into_iter().flatten())
        .find(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str())
        .map(str::to_owned)
}
