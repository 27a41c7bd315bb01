//! Nothing on its way is lost at a graceful stop or a reload: SIGQUIT closes only the
//! connections idle after a request, and serves the rest first (a connection open but
//! silent, one whose request head is half sent), as nginx does; a reload does not drop
//! an HTTP/2 connection that has not sent its preface yet; a graceful stop waits for an
//! open WebSocket-style tunnel.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::net::{free_port, start_upstream};
use crate::support::nginx::Server;

/// An nginx configuration: a plain `listen … http2` address (HTTP/1.1, or HTTP/2 with
/// prior knowledge) in front of `location`'s block. Returns the prefix and the file.
fn conf(dir: &Path, port: u16, location: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    let conf = dir.join("nginx.conf");
    let text = format!(
        "pid logs/h.pid;\nerror_log logs/error.log info;\nworker_shutdown_timeout 20s;\n\
         events {{}}\nhttp {{\n  access_log off;\n  server {{\n    \
         listen 127.0.0.1:{port} http2;\n    location / {{ {location} }}\n  }}\n}}\n"
    );
    std::fs::write(&conf, text).expect("conf");
    (dir.to_path_buf(), conf)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Reads until the end of an HTTP/1.1 answer's head, or the end of the stream.
fn head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            // The rest of an answer.
            Ok(_) => continue,
        }
    }
}

#[test]
fn a_graceful_stop_serves_connections_with_a_request_on_its_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = start_upstream("live");
    let port = free_port();
    let (prefix, conf) = conf(dir.path(), port, &format!("proxy_pass http://{upstream};"));
    let mut server = Server::hsmgate(&prefix, &conf, &[port]);
    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    // Idle after a request (closed by the stop), open and silent, half a head.
    let mut idle = connect(port);
    idle.write_all(GET).expect("request");
    assert!(head(&mut idle).starts_with("HTTP/1.1 200"));
    let mut silent = connect(port);
    let mut half = connect(port);
    half.write_all(b"GET /b HTTP/1.1\r\n").expect("half a head");
    std::thread::sleep(Duration::from_millis(200));
    server.signal("QUIT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed(&mut idle),
        "the idle keep-alive connection is closed"
    );
    silent.write_all(GET).expect("request after the stop began");
    let answer = head(&mut silent);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        server.log_text()
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    half.write_all(b"Host: x\r\n\r\n")
        .expect("the rest of the head");
    let answer = head(&mut half);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        server.log_text()
    );
    assert!(closed(&mut silent) && closed(&mut half));
    assert!(server.wait_exit(Duration::from_secs(5)).success());
}

/// HTTP/2 with prior knowledge, by hand: the preface, SETTINGS, one GET on stream 1;
/// true when a HEADERS frame on stream 1 says 200 (HPACK static index 8).
fn h2_get(s: &mut TcpStream) -> bool {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    // :method GET, :scheme http, :path /, :authority x
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    out.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    s.write_all(&out).expect("h2 request");
    let mut frame = [0u8; 9];
    loop {
        if s.read_exact(&mut frame).is_err() {
            return false;
        }
        let len = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            return false;
        }
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        if frame[3] == 1 && stream == 1 {
            return payload.first() == Some(&0x88);
        }
    }
}

#[test]
fn a_reload_does_not_drop_an_http2_connection_before_its_preface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = start_upstream("live");
    let port = free_port();
    let (prefix, conf) = conf(dir.path(), port, &format!("proxy_pass http://{upstream};"));
    let server = Server::hsmgate(&prefix, &conf, &[port]);
    let mut early = connect(port);
    let mut warm = connect(port);
    assert!(h2_get(&mut warm), "HTTP/2 before the reload");
    std::thread::sleep(Duration::from_millis(200));
    server.signal("HUP");
    server.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    assert!(
        h2_get(&mut early),
        "the connection open at the reload is served\n{}",
        server.log_text()
    );
}

#[test]
fn a_graceful_stop_waits_for_an_open_tunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An upstream that switches protocols, then echoes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = head(&mut conn);
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                );
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    let _ = conn.write_all(&buf[..n]);
                }
            });
        }
    });
    let port = free_port();
    let location = format!(
        "proxy_pass http://{upstream}; proxy_http_version 1.1; \
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;"
    );
    let (prefix, conf) = conf(dir.path(), port, &location);
    let mut server = Server::hsmgate(&prefix, &conf, &[port]);
    let mut tunnel = connect(port);
    tunnel
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        .expect("upgrade");
    assert!(head(&mut tunnel).starts_with("HTTP/1.1 101"));
    let echo = |t: &mut TcpStream, what: &[u8]| {
        t.write_all(what).expect("send");
        let mut got = vec![0u8; what.len()];
        t.read_exact(&mut got)
            .map(|()| got == what)
            .unwrap_or(false)
    };
    assert!(echo(&mut tunnel, b"ping"));
    server.signal("QUIT");
    std::thread::sleep(Duration::from_millis(500));
    assert!(echo(&mut tunnel, b"still there"), "{}", server.log_text());
    drop(tunnel);
    assert!(server.wait_exit(Duration::from_secs(5)).success());
}

/// A stop signal is obeyed while a reload hangs (here on a PIN source that never
/// answers, as a hung HSM login would): the reload is abandoned and the process stops.
#[test]
fn a_stop_signal_is_not_held_up_by_a_hanging_reload() {
    use crate::support::{KeyType, ProxyProcess, TestToken, config_for};
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("live"), "");
    let mut proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let fifo = token.path().join("pin-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let pin = token.pin_file.display().to_string();
    let hanging = config.replace(&pin, &fifo.display().to_string());
    assert_ne!(
        hanging, config,
        "the PIN file is named in the configuration"
    );
    std::fs::write(token.path().join("hsmgate.toml"), hanging).expect("config");
    let kill = |signal: &str| {
        let sent = std::process::Command::new("kill")
            .args([signal, &proxy.pid().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    };
    kill("-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proxy.log_text().contains("reloading the configuration") {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    kill("-INT");
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while proxy.alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGINT during a hanging reload\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
