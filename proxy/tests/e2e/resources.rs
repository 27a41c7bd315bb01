//! Resources with a running hsmgate: a dead upstream server (retried, then out of the
//! rotation for fail_timeout), `worker_connections` bounding open connections, the
//! runtime's threads from `worker_processes` and `[runtime] threads`, and a key removed
//! by a reload (its signer pool closed, the other key still signing).

use std::time::Duration;

use crate::lifecycle::get;
use crate::support::client::client_config;
use crate::support::corpus::layout;
use crate::support::free_port;
use crate::support::nginx::{CorpusHsmgate, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_server_is_retried_then_left_out() {
    let mut l = layout();
    l.app_b = ([127, 0, 0, 1], free_port()).into(); // nothing listens there
    let CorpusHsmgate {
        corpus,
        layout: l,
        server,
        https: addr,
        ..
    } = CorpusHsmgate::start(l);
    let config = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    // A connect failure goes on to the next server (nginx's proxy_next_upstream error),
    // for small bodies too (read first, as nginx's client_body_buffer_size).
    let ca = corpus.ca_pem.to_str().expect("utf-8");
    for i in 0..4 {
        let out = crate::support::curl(&[
            "--cacert",
            ca,
            "--data-binary",
            &format!("body-{i}"),
            &format!("https://127.0.0.1:{}/p", l.https),
        ]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.starts_with("hello from app-a"), "{body}");
        assert!(body.ends_with(&format!("body-{i}")), "{body}");
    }
    server.wait_log(
        "upstream server temporarily disabled",
        1,
        Duration::from_secs(5),
    );
    // Out of the rotation now: GETs go to app-a without a retry.
    for _ in 0..4 {
        let (status, body) = get(&mut None, addr, &config, "/g").await.expect("get");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("hello from app-a"), "{body}");
    }
    assert_eq!(
        server.log_text().matches("trying the next server").count(),
        1,
        "{}",
        server.log_text()
    );
}

/// One HTTP/1.1 keep-alive request on `stream`; the status line, or None on timeout.
fn request(stream: &mut std::net::TcpStream) -> Option<String> {
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .map(str::to_owned)
}

/// An nginx configuration in a new directory (with its `logs/`): `main` and `events`
/// directives around one plain server on a free port answering `return 200`. Returns
/// the directory, the file and the port.
fn plain_return_conf(main: &str, events: &str) -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("logs");
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid logs/h.pid;\n{main}\nevents {{ {events} }}\nhttp {{\n  server {{ listen 127.0.0.1:{port}; return 200 \"c\\n\"; }}\n}}\n"
        ),
    )
    .expect("conf");
    (dir, conf, port)
}

/// `worker_connections` bounds the open connections; at the limit, as in nginx, idle
/// keep-alive connections are closed to make room for new ones, the oldest first, and a
/// connection part-way through a request is not: with none idle, a new connection waits
/// until one is.
#[test]
fn worker_connections_bound_the_open_connections_and_idle_ones_make_room() {
    use std::io::{Read, Write};
    let (dir, conf, port) = plain_return_conf("worker_processes 1;", "worker_connections 2;");
    let server = Server::hsmgate(dir.path(), &conf, &[]);
    let addr = ("127.0.0.1", port);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut first = loop {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut second = std::net::TcpStream::connect(addr).expect("connect");
    assert_eq!(request(&mut first).as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(request(&mut second).as_deref(), Some("HTTP/1.1 200 OK"));
    // Both idle: a third connection is served, the oldest idle one closed for it.
    let mut third = std::net::TcpStream::connect(addr).expect("connect");
    assert_eq!(request(&mut third).as_deref(), Some("HTTP/1.1 200 OK"));
    server.wait_log("connection limit reached", 1, Duration::from_secs(5));
    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_))
    };
    assert!(closed(&mut first), "the oldest idle connection is closed");
    assert_eq!(request(&mut second).as_deref(), Some("HTTP/1.1 200 OK"));

    // Both part-way through a request head: a new connection waits…
    for s in [&mut second, &mut third] {
        s.write_all(b"GET /c HTTP/1.1\r\n").expect("half a head");
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = std::net::TcpStream::connect(addr).expect("connect (waits)");
    assert_eq!(
        request(&mut fourth),
        None,
        "served while no connection was idle"
    );
    // …until one has its answer and is idle: then it is closed for the new one.
    second.write_all(b"Host: x\r\n\r\n").expect("the rest");
    let mut buf = [0u8; 512];
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = second.read(&mut buf).expect("the answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = fourth.read(&mut buf).expect("answer once one is idle");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    assert!(
        closed(&mut second),
        "the connection made idle is closed for the new one"
    );
    // The one still reading its head was left alone.
    third.write_all(b"Host: x\r\n\r\n").expect("the rest");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = third.read(&mut buf).expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
}

/// nginx's `worker_processes N` and the TOML's `[runtime] threads = N` both set the async
/// runtime's threads, which the start-up log states.
#[test]
fn worker_processes_and_runtime_threads_set_the_runtime_threads() {
    let (dir, conf, port) = plain_return_conf("worker_processes 3;", "");
    let server = Server::hsmgate(dir.path(), &conf, &[port]);
    let log = server.wait_log("async runtime started", 1, Duration::from_secs(10));
    assert!(log.contains("threads: 3"), "{log}");
    drop(server);

    let token = crate::support::TestToken::new(crate::support::KeyType::EcP256);
    let upstream = crate::support::start_upstream("echo");
    let config = format!(
        "{}\n[runtime]\nthreads = 5\n",
        crate::support::config_for(&token, upstream, "")
    );
    let proxy = crate::support::ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let log = proxy.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("async runtime started") && l.contains("threads=5")),
        "{log}"
    );
}

