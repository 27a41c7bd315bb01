//! curl and openssl s_client over TLS 1.2 and 1.3, with RSA and ECDSA keys in the token,
//! checking the chain against the test CA and what the upstream received.

use std::process::Command;

use crate::support::{KeyType, ProxyProcess, TestToken, curl, start_echo_proxy as start};

fn curl_ok(token: &TestToken, proxy: &ProxyProcess, extra: &[&str]) -> String {
    let ca = token.ca_pem.to_str().expect("utf-8");
    let url = proxy.url("/some/path?q=1");
    let mut args = vec!["--cacert", ca, "-H", "X-Forwarded-For: 203.0.113.7"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {extra:?} failed: {}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_text()
    );
    assert!(body.contains("hello from echo"), "{body}");
    assert!(body.contains("GET /some/path?q=1 HTTP/1.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1"),
        "{body}"
    );
    body
}

fn curl_matrix(key: KeyType) {
    let (token, proxy) = start(key);
    for tls in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        curl_ok(&token, &proxy, &tls);
        let mut h2 = tls.to_vec();
        h2.push("--http2");
        curl_ok(&token, &proxy, &h2);
    }
}

#[test]
fn curl_rsa_2048_tls12_and_tls13() {
    curl_matrix(KeyType::Rsa2048);
}

#[test]
fn curl_ecdsa_p256_tls12_and_tls13() {
    curl_matrix(KeyType::EcP256);
}

#[test]
fn curl_ecdsa_p384_tls12_and_tls13() {
    curl_matrix(KeyType::EcP384);
}

#[test]
fn host_header_is_kept_and_http2_authority_becomes_host() {
    let (token, proxy) = start(KeyType::EcP256);
    let port = proxy.addr.port().to_string();
    let resolve = format!("app.example:{port}:127.0.0.1");
    let url = format!("https://app.example:{port}/");
    let ca = token.ca_pem.to_str().expect("utf-8");
    // The test certificate is for localhost: skip the name check, keep everything else.
    for version in ["--http1.1", "--http2"] {
        let out = curl(&["--cacert", ca, "-k", version, "--resolve", &resolve, &url]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            body.contains(&format!("host: app.example:{port}")),
            "{version}: {body}"
        );
    }
}

/// openssl s_client: chain verified against the CA, protocol and peer signature type.
fn s_client(token: &TestToken, proxy: &ProxyProcess, version: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &proxy.addr.to_string(),
            version,
            "-CAfile",
        ])
        .arg(&token.ca_pem)
        .args(["-verify_return_error", "-servername", "localhost", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "s_client {version} failed:\n{text}\nproxy log:\n{}",
        proxy.log_text()
    );
    assert!(text.contains("Verification: OK"), "{text}");
    text
}

#[test]
fn openssl_s_client_verifies_chain_rsa_pss_and_ecdsa() {
    let (rsa_token, rsa_proxy) = start(KeyType::Rsa2048);
    let t13 = s_client(&rsa_token, &rsa_proxy, "-tls1_3");
    assert!(t13.contains("Protocol version: TLSv1.3"), "{t13}");
    assert!(t13.contains("Signature type: RSA-PSS"), "{t13}");
    let t12 = s_client(&rsa_token, &rsa_proxy, "-tls1_2");
    assert!(t12.contains("Protocol version: TLSv1.2"), "{t12}");

    let (ec_token, ec_proxy) = start(KeyType::EcP384);
    let t13 = s_client(&ec_token, &ec_proxy, "-tls1_3");
    assert!(t13.contains("Signature type: ECDSA"), "{t13}");
    let t12 = s_client(&ec_token, &ec_proxy, "-tls1_2");
    assert!(t12.contains("Signature type: ECDSA"), "{t12}");
}

#[test]
fn rsa_pkcs1_is_used_when_a_tls12_client_offers_only_pkcs1() {
    let (token, proxy) = start(KeyType::Rsa2048);
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &proxy.addr.to_string(),
            "-tls1_2",
            "-sigalgs",
            "RSA+SHA384",
            "-CAfile",
        ])
        .arg(&token.ca_pem)
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Hash used: SHA384"), "{text}");
    assert!(
        text.lines().any(|l| l.trim() == "Signature type: RSA"),
        "PKCS#1 v1.5: {text}"
    );
}
