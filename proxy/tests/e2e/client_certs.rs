//! Client certificates (issue 14): `ssl_client_certificate`, `ssl_verify_client
//! on|optional`, and `$ssl_client_verify`, `$ssl_client_s_dn`,
//! `$ssl_client_escaped_cert` forwarded with `proxy_set_header`. Differential against
//! Debian's nginx on the same configuration: curl with and without `--cert`, with a
//! certificate from another CA; openssl s_client sees the CA names asked for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server_tls::Pair;
use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::nginx::{Seen, fetch, hsmgate, nginx_t};

/// A client certificate and its key, as files.
struct Client {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA (its PEM in `dir/NAME-ca.pem`) and one client certificate it issued.
fn client_ca(dir: &Path, name: &str) -> (PathBuf, Client) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} client CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("client key");
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CountryName, "DE");
    leaf.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example, Inc.");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} client"));
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("client cert");
    let ca_pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_pem, ca_cert.pem()).expect("ca");
    let client = Client {
        cert: dir.join(format!("{name}-client.crt")),
        key: dir.join(format!("{name}-client.key")),
    };
    std::fs::write(&client.cert, cert.pem()).expect("cert");
    std::fs::write(&client.key, key.serialize_pem()).expect("key");
    (ca_pem, client)
}

/// A CA, an intermediate it issued and a client certificate the intermediate issued;
/// the client's file holds the leaf then the intermediate.
fn chained_client(dir: &Path) -> (PathBuf, Client) {
    let ca_params = |cn: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p
    };
    let root_key = rcgen::KeyPair::generate().expect("key");
    let root_params = ca_params("chain root CA");
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let mid_key = rcgen::KeyPair::generate().expect("key");
    let mid_params = ca_params("chain intermediate CA");
    let mid = mid_params.signed_by(&mid_key, &root_issuer).expect("mid");
    let mid_issuer = rcgen::Issuer::new(mid_params, mid_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "chained client");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &mid_issuer).expect("leaf");
    let ca = dir.join("chain-ca.pem");
    std::fs::write(&ca, root.pem()).expect("ca");
    let client = Client {
        cert: dir.join("chain-client.crt"),
        key: dir.join("chain-client.key"),
    };
    std::fs::write(&client.cert, cert.pem() + &mid.pem()).expect("cert");
    std::fs::write(&client.key, key.serialize_pem()).expect("key");
    (ca, client)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The `x-client-*` headers the upstream saw.
