//! Hostile clients, as nginx 1.22 answers them (issue 10): malformed request bodies are
//! the client's fault, HTTP/1.1 heads nginx refuses, absolute-form targets, HTTP/2 host
//! confusion, HTTP/2 frame errors and limits, `client_header_timeout`. Raw bytes and
//! frames over a real TLS client; hsmgate runs on an nginx configuration whose upstream
//! group has two echo servers.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::raw::{
    COMPRESSION_ERROR, DATA, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, Gate, H2, HEADERS, PING,
    PRIORITY, PROTOCOL_ERROR, RST_STREAM, SETTINGS, STREAM_CLOSED, frame, get, upstream_in_range,
};

const WAIT: Duration = Duration::from_secs(5);

fn gate(http_extra: &str) -> Gate {
    let a = upstream_in_range("A");
    let b = upstream_in_range("B");
    Gate::start(&[a, b], http_extra)
}

/// Which upstream answers the next `n` plain GETs.
fn spread(g: &Gate, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = g.h1(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            assert_eq!(r.status, 200, "{r:?}\n{}", g.server.log_text());
            r.upstream().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn a_clients_bad_body_is_its_400_and_never_takes_an_upstream_out() {
    let g = gate("");
    assert!(spread(&g, 4).iter().any(|u| u == "A") && spread(&g, 4).iter().any(|u| u == "B"));
    // Bad chunk sizes (streamed: no Content-Length), then a body that ends before its
    // Content-Length (streamed: over 16 KiB) on a connection the client closes.
    for _ in 0..3 {
        let r = g.h1(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n0\r\n\r\n",
        );
        assert_eq!(r.status, 400, "{r:?}\n{}", g.server.log_text());
        let mut s = g.connect(b"http/1.1");
        let _ = s.write_all(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nonly a little",
        );
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(100));
        s.conn.send_close_notify();
        let _ = s.flush();
        let _ = s.sock.shutdown(std::net::Shutdown::Write);
        let r = crate::support::raw::read_response(&mut s);
        assert!(matches!(r.status, 0 | 400), "{r:?}");
    }
    let log = g.server.log_text();
    assert!(!log.contains("temporarily disabled"), "{log}");
    // Not in the timestamps (e.g. `05:25:44.642502Z`): only after each line's first field.
    let upstream_error = log
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .any(|l| l.contains("502"));
    assert!(!upstream_error, "{log}");
    let after = spread(&g, 4);
    assert!(
        after.iter().any(|u| u == "A") && after.iter().any(|u| u == "B"),
        "both servers stay in rotation: {after:?}\n{log}"
    );
}

#[test]
fn http11_host_and_framing_nginx_refuses_are_refused() {
    let g = gate("");
    let post = |headers: &str| {
        format!("POST / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n0\r\n\r\n").into_bytes()
    };
    let te = |v: &str| post(&format!("Transfer-Encoding: {v}\r\n"));
    let probes: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "two Host",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.invalid\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length + Transfer-Encoding",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        ("xchunked", te("xchunked"), 501),
        ("chunked, chunked", te("chunked, chunked"), 501),
        ("identity, chunked", te("identity, chunked"), 501),
        ("tab before the value", post("Transfer-Encoding:\tchunked\r\n"), 501),
        ("obs-fold", post("Transfer-Encoding:\r\n chunked\r\n"), 400),
        (
            "two Transfer-Encoding",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        (
            "TE in HTTP/1.0",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Content-Length",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
                .to_vec(),
            400,
        ),
    ];
    for (what, bytes, want) in probes {
        let r = g.h1(&bytes);
        assert_eq!(r.status, want, "{what}: {r:?}");
        assert!(r.upstream().is_none(), "{what} reached the upstream: {r:?}");
        assert!(r.head.starts_with("HTTP/1.1 "), "{what}: {}", r.head);
    }
    // A chunked request done right still goes through, and the connection stays usable.
    let r = g.h1(&te("chunked"));
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn headers_over_large_client_header_buffers_are_refused_and_the_limits_are_configurable() {
    let g = gate("");
    let big = |n: usize| "a".repeat(n);
    let get = |headers: String| format!("GET / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    let lines = |count: usize, len: usize| {
        (0..count)
            .map(|i| format!("X-B{i}: {}\r\n", big(len)))
            .collect::<String>()
    };
    let r = g.h1(get(format!("X-Big: {}\r\n", big(8000))).as_bytes());
    assert_eq!(r.status, 200, "an 8000-byte line fits 8k: {r:?}");
    let r = g.h1(get(lines(4, 7000)).as_bytes());
    assert_eq!(r.status, 200, "28 KB in 4 × 8k: {r:?}");
    for (what, head) in [
        ("one 9 KB line", get(format!("X-Big: {}\r\n", big(9000)))),
        (
            "one 500 KB line",
            get(format!("X-Big: {}\r\n", big(500_000))),
        ),
        ("35 KB of lines", get(lines(5, 7000))),
        ("70 KB of lines", get(lines(10, 7000))),
    ] {
        let r = g.h1(head.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.head);
        assert!(
            r.body.contains("Request Header Or Cookie Too Large"),
            "{what}: {r:?}"
        );
    }
    let r = g.h1(format!("GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n", big(9000)).as_bytes());
    assert_eq!(r.status, 414, "{r:?}");

    let small = gate("large_client_header_buffers 2 2k;");
    let r = small.h1(get(format!("X-Big: {}\r\n", big(1500))).as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let r = small.h1(get(format!("X-Big: {}\r\n", big(3000))).as_bytes());
    assert_eq!(r.status, 400, "{r:?}");
    let r = small.h1(get(lines(3, 1500)).as_bytes());
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn absolute_form_authority_wins_for_routing_and_forwarding() {
    let g = gate("");
    let r = g
        .h1(b"GET https://evil.invalid/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body.to_ascii_lowercase();
    assert!(body.contains("host: evil.invalid\n"), "forwarded: {body}");
    assert!(
        body.contains("x-server: evil\n"),
        "routed to evil.invalid: {body}"
    );
    assert!(body.contains("get /x "), "{body}");
    let r = g.h1(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let body = r.body.to_ascii_lowercase();
    assert!(
        body.contains("host: localhost\n") && !body.contains("x-server"),
        "{body}"
    );
}

/// The response on stream 1, or how the stream or connection ended.
fn answer(h2: &mut H2) -> (Option<u16>, Option<(u8, u32)>) {
    let frames = h2.until(WAIT, |f| {
        (f.kind == HEADERS && f.stream == 1) || f.kind == GOAWAY || f.kind == RST_STREAM
    });
    let status = frames.iter().find_map(|f| f.status());
    let end = frames
        .iter()
        .find(|f| f.kind == GOAWAY || f.kind == RST_STREAM)
        .and_then(|f| Some((f.kind, f.error_code()?)));
    (status, end)
}

#[test]
fn http2_host_that_differs_from_authority_is_400() {
    let g = gate("");
    let ask = |block: Vec<u8>| {
        let mut h2 = H2::open(&g);
        h2.send(&frame(HEADERS, 0x5, 1, &block));
        answer(&mut h2)
    };
    let (status, _) = ask(get(Some("localhost"), "/", &[("host", "evil.invalid")]));
    assert_eq!(status, Some(400), "{}", g.server.log_text());
    let (status, _) = ask(get(
        None,
        "/",
        &[("host", "localhost"), ("host", "evil.invalid")],
    ));
    assert_eq!(status, Some(400));
    // The same name twice, and host alone, are fine (nginx refuses the first too).
    let (status, _) = ask(get(Some("localhost"), "/", &[("host", "localhost")]));
    assert_eq!(status, Some(200));
    let (status, _) = ask(get(None, "/", &[("host", "localhost")]));
    assert_eq!(status, Some(200));
}

#[test]
fn http2_settings_carry_nginx_limits() {
    let g = gate("");
    let mut h2 = H2::open(&g);
    let settings = h2
        .until(WAIT, |f| f.kind == SETTINGS && f.flags & 1 == 0)
        .pop()
        .expect("server SETTINGS");
    let s = settings.settings();
    assert!(s.contains(&(0x3, 128)), "MAX_CONCURRENT_STREAMS 128: {s:?}");
    assert!(
        s.contains(&(0x6, 32 * 1024)),
        "MAX_HEADER_LIST_SIZE 4 × 8k: {s:?}"
    );
    drop(h2);
    let small = gate("http2_max_concurrent_streams 8;");
    let mut h2 = H2::open(&small);
    let settings = h2
        .until(WAIT, |f| f.kind == SETTINGS && f.flags & 1 == 0)
        .pop()
        .expect("server SETTINGS");
    assert!(settings.settings().contains(&(0x3, 8)), "{settings:?}");
}

/// Each frame error closes that connection with an error code (RFC 9113's, or
/// PROTOCOL_ERROR where h2 0.4.20 sends that instead: README, known differences), and
/// the server keeps serving.
#[test]
fn http2_frame_errors_end_the_connection_and_the_server_keeps_serving() {
    let g = gate("");
    let probes: Vec<(&str, Vec<u8>, u8, u32)> = vec![
        (
            "PRIORITY of 4 bytes",
            frame(PRIORITY, 0, 1, &[0; 4]),
            GOAWAY,
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            GOAWAY,
            FRAME_SIZE_ERROR,
        ),
        (
            "PING of 7 bytes",
            frame(PING, 0, 0, &[0; 7]),
            GOAWAY,
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS ACK with a payload",
            frame(SETTINGS, 1, 0, &[0, 3, 0, 0, 0, 100]),
            GOAWAY,
            FRAME_SIZE_ERROR,
        ),
        (
            "INITIAL_WINDOW_SIZE 2^31",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            GOAWAY,
            FLOW_CONTROL_ERROR,
        ),
        (
            "HPACK index 190",
            frame(HEADERS, 0x5, 1, &[0xff, 0x3f]),
            GOAWAY,
            COMPRESSION_ERROR,
        ),
        (
            "DATA on a half-closed (remote) stream",
            [
                frame(
                    HEADERS,
                    0x5,
                    1,
                    &get(Some("localhost"), "/?delay_ms=500", &[]),
                ),
                frame(DATA, 0x1, 1, b"x"),
            ]
            .concat(),
            RST_STREAM,
            STREAM_CLOSED,
        ),
    ];
    for (what, bytes, kind, code) in probes {
        let mut h2 = H2::open(&g);
        h2.until(WAIT, |f| f.kind == SETTINGS && f.flags & 1 == 0);
        h2.send(&bytes);
        let frames = h2.until(WAIT, |f| f.kind == GOAWAY || f.kind == RST_STREAM);
        let end = frames
            .iter()
            .find(|f| f.kind == GOAWAY || f.kind == RST_STREAM)
            .unwrap_or_else(|| panic!("{what}: no GOAWAY/RST_STREAM: {frames:?}"));
        let got = (end.kind, end.error_code().unwrap_or(u32::MAX));
        assert!(
            got == (kind, code) || got == (GOAWAY, PROTOCOL_ERROR),
            "{what}: {got:?}"
        );
        eprintln!("{what}: {got:?} (RFC 9113: {:?})", (kind, code));
    }
    let mut h2 = H2::open(&g);
    h2.send(&frame(HEADERS, 0x5, 1, &get(Some("localhost"), "/", &[])));
    assert_eq!(answer(&mut h2).0, Some(200), "{}", g.server.log_text());
}

#[test]
fn client_header_timeout_closes_a_slow_head() {
    let g = gate("client_header_timeout 1s; keepalive_timeout 30s;");
    // A head that never ends, and one trickled a byte every 200 ms.
    let mut slow = g.connect(b"http/1.1");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .expect("write");
    slow.flush().expect("flush");
    let mut trickle = g.connect(b"http/1.1");
    let t0 = Instant::now();
    let mut closed = None;
    for b in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle
            .write_all(&[*b])
            .and_then(|()| trickle.flush())
            .is_err()
        {
            closed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = crate::support::raw::read_response(&mut slow);
    let waited = t0.elapsed();
    assert_eq!(r.status, 0, "closed without a response, as nginx: {r:?}");
    assert!(
        waited < Duration::from_secs(4),
        "slow head closed after {waited:?}"
    );
    let r = crate::support::raw::read_response(&mut trickle);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(4)),
        "trickled head closed: {closed:?}"
    );
    // An idle keep-alive connection is not cut by client_header_timeout.
    let mut idle = g.connect(b"http/1.1");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    idle.flush().expect("flush");
    assert_eq!(crate::support::raw::read_response(&mut idle).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    idle.flush().expect("flush");
    assert_eq!(
        crate::support::raw::read_response(&mut idle).status,
        200,
        "keep-alive outlives client_header_timeout"
    );
}
