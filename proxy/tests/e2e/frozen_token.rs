//! A frozen HSM must not freeze the proxy. The token is served by its own `p11-kit
//! server`, reached through p11-kit-client.so; SIGSTOP on the server's process group
//! makes C_Sign block forever. Requests on an established keep-alive connection must
//! keep succeeding, new handshakes must fail at the signing deadline with a log line,
//! and after SIGCONT new handshakes must work again.

use std::time::{Duration, Instant};

use crate::support::client::{KeepAlive, client_config, connect};
use crate::support::hsm::p11kit_client_module;
use crate::support::{KeyType, P11KitServer, ProxyProcess, TestToken, config_for, start_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_token_does_not_block_established_connections() {
    frozen_token_with(KeyType::Rsa2048).await;
}

/// The same with a P-256 key, which the token signs fast: a token behind another process
/// must keep its signer threads however fast it signs (`inline_signing` would make a
/// frozen one hang the connections' threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_fast_token_does_not_block_established_connections() {
    frozen_token_with(KeyType::EcP256).await;
}

async fn frozen_token_with(key: KeyType) {
    let token = TestToken::new(key);
    let server = P11KitServer::start(&token);
    let upstream = start_upstream("echo");
    let config = config_for(&token, upstream, "sessions = 2\nsign_timeout_ms = 1000")
        .replace(
            &token.module.display().to_string(),
            &p11kit_client_module().display().to_string(),
        )
        .replace(
            &format!("SOFTHSM2_CONF = \"{}\"", token.conf.display()),
            &format!("P11_KIT_SERVER_ADDRESS = \"{}\"", server.address()),
        );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts over p11-kit");

    let mut established = KeepAlive::open(proxy.addr, &token.ca_pem).await;
    assert_eq!(established.get("/before").await.0, 200);

    server.signal("STOP");
    // Several new handshakes at once: each must fail at the deadline, none may hang.
    let started = Instant::now();
    let handshakes: Vec<_> = (0..4)
        .map(|_| {
            let config = client_config(&token.ca_pem, &[b"http/1.1"]);
            let addr = proxy.addr;
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(8), connect(addr, config)).await
            })
        })
        .collect();
    // Meanwhile the established connection keeps being served, promptly.
    for i in 0..20 {
        let t = Instant::now();
        let (status, body) = established.get(&format!("/during/{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "request {i} took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for h in handshakes {
        let outcome = h.await.expect("task");
        let Ok(result) = outcome else {
            panic!("a new handshake hung for 8 s while the token was frozen");
        };
        assert!(
            result.is_err(),
            "a handshake succeeded while the token was frozen"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "handshakes failed only after {waited:?}"
    );
    let log = proxy.log_text();
    assert!(
        log.contains("did not answer within 1s"),
        "no clear log line:\n{log}"
    );
    assert!(log.contains("handshake aborted"), "{log}");

    server.signal("CONT");
    // The stuck C_Sign calls complete; new handshakes work again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = client_config(&token.ca_pem, &[b"http/1.1"]);
        if connect(proxy.addr, config).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake succeeded after SIGCONT:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(established.get("/after").await.0, 200);
}
