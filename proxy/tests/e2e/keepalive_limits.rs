//! `keepalive_requests` and `keepalive_time`: a client connection serves so many
//! requests, for so long, then the answer to its last request closes it, as nginx
//! does (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY with the open streams answered).

use std::io::Write;
use std::time::Duration;

use crate::support::raw::{
    GOAWAY, Gate, H2, HEADERS, PING, Tls, frame, get, read_response, upstream_in_range,
};

const WAIT: Duration = Duration::from_secs(5);

fn send(s: &mut Tls, request: &[u8]) {
    s.write_all(request).expect("write");
    s.flush().expect("flush");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Whether the head has `Connection: close`.
fn says_close(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
    })
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
        let _ = s.write_all(GET);
        let _ = s.flush();
        let r = read_response(&mut s);
        assert_eq!(r.status, 0, "after the last request: {r:?}");
    }
    // Pipelined past the limit: the third is answered with close, the fourth never.
    let mut s = g.connect(b"http/1.1");
    send(&mut s, &GET.repeat(4));
    let answers: Vec<_> = (0..4).map(|_| read_response(&mut s)).collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 0], "{answers:?}");
    assert!(says_close(&answers[2].head), "{}", answers[2].head);
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
    let _ = s.write_all(GET);
    let _ = s.flush();
    assert_eq!(read_response(&mut s).status, 0);
}

#[test]
fn http2_gets_goaway_after_the_nth_stream_and_its_answers() {
    let g = Gate::start(&[upstream_in_range("A")], "keepalive_requests 2;");
    let mut h2 = H2::open(&g);
    // Two streams at once: both are answered, then GOAWAY names the last one.
    h2.send(&frame(HEADERS, 0x5, 1, &get(Some("localhost"), "/", &[])));
    h2.send(&frame(HEADERS, 0x5, 3, &get(Some("localhost"), "/", &[])));
    // hyper's graceful GOAWAY: one naming the highest stream, a PING, and once that
    // is acknowledged one naming the last stream it took.
    let mut frames = Vec::new();
    while let Some(f) = h2.next(WAIT) {
        if f.kind == PING && f.flags & 1 == 0 {
            h2.send(&frame(PING, 1, 0, &f.payload));
        }
        let done = f.kind == GOAWAY && f.last_stream() == Some(3);
        frames.push(f);
        if done {
            break;
        }
    }
    for stream in [1, 3] {
        let status = frames
            .iter()
            .filter(|f| f.stream == stream)
            .find_map(|f| f.status());
        assert_eq!(status, Some(200), "stream {stream}: {frames:?}");
    }
    let goaway = frames.iter().rev().find(|f| f.kind == GOAWAY);
    assert_eq!(
        goaway.map(|f| (f.last_stream(), f.error_code())),
        Some((Some(3), Some(0))),
        "a graceful GOAWAY (NO_ERROR) naming stream 3: {frames:?}\n{}",
        g.server.log_text()
    );
    // A stream opened after it is not served; the connection ends.
    h2.send(&frame(HEADERS, 0x5, 5, &get(Some("localhost"), "/", &[])));
    let rest = h2.until(WAIT, |_| false);
    assert!(
        !rest.iter().any(|f| f.stream == 5 && f.status().is_some()),
        "{rest:?}"
    );
}
