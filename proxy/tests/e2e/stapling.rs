//! OCSP stapling (issue 14): `ssl_stapling on; ssl_stapling_file FILE;` staples the DER
//! response to the server's certificates, as nginx does; `ssl_stapling on` without a
//! file fetches each certificate's response from its responder (`openssl ocsp` as a
//! real responder here), checks it and staples it. Differential against Debian's nginx
//! with openssl s_client `-status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::nginx::s;
use crate::server_tls::Pair;
use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::hsm::run;
use crate::support::hsm::{KeyType, TestToken};
use crate::support::nginx::{Server, hsmgate};
use crate::support::{ProxyProcess, config_for, free_port, poll, start_upstream};

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
        .stdin(Stdio::null())
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
fn a_bad_stapling_file_is_an_error() {
    let corpus = Corpus::new();
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

/// A CA, a certificate for `localhost` (serial 0x1001) whose Authority Information Access
/// names `http://127.0.0.1:PORT/`, and the index `openssl ocsp` answers from.
struct Pki {
    dir: tempfile::TempDir,
    port: u16,
}

impl Pki {
    /// `revoked`: the index says the certificate is revoked.
    fn new(revoked: bool) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let p = |name: &str| dir.path().join(name);
        for (name, cn) in [("ca", "stapling test CA"), ("other", "not the issuer")] {
            run(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.pem")))
                .args(["-subj", &format!("/CN={cn}"), "-days", "2"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args([
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                ]));
        }
        std::fs::write(
            p("ext.cnf"),
            format!(
                "subjectAltName=DNS:localhost\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n"
            ),
        )
        .expect("ext.cnf");
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(p("leaf.key"))
            .arg("-out")
            .arg(p("leaf.csr"))
            .args(["-subj", "/CN=localhost"]));
        run(Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(p("leaf.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-set_serial", "0x1001", "-days", "2", "-out"])
            .arg(p("leaf.pem"))
            .arg("-extfile")
            .arg(p("ext.cnf")));
        let chain = [
            std::fs::read_to_string(p("leaf.pem")).expect("leaf"),
            std::fs::read_to_string(p("ca.pem")).expect("ca"),
        ]
        .concat();
        std::fs::write(p("chain.pem"), chain).expect("chain");
        let line = match revoked {
            false => "V\t301231000000Z\t\t1001\tunknown\t/CN=localhost\n",
            true => "R\t301231000000Z\t250101000000Z\t1001\tunknown\t/CN=localhost\n",
        };
        std::fs::write(p("index.txt"), line).expect("index");
        Pki { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl ocsp` answering on the port, its answers signed by `signer` (`ca` or
    /// `other`); killed on drop.
    fn responder(&self, signer: &str) -> Responder {
        let log = self.path(&format!("responder-{}.log", self.port));
        let child = Command::new("openssl")
            .arg("ocsp")
            .arg("-index")
            .arg(self.path("index.txt"))
            .args(["-port", &self.port.to_string()])
            .arg("-rsigner")
            .arg(self.path(&format!("{signer}.pem")))
            .arg("-rkey")
            .arg(self.path(&format!("{signer}.key")))
            .arg("-CA")
            .arg(self.path("ca.pem"))
            .args(["-ndays", "1", "-ignore_err"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).expect("log"),
            ))
            .spawn()
            .expect("openssl ocsp");
        // Not probed with a connection: the one-threaded responder would wait on it.
        poll(
            Duration::from_secs(10),
            || {
                format!(
                    "openssl ocsp not listening on {}: {}",
                    self.port,
                    std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
                )
            },
            || {
                let out = std::fs::read_to_string(&log).unwrap_or_default()
                    + &std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
                out.contains("waiting for OCSP client connections")
                    .then_some(())
            },
        );
        Responder(child)
    }

    /// An nginx configuration in `prefix` with one server per `(port, extra)`.
    fn conf(&self, prefix: &Path, servers: &[(u16, &str)]) -> PathBuf {
        std::fs::create_dir_all(prefix.join("logs")).expect("logs");
        let mut text = format!(
            "pid {}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n",
            prefix.display()
        );
        for (port, extra) in servers {
            text += &format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name localhost;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_stapling on;\n    {extra}\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n",
                self.path("chain.pem").display(),
                self.path("leaf.key").display(),
            );
        }
        text += "}\n";
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, text).expect("conf");
        conf
    }
}

impl Pki {
    /// hsmgate on a configuration of one server (`extra` in it) in `pki/name`.
    fn hsmgate(&self, name: &str, extra: &str) -> (Server, u16) {
        let prefix = self.path(name);
        let port = free_port();
        let conf = self.conf(&prefix, &[(port, extra)]);
        (Server::hsmgate(&prefix, &conf, &[port]), port)
    }

    /// A responder's directory for an existing CA (`ca.pem`, `ca.key`) whose index says
    /// each of `certs` is good.
    fn for_ca(ca_pem: &Path, ca_key: &Path, certs: &[&Path]) -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
        };
        let mut index = String::new();
        for (i, cert) in certs.iter().enumerate() {
            let out = run(Command::new("openssl")
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(cert));
            let serial = out.trim().trim_start_matches("serial=");
            // Distinct names: the index's subjects must be unique.
            index += &format!("V\t301231000000Z\t\t{serial}\tunknown\t/CN=cert{i}\n");
        }
        std::fs::write(pki.path("index.txt"), index).expect("index");
        std::fs::copy(ca_pem, pki.path("ca.pem")).expect("ca");
        std::fs::copy(ca_key, pki.path("ca.key")).expect("ca key");
        pki
    }
}

struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `openssl s_client -status` until the answer is stapled.
fn wait_stapled(port: u16, ca: &Path, who: &Server) -> String {
    let last = std::cell::RefCell::new(String::new());
    poll(
        Duration::from_secs(20),
        || {
            format!(
                "nothing stapled on {port} within 20 s:\n{}\n{}",
                last.borrow(),
                who.log_text()
            )
        },
        || {
            let text = status(port, ca, "localhost");
            let stapled = text.contains("OCSP Response Status: successful");
            *last.borrow_mut() = text.clone();
            stapled.then_some(text)
        },
    )
}

#[test]
fn ssl_stapling_fetches_the_response_from_the_certificates_responder_as_nginx_does() {
    let pki = Pki::new(false);
    let _responder = pki.responder("ca");
    let verify = format!(
        "ssl_stapling_verify on;\n    ssl_trusted_certificate {};",
        pki.path("ca.pem").display()
    );
    for who in ["nginx", "hsmgate"] {
        let prefix = pki.path(who);
        let port = free_port();
        let conf = pki.conf(&prefix, &[(port, &verify)]);
        let server = match who {
            "nginx" => Server::nginx(&prefix, &conf, &[port]),
            _ => Server::hsmgate(&prefix, &conf, &[port]),
        };
        // nginx fetches on its first handshake, hsmgate as it starts.
        let text = wait_stapled(port, &pki.path("ca.pem"), &server);
        assert!(text.contains("Cert Status: good"), "{who}: {text}");
        assert!(
            text.contains("Responder Id: CN = stapling test CA"),
            "{who}: {text}"
        );
        assert!(text.contains("Serial Number: 1001"), "{who}: {text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{who}: {text}");
        if who == "hsmgate" {
            let log = server.log_text();
            assert!(log.contains("OCSP response stapled"), "{log}");
            assert!(log.contains("127.0.0.1:"), "{log}");
            // A reload's configuration fetches its own.
            server.signal("HUP");
            server.wait_log("OCSP response stapled", 2, Duration::from_secs(10));
            let text = wait_stapled(port, &pki.path("ca.pem"), &server);
            assert!(text.contains("Cert Status: good"), "{text}");
        }
    }
}

#[test]
fn a_responder_that_is_down_is_asked_again_and_its_answer_stapled_once_it_is_up() {
    let pki = Pki::new(false);
    let (server, port) = pki.hsmgate("hsmgate", "");
    server.wait_log("OCSP stapling:", 1, Duration::from_secs(10));
    let log = server.log_text();
    assert!(
        log.contains(&format!("http://127.0.0.1:{}/", pki.port)) && log.contains("retry_in: 5s"),
        "{log}"
    );
    let text = status(port, &pki.path("ca.pem"), "localhost");
    assert!(text.contains("OCSP response: no response sent"), "{text}");
    let _responder = pki.responder("ca");
    let text = wait_stapled(port, &pki.path("ca.pem"), &server);
    assert!(text.contains("Cert Status: good"), "{text}");
}

#[test]
fn revoked_and_unverifiable_answers_are_not_stapled() {
    // Revoked: logged with the status, nothing stapled (as nginx).
    let pki = Pki::new(true);
    let _responder = pki.responder("ca");
    let (server, port) = pki.hsmgate("revoked", "");
    let log = server.wait_log("certificate status \"revoked\"", 1, Duration::from_secs(10));
    assert!(!log.contains("OCSP response stapled"), "{log}");
    let text = status(port, &pki.path("ca.pem"), "localhost");
    assert!(text.contains("OCSP response: no response sent"), "{text}");
    drop(server);
    drop(_responder);

    // Signed by a key that is not the issuer's: refused with ssl_stapling_verify on,
    // stapled as it is with it off (nginx's default; the client checks it).
    let pki = Pki::new(false);
    let _responder = pki.responder("other");
    let prefix = pki.path("verify");
    let (on, off) = (free_port(), free_port());
    let conf = pki.conf(&prefix, &[(on, "ssl_stapling_verify on;"), (off, "")]);
    let server = Server::hsmgate(&prefix, &conf, &[on, off]);
    let text = wait_stapled(off, &pki.path("ca.pem"), &server);
    assert!(text.contains("Responder Id: CN = not the issuer"), "{text}");
    let log = server.wait_log("signature does not verify", 1, Duration::from_secs(10));
    assert!(
        log.contains("is not in the response") || log.contains("not issued by"),
        "{log}"
    );
    let text = status(on, &pki.path("ca.pem"), "localhost");
    assert!(text.contains("OCSP response: no response sent"), "{text}");
}

#[test]
fn a_certificate_without_a_responder_is_warned_about_and_served_without_stapling() {
    let pki = Pki::new(false);
    let prefix = pki.path("noaia");
    std::fs::create_dir_all(&prefix).expect("prefix");
    // The CA's own certificate has no Authority Information Access.
    let chain = prefix.join("ca-as-leaf.pem");
    std::fs::copy(pki.path("ca.pem"), &chain).expect("copy");
    let port = free_port();
    let conf = pki.conf(&prefix, &[(port, "")]);
    let text = std::fs::read_to_string(&conf)
        .expect("conf")
        .replace(
            &pki.path("chain.pem").display().to_string(),
            &chain.display().to_string(),
        )
        .replace(
            &pki.path("leaf.key").display().to_string(),
            &pki.path("ca.key").display().to_string(),
        );
    std::fs::write(&conf, text).expect("conf");
    let server = Server::hsmgate(&prefix, &conf, &[port]);
    let log = server.wait_log(
        "no OCSP responder URL in the certificate",
        1,
        Duration::from_secs(5),
    );
    assert!(log.contains("nginx.conf:"), "{log}");
    // `-t` says so, as `nginx -t` does.
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&prefix)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("nginx.conf:")
            && err.contains("\"ssl_stapling\" ignored, no OCSP responder URL"),
        "{err}"
    );
}

#[test]
fn token_keys_certificates_get_their_responders_answer_as_with_nginx() {
    // The corpus's certificates (token keys for hsmgate, file keys for nginx) have no
    // responder URL and their chain files hold no CA: `ssl_stapling_responder` names
    // the responder and `ssl_trusted_certificate` the issuer, as for nginx.
    let corpus = Corpus::new();
    let certs: Vec<&Path> = corpus.certs.iter().map(PathBuf::as_path).collect();
    let pki = Pki::for_ca(&corpus.ca_pem, &corpus.dir.path().join("ca.key"), &certs);
    let _responder = pki.responder("ca");
    let www = format!(
        "ssl_stapling on;\n    ssl_stapling_responder http://127.0.0.1:{}/;\n    ssl_stapling_verify on;\n    ssl_trusted_certificate {};",
        pki.port,
        corpus.ca_pem.display()
    );
    let pair = Pair::start(&corpus, "fetch", &www, "");
    for (who, port, server) in [
        ("nginx", pair.nginx_port, &pair.nginx),
        ("hsmgate", pair.hsmgate_port, &pair.hsmgate),
    ] {
        let poll_www = || status(port, &corpus.ca_pem, "www.example.test");
        let text = poll(
            Duration::from_secs(20),
            || format!("{who}: nothing stapled:\n{}", server.log_text()),
            || {
                let t = poll_www();
                t.contains("OCSP Response Status: successful").then_some(t)
            },
        );
        assert!(text.contains("Cert Status: good"), "{who}: {text}");
        assert!(
            text.contains("Responder Id: CN = hsmgate corpus CA"),
            "{who}: {text}"
        );
        // The api server does not staple.
        let api = status(port, &corpus.ca_pem, "api.example.test");
        assert!(
            api.contains("OCSP response: no response sent"),
            "{who}: {api}"
        );
    }
}

#[test]
fn the_toml_format_staples_with_ocsp_stapling() {
    // A token key whose chain file also holds its issuer (the TOML format has no
    // ssl_trusted_certificate).
    let token = TestToken::new(KeyType::Rsa2048);
    let dir = token.path().to_path_buf();
    let chain = dir.join("chain-with-ca.pem");
    let text = std::fs::read_to_string(&token.chain_pem).expect("chain")
        + &std::fs::read_to_string(&token.ca_pem).expect("ca");
    std::fs::write(&chain, text).expect("chain");
    let pki = Pki::for_ca(&token.ca_pem, &dir.join("ca.key"), &[&token.chain_pem]);
    let _responder = pki.responder("ca");
    let config = config_for(&token, start_upstream("echo"), "")
        .replace(
            &token.chain_pem.display().to_string(),
            &chain.display().to_string(),
        )
        .replacen(
            "\n[pkcs11]",
            &format!(
                "ocsp_stapling = true\nocsp_responder = \"http://127.0.0.1:{}/\"\nocsp_verify = true\n\n[pkcs11]",
                pki.port
            ),
            1,
        );
    let admin = free_port();
    let config = format!("{config}\n[admin]\naddress = \"127.0.0.1:{admin}\"\n");
    let proxy = ProxyProcess::start(&dir, &config).expect("hsmgate starts");
    let text = poll(
        Duration::from_secs(20),
        || {
            format!(
                "nothing stapled:\n{}",
                std::fs::read_to_string(&proxy.log).unwrap_or_default()
            )
        },
        || {
            let t = status(proxy.addr.port(), &token.ca_pem, "localhost");
            t.contains("OCSP Response Status: successful").then_some(t)
        },
    );
    assert!(text.contains("Cert Status: good"), "{text}");
    assert!(
        text.contains("Responder Id: CN = hsmgate test CA"),
        "{text}"
    );
    // The metrics tell what is stapled and until when.
    let metrics = String::from_utf8_lossy(
        &Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{admin}/metrics")])
            .output()
            .expect("curl")
            .stdout,
    )
    .into_owned();
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}: {metrics}"))
            .to_owned()
    };
    assert!(
        line("hsmgate_ocsp_fetches_total").contains("result=\"stapled\"}"),
        "{metrics}"
    );
    let next: f64 = line("hsmgate_ocsp_staple_next_update_seconds")
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // openssl ocsp -ndays 1.
    assert!(
        next > now + 80_000.0 && next < now + 90_000.0,
        "{next} vs {now}"
    );
}
