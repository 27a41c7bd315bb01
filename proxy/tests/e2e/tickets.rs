//! Session tickets from key files (`[tls] session_ticket_key_files`, nginx's
//! `ssl_session_ticket_key`): a ticket issued before a reload resumes after it, and one
//! issued by one instance resumes on a second instance that has the same file, over TLS
//! 1.3 and TLS 1.2, with no signature made (the second instance's signer counter stays
//! put); an instance with another key makes a full handshake.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::client::{KeepAlive, admin_get, ca_roots, metric};
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, start_upstream};

fn random_key(path: &Path) {
    let mut bytes = [0u8; 80];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("random");
    std::fs::write(path, bytes).expect("ticket key");
}

fn instance(token: &TestToken, name: &str, key: &Path) -> ProxyProcess {
    let dir = token.path().join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = config_for(token, start_upstream("echo"), "").replace(
        "\n[pkcs11]",
        &format!(
            "session_ticket_key_files = [\"{}\"]\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[pkcs11]",
            key.display()
        ),
    );
    ProxyProcess::start(&dir, &config).expect("hsmgate starts")
}

/// A client that keeps tickets, limited to one TLS version.
fn resuming(
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(ca_roots(ca))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(16);
    Arc::new(config)
}

async fn signatures(proxy: &ProxyProcess) -> f64 {
    let (_, body) = admin_get(proxy.admin_addr(), "/metrics").await;
    metric(&body, "hsmgate_signer_operations_total", &["result=\"ok\""])
}

/// Connect, make one request (TLS 1.3 tickets arrive after the handshake), and tell
/// whether the handshake resumed.
async fn visit(proxy: &ProxyProcess, client: &Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
    let mut c = KeepAlive::open_with(proxy.addr, Arc::clone(client)).await;
    assert_eq!(c.get("/").await.0, 200);
    c.handshake_kind().expect("handshake kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_from_key_files_survive_reloads_and_resume_on_another_instance() {
    use rustls::HandshakeKind::{Full, Resumed};
    let token = TestToken::new(KeyType::Rsa2048);
    let shared = token.path().join("ticket.key");
    let other = token.path().join("other.key");
    random_key(&shared);
    random_key(&other);
    let a = instance(&token, "a", &shared);
    let b = instance(&token, "b", &shared);
    let c = instance(&token, "c", &other);

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = resuming(&token.ca_pem, version);
        assert_eq!(visit(&a, &client).await, Full, "{version:?}: first visit");
        assert_eq!(
            visit(&a, &client).await,
            Resumed,
            "{version:?}: same instance"
        );

        // A reload re-reads the key files: the ticket still resumes.
        let reloads = a.log_text().matches("configuration reloaded").count();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &a.pid().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
        crate::support::poll(
            Duration::from_secs(15),
            || format!("no reload:\n{}", a.log_text()),
            || (a.log_text().matches("configuration reloaded").count() > reloads).then_some(()),
        );
        assert_eq!(
            visit(&a, &client).await,
            Resumed,
            "{version:?}: after a reload"
        );

        // Another instance with the same file: resumed, no signature made there.
        let before = signatures(&b).await;
        assert_eq!(
            visit(&b, &client).await,
            Resumed,
            "{version:?}: on instance b"
        );
        assert_eq!(
            signatures(&b).await,
            before,
            "{version:?}: b signed for a resumption"
        );

        // Another key: a full handshake (and so a signature) on instance c.
        let before = signatures(&c).await;
        assert_eq!(visit(&c, &client).await, Full, "{version:?}: other key");
        assert!(signatures(&c).await > before, "{version:?}: c did not sign");
    }
}

/// `session_timeout_ms` (nginx's `ssl_session_timeout`) bounds resumption, for tickets
/// (TLS 1.3 and 1.2) as for the session cache: within it the session resumes; past it
/// the client gets a full handshake (and a new session), as from nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_within_the_session_timeout_and_not_after() {
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("echo"), "")
        .replace("\n[pkcs11]", "session_timeout_ms = 2000\n\n[pkcs11]");
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let mut clients = Vec::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = resuming(&token.ca_pem, version);
        assert_eq!(visit(&proxy, &client).await, rustls::HandshakeKind::Full);
        assert_eq!(
            visit(&proxy, &client).await,
            rustls::HandshakeKind::Resumed,
            "{version:?} within the timeout"
        );
        clients.push((version, client));
    }
    // A TLS 1.2 client that offers no ticket: the session cache (by session id).
    let no_ticket = {
        let mut c = (*resuming(&token.ca_pem, &rustls::version::TLS12)).clone();
        c.resumption = c
            .resumption
            .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        Arc::new(c)
    };
    assert_eq!(visit(&proxy, &no_ticket).await, rustls::HandshakeKind::Full);
    assert_eq!(
        visit(&proxy, &no_ticket).await,
        rustls::HandshakeKind::Resumed
    );
    clients.push((&rustls::version::TLS12, no_ticket));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for (version, client) in &clients {
        assert_eq!(
            visit(&proxy, client).await,
            rustls::HandshakeKind::Full,
            "{version:?} past the timeout"
        );
    }
}