/// Without `worker_processes` (or `[runtime] threads`), a process that may use one CPU
/// (`taskset`, a container's cpuset) still runs two runtime threads, so that one carries
/// on while the other is preempted by an upstream sharing the CPU.
#[test]
fn one_cpu_gets_two_runtime_threads_by_default() {
    let (dir, conf, _port) = plain_return_conf("", "");
    let log = dir.path().join("logs/stderr");
    let child = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .args(["-e", "stderr"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("taskset (util-linux) starts hsmgate");
    // Killed by PID on drop, as the other servers of these tests.
    let server = Server { child, log };
    let text = server.wait_log("async runtime started", 1, Duration::from_secs(10));
    let line = (text.lines())
        .find(|l| l.contains("async runtime started"))
        .unwrap_or_default();
    assert!(line.contains("threads: 2"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_dropped_by_reload_is_closed_and_the_other_keeps_signing() {
    let CorpusHsmgate {
        corpus,
        prefix,
        server,
        https: addr,
        ..
    } = CorpusHsmgate::start(layout());
    let config = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    assert_eq!(
        get(&mut None, addr, &config, "/k").await.expect("get").0,
        200
    );
    // Signer threads (named sign-MEMBER-N; both pools' member is the token).
    let signers = || {
        std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|c| c.starts_with("sign-hsmgate"))
                    .count()
            })
            .unwrap_or(0)
    };
    let before = signers();
    assert!(before >= 2, "{before} signer threads");
    // Only the ECDSA key stays: the RSA key's pool (the first on the SoftHSM module)
    // goes once no generation holds it (a second reload replaces the first).
    let (rsa, ec) = (
        corpus.certs[0].display().to_string(),
        corpus.certs[1].display().to_string(),
    );
    for f in ["conf.d/10-www.conf", "conf.d/20-api.conf"] {
        let path = prefix.join(f);
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text
            .replace(&rsa, &ec)
            .replace("object=tls;", "object=tls-ec;");
        std::fs::write(&path, text).expect("write");
    }
    for n in 1..=2 {
        server.signal("HUP");
        server.wait_log("configuration reloaded", n, Duration::from_secs(20));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let (status, body) = get(&mut None, addr, &config, "/k").await.expect("get");
        assert_eq!(status, 200, "{body}");
    }
    let after = signers();
    assert!(
        after < before,
        "the RSA pool's threads ended: {before} -> {after}"
    );
    assert!(after > 0, "the ECDSA pool is still there");
    assert!(
        !server.log_text().contains("ERROR") && !server.log_text().contains("[error]"),
        "{}",
        server.log_text()
    );
}

/// An admin address that is also a `listen` address of an nginx configuration (by
/// `--admin`, `HSMGATE_ADMIN` or the file's `env` line) fails `-t`, naming both, instead
/// of passing it and failing to bind at start.
#[test]
fn an_admin_address_on_a_listen_address_fails_the_test() {
    let (_dir, conf, port) = plain_return_conf("", "");
    let conf = conf.to_str().expect("utf-8");
    let same = format!("127.0.0.1:{port}");
    let out = crate::support::nginx::hsmgate(&["-t", "-c", conf, "--admin", &same]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&same) && text.contains("listen"), "{text}");
    let other = format!("127.0.0.1:{}", free_port());
    let out = crate::support::nginx::hsmgate(&["-t", "-c", conf, "--admin", &other]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
