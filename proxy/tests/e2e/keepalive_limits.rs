//! `keepalive_requests` and `keepalive_time`: a client connection serves so many
//! requests, for so long, then the answer to its last request closes it, as nginx
//! does (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY with the open streams answered).
//! A reload finishes the old configuration's connections the same way.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::raw::{
    Frame, GOAWAY, Gate, H2, HEADERS, PING, Tls, frame, get, read_response, tls, upstream_in_range,
};

const WAIT: Duration = Duration::from_secs(5);

fn send(s: &mut Tls, request: &[u8]) {
    s.write_all(request).expect("write");
    s.flush().expect("flush");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The server has closed `s`: a further request gets no answer.
fn assert_closed(s: &mut Tls) {
    let _ = s.write_all(GET);
    let _ = s.flush();
    let r = read_response(s);
    assert_eq!(
        r.status, 0,
        "answered after the connection's last answer: {r:?}"
    );
}

/// Whether the head has `Connection: close`.
fn says_close(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
    })
}

/// Frames up to the GOAWAY naming `last`: hyper's graceful GOAWAY is one naming the
/// highest stream, a PING, and once that is acknowledged one naming the last stream
/// it took.
fn until_goaway(h2: &mut H2, last: u32) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = h2.next(WAIT) {
        if f.kind == PING && f.flags & 1 == 0 {
            h2.send(&frame(PING, 1, 0, &f.payload));
        }
        let done = f.kind == GOAWAY && f.last_stream() == Some(last);
        frames.push(f);
        if done {
            break;
        }
    }
    frames
}

#[test]
fn http11_the_nth_answer_says_close_and_the_connection_ends() {
    let g = Gate::start(&[upstream_in_range("A")], "keepalive_requests 3;");
    for _round in 0..2 {
        let mut s = g.connect(b"http/1.1");
        for n in 1..=3 {
            send(&mut s, GET);
            let r = read_response(&mut s);
            assert_eq!(r.status, 200, "request {n}: {r:?}\n{}", g.server.log_text());
            assert_eq!(says_close(&r.head), n == 3, "request {n}: {}", r.head);
        }
        // The server closed after the third answer: a fourth gets nothing.
        assert_closed(&mut s);
    }
    // Pipelined past the limit: the third is answered with close, the fourth never.
    let mut s = g.connect(b"http/1.1");
    send(&mut s, &GET.repeat(4));
    // Everything up to the close, split into answers (`read_response` reads one answer
    // per call and drops what a read brought beyond it, so pipelined answers arriving
    // in one read would be lost to it).
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let all = String::from_utf8_lossy(&all);
    let heads: Vec<&str> = all
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|answer| answer.split_once("\r\n\r\n").map(|(head, _)| head))
        .collect();
    let statuses: Vec<&str> = heads.iter().map(|h| &h[..3]).collect();
    assert_eq!(statuses, ["200", "200", "200"], "{all}");
    let closes: Vec<bool> = heads.iter().map(|h| says_close(h)).collect();
    assert_eq!(closes, [false, false, true], "{all}");
}

#[test]
fn http11_the_first_answer_after_keepalive_time_says_close() {
    let g = Gate::start(
        &[upstream_in_range("A")],
        "keepalive_time 1s; keepalive_timeout 30s;",
    );
    let mut s = g.connect(b"http/1.1");
    send(&mut s, GET);
    let r = read_response(&mut s);
    assert_eq!((r.status, says_close(&r.head)), (200, false), "{r:?}");
    std::thread::sleep(Duration::from_millis(1300));
    send(&mut s, GET);
    let r = read_response(&mut s);
    assert_eq!((r.status, says_close(&r.head)), (200, true), "{r:?}");
    assert_closed(&mut s);
}

#[test]
fn http2_gets_goaway_after_the_nth_stream_and_its_answers() {
    let g = Gate::start(&[upstream_in_range("A")], "keepalive_requests 2;");
    let mut h2 = H2::open(&g);
    // Two streams at once: both are answered, then GOAWAY names the last one.
    h2.send(&frame(HEADERS, 0x5, 1, &get(Some("localhost"), "/", &[])));
    h2.send(&frame(HEADERS, 0x5, 3, &get(Some("localhost"), "/", &[])));
    let mut frames = until_goaway(&mut h2, 3);
    let goaway = frames.last().map(|f| (f.last_stream(), f.error_code()));
    assert_eq!(
        goaway,
        Some((Some(3), Some(0))),
        "a graceful GOAWAY (NO_ERROR) naming stream 3: {frames:?}\n{}",
        g.server.log_text()
    );
    // A stream opened after it is not served; the two before it are answered (one may
    // still be on its way after the GOAWAY), then the connection ends.
    h2.send(&frame(HEADERS, 0x5, 5, &get(Some("localhost"), "/", &[])));
    frames.extend(h2.until(WAIT, |_| false));
    let status = |stream: u32| {
        frames
            .iter()
            .filter(|f| f.stream == stream)
            .find_map(|f| f.status())
    };
    assert_eq!(
        [status(1), status(3), status(5)],
        [Some(200), Some(200), None],
        "{frames:?}"
    );
}

