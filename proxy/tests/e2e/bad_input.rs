//! Bad input: wrong PIN, missing key, unknown token, certificate/key mismatch, config
//! errors with file:line, garbage and plain HTTP on the TLS port, upstream down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::hsm::PIN;
use crate::support::proxy::run_hsmgate;
use crate::support::{
    KeyType, ProxyProcess, TestToken, config_for, curl, free_port, start_echo_proxy, start_upstream,
};

/// Start-up must fail; returns stderr.
fn fails_to_start(token: &TestToken, config: &str) -> String {
    let out = run_hsmgate(token.path(), config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "hsmgate should have refused to start:\n{stderr}"
    );
    assert!(!stderr.contains(PIN), "the PIN leaked:\n{stderr}");
    stderr
}

#[test]
fn wrong_pin_names_token_function_and_ckr_code() {
    let token = TestToken::new(KeyType::EcP256);
    std::fs::write(&token.pin_file, "wrong-pin-0000\n").expect("pin");
    let config = config_for(&token, "127.0.0.1:9".parse().expect("addr"), "");
    let err = fails_to_start(&token, &config);
    assert!(err.contains("token hsmgate-test"), "{err}");
    assert!(err.contains("C_Login"), "{err}");
    assert!(err.contains("CKR_PIN_INCORRECT"), "{err}");
    assert!(!err.contains("wrong-pin-0000"), "{err}");
}

#[test]
fn missing_key_object_and_unknown_token() {
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, "127.0.0.1:9".parse().expect("addr"), "");
    let missing = config.replace("object=tls", "object=no-such-key");
    let err = fails_to_start(&token, &missing);
    assert!(
        err.contains("no private key object matching object=no-such-key"),
        "{err}"
    );
    assert!(err.contains("hsmgate-test"), "{err}");

    let unknown = config.replace("token=hsmgate-test", "token=no-such-token");
    let err = fails_to_start(&token, &unknown);
    assert!(
        err.contains("no token matching token=no-such-token"),
        "{err}"
    );
    assert!(
        err.contains("\"hsmgate-test\""),
        "lists the tokens present: {err}"
    );
}

#[test]
fn certificate_for_another_key_is_refused_naming_both() {
    let token = TestToken::new(KeyType::Rsa2048);
    let other = TestToken::with_label(KeyType::Rsa2048, "other");
    let config = config_for(&token, "127.0.0.1:9".parse().expect("addr"), "").replace(
        &token.chain_pem.display().to_string(),
        &other.chain_pem.display().to_string(),
    );
    let err = fails_to_start(&token, &config);
    let last = err
        .lines()
        .find(|l| l.starts_with("hsmgate: "))
        .expect("the error line");
    assert!(
        last.contains("key tls on token hsmgate-test does not match certificate"),
        "{last}"
    );
    assert!(
        last.contains(&other.chain_pem.display().to_string()),
        "{last}"
    );
    assert!(last.contains("(subject CN=localhost)"), "{last}");
    assert_eq!(
        last.matches("RSA-2048 (modulus").count(),
        2,
        "describes both keys: {last}"
    );
}

#[test]
fn config_errors_name_file_and_line_and_t_checks_everything() {
    let token = TestToken::new(KeyType::EcP256);
    let good = config_for(&token, "127.0.0.1:9".parse().expect("addr"), "");
    let out = run_hsmgate(token.path(), &good, &["-t"]);
    // Like nginx, the -t verdict goes to stderr.
    let stdout = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("syntax is ok") && stdout.contains("test is successful"),
        "{stdout}"
    );

    let bad = good.replace("type=private", "type=banana");
    let out = run_hsmgate(token.path(), &bad, &["-t"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The key is on line 6 of the generated file.
    assert!(stderr.contains("hsmgate.toml:6:"), "{stderr}");
    assert!(stderr.contains("\"type\""), "{stderr}");

    let out = run_hsmgate(
        token.path(),
        &good.replace("[upstream]", "[upstream]\nbogus = 1"),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("hsmgate.toml:") && stderr.contains("bogus"),
        "{stderr}"
    );
}

#[test]
fn pin_value_is_accepted_with_a_warning_and_never_logged() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream("echo");
    let config = config_for(&token, upstream, "").replace(
        &format!("pin-source=file:{}", token.pin_file.display()),
        &format!("pin-value={PIN}"),
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("starts");
    let log = proxy.log_text();
    assert!(log.contains("pin-value"), "warns about pin-value: {log}");
    assert!(!log.contains(PIN), "PIN leaked into the log: {log}");
}

/// Bytes that are not a TLS ClientHello: the connection is closed, the server keeps
/// serving. Plain HTTP (a first byte that is a letter) is answered as nginx answers it,
/// 400 "The plain HTTP request was sent to HTTPS port", then closed; a request line
/// that cannot be one is the 400 of a request that cannot be parsed, at once; other
/// bytes get at most an alert.
#[test]
fn garbage_and_plain_http_are_closed_and_server_keeps_serving() {
    let (token, mut proxy) = start_echo_proxy(KeyType::EcP256);
    let mut garbage = vec![0u8; 4096];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    for (input, page) in [
        (
            &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            "The plain HTTP request was sent to HTTPS port",
        ),
        (&b"G\x00\x01garbage"[..], "400 Bad Request"),
    ] {
        let mut s = TcpStream::connect(proxy.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(11)))
            .expect("timeout");
        let _ = s.write_all(input);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains(page), "{text}");
    }
    let inputs: [&[u8]; 3] = [
        &garbage,
        b"\x16\x03\x01\xff\xff", // a record header promising too much
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", // a truncated ClientHello
    ];
    for input in inputs {
        let mut s = TcpStream::connect(proxy.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(11)))
            .expect("timeout");
        let _ = s.write_all(input);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        // Closed: EOF (perhaps after an alert) or a reset, never a hang.
        let _ = s.read_to_end(&mut buf);
        assert!(
            buf.len() < 64,
            "expected at most an alert, got {} bytes",
            buf.len()
        );
    }
    assert!(proxy.alive(), "hsmgate died:\n{}", proxy.log_text());
    let ca = token.ca_pem.to_str().expect("utf-8");
    let out = curl(&["--cacert", ca, &proxy.url("/")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn upstream_down_is_a_502_with_a_log_line() {
    let token = TestToken::new(KeyType::EcP256);
    let dead = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut proxy =
        ProxyProcess::start(token.path(), &config_for(&token, dead, "")).expect("starts");
    let ca = token.ca_pem.to_str().expect("utf-8");
    for _ in 0..3 {
        let out = curl(&[
            "--cacert",
            ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &proxy.url("/x"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    }
    assert!(proxy.alive());
    let log = proxy.log_text();
    assert!(log.contains("upstream request failed: 502"), "{log}");
    assert!(log.contains(&dead.to_string()), "names the upstream: {log}");
    // With the request's context, as nginx writes it (here tracing's key=value form).
    let line = (log.lines())
        .find(|l| l.contains("upstream request failed: 502"))
        .unwrap_or_default();
    assert!(
        line.contains("client=127.0.0.1") && line.contains("request=GET /x HTTP/"),
        "{line}"
    );
}
