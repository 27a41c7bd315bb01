//! hsmgate as a drop-in for nginx: the corpus passes `nginx -t` (file keys) and
//! `hsmgate -t` (token keys); Debian's nginx and hsmgate answer the same requests the
//! same way (status, upstream, path, forwarded headers, redirects, certificate type);
//! bad input is an error naming file:line. Lifecycle (reload, stop) is in `lifecycle.rs`.

use std::path::Path;

use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::nginx::{Server, fetch, fetch_at, hsmgate, nginx_t};

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn corpus_passes_nginx_t_and_hsmgate_t() {
    let corpus = Corpus::new();
    let l = layout();
    let nginx_prefix = corpus.prefix("nginx");
    let conf = corpus.write(&nginx_prefix, Keys::File, &l, "");
    let (ok, stderr) = nginx_t(&nginx_prefix, &conf);
    assert!(ok, "nginx -t: {stderr}");

    // hsmgate -t on the file-key twin and on the token-key original.
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&nginx_prefix)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let prefix = corpus.prefix("hsmgate");
    let conf = corpus.write(&prefix, Keys::Token, &l, "");
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&prefix)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "hsmgate: the configuration file {} syntax is ok",
            conf.display()
        )) && err.contains(&format!(
            "hsmgate: configuration file {} test is successful",
            conf.display()
        )),
        "{err}"
    );
    assert!(!err.contains(crate::support::hsm::PIN), "{err}");
    // -T: the files as read; -q: nothing but errors.
    let out = hsmgate(&["-T", "-q", "-c", s(&conf), "-p", s(&prefix)]);
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        dump.contains(&format!(
            "# configuration file {}:",
            prefix.join("conf.d/20-api.conf").display()
        )),
        "{dump}"
    );
    let quiet = String::from_utf8_lossy(&out.stderr);
    assert!(quiet.is_empty(), "{quiet}");

    // -t opens the keys: a certificate for another key fails, naming file:line.
    let www = prefix.join("conf.d/10-www.conf");
    let text = std::fs::read_to_string(&www).expect("www");
    std::fs::write(
        &www,
        text.replacen(
            &corpus.certs[0].display().to_string(),
            &corpus.certs[2].display().to_string(),
            1,
        ),
    )
    .expect("write");
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(&prefix)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not match"), "{err}");
    // The pair is reported at its ssl_certificate_key line.
    assert!(err.contains(&format!("{}:7", www.display())), "{err}");
    assert!(err.contains("test failed"), "{err}");
}

