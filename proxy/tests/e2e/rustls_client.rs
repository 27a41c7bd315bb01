//! A Rust rustls client: HTTP/2 negotiated by ALPN, and HTTP/1.1 keep-alive with many
//! requests over one handshake.

use crate::support::client::{KeepAlive, h2_get};
use crate::support::{KeyType, start_echo_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_h2_and_http11_keepalive() {
    let (token, proxy) = start_echo_proxy(KeyType::Rsa2048);

    let (alpn, status, body) = h2_get(proxy.addr, &token.ca_pem, "/h2").await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("GET /h2 HTTP/1.1"),
        "forwarded upstream as HTTP/1.1: {body}"
    );

    let mut conn = KeepAlive::open(proxy.addr, &token.ca_pem).await;
    for i in 0..20 {
        let (status, body) = conn.get(&format!("/ka/{i}")).await;
        assert_eq!(status, 200);
        assert!(body.contains(&format!("GET /ka/{i} HTTP/1.1")), "{body}");
    }
}