fn client_headers(seen: &Seen) -> Vec<(String, String)> {
    seen.upstream()
        .map(|(_, _, h)| {
            h.into_iter()
                .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-client-"))
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn client_certificates_are_verified_and_forwarded_as_nginx_does() {
    let corpus = Corpus::new();
    let dir = corpus.dir.path();
    let (ca, good) = client_ca(dir, "good");
    let (_, rogue) = client_ca(dir, "rogue");
    let headers = "proxy_set_header X-Client-Verify $ssl_client_verify;\n    \
                   proxy_set_header X-Client-DN $ssl_client_s_dn;\n    \
                   proxy_set_header X-Client-Cert $ssl_client_escaped_cert;\n    \
                   proxy_set_header X-Client-I-DN $ssl_client_i_dn;\n    \
                   proxy_set_header X-Client-Serial $ssl_client_serial;\n    \
                   proxy_set_header X-Client-Fingerprint $ssl_client_fingerprint;\n    \
                   proxy_set_header X-Client-V-Start $ssl_client_v_start;\n    \
                   proxy_set_header X-Client-V-End $ssl_client_v_end;\n    \
                   proxy_set_header X-Client-V-Remain $ssl_client_v_remain;\n    \
                   add_header X-Verify $ssl_client_verify always;\n    \
                   add_header X-Tls \"$ssl_protocol $ssl_cipher $ssl_curve $ssl_session_reused \
                   $connection_requests [$ssl_early_data] [$request_completion]\" always;";
    let www = format!(
        "ssl_client_certificate {};\n    ssl_verify_client optional;\n    {headers}",
        ca.display()
    );
    let api = format!(
        "ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_verify_depth 1;\n    {headers}",
        ca.display()
    );
    let pair = Pair::start(&corpus, "mtls", &www, &api);
    fn with(c: &Client) -> Vec<&str> {
        vec!["--cert", s(&c.cert), "--key", s(&c.key)]
    }
    let cases: Vec<(&str, &str, Vec<&str>, u16)> = vec![
        ("www.example.test", "/", with(&good), 200),
        ("www.example.test", "/", vec![], 200),
        ("www.example.test", "/", with(&rogue), 400),
        ("api.example.test", "/v1/items", vec![], 400),
        ("api.example.test", "/v1/items", with(&good), 200),
        ("api.example.test", "/v1/items", with(&rogue), 400),
        // SNI api, Host www (which verifies clients): nginx's 421.
        (
            "api.example.test",
            "/v1/items",
            [with(&good), vec!["-H", "Host: www.example.test"]].concat(),
            421,
        ),
    ];
    let pem = std::fs::read_to_string(&good.cert).expect("cert");
    for (host, path, extra, status) in &cases {
        let mut seen = Vec::new();
        for (who, port, server) in [
            ("nginx", pair.nginx_port, &pair.nginx),
            ("hsmgate", pair.hsmgate_port, &pair.hsmgate),
        ] {
            let url = format!("https://{host}:{port}{path}");
            let got = fetch(&corpus.ca_pem, host, port, &url, extra);
            assert_eq!(
                got.status,
                *status,
                "{who} {host}{path} {extra:?}: {got:?}\n{}",
                server.log_text()
            );
            seen.push(got);
        }
        let (n, h) = (&seen[0], &seen[1]);
        assert_eq!(
            n.header("x-verify"),
            h.header("x-verify"),
            "$ssl_client_verify of {host}{path} {extra:?}"
        );
        assert_eq!(
            n.header("x-tls"),
            h.header("x-tls"),
            "the session's variables, {host}{path} {extra:?}"
        );
        assert_eq!(
            client_headers(n),
            client_headers(h),
            "{host}{path} {extra:?}"
        );
        if *status == 421 {
            assert!(h.body.contains("421 Misdirected Request"), "{}", h.body);
        } else if *status == 400 {
            let why = if extra.is_empty() {
                "No required SSL certificate was sent"
            } else {
                "The SSL certificate error"
            };
            assert!(n.body.contains(why), "nginx: {}", n.body);
            assert!(h.body.contains(why), "hsmgate: {}", h.body);
        } else if extra.is_empty() {
            assert_eq!(
                client_headers(h),
                [("x-client-verify".to_owned(), "NONE".to_owned())]
            );
        } else {
            let got = client_headers(h);
            assert_eq!(got[0], ("x-client-verify".into(), "SUCCESS".into()));
            assert_eq!(
                got[1],
                (
                    "x-client-dn".into(),
                    "CN=good client,O=Example\\, Inc.,C=DE".into()
                )
            );
            let escaped = &got[2].1;
            assert!(
                escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
                "{escaped}"
            );
            let base64_line = pem.lines().nth(1).expect("a base64 line");
            let unescaped = escaped
                .replace("%0A", "\n")
                .replace("%20", " ")
                .replace("%2B", "+")
                .replace("%2F", "/")
                .replace("%3D", "=");
            assert!(unescaped.contains(base64_line), "{escaped}");
        }
    }

    // openssl s_client: the CertificateRequest names the client CA, and a client with a
    // certificate completes the handshake.
    for (who, port) in [("nginx", pair.nginx_port), ("hsmgate", pair.hsmgate_port)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "api.example.test", "-CAfile"])
            .arg(&corpus.ca_pem)
            .args(["-verify_return_error", "-cert"])
            .arg(&good.cert)
            .arg("-key")
            .arg(&good.key)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{who}: {text}");
        assert!(
            text.contains("Acceptable client certificate CA names\nCN = good client CA"),
            "{who}: {text}"
        );
    }
}

#[test]
fn ssl_verify_depth_bounds_the_intermediates_as_in_nginx() {
    let corpus = Corpus::new();
    let (ca, client) = chained_client(corpus.dir.path());
    let rules = |depth: u32| {
        format!(
            "ssl_client_certificate {};\n    ssl_verify_client on;\n    ssl_verify_depth {depth};\n    \
             proxy_set_header X-Client-Verify $ssl_client_verify;\n    \
             add_header X-Verify $ssl_client_verify always;",
            ca.display()
        )
    };
    for depth in [0, 1] {
        let pair = Pair::start(&corpus, &format!("depth{depth}"), &rules(depth), "");
        let mut seen = Vec::new();
        for port in [pair.nginx_port, pair.hsmgate_port] {
            let url = format!("https://www.example.test:{port}/");
            let extra = ["--cert", s(&client.cert), "--key", s(&client.key)];
            let got = fetch(&corpus.ca_pem, "www.example.test", port, &url, &extra);
            let verify = got.header("x-verify").map(str::to_owned);
            seen.push((got.status, client_headers(&got), verify));
        }
        assert_eq!(seen[0], seen[1], "ssl_verify_depth {depth}: nginx, hsmgate");
    }
}

#[test]
fn bad_client_certificate_and_stapling_input_fails_t_as_in_nginx() {
    let corpus = Corpus::new();
    let ca = corpus.ca_pem.display().to_string();
    // (www server lines, nginx -t passes, what hsmgate's error names)
    let cases = [
        (
            "ssl_verify_client on;".to_owned(),
            false,
            "no ssl_client_certificate",
        ),
        (
            format!("ssl_client_certificate {ca};\n    ssl_verify_client maybe;"),
            false,
            "maybe",
        ),
        ("ssl_verify_depth x;".to_owned(), false, "invalid number"),
        (
            "ssl_client_certificate /nonexistent/ca.pem;\n    ssl_verify_client on;".to_owned(),
            false,
            "/nonexistent/ca.pem",
        ),
        (
            "ssl_stapling yes;".to_owned(),
            false,
            "must be \"on\" or \"off\"",
        ),
        (
            "ssl_stapling on;\n    ssl_stapling_file /nonexistent/ocsp.der;".to_owned(),
            false,
            "/nonexistent/ocsp.der",
        ),
        // Accepted by nginx, refused by hsmgate (documented).
        (
            format!("ssl_client_certificate {ca};\n    ssl_verify_client optional_no_ca;"),
            true,
            "optional_no_ca",
        ),
    ];
    for (i, (lines, nginx_ok, needle)) in cases.iter().enumerate() {
        let layout = layout();
        let np = corpus.prefix(&format!("bad{i}-nginx"));
        let nconf = corpus.write(&np, Keys::File, &layout, lines);
        let (ok, err) = nginx_t(&np, &nconf);
        assert_eq!(ok, *nginx_ok, "nginx -t {lines}: {err}");
        let hp = corpus.prefix(&format!("bad{i}-hsmgate"));
        let hconf = corpus.write(&hp, Keys::Token, &layout, lines);
        let out = hsmgate(&["-t", "-c", s(&hconf), "-p", s(&hp)]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "hsmgate -t {lines}: {text}");
        assert!(text.contains(needle), "hsmgate -t {lines}: {text}");
        assert!(text.contains("10-www.conf:"), "hsmgate -t {lines}: {text}");
    }
}

/// The TOML format's `[tls] client_certificate` (and the sidecar's `HSMGATE_CLIENT_CA`):
/// with CAs and no `verify_client`, certificates are required (nginx's 400s for a missing
/// or foreign one); `optional` lets a request without one through.
#[test]
fn toml_client_certificates_are_required_or_optional() {
    use crate::support::{KeyType, ProxyProcess, TestToken, config_for, curl, start_upstream};
    let token = TestToken::new(KeyType::EcP256);
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, good) = client_ca(dir.path(), "good");
    let (_, rogue) = client_ca(dir.path(), "rogue");
    let upstream = start_upstream("echo");
    let base = config_for(&token, upstream, "");
    let server_ca = token.chain_pem.display().to_string();
    let status = |proxy: &ProxyProcess, cert: Option<&Client>| -> (u16, String) {
        let url = proxy.url("/");
        let mut args = vec!["--cacert", &server_ca, "-w", "\n%{http_code}"];
        if let Some(c) = cert {
            args.extend(["--cert", s(&c.cert), "--key", s(&c.key)]);
        }
        args.push(&url);
        let out = curl(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    };
    for (mode, want_none) in [("", 400), ("verify_client = \"optional\"\n", 200)] {
        let config = base.replacen(
            "[tls]\n",
            &format!("[tls]\nclient_certificate = \"{}\"\n{mode}", ca.display()),
            1,
        );
        let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
        let (code, body) = status(&proxy, None);
        assert_eq!(code, want_none, "{mode:?} without a certificate: {body}");
        if code == 400 {
            assert!(
                body.contains("No required SSL certificate was sent"),
                "{body}"
            );
        }
        let (code, body) = status(&proxy, Some(&good));
        assert_eq!(code, 200, "{mode:?} with the CA's certificate: {body}");
        let (code, body) = status(&proxy, Some(&rogue));
        assert_eq!(code, 400, "{mode:?} with another CA's certificate: {body}");
        assert!(body.contains("The SSL certificate error"), "{body}");
    }
    // The sidecar's variable sets the CAs over a file without them.
    let proxy = ProxyProcess::start_with_env(
        token.path(),
        &base,
        &[("HSMGATE_CLIENT_CA", &ca.display().to_string())],
    )
    .expect("hsmgate starts");
    assert_eq!(status(&proxy, None).0, 400, "HSMGATE_CLIENT_CA: required");
    assert_eq!(status(&proxy, Some(&good)).0, 200, "HSMGATE_CLIENT_CA");
    drop(proxy);
    // Verification without CAs is refused at load, with where.
    let config = base.replacen("[tls]\n", "[tls]\nverify_client = \"on\"\n", 1);
    let Err(err) = ProxyProcess::start(token.path(), &config) else {
        panic!("verify_client without CAs was accepted");
    };
    assert!(
        err.contains("tls.verify_client") && err.contains("needs tls.client_certificate"),
        "{err}"
    );
}

/// A CA with two client certificates and a CRL (`dir/crl.pem`) that revokes the second.
fn ca_with_crl(dir: &Path) -> (PathBuf, PathBuf, Client, Client) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "crl client CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let client = |cn: &str, serial: u64| {
        let key = rcgen::KeyPair::generate().expect("client key");
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
        leaf.serial_number = Some(rcgen::SerialNumber::from(serial));
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("client cert");
        let c = Client {
            cert: dir.join(format!("{cn}.crt")),
            key: dir.join(format!("{cn}.key")),
        };
        std::fs::write(&c.cert, cert.pem()).expect("cert");
        std::fs::write(&c.key, key.serialize_pem()).expect("key");
        c
    };
    let (good, revoked) = (client("kept", 41), client("revoked", 42));
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(42u64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("CRL");
    let (ca_pem, crl_pem) = (dir.join("crl-ca.pem"), dir.join("crl.pem"));
    std::fs::write(&ca_pem, ca_cert.pem()).expect("ca");
    std::fs::write(&crl_pem, crl.pem().expect("CRL PEM")).expect("crl");
    (ca_pem, crl_pem, good, revoked)
}