#[test]
fn differential_nginx_and_hsmgate_answer_alike() {
    let corpus = Corpus::new();
    let (nl, mut hl) = (layout(), layout());
    // Same upstreams for both, so the upstream names compare.
    hl.app_a = nl.app_a;
    hl.app_b = nl.app_b;
    hl.statics = nl.statics;
    hl.api = nl.api;
    let np = corpus.prefix("nginx");
    let nconf = corpus.write(&np, Keys::File, &nl, "");
    let hp = corpus.prefix("hsmgate");
    let hconf = corpus.write(&hp, Keys::Token, &hl, "");
    let nginx = Server::nginx(&np, &nconf, &[nl.https, nl.http]);
    let hsm = Server::hsmgate(&hp, &hconf, &[hl.https, hl.http]);

    let ca = &corpus.ca_pem;
    type Req<'a> = (&'a str, &'a str, Vec<&'a str>);
    let requests: Vec<Req> = vec![
        ("www.example.test", "/", vec![]),
        ("www.example.test", "/a/b?x=1", vec![]),
        ("www.example.test", "/", vec![]),
        ("www.example.test", "/healthz", vec![]),
        ("www.example.test", "/h2/x?y=1", vec!["--http2"]),
        ("www.example.test", "/static/app.css", vec![]),
        ("www.example.test", "/img/logo.PNG", vec![]),
        ("www.example.test", "/static/logo.png", vec![]),
        ("www.example.test", "/api/users?id=7", vec![]),
        // `proxy_pass http://app/v2/` rewrites the normalised `$uri`, escaped again.
        ("www.example.test", "//api/a", vec!["--path-as-is"]),
        ("www.example.test", "/api//a", vec!["--path-as-is"]),
        ("www.example.test", "/api/a%2Fb", vec![]),
        ("www.example.test", "/api/%7e%41%20?q=%20", vec![]),
        ("www.example.test", "/api/./x/../c", vec!["--path-as-is"]),
        ("www.example.test", "/old/page?q=2", vec![]),
        ("www.example.test", "/rel", vec![]),
        ("www.example.test", "/api", vec![]),
        ("www.example.test", "/api?x=1", vec![]),
        (
            "example.test",
            "/x",
            vec!["-H", "X-Forwarded-For: 203.0.113.9"],
        ),
        (
            "api.example.test",
            "/v1/items",
            vec!["-H", "X-Request-Id: r-42"],
        ),
        ("api.example.test", "/v1/status", vec![]),
        ("api.example.test", "/other", vec![]),
        ("foo.example.test", "/w", vec![]),
        ("abc.regex.test", "/r", vec!["-k"]),
        ("unknown.test", "/u", vec!["-k"]),
        (
            "www.example.test",
            "/upload/big",
            vec!["--data-binary", "@BODY"],
        ),
        (
            "www.example.test",
            "/upload/small",
            vec!["--data-binary", "small"],
        ),
        // Last: nginx reads the whole body before it picks an upstream, hsmgate streams
        // it and notices the excess after picking one (the round-robin moves on).
        (
            "www.example.test",
            "/upload/chunked",
            vec!["--data-binary", "@BODY", "-H", "Transfer-Encoding: chunked"],
        ),
    ];
    let compared = [
        "host",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-request-id",
        "connection",
    ];
    for (host, path, extra) in &requests {
        // A 2 KiB body where the location allows 1 KiB.
        let body = format!("@{}", write_body(corpus.dir.path(), 2048).display());
        let extra: Vec<&str> = extra
            .iter()
            .map(|e| if *e == "@BODY" { body.as_str() } else { e })
            .collect();
        let n = fetch(
            ca,
            host,
            nl.https,
            &format!("https://{host}:{}{path}", nl.https),
            &extra,
        );
        let h = fetch(
            ca,
            host,
            hl.https,
            &format!("https://{host}:{}{path}", hl.https),
            &extra,
        );
        let what = format!("{host}{path}\nnginx: {n:?}\nhsmgate: {h:?}");
        assert_eq!(n.status, h.status, "status of {what}");
        for header in ["x-frame-options", "x-vhost"] {
            assert_eq!(n.header(header), h.header(header), "{header} of {what}");
        }
        // Each names itself (the corpus has `server_tokens off`), whoever answered.
        assert_eq!(n.header("server"), Some("nginx"), "{what}");
        assert_eq!(h.header("server"), Some("hsmgate"), "{what}");
        let loc = |s: &crate::support::nginx::Seen, port: u16| {
            s.header("location")
                .map(|l| l.replace(&format!(":{port}"), ":PORT"))
        };
        assert_eq!(loc(&n, nl.https), loc(&h, hl.https), "Location of {what}");
        let expected = match *path {
            "/api?x=1" => Some("https://www.example.test:PORT/api/?x=1"),
            "/rel" => Some("https://www.example.test:PORT/elsewhere?from=rel"),
            _ => None,
        };
        if let Some(e) = expected {
            assert_eq!(loc(&h, hl.https).as_deref(), Some(e), "{what}");
        }
        match (n.upstream(), h.upstream()) {
            (Some((nn, np, nh)), Some((hn, hp, hh))) => {
                assert_eq!(nn, hn, "upstream of {what}");
                assert_eq!(np, hp, "upstream path of {what}");
                for c in compared {
                    let get = |hs: &Vec<(String, String)>| {
                        hs.iter().find(|(n, _)| n == c).map(|(_, v)| v.clone())
                    };
                    assert_eq!(get(&nh), get(&hh), "forwarded {c} of {what}");
                }
            }
            (None, None) if n.status == 200 => assert_eq!(n.body, h.body, "body of {what}"),
            (None, None) => {}
            _ => panic!("one answered from an upstream, the other not: {what}"),
        }
    }
    // Host headers nginx refuses (an unclosed "[" it accepts: it must not upset routing).
    for (bad, want) in [("a..b", 400), ("a/b", 400), ("[::1", 200)] {
        let header = format!("Host: {bad}");
        for port in [nl.https, hl.https] {
            // (/static/: one server, so the round-robin of `app` is not involved.)
            let url = format!("https://www.example.test:{port}/static/h");
            let r = fetch(ca, "www.example.test", port, &url, &["-H", &header]);
            assert_eq!(r.status, want, "Host {bad} on {port}: {r:?}");
        }
    }
    // IPv6: the same vhost on [::1].
    let v6: Vec<_> = [nl.https6, hl.https6]
        .iter()
        .map(|&port| {
            let url = format!("https://www.example.test:{port}/static/v6");
            let r = fetch_at(ca, "www.example.test", port, "[::1]", &url, &[]);
            let (name, path, headers) = r.upstream().expect("upstream answer");
            let real_ip = headers.iter().find(|(n, _)| n == "x-real-ip").cloned();
            (r.status, name, path, real_ip)
        })
        .collect();
    assert_eq!(v6[0], v6[1]);
    assert_eq!(v6[0].3.as_ref().map(|(_, v)| v.as_str()), Some("::1"));
    // The redirect server on plain HTTP.
    for (port, https) in [(nl.http, nl.https), (hl.http, hl.https)] {
        let r = fetch(
            ca,
            "www.example.test",
            port,
            &format!("http://www.example.test:{port}/p/q?y=1"),
            &[],
        );
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(
            r.header("location"),
            Some("https://www.example.test/p/q?y=1"),
            "{r:?} ({https})"
        );
    }
    // The certificate by the client's signature algorithms: ECDSA when offered.
    for port in [nl.https, hl.https] {
        assert_eq!(peer_key(port, "ECDSA+SHA256:RSA-PSS+SHA256"), "ECDSA");
        assert_eq!(peer_key(port, "RSA-PSS+SHA256:RSA+SHA256"), "RSA");
    }
    // ECDSA offered only with SHA-384 (the ECDSA key is P-256): nginx signs with the
    // P-256 key and SHA-384 (TLS 1.2 allows it), hsmgate serves the RSA certificate; the
    // handshake completes on both (hsmgate's failed before, choosing the ECDSA pair).
    assert_eq!(peer_key(nl.https, "ECDSA+SHA384:RSA-PSS+SHA256"), "ECDSA");
    assert_eq!(peer_key(hl.https, "ECDSA+SHA384:RSA-PSS+SHA256"), "RSA");
    // Access logs: the same lines as nginx's (but for the time), in the configured
    // format and in nginx's default `combined`; `access_log off` honoured.
    for file in ["logs/access.log", "logs/api.log"] {
        let lines = |prefix: &Path| {
            let text = std::fs::read_to_string(prefix.join(file)).expect("access log");
            // Known differences: the time; the size of pages hsmgate makes itself
            // ("hsmgate" is two bytes longer than "nginx"); a Host nginx refuses
            // (nginx stops reading headers there: no User-Agent); a streamed body
            // over the limit (hsmgate had picked an upstream already).
            text.lines()
                .filter(|l| !l.contains("\" 400 ") && !l.contains("/upload/chunked"))
                .map(|l| {
                    let mut l = match (l.find('['), l.find(']')) {
                        (Some(a), Some(b)) if a < b => format!("{}[TIME]{}", &l[..a], &l[b + 1..]),
                        _ => l.to_owned(),
                    };
                    if l.ends_with("up=-") {
                        let fields: Vec<&str> = l.split(' ').collect();
                        if let Some(i) = fields.iter().position(|f| f.ends_with('"')) {
                            let mut f = fields.clone();
                            if let Some(size) = f.get_mut(i + 2) {
                                *size = "SIZE";
                            }
                            l = f.join(" ");
                        }
                    }
                    l
                })
                .collect::<Vec<_>>()
        };
        let (n, h) = (lines(&np), lines(&hp));
        assert!(!h.is_empty(), "{file} is empty");
        assert_eq!(n, h, "{file}");
    }
    let log = std::fs::read_to_string(hp.join("logs/access.log")).expect("access log");
    assert!(!log.contains("/healthz"), "{log}");
    assert!(log.contains("\"GET /h2/x?y=1 HTTP/2.0\" 200 "), "{log}");
    drop(nginx);
    drop(hsm);
}

