//! TLS to upstreams (`proxy_pass https://`, `proxy_ssl_*`): a Debian nginx with file keys
//! is the TLS upstream (it answers with the SNI it saw, the protocol and whether a client
//! certificate was verified); the same front configuration runs in hsmgate and in Debian's
//! nginx, and both must answer alike.

use std::path::PathBuf;

use crate::support::net::free_port;
use crate::support::nginx::{Server, hsmgate, nginx_t};

/// A CA, and certificates it issues (file keys).
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new(name: &str) -> Ca {
        Self::issued(name, None)
    }

    /// A CA, self-signed or (with `parent`) an intermediate.
    fn issued(name: &str, parent: Option<&Ca>) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = match parent {
            None => params.self_signed(&key),
            Some(p) => params.signed_by(&key, &p.issuer),
        }
        .expect("CA cert");
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        }
    }

    /// A leaf for `names` (and 127.0.0.1): (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![match client {
            true => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            false => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        }];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// Files and the TLS upstream (nginx) shared by the tests here.
struct Lab {
    dir: tempfile::TempDir,
    /// Upstream with a certificate issued by `ca.pem` directly.
    direct: u16,
    /// Upstream whose certificate comes through an intermediate CA.
    chained: u16,
    _upstream: Server,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("hsmgate-upstream-tls-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        let write = |name: &str, text: &str| std::fs::write(root.join(name), text).expect(name);
        let ca = Ca::new("upstream test CA");
        let wrong = Ca::new("some other CA");
        let middle = Ca::issued("upstream intermediate CA", Some(&ca));
        write("ca.pem", &ca.cert.pem());
        write("wrong-ca.pem", &wrong.cert.pem());
        let (cert, key) = ca.leaf(&["backend.test", "other.test"], false);
        write("direct.pem", &cert);
        write("direct.key", &key);
        let (cert, key) = middle.leaf(&["backend.test"], false);
        write("chained.pem", &format!("{cert}{}", middle.cert.pem()));
        write("chained.key", &key);
        let (cert, key) = ca.leaf(&["front.test"], true);
        write("client.pem", &cert);
        write("client.key", &key);

        let (direct, chained) = (free_port(), free_port());
        let prefix = root.join("upstream");
        std::fs::create_dir_all(prefix.join("logs")).expect("logs");
        let r = root.display();
        let server = |port: u16, name: &str| {
            format!(
                r#"
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {r}/{name}.pem;
        ssl_certificate_key {r}/{name}.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate {r}/ca.pem;
        ssl_verify_client optional;
        location /ciphers/ {{
            return 200 "{name} cipher=$ssl_cipher\n";
        }}
        location / {{
            return 200 "{name} sni=[$ssl_server_name] $ssl_protocol client=$ssl_client_verify reused=$ssl_session_reused reqs=$connection_requests uri=$request_uri host=$http_host\n";
        }}
    }}"#
            )
        };
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "pid logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;{}{}\n}}\n",
                server(direct, "direct"),
                server(chained, "chained")
            ),
        )
        .expect("upstream conf");
        let upstream = Server::nginx(&prefix, &conf, &[direct, chained]);
        Lab {
            dir,
            direct,
            chained,
            _upstream: upstream,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A front configuration listening on `port` (plain HTTP) with `locations`.
    fn front(&self, name: &str, port: u16, http: &str, locations: &str) -> (PathBuf, PathBuf) {
        let prefix = self.dir.path().join(name);
        std::fs::create_dir_all(prefix.join("logs")).expect("logs");
        let conf = prefix.join("nginx.conf");
        let text = format!(
            r#"pid logs/front.pid;
error_log logs/error.log info;
events {{}}
http {{
    access_log off;
    upstream backend.test {{
        server 127.0.0.1:{direct};
    }}
{http}
    server {{
        listen 127.0.0.1:{port};
        server_name front.test;
{locations}
    }}
}}
"#,
            direct = self.direct,
        );
        std::fs::write(&conf, text).expect("front conf");
        (prefix, conf)
    }
}

