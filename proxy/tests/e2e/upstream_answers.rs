//! What an upstream answers, passed on as nginx passes it (found by the second audit):
//! a `Content-Length` beside `Transfer-Encoding`, an HTTP/1.0 answer, a 204 with a
//! length, 150 header lines, a body that stalls past `proxy_read_timeout`, and a kept
//! connection the upstream closes as the next request arrives (sent again, as nginx
//! does); and HTTP/2 cookies joined into one field for the HTTP/1.1 upstream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::curl;
use crate::support::raw::{Gate, port_in_range, upstream_in_range};

/// An HTTP/1.1 upstream written by hand, answering by path (keep-alive unless the
/// answer closes); counts the connections it accepted.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Read one request head; None at the end of the connection.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

impl Scripted {
    fn start() -> Scripted {
        let listener = loop {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port_in_range())) {
                break l;
            }
        };
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let requests = Arc::new(AtomicUsize::new(0));
        let asked = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let asked = Arc::clone(&asked);
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                    let mut served = 0;
                    while let Some(head) = read_head(&mut s) {
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        served += 1;
                        asked.fetch_add(1, Ordering::SeqCst);
                        let answer: Vec<u8> = match path.as_str() {
                            "/clte" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
                            "/h10" => {
                                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc");
                                return;
                            }
                            "/204" => {
                                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
                                return;
                            }
                            "/many" => {
                                let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
                                for i in 0..150 {
                                    a.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
                                }
                                a.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
                                a
                            }
                            "/stall" => {
                                let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
                                a.extend_from_slice(&[b'x'; 100]);
                                let _ = s.write_all(&a);
                                std::thread::sleep(Duration::from_secs(8));
                                return;
                            }
                            // The keep-alive race: the second request on a connection
                            // finds it closed, unanswered.
                            "/race" if served > 1 => return,
                            "/hang" => {
                                std::thread::sleep(Duration::from_secs(5));
                                return;
                            }
                            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
                            "/to-close" => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the close");
                                return;
                            }
                            "/informational" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                            "/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc".to_vec(),
                            "/length-list" => b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 05\r\n\r\nhello".to_vec(),
                            "/short" => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
                                return;
                            }
                            "/trailing-bytes" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n".to_vec(),
                            // Refuses a body without reading it, and closes: what is
                            // left unread turns the close into a reset.
                            "/early" => {
                                let _ = s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!");
                                return;
                            }
                            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                            "/body" => {
                                let length = head
                                    .lines()
                                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                                    .and_then(|v| v.parse::<usize>().ok())
                                    .unwrap_or(0);
                                let mut body = vec![0u8; length];
                                if s.read_exact(&mut body).is_err() {
                                    return;
                                }
                                let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                                a.extend_from_slice(&body);
                                a
                            }
                            "/bad-head" => b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                            "/reason" => b"HTTP/1.1 499 Client Closed\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                            "/bad-trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nConnection: close\r\nContent-Length: 99\r\nX-T: 1\r\n\r\n".to_vec(),
                            "/five" | "/busy" => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
                            _ => {
                                let body = head.to_ascii_lowercase();
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
                            }
                        };
                        if s.write_all(&answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }
}