fn write_body(dir: &Path, n: usize) -> std::path::PathBuf {
    let p = dir.join(format!("body-{n}"));
    std::fs::write(&p, vec![b'x'; n]).expect("body");
    p
}

/// The peer key type `openssl s_client` reports with these `-sigalgs`.
fn peer_key(port: u16, sigalgs: &str) -> &'static str {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "www.example.test",
            "-tls1_2",
            "-sigalgs",
            sigalgs,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Peer signature type: ECDSA") {
        "ECDSA"
    } else if text.contains("Peer signature type: RSA") {
        "RSA"
    } else {
        panic!(
            "no peer signature type: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// A minimal configuration around `body` (inside `http {}`), in `dir`.
fn small(dir: &Path, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, format!("events {{}}\nhttp {{\n{body}\n}}\n")).expect("conf");
    conf
}

/// `-t` opens the pid file's place and the error log a configuration (or `-e`) names,
/// as nginx's does: a path the start could not open is warned (nginx fails the test);
/// a relative `-e` is under the prefix; a bad option exits 1, as nginx's.
#[test]
fn t_checks_the_pid_and_error_log_paths_and_e_is_under_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = s(dir.path());
    for (main, what) in [
        ("pid /nonexistent/dir/x.pid;", "/nonexistent/dir/x.pid"),
        (
            "error_log /nonexistent/dir/e.log;",
            "/nonexistent/dir/e.log",
        ),
    ] {
        let conf = dir.path().join("bad.conf");
        std::fs::write(
            &conf,
            format!(
                "{main}\nevents {{}}\nhttp {{ server {{ listen 127.0.0.1:1; return 204; }} }}\n"
            ),
        )
        .expect("conf");
        let out = hsmgate(&["-t", "-c", s(&conf), "-p", p]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{main}: {err}");
        assert!(
            err.contains("[warn]") && err.contains(what) && err.contains("will not start"),
            "{main}: {err}"
        );
    }
    // A pid file that exists is opened, not changed; a missing one is not left behind.
    let conf = dir.path().join("good.conf");
    std::fs::write(
        &conf,
        "pid logs/t.pid;\nevents {}\nhttp { server { listen 127.0.0.1:1; return 204; } }\n",
    )
    .expect("conf");
    std::fs::create_dir_all(dir.path().join("logs")).expect("logs");
    let ok = hsmgate(&["-t", "-c", s(&conf), "-p", p, "-e", "logs/e.log"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !dir.path().join("logs/t.pid").exists(),
        "-t leaves no pid file"
    );
    assert!(
        dir.path().join("logs/e.log").exists(),
        "-e logs/e.log is under the prefix"
    );
    std::fs::write(dir.path().join("logs/t.pid"), "4242\n").expect("pid");
    assert!(hsmgate(&["-t", "-c", s(&conf), "-p", p]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("logs/t.pid")).expect("pid"),
        "4242\n"
    );
    // A bad command line: exit 1, the option named.
    let bad = hsmgate(&["-x"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("-x"), "{err}");
}

#[test]
fn g_adds_main_directives_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = small(dir.path(), "server { listen 127.0.0.1:1; return 204; }");
    let p = s(dir.path());
    let ok = hsmgate(&["-t", "-g", "worker_processes 3;", "-c", s(&conf), "-p", p]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = hsmgate(&["-t", "-g", "frobnicate on;", "-c", s(&conf), "-p", p]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("command line") && err.contains("frobnicate"),
        "{err}"
    );
}

#[test]
fn bad_input_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("sub")).expect("dir");
    std::fs::write(d.join("a.conf"), "include b.conf;\n").expect("a");
    std::fs::write(d.join("b.conf"), "\ninclude a.conf;\n").expect("b");
    let server = "server { listen 127.0.0.1:1; location / { return 200; } }";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("missing ;", format!("{server}\nkeepalive_timeout 5\n"), "nginx.conf:", "unexpected"),
        ("unbalanced braces", format!("{server}\nserver {{\n"), "nginx.conf:", "unexpected end of file"),
        ("unknown directive", format!("{server}\nfrobnicate on;"), "nginx.conf:4", "frobnicate"),
        ("unreadable include", format!("{server}\ninclude sub;"), "nginx.conf:4", "sub"),
        ("include loop", format!("{server}\ninclude a.conf;"), "b.conf:2", "include loop"),
        (
            "bad engine URI",
            "server { listen 127.0.0.1:1 ssl; ssl_certificate c.pem;\nssl_certificate_key \"engine:pkcs11:pkcs11:token=x;object=%zz\"; }".into(),
            "nginx.conf:4",
            "invalid pkcs#11 uri",
        ),
    ];
    for (name, body, at, what) in cases {
        let conf = small(d, &body);
        let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(d)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("hsmgate: [emerg] "), "{name}: {err}");
        assert!(err.contains(at), "{name}: expected {at} in {err}");
        assert!(
            err.to_lowercase().contains(what),
            "{name}: expected {what} in {err}"
        );
        assert!(err.contains("test failed"), "{name}: {err}");
        // nginx agrees that it is broken (except the engine key, which it would
        // only reject when loading the engine).
        if name != "bad engine URI" {
            let (ok, nginx_err) = nginx_t(d, &conf);
            assert!(!ok, "{name}: nginx accepted it");
            eprintln!(
                "{name}:\n  hsmgate: {}\n  nginx:   {}",
                err.lines().next().unwrap_or(""),
                nginx_err.trim()
            );
        }
    }
}

