//! hsmgate as a drop-in for nginx: the corpus passes `nginx -t` (file keys) and
//! `hsmgate -t` (token keys); Debian's nginx and hsmgate answer the same requests the
//! same way (status, upstream, path, forwarded headers, redirects, certificate type);
//! reloads under load lose nothing and a broken reload keeps the old configuration;
//! SIGQUIT drains in-flight requests; bad input is an error naming file:line.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::support::client::{client_config, connect};
use crate::support::nginx::{Corpus, Keys, Layout, Server, fetch, hsmgate, nginx_t};
use crate::support::{free_port, start_upstream};

fn layout() -> Layout {
    Layout {
        https: free_port(),
        http: free_port(),
        app_a: start_upstream("app-a"),
        app_b: start_upstream("app-b"),
        statics: start_upstream("static"),
        api: start_upstream("api"),
    }
}

fn s(p: &Path) -> &str {
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
    assert!(err.contains(&format!("{}:6", www.display())), "{err}");
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
        ("www.example.test", "/static/app.css", vec![]),
        ("www.example.test", "/img/logo.PNG", vec![]),
        ("www.example.test", "/static/logo.png", vec![]),
        ("www.example.test", "/api/users?id=7", vec![]),
        ("www.example.test", "/old/page?q=2", vec![]),
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
            vec!["--data-binary", "@-", "-H", "Content-Length: 2048"],
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
        let mut extra = extra.clone();
        let body;
        if extra.contains(&"@-") {
            body = format!("@{}", write_body(corpus.dir.path(), 2048).display());
            for e in extra.iter_mut() {
                if *e == "@-" {
                    *e = &body;
                }
            }
            extra.retain(|e| !e.starts_with("Content-Length"));
            extra.retain(|e| *e != "-H");
        }
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
        let loc = |s: &crate::support::nginx::Seen, port: u16| {
            s.header("location")
                .map(|l| l.replace(&format!(":{port}"), ":PORT"))
        };
        assert_eq!(loc(&n, nl.https), loc(&h, hl.https), "Location of {what}");
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
            let url = format!("https://www.example.test:{port}/");
            let r = fetch(ca, "www.example.test", port, &url, &["-H", &header]);
            assert_eq!(r.status, want, "Host {bad} on {port}: {r:?}");
        }
    }
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
    // The access log in the configured format, healthz not logged.
    let log = std::fs::read_to_string(hp.join("logs/access.log")).expect("access log");
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /a/b?x=1 HTTP/1.1\" 200 ")
                && l.contains("host=www.example.test up=")),
        "{log}"
    );
    assert!(!log.contains("/healthz"), "{log}");
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