/// `ssl_crl`: a revoked client certificate fails verification (a 400 with `ssl_verify_client
/// on|optional`, `$ssl_client_verify` `FAILED:certificate revoked`) and another of the
/// same CA passes, as nginx answers on the same configuration side by side.
#[test]
fn ssl_crl_refuses_revoked_client_certificates_as_nginx() {
    let corpus = Corpus::new();
    let (ca, crl, good, revoked) = ca_with_crl(corpus.dir.path());
    let rules = format!(
        "ssl_client_certificate {};\n    ssl_verify_client optional;\n    ssl_crl {};\n    \
         proxy_set_header X-Client-Verify $ssl_client_verify;\n    \
         add_header X-Verify $ssl_client_verify always;",
        ca.display(),
        crl.display()
    );
    let pair = Pair::start(&corpus, "crl", &rules, "");
    for (client, status, verify) in [
        (Some(&good), 200, "SUCCESS"),
        (Some(&revoked), 400, "FAILED:certificate revoked"),
        (None, 200, "NONE"),
    ] {
        for (who, port, server) in [
            ("nginx", pair.nginx_port, &pair.nginx),
            ("hsmgate", pair.hsmgate_port, &pair.hsmgate),
        ] {
            let url = format!("https://www.example.test:{port}/");
            let extra = match client {
                Some(c) => vec!["--cert", s(&c.cert), "--key", s(&c.key)],
                None => vec![],
            };
            let got = fetch(&corpus.ca_pem, "www.example.test", port, &url, &extra);
            assert_eq!(
                (got.status, got.header("x-verify")),
                (status, Some(verify)),
                "{who} {extra:?}: {got:?}\n{}",
                server.log_text()
            );
        }
    }
}
