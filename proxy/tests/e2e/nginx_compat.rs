//! Differences from nginx found by the audit, each checked on the wire against what
//! Debian's nginx 1.22 does with the same directives: the path `proxy_pass` with a URI
//! part sends (the normalised `$uri`, escaped again), the upstream headers nginx hides
//! (`Server`, `Date`, `X-Pad`, `X-Accel-*`; `proxy_hide_header`, `proxy_pass_header`),
//! `TRACE` and `CONNECT` answered 405 without contacting the upstream, `$server_name` of
//! wildcard and regex servers, and the variables of `log_format`s and headers.
//!
//! hsmgate runs on [`Gate`] (a SoftHSM key, TLS server `localhost`), with a plain-HTTP
//! server added through the `http` block; the upstream is written by hand here so the
//! exact request target it receives, and the headers it answers with, are known.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::raw::{Gate, H1Response, port_in_range, read_response, upstream_in_range};

/// Response headers the hand-written upstream sends besides `Content-Length`.
const UPSTREAM_HEADERS: &str = "Server: upstream-srv/1.0\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n\
    X-Pad: avoid browser bug\r\nX-Accel-Redirect: /internal\r\nX-Accel-Buffering: no\r\n\
    X-Accel-Expires: 10\r\nX-Secret: s\r\nX-Kept: k\r\n";

/// The length of the hand-written upstream's answer to a path with `/big`.
const BIG: usize = 32 << 20;

/// The `Set-Cookie`s the hand-written upstream sends for a path with `/ck`.
const UPSTREAM_COOKIES: &str = "Set-Cookie: sid=1; Path=/app/x; Domain=backend.local; HttpOnly\r\n\
    Set-Cookie: u=3; Path=/APP/y\r\n\
    Set-Cookie: v=4; domain=.BACKEND.LOCAL; path=/user/ann/p\r\n\
    Set-Cookie: path=/app/; w=5\r\n";

/// An HTTP/1.1 upstream written by hand: it records each request head and answers
/// `200 ok` (`418` for a path with `/s418`) with [`UPSTREAM_HEADERS`], one request per
/// connection.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = loop {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port_in_range())) {
                break l;
            }
        };
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                log.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&head).into_owned());
                // A path with `/s418` gets a 418 (for `proxy_intercept_errors`).
                let status = match head.windows(5).any(|w| w == b"/s418") {
                    true => "418 I'm a teapot",
                    false => "200 OK",
                };
                // A path with `/verify` answers as an auth service (for `auth_request`):
                // by the request's `X-Auth`.
                if head.windows(7).any(|w| w == b"/verify") {
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let (status, extra) = match () {
                        _ if text.contains("x-auth: ok") => ("200 OK", "X-User: alice\r\n"),
                        _ if text.contains("x-auth: deny") => ("403 Forbidden", ""),
                        _ if text.contains("x-auth: weird") => ("418 I'm a teapot", ""),
                        _ => (
                            "401 Unauthorized",
                            "WWW-Authenticate: Bearer realm=\"x\"\r\n",
                        ),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: 4\r\nConnection: close\r\n\r\nauth"
                    );
                    let _ = stream.write_all(answer.as_bytes());
                    continue;
                }
                // A path with `/big` gets 32 MiB (for `send_timeout`).
                if head.windows(4).any(|w| w == b"/big") {
                    let len = BIG;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let chunk = [b'x'; 1 << 16];
                    let _ = stream.write_all(head.as_bytes());
                    for _ in 0..len / chunk.len() {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    continue;
                }
                // A path with `/slow` is answered after a second (for `limit_conn`).
                if head.windows(5).any(|w| w == b"/slow") {
                    std::thread::sleep(Duration::from_secs(1));
                }
                // A path with `/ck` gets cookies (for `proxy_cookie_path|domain`).
                let cookies = match head.windows(3).any(|w| w == b"/ck") {
                    true => UPSTREAM_COOKIES,
                    false => "",
                };
                // An `X-Loc` request header comes back as `Location` and `Refresh` (for
                // `proxy_redirect`).
                let text = String::from_utf8_lossy(&head).into_owned();
                let loc = (text.lines())
                    .find_map(|l| {
                        l.get(..6)
                            .filter(|n| n.eq_ignore_ascii_case("x-loc:"))
                            .map(|_| l[6..].trim())
                    })
                    .map(|v| format!("Location: {v}\r\nRefresh: 3; url={v}\r\n"))
                    .unwrap_or_default();
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{UPSTREAM_HEADERS}{cookies}{loc}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        RawUpstream { addr, seen }
    }

    /// The request line of the last request.
    fn last_request_line(&self) -> String {
        let seen = self.seen.lock().expect("lock");
        let head = seen.last().cloned().unwrap_or_default();
        head.lines().next().unwrap_or_default().to_owned()
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// Send `request` (raw HTTP/1.1) to plain-HTTP `port`; the response.
fn plain(port: u16, request: &str) -> H1Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    read_response(&mut s)
}

