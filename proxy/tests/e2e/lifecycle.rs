//! The nginx lifecycle with a running hsmgate: reloads (SIGHUP, `-s reload`) under
//! steady load with zero failed requests, a new listen address bound and closed by
//! reloads, a broken reload that keeps the old configuration; SIGQUIT draining
//! in-flight requests; SIGTERM as a fast stop; SIGUSR1 reopening the access log;
//! sd_notify messages.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::nginx::s;
use crate::support::client::{client_config, connect};
use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::free_port;
use crate::support::nginx::{CorpusHsmgate, Server, hsmgate};

/// A GET through hsmgate on a new or kept connection, counting failures instead of
/// panicking.
pub(crate) async fn get(
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
    let CorpusHsmgate {
        corpus,
        layout: l,
        prefix,
        conf,
        server,
        https: addr,
    } = CorpusHsmgate::start(layout());
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
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.log_text()
    );
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(server.log_text().contains("all connections drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_fast_stop() {
    let CorpusHsmgate {
        corpus,
        mut server,
        https: addr,
        ..
    } = CorpusHsmgate::start(layout());
    let config = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    let slow =
        tokio::spawn(async move { get(&mut None, addr, &config, "/slow?delay_ms=8000").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}:\n{}", server.log_text());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        slow.await.expect("task").is_err(),
        "the slow request was cut"
    );
}

#[test]
fn native_toml_reloads_on_sighup_too() {
    use crate::support::{KeyType, ProxyProcess, TestToken, config_for, curl, start_upstream};
    let token = TestToken::new(KeyType::EcP256);
    let (one, two) = (start_upstream("one"), start_upstream("two"));
    let proxy = ProxyProcess::start(token.path(), &config_for(&token, one, "")).expect("start");
    let ca = token.ca_pem.to_str().expect("utf-8").to_owned();
    let body = |proxy: &ProxyProcess| {
        let out = curl(&["--cacert", &ca, &proxy.url("/x")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(body(&proxy).starts_with("hello from one"));
    // Same listener (port 0 stays the bound socket), new upstream.
    std::fs::write(
        token.path().join("hsmgate.toml"),
        config_for(&token, two, ""),
    )
    .expect("rewrite");
    proxy.reload();
    assert!(
        body(&proxy).starts_with("hello from two"),
        "{}",
        proxy.log_text()
    );
    // The old generation is gone by now; the new one's key still signs.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let b = body(&proxy);
        assert!(b.starts_with("hello from two"), "{b}\n{}", proxy.log_text());
    }
}

/// With the native format SIGTERM (what the kubelet and systemd send) drains like
/// SIGQUIT, for `[shutdown] grace_ms`: the request in flight completes. A second SIGTERM
/// during the drain stops within a second.
#[test]
fn native_sigterm_drains_and_a_second_one_cuts_the_drain_short() {
    use crate::support::{KeyType, ProxyProcess, TestToken, config_for, curl, start_upstream};
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("echo"), "")
        .replace("grace_ms = 2000", "grace_ms = 20000");
    let ca = token.ca_pem.to_str().expect("utf-8").to_owned();
    let in_flight = |proxy: &ProxyProcess, delay_ms: u32| {
        let url = proxy.url(&format!("/slow?delay_ms={delay_ms}"));
        let ca = ca.clone();
        let t = std::thread::spawn(move || curl(&["--cacert", &ca, "-w", "%{http_code}", &url]));
        std::thread::sleep(Duration::from_millis(400));
        t
    };
    let wait_exit = |proxy: &mut ProxyProcess, within: Duration| {
        let t0 = std::time::Instant::now();
        while proxy.alive() {
            assert!(
                t0.elapsed() < within,
                "still running after {within:?}:\n{}",
                proxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let term = |proxy: &ProxyProcess| {
        std::process::Command::new("kill")
            .args(["-TERM", &proxy.pid().to_string()])
            .status()
            .expect("kill");
    };

    let mut proxy = ProxyProcess::start(token.path(), &config).expect("start");
    let slow = in_flight(&proxy, 1500);
    term(&proxy);
    let out = slow.join().expect("curl");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("200"),
        "the request in flight completes: {out:?}\n{}",
        proxy.log_text()
    );
    wait_exit(&mut proxy, Duration::from_secs(5));
    assert!(
        proxy.log_text().contains("all connections drained"),
        "{}",
        proxy.log_text()
    );

    let dir = token.path().join("second");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut proxy = ProxyProcess::start(&dir, &config).expect("start");
    let slow = in_flight(&proxy, 8000);
    term(&proxy);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    term(&proxy);
    wait_exit(&mut proxy, Duration::from_secs(4));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let out = slow.join().expect("curl");
    assert!(
        !String::from_utf8_lossy(&out.stdout).ends_with("200"),
        "the slow request was cut: {out:?}"
    );
}