/// What libp11-era configurations write and Debian's nginx accepts: `pin-value` in the
/// URI's path (with the query form's warning, never the PIN), the `*_temp_path`
/// directives (ignored with a warning), and no `access_log` at all (the replaced nginx's
/// compiled-in path; an unopenable one names the `http` block).
#[test]
fn configurations_written_for_libp11_pass_t() {
    use crate::support::hsm::{KeyType, PIN, TestToken};
    let token = TestToken::new(KeyType::Rsa2048);
    let d = token.path();
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {}/tmp/{t};\n", d.display()))
        .collect();
    let conf = d.join("nginx.conf");
    let write = |access_log: &str| {
        std::fs::write(
            &conf,
            format!(
                "env SOFTHSM2_CONF={softhsm};\nevents {{}}\nhttp {{\n{temp_paths}{access_log}\
                 \n    server {{\n        listen 127.0.0.1:1 ssl;\n        ssl_certificate {chain};\n        \
                 ssl_certificate_key \"engine:pkcs11:pkcs11:token={label};object=tls;type=private;pin-value={PIN}\";\n        \
                 location / {{ return 200; }}\n    }}\n}}\n",
                softhsm = token.conf.display(),
                chain = token.chain_pem.display(),
                label = token.label,
            ),
        )
        .expect("conf");
    };
    let module = token.module.display().to_string();
    let t = |path_env: Option<&std::ffi::OsStr>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hsmgate"));
        cmd.args(["-t", "--pkcs11-module", &module, "-c", s(&conf), "-p", s(d)]);
        if let Some(p) = path_env {
            cmd.env("PATH", p);
        }
        let out = cmd.output().expect("hsmgate -t");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(PIN), "the PIN was printed: {text}");
        (out.status.code(), text)
    };

    // An explicit access_log: passes, with the warnings.
    write(&format!("    access_log {}/access.log;", d.display()));
    let (code, text) = t(None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("pin-value"), "no pin-value warning: {text}");
    for dir in ["client_body_temp_path", "scgi_temp_path"] {
        assert!(
            text.contains(dir) && text.contains("temporary files"),
            "no warning for {dir}: {text}"
        );
    }

    // No access_log: the nginx on PATH says where its default goes (`nginx -V`). A fake
    // one names a directory that does not exist: the error names the file and the http
    // block that leads to it.
    write("");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let missing = d.join("missing/access.log");
    let fake = bin.join("nginx");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho 'nginx version: nginx/1.99.0' >&2\n\
             echo 'configure arguments: --prefix=/opt/nginx --http-log-path={}' >&2\n",
            missing.display()
        ),
    )
    .expect("fake nginx");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let (code, text) = t(Some(&path));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&missing.display().to_string())
            && text.contains(&format!("http block at {}:", conf.display())),
        "{text}"
    );
    // An access_log in a missing directory names its own line.
    write(&format!("    access_log {};", missing.display()));
    let (code, text) = t(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("access_log at {}:", conf.display())),
        "{text}"
    );
}