/// A GET through hsmgate on a new or kept connection, counting failures instead of
/// panicking.
async fn get(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String), String> {
    if sender.as_mut().is_none_or(|s| s.is_closed()) {
        let tls = connect(addr, Arc::clone(config))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http1: {e}"))?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut().expect("connected");
    s.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = http::Request::get(path)
        .header("host", "www.example.test")
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), s.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Load: `tasks` tasks, half on kept connections, half on a new connection each time.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, ca: &Path, tasks: usize, path: &'static str) -> Load {
        let config = client_config(ca, &[b"http/1.1"]);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..tasks)
            .map(|i| {
                let (config, stop, ok, failures) = (
                    Arc::clone(&config),
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failures),
                );
                tokio::spawn(async move {
                    let keep = i % 2 == 0;
                    let mut sender = None;
                    while !stop.load(Ordering::Relaxed) {
                        if !keep {
                            sender = None;
                        }
                        match get(&mut sender, addr, &config, path).await {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, body)) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("status {status}: {body}")),
                            Err(e) => failures.lock().expect("lock").push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn reload_location(n: usize) -> String {
    format!("    location = /reloaded-{n} {{\n        return 200 \"generation {n}\\n\";\n    }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_a_broken_reload_keeps_serving() {
    let corpus = Corpus::new();
    let l = layout();
    let prefix = corpus.prefix("hsmgate");
    let conf = corpus.write(&prefix, Keys::Token, &l, "");
    let server = Server::hsmgate(&prefix, &conf, &[l.https, l.http]);
    let addr: SocketAddr = ([127, 0, 0, 1], l.https).into();
    let ca = corpus.ca_pem.clone();
    let load = Load::start(addr, &ca, 6, "/a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let check = |path: String| {
        let ca = ca.clone();
        async move {
            let config = client_config(&ca, &[b"http/1.1"]);
            get(&mut None, addr, &config, &path).await.expect("request")
        }
    };
    let extra_port = free_port();
    for n in 1..=3 {
        let mut extra = reload_location(n);
        if n == 2 {
            // A new address: bound by the reload, closed by the next one.
            extra.push_str(&format!("    listen 127.0.0.1:{extra_port} ssl;\n"));
        }
        corpus.write(&prefix, Keys::Token, &l, &extra);
        if n == 3 {
            // Through the pid file, as `nginx -s reload`.
            let out = hsmgate(&["-s", "reload", "-c", s(&conf), "-p", s(&prefix)]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            server.signal("HUP");
        }
        server.wait_log("configuration reloaded", n, Duration::from_secs(20));
        let (status, body) = check(format!("/reloaded-{n}")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("generation {n}\n").as_str())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A broken configuration: the error names file:line, the old one keeps serving.
    let broken = format!("{}    bogus_directive on;\n", reload_location(4));
    corpus.write(&prefix, Keys::Token, &l, &broken);
    server.signal("HUP");
    let log = server.wait_log("reload failed", 1, Duration::from_secs(20));
    let www = prefix.join("conf.d/10-www.conf");
    assert!(
        log.contains(&format!("{}:", www.display())) && log.contains("bogus_directive"),
        "{log}"
    );
    assert_eq!(check("/reloaded-3".into()).await.0, 200);
    let (_, body) = check("/reloaded-4".into()).await;
    assert!(
        body.starts_with("hello from app-"),
        "served by location /: {body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok > 50, "only {ok} requests under load");
    eprintln!("reload under load: {ok} requests, 0 failed, 3 reloads + 1 refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_drains_in_flight_requests_and_usr1_reopens_logs() {
    let corpus = Corpus::new();
    let l = layout();
    let prefix = corpus.prefix("hsmgate");
    let conf = corpus.write(&prefix, Keys::Token, &l, "");
    // systemd's notification socket.
    let notify_path = prefix.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let next_notification = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut server = Server::hsmgate_with_env(
        &prefix,
        &conf,
        &[l.https, l.http],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    assert_eq!(next_notification(), "READY=1");
    server.signal("HUP");
    let reloading = next_notification();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next_notification(), "READY=1");
    let addr: SocketAddr = ([127, 0, 0, 1], l.https).into();
    let config = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    let pid_file = prefix.join("logs/nginx.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        server.pid().to_string()
    );

    // SIGUSR1: logrotate moved the file; the next line goes to a new one.
    assert_eq!(
        get(&mut None, addr, &config, "/before")
            .await
            .expect("get")
            .0,
        200
    );
    let log = prefix.join("logs/access.log");
    let rotated = prefix.join("logs/access.log.1");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("/before")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "access log line not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&log, &rotated).expect("rotate");
    server.signal("USR1");
    server.wait_log("reopening log files", 1, Duration::from_secs(5));
    assert_eq!(
        get(&mut None, addr, &config, "/after")
            .await
            .expect("get")
            .0,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("/after")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no line in the reopened log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !std::fs::read_to_string(&rotated)
            .expect("rotated")
            .contains("/after")
    );

    // SIGQUIT with slow requests in flight: every one completes.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let config = Arc::clone(&config);
            tokio::spawn(async move { get(&mut None, addr, &config, "/slow?delay_ms=1500").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.signal("QUIT");
    server.wait_log("shutting down", 1, Duration::from_secs(5));
    assert_eq!(next_notification(), "STOPPING=1");
    // No new connections once draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGQUIT"
    );
    for t in slow {
        let (status, body) = t.await.expect("task").expect("in-flight request completes");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("GET /slow?delay_ms=1500"), "{body}");
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(server.log_text().contains("all connections drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_fast_stop() {
    let corpus = Corpus::new();
    let l = layout();
    let prefix = corpus.prefix("hsmgate");
    let conf = corpus.write(&prefix, Keys::Token, &l, "");
    let mut server = Server::hsmgate(&prefix, &conf, &[l.https, l.http]);
    let addr: SocketAddr = ([127, 0, 0, 1], l.https).into();
    let config = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    let slow =
        tokio::spawn(async move { get(&mut None, addr, &config, "/slow?delay_ms=8000").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        slow.await.expect("task").is_err(),
        "the slow request was cut"
    );
}

/// A minimal configuration around `body` (inside `http {}`), in `dir`.
fn small(dir: &Path, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, format!("events {{}}\nhttp {{\n{body}\n}}\n")).expect("conf");
    conf
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
