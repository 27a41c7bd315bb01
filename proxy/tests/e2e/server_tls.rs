//! Per-server TLS settings on a shared address (issue 14): the ClientHello selects the
//! server by SNI, and that server's `ssl_*` settings apply, not the default server's.
//! Differential: Debian's nginx (file keys) and hsmgate (token keys) on the same
//! configuration. Debian's nginx 1.22 negotiates the version with the default server's
//! `ssl_protocols` whatever the SNI (OpenSSL picks the version before nginx's SNI
//! callback switches the `SSL_CTX`); hsmgate applies the selected server's, as issue 14
//! asks. The cases say where the two differ.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::nginx::Server;

/// `openssl s_client OPTIONS -servername NAME` (`options`: the version and any other
/// options, space-separated): whether the handshake succeeded, and the output.
fn handshake(addr: SocketAddr, ca: &Path, version: &str, name: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .args(version.split_whitespace())
        .args(["-connect", &addr.to_string()]);
    match name {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .args(["-verify_return_error", "-brief", "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// nginx (file keys) and hsmgate (token keys) on the corpus with `www_extra` in the
/// default server (www) and `api_extra` in the api.example.test server.
pub(crate) struct Pair {
    pub nginx: Server,
    pub nginx_port: u16,
    pub hsmgate: Server,
    pub hsmgate_port: u16,
}

impl Pair {
    pub(crate) fn start(corpus: &Corpus, name: &str, www_extra: &str, api_extra: &str) -> Pair {
        let (nl, hl) = (layout(), layout());
        let write = |who: &str, keys, l| {
            let prefix = corpus.prefix(&format!("{name}-{who}"));
            let conf = corpus.write(&prefix, keys, l, www_extra);
            let api = prefix.join("conf.d/20-api.conf");
            let text = std::fs::read_to_string(&api).expect("api conf");
            let text = text.replacen(
                "server_name api.example.test;",
                &format!("server_name api.example.test;\n    {api_extra}"),
                1,
            );
            std::fs::write(&api, text).expect("api conf");
            (prefix, conf)
        };
        let (np, nconf) = write("nginx", Keys::File, &nl);
        let (hp, hconf) = write("hsmgate", Keys::Token, &hl);
        Pair {
            nginx: Server::nginx(&np, &nconf, &[nl.https]),
            nginx_port: nl.https,
            hsmgate: Server::hsmgate(&hp, &hconf, &[hl.https]),
            hsmgate_port: hl.https,
        }
    }
}

/// Start a [`Pair`] and check each `(version, SNI, hsmgate succeeds, nginx succeeds)`.
fn differential(
    corpus: &Corpus,
    name: &str,
    www_extra: &str,
    api_extra: &str,
    cases: &[(&str, Option<&str>, bool, bool)],
) {
    let pair = Pair::start(corpus, name, www_extra, api_extra);
    let (nginx, hsm) = (&pair.nginx, &pair.hsmgate);
    let nl_https = pair.nginx_port;
    let hl_https = pair.hsmgate_port;
    for &(version, sni, hsmgate_ok, nginx_ok) in cases {
        for (who, port, server, ok) in [
            ("nginx", nl_https, nginx, nginx_ok),
            ("hsmgate", hl_https, hsm, hsmgate_ok),
        ] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let (got, text) = handshake(addr, &corpus.ca_pem, version, sni);
            assert_eq!(
                got,
                ok,
                "{name}: {who} {version} {sni:?}:\n{text}\n{}",
                server.log_text()
            );
            if ok {
                let want = match version.starts_with("-tls1_2") {
                    true => "Protocol version: TLSv1.2",
                    false => "Protocol version: TLSv1.3",
                };
                assert!(
                    text.contains(want),
                    "{name}: {who} {version} {sni:?}: {text}"
                );
            }
        }
    }
}

#[test]
fn servers_on_one_address_keep_their_own_ssl_protocols() {
    let corpus = Corpus::new();
    const API: Option<&str> = Some("api.example.test");
    const WWW: Option<&str> = Some("www.example.test");
    // The default server (www) takes TLS 1.3 only; api.example.test takes 1.2 and 1.3.
    // hsmgate: a TLS 1.2 client gets api by SNI and is refused by www. Debian's nginx
    // (1.22, OpenSSL 3) picks the version with the default server's settings before
    // the SNI callback switches servers, so it refuses TLS 1.2 for api too: the one
    // case where hsmgate serves what the configuration says and nginx does not.
    differential(
        &corpus,
        "strict-default",
        "ssl_protocols TLSv1.3;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        &[
            ("-tls1_2", API, true, false),
            ("-tls1_3", API, true, true),
            ("-tls1_2", WWW, false, false),
            ("-tls1_3", WWW, true, true),
            // No SNI: the default server.
            ("-tls1_2", None, false, false),
            ("-tls1_3", None, true, true),
        ],
    );
    // The reverse: the default server takes 1.2 and 1.3, api only 1.3. nginx 1.22
    // serves TLS 1.2 to api (the default server's versions again); hsmgate refuses it.
    differential(
        &corpus,
        "strict-api",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_protocols TLSv1.3;",
        &[
            ("-tls1_2", API, false, true),
            ("-tls1_3", API, true, true),
            ("-tls1_2", WWW, true, true),
            ("-tls1_2", None, true, true),
        ],
    );
}

#[test]
fn servers_on_one_address_keep_their_own_ssl_ciphers() {
    let corpus = Corpus::new();
    const API: Option<&str> = Some("api.example.test");
    const WWW: Option<&str> = Some("www.example.test");
    const AES: &str = "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
    const CHACHA: &str =
        "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
    // www (default) takes AES-128-GCM only, api ChaCha20 only: both hsmgate and nginx
    // apply the selected server's list (OpenSSL chooses the suite after nginx's SNI
    // callback has switched the SSL_CTX, unlike the version).
    differential(
        &corpus,
        "ciphers",
        "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256;",
        "ssl_ciphers ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
        &[
            (AES, WWW, true, true),
            (CHACHA, WWW, false, false),
            (CHACHA, API, true, true),
            (AES, API, false, false),
        ],
    );
}