/// `curl` over plain HTTP: (status, body).
fn get(port: u16, path: &str, host: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The locations of the differential test. Those expected to fail verification do not
/// reuse sessions: nginx keeps one saved session per upstream address, shared by every
/// location passing there, and a resumed session skips verification, so after a verified
/// request to the same address nginx would let them through (hsmgate keeps sessions per
/// upstream and TLS settings, so it refuses either way).
fn locations(lab: &Lab) -> String {
    let ca = lab.path("ca.pem").display().to_string();
    let wrong = lab.path("wrong-ca.pem").display().to_string();
    let (d, c) = (lab.direct, lab.chained);
    let client = lab.path("client.pem").display().to_string();
    let client_key = lab.path("client.key").display().to_string();
    format!(
        r#"
        location /verify-on/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name backend.test;
        }}
        location /wrong-ca/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_session_reuse off;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {wrong};
            proxy_ssl_name backend.test;
        }}
        location /wrong-name/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_session_reuse off;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name nobody.test;
        }}
        location /verify-off/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_trusted_certificate {wrong};
        }}
        location /sni/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_server_name on;
            proxy_ssl_name backend.test;
        }}
        location /no-sni/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_name backend.test;
        }}
        location /sni-host/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_server_name on;
            proxy_ssl_name $host;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
        }}
        location /group/ {{
            proxy_pass https://backend.test;
            proxy_ssl_server_name on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
        }}
        location /chain-depth0/ {{
            proxy_pass https://127.0.0.1:{c};
            proxy_ssl_session_reuse off;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 0;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name backend.test;
        }}
        location /chain-depth1/ {{
            proxy_pass https://127.0.0.1:{c};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name backend.test;
        }}
        location /chain-depth2/ {{
            proxy_pass https://127.0.0.1:{c};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name backend.test;
        }}
        location /tls12/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_protocols TLSv1.2;
        }}
        location /ciphers/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_protocols TLSv1.2;
            proxy_ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:UNKNOWN-CIPHER;
        }}
        location /client-cert/ {{
            proxy_pass https://127.0.0.1:{d};
            proxy_ssl_certificate {client};
            proxy_ssl_certificate_key {client_key};
        }}
"#
    )
}

/// Each case: (path, Host, expected status, text the body has).
const CASES: &[(&str, &str, u16, &str)] = &[
    (
        "/verify-on/x",
        "front.test",
        200,
        "direct sni=[] TLSv1.3 client=NONE",
    ),
    ("/wrong-ca/x", "front.test", 502, ""),
    ("/wrong-name/x", "front.test", 502, ""),
    ("/verify-off/x", "front.test", 200, "direct sni=[]"),
    ("/sni/x", "front.test", 200, "sni=[backend.test]"),
    ("/no-sni/x", "front.test", 200, "sni=[]"),
    ("/sni-host/x", "other.test", 200, "sni=[other.test]"),
    ("/sni-host/x", "backend.test", 200, "sni=[backend.test]"),
    ("/group/x", "front.test", 200, "sni=[backend.test]"),
    ("/chain-depth0/x", "front.test", 502, ""),
    ("/chain-depth1/x", "front.test", 200, "chained sni=[]"),
    ("/chain-depth2/x", "front.test", 200, "chained sni=[]"),
    ("/tls12/x", "front.test", 200, "TLSv1.2"),
    ("/client-cert/x", "front.test", 200, "client=SUCCESS"),
    (
        "/ciphers/x",
        "front.test",
        200,
        "cipher=ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
];

#[test]
fn upstream_tls_as_nginx() {
    let lab = Lab::start();
    let locs = locations(&lab);
    let (hp, np) = (free_port(), free_port());
    // Debian's nginx 1.22 leaves TLSv1.3 out of its default (added in nginx 1.23.4, the
    // default hsmgate follows): said explicitly so both offer the same.
    let http = "    proxy_ssl_protocols TLSv1.2 TLSv1.3;";
    let (h_prefix, h_conf) = lab.front("hsmgate", hp, http, &locs);
    let (n_prefix, n_conf) = lab.front("nginx", np, http, &locs);
    let (ok, err) = nginx_t(&n_prefix, &n_conf);
    assert!(ok, "nginx -t: {err}");
    let mine = Server::hsmgate(&h_prefix, &h_conf, &[hp]);
    let theirs = Server::nginx(&n_prefix, &n_conf, &[np]);
    for &(path, host, status, text) in CASES {
        let (hs, hb) = get(hp, path, host);
        let (ns, nb) = get(np, path, host);
        assert_eq!(
            (hs, ns),
            (status, status),
            "{path} (Host {host}): hsmgate {hs} {hb:?}, nginx {ns} {nb:?}\n{}",
            mine.log_text()
        );
        if status == 200 {
            // Resumption differs by design (nginx shares a session across locations).
            let unreused = |b: &str| b.replace("reused=r", "reused=.");
            assert_eq!(
                unreused(&hb),
                unreused(&nb),
                "{path} (Host {host}): same upstream answer"
            );
            assert!(hb.contains(text), "{path}: {hb:?} lacks {text:?}");
            let upstream_uri = format!("uri={path}");
            let cipher_page = path.starts_with("/ciphers/");
            assert!(cipher_page || hb.contains(&upstream_uri), "{path}: {hb:?}");
        }
    }
    // The 502 names the upstream and the reason.
    let log = mine.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("upstream request failed: 502") && l.contains("UnknownIssuer"))
        .unwrap_or_else(|| panic!("no 502 line naming the reason:\n{log}"));
    assert!(
        line.contains(&format!("127.0.0.1:{}", lab.direct)),
        "{line}"
    );
    assert!(
        log.contains("certificate not valid for name \"nobody.test\""),
        "{log}"
    );
    assert!(log.contains("proxy_ssl_verify_depth 0"), "{log}");
    assert!(log.contains("left out: UNKNOWN-CIPHER"), "{log}");
    drop(theirs);
}