#[test]
fn a_reload_finishes_the_old_configurations_connections() {
    use crate::support::{KeyType, ProxyProcess, TestToken, config_for, start_upstream};
    let token = TestToken::new(KeyType::EcP256);
    let (one, two) = (start_upstream("one"), start_upstream("two"));
    let proxy = ProxyProcess::start(token.path(), &config_for(&token, one, "")).expect("start");
    let connect = |alpn: &[u8]| tls(proxy.addr, &token.ca_pem, alpn);
    let (mut idle, mut busy) = (connect(b"http/1.1"), connect(b"http/1.1"));
    for s in [&mut idle, &mut busy] {
        send(s, GET);
        let r = read_response(s);
        assert_eq!(r.status, 200, "{r:?}\n{}", proxy.log_text());
        assert!(
            r.body.starts_with("hello from one") && !says_close(&r.head),
            "{r:?}"
        );
    }
    let mut h2 = H2::over(connect(b"h2"));
    h2.send(&frame(HEADERS, 0x5, 1, &get(Some("localhost"), "/", &[])));
    let answered = h2.until(WAIT, |f| f.kind == HEADERS && f.stream == 1);
    assert_eq!(
        answered.last().and_then(Frame::status),
        Some(200),
        "{answered:?}"
    );
    send(
        &mut busy,
        b"GET /slow?delay_ms=1500 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    std::thread::sleep(Duration::from_millis(300));

    std::fs::write(
        token.path().join("hsmgate.toml"),
        config_for(&token, two, ""),
    )
    .expect("rewrite");
    proxy.reload();

    let r = read_response(&mut busy);
    assert_eq!(r.status, 200, "the request in flight is answered: {r:?}");
    assert!(
        r.body.starts_with("hello from one") && says_close(&r.head),
        "by the old configuration, and the connection's last: {r:?}"
    );
    assert_closed(&mut busy);
    // The idle connection's next request, begun after the reload: the new
    // configuration's upstream, and the connection's last.
    send(&mut idle, GET);
    let r = read_response(&mut idle);
    assert_eq!((r.status, says_close(&r.head)), (200, true), "{r:?}");
    assert!(r.body.starts_with("hello from two"), "{r:?}");
    assert_closed(&mut idle);
    let frames = until_goaway(&mut h2, 1);
    assert_eq!(
        frames.last().map(|f| (f.kind, f.error_code())),
        Some((GOAWAY, Some(0))),
        "{frames:?}"
    );
    let mut fresh = connect(b"http/1.1");
    send(&mut fresh, GET);
    let r = read_response(&mut fresh);
    assert!(r.body.starts_with("hello from two"), "{r:?}");
}

/// `keepalive_timeout` over HTTP/1.1 on TLS: an idle connection is closed after it with
/// `close_notify` first (RFC 8446 §6.1; as nginx), not a bare TCP close that clients
/// report as a truncation; a slow answer longer than the timeout is not cut.
#[test]
fn http11_keepalive_timeout_closes_with_close_notify_and_spares_slow_answers() {
    let g = Gate::start(&[upstream_in_range("A")], "keepalive_timeout 1s;");
    let mut s = g.connect(b"http/1.1");
    send(&mut s, GET);
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // rustls' StreamOwned reads Ok(0) only after the peer's close_notify; a TCP close
    // without it is an UnexpectedEof error.
    let end = s.read(&mut buf);
    assert!(
        matches!(end, Ok(0)),
        "closed without close_notify: {end:?}\n{}",
        g.server.log_text()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // An answer that takes longer than keepalive_timeout is waited for.
    let mut s = g.connect(b"http/1.1");
    send(
        &mut s,
        b"GET /?delay_ms=1800 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
}

/// A client that never acknowledges the GOAWAY's PING (h2 sends the final GOAWAY only
/// after that acknowledgement) is closed anyway: idle HTTP/2 connections past
/// `keepalive_timeout` end within the finishing grace (2 s), and so do those a client
/// keeps opening streams on after being told to go away (`keepalive_requests`); before,
/// such a client held its connection (and a connection slot) for good.
#[test]
fn http2_clients_that_ignore_the_goaway_ping_are_closed() {
    let g = Gate::start(
        &[upstream_in_range("A")],
        "keepalive_timeout 1s; keepalive_requests 3;",
    );
    // Idle: preface and SETTINGS only, no request, PINGs never acknowledged.
    let started = std::time::Instant::now();
    let mut idle = H2::open(&g);
    let frames = idle.until(Duration::from_secs(15), |_| false);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "still open after {took:?}: {frames:?}\n{}",
        g.server.log_text()
    );
    assert!(frames.iter().any(|f| f.kind == GOAWAY), "{frames:?}");
    let mut rest = [0u8; 64];
    assert!(
        matches!(idle.s.read(&mut rest), Ok(0) | Err(_)),
        "the connection was not closed"
    );
    // Past keepalive_requests, streams opened after the GOAWAY: served for the grace and
    // at most a window of streams more, then the connection closes.
    let mut busy = H2::open(&g);
    // The connection's window opened wide (the answers' bytes would shut it).
    busy.send(&frame(8, 0, 0, &0x7fff_0000u32.to_be_bytes()));
    let started = std::time::Instant::now();
    let mut id = 1;
    let mut served = 0;
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(15) {
        busy.send(&frame(HEADERS, 0x5, id, &get(Some("localhost"), "/", &[])));
        id += 2;
        let frames = busy.until(Duration::from_millis(500), |f| f.status().is_some());
        served += frames.iter().filter(|f| f.status().is_some()).count();
        if frames.is_empty() && matches!(busy.s.read(&mut rest), Ok(0) | Err(_)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "still serving after 15 s ({served} answers)\n{}",
        g.server.log_text()
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "closed after {took:?} ({served} answers)"
    );
}
