//! Connections that idle between requests (issue 11, item 5): hsmgate's hyper, h2 and
//! rustls give their buffers back while a connection waits (third_party/*/PATCHES.md)
//! and make them again for the next request. These tests idle between requests whose
//! heads and bodies need those buffers whole (a large header, a body larger than every
//! buffer, HPACK dynamic-table entries referenced after the buffer they were read from
//! was released) and check every byte of what the upstream saw. The memory itself is
//! measured by `benches/compare/idle-memory.sh`, not asserted here.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::client::{client_config, connect};
use crate::support::{KeyType, start_echo_proxy};

/// Long enough for the connection to be seen idle (its reads pending) on a busy machine.
const IDLE: Duration = Duration::from_millis(150);

/// A request body of `len` bytes that differs from round to round.
fn body(round: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i + round) % 26) as u8).collect()
}

/// Checks that the echo upstream saw `header` (name: value) and the exact `sent` body.
fn check_echo(echo: &[u8], header: (&str, &str), sent: &[u8], what: &str) {
    let text = String::from_utf8_lossy(echo);
    let line = format!("{}: {}", header.0, header.1);
    assert!(
        text.to_ascii_lowercase()
            .contains(&line.to_ascii_lowercase()),
        "{what}: header {} not echoed whole",
        header.0
    );
    assert!(
        sent.is_empty() || echo.windows(sent.len()).any(|w| w == sent),
        "{what}: the {} body bytes were not echoed whole",
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_keepalive_connection_idles_between_large_requests() {
    let (token, proxy) = start_echo_proxy(KeyType::Rsa2048);

    let tls = connect(proxy.addr, client_config(&token.ca_pem, &[b"http/1.1"]))
        .await
        .expect("handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);

    // Sizes around and well past the buffers' sizes (4, 8 and 16 KiB), and empty.
    for (round, len) in [0, 100, 8192, 70_000, 0, 300_000, 17]
        .into_iter()
        .enumerate()
    {
        let big = "v".repeat(6000 + round);
        let sent = body(round, len);
        let req = http::Request::post(format!("/idle/{round}"))
            .header("host", "localhost")
            .header("x-big", &big)
            .body(Full::new(Bytes::from(sent.clone())))
            .expect("request");
        sender.ready().await.expect("connection still open");
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("response within 10 s")
            .expect("response");
        assert_eq!(resp.status(), 200, "round {round}");
        let echo = resp.into_body().collect().await.expect("body").to_bytes();
        check_echo(&echo, ("x-big", &big), &sent, &format!("round {round}"));
        tokio::time::sleep(IDLE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_idles_between_streams_and_keeps_its_header_table() {
    let (token, proxy) = start_echo_proxy(KeyType::Rsa2048);

    let tls = connect(proxy.addr, client_config(&token.ca_pem, &[b"h2"]))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("http2");
    tokio::spawn(conn);

    // The same header values on every round: h2's client indexes them in the first
    // request and refers to the server's dynamic table from then on, after the read
    // buffer they were first decoded from has been given back.
    let fixed = ("x-kept", "a value the HPACK table keeps between requests");
    for round in 0..6 {
        // Several streams at once, then idle.
        let mut streams = Vec::new();
        for stream in 0..4 {
            let len = [0, 5000, 40_000, 150_000][stream] + round;
            let sent = body(round * 4 + stream, len);
            let req = http::Request::post(format!("https://localhost/idle/{round}/{stream}"))
                .header(fixed.0, fixed.1)
                .header("x-round", round.to_string())
                .body(Full::new(Bytes::from(sent.clone())))
                .expect("request");
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                sender.ready().await.expect("connection still open");
                let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
                    .await
                    .expect("response within 10 s")
                    .expect("response");
                let status = resp.status();
                let echo = resp.into_body().collect().await.expect("body").to_bytes();
                (status, echo, sent)
            }));
        }
        for (stream, task) in streams.into_iter().enumerate() {
            let (status, echo, sent) = task.await.expect("stream task");
            let what = format!("round {round} stream {stream}");
            assert_eq!(status, 200, "{what}");
            check_echo(&echo, fixed, &sent, &what);
            check_echo(&echo, ("x-round", &round.to_string()), &sent, &what);
            let path = format!("POST /idle/{round}/{stream} HTTP/1.1");
            assert!(
                String::from_utf8_lossy(&echo).contains(&path),
                "{what}: request line"
            );
        }
        tokio::time::sleep(IDLE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_http11_requests_are_answered_in_order_across_an_idle_gap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (token, proxy) = start_echo_proxy(KeyType::Rsa2048);
    let mut tls = connect(proxy.addr, client_config(&token.ca_pem, &[b"http/1.1"]))
        .await
        .expect("handshake");

    // Two requests in one write (the second, with a body, waits in the read buffer while
    // the first is served), then an idle gap, then two more in one write, the last
    // closing the connection.
    let body = body(7, 20_000);
    let mut first = b"GET /p1 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    first.extend_from_slice(
        format!(
            "POST /p2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    first.extend_from_slice(&body);
    tls.write_all(&first).await.expect("write");
    tokio::time::sleep(IDLE).await;
    tls.write_all(
        b"GET /p3 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p4 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .expect("all four answered and the connection closed within 10 s")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        4,
        "four responses: {}",
        &text[..text.len().min(2000)]
    );
    let at = |line: &str| {
        text.find(line)
            .unwrap_or_else(|| panic!("{line} not answered"))
    };
    let order = [
        at("GET /p1 HTTP/1.1"),
        at("POST /p2 HTTP/1.1"),
        at("GET /p3 HTTP/1.1"),
        at("GET /p4 HTTP/1.1"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "answered in order");
    assert!(
        answer.windows(body.len()).any(|w| w == body.as_slice()),
        "the pipelined body was forwarded whole"
    );
}
