//! The server's cipher order (issue 10): `ssl_prefer_server_ciphers on` in an nginx
//! configuration makes `ssl_ciphers`' order win over the client's, `off` (nginx's
//! default) lets the client's order win; the TOML configuration always prefers the
//! server's order. Checked with openssl s_client offering two suites in the opposite order.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::raw::{Gate, upstream_in_range};
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, start_upstream};

/// The cipher openssl s_client negotiated with `addr` when it offers `offer`
/// (`-cipher` for TLS 1.2, `-ciphersuites` for TLS 1.3).
fn negotiated(addr: SocketAddr, ca: &Path, version: &str, offer: &str) -> String {
    let list = if version == "-tls1_3" {
        "-ciphersuites"
    } else {
        "-cipher"
    };
    let out = Command::new("openssl")
        .args(["s_client", version, list, offer, "-connect"])
        .arg(addr.to_string())
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-brief",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{version} {offer}: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Ciphersuite: "))
        .unwrap_or_else(|| panic!("no Ciphersuite line: {text}"))
        .trim()
        .to_owned()
}

const SERVER_FIRST: &str = "ECDHE-ECDSA-CHACHA20-POLY1305";
const CLIENT_FIRST: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";

#[test]
fn ssl_prefer_server_ciphers_on_takes_the_servers_order_and_off_the_clients() {
    let upstream = upstream_in_range("A");
    let offer = format!("{CLIENT_FIRST}:{SERVER_FIRST}");
    for (prefer, want) in [("on", SERVER_FIRST), ("off", CLIENT_FIRST)] {
        let g = Gate::start(
            &[upstream],
            &format!(
                "ssl_ciphers {SERVER_FIRST}:{CLIENT_FIRST}; ssl_prefer_server_ciphers {prefer};"
            ),
        );
        let got = negotiated(g.addr, g.ca(), "-tls1_2", &offer);
        assert_eq!(
            got,
            want,
            "ssl_prefer_server_ciphers {prefer}\n{}",
            g.server.log_text()
        );
    }
}

#[test]
fn the_toml_configuration_prefers_the_servers_order() {
    let token = TestToken::new(KeyType::EcP256);
    let proxy = ProxyProcess::start(
        token.path(),
        &config_for(&token, start_upstream("echo"), ""),
    )
    .expect("hsmgate starts");
    // rustls' order: AES-256-GCM, then AES-128-GCM, then ChaCha20-Poly1305.
    expect_choices(
        &proxy,
        &token,
        &[
            (
                "-tls1_2",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
            ),
            (
                "-tls1_3",
                "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
                "TLS_AES_256_GCM_SHA384",
            ),
        ],
    );
}

/// For each (openssl version flag, suites the client offers in its order, the suite the
/// server must choose): what `proxy` negotiates.
fn expect_choices(proxy: &ProxyProcess, token: &TestToken, cases: &[(&str, &str, &str)]) {
    for (version, offer, want) in cases {
        let got = negotiated(proxy.addr, &token.ca_pem, version, offer);
        assert_eq!(got, *want, "{version} offering {offer}");
    }
}

#[test]
fn tls_ciphers_in_toml_set_the_servers_suites_and_order() {
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("echo"), "").replacen(
        "\n\n[pkcs11]",
        "\nciphers = [\"TLS_AES_128_GCM_SHA256\", \"TLS_CHACHA20_POLY1305_SHA256\", \"ECDHE-ECDSA-CHACHA20-POLY1305\", \"ECDHE-ECDSA-AES128-GCM-SHA256\"]\n\n[pkcs11]",
        1,
    );
    assert!(config.contains("ciphers = "), "{config}");
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    // The listed order wins over the client's.
    expect_choices(
        &proxy,
        &token,
        &[
            (
                "-tls1_3",
                "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
                "TLS_AES_128_GCM_SHA256",
            ),
            (
                "-tls1_2",
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ),
        ],
    );
    // A suite not listed is not offered: a client that offers only it is refused.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384",
            "-connect",
        ])
        .arg(proxy.addr.to_string())
        .args(["-servername", "localhost", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("handshake failure"),
        "AES-256-GCM is not listed, so not offered: {text}"
    );
}

/// `ssl_conf_command Ciphersuites` restricts and orders the TLS 1.3 suites (as OpenSSL's
/// `SSL_CONF_cmd` does for nginx); `Options ServerPreference` makes that order win and
/// `Options -SessionTicket` turns tickets off.
#[test]
fn ssl_conf_command_ciphersuites_and_options_apply() {
    let upstream = upstream_in_range("A");
    let g = Gate::start(
        &[upstream],
        "ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384;
         ssl_conf_command Options ServerPreference,-SessionTicket;",
    );
    let got = negotiated(
        g.addr,
        g.ca(),
        "-tls1_3",
        "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    );
    assert_eq!(
        got,
        "TLS_CHACHA20_POLY1305_SHA256",
        "{}",
        g.server.log_text()
    );
    // A suite left out is refused.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256",
        ])
        .arg("-connect")
        .arg(g.addr.to_string())
        .args(["-servername", "localhost", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("handshake failure"),
        "{text}"
    );
    // No TLS 1.2 ticket (`-SessionTicket`): the session has no ticket.
    let out = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-connect"])
        .arg(g.addr.to_string())
        .args(["-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("New, TLSv1.2") && !text.contains("TLS session ticket:"),
        "{text}"
    );
}
