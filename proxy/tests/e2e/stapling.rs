//! OCSP stapling from a file (issue 14): `ssl_stapling on; ssl_stapling_file FILE;`
//! staples the DER response to the server's certificates, as nginx does; `ssl_stapling
//! on` without a file is warned about (no responder is queried). Differential against
//! Debian's nginx with openssl s_client `-status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::nginx::s;
use crate::server_tls::Pair;
use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::hsm::run;
use crate::support::nginx::hsmgate;

/// A DER OCSP response ("good", serial 1) from a throw-away responder CA, made with
/// `openssl ocsp` against an index file.
fn ocsp_response(dir: &Path) -> PathBuf {
    let p = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(p("ocsp-ca.key"))
        .arg("-out")
        .arg(p("ocsp-ca.pem"))
        .args(["-subj", "/CN=ocsp test CA", "-days", "2"]));
    std::fs::write(p("index.txt"), "V\t301231000000Z\t\t01\tunknown\t/CN=x\n").expect("index");
    run(Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-issuer"])
        .arg(p("ocsp-ca.pem"))
        .args(["-serial", "1", "-reqout"])
        .arg(p("req.der")));
    run(Command::new("openssl")
        .arg("ocsp")
        .arg("-index")
        .arg(p("index.txt"))
        .arg("-rsigner")
        .arg(p("ocsp-ca.pem"))
        .arg("-rkey")
        .arg(p("ocsp-ca.key"))
        .arg("-CA")
        .arg(p("ocsp-ca.pem"))
        .arg("-reqin")
        .arg(p("req.der"))
        .arg("-respout")
        .arg(p("resp.der"))
        .args(["-ndays", "1"]));
    p("resp.der")
}

/// `openssl s_client -status` output for `name` on `port`.
fn status(port: u16, ca: &Path, name: &str) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let out = Command::new("openssl")
        .args(["s_client", "-status", "-connect", &addr.to_string()])
        .args(["-servername", name, "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name}: {text}");
    text
}

#[test]
fn ssl_stapling_file_is_stapled_as_nginx_staples_it() {
    let corpus = Corpus::new();
    let resp = ocsp_response(corpus.dir.path());
    let www = format!(
        "ssl_stapling on;\n    ssl_stapling_file {};",
        resp.display()
    );
    let pair = Pair::start(&corpus, "ocsp", &www, "");
    for (who, port) in [("nginx", pair.nginx_port), ("hsmgate", pair.hsmgate_port)] {
        let www = status(port, &corpus.ca_pem, "www.example.test");
        assert!(
            www.contains("OCSP Response Status: successful (0x0)"),
            "{who}: {www}"
        );
        assert!(
            www.contains("Responder Id: CN = ocsp test CA"),
            "{who}: {www}"
        );
        assert!(www.contains("Cert Status: good"), "{who}: {www}");
        // The api server staples nothing.
        let api = status(port, &corpus.ca_pem, "api.example.test");
        assert!(
            api.contains("OCSP response: no response sent"),
            "{who}: {api}"
        );
    }
}

#[test]
fn ssl_stapling_without_a_file_is_warned_about_and_a_bad_file_is_an_error() {
    let corpus = Corpus::new();
    let prefix = corpus.prefix("warn");
    let conf = corpus.write(&prefix, Keys::Token, &layout(), "ssl_stapling on;");
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&prefix)]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("10-www.conf") && text.contains("no \"ssl_stapling_file\""),
        "{text}"
    );

    let bad = corpus.dir.path().join("not-ocsp.der");
    std::fs::write(&bad, "-----BEGIN OCSP-----\n").expect("bad file");
    let prefix = corpus.prefix("bad");
    let extra = format!("ssl_stapling on;\n    ssl_stapling_file {};", bad.display());
    let conf = corpus.write(&prefix, Keys::Token, &layout(), &extra);
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&prefix)]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ssl_stapling_file") && text.contains("not-ocsp.der"),
        "{text}"
    );
}