/// The admin listener from an nginx configuration: `env HSMGATE_ADMIN=ADDR;` (a line
/// Debian's `nginx -t` accepts as well), serving /readyz and /metrics for the token key;
/// a bad address is an error at its file:line.
#[test]
fn nginx_configurations_get_the_admin_listener_from_an_env_line() {
    use crate::support::hsm::{KeyType, TestToken};
    use crate::support::net::free_port;
    let token = TestToken::new(KeyType::EcP256);
    let d = token.path();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let (https, admin) = (free_port(), free_port());
    let conf = d.join("nginx.conf");
    let write = |admin_line: &str, chain: &Path, key: &str| {
        std::fs::write(
            &conf,
            format!(
                "{admin_line}\nenv SOFTHSM2_CONF={softhsm};\npid {dir}/logs/nginx.pid;\nevents {{}}\n\
                 http {{\n    access_log off;\n    server {{\n        listen 127.0.0.1:{https} ssl;\n        \
                 ssl_certificate {chain};\n        ssl_certificate_key {key};\n        \
                 location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n",
                softhsm = token.conf.display(),
                dir = d.display(),
                chain = chain.display(),
            ),
        )
        .expect("conf");
    };
    let token_key = format!(
        "\"pkcs11:token={};object=tls;type=private?pin-source=file:{}\"",
        token.label,
        token.pin_file.display()
    );
    // nginx itself accepts the line (with a file key: nginx cannot read the token one).
    let file_key = d.join("file-key.pem");
    let file_cert = d.join("file-cert.pem");
    let k = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&k)
        .expect("cert");
    std::fs::write(&file_key, k.serialize_pem()).expect("key file");
    std::fs::write(&file_cert, cert.pem()).expect("cert file");
    let admin_line = format!("env HSMGATE_ADMIN=127.0.0.1:{admin};");
    write(&admin_line, &file_cert, &file_key.display().to_string());
    let (ok, err) = nginx_t(d, &conf);
    assert!(ok, "nginx -t refused the env line: {err}");

    write(&admin_line, &token.chain_pem, &token_key);
    let server = Server::hsmgate_with_env(
        d,
        &conf,
        &[https, admin],
        &[("HSMGATE_PKCS11_MODULE", &token.module)],
    );
    let get = |path: &str| {
        let out = crate::support::net::curl(&[
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{admin}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ready = get("/readyz");
    assert!(ready.ends_with("200"), "{ready}\n{}", server.log_text());
    let metrics = get("/metrics");
    assert!(
        metrics.contains("hsmgate_signer_capacity_ops_per_second"),
        "{metrics}"
    );
    drop(server);

    // A bad address: hsmgate -t names the line.
    write("env HSMGATE_ADMIN=localhost;", &token.chain_pem, &token_key);
    let out = hsmgate(&["-t", "-c", s(&conf), "-p", s(d)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:1", conf.display())) && err.contains("HSMGATE_ADMIN"),
        "{err}"
    );
}

/// Plain HTTP on a TLS address, as Debian's nginx 1.22 answered it (2026-12-02): 400
/// "The plain HTTP request was sent to HTTPS port" and a close; with the server's
/// `error_page 497 https://…` (the common http-to-https idiom on one port) a 302 there;
/// TLS on the same port is unaffected.
#[test]
fn plain_http_on_a_tls_port_is_nginx_497() {
    use crate::support::hsm::{KeyType, TestToken};
    use crate::support::net::free_port;
    let token = TestToken::new(KeyType::EcP256);
    let d = token.path();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let (plain, redirect) = (free_port(), free_port());
    let conf = d.join("nginx.conf");
    let tls = format!(
        "ssl_certificate {chain};\n        ssl_certificate_key \"pkcs11:token={label};object=tls;type=private?pin-source=file:{pin}\";",
        chain = token.chain_pem.display(),
        label = token.label,
        pin = token.pin_file.display(),
    );
    std::fs::write(
        &conf,
        format!(
            "env SOFTHSM2_CONF={softhsm};\npid {dir}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n    \
             server {{\n        listen 127.0.0.1:{plain} ssl;\n        {tls}\n        location / {{ return 200 \"tls\\n\"; }}\n    }}\n    \
             server {{\n        listen 127.0.0.1:{redirect} ssl;\n        {tls}\n        \
             error_page 497 https://$host:{redirect}$request_uri;\n        location / {{ return 200 \"tls\\n\"; }}\n    }}\n}}\n",
            softhsm = token.conf.display(),
            dir = d.display(),
        ),
    )
    .expect("conf");
    let server = Server::hsmgate_with_env(
        d,
        &conf,
        &[plain, redirect],
        &[("HSMGATE_PKCS11_MODULE", &token.module)],
    );
    let curl = |url: String| {
        let out = crate::support::net::curl(&[
            "-s",
            "-i",
            "--cacert",
            token.ca_pem.to_str().expect("utf-8"),
            &url,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r = curl(format!("http://127.0.0.1:{plain}/x?y=1"));
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}\n{}", server.log_text());
    assert!(
        r.contains("The plain HTTP request was sent to HTTPS port"),
        "{r}"
    );
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    let r = curl(format!("http://localhost:{redirect}/x?y=1"));
    assert!(r.starts_with("HTTP/1.1 302 "), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains(&format!("location: https://localhost:{redirect}/x?y=1")),
        "{r}"
    );
    assert!(curl(format!("https://localhost:{plain}/")).ends_with("tls\n"));
    assert!(
        server
            .log_text()
            .contains("client sent plain HTTP request to HTTPS port")
    );
}

/// libp11's older key identifiers, which its engine still reads and older nginx guides
/// write (`engine:pkcs11:label_tls`, `engine:pkcs11:id_…`): the key is found on the
/// module's token as libp11 finds it (before 2026-12-04 `-t` refused them with "expected
/// a pkcs11: URI"); the PIN from an `env HSMGATE_PIN=…;` line, as libp11's comes from its
/// engine's configuration.
#[test]
fn libp11_legacy_key_identifiers_are_read() {
    use crate::support::hsm::{KeyType, PIN, TestToken};
    use crate::support::net::free_port;
    let token = TestToken::new(KeyType::EcP256);
    let d = token.path();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    for key in [
        "engine:pkcs11:label_tls",
        "engine:pkcs11:slot_999999-label_tls",
    ] {
        let https = free_port();
        let conf = d.join("legacy.conf");
        std::fs::write(
            &conf,
            format!(
                "env SOFTHSM2_CONF={softhsm};\nenv HSMGATE_PIN={PIN};\npid {dir}/logs/legacy.pid;\n\
                 events {{}}\nhttp {{\n    access_log off;\n    server {{\n        \
                 listen 127.0.0.1:{https} ssl;\n        ssl_certificate {chain};\n        \
                 ssl_certificate_key \"{key}\";\n        location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n",
                softhsm = token.conf.display(),
                dir = d.display(),
                chain = token.chain_pem.display(),
            ),
        )
        .expect("conf");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .args(["-t", "-c"])
            .arg(&conf)
            .env("HSMGATE_PKCS11_MODULE", &token.module)
            .output()
            .expect("hsmgate -t");
        let err = String::from_utf8_lossy(&out.stderr);
        if key.contains("slot_999999") {
            // No slot of that id: the token is not found, and the error says so.
            assert!(!out.status.success(), "{key}: {err}");
            assert!(
                err.contains("slot") || err.contains("token"),
                "{key}: {err}"
            );
            continue;
        }
        assert!(out.status.success(), "{key}: {err}");
        let server = Server::hsmgate_with_env(
            d,
            &conf,
            &[https],
            &[("HSMGATE_PKCS11_MODULE", &token.module)],
        );
        let out = crate::support::net::curl(&[
            "-s",
            "--cacert",
            &token.ca_pem.display().to_string(),
            "--resolve",
            &format!("localhost:{https}:127.0.0.1"),
            &format!("https://localhost:{https}/"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "{}",
            server.log_text()
        );
    }
}