fn get(port: u16, host: &str, target: &str) -> H1Response {
    plain(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// A GET of `target` for `compat.test` with `extra` header lines.
fn get_with(port: u16, target: &str, extra: &str) -> H1Response {
    plain(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: compat.test\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// The value of `name` in a response head (first one), if any.
fn header<'a>(r: &'a H1Response, name: &str) -> Option<&'a str> {
    r.head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// hsmgate with a plain-HTTP server `compat.test` on its own port whose locations
/// `proxy_pass` to `raw`; `server_extra` goes into that server block.
fn start(raw: &RawUpstream, server_extra: &str) -> (Gate, u16) {
    start_with(raw, "", server_extra)
}

/// [`start`] with `http_extra` in the `http` block before the servers.
fn start_with(raw: &RawUpstream, http_extra: &str, server_extra: &str) -> (Gate, u16) {
    let http = port_in_range();
    let up = raw.addr;
    let extra = format!(
        "{http_extra}
        server {{ listen 127.0.0.1:{http}; server_name compat.test;
            location /pfx/ {{ proxy_pass http://{up}/new/; }}
            location = /exact {{ proxy_pass http://{up}/e; }}
            location /raw/ {{ proxy_pass http://{up}; }}
            proxy_hide_header X-Kept;
            location /hp/ {{ proxy_pass_header Server; proxy_hide_header X-Secret;
                proxy_pass http://{up}; }}
            {server_extra}
        }}
        server {{ listen 127.0.0.1:{http}; server_name *.wild.test other.test;
            return 200 'sn=$server_name'; }}
        server {{ listen 127.0.0.1:{http}; server_name .dot.test; return 200 'sn=$server_name'; }}
        server {{ listen 127.0.0.1:{http}; server_name ~^re\\d+\\.test$;
            return 200 'sn=$server_name'; }}"
    );
    let echo = upstream_in_range("A");
    let gate = Gate::start(&[echo], &extra);
    (gate, http)
}

#[test]
fn proxy_pass_with_a_uri_part_rewrites_the_normalised_uri() {
    let raw = RawUpstream::start();
    let (gate, http) = start(&raw, "");
    // What Debian's nginx 1.22 sends for each (the audit's measurements).
    for (target, want) in [
        ("/pfx/a", "/new/a"),
        ("//pfx/a", "/new/a"),
        ("/pfx//a", "/new/a"),
        ("/pfx/a%2Fb", "/new/a/b"),
        ("/pfx/%7e%41", "/new/~A"),
        ("/pfx/./b/../c%20d?x=%20y&z", "/new/c%20d?x=%20y&z"),
        ("/pfx/%C3%A9", "/new/%C3%A9"),
        ("/exact", "/e"),
        // Without a URI part: the request URI as received.
        ("/raw//a%2Fb?q", "/raw//a%2Fb?q"),
    ] {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, 200, "{target}: {r:?}\n{}", gate.server.log_text());
        assert_eq!(
            raw.last_request_line(),
            format!("GET {want} HTTP/1.1"),
            "{target}"
        );
    }
}

#[test]
fn upstream_server_date_and_accel_headers_are_hidden_like_nginx() {
    let raw = RawUpstream::start();
    // A location whose answers read the upstream's headers as they came.
    let seen = format!(
        "location /seen/ {{ add_header X-Up-Server $upstream_http_server always;
            add_header X-Up-Pad $upstream_http_x_pad always; proxy_pass http://{}; }}",
        raw.addr
    );
    let (gate, http) = start(&raw, &seen);
    // nginx's defaults, and the server's `proxy_hide_header X-Kept` inherited.
    let r = get(http, "compat.test", "/raw/x");
    assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(header(&r, "server"), Some("hsmgate"), "{r:?}");
    let date = header(&r, "date").expect("a Date");
    assert_ne!(
        date, "Mon, 01 Jan 2001 00:00:00 GMT",
        "the upstream's Date: {r:?}"
    );
    for hidden in [
        "x-pad",
        "x-accel-redirect",
        "x-accel-buffering",
        "x-accel-expires",
        "x-kept",
    ] {
        assert_eq!(header(&r, hidden), None, "{hidden}: {r:?}");
    }
    assert_eq!(header(&r, "x-secret"), Some("s"), "{r:?}");
    assert_eq!(
        r.head.matches("\nserver:").count() + r.head.matches("\nServer:").count(),
        1
    );
    // `proxy_pass_header Server; proxy_hide_header X-Secret;`: the location's own lists
    // (the server's X-Kept is not inherited).
    let r = get(http, "compat.test", "/hp/x");
    assert_eq!(header(&r, "server"), Some("upstream-srv/1.0"), "{r:?}");
    assert_eq!(header(&r, "x-secret"), None, "{r:?}");
    assert_eq!(header(&r, "x-kept"), Some("k"), "{r:?}");
    assert_eq!(header(&r, "x-pad"), None, "{r:?}");
    assert_ne!(header(&r, "date"), Some("Mon, 01 Jan 2001 00:00:00 GMT"));
    // Hidden from the client, still there for `$upstream_http_…`.
    let r = get(http, "compat.test", "/seen/x");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header(&r, "server"), Some("hsmgate"), "{r:?}");
    assert_eq!(header(&r, "x-pad"), None, "{r:?}");
    assert_eq!(header(&r, "x-up-server"), Some("upstream-srv/1.0"), "{r:?}");
    assert_eq!(header(&r, "x-up-pad"), Some("avoid browser bug"), "{r:?}");
    // hsmgate's own answers, over TLS too.
    let r = get(http, "compat.test", "/nowhere");
    assert_eq!((r.status, header(&r, "server")), (404, Some("hsmgate")));
    let r = gate.h1(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.status, header(&r, "server")),
        (200, Some("hsmgate")),
        "{r:?}"
    );
}

#[test]
fn trace_and_connect_are_405_without_the_upstream() {
    let raw = RawUpstream::start();
    let (gate, http) = start(&raw, "");
    let before = raw.count();
    let r = plain(
        http,
        "TRACE /raw/x HTTP/1.1\r\nHost: compat.test\r\nX-Secret: cookie\r\n\r\n",
    );
    assert_eq!(r.status, 405, "{r:?}\n{}", gate.server.log_text());
    assert!(r.body.contains("405 Not Allowed"), "{r:?}");
    assert!(!r.body.contains("X-Secret"), "{r:?}");
    // CONNECT as Debian's nginx 1.22 answers it: 405 in origin form; 400 in authority
    // form, CONNECT's usual one (its request-line parser refuses that form).
    let r = plain(http, "CONNECT / HTTP/1.1\r\nHost: compat.test\r\n\r\n");
    assert_eq!(r.status, 405, "{r:?}");
    let r = plain(
        http,
        "CONNECT compat.test:80 HTTP/1.1\r\nHost: compat.test:80\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");
    // Over TLS too, and HTTP/2.
    let r = gate.h1(b"TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 405, "{r:?}");
    let port = gate.addr.port();
    let out = crate::support::curl(&[
        "--http2",
        "-X",
        "TRACE",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        "--cacert",
        gate.ca().to_str().expect("utf-8"),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 405", "{out:?}");
    assert_eq!(raw.count(), before, "the upstream saw a TRACE or CONNECT");
    // Other methods still pass.
    let r = plain(
        http,
        "OPTIONS /raw/x HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(raw.last_request_line(), "OPTIONS /raw/x HTTP/1.1");
}

/// `hsmgate -t -c conf` with the gate's PKCS#11 module.
fn hsmgate_t(gate: &Gate, conf: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("-t")
        .arg("-c")
        .arg(conf)
        .env("HSMGATE_PKCS11_MODULE", &gate.token.module)
        .output()
        .expect("run hsmgate -t")
}

#[test]
fn a_typo_in_an_upstream_name_fails_t_and_reload() {
    let raw = RawUpstream::start();
    let (gate, http) = start(&raw, "");
    let conf = gate.prefix.join("nginx.conf");
    let good = std::fs::read_to_string(&conf).expect("conf");
    // `nosuchgroup` is no `upstream` block and does not resolve: nginx's `[emerg] host
    // not found in upstream "nosuchgroup" in FILE:LINE`, exit 1.
    let bad = good.replacen(
        "location /raw/ {",
        "location /typo/ { proxy_pass http://nosuchgroup; }\n            location /raw/ {",
        1,
    );
    let line = bad
        .lines()
        .position(|l| l.contains("nosuchgroup"))
        .expect("line")
        + 1;
    std::fs::write(&conf, &bad).expect("conf");
    let out = hsmgate_t(&gate, &conf);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("nginx.conf:{line}:"))
            && stderr.contains("host not found in upstream \"nosuchgroup\""),
        "{stderr}"
    );
    // A reload keeps the old configuration serving.
    gate.server.signal("HUP");
    gate.server
        .wait_log("host not found in upstream", 1, Duration::from_secs(10));
    let r = get(http, "compat.test", "/raw/x");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(http, "compat.test", "/typo/x");
    assert_eq!(r.status, 404, "{r:?}");
    // Names that resolve (`localhost`) are fine.
    let ok = good.replacen(
        "location /raw/ {",
        &format!(
            "location /named/ {{ proxy_pass http://localhost:{}; }}\n            location /raw/ {{",
            raw.addr.port()
        ),
        1,
    );
    std::fs::write(&conf, ok).expect("conf");
    let out = hsmgate_t(&gate, &conf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn server_name_is_the_first_name_as_written_for_wildcards_and_regexes() {
    let raw = RawUpstream::start();
    let (gate, http) = start(&raw, "");
    for (host, want) in [
        ("a.wild.test", "sn=*.wild.test"),
        ("other.test", "sn=*.wild.test"),
        ("dot.test", "sn=dot.test"),
        ("x.dot.test", "sn=dot.test"),
        ("re42.test", "sn=~^re\\d+\\.test$"),
    ] {
        let r = get(http, host, "/");
        assert_eq!(r.status, 200, "{host}: {r:?}\n{}", gate.server.log_text());
        assert_eq!(r.body, want, "{host}");
    }
}

#[test]
fn log_format_and_header_variables_nginx_configurations_use() {
    let raw = RawUpstream::start();
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("vars.log");
    let http_extra =
        "log_format vars '$request_id|$upstream_status|$request_length|$sent_http_x_secret|\
         $sent_http_server|$arg_foo|$cookie_sess|$hostname|$https|$is_args|$server_protocol|\
         $upstream_response_time|$msec|$time_iso8601|$upstream_connect_time|\
         $upstream_header_time|$upstream_response_length|$connection_requests|\
         $request_completion|$document_uri|$content_type|$pid|$http2|$ssl_session_reused';
        add_header X-Tls 'sni=$ssl_server_name https=$https addr=$server_addr' always;";
    let server_extra = format!(
        "access_log {} vars;
        location /vars/ {{ proxy_pass http://{}; proxy_set_header X-Id $request_id;
            add_header X-Id $request_id; }}
        location /dead/ {{ proxy_pass http://127.0.0.1:1; }}",
        log.display(),
        raw.addr
    );
    let (gate, http) = start_with(&raw, http_extra, &server_extra);
    let request = "GET /vars/x?foo=b%20r&foo=2 HTTP/1.1\r\nHost: compat.test\r\n\
                   Cookie: a=1; sess=xyz\r\nContent-Type: text/x-test\r\nConnection: close\r\n\r\n";
    let r = plain(http, request);
    assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
    // $request_id: 32 hex digits, the same in the forwarded header and the response.
    let id = header(&r, "x-id").expect("X-Id").to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let seen = raw
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        seen.to_lowercase().contains(&format!("x-id: {id}")),
        "{seen}"
    );
    let r2 = plain(http, request);
    assert_ne!(
        header(&r2, "x-id"),
        Some(id.as_str()),
        "a new id per request"
    );
    let r = get(http, "compat.test", "/dead/");
    assert_eq!(r.status, 502);
    // TLS variables over TLS (the http block's add_header).
    let r = gate.h1(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(
        header(&r, "x-tls"),
        Some("sni=localhost https=on addr=127.0.0.1"),
        "{r:?}"
    );

    let text = crate::support::poll(
        Duration::from_secs(10),
        || format!("three lines in {}", log.display()),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.lines().count() >= 3).then_some(text)
        },
    );
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let first = &lines[0];
    assert_eq!(first[0], id, "{text}");
    assert_eq!(first[1], "200", "{text}");
    assert_eq!(
        first[2],
        request.len().to_string(),
        "$request_length: {text}"
    );
    // Response headers as sent: the upstream's X-Secret, hsmgate's Server.
    assert_eq!((first[3], first[4]), ("s", "hsmgate"), "{text}");
    assert_eq!((first[5], first[6]), ("b%20r", "xyz"), "{text}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(first[7], hostname.trim(), "{text}");
    assert_eq!(
        (first[8], first[9], first[10]),
        ("-", "?", "HTTP/1.1"),
        "{text}"
    );
    let time: f64 = first[11].parse().expect("$upstream_response_time");
    assert!((0.0..5.0).contains(&time), "{text}");
    let (secs, ms) = first[12].split_once('.').expect("$msec");
    assert!(secs.len() == 10 && ms.len() == 3, "{text}");
    assert!(
        first[13].len() == 25 && first[13].contains('T'),
        "$time_iso8601: {text}"
    );
    let connect: f64 = first[14].parse().expect("$upstream_connect_time");
    assert!((0.0..5.0).contains(&connect) && connect <= time, "{text}");
    assert_eq!(lines[2][1], "502", "{text}");
    assert_eq!(lines[2][14], "-", "{text}");
    // $upstream_header_time: the head came before the whole answer.
    let header_time: f64 = first[15].parse().expect("$upstream_header_time");
    assert!((0.0..=time).contains(&header_time), "{text}");
    // The upstream's body ("ok"), the request's number on its connection, the answer
    // sent whole, $uri, a request header, this server's process.
    assert_eq!(
        (first[16], first[17], first[18]),
        ("2", "1", "OK"),
        "{text}"
    );
    assert_eq!((first[19], first[20]), ("/vars/x", "text/x-test"), "{text}");
    assert_eq!(first[21], gate.server.pid().to_string(), "{text}");
    // Plain HTTP/1.1: no HTTP/2, no TLS session (nginx writes `-` for empty values).
    assert_eq!((first[22], first[23]), ("-", "-"), "{text}");
    // A failed try: no head, no body.
    assert_eq!((lines[2][15], lines[2][16]), ("-", "0"), "{text}");
}

/// `$pipe` and `$connection_requests` on one HTTP/1.1 connection: a request sent alone
/// is `.`, one that came in the same read as the end of the request before it is `p`.
#[test]
fn pipe_tells_pipelined_requests() {
    let raw = RawUpstream::start();
    let (gate, http) = start_with(
        &raw,
        "",
        "location = /pipe { return 200 \"pipe=$pipe n=$connection_requests\\n\"; }",
    );
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let get = "GET /pipe HTTP/1.1\r\nHost: compat.test\r\n\r\n";
    let mut text = String::new();
    let read_until = |s: &mut TcpStream, text: &mut String, want: &str| {
        let mut buf = [0u8; 4096];
        while !text.contains(want) {
            let n = s.read(&mut buf).expect("read");
            assert!(
                n > 0,
                "closed before {want:?}: {text}\n{}",
                gate.server.log_text()
            );
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    s.write_all(get.as_bytes()).expect("write");
    read_until(&mut s, &mut text, "n=1\n");
    // Two requests in one write: the second came with the end of the first.
    let two = format!("{get}GET /pipe HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n");
    s.write_all(two.as_bytes()).expect("write");
    read_until(&mut s, &mut text, "n=3\n");
    let bodies: Vec<&str> = text.lines().filter(|l| l.starts_with("pipe=")).collect();
    assert_eq!(bodies, ["pipe=. n=1", "pipe=. n=2", "pipe=p n=3"], "{text}");
}

/// The TLS session's variables on hsmgate's own connections: `$connection_requests`
/// counts a keep-alive connection's requests, `$ssl_session_reused` is `r` for a resumed
/// handshake (a TLS 1.3 ticket) and `.` for a full one, `$http2` is `h2` for HTTP/2;
/// `$ssl_curve` names the key exchange group as OpenSSL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_variables_count_requests_and_tell_resumptions() {
    use crate::support::client::{KeepAlive, ca_roots};
    let gate = Gate::start(
        &[upstream_in_range("A")],
        "add_header X-Sess \"$ssl_session_reused $connection_requests [$http2] $ssl_protocol \
         $ssl_curve [$ssl_early_data]\" always;",
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(ca_roots(gate.ca()))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(16);
    let config = Arc::new(config);
    let sess = |head: &http::HeaderMap| {
        (head.get("x-sess").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .to_owned()
    };
    let mut first = KeepAlive::open_with(gate.addr, Arc::clone(&config)).await;
    let mut seen = Vec::new();
    for path in ["/a", "/b", "/c"] {
        let (status, head, _) = first.get_with_head(path).await;
        assert_eq!(status, 200, "{}", gate.server.log_text());
        seen.push(sess(&head));
    }
    drop(first);
    let mut second = KeepAlive::open_with(gate.addr, config).await;
    assert_eq!(
        second.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let (status, head, _) = second.get_with_head("/d").await;
    assert_eq!(status, 200);
    seen.push(sess(&head));
    assert_eq!(
        seen,
        [
            ". 1 [] TLSv1.3 X25519 []",
            ". 2 [] TLSv1.3 X25519 []",
            ". 3 [] TLSv1.3 X25519 []",
            "r 1 [] TLSv1.3 X25519 []",
        ]
    );
    // HTTP/2: `h2`.
    let (alpn, status, head, _) =
        crate::support::client::h2_get_with_head(gate.addr, gate.ca(), "/e").await;
    assert_eq!((alpn.as_deref(), status), (Some(&b"h2"[..]), 200));
    assert_eq!(
        sess(&head),
        ". 1 [h2] TLSv1.3 X25519 []",
        "a new client: a full handshake"
    );
}

#[test]
fn v_and_capital_v_print_the_version_like_nginx() {
    let out = crate::support::nginx::hsmgate(&["-v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("hsmgate version: hsmgate/{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(out.stdout.is_empty());
    let out = crate::support::nginx::hsmgate(&["-V"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("hsmgate version: hsmgate/"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("built with rustls ")),
        "{stderr}"
    );
    assert!(lines.iter().any(|l| l.starts_with("target: ")), "{stderr}");
    // `--version` (no nginx flag) stays as it was: `hsmgate VERSION` on stdout.
    let out = crate::support::nginx::hsmgate(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("hsmgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_toml_format_hides_the_same_upstream_headers() {
    use crate::support::hsm::{KeyType, TestToken};
    use crate::support::proxy::{ProxyProcess, config_for};
    let raw = RawUpstream::start();
    let token = TestToken::new(KeyType::EcP256);
    let proxy = ProxyProcess::start(token.path(), &config_for(&token, raw.addr, ""))
        .expect("hsmgate with a TOML configuration");
    let out = crate::support::curl(&[
        "-i",
        "--http1.1",
        "--cacert",
        token.ca_pem.to_str().expect("utf-8"),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", proxy.addr.port()),
        &format!("https://localhost:{}/t", proxy.addr.port()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.starts_with("http/1.1 200"),
        "{text}\n{}",
        proxy.log_text()
    );
    assert!(text.contains("\r\nserver: hsmgate\r\n"), "{text}");
    for hidden in ["upstream-srv", "x-pad:", "x-accel-", "2001 00:00:00"] {
        assert!(!text.contains(hidden), "{hidden}: {text}");
    }
    assert!(text.contains("\r\nx-secret: s\r\n"), "{text}");
}

/// `ss` lines (with `-m`/`-o` details) of hsmgate's sockets on `port` in `state`.
fn ss(state: &str, port: u16) -> String {
    let filter = format!("( sport = :{port} )");
    let out = std::process::Command::new("ss")
        .args(["-tnmo", "state", state, &filter])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn listen_socket_options_reach_the_sockets() {
    // nginx's socket options of `listen` (Linux), on an address of their own: the
    // listening socket's buffers, and TCP keep-alive on the connections it accepts
    // (which inherit them); `deferred` and `fastopen` are set too (read back in
    // sockopt.rs's unit test) and must not keep the address from answering.
    let raw = RawUpstream::start();
    let opts = port_in_range();
    let extra = format!(
        "server {{ listen 127.0.0.1:{opts} deferred so_keepalive=7m:11:4 rcvbuf=64k sndbuf=128k
            fastopen=16; return 200 'opts'; }}"
    );
    let (_gate, _http) = start_with(&raw, &extra, "");
    let listening = ss("listening", opts);
    // Linux doubles what SO_RCVBUF / SO_SNDBUF ask for (its bookkeeping share).
    assert!(
        listening.contains("rb131072") && listening.contains("tb262144"),
        "{listening}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", opts)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: opts.test\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s);
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    // The accepted connection, kept alive and idle: its keep-alive timer runs from 7 min.
    let accepted = ss("established", opts);
    assert!(
        accepted.contains("timer:(keepalive,6min") || accepted.contains("timer:(keepalive,7min"),
        "{accepted}"
    );
    drop(s);
}

#[test]
fn allow_and_deny_answer_403_in_nginx_phase_order() {
    // The client is 127.0.0.1. nginx's order: a server or location `return` (rewrite
    // phase) answers before `allow`/`deny` (access phase); a location with rules of its
    // own inherits none of the server's.
    let raw = RawUpstream::start();
    let (_gate, http) = start(
        &raw,
        "location /denied/ { deny 127.0.0.0/8; proxy_pass http://{UP}; }
         location /allowed/ { allow 127.0.0.1; deny all; proxy_pass http://{UP}; }
         location /others/ { allow 10.0.0.0/8; deny all; proxy_pass http://{UP}; }
         location = /returned { deny all; return 200 'returned'; }
         location /small/ { deny all; client_max_body_size 10; proxy_pass http://{UP}; }"
            .replace("{UP}", &raw.addr.to_string())
            .as_str(),
    );
    let seen = raw.count();
    let denied = get(http, "compat.test", "/denied/x");
    assert!(denied.head.starts_with("HTTP/1.1 403"), "{}", denied.head);
    let others = get(http, "compat.test", "/others/x");
    assert!(others.head.starts_with("HTTP/1.1 403"), "{}", others.head);
    assert_eq!(
        raw.count(),
        seen,
        "a denied request never reaches the upstream"
    );
    let allowed = get(http, "compat.test", "/allowed/x");
    assert!(allowed.head.starts_with("HTTP/1.1 200"), "{}", allowed.head);
    assert_eq!(raw.last_request_line(), "GET /allowed/x HTTP/1.1");
    let returned = get(http, "compat.test", "/returned");
    assert!(
        returned.head.starts_with("HTTP/1.1 200"),
        "{}",
        returned.head
    );
    // A declared body over client_max_body_size is refused before the rules (413).
    let large = plain(
        http,
        "POST /small/x HTTP/1.1\r\nHost: compat.test\r\nContent-Length: 31\r\nConnection: close\r\n\r\n0123456789012345678901234567890",
    );
    assert!(large.head.starts_with("HTTP/1.1 413"), "{}", large.head);
}

/// `$bytes_sent` is what the client received, head and body, and `$body_bytes_sent` the
/// body: for an upstream's response, a `return` with text, an error page, and a response
/// to an HTTP/1.0 request.
#[test]
fn bytes_sent_is_what_the_client_received() {
    let raw = RawUpstream::start();
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("sizes.log");
    let http_extra = "log_format sizes '$request_uri $status $bytes_sent $body_bytes_sent';";
    let server_extra = format!(
        "access_log {} sizes;
        location = /ret {{ return 200 \"hello, bytes\\n\"; }}
        location = /redirect {{ return 302 /elsewhere; }}",
        log.display()
    );
    let (gate, http) = start_with(&raw, http_extra, &server_extra);
    let requests = [
        "GET /raw/x HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
        "GET /ret HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
        "GET /redirect HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
        "GET /no/such/place HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
        "GET /ret HTTP/1.0\r\nHost: compat.test\r\n\r\n",
    ];
    let mut received = Vec::new();
    for request in requests {
        let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).expect("read to the close");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        received.push((bytes.len(), body.len(), head.to_owned()));
    }
    let text = crate::support::poll(
        Duration::from_secs(10),
        || format!("{} lines in {}", requests.len(), log.display()),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.lines().count() >= requests.len()).then_some(text)
        },
    );
    for (line, (total, body, head)) in text.lines().zip(&received) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            (fields[2], fields[3]),
            (total.to_string().as_str(), body.to_string().as_str()),
            "{line}: the client received {total} bytes, {body} of body, after\n{head}\n{}",
            gate.server.log_text()
        );
    }
    assert!(text.contains("/no/such/place 404 "), "{text}");
}

/// `rewrite` in a server and in locations, every case checked against Debian's nginx
/// 1.22 with the same directives (2026-12-02): the request line the upstream gets,
/// `$uri`, `$args`, `$is_args`, `$request_uri` and `$arg_NAME` after the rewrite, the
/// redirects' `Location`, the cycle's 500, and `break` skipping a `return`.
#[test]
fn rewrite_as_nginx_runs_it() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "proxy_set_header X-Uri \"$uri|$args|$is_args|$request_uri|$arg_tag\";
        rewrite ^/old/(.*)$ /raw/moved/$1 last;
        rewrite ^/perm/(.*)$ /new-place/$1 permanent;
        rewrite ^/ext$ https://example.com/landing redirect;
        rewrite ^/sp/(.*)$ /raw/$1 redirect;
        rewrite ^/cont/(.*)$ /raw/c1/$1;
        rewrite ^/raw/c1/(.*)$ /raw/c2/$1;
        location /api/ {{ rewrite ^/api/(.*)$ /$1 break; proxy_pass http://{up}/ignored/; }}
        location /pre/ {{ rewrite ^/pre/(.*)$ /raw/p/$1 last; proxy_pass http://{up}/ignored/; }}
        location /v2/ {{ rewrite ^/v2/(.*)$ /raw/v2/$1?tag=v2 last; }}
        location /loop/ {{ rewrite ^/loop/(.*)$ /loop/$1 last; }}
        location /drop/ {{ rewrite ^ /raw/dropped? break; proxy_pass http://{up}; }}
        location /chain/ {{ rewrite ^/chain/a$ /chain/b; rewrite ^/chain/b$ /raw/chained; }}
        location /topfx/ {{ rewrite ^/topfx/(.*)$ /pfx/$1 last; }}
        location /ret/ {{ rewrite ^/ret/skip$ /raw/skipped break; return 418;
            proxy_pass http://{up}; }}
        location /enc/ {{ rewrite ^/enc/(.*)$ /raw/$1 break; proxy_pass http://{up}; }}"
    );
    let (gate, http) = start(&raw, &extra);
    let x_uri = |raw: &RawUpstream| {
        let seen = raw.seen.lock().expect("lock");
        let head = seen.last().cloned().unwrap_or_default();
        head.lines()
            .find_map(|l| l.strip_prefix("x-uri: ").or(l.strip_prefix("X-Uri: ")))
            .unwrap_or_default()
            .to_owned()
    };
    for (target, line, uri_vars) in [
        (
            "/old/x?a=1",
            "/raw/moved/x?a=1",
            "/raw/moved/x|a=1|?|/old/x?a=1|",
        ),
        ("/cont/x?z", "/raw/c2/x?z", "/raw/c2/x|z|?|/cont/x?z|"),
        ("/api/v1/x?q=2", "/v1/x?q=2", "/v1/x|q=2|?|/api/v1/x?q=2|"),
        ("/pre/y", "/raw/p/y", "/raw/p/y|||/pre/y|"),
        (
            "/v2/z?orig=1",
            "/raw/v2/z?tag=v2&orig=1",
            "/raw/v2/z|tag=v2&orig=1|?|/v2/z?orig=1|v2",
        ),
        ("/v2/z", "/raw/v2/z?tag=v2", "/raw/v2/z|tag=v2|?|/v2/z|v2"),
        ("/drop/x?a=1", "/raw/dropped", "/raw/dropped|||/drop/x?a=1|"),
        (
            "/chain/a?k",
            "/raw/chained?k",
            "/raw/chained|k|?|/chain/a?k|",
        ),
        (
            "/topfx/a%20b?m",
            "/new/a%20b?m",
            "/pfx/a b|m|?|/topfx/a%20b?m|",
        ),
        ("/ret/skip", "/raw/skipped", "/raw/skipped|||/ret/skip|"),
        (
            "/enc/a%20b%C3%A9",
            "/raw/a%20b%C3%A9",
            "/raw/a bé|||/enc/a%20b%C3%A9|",
        ),
    ] {
        let before = raw.count();
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, 200, "{target}: {r:?}\n{}", gate.server.log_text());
        assert_eq!(raw.count(), before + 1, "{target}");
        assert_eq!(
            raw.last_request_line(),
            format!("GET {line} HTTP/1.1"),
            "{target}"
        );
        assert_eq!(x_uri(&raw), uri_vars, "{target}");
    }
    let before = raw.count();
    for (target, status, location) in [
        (
            "/perm/x?a=1",
            301,
            Some(format!("http://compat.test:{http}/new-place/x?a=1")),
        ),
        (
            "/ext?q=1",
            302,
            Some("https://example.com/landing?q=1".to_owned()),
        ),
        ("/ext", 302, Some("https://example.com/landing".to_owned())),
        (
            "/sp/a%20b",
            302,
            Some(format!("http://compat.test:{http}/raw/a%20b")),
        ),
        ("/loop/x", 500, None),
        ("/ret/other", 418, None),
    ] {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, status, "{target}: {r:?}");
        assert_eq!(
            header(&r, "location").map(str::to_owned),
            location,
            "{target}"
        );
    }
    assert_eq!(
        raw.count(),
        before,
        "redirects and refusals reach no upstream"
    );
    assert!(
        gate.server
            .log_text()
            .contains("rewrite or internal redirection cycle"),
        "{}",
        gate.server.log_text()
    );
}

/// `auth_basic` with an `htpasswd` file of `openssl passwd` hashes, each case checked
/// against Debian's nginx 1.22 with the same directives (2026-12-02): 401 with the realm
/// and nginx's page without or with wrong credentials (the upstream not contacted), the
/// request through with `$remote_user` for each kind of hash, `auth_basic off`, a
/// `return` answered before the access phase, `deny` first, a missing file's 403, and the
/// file read at each request (a changed password applies without a reload).
#[test]
fn auth_basic_as_nginx_checks_it() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let passwd = |args: &[&str], password: &str| {
        let out = std::process::Command::new("openssl")
            .arg("passwd")
            .args(args)
            .arg(password)
            .output()
            .expect("openssl passwd");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let write = |ann: &str| {
        let text = format!(
            "ann:{}\nbob:{}:a comment\n# carl:{{PLAIN}}commented\ncarl:{{PLAIN}}pw3\n",
            passwd(&["-apr1"], ann),
            passwd(&["-6"], "pw2"),
        );
        std::fs::write(&file, text).expect("htpasswd");
    };
    write("pw1");
    let extra = format!(
        "location /auth/ {{ auth_basic \"Staff only\"; auth_basic_user_file {file};
            proxy_set_header X-Uri \"$remote_user\"; proxy_pass http://{up};
            location /auth/open/ {{ auth_basic off; proxy_pass http://{up}; }}
            location /auth/ret/ {{ return 200 \"ret $remote_user\"; }}
            location /auth/deny/ {{ deny all; proxy_pass http://{up}; }}
        }}
        location /gone/ {{ auth_basic on; auth_basic_user_file {gone}; proxy_pass http://{up}; }}",
        file = file.display(),
        gone = dir.path().join("nope").display(),
    );
    let (gate, http) = start(&raw, &extra);
    let request = |target: &str, user: Option<&str>| {
        use base64::Engine;
        let auth = user.map_or(String::new(), |u| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(u);
            format!("Authorization: Basic {b64}\r\n")
        });
        plain(
            http,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: compat.test\r\n{auth}Connection: close\r\n\r\n"
            ),
        )
    };
    let x_uri = || {
        let seen = raw.seen.lock().expect("lock");
        let head = seen.last().cloned().unwrap_or_default();
        head.lines()
            .find_map(|l| l.strip_prefix("x-uri: "))
            .unwrap_or_default()
            .to_owned()
    };
    for user in [None, Some("ann:bad"), Some("dave:pw1"), Some("bob:pw1")] {
        let before = raw.count();
        let r = request("/auth/x", user);
        assert_eq!(r.status, 401, "{user:?}: {r:?}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Basic realm=\"Staff only\""),
            "{user:?}"
        );
        assert!(r.body.contains("401 Authorization Required"), "{r:?}");
        assert_eq!(raw.count(), before, "{user:?}: no upstream contacted");
    }
    for (user, name) in [("ann:pw1", "ann"), ("bob:pw2", "bob"), ("carl:pw3", "carl")] {
        let r = request("/auth/x", Some(user));
        assert_eq!(r.status, 200, "{user}: {r:?}\n{}", gate.server.log_text());
        assert_eq!(x_uri(), name, "$remote_user");
    }
    assert_eq!(request("/auth/open/x", None).status, 200);
    let r = request("/auth/ret/x", None);
    assert_eq!((r.status, r.body.as_str()), (200, "ret "), "{r:?}");
    let r = request("/auth/ret/x", Some("ann:whatever"));
    assert_eq!(r.body, "ret ann", "$remote_user is the header's user");
    assert_eq!(request("/auth/deny/x", Some("ann:pw1")).status, 403);
    assert_eq!(request("/auth/deny/x", None).status, 403);
    assert_eq!(request("/gone/x", Some("ann:pw1")).status, 403);
    assert_eq!(request("/gone/x", None).status, 401);
    // A new password applies at once: the file is read at each request.
    write("changed");
    assert_eq!(request("/auth/x", Some("ann:pw1")).status, 401);
    assert_eq!(request("/auth/x", Some("ann:changed")).status, 200);
    let log = gate.server.log_text();
    assert!(log.contains("user \"ann\": password mismatch"), "{log}");
    assert!(log.contains("user \"dave\" was not found in"), "{log}");
    // In nginx's error log format, as fail2ban's stock `nginx-http-auth` filter reads it.
    let fail2ban = regex::Regex::new(
        r#"(?m)^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#\d+: \*\d+ user "(?:[^"]+|.*?)":? (?:password mismatch|was not found in "[^\"]*"), client: (?P<host>\S+), server: \S*, request: "\S+ \S+ HTTP/\d+\.\d+", host: "\S+"(?:, referrer: "\S+")?\s*$"#,
    )
    .expect("regex");
    let hosts: Vec<&str> = (fail2ban.captures_iter(&log))
        .map(|c| c.get(1).map_or("", |m| m.as_str()))
        .collect();
    assert!(
        hosts.len() >= 2 && hosts.iter().all(|h| *h == "127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("open() ") && log.contains("nope"), "{log}");
}

/// A 401's `WWW-Authenticate` survives `error_page`, as in Debian's nginx 1.22 with the
/// same directives (2026-12-02): a custom 401 page still makes a browser ask for
/// credentials. The realm is kept whatever the page answers: a file (the 401 kept, or
/// `=` and `=200`), a named location with an upstream (whose headers come too), a
/// redirect.
#[test]
fn auth_basic_challenge_survives_error_page() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "u:{PLAIN}p\n").expect("htpasswd");
    std::fs::write(dir.path().join("401.html"), "custom 401\n").expect("page");
    let auth = |realm: &str| {
        format!(
            "auth_basic \"{realm}\"; auth_basic_user_file {};",
            file.display()
        )
    };
    let extra = format!(
        "location = /401.html {{ root {root}; }}
        location /a/ {{ {a} error_page 401 /401.html; proxy_pass http://{up}; }}
        location /d/ {{ {d} error_page 401 = /401.html; proxy_pass http://{up}; }}
        location /e/ {{ {e} error_page 401 =200 /401.html; proxy_pass http://{up}; }}
        location /f/ {{ {f} error_page 401 @up; proxy_pass http://{up}; }}
        location @up {{ proxy_pass http://{up}; }}
        location /c/ {{ {c} error_page 401 https://sso.test/login; proxy_pass http://{up}; }}",
        root = dir.path().display(),
        a = auth("Realm A"),
        d = auth("Realm D"),
        e = auth("Realm E"),
        f = auth("Realm F"),
        c = auth("Realm C"),
    );
    let (gate, http) = start(&raw, &extra);
    for (path, status, realm) in [
        ("/a/", 401, "Realm A"),
        ("/d/", 200, "Realm D"),
        ("/e/", 200, "Realm E"),
        ("/f/", 401, "Realm F"),
        ("/c/", 302, "Realm C"),
    ] {
        let r = get(http, "compat.test", path);
        assert_eq!(
            r.status,
            status,
            "{path}: {r:?}\n{}",
            gate.server.log_text()
        );
        let challenges: Vec<&str> = (r.head.lines().skip(1))
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(
            challenges,
            [format!("Basic realm=\"{realm}\"")],
            "{path}: {r:?}"
        );
    }
    assert!(get(http, "compat.test", "/a/").body.contains("custom 401"));
    let r = get(http, "compat.test", "/c/");
    assert_eq!(header(&r, "location"), Some("https://sso.test/login"));
    // With the right credentials the upstream answers, and no challenge is added.
    let r = plain(
        http,
        "GET /a/ HTTP/1.1\r\nHost: compat.test\r\nAuthorization: Basic dTpw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header(&r, "www-authenticate"), None);
}

/// `error_page`, every case checked against Debian's nginx 1.22 with the same directives
/// (2026-12-02): the `/50x.html` pattern (a 502 answered with the file under `root`,
/// status kept), `=` (the page's status), `=200`, a named location (URI and arguments
/// kept), a redirect (302, or `=301`), a `return CODE TEXT` left alone, an upstream's
/// status replaced only with `proxy_intercept_errors on`, one page per request unless
/// `recursive_error_pages on`, the page's own arguments, and a POST sent on as a GET.
#[test]
fn error_page_as_nginx_answers_it() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let html = tempfile::tempdir().expect("tempdir");
    std::fs::write(html.path().join("50x.html"), "<h1>sorry</h1>\n").expect("page");
    let down = port_in_range();
    let extra = format!(
        "proxy_set_header X-Uri \"$uri|$args\";
        error_page 502 504 /50x.html;
        location = /50x.html {{ root {root}; }}
        location /down/ {{ proxy_pass http://127.0.0.1:{down}; }}
        location /nf/ {{ error_page 404 = /raw/fallback; return 404; }}
        location /named/ {{ error_page 404 = @up; return 404; }}
        location @up {{ proxy_pass http://{up}; }}
        location /set/ {{ error_page 403 =200 /50x.html; deny all; proxy_pass http://{up}; }}
        location /redir/ {{ error_page 404 https://example.com/nf; return 404; }}
        location /redir301/ {{ error_page 404 =301 https://example.com/nf; return 404; }}
        location /text/ {{ error_page 404 /50x.html; return 404 \"custom text\"; }}
        location /intercept/ {{ proxy_intercept_errors on; error_page 418 /50x.html;
            proxy_pass http://{up}; }}
        location /nointercept/ {{ error_page 418 /50x.html; proxy_pass http://{up}; }}
        location /missing/ {{ error_page 404 /nofile.html; return 404; }}
        location /rec/ {{ error_page 404 /rec2/x; return 404; }}
        location /rec2/ {{ error_page 404 /50x.html; return 404; }}
        location /recon/ {{ recursive_error_pages on; error_page 404 /rec2/x; return 404; }}
        location /args/ {{ error_page 404 /raw/e?from=404; return 404; }}",
        root = html.path().display(),
    );
    let (gate, http) = start(&raw, &extra);
    let sorry = "<h1>sorry</h1>\n";
    // (target, status, body, what the upstream got: request line and `$uri|$args`)
    type Case<'a> = (&'a str, u16, Option<&'a str>, Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        ("/down/x", 502, Some(sorry), None),
        (
            "/nf/x",
            200,
            Some("ok"),
            Some(("GET /raw/fallback", "/raw/fallback|")),
        ),
        (
            "/named/x?q=1",
            200,
            Some("ok"),
            Some(("GET /named/x?q=1", "/named/x|q=1")),
        ),
        ("/set/x", 200, Some(sorry), None),
        ("/text/x", 404, Some("custom text"), None),
        (
            "/intercept/s418",
            418,
            Some(sorry),
            Some(("GET /intercept/s418", "/intercept/s418|")),
        ),
        (
            "/nointercept/s418",
            418,
            Some("ok"),
            Some(("GET /nointercept/s418", "/nointercept/s418|")),
        ),
        ("/missing/x", 404, None, None),
        ("/rec/x", 404, None, None),
        ("/recon/x", 404, Some(sorry), None),
        (
            "/args/x?a=1",
            404,
            Some("ok"),
            Some(("GET /raw/e?from=404", "/raw/e|from=404")),
        ),
    ];
    for &(target, status, body, upstream) in cases {
        let before = raw.count();
        let r = get(http, "compat.test", target);
        assert_eq!(
            r.status,
            status,
            "{target}: {r:?}\n{}",
            gate.server.log_text()
        );
        match body {
            Some(body) => assert_eq!(r.body, body, "{target}"),
            None => assert!(
                r.body.contains("<title>404 Not Found</title>"),
                "{target}: {r:?}"
            ),
        }
        match upstream {
            Some((line, uri_args)) => {
                assert_eq!(
                    raw.last_request_line(),
                    format!("{line} HTTP/1.1"),
                    "{target}"
                );
                let seen = raw.seen.lock().expect("lock");
                let head = seen.last().cloned().unwrap_or_default();
                assert!(
                    head.contains(&format!("x-uri: {uri_args}\r\n")),
                    "{target}: {head}"
                );
            }
            None => assert_eq!(raw.count(), before, "{target}: no upstream"),
        }
    }
    for (target, status) in [("/redir/x", 302), ("/redir301/x", 301)] {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, status, "{target}: {r:?}");
        assert_eq!(
            header(&r, "location"),
            Some("https://example.com/nf"),
            "{target}"
        );
    }
    assert_eq!(
        header(&get(http, "compat.test", "/down/x"), "content-type"),
        Some("text/html")
    );
    // A POST goes to the page as a GET, without its body.
    let r = plain(
        http,
        "POST /nf/x HTTP/1.1\r\nHost: compat.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(raw.last_request_line(), "GET /raw/fallback HTTP/1.1");
    let seen = raw.seen.lock().expect("lock");
    assert!(
        !seen
            .last()
            .unwrap()
            .to_ascii_lowercase()
            .contains("content-length")
    );
}

/// `internal` and `satisfy`, checked against Debian's nginx 1.22 with the same directives
/// (2026-12-02): an internal location is a 404 to a client and reachable by a rewrite or
/// an `error_page` (also a file page under `root`); `satisfy any` lets a request through
/// when `allow` or `auth_basic` does, answering 401 when both refuse and 403 when only
/// the rules are configured.
#[test]
fn internal_locations_and_satisfy_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("page.html"), "<h1>page</h1>\n").expect("page");
    let file = dir.path().join("htpasswd");
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", "pw1"])
        .output()
        .expect("openssl passwd");
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    std::fs::write(&file, format!("ann:{}\n", hash.trim())).expect("htpasswd");
    let auth = format!("auth_basic R; auth_basic_user_file {};", file.display());
    let extra = format!(
        "location /int/ {{ internal; proxy_pass http://{up}; }}
        location /toint/ {{ rewrite ^/toint/(.*)$ /int/$1 last; }}
        location /ep/ {{ error_page 404 = /int/from-ep; return 404; }}
        location = /page.html {{ internal; root {root}; }}
        location /ep2/ {{ error_page 404 /page.html; return 404; }}
        location /anyok/ {{ satisfy any; allow 127.0.0.1; deny all; {auth} proxy_pass http://{up}; }}
        location /anyno/ {{ satisfy any; deny all; {auth} proxy_pass http://{up}; }}
        location /anynoauth/ {{ satisfy any; deny all; proxy_pass http://{up}; }}
        location /allno/ {{ satisfy all; allow 127.0.0.1; {auth} proxy_pass http://{up}; }}",
        root = dir.path().display(),
    );
    let (gate, http) = start(&raw, &extra);
    let request = |target: &str, user: Option<&str>| {
        use base64::Engine;
        let auth = user.map_or(String::new(), |u| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(u);
            format!("Authorization: Basic {b64}\r\n")
        });
        plain(
            http,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: compat.test\r\n{auth}Connection: close\r\n\r\n"
            ),
        )
    };
    let good = Some("ann:pw1");
    let bad = Some("ann:bad");
    for (target, user, status, line) in [
        ("/int/x", None, 404, None),
        ("/int/x", good, 404, None),
        ("/page.html", None, 404, None),
        ("/toint/x", None, 200, Some("GET /int/x")),
        ("/ep/x", None, 200, Some("GET /int/from-ep")),
        ("/ep2/x", None, 404, None),
        ("/anyok/x", None, 200, Some("GET /anyok/x")),
        ("/anyok/x", bad, 200, Some("GET /anyok/x")),
        ("/anyno/x", None, 401, None),
        ("/anyno/x", bad, 401, None),
        ("/anyno/x", good, 200, Some("GET /anyno/x")),
        ("/anynoauth/x", good, 403, None),
        ("/allno/x", None, 401, None),
        ("/allno/x", good, 200, Some("GET /allno/x")),
    ] {
        let before = raw.count();
        let r = request(target, user);
        assert_eq!(
            r.status,
            status,
            "{target} {user:?}: {r:?}\n{}",
            gate.server.log_text()
        );
        match line {
            Some(line) => {
                assert_eq!(
                    raw.last_request_line(),
                    format!("{line} HTTP/1.1"),
                    "{target}"
                )
            }
            None => assert_eq!(raw.count(), before, "{target} {user:?}: no upstream"),
        }
    }
    assert_eq!(request("/ep2/x", None).body, "<h1>page</h1>\n");
}

/// `if` in a location, checked against Debian's nginx 1.22 with the same directives
/// (2026-12-02): a CORS preflight answered in the block with its `add_header`s, a block
/// without `return` whose settings serve the request (its `add_header`s replace the
/// location's), `rewrite … break` and `return` inside a block, a block's own
/// `proxy_pass`, and `last` from a block searching the locations again.
#[test]
fn if_in_a_location_as_nginx_runs_it() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    // Named by an `if` block's `proxy_pass` only (its group was never made: a silent
    // 502 before 2026-12-04).
    let alt = RawUpstream::start();
    let alt_addr = alt.addr;
    let extra = format!(
        "location /api/ {{
            if ($request_method = OPTIONS) {{
                add_header Access-Control-Allow-Origin *;
                add_header Access-Control-Allow-Methods \"GET, POST, OPTIONS\";
                add_header Content-Type \"text/plain; charset=utf-8\";
                return 204;
            }}
            if ($request_method = POST) {{ add_header X-From-If post; }}
            add_header X-Loc loc;
            proxy_pass http://{up};
        }}
        location /hdr/ {{
            if ($http_x_debug) {{ rewrite ^/hdr/(.*)$ /dbg/$1 break; }}
            if ($arg_go = away) {{ return 302 https://example.com/; }}
            if ($http_x_block ~* ^yes) {{ return 403; }}
            proxy_pass http://{up};
        }}
        location /ifpass/ {{ if ($arg_p) {{ proxy_pass http://{up}; }} }}
        location /ifalt/ {{ if ($http_x_alt) {{ proxy_pass http://{alt_addr}; }}
            proxy_pass http://{up}; }}
        location /iflast/ {{ if ($arg_l) {{ rewrite ^/iflast/(.*)$ /api/$1 last; }}
            return 200 stay; }}"
    );
    let (gate, http) = start(&raw, &extra);
    let send = |method: &str, target: &str, extra: &str| {
        plain(
            http,
            &format!(
                "{method} {target} HTTP/1.1\r\nHost: compat.test\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let r = send("OPTIONS", "/api/x", "");
    assert_eq!(r.status, 204, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    let types: Vec<&str> = r
        .head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .collect();
    assert_eq!(types.len(), 1, "one Content-Type, the block's: {r:?}");
    assert_eq!(
        header(&r, "x-loc"),
        None,
        "the block's add_headers replace the location's"
    );
    let before = raw.count();
    let r = send("POST", "/api/x", "");
    assert_eq!(
        (r.status, header(&r, "x-from-if"), header(&r, "x-loc")),
        (200, Some("post"), None)
    );
    assert_eq!(
        raw.count(),
        before + 1,
        "the block has the location's proxy_pass"
    );
    let r = send("GET", "/api/x", "");
    assert_eq!(
        (r.status, header(&r, "x-from-if"), header(&r, "x-loc")),
        (200, None, Some("loc"))
    );
    for (target, extra, status, line) in [
        ("/hdr/a?q", "X-Debug: 1\r\n", 200, Some("GET /dbg/a?q")),
        ("/hdr/a?go=away", "", 302, None),
        ("/hdr/a", "X-Block: YES\r\n", 403, None),
        ("/hdr/a", "", 200, Some("GET /hdr/a")),
        ("/ifpass/a?p=1", "", 200, Some("GET /ifpass/a?p=1")),
        ("/ifpass/a", "", 404, None),
        ("/iflast/a?l=1", "", 200, Some("GET /api/a?l=1")),
    ] {
        let before = raw.count();
        let r = send("GET", target, extra);
        assert_eq!(r.status, status, "{target}: {r:?}");
        match line {
            Some(line) => assert_eq!(
                raw.last_request_line(),
                format!("{line} HTTP/1.1"),
                "{target}"
            ),
            None => assert_eq!(raw.count(), before, "{target}: no upstream"),
        }
    }
    assert_eq!(send("GET", "/iflast/a", "").body, "stay");
    let r = send("GET", "/ifalt/a", "X-Alt: 1\r\n");
    assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(alt.last_request_line(), "GET /ifalt/a HTTP/1.1");
    let before = alt.count();
    assert_eq!(send("GET", "/ifalt/b", "").status, 200);
    assert_eq!(raw.last_request_line(), "GET /ifalt/b HTTP/1.1");
    assert_eq!(
        alt.count(),
        before,
        "without X-Alt: the location's upstream"
    );
}

/// `listen … proxy_protocol` and the realip module, checked against Debian's nginx 1.22
/// with the same directives (2026-12-02): v1 and v2 headers give `$proxy_protocol_addr`
/// and, from a trusted balancer with `real_ip_header proxy_protocol`, `$remote_addr`
/// (what `deny` tests and `$proxy_add_x_forwarded_for` appends); `UNKNOWN` keeps the
/// connection's address; a connection without a header is closed; `X-Forwarded-For`
/// with `real_ip_recursive`; and a TLS listener behind a balancer (curl's
/// `--haproxy-protocol`).
#[test]
fn proxy_protocol_and_real_ip_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{made:?}");
    let (pp, xff, tls) = (port_in_range(), port_in_range(), port_in_range());
    let vars = "ra=$remote_addr pa=$proxy_protocol_addr pp=$proxy_protocol_port \
                psa=$proxy_protocol_server_addr rr=$realip_remote_addr";
    let http_extra = format!(
        "server {{ listen 127.0.0.1:{pp} proxy_protocol; server_name pp.test;
            set_real_ip_from 127.0.0.1; real_ip_header proxy_protocol;
            location / {{ return 200 \"{vars}\"; }}
            location /deny/ {{ deny 203.0.113.5; proxy_pass http://{up}; }}
            location /up/ {{ proxy_set_header X-Uri $proxy_add_x_forwarded_for; proxy_pass http://{up}; }}
        }}
        server {{ listen 127.0.0.1:{xff}; server_name x.test;
            set_real_ip_from 127.0.0.1; set_real_ip_from 10.0.0.0/8;
            real_ip_header X-Forwarded-For; real_ip_recursive on;
            location / {{ return 200 \"ra=$remote_addr\"; }}
        }}
        server {{ listen 127.0.0.1:{tls} ssl proxy_protocol; server_name localhost;
            ssl_certificate {cert}; ssl_certificate_key {key};
            location / {{ return 200 \"pa=$proxy_protocol_addr\"; }}
        }}",
        cert = cert.display(),
        key = key.display(),
    );
    let (gate, _http) = start_with(&raw, &http_extra, "");
    let send = |port: u16, header: &[u8], path: &str, extra: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(header).expect("header");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\n{extra}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes()).expect("request");
        read_response(&mut s)
    };
    let v1 = b"PROXY TCP4 203.0.113.5 198.51.100.1 40000 443\r\n";
    let r = send(pp, v1, "/", "");
    assert_eq!(
        r.body,
        "ra=203.0.113.5 pa=203.0.113.5 pp=40000 psa=198.51.100.1 rr=127.0.0.1",
        "{r:?}\n{}",
        gate.server.log_text()
    );
    // v2, IPv4: signature, version 2 PROXY, TCP over IPv4, 12 bytes of addresses.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend([192, 0, 2, 9, 198, 51, 100, 2]);
    v2.extend(7000u16.to_be_bytes());
    v2.extend(443u16.to_be_bytes());
    let r = send(pp, &v2, "/", "");
    assert_eq!(
        r.body,
        "ra=192.0.2.9 pa=192.0.2.9 pp=7000 psa=198.51.100.2 rr=127.0.0.1"
    );
    let r = send(pp, b"PROXY UNKNOWN\r\n", "/", "");
    assert_eq!(r.body, "ra=127.0.0.1 pa= pp= psa= rr=127.0.0.1");
    // No header: closed without an answer.
    let r = send(pp, b"", "/", "");
    assert_eq!(r.status, 0, "{r:?}");
    // The balancer's client is what `deny` tests and X-Forwarded-For gets.
    let before = raw.count();
    assert_eq!(send(pp, v1, "/deny/x", "").status, 403);
    assert_eq!(raw.count(), before);
    let r = send(pp, v1, "/up/x", "X-Forwarded-For: 198.18.0.1\r\n");
    assert_eq!(r.status, 200);
    let seen = raw
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        seen.contains("x-uri: 198.18.0.1, 203.0.113.5\r\n"),
        "{seen}"
    );
    // X-Forwarded-For from a trusted peer, recursively past trusted hops.
    let r = send(xff, b"", "/", "X-Forwarded-For: 203.0.113.1, 10.1.1.1\r\n");
    assert_eq!(r.body, "ra=203.0.113.1");
    let r = send(xff, b"", "/", "X-Forwarded-For: junk\r\n");
    assert_eq!(r.body, "ra=127.0.0.1");
    // TLS after the header.
    let url = format!("https://localhost:{tls}/");
    let resolve = format!("localhost:{tls}:127.0.0.1");
    let out = crate::support::curl(&["-sk", "--haproxy-protocol", "--resolve", &resolve, &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pa=127.0.0.1",
        "{out:?}"
    );
}

/// `ssl_reject_handshake on` in a default server without a certificate, checked against
/// Debian's nginx 1.22 with the same directives (2026-12-02): a ClientHello naming the
/// other server completes; one with an unknown name or none gets a fatal
/// `unrecognized_name` alert (112) and no certificate.
#[test]
fn ssl_reject_handshake_as_nginx() {
    let raw = RawUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=example.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{made:?}");
    let port = port_in_range();
    let http_extra = format!(
        "server {{ listen 127.0.0.1:{port} ssl default_server; ssl_reject_handshake on; }}
        server {{ listen 127.0.0.1:{port} ssl; server_name example.test;
            ssl_certificate {cert}; ssl_certificate_key {key};
            location / {{ return 200 ok; }} }}",
        cert = cert.display(),
        key = key.display(),
    );
    let (gate, _http) = start_with(&raw, &http_extra, "");
    let s_client = |name: Option<&str>| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
        match name {
            Some(n) => cmd.args(["-servername", n]),
            None => cmd.arg("-noservername"),
        };
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let ok = s_client(Some("example.test"));
    assert!(
        ok.contains("CN = example.test"),
        "{ok}\n{}",
        gate.server.log_text()
    );
    for name in [Some("other.test"), None] {
        let out = s_client(name);
        assert!(out.contains("SSL alert number 112"), "{name:?}: {out}");
        assert!(!out.contains("BEGIN CERTIFICATE"), "{name:?}: {out}");
    }
    let url = format!("https://example.test:{port}/");
    let resolve = format!("example.test:{port}:127.0.0.1");
    let out = crate::support::curl(&["-sk", "--resolve", &resolve, &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "{out:?}");
}

/// `set`, checked against Debian's nginx 1.22 with the same directives (2026-12-02): in
/// a server, a location and an `if` block, in order, a variable used before any `set`
/// ran being empty; the CORS pattern that sets a flag in one `if` and adds headers in
/// another, whose `add_header` reads a request header (`$http_origin`, which also works
/// without an access log).
#[test]
fn set_as_nginx_runs_it() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "set $a srv;
        location /s/ {{ set $b \"$a-loc\"; if ($arg_x) {{ set $b \"$b-if\"; }}
            return 200 \"a=$a b=$b c=$c\"; }}
        location /cors/ {{ set $cors \"\";
            if ($http_origin ~* ^https://(a|b)\\.test$) {{ set $cors yes; }}
            if ($cors = yes) {{ add_header Access-Control-Allow-Origin $http_origin; }}
            proxy_set_header X-Uri \"cors=$cors\";
            proxy_pass http://{up}; }}
        location /c/ {{ set $c cee; return 200 \"c=$c\"; }}"
    );
    let (gate, http) = start(&raw, &extra);
    let r = get(http, "compat.test", "/s/x");
    assert_eq!(
        r.body,
        "a=srv b=srv-loc c=",
        "{r:?}\n{}",
        gate.server.log_text()
    );
    assert_eq!(
        get(http, "compat.test", "/s/x?x=1").body,
        "a=srv b=srv-loc-if c="
    );
    assert_eq!(get(http, "compat.test", "/c/").body, "c=cee");
    let origin = |o: &str| {
        plain(
            http,
            &format!(
                "GET /cors/ HTTP/1.1\r\nHost: compat.test\r\nOrigin: {o}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let r = origin("https://a.test");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://a.test"),
        "{r:?}"
    );
    let seen = raw
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(seen.contains("x-uri: cors=yes\r\n"), "{seen}");
    let r = origin("https://evil.test");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r:?}");
}

/// `proxy_cookie_path` and `proxy_cookie_domain` rewrite the upstream's `Set-Cookie`s as
/// Debian's nginx 1.22 did for the same rules and cookies: a case-sensitive path prefix,
/// a whole domain in any case with its leading dot kept, a regex replacing the whole
/// value with its captures, the first rule that matches, `off`, and a location without
/// rules of its own taking the server's.
#[test]
fn proxy_cookie_rules_as_nginx_applies_them() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "proxy_cookie_path /app/ /srv/;
        location /ck/ {{ proxy_cookie_path /app/ /; proxy_cookie_path ~^/user/([^/]+) /u/$1;
            proxy_cookie_domain backend.local $host; proxy_pass http://{up}; }}
        location /ckoff/ {{ proxy_cookie_path off; proxy_pass http://{up}; }}
        location /cksrv/ {{ proxy_cookie_domain ~^\\.?backend\\.(\\w+)$ x.$1;
            proxy_pass http://{up}; }}
        location /ckfl/ {{ proxy_cookie_path /app/ /; proxy_cookie_flags U httponly nosecure;
            proxy_cookie_flags ~ secure samesite=lax; proxy_pass http://{up}; }}"
    );
    let (gate, http) = start(&raw, &extra);
    let cookies = |path: &str| -> Vec<String> {
        let r = get(http, "compat.test", path);
        assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
        (r.head.lines())
            .filter_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or(l.strip_prefix("Set-Cookie: "))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        cookies("/ck/"),
        [
            "sid=1; Path=/x; Domain=compat.test; HttpOnly",
            "u=3; Path=/APP/y",
            "v=4; domain=.compat.test; path=/u/ann",
            "path=/app/; w=5",
        ]
    );
    assert_eq!(
        cookies("/ckoff/"),
        [
            "sid=1; Path=/app/x; Domain=backend.local; HttpOnly",
            "u=3; Path=/APP/y",
            "v=4; domain=.BACKEND.LOCAL; path=/user/ann/p",
            "path=/app/; w=5",
        ]
    );
    // proxy_cookie_flags beside proxy_cookie_path: the first rule naming the cookie.
    assert_eq!(
        cookies("/ckfl/"),
        [
            "sid=1; Path=/x; Domain=backend.local; HttpOnly; Secure; SameSite=Lax",
            "u=3; Path=/APP/y; HttpOnly",
            "v=4; domain=.BACKEND.LOCAL; path=/user/ann/p; Secure; SameSite=Lax",
            "path=/app/; w=5; Secure; SameSite=Lax",
        ]
    );
    assert_eq!(
        cookies("/cksrv/"),
        [
            "sid=1; Path=/srv/x; Domain=x.local; HttpOnly",
            "u=3; Path=/APP/y",
            "v=4; domain=x.LOCAL; path=/user/ann/p",
            "path=/app/; w=5",
        ]
    );
}

/// `proxy_redirect` rewrites the upstream's `Location` and `Refresh` as Debian's nginx 1.22
/// did for the same rules and values (`/tmp` notes in the commit): nginx's `default` when
/// none is written (the `proxy_pass` URL becomes the location's name, or with no URI part
/// `URL/` becomes `/`), text prefixes (case-sensitive, with variables), regexes with
/// captures, the first rule that matches, `default` beside other rules, `off`, a server's
/// rules inherited by a location without its own; a `Location` made relative is made
/// absolute with the `Host` name and the server's port, a `Refresh` URL is not.
#[test]
fn proxy_redirect_as_nginx_rewrites_location() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "location /one/ {{ proxy_pass http://{up}/two/; }}
        location /ups/ {{ proxy_pass http://backend; }}
        location /upsu/ {{ proxy_pass http://backend/u/; }}
        location /sch/ {{ proxy_redirect http:// https://; proxy_pass http://{up}; }}
        location /re/ {{ proxy_redirect ~^http://([^/]+)/app/(.*)$ https://$1/$2;
            proxy_redirect ~*^HTTP://OTHER/ /o/; proxy_pass http://{up}; }}
        location /off/ {{ proxy_redirect off; proxy_pass http://{up}/two/; }}
        location /var/ {{ proxy_redirect http://$host/ https://$host/; proxy_pass http://{up}; }}
        location /both/ {{ proxy_pass http://{up}/two/; proxy_redirect default;
            proxy_redirect http://x/ /y/; }}
        location ~ ^/rx/ {{ proxy_pass http://{up}; }}
        location = /ex {{ proxy_pass http://{up}/two/; }}
        location /srv/ {{ proxy_redirect http://a/ http://b/;
            location /srv/in/ {{ proxy_pass http://{up}; }} }}"
    );
    let (gate, http) = start_with(
        &raw,
        &format!("upstream backend {{ server {up}; }}"),
        &extra,
    );
    let ask = |path: &str, loc: &str, host: &str| -> (String, String) {
        let r = plain(
            http,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Loc: {loc}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(r.status, 200, "{path}: {r:?}\n{}", gate.server.log_text());
        let h = |n: &str| header(&r, n).unwrap_or_default().to_owned();
        (h("location"), h("refresh"))
    };
    let me = format!("http://compat.test:{http}");
    for (path, loc, host, location, refresh) in [
        (
            "/one/",
            format!("http://{up}/two/x"),
            "compat.test",
            format!("{me}/one/x"),
            "/one/x".to_owned(),
        ),
        (
            "/one/",
            format!("http://{up}/twox"),
            "compat.test",
            format!("http://{up}/twox"),
            format!("http://{up}/twox"),
        ),
        (
            "/one/",
            "/two/x".into(),
            "compat.test",
            "/two/x".into(),
            "/two/x".into(),
        ),
        // The Host's port is not the server's: nginx names the server's.
        (
            "/one/",
            format!("http://{up}/two/x"),
            "compat.test:8080",
            format!("{me}/one/x"),
            "/one/x".into(),
        ),
        (
            "/ups/",
            "http://backend/a".into(),
            "compat.test",
            format!("{me}/a"),
            "/a".into(),
        ),
        (
            "/ups/",
            format!("http://{up}/a"),
            "compat.test",
            format!("http://{up}/a"),
            format!("http://{up}/a"),
        ),
        (
            "/upsu/",
            "http://backend/u/a".into(),
            "compat.test",
            format!("{me}/upsu/a"),
            "/upsu/a".into(),
        ),
        (
            "/sch/",
            "http://compat.test/x".into(),
            "compat.test",
            "https://compat.test/x".into(),
            "https://compat.test/x".into(),
        ),
        (
            "/sch/",
            "HTTP://compat.test/x".into(),
            "compat.test",
            "HTTP://compat.test/x".into(),
            "HTTP://compat.test/x".into(),
        ),
        (
            "/re/",
            "http://h.test/app/p/q".into(),
            "compat.test",
            "https://h.test/p/q".into(),
            "https://h.test/p/q".into(),
        ),
        (
            "/re/",
            "http://other/z".into(),
            "compat.test",
            format!("{me}/o/"),
            "/o/".into(),
        ),
        (
            "/re/",
            "http://h.test/nope".into(),
            "compat.test",
            "http://h.test/nope".into(),
            "http://h.test/nope".into(),
        ),
        (
            "/off/",
            format!("http://{up}/two/x"),
            "compat.test",
            format!("http://{up}/two/x"),
            format!("http://{up}/two/x"),
        ),
        (
            "/var/",
            "http://compat.test/v".into(),
            "compat.test",
            "https://compat.test/v".into(),
            "https://compat.test/v".into(),
        ),
        (
            "/var/",
            "http://Compat.test/v".into(),
            "compat.test",
            "http://Compat.test/v".into(),
            "http://Compat.test/v".into(),
        ),
        (
            "/both/",
            format!("http://{up}/two/x"),
            "compat.test",
            format!("{me}/both/x"),
            "/both/x".into(),
        ),
        (
            "/both/",
            "http://x/z".into(),
            "compat.test",
            format!("{me}/y/z"),
            "/y/z".into(),
        ),
        (
            "/rx/",
            format!("http://{up}/a"),
            "compat.test",
            format!("{me}/a"),
            "/a".into(),
        ),
        (
            "/ex",
            format!("http://{up}/two/x"),
            "compat.test",
            format!("{me}/exx"),
            "/exx".into(),
        ),
        // The server's rule, inherited by a location without its own (no default then).
        (
            "/srv/in/",
            "http://a/q".into(),
            "compat.test",
            "http://b/q".into(),
            "http://b/q".into(),
        ),
        (
            "/srv/in/",
            format!("http://{up}/q"),
            "compat.test",
            format!("http://{up}/q"),
            format!("http://{up}/q"),
        ),
    ] {
        assert_eq!(
            ask(path, &loc, host),
            (location, format!("3; url={refresh}")),
            "{path} {loc} (Host {host})"
        );
    }
}

/// `limit_req` and `limit_conn` as Debian's nginx 1.22 applied the same directives (each
/// case below run against it): a request over the rate refused with 503 (or
/// `limit_req_status`), a burst passed at once with `nodelay` or spread at the rate
/// without it, `delay=`, an empty key not limited, a `return` not limited (it answers
/// before the pre-access phase), `limit_req_dry_run` with `$limit_req_status`, and
/// `limit_conn` counting requests in progress; refusals in the error log as nginx words
/// them.
#[test]
fn limit_req_and_limit_conn_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let mut zones = String::new();
    for z in ["nb", "bn", "bd", "dl", "st", "ret", "dry"] {
        zones += &format!("limit_req_zone $binary_remote_addr zone={z}:1m rate=2r/s;\n");
    }
    zones += "limit_req_zone $arg_k zone=byk:1m rate=60r/m;
        limit_conn_zone $binary_remote_addr zone=addr:1m;
        limit_conn_zone $binary_remote_addr zone=addr2:1m;";
    let extra = format!(
        "location /nb/ {{ limit_req zone=nb; proxy_pass http://{up}; }}
        location /bn/ {{ limit_req zone=bn burst=2 nodelay; proxy_pass http://{up}; }}
        location /bd/ {{ limit_req zone=bd burst=2; proxy_pass http://{up}; }}
        location /dl/ {{ limit_req zone=dl burst=3 delay=1; proxy_pass http://{up}; }}
        location /st/ {{ limit_req zone=st; limit_req_status 429; proxy_pass http://{up}; }}
        location /ret/ {{ limit_req zone=ret; return 200 r; }}
        location /k/ {{ limit_req zone=byk; proxy_pass http://{up}; }}
        location /dry/ {{ limit_req zone=dry; limit_req_dry_run on;
            add_header X-S $limit_req_status; proxy_pass http://{up}; }}
        location /c/ {{ limit_conn addr 1; proxy_pass http://{up}; }}
        location /cs/ {{ limit_conn addr2 1; limit_conn_status 429; proxy_pass http://{up}; }}"
    );
    let (gate, http) = start_with(&raw, &zones, &extra);
    let statuses = |path: &str, n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| get(http, "compat.test", path).status)
            .collect()
    };
    // Several at once: each status with how long it took, in the order sent.
    let together = |path: &str, n: usize| -> Vec<(u16, Duration)> {
        let path = path.to_owned();
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let path = path.clone();
                std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 20 }));
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    (get(http, "compat.test", &path).status, t.elapsed())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    };
    assert_eq!(
        statuses("/nb/", 3),
        [200, 503, 503],
        "{}",
        gate.server.log_text()
    );
    assert_eq!(statuses("/bn/", 5), [200, 200, 200, 503, 503]);
    // burst=2 without nodelay: two wait (about 0.5 s and 1 s at 2 r/s), two are refused.
    let bd = together("/bd/", 5);
    let mut codes: Vec<u16> = bd.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 200, 503, 503], "{bd:?}");
    let waited = bd
        .iter()
        .filter(|r| r.0 == 200 && r.1 >= Duration::from_millis(400));
    assert_eq!(waited.count(), 2, "two of the burst waited: {bd:?}");
    // burst=3 delay=1: one more passes at once, two wait, two are refused.
    let dl = together("/dl/", 6);
    let mut codes: Vec<u16> = dl.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 200, 200, 503, 503], "{dl:?}");
    let waited = dl
        .iter()
        .filter(|r| r.0 == 200 && r.1 >= Duration::from_millis(400));
    assert_eq!(waited.count(), 2, "{dl:?}");
    assert_eq!(statuses("/st/", 3), [200, 429, 429]);
    assert_eq!(
        statuses("/ret/", 3),
        [200, 200, 200],
        "return answers first"
    );
    assert_eq!(statuses("/k/?k=a", 2), [200, 503]);
    assert_eq!(statuses("/k/?k=b", 1), [200], "another key");
    assert_eq!(
        statuses("/k/", 3),
        [200, 200, 200],
        "an empty key is not limited"
    );
    let dry: Vec<(u16, String)> = (0..3)
        .map(|_| {
            let r = get(http, "compat.test", "/dry/");
            (r.status, header(&r, "x-s").unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        dry,
        [
            (200, "PASSED".to_owned()),
            (200, "REJECTED_DRY_RUN".to_owned()),
            (200, "REJECTED_DRY_RUN".to_owned())
        ]
    );
    // One request in progress at a time: the others are refused at once.
    let c = together("/c/slow", 3);
    let mut codes: Vec<u16> = c.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 503, 503], "{c:?}");
    assert_eq!(statuses("/c/", 2), [200, 200], "released when answered");
    let cs = together("/cs/slow", 2);
    let mut codes: Vec<u16> = cs.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 429], "{cs:?}");
    let log = gate.server.log_text();
    for needle in [
        "limiting requests, excess: 0.",
        "by zone \"nb\"",
        "limiting requests, dry run, excess:",
        "delaying request, excess: 1.",
        "limiting connections by zone \"addr\"",
    ] {
        assert!(log.contains(needle), "{needle} not in the log:\n{log}");
    }
    // In nginx's error log format, as fail2ban's stock `nginx-limit-req` filter reads it.
    let fail2ban = regex::Regex::new(
        r#"(?m)^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[[a-z]+\] \d+#\d+: \*\d+ limiting requests, excess: [\d\.]+ by zone "(?:[^"]+)", client: (?P<host>\S+),"#,
    )
    .expect("regex");
    assert!(
        fail2ban
            .captures_iter(&log)
            .any(|c| &c["host"] == "127.0.0.1"),
        "{log}"
    );
}

/// `upstream` methods: the server each request reaches is the one Debian's nginx 1.22
/// chose for the same configuration (nginx's algorithms: `hash $arg_k` with and without
/// weights and a `down` server, `ip_hash` for 127.0.0.1, and `least_conn` avoiding the
/// server busy with a slow request); `hash … consistent` keeps every key whose server
/// stays up where it was when one is marked `down` (its exact ring depends on the
/// servers' ports, which differ from run to run).
#[test]
fn upstream_methods_pick_as_nginx() {
    let raw = RawUpstream::start();
    let [s1, s2, s3] = [
        upstream_in_range("1"),
        upstream_in_range("2"),
        upstream_in_range("3"),
    ];
    let http_extra = format!(
        "upstream h {{ hash $arg_k; server {s1}; server {s2}; server {s3}; }}
        upstream hc {{ hash $arg_k consistent; server {s1}; server {s2}; server {s3}; }}
        upstream hcd {{ hash $arg_k consistent; server {s1}; server {s2} down; server {s3}; }}
        upstream ip {{ ip_hash; server {s1}; server {s2}; server {s3}; }}
        upstream hw {{ hash $arg_k; server {s1} weight=2; server {s2}; server {s3} down; }}
        upstream lc {{ least_conn; zone lc 64k; server {s1}; server {s2}; }}"
    );
    let mut extra = String::new();
    for g in ["h", "hc", "hcd", "ip", "hw", "lc"] {
        extra += &format!("location /{g}/ {{ proxy_pass http://{g}; }}\n");
    }
    let (gate, http) = start_with(&raw, &http_extra, &extra);
    let picks = |group: &str| -> String {
        (0..20)
            .map(|k| {
                let r = get(http, "compat.test", &format!("/{group}/?k={k}"));
                let name = r.upstream().map(str::to_owned);
                name.unwrap_or_else(|| panic!("{r:?}\n{}", gate.server.log_text()))
            })
            .collect()
    };
    // Debian's nginx 1.22 with servers on ports 19091, 19092, 19093 (the ports do not
    // enter these two methods).
    assert_eq!(picks("h"), "32321211331313323122");
    assert_eq!(picks("hw"), "11122111111211112121");
    assert_eq!(picks("ip"), "33333333333333333333");
    let (hc, hcd) = (picks("hc"), picks("hcd"));
    assert!(hc.contains('2'), "{hc}");
    for (before, after) in hc.chars().zip(hcd.chars()) {
        match before {
            '2' => assert_ne!(after, '2', "{hc} / {hcd}"),
            _ => assert_eq!(after, before, "{hc} / {hcd}"),
        }
    }
    // least_conn: while one server is busy with a slow request, the others go to the
    // other server.
    let slow = std::thread::spawn(move || get(http, "compat.test", "/lc/slow?delay_ms=3000"));
    std::thread::sleep(Duration::from_millis(500));
    let during: String = (0..3)
        .map(|_| {
            get(http, "compat.test", "/lc/x")
                .upstream()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    let slow = slow.join().expect("slow");
    let slow_on = slow.upstream().and_then(|s| s.chars().next());
    let other = if slow_on == Some('1') { "222" } else { "111" };
    assert_eq!(during, other, "slow one on {slow_on:?}");
}

/// `absolute_redirect`, `port_in_redirect`, `merge_slashes`, `underscores_in_headers` and
/// `ignore_invalid_headers` as Debian's nginx 1.22 applied them (each case run against
/// it): relative or port-less redirects, `//` kept in `$uri`, and request headers with
/// `_` or other characters dropped by default (for the upstream and the variables),
/// kept when told; a name with `@` or `{` dropped (logged as nginx logs it), not a 400;
/// a bare name (no colon) passed on with an empty value; a space in a name a 400.
#[test]
fn core_flags_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let (p2, p3) = (port_in_range(), port_in_range());
    let http_extra = format!(
        "server {{ listen 127.0.0.1:{p2}; merge_slashes off; underscores_in_headers on;
            location /m/ {{ return 200 \"$uri\"; }}
            location /hd/ {{ add_header X-Seen \"$http_x_foo|$http_x_bar\"; proxy_pass http://{up}; }} }}
        server {{ listen 127.0.0.1:{p3}; ignore_invalid_headers off;
            location /hd/ {{ proxy_pass http://{up}; }} }}"
    );
    let extra = format!(
        "location /a/ {{ absolute_redirect off; return 301 /x; }}
        location /p/ {{ port_in_redirect off; return 302 /y; }}
        location /s/ {{ absolute_redirect off; proxy_pass http://{up}; }}
        location /t/ {{ port_in_redirect off; proxy_pass http://{up}; }}
        location /r/ {{ absolute_redirect off; rewrite ^ /z redirect; }}
        location /m/ {{ return 200 \"$uri\"; }}
        location /hd/ {{ add_header X-Seen \"$http_x_foo|$http_x_bar\"; proxy_pass http://{up}; }}"
    );
    let (gate, http) = start_with(&raw, &http_extra, &extra);
    for (path, location) in [
        ("/a/", "/x"),
        ("/p/", "http://compat.test/y"),
        ("/s", "/s/"),
        ("/t", "http://compat.test/t/"),
        ("/r/", "/z"),
    ] {
        let r = get(http, "compat.test", path);
        assert_eq!(
            header(&r, "location"),
            Some(location),
            "{path}: {r:?}\n{}",
            gate.server.log_text()
        );
    }
    assert_eq!(get(http, "compat.test", "/m//a/./b").body, "/m/a/b");
    assert_eq!(get(p2, "compat.test", "/m//a/./b").body, "/m//a/b");
    let headers = |port: u16| -> (String, Option<String>) {
        let r = plain(
            port,
            "GET /hd/ HTTP/1.1\r\nHost: compat.test\r\nX_Foo: 1\r\nX-Bar: 2\r\nX.Baz: 3\r\nX@At: 4\r\nX{B}: 5\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{r:?}");
        let seen = raw
            .seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default();
        let mut names: Vec<&str> = (seen.lines())
            .filter_map(|l| l.split_once(':').map(|(n, _)| n))
            .filter(|n| n.to_ascii_lowercase().starts_with('x'))
            .collect();
        names.sort_unstable();
        (
            names.join(" ").to_ascii_lowercase(),
            header(&r, "x-seen").map(str::to_owned),
        )
    };
    assert_eq!(
        headers(http),
        ("x-bar".into(), Some("|2".into())),
        "dropped by default"
    );
    assert_eq!(
        headers(p2),
        ("x-bar x_foo".into(), Some("1|2".into())),
        "underscores_in_headers on"
    );
    // A name hyper cannot carry (`@`, `{`: outside RFC 9110's token) is dropped even
    // then, where nginx passes it on; the request is served, not refused.
    assert_eq!(
        headers(p3).0,
        "x-bar x.baz x_foo",
        "ignore_invalid_headers off"
    );
    // A bare name is a header with an empty value; a space in a name is nginx's 400 page.
    let r = plain(
        http,
        "GET /hd/ HTTP/1.1\r\nHost: compat.test\r\nBare\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = raw.seen.lock().expect("lock").last().cloned();
    assert!(seen.unwrap_or_default().contains("\r\nbare: \r\n"));
    let r = plain(
        http,
        "GET /hd/ HTTP/1.1\r\nHost: compat.test\r\nX Y: 1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("<h1>400 Bad Request</h1>"), "{r:?}");
    assert!(
        gate.server
            .log_text()
            .contains(r#"client sent invalid header line: "X@At: 4""#),
        "{}",
        gate.server.log_text()
    );
}

/// `send_timeout`: a client that stops reading its answer has its connection closed
/// once a write has waited that long (nginx: "client timed out … while sending response
/// to client"), where one that keeps reading gets the whole answer.
#[test]
fn send_timeout_drops_a_client_that_stops_reading() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!("send_timeout 1s; location /big/ {{ proxy_pass http://{up}; }}");
    let (gate, http) = start(&raw, &extra);
    let request = "GET /big/ HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n";
    let read_all = |s: &mut TcpStream| -> usize {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    };
    // Reads at once: the whole answer.
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    assert!(read_all(&mut s) > BIG, "{}", gate.server.log_text());
    // Stops reading: closed after the timeout, short of the answer.
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_secs(4));
    let t = std::time::Instant::now();
    let got = read_all(&mut s);
    assert!(got < BIG, "got {got} bytes");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the connection was closed: {:?}",
        t.elapsed()
    );
}

/// `proxy_pass` with variables, each case as Debian's nginx 1.22 answered it
/// (2026-12-02): the evaluated host part names an `upstream` block (case aside; `Host`
/// is the name as evaluated) or is a `host:port`; a URI part replaces the request's URI
/// whole, `$request_uri` included; a host that is neither is a 502 (nginx: "no resolver
/// defined"); `split_clients` chooses between blocks.
#[test]
fn proxy_pass_with_variables_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let http_extra = format!(
        "upstream grp {{ server {up}; }}
        map $arg_to $target {{ default grp; addr {up}; upper GRP; bad \"no such host!\"; }}
        split_clients \"$arg_k\" $half {{ 50% grp; * {up}; }}"
    );
    let extra = "location /v1/ { proxy_pass http://$target; }
        location /v2/ { proxy_pass http://grp$request_uri; }
        location /v3/ { proxy_pass http://$target/fixed?x=$arg_x; }
        location /v4/ { proxy_pass http://$half; }";
    let (gate, http) = start_with(&raw, &http_extra, extra);
    let last = || {
        raw.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    };
    for (path, status, line, host) in [
        (
            "/v1/a?to=x",
            200,
            "GET /v1/a?to=x HTTP/1.1",
            "grp".to_owned(),
        ),
        (
            "/v1/a?to=upper",
            200,
            "GET /v1/a?to=upper HTTP/1.1",
            "GRP".to_owned(),
        ),
        (
            "/v1/b?to=addr",
            200,
            "GET /v1/b?to=addr HTTP/1.1",
            up.to_string(),
        ),
        ("/v2/c?z=1", 200, "GET /v2/c?z=1 HTTP/1.1", "grp".to_owned()),
        (
            "/v3/d?x=7",
            200,
            "GET /fixed?x=7 HTTP/1.1",
            "grp".to_owned(),
        ),
        (
            "/v4/e?k=user7",
            200,
            "GET /v4/e?k=user7 HTTP/1.1",
            up.to_string(),
        ),
        ("/v4/e?k=1", 200, "GET /v4/e?k=1 HTTP/1.1", "grp".to_owned()),
    ] {
        let before = raw.count();
        let r = get(http, "compat.test", path);
        assert_eq!(
            r.status,
            status,
            "{path}: {r:?}\n{}",
            gate.server.log_text()
        );
        assert_eq!(raw.count(), before + 1, "{path}");
        let head = last();
        assert!(head.starts_with(&format!("{line}\r\n")), "{path}: {head}");
        assert!(
            head.contains(&format!("\r\nhost: {host}\r\n")),
            "{path}: {head}"
        );
    }
    let before = raw.count();
    assert_eq!(get(http, "compat.test", "/v1/x?to=bad").status, 502);
    assert_eq!(raw.count(), before, "nothing sent");
    assert!(
        gate.server
            .log_text()
            .contains(r#"invalid upstream host "no such host!" in "proxy_pass""#)
    );
}

/// `split_clients`: the same client string gets the same value as in Debian's nginx
/// 1.22 (the values below are nginx's answers to the same configuration, 2026-12-02;
/// 3,000 keys compared side by side gave no difference): shares in file order, `*` for
/// the rest, an empty value past every share when there is no `*`.
#[test]
fn split_clients_as_nginx() {
    let raw = RawUpstream::start();
    let http_extra = "split_clients \"${arg_k}salt\" $variant { 10% a; 33.33% b; 0.5% c; * d; }
        split_clients \"$arg_k\" $partial { 25% x; 25% y; }";
    let extra = "location /split/ { return 200 \"$variant|$partial\"; }";
    let (gate, http) = start_with(&raw, http_extra, extra);
    for (k, want) in [
        ("user0", "d|x"),
        ("user1", "b|x"),
        ("user2", "b|y"),
        ("user3", "d|"),
        ("user4", "a|y"),
        ("user9", "b|"),
        ("alice", "d|x"),
        ("bob", "a|y"),
    ] {
        let r = get(http, "compat.test", &format!("/split/?k={k}"));
        assert_eq!(r.body, want, "{k}: {r:?}\n{}", gate.server.log_text());
    }
}

/// `limit_except` as Debian's nginx 1.22 answered the same requests (2026-12-02): the
/// methods it lists (GET bringing HEAD) are the location's; any other gets the block's
/// `allow`/`deny` and `auth_basic` (replacing the location's rules), still proxied, but
/// without the location's `return` (nginx's implicit location has none of the rewrite
/// module's directives).
#[test]
fn limit_except_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "u:{PLAIN}p\n").expect("htpasswd");
    let extra = format!(
        "location /le/ {{ limit_except GET {{ deny all; }} proxy_pass http://{up}; }}
        location /la/ {{ limit_except GET POST {{ auth_basic R; auth_basic_user_file {f}; }}
            proxy_pass http://{up}; }}
        location /lr/ {{ limit_except GET {{ deny all; }} return 200 ret; }}
        location /ln/ {{ allow 127.0.0.1; deny all; limit_except GET {{ allow 10.0.0.1; deny all; }}
            proxy_pass http://{up}; }}",
        f = file.display()
    );
    let (gate, http) = start(&raw, &extra);
    let ask = |method: &str, path: &str, auth: bool| {
        let auth = if auth {
            "Authorization: Basic dTpw\r\n"
        } else {
            ""
        };
        let length = if method == "POST" || method == "PUT" {
            "Content-Length: 0\r\n"
        } else {
            ""
        };
        plain(
            http,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: compat.test\r\n{auth}{length}Connection: close\r\n\r\n"
            ),
        )
        .status
    };
    for (method, path, auth, status) in [
        ("GET", "/le/", false, 200),
        ("HEAD", "/le/", false, 200),
        ("POST", "/le/", false, 403),
        ("DELETE", "/le/", false, 403),
        ("PUT", "/la/", false, 401),
        ("POST", "/la/", false, 200),
        ("PUT", "/la/", true, 200),
        ("GET", "/lr/", false, 200),
        ("POST", "/lr/", false, 403),
        ("GET", "/ln/", false, 200),
        ("PUT", "/ln/", false, 403),
    ] {
        assert_eq!(
            ask(method, path, auth),
            status,
            "{method} {path} {auth}\n{}",
            gate.server.log_text()
        );
    }
    let seen = raw.seen.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|h| h.starts_with("PUT /la/ ")),
        "proxied: {seen:?}"
    );
    assert!(
        !seen.iter().any(|h| h.starts_with("POST /le/ ")),
        "denied: {seen:?}"
    );
}

/// `limit_rate` and `limit_rate_after`: an answer's body goes no faster than nginx's
/// budget, `rate × (t + 1) + after` bytes by second `t`: 32 MiB at 8 MiB/s after 8 MiB
/// take at least two seconds (the first 16 MiB at once, the rest at the rate), whole.
#[test]
fn limit_rate_holds_an_answer_to_its_rate() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra =
        format!("location /big/ {{ limit_rate 8m; limit_rate_after 8m; proxy_pass http://{up}; }}");
    let (gate, http) = start(&raw, &extra);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let t = std::time::Instant::now();
    s.write_all(b"GET /big/ HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut at_half) = (0, None);
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        if at_half.is_none() && total >= BIG / 2 + (1 << 20) {
            at_half = Some(t.elapsed());
        }
    }
    let took = t.elapsed();
    assert!(total > BIG, "{total} bytes\n{}", gate.server.log_text());
    // 16 MiB at 8 MiB/s after the first 16: two seconds, less the clock's
    // granularity; and the part past the first 16 MiB was held back too.
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
    let half = at_half.expect("past half");
    assert!(half >= Duration::from_millis(100), "17 MiB after {half:?}");
}

/// `auth_request` as Debian's nginx 1.22 ran it with the same directives (each case run
/// against it): the subrequest is a GET with the request's headers and no body, through
/// an internal location and its `proxy_set_header`s; 2xx lets the request through, 401
/// (with the service's `WWW-Authenticate`) and 403 refuse it, another status is a 500;
/// `auth_request_set` takes the subrequest's `$upstream_http_NAME` and
/// `$upstream_status` whatever the outcome; `error_page 401` sends the refused request
/// to a login; a `return` answers before the access phase; the auth location itself is
/// internal.
#[test]
fn auth_request_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "location = /auth {{ internal; proxy_pass http://{up}/verify;
            proxy_pass_request_body off; proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-URI $request_uri; }}
        location /app/ {{ auth_request /auth; auth_request_set $user $upstream_http_x_user;
            auth_request_set $st $upstream_status;
            proxy_set_header X-User $user; add_header X-St $st always; proxy_pass http://{up}; }}
        location /open/ {{ auth_request off; proxy_pass http://{up}; }}
        location /ep/ {{ auth_request /auth; error_page 401 = @login; proxy_pass http://{up}; }}
        location @login {{ return 302 https://sso.test/login?rd=$request_uri; }}
        location /ret/ {{ auth_request /no; return 200 ret; }}
        location /ret2/ {{ auth_request /no; proxy_pass http://{up}; }}
        location = /no {{ return 403; }}
        location /pm/ {{ auth_request off; proxy_method PUT; proxy_set_body \"b=$arg_x\";
            proxy_pass_request_headers off; proxy_set_header X-K k; proxy_pass http://{up}; }}
        location /nb/ {{ auth_request off; proxy_pass_request_body off; proxy_pass http://{up}; }}"
    );
    let (gate, http) = start_with(&raw, "auth_request /auth;", &extra);
    let ask = |method: &str, path: &str, auth: &str| {
        let auth = match auth {
            "" => String::new(),
            a => format!("X-Auth: {a}\r\n"),
        };
        let body = if method == "POST" { "hello=1" } else { "" };
        plain(
            http,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: compat.test\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let heads = |n: usize| -> Vec<String> {
        let seen = raw.seen.lock().expect("lock");
        seen[seen.len().saturating_sub(n)..].to_vec()
    };
    let r = ask("GET", "/app/x?q=1", "ok");
    assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(header(&r, "x-st"), Some("200"));
    let [sub, main] = <[String; 2]>::try_from(heads(2)).expect("two requests");
    assert!(sub.starts_with("GET /verify HTTP/1.1\r\n"), "{sub}");
    assert!(
        sub.contains("x-original-uri: /app/x?q=1\r\n") && sub.contains("x-auth: ok"),
        "{sub}"
    );
    assert!(
        main.starts_with("GET /app/x?q=1 ") && main.contains("x-user: alice\r\n"),
        "{main}"
    );
    // A POST: the subrequest is a GET without the body or its length.
    let r = ask("POST", "/app/p", "ok");
    assert_eq!(r.status, 200, "{r:?}");
    let [sub, main] = <[String; 2]>::try_from(heads(2)).expect("two requests");
    assert!(
        sub.starts_with("GET /verify ") && !sub.to_ascii_lowercase().contains("content-length"),
        "{sub}"
    );
    assert!(main.starts_with("POST /app/p "), "{main}");
    let r = ask("GET", "/app/x", "deny");
    assert_eq!((r.status, header(&r, "x-st")), (403, Some("403")), "{r:?}");
    let r = ask("GET", "/app/x", "");
    assert_eq!((r.status, header(&r, "x-st")), (401, Some("401")), "{r:?}");
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer realm=\"x\""));
    let r = ask("GET", "/app/x", "weird");
    assert_eq!((r.status, header(&r, "x-st")), (500, Some("418")), "{r:?}");
    assert!(
        gate.server
            .log_text()
            .contains("auth request unexpected status: 418")
    );
    // Inherited from http, and off.
    let before = raw.count();
    assert_eq!(ask("GET", "/other/", "").status, 401);
    assert_eq!(ask("GET", "/open/", "").status, 200);
    assert_eq!(raw.count(), before + 2, "one subrequest, one request");
    let r = ask("GET", "/ep/x", "");
    assert_eq!(
        (r.status, header(&r, "location")),
        (302, Some("https://sso.test/login?rd=/ep/x"))
    );
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"x\""),
        "kept through error_page, as nginx does"
    );
    assert_eq!(ask("GET", "/ret/", "").body, "ret", "return answers first");
    assert_eq!(ask("GET", "/ret2/", "").status, 403);
    assert_eq!(ask("GET", "/auth", "ok").status, 404, "internal");
    // proxy_method, proxy_set_body, proxy_pass_request_headers off: nginx sent
    // "PUT /pm/?x=1" with X-K, Host, Connection and Content-Length: 3 only.
    assert_eq!(ask("GET", "/pm/?x=1", "ok").status, 200);
    let [head] = <[String; 1]>::try_from(heads(1)).expect("one request");
    let mut names: Vec<String> = (head.lines().skip(1))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect();
    names.sort();
    assert!(head.starts_with("PUT /pm/?x=1 "), "{head}");
    assert_eq!(
        names,
        ["connection", "content-length", "host", "x-k"],
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("content-length: 3\r\n"),
        "{head}"
    );
    // proxy_pass_request_body off: no body, and (unlike nginx, which still sends the
    // client's Content-Length) no length that would make the upstream wait for one.
    assert_eq!(ask("POST", "/nb/", "ok").status, 200);
    let [head] = <[String; 1]>::try_from(heads(1)).expect("one request");
    assert!(
        head.starts_with("POST /nb/ ") && head.contains("x-auth: ok"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
}

/// `expires` as Debian's nginx 1.22 set the headers with the same directives (each form
/// run against it): `max-age` and an `Expires` that far ahead, `no-cache` for `epoch`
/// and a time past, nginx's fixed dates for `epoch` and `max`, the upstream's
/// `Cache-Control`/`Expires` replaced on a success and untouched on a 404, and a value
/// from a `map`.
#[test]
fn expires_as_nginx() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "location /exp/ {{ expires 1h; proxy_pass http://{up}; }}
        location /epoch/ {{ expires epoch; proxy_pass http://{up}; }}
        location /max/ {{ expires max; proxy_pass http://{up}; }}
        location /neg/ {{ expires -1; return 200 x; }}
        location /r404/ {{ expires 1h; return 404; }}
        location /var/ {{ expires $exp; return 200 v; }}"
    );
    let (gate, http) = start_with(&raw, "map $status $exp { default off; 200 2h; }", &extra);
    let cache = |path: &str| {
        let r = get(http, "compat.test", path);
        let h = |n: &str| header(&r, n).map(str::to_owned);
        (r.status, h("cache-control"), h("expires"))
    };
    let ahead = |expires: &str| -> i64 {
        let t = httpdate::parse_http_date(expires).expect("an HTTP date");
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs() as i64
        };
        secs(t) - secs(std::time::SystemTime::now())
    };
    let (status, cc, exp) = cache("/exp/");
    assert_eq!(
        (status, cc.as_deref()),
        (200, Some("max-age=3600")),
        "{}",
        gate.server.log_text()
    );
    assert!((3590..=3600).contains(&ahead(&exp.expect("Expires"))));
    assert_eq!(
        cache("/epoch/"),
        (
            200,
            Some("no-cache".into()),
            Some("Thu, 01 Jan 1970 00:00:01 GMT".into())
        )
    );
    assert_eq!(
        cache("/max/"),
        (
            200,
            Some("max-age=315360000".into()),
            Some("Thu, 31 Dec 2037 23:55:55 GMT".into())
        )
    );
    let (_, cc, exp) = cache("/neg/");
    assert_eq!(cc.as_deref(), Some("no-cache"));
    assert!((-5..=0).contains(&ahead(&exp.expect("Expires"))));
    assert_eq!(
        cache("/r404/"),
        (404, None, None),
        "only successful answers"
    );
    let (_, cc, _) = cache("/var/");
    assert_eq!(cc.as_deref(), Some("max-age=7200"));
}

/// `stub_status` as nginx writes it (the layout Debian's nginx 1.22 sent, which
/// nginx-prometheus-exporter and monitoring scripts parse): the counts move with the
/// traffic, the page itself is a request in progress, and `allow`/`deny` apply to it.
#[test]
fn stub_status_as_nginx() {
    let raw = RawUpstream::start();
    let extra = "location = /basic_status { stub_status; allow 127.0.0.1; deny all; }
        location = /denied_status { stub_status on; deny all; }";
    let (gate, http) = start(&raw, extra);
    let numbers = || -> (Vec<u64>, String) {
        let r = get(http, "compat.test", "/basic_status");
        assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
        assert_eq!(header(&r, "content-type"), Some("text/plain"));
        let n = (r.body.split(|c: char| !c.is_ascii_digit()))
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("a number"))
            .collect();
        (n, r.body)
    };
    let (first, body) = numbers();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 4, "{body}");
    assert!(
        lines[0].starts_with("Active connections: ") && lines[0].ends_with(' '),
        "{body}"
    );
    assert_eq!(lines[1], "server accepts handled requests");
    assert!(
        lines[3].starts_with("Reading: ") && lines[3].ends_with(' '),
        "{body}"
    );
    // active, accepts, handled, requests, reading, writing, waiting
    assert_eq!(first.len(), 7, "{body}");
    assert!(
        first[0] >= 1 && first[5] >= 1,
        "this request is active and in progress: {body}"
    );
    assert_eq!(first[1], first[2], "every accepted connection is handled");
    for _ in 0..3 {
        get(http, "compat.test", "/raw/x");
    }
    let (second, body) = numbers();
    assert!(second[1] >= first[1] + 4, "{body}");
    assert!(second[3] >= first[3] + 4, "{body}");
    assert_eq!(get(http, "compat.test", "/denied_status").status, 403);
    let r = plain(
        http,
        "POST /basic_status HTTP/1.1\r\nHost: compat.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

/// `geo` as Debian's nginx 1.22 looked the same addresses up in the same blocks: the
/// most specific network, a single address, IPv6, an IPv4-mapped address, `delete`,
/// `ranges`, `default`, text that is no address, and `$remote_addr` by default.
#[test]
fn geo_as_nginx() {
    let raw = RawUpstream::start();
    let http_extra =
        "geo $arg_ip $g { default def; 10.0.0.0/8 ten; 10.1.0.0/16 ten-one; 10.1.2.3 host;
            192.168.1.0/24 lan; 2001:db8::/32 doc6; delete 192.168.1.0/24; 127.0.0.0/8 lo; }
        geo $arg_ip $r { ranges; default none; 10.0.0.0-10.0.0.255 r1; 10.0.1.0-10.0.1.255 r2; }
        geo $me { default other; 127.0.0.1 local; }";
    let (gate, http) = start_with(
        &raw,
        http_extra,
        "location /geo/ { return 200 \"$g|$r|$me\"; }",
    );
    for (ip, want) in [
        ("10.9.9.9", "ten|none|local"),
        ("10.1.9.9", "ten-one|none|local"),
        ("10.1.2.3", "host|none|local"),
        ("192.168.1.5", "def|none|local"),
        ("2001:db8::1", "doc6|none|local"),
        ("::ffff:10.1.2.3", "host|none|local"),
        ("10.0.0.200", "ten|r1|local"),
        ("10.0.1.0", "ten|r2|local"),
        ("bogus", "def|none|local"),
        ("", "def|none|local"),
        ("127.0.0.2", "lo|none|local"),
    ] {
        let r = get(http, "compat.test", &format!("/geo/?ip={ip}"));
        assert_eq!(r.body, want, "{ip}: {r:?}\n{}", gate.server.log_text());
    }
}

/// An HTTP/1.1 upstream on a Unix socket, written by hand: keep-alive, each request head
/// recorded with the number of its connection, answered `200` with `Content-Length`.
fn unix_upstream(path: &std::path::Path) -> Arc<Mutex<Vec<(usize, String)>>> {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind unix socket");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (conn, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    if !head.ends_with(b"\r\n\r\n") {
                        return;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    log.lock().expect("lock").push((conn, text));
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix";
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

/// Upstreams on Unix domain sockets as nginx takes them: `server unix:PATH` in an
/// `upstream` block (kept alive when it says `keepalive`) and `proxy_pass
/// http://unix:PATH:/uri`, whose `Host` is `localhost` (nginx's `$proxy_host` for a Unix
/// socket) and whose `$upstream_addr` is `unix:PATH`; `https://` to a Unix socket fails
/// `-t` with the line; a socket nobody listens on is a 502.
#[test]
fn unix_socket_upstreams_as_nginx() {
    let raw = RawUpstream::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("app.sock");
    let seen = unix_upstream(&sock);
    let sock = sock.display();
    let gone = dir.path().join("gone.sock");
    let gone = gone.display();
    let http_extra = format!(
        "upstream viasock {{ server unix:{sock}; keepalive 4; }}
        upstream nobody {{ server unix:{gone}; }}"
    );
    let server_extra = format!(
        "location /g/ {{ proxy_pass http://viasock; proxy_http_version 1.1;
            proxy_set_header Connection \"\"; add_header X-UA $upstream_addr; }}
        location /d/ {{ proxy_pass http://unix:{sock}:/inner/; add_header X-UA $upstream_addr; }}
        location /n/ {{ proxy_pass http://unix:{sock}; }}
        location /gone/ {{ proxy_pass http://nobody; }}"
    );
    let (gate, http) = start_with(&raw, &http_extra, &server_extra);
    let requests = |seen: &Arc<Mutex<Vec<(usize, String)>>>| seen.lock().expect("lock").clone();

    for _ in 0..3 {
        let r = get(http, "compat.test", "/g/a?x=1");
        assert_eq!((r.status, r.body.as_str()), (200, "unix"), "{r:?}");
        assert_eq!(header(&r, "x-ua"), Some(format!("unix:{sock}").as_str()));
    }
    let got = requests(&seen);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].1.starts_with("GET /g/a?x=1 HTTP/1.1\r\n"), "{got:?}");
    // The group's name is `$proxy_host`, sent as `Host` (nginx's default).
    assert!(
        got[0]
            .1
            .to_ascii_lowercase()
            .contains("\r\nhost: viasock\r\n"),
        "{got:?}"
    );
    assert!(
        got.iter().all(|(conn, _)| *conn == got[0].0),
        "keepalive: one upstream connection for the three requests: {got:?}"
    );

    let r = get(http, "compat.test", "/d/b");
    assert_eq!((r.status, r.body.as_str()), (200, "unix"), "{r:?}");
    assert_eq!(header(&r, "x-ua"), Some(format!("unix:{sock}").as_str()));
    let r = get(http, "compat.test", "/n/c");
    assert_eq!(r.status, 200, "{r:?}");
    let got = requests(&seen);
    let (d, n) = (&got[3].1, &got[4].1);
    assert!(d.starts_with("GET /inner/b HTTP/1.1\r\n"), "{d}");
    assert!(
        d.to_ascii_lowercase().contains("\r\nhost: localhost\r\n"),
        "{d}"
    );
    assert!(n.starts_with("GET /n/c HTTP/1.1\r\n"), "{n}");

    let r = get(http, "compat.test", "/gone/x");
    assert_eq!(r.status, 502, "{r:?}");

    // TLS to a Unix socket is refused by `-t`, naming the line.
    let conf = gate.prefix.join("nginx.conf");
    let good = std::fs::read_to_string(&conf).expect("conf");
    let bad = good.replacen(
        "location /n/ {",
        &format!("location /tls/ {{ proxy_pass https://unix:{sock}:/; }}\n        location /n/ {{"),
        1,
    );
    let line = bad.lines().position(|l| l.contains("/tls/")).expect("line") + 1;
    std::fs::write(&conf, &bad).expect("conf");
    let out = hsmgate_t(&gate, &conf);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("nginx.conf:{line}:")) && stderr.contains("unix domain socket"),
        "{stderr}"
    );
    std::fs::write(&conf, &good).expect("conf");
}

/// The TOML format's `[upstream] address = "unix:PATH"`: requests reach the socket.
#[test]
fn the_toml_format_takes_a_unix_socket_upstream() {
    use crate::support::hsm::{KeyType, TestToken};
    use crate::support::proxy::{ProxyProcess, config_for};
    let token = TestToken::new(KeyType::EcP256);
    let sock = token.path().join("app.sock");
    let seen = unix_upstream(&sock);
    let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let config = config_for(&token, placeholder, "").replace(
        "address = \"127.0.0.1:9\"",
        &format!("address = \"unix:{}\"", sock.display()),
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate on a unix upstream");
    let out = crate::support::curl(&[
        "-si",
        "--cacert",
        token.ca_pem.to_str().expect("utf-8"),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", proxy.addr.port()),
        &format!("https://localhost:{}/t?q=1", proxy.addr.port()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("unix"), "{text}\n{}", proxy.log_text());
    let got = seen.lock().expect("lock").clone();
    assert!(got[0].1.starts_with("GET /t?q=1 HTTP/1.1\r\n"), "{got:?}");
}

/// Characters RFC 3986 leaves out of URIs that nginx takes in a request line as they come
/// and curl sends unencoded (`"` and `<`, `>` in a query, a backquote in the path): the
/// request is served, and the upstream gets them percent-encoded as a browser sends them
/// (hyper's URI parser refuses them raw).
#[test]
fn unencoded_quotes_and_angle_brackets_in_a_target_are_served() {
    let raw = RawUpstream::start();
    let (_gate, http) = start(&raw, "");
    for (target, upstream) in [
        ("/raw/s?q=\"x\"", "/raw/s?q=%22x%22"),
        ("/raw/s?q=<b>&r=`{}`", "/raw/s?q=%3Cb%3E&r=`{}`"),
        ("/raw/a<b>`c\"", "/raw/a%3Cb%3E%60c\""),
    ] {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(raw.last_request_line(), format!("GET {upstream} HTTP/1.1"));
    }
}

/// The same characters in an HTTP/2 `:path` (curl's default for https sends them as
/// typed): served, and percent-encoded to the upstream as over HTTP/1.1 (the h2 crate
/// reset such a stream before third_party/h2's patch 14).
#[test]
fn unencoded_quotes_and_angle_brackets_in_an_http2_path_are_served() {
    let raw = RawUpstream::start();
    let h2 = port_in_range();
    let (_gate, _http) = start(&raw, &format!("listen 127.0.0.1:{h2} http2;"));
    for (target, upstream) in [
        ("/raw/s?q=\"x\"", "/raw/s?q=%22x%22"),
        ("/raw/s?q={\"a\":1}", "/raw/s?q={%22a%22:1}"),
        ("/raw/a<b>`c\"", "/raw/a%3Cb%3E%60c\""),
    ] {
        let out = crate::support::curl(&[
            "-s",
            "-g",
            "--path-as-is",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "-H",
            "Host: compat.test",
            &format!("http://127.0.0.1:{h2}{target}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "200 2", "{target}");
        assert_eq!(raw.last_request_line(), format!("GET {upstream} HTTP/1.1"));
    }
}

/// Regex captures `$1`… outside `rewrite`, as nginx sets them: a regex location's for
/// its `return` and its `proxy_pass`, an `if`'s (server and location) for a `return` and
/// a `set`, and a `map` key's for its value (before 2026-12-04 `-t` refused each with
/// `unknown "1" variable`).
#[test]
fn regex_captures_serve_return_proxy_pass_set_and_map_values() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "if ($http_x_www ~* ^www\\.(.*)$) {{ return 301 https://$1$request_uri; }}
        location ~ ^/old/(.*)$ {{ return 301 /new/$1; }}
        location ~ ^/user/(\\d+)/profile$ {{ proxy_pass http://{up}/profile?id=$1; }}
        location /sub/ {{ if ($http_x_sub ~ \"^(.+)\\.example\\.com$\") {{ set $sub $1; }}
            return 200 \"sub=$sub\"; }}
        location /m/ {{ return 200 \"map=$mapped\"; }}
        location ~ ^/app/(?<app>[a-z]+)/ {{ return 200 \"app=$app\"; }}
        location ~ ^/clr/(\\w+) {{ if ($arg_a ~ ^(k)) {{ }} return 200 \"1=$1\"; }}
        location ~ ^/rw/(\\w+) {{ rewrite ^/nomatch$ /x; return 200 \"1=$1\"; }}
        location ~ ^/neg/(\\w+) {{ if ($arg_a !~ ^(y+)) {{ return 200 \"in 1=$1\"; }}
            return 200 \"out 1=$1\"; }}
        location /gl/ {{ return 200 \"$gitlab_temp_request_uri_1\"; }}"
    );
    // GitLab's log filter (its source install's nginx config), named groups in a map.
    let http_extra = "map $uri $mapped { ~^/m/(?:a|b)/(.*)$ /mapped/$1; default none; }
        map $request_uri $gitlab_temp_request_uri_1 { default $request_uri;
            ~(?i)^(?<start>.*)(?<temp>[\\?&]private[\\-_]token)=[^&]*(?<rest>.*)$ \"$start$temp=[FILTERED]$rest\"; }";
    let (gate, http) = start_with(&raw, http_extra, &extra);
    let r = get_with(http, "/x?y=1", "X-Www: www.example.org\r\n");
    assert_eq!(r.status, 301, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(header(&r, "location"), Some("https://example.org/x?y=1"));
    let r = get_with(http, "/old/a/b.html", "");
    assert_eq!(r.status, 301, "{r:?}");
    assert!(
        header(&r, "location").is_some_and(|l| l.ends_with("/new/a/b.html")),
        "{r:?}"
    );
    let r = get_with(http, "/user/42/profile", "");
    assert_eq!(r.status, 200, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(raw.last_request_line(), "GET /profile?id=42 HTTP/1.1");
    assert_eq!(
        get_with(http, "/sub/", "X-Sub: shop.example.com\r\n").body,
        "sub=shop"
    );
    assert_eq!(get_with(http, "/sub/", "X-Sub: other.org\r\n").body, "sub=");
    assert_eq!(get_with(http, "/m/b/c/d", "").body, "map=/mapped/c/d");
    assert_eq!(get_with(http, "/m/z", "").body, "map=none");
    assert_eq!(get_with(http, "/app/shop/x", "").body, "app=shop");
    // A rewrite-module regex that does not match empties `$1`… (nginx's
    // `r->ncaptures = 0`); a negated one that matches sets them.
    assert_eq!(get_with(http, "/clr/x", "").body, "1=");
    assert_eq!(get_with(http, "/clr/x?a=k", "").body, "1=k");
    assert_eq!(get_with(http, "/rw/x", "").body, "1=");
    assert_eq!(get_with(http, "/neg/x?a=yy", "").body, "out 1=yy");
    assert_eq!(get_with(http, "/neg/x?a=z", "").body, "in 1=");
    assert_eq!(
        get_with(http, "/gl/x?private_token=secret&a=1", "").body,
        "/gl/x?private_token=[FILTERED]&a=1"
    );
    assert_eq!(get_with(http, "/gl/y?a=1", "").body, "/gl/y?a=1");
}

/// `return CODE TEXT` is typed as nginx types it: by the URI's extension through
/// `types` (Debian's `include mime.types`), else `default_type` (Debian's
/// `application/octet-stream`; a health check's `default_type application/json;`), and
/// `text/plain` where neither is written. Before 2026-12-04 both were ignored and every
/// such answer was `text/plain`.
#[test]
fn return_text_is_typed_by_types_and_default_type() {
    let raw = RawUpstream::start();
    let extra = "location /t/ { return 200 'text'; }
        location = /healthz { default_type application/json; return 200 '{\"status\":\"ok\"}'; }";
    let http_extra = "types { text/html html htm; application/json json; } \
        default_type application/octet-stream;";
    let (gate, http) = start_with(&raw, http_extra, extra);
    let get_type = |target: &str| {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, 200, "{target}: {r:?}\n{}", gate.server.log_text());
        header(&r, "content-type").map(str::to_owned)
    };
    assert_eq!(
        get_type("/t/a").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(get_type("/t/a.json").as_deref(), Some("application/json"));
    assert_eq!(get_type("/t/a.HTM").as_deref(), Some("text/html"));
    assert_eq!(get_type("/healthz").as_deref(), Some("application/json"));
    // No `types` or `default_type` anywhere: nginx's text/plain.
    let raw2 = RawUpstream::start();
    let (gate2, http2) = start(&raw2, "location /t/ { return 200 'text'; }");
    let r = get(http2, "compat.test", "/t/x.json");
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain"),
        "{}",
        gate2.server.log_text()
    );
}

/// `proxy_pass` whose scheme is a variable's too, as linuxserver/SWAG's proxy confs and
/// Authelia's snippet write it (`set $backend http://…; proxy_pass $backend;`,
/// `proxy_pass $upstream_proto://$upstream_app:$upstream_port;`): the URL is read per
/// request; a value that is not `http://` or `https://` is nginx's 500 (before
/// 2026-12-04 `-t` refused both forms with "invalid URL prefix").
#[test]
fn proxy_pass_with_the_scheme_in_a_variable() {
    let raw = RawUpstream::start();
    let (ip, port) = (raw.addr.ip(), raw.addr.port());
    let extra = format!(
        "location /whole/ {{ set $backend http://{ip}:{port}; proxy_pass $backend; }}
        location /parts/ {{ set $upstream_proto http; set $upstream_app {ip};
            set $upstream_port {port};
            proxy_pass $upstream_proto://$upstream_app:$upstream_port; }}
        location /bad/ {{ set $bad ftp://{ip}:{port}; proxy_pass $bad; }}
        location /query/ {{ set $q \"http://{ip}:{port}?q=1\"; proxy_pass $q; }}
        location ~ ^/sp/(.*)$ {{ set $s http://{ip}:{port}/q/$1; proxy_pass $s; }}"
    );
    let (gate, http) = start(&raw, &extra);
    for target in ["/whole/a?x=1", "/parts/b"] {
        let r = get(http, "compat.test", target);
        assert_eq!(r.status, 200, "{target}: {r:?}\n{}", gate.server.log_text());
        assert_eq!(raw.last_request_line(), format!("GET {target} HTTP/1.1"));
    }
    let before = raw.count();
    assert_eq!(get(http, "compat.test", "/bad/c").status, 500);
    assert_eq!(raw.count(), before);
    assert!(gate.server.log_text().contains("invalid URL prefix"));
    // Arguments right after the host: the URI is `/?…`, as nginx sends it.
    assert_eq!(get(http, "compat.test", "/query/x").status, 200);
    assert_eq!(raw.last_request_line(), "GET /?q=1 HTTP/1.1");
    // A decoded capture with a space goes percent-encoded (it was a 500).
    assert_eq!(get(http, "compat.test", "/sp/a%20b").status, 200);
    assert_eq!(raw.last_request_line(), "GET /q/a%20b HTTP/1.1");
}

/// A server-level `if` with `set` and `rewrite`, as nginx runs them: the AWS load
/// balancer's redirect (`set $redirect 0; if (…) { set $redirect 1; } if ($redirect =
/// 1) { return 301 …; }`) and the old www redirect with `rewrite … permanent` (before
/// 2026-12-04 `-t` accepted only `return` in a server's `if`).
#[test]
fn server_if_blocks_with_set_and_rewrite() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "set $redirect 0;
        if ($http_x_forwarded_proto != 'https') {{ set $redirect 1; }}
        if ($http_user_agent ~* ELB-HealthChecker) {{ set $redirect 0; }}
        if ($redirect = 1) {{ return 301 https://$host$request_uri; }}
        if ($http_x_www = 'yes') {{ rewrite ^/(.*)$ https://example.org/$1 permanent; }}
        location / {{ proxy_pass http://{up}; }}"
    );
    let (gate, http) = start(&raw, &extra);
    let r = get_with(http, "/a?b=1", "");
    assert_eq!(r.status, 301, "{r:?}\n{}", gate.server.log_text());
    assert_eq!(header(&r, "location"), Some("https://compat.test/a?b=1"));
    let r = get_with(http, "/a", "X-Forwarded-Proto: https\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_with(http, "/health", "User-Agent: ELB-HealthChecker/2.0\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_with(http, "/p/q", "X-Forwarded-Proto: https\r\nX-Www: yes\r\n");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(header(&r, "location"), Some("https://example.org/p/q"));
}

/// `break` stops the rewrite-module directives where it is: in a location (or its
/// `if`) the request is served there by its `proxy_pass`, a later `return` or `rewrite`
/// not run; in a server, its later `rewrite`s and `return` are skipped (before
/// 2026-12-04 `-t` refused `break`).
#[test]
fn break_stops_the_rewrite_directives() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "if ($http_x_stop) {{ break; }}
        rewrite ^/srv/(.*)$ /moved/$1 last;
        location /b/ {{ if ($http_x_pass) {{ break; }} return 403; proxy_pass http://{up}; }}
        location /moved/ {{ return 200 moved; }}
        location /srv/ {{ proxy_pass http://{up}; }}"
    );
    let (gate, http) = start(&raw, &extra);
    assert_eq!(
        get_with(http, "/b/x", "").status,
        403,
        "{}",
        gate.server.log_text()
    );
    let r = get_with(http, "/b/x", "X-Pass: 1\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(raw.last_request_line(), "GET /b/x HTTP/1.1");
    assert_eq!(get_with(http, "/srv/y", "").body, "moved");
    let r = get_with(http, "/srv/y", "X-Stop: 1\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(raw.last_request_line(), "GET /srv/y HTTP/1.1");
}

/// `$server_addr` on a wildcard `listen PORT` is the address the client connected to,
/// as nginx gives it (it was `0.0.0.0` before 2026-12-04); on a listen address, that one.
#[test]
fn server_addr_is_the_address_the_client_reached() {
    let raw = RawUpstream::start();
    let wild = port_in_range();
    let extra =
        format!("listen {wild}; location = /addr {{ return 200 \"$server_addr:$server_port\"; }}");
    let (gate, http) = start(&raw, &extra);
    let ask = |ip: &str, port: u16| {
        let mut s = TcpStream::connect((ip, port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /addr HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n")
            .expect("write");
        read_response(&mut s).body
    };
    assert_eq!(
        ask("127.0.0.2", wild),
        format!("127.0.0.2:{wild}"),
        "{}",
        gate.server.log_text()
    );
    assert_eq!(ask("127.0.0.1", wild), format!("127.0.0.1:{wild}"));
    assert_eq!(ask("127.0.0.1", http), format!("127.0.0.1:{http}"));
}

/// `access_log … if=CONDITION` (nginx's documented conditional logging: a `map` of
/// `$status` that leaves 2xx and 3xx out): a request is logged unless the condition is
/// empty or `0` (before 2026-12-04 `-t` refused the parameter).
#[test]
fn access_log_if_leaves_out_requests_whose_condition_is_empty_or_zero() {
    let raw = RawUpstream::start();
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("cond.log");
    let http_extra = "map $status $loggable { ~^[23] 0; default 1; }
        log_format st '$status $request_uri';";
    let server_extra = format!(
        "access_log {} st if=$loggable;
        location /ok/ {{ return 200 ok; }}
        location /gone/ {{ return 410; }}",
        log.display()
    );
    let (gate, http) = start_with(&raw, http_extra, &server_extra);
    for target in ["/ok/1", "/gone/2", "/ok/3", "/missing/4"] {
        get(http, "compat.test", target);
    }
    let text = crate::support::poll(
        Duration::from_secs(10),
        || format!("two lines in {}: {}", log.display(), gate.server.log_text()),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.lines().count() >= 2).then_some(text)
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    assert_eq!(text, "410 /gone/2\n404 /missing/4\n");
}

/// h5bp's "deny dotfiles but the ACME challenge" rule, `location ~* /\.(?!well-known\/)
/// { deny all; }`, needs PCRE's look-ahead: served as nginx serves it (before 2026-12-04
/// `-t` refused the regex).
#[test]
fn a_location_regex_with_look_ahead_works() {
    let raw = RawUpstream::start();
    let up = raw.addr;
    let extra = format!(
        "location ~* /\\.(?!well-known\\/) {{ deny all; }}
        location /ua/ {{ if ($http_x_t ~ \"^(?!ok)\") {{ return 418; }} return 200 fine; }}
        location / {{ proxy_pass http://{up}; }}"
    );
    let (gate, http) = start(&raw, &extra);
    for (target, status) in [
        ("/.git/config", 403),
        ("/app/.ENV", 403),
        ("/.well-known/acme-challenge/t", 200),
        ("/index.html", 200),
    ] {
        let r = get(http, "compat.test", target);
        assert_eq!(
            r.status,
            status,
            "{target}: {r:?}\n{}",
            gate.server.log_text()
        );
    }
    // An `if` regex with look-ahead too.
    assert_eq!(get_with(http, "/ua/x", "X-T: ok\r\n").status, 200);
    assert_eq!(get_with(http, "/ua/x", "X-T: no\r\n").status, 418);
}

/// A declared body over `client_max_body_size` is a 413 also where the location answers
/// itself (`return`), as nginx checks it when it finds the location, before the
/// location's rewrite phase (it was the `return`'s 200 before 2026-12-04).
#[test]
fn a_body_too_large_for_a_returning_location_is_413() {
    let raw = RawUpstream::start();
    let (gate, http) = start(
        &raw,
        "location /r/ { client_max_body_size 1k; return 200 ok; }",
    );
    let body = "x".repeat(2000);
    let r = plain(
        http,
        &format!(
            "POST /r/ HTTP/1.1\r\nHost: compat.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.status, 413, "{r:?}\n{}", gate.server.log_text());
    let r = plain(
        http,
        "POST /r/ HTTP/1.1\r\nHost: compat.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// Requests pipelined after a body the answer did not read (a `return` location, 50 kB)
/// are served: the body is read and dropped as nginx discards it, and the connection
/// goes on (before 2026-12-04 it closed after the first answer and the others were lost).
#[test]
fn requests_pipelined_after_an_unread_body_are_served() {
    let raw = RawUpstream::start();
    let (gate, http) = start(&raw, "location /r/ { return 200 ok; }");
    let body = "x".repeat(50_000);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let requests = format!(
        "POST /r/a HTTP/1.1\r\nHost: compat.test\r\nContent-Length: {}\r\n\r\n{body}\
         GET /r/b HTTP/1.1\r\nHost: compat.test\r\n\r\n\
         GET /r/c HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(requests.as_bytes()).expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        3,
        "{text}\n{}",
        gate.server.log_text()
    );
}