#[test]
fn sessions_are_reused_unless_told_not_to() {
    let lab = Lab::start();
    let port = lab.direct;
    // proxy_http_version 1.0 (nginx's default): a connection per request, so each request
    // is a new handshake, resumed with the session of the one before.
    let locs = format!(
        r#"
        location /reuse/ {{
            proxy_pass https://127.0.0.1:{port};
        }}
        location /no-reuse/ {{
            proxy_pass https://127.0.0.1:{port};
            proxy_ssl_session_reuse off;
        }}
"#
    );
    let hp = free_port();
    let (prefix, conf) = lab.front("reuse", hp, "", &locs);
    let _mine = Server::hsmgate(&prefix, &conf, &[hp]);
    let reused = |path: &str| {
        (0..3)
            .map(|_| get(hp, path, "front.test").1)
            .filter(|b| b.contains("reused=r"))
            .count()
    };
    assert!(reused("/reuse/x") >= 2, "sessions resumed");
    assert_eq!(reused("/no-reuse/x"), 0, "never resumed");
}

#[test]
fn bad_proxy_ssl_values_are_file_line_errors() {
    let lab = Lab::start();
    let ca = lab.path("ca.pem").display().to_string();
    let cases: &[(&str, &str)] = &[
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_verify on;",
            "no proxy_ssl_trusted_certificate for proxy_ssl_verify",
        ),
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_verify maybe;",
            "it must be \"on\" or \"off\"",
        ),
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_protocols TLSv9;",
            "invalid value \"TLSv9\"",
        ),
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_verify_depth x;",
            "invalid number",
        ),
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_certificate_key engine:pkcs11:pkcs11:token=t;object=k;",
            "only a PEM key file",
        ),
        (
            "proxy_pass https://127.0.0.1:1;\n            proxy_ssl_verify on;\n            proxy_ssl_trusted_certificate /nonexistent/ca.pem;",
            "/nonexistent/ca.pem",
        ),
        (
            &format!("proxy_pass https://127.0.0.1:1;\n            proxy_ssl_certificate {ca};"),
            "no \"proxy_ssl_certificate_key\" is defined",
        ),
    ];
    for (i, (body, message)) in cases.iter().enumerate() {
        let locs = format!("        location / {{\n            {body}\n        }}\n");
        let (prefix, conf) = lab.front(&format!("bad{i}"), free_port(), "", &locs);
        let out = hsmgate(&[
            "-t",
            "-c",
            conf.to_str().expect("utf-8"),
            "-p",
            prefix.to_str().expect("utf-8"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(err.contains(message), "{body}: {err}");
        let file_line = format!("{}:", conf.display());
        assert!(err.contains(&file_line), "{body}: no file:line in {err}");
        // nginx refuses the same file (where it can parse it).
        if i < 4 {
            let (ok, nginx_err) = nginx_t(&prefix, &conf);
            assert!(!ok, "nginx -t accepted {body}: {nginx_err}");
        }
    }
}

#[test]
fn pools_are_per_tls_settings() {
    let lab = Lab::start();
    let port = lab.direct;
    let ca = lab.path("ca.pem").display().to_string();
    let wrong = lab.path("wrong-ca.pem").display().to_string();
    // Keep-alive to the same address from two locations: a connection verified with the
    // right CA must not serve the location that trusts another CA.
    let http = "    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";";
    let locs = format!(
        r#"
        location /right/ {{
            proxy_pass https://127.0.0.1:{port};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name backend.test;
        }}
        location /wrong/ {{
            proxy_pass https://127.0.0.1:{port};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {wrong};
            proxy_ssl_name backend.test;
        }}
"#
    );
    let hp = free_port();
    let (prefix, conf) = lab.front("pools", hp, http, &locs);
    let mine = Server::hsmgate(&prefix, &conf, &[hp]);
    for _ in 0..2 {
        assert_eq!(get(hp, "/right/x", "front.test").0, 200);
        assert_eq!(
            get(hp, "/wrong/x", "front.test").0,
            502,
            "{}",
            mine.log_text()
        );
    }
    // The right location's connection was kept alive and reused meanwhile.
    let again = get(hp, "/right/x", "front.test").1;
    assert!(again.contains("reqs=3"), "{again}");
}
