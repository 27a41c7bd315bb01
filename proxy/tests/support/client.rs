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
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
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
}

impl KeepAlive {
    pub async fn open(addr: SocketAddr, ca_pem: &Path) -> KeepAlive {
        let tls = connect(addr, client_config(ca_pem, &[b"http/1.1"]))
            .await
            .expect("handshake");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        KeepAlive { sender, addr }
    }

    /// GET `path`; the status and body.
    pub async fn get(&mut self, path: &str) -> (u16, String) {
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
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// One HTTP/2 GET on a new connection; the negotiated ALPN, status and body.
pub async fn h2_get(addr: SocketAddr, ca_pem: &Path, path: &str) -> (Option<Vec<u8>>, u16, String) {
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
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (alpn, status, String::from_utf8_lossy(&body).into_owned())
}