/// hsmgate with a plain-HTTP server on its own port proxying to `up` (kept
/// connections, `proxy_read_timeout 1s`); that port.
fn start(up: &Scripted) -> (Gate, u16) {
    let http = port_in_range();
    let extra = format!(
        "upstream scripted {{ server {up}; keepalive 4; }}
        server {{ listen 127.0.0.1:{http}; server_name scripted.test;
            location / {{ proxy_pass http://scripted; proxy_http_version 1.1;
                proxy_set_header Connection \"\"; proxy_read_timeout 1s; }}
            location /vars/ {{ proxy_pass http://scripted; proxy_set_header X-Host $host;
                proxy_set_header X-Cookie $http_cookie; proxy_set_header X-In $http_x_in; }} }}",
        up = up.addr
    );
    (Gate::start(&[upstream_in_range("A")], &extra), http)
}

fn fetch(port: u16, path: &str, extra: &[&str]) -> std::process::Output {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec!["-sS", "-D", "-", "-H", "Host: scripted.test"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

#[test]
fn upstream_answers_are_passed_on_framed_as_nginx_frames_them() {
    let up = Scripted::start();
    let (_gate, http) = start(&up);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // Content-Length beside Transfer-Encoding: the encoding wins (RFC 9112 §6.3).
    let out = fetch(http, "/clte", &[]);
    assert!(out.status.success(), "{out:?}");
    let t = text(&out);
    assert!(t.starts_with("HTTP/1.1 200") && t.ends_with("hello"), "{t}");
    assert!(
        !t.to_ascii_lowercase().contains("content-length: 100"),
        "{t}"
    );

    // An HTTP/1.0 answer goes on as HTTP/1.1.
    let t = text(&fetch(http, "/h10", &[]));
    assert!(t.starts_with("HTTP/1.1 200") && t.ends_with("abc"), "{t}");

    // 150 header lines (hyper's client took 100).
    let t = text(&fetch(http, "/many", &[]));
    assert!(
        t.starts_with("HTTP/1.1 200") && t.contains("x-h149: v"),
        "{t}"
    );

    // One length however the upstream wrote it (`5, 5` and `05` beside it): one field,
    // one number (an HTTP/2 client refuses anything else).
    let t = text(&fetch(http, "/length-list", &[]));
    let lengths: Vec<&str> = t
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["content-length: 5"], "{t}");
    assert!(t.ends_with("hello"), "{t}");

    // An HTTP/1.0 client asking to keep its connection, and an answer of no known length
    // (the upstream's chunked one): delimited by the close, and it says so.
    let t = text(&fetch(
        http,
        "/chunked",
        &["--http1.0", "-H", "Connection: keep-alive"],
    ));
    assert!(
        t.starts_with("HTTP/1.0 200") && t.ends_with("hello world"),
        "{t}"
    );
    let lower = t.to_ascii_lowercase();
    assert!(
        lower.contains("connection: close") && !lower.contains("keep-alive"),
        "{t}"
    );
    // With a length, the connection is kept as asked.
    let t = text(&fetch(
        http,
        "/h10",
        &["--http1.0", "-H", "Connection: keep-alive"],
    ));
    assert!(
        t.to_ascii_lowercase().contains("connection: keep-alive"),
        "{t}"
    );

    // A 204 carries no Content-Length.
    let t = text(&fetch(http, "/204", &[]));
    assert!(t.starts_with("HTTP/1.1 204"), "{t}");
    assert!(!t.to_ascii_lowercase().contains("content-length"), "{t}");

    // A body that stalls past proxy_read_timeout is cut short: the client sees it.
    let t0 = Instant::now();
    let out = fetch(http, "/stall", &["--max-time", "6"]);
    assert!(
        !out.status.success(),
        "a stalled body looked complete: {out:?}"
    );
    assert_eq!(out.status.code(), Some(18), "partial file: {out:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// hsmgate's own upstream client (`upstream_h1`): each framing RFC 9112 §6.3 allows,
/// 1xx answers skipped, invalid or short answers refused, and a connection kept for the
/// next request only when its answer ended cleanly.
#[test]
fn upstream_bodies_are_framed_and_connections_kept_only_when_clean() {
    let up = Scripted::start();
    let (gate, http) = start(&up);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let connections = || up.connections.load(Ordering::SeqCst);
    let log = || gate.server.log_text();

    // Sequential requests share one kept connection.
    for _ in 0..3 {
        let t = text(&fetch(http, "/kept", &[]));
        assert!(t.starts_with("HTTP/1.1 200"), "{t}");
    }
    assert_eq!(connections(), 1, "{}", log());

    // Chunked, with an extension and a trailer field: decoded, and the connection kept.
    let t = text(&fetch(http, "/chunked", &[]));
    assert!(
        t.starts_with("HTTP/1.1 200") && t.ends_with("hello world"),
        "{t}"
    );
    // A HEAD's answer has no body whatever its Content-Length says.
    let out = fetch(http, "/head", &["-I"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.starts_with("HTTP/1.1 200"),
        "{out:?}"
    );
    assert!(t.to_ascii_lowercase().contains("content-length: 5"), "{t}");
    // 100 and 103 skipped; the 200 after them is the answer.
    let t = text(&fetch(http, "/informational", &[]));
    assert!(t.starts_with("HTTP/1.1 200") && t.ends_with("ok"), "{t}");
    assert!(!t.contains("103"), "{t}");
    // A request body goes with its length.
    let t = text(&fetch(http, "/body", &["--data-binary", "0123456789"]));
    assert!(t.ends_with("0123456789"), "{t}");
    assert_eq!(connections(), 1, "{}", log());

    // A body up to the close: all of it, and the connection is not kept.
    let t = text(&fetch(http, "/to-close", &[]));
    assert!(
        t.starts_with("HTTP/1.1 200") && t.ends_with("until the close"),
        "{t}"
    );
    let t = text(&fetch(http, "/kept", &[]));
    assert!(t.starts_with("HTTP/1.1 200"), "{t}");
    assert_eq!(connections(), 2, "{}", log());

    // Bytes after a complete answer: the answer goes on, the connection does not.
    let t = text(&fetch(http, "/trailing-bytes", &[]));
    assert!(t.starts_with("HTTP/1.1 200") && t.ends_with("ok"), "{t}");
    let t = text(&fetch(http, "/kept", &[]));
    assert!(t.starts_with("HTTP/1.1 200"), "{t}");
    assert_eq!(connections(), 3, "{}", log());

    // Two different lengths: 502, as nginx ("upstream sent duplicate header line").
    assert_eq!(status_of(http, "/two-lengths", &[]), 502);
    // A body shorter than its length: the client sees the answer end early.
    let out = fetch(http, "/short", &["--max-time", "5"]);
    assert_eq!(out.status.code(), Some(18), "partial file: {out:?}");
}

/// An upstream that answers before it has read the request's body (a 413 to an upload)
/// and closes: its answer reaches the client, as RFC 9112 §9.5 asks of a client that
/// sends a body ("monitor the network connection for an error response"). nginx 1.22
/// answers 502 here ("writev() failed (104: Connection reset by peer) while sending
/// request to upstream"), and so did hsmgate with hyper's client.
#[test]
fn an_answer_before_the_whole_body_is_passed_on() {
    let up = Scripted::start();
    let http = port_in_range();
    let extra = format!(
        "server {{ listen 127.0.0.1:{http}; server_name scripted.test; client_max_body_size 0;
            location / {{ proxy_pass http://{up}; }} }}",
        up = up.addr
    );
    let gate = Gate::start(&[upstream_in_range("A")], &extra);
    let dir = tempfile::tempdir().expect("tempdir");
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 16 << 20]).expect("write upload");
    let data = format!("@{}", upload.display());
    for streamed in [false, true] {
        let mut extra = vec!["--data-binary", &data, "--max-time", "20"];
        if streamed {
            // Without a length: chunked, streamed as it comes (hsmgate still buffers it).
            extra.extend_from_slice(&["-H", "Transfer-Encoding: chunked"]);
        }
        let out = fetch(http, "/early", &extra);
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            t.contains("HTTP/1.1 413 ") && t.ends_with("big!"),
            "streamed {streamed}: {out:?}\n{}",
            gate.server.log_text()
        );
    }
}

#[test]
fn a_kept_connection_closed_by_the_upstream_is_retried_for_an_idempotent_request() {
    let up = Scripted::start();
    let (gate, http) = start(&up);
    for i in 0..3 {
        let out = fetch(http, "/race", &[]);
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            t.starts_with("HTTP/1.1 200"),
            "request {i}: {t}\n{}",
            gate.server.log_text()
        );
    }
    assert!(
        up.connections.load(Ordering::SeqCst) >= 2,
        "the kept connection was reused"
    );
}

#[test]
fn http2_cookie_fields_reach_the_upstream_as_one() {
    let up = Scripted::start();
    let (gate, _) = start(&up);
    let port = gate.addr.port();
    let out = curl(&[
        "--http2",
        "--cacert",
        gate.ca().to_str().expect("utf-8"),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2; c=3",
        &format!("https://localhost:{port}/cookies"),
    ]);
    let body = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(body.contains("cookie: a=1; b=2; c=3"), "{body}");
    assert_eq!(body.matches("cookie:").count(), 1, "{body}");
}

/// hsmgate with a plain-HTTP server `scripted.test` (`proxy_read_timeout 1s`) whose
/// `locations` may proxy to `pair`: a [`Scripted`] server (its `/hang` times out) and a
/// server that answers; returns the scripted server, the port and the proxy.
fn slow_and_fine(locations: &str) -> (Scripted, u16, Gate) {
    let slow = Scripted::start();
    let fine = upstream_in_range("B");
    let http = port_in_range();
    let extra = format!(
        "upstream pair {{ server {slow} max_fails=0; server {fine} max_fails=0; }}
        server {{ listen 127.0.0.1:{http}; server_name scripted.test;
            proxy_read_timeout 1s;
            {locations} }}",
        slow = slow.addr
    );
    let gate = Gate::start(&[upstream_in_range("A")], &extra);
    (slow, http, gate)
}

/// The status code of `path` fetched with curl (0 when there is none).
fn status_of(port: u16, path: &str, extra: &[&str]) -> u16 {
    let out = fetch(port, path, extra);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    t.split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0)
}

/// `proxy_next_upstream`: nginx's default `error timeout` moves an idempotent request to
/// the group's next server when the first times out; `http_503` listed moves it on a 503
/// too (not listed: the 503 is the answer); a POST, once sent, is not moved.
#[test]
fn proxy_next_upstream_moves_idempotent_requests_on_timeouts_and_listed_statuses() {
    let (slow, http, gate) = slow_and_fine(
        "location / { proxy_pass http://pair; }
         location /five { proxy_pass http://pair; proxy_next_upstream error timeout http_503; }",
    );
    let status = |path: &str, extra: &[&str]| status_of(http, path, extra);
    // Round robin starts at either server: four tries reach the slow one first.
    for i in 0..4 {
        assert_eq!(
            status("/hang", &[]),
            200,
            "GET {i}: {}",
            gate.server.log_text()
        );
        assert_eq!(status("/five", &[]), 200, "GET /five {i}");
    }
    assert!(
        slow.requests.load(Ordering::SeqCst) >= 4,
        "the slow server was tried first"
    );
    let codes: Vec<u16> = (0..4).map(|_| status("/busy", &[])).collect();
    assert!(
        codes.contains(&503),
        "without http_503 the 503 is the answer: {codes:?}"
    );
    let codes: Vec<u16> = (0..4)
        .map(|_| status("/hang", &["-X", "POST", "--data", "x"]))
        .collect();
    assert!(
        codes.contains(&504),
        "a POST is not moved once sent: {codes:?}"
    );
}

/// `proxy_next_upstream_tries` and `proxy_next_upstream_timeout` bound the moves: with one
/// try, or past the time limit, a timed-out request is answered 504 instead of moving
/// on; two tries move it to the second server as without them.
#[test]
fn proxy_next_upstream_tries_and_timeout_bound_the_moves() {
    let (_slow, http, _gate) = slow_and_fine(
        "location = /one { proxy_pass http://pair/hang; proxy_next_upstream_tries 1; }
         location = /two { proxy_pass http://pair/hang; proxy_next_upstream_tries 2; }
         location = /late { proxy_pass http://pair/hang; proxy_next_upstream_timeout 500ms; }",
    );
    let codes = |path: &str| -> Vec<u16> { (0..4).map(|_| status_of(http, path, &[])).collect() };
    // Round robin starts at either server: of four requests, two meet the slow one first.
    let one = codes("/one");
    assert!(one.contains(&504) && one.contains(&200), "tries 1: {one:?}");
    let two = codes("/two");
    assert_eq!(two, [200; 4], "tries 2");
    let late = codes("/late");
    assert!(
        late.contains(&504) && late.contains(&200),
        "timeout 500ms: {late:?}"
    );
}

/// What a review against nginx 1.22 found (2026-12-04): an upstream's own reason phrase
/// reaches HTTP/1.1 clients; its trailer fields are not passed on (nginx passes none),
/// so fields that would end an HTTP/2 stream cannot; a path whose bytes are not UTF-8
/// is served; `$http_cookie` joins cookie fields with `; `, a value that is not UTF-8
/// is not lost; `$host` drops a trailing dot and anything after the first `:`.
#[test]
fn reason_phrases_trailers_odd_bytes_and_variables_as_nginx() {
    let up = Scripted::start();
    let (gate, http) = start(&up);
    let head = String::from_utf8_lossy(&fetch(http, "/reason", &[]).stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 499 Client Closed\r\n"), "{head}");
    let out = fetch(http, "/caf%E9", &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("get /caf%e9 http/1.1"),
        "the target as it came: {text}"
    );
    let out = fetch(
        http,
        "/vars/x",
        &[
            "-H",
            "Cookie: a=1",
            "-H",
            "Cookie: b=2",
            "-H",
            "X-In: caf\u{e9}",
            "-H",
            "Host: Scripted.Test.:x",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains("x-cookie: a=1; b=2"), "{text}");
    assert!(text.contains("x-host: scripted.test\r\n"), "{text}");
    assert!(text.contains("x-in: caf"), "{text}");
    drop(gate);
    // HTTP/2 (prior knowledge on a plain address).
    let h2 = port_in_range();
    let extra = format!(
        "server {{ listen 127.0.0.1:{h2} http2; server_name scripted.test;
            location / {{ proxy_pass http://{up}; }} }}",
        up = up.addr
    );
    let _h2_gate = Gate::start(&[upstream_in_range("A")], &extra);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: scripted.test",
        "-w",
        " %{http_code}",
        &format!("http://127.0.0.1:{h2}/bad-trailers"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok 200", "{out:?}");
}

/// `proxy_connect_timeout` running out is a timeout, as nginx counts it: 504.
#[test]
fn a_connect_timeout_is_a_504() {
    // A listener whose backlog is full: further connections get no answer.
    let hole =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    hole.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    hole.listen(0).expect("listen");
    let addr = hole.local_addr().expect("addr").as_socket().expect("inet");
    let fill: Vec<_> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    let http = port_in_range();
    let extra = format!(
        "server {{ listen 127.0.0.1:{http}; server_name scripted.test;
            location / {{ proxy_pass http://{addr}; proxy_connect_timeout 1s; }} }}"
    );
    let _gate = Gate::start(&[upstream_in_range("A")], &extra);
    let started = Instant::now();
    let head = String::from_utf8_lossy(&fetch(http, "/ct", &[]).stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(fill);
}

/// An invalid response head moves a request to the next server only with
/// `proxy_next_upstream … invalid_header` (nginx's default `error timeout` answers 502).
#[test]
fn an_invalid_head_moves_on_only_with_invalid_header() {
    let (slow, http, _gate) = slow_and_fine(
        "location = /bad-head { proxy_pass http://pair; }
         location = /moved { proxy_pass http://pair/bad-head;
             proxy_next_upstream error timeout invalid_header; }",
    );
    let codes: Vec<u16> = (0..4).map(|_| status_of(http, "/bad-head", &[])).collect();
    assert!(
        codes.contains(&502),
        "by default the invalid head is a 502: {codes:?}"
    );
    for i in 0..4 {
        assert_eq!(status_of(http, "/moved", &[]), 200, "try {i}");
    }
    assert!(slow.requests.load(Ordering::SeqCst) >= 4);
}
