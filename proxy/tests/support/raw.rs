//! Raw clients for hostile input: HTTP/1.1 bytes and HTTP/2 frames written by hand over a
//! rustls connection (a real TLS client, no HTTP library in between), and hsmgate on an
//! nginx configuration with an upstream group of two echo servers. Everything started
//! here listens on ports 22000-22999.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::client::client_config;
use super::hsm::{KeyType, TestToken};
use super::nginx::Server;

/// A port in 22000-22999 that nothing listens on now.
pub fn port_in_range() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 22000 + (std::process::id() % 25) as u16 * 40;
    for _ in 0..1000 {
        let p = 22000 + (base - 22000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 1000;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in 22000-22999");
}

/// The built-in echo upstream `name` on a port in range.
pub fn upstream_in_range(name: &'static str) -> SocketAddr {
    let socket = loop {
        if let Ok(s) = std::net::TcpListener::bind(("127.0.0.1", port_in_range())) {
            break s;
        }
    };
    super::net::serve_upstream(socket, name)
}

/// hsmgate on an nginx configuration: server `localhost` proxies to the upstream group
/// `app` (servers A and B, `max_fails=1 fail_timeout=10s`), server `evil.invalid` to the
/// same group with `X-Server: evil`; `http_extra` goes into the `http` block.
pub struct Gate {
    pub token: TestToken,
    pub server: Server,
    pub addr: SocketAddr,
    pub prefix: PathBuf,
}

impl Gate {
    pub fn start(upstreams: &[SocketAddr], http_extra: &str) -> Gate {
        let token = TestToken::new(KeyType::EcP256);
        let prefix = token.path().join("gate");
        std::fs::create_dir_all(prefix.join("logs")).expect("logs dir");
        let port = port_in_range();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("server {u} max_fails=1 fail_timeout=10s; "))
            .collect();
        let key = format!(
            "pkcs11:token={};object=tls;type=private?pin-source=file:{}",
            token.label,
            token.pin_file.display()
        );
        let conf = prefix.join("nginx.conf");
        let site = |name: &str, extra: &str| {
            format!(
                "server {{ listen 127.0.0.1:{port} ssl http2; server_name {name};
                    ssl_certificate {chain}; ssl_certificate_key \"{key}\";
                    location / {{ proxy_pass http://app; proxy_set_header Host $host; {extra} }} }}\n",
                chain = token.chain_pem.display()
            )
        };
        let text = format!(
            "pid logs/hsmgate.pid;\nenv SOFTHSM2_CONF={softhsm};\nevents {{ worker_connections 256; }}\n\
             http {{ access_log off; {http_extra}\n upstream app {{ {servers}}}\n{a}{b}}}\n",
            softhsm = token.conf.display(),
            a = site("localhost", ""),
            b = site("evil.invalid", "proxy_set_header X-Server evil;"),
        );
        std::fs::write(&conf, text).expect("write nginx.conf");
        let module = token.module.clone();
        let server = Server::hsmgate_with_env(
            &prefix,
            &conf,
            &[port],
            &[("HSMGATE_PKCS11_MODULE", module.as_path())],
        );
        Gate {
            token,
            server,
            addr: ([127, 0, 0, 1], port).into(),
            prefix,
        }
    }

    pub fn ca(&self) -> &Path {
        &self.token.ca_pem
    }

    /// A TLS connection offering `alpn`.
    pub fn connect(&self, alpn: &[u8]) -> Tls {
        tls(self.addr, self.ca(), alpn)
    }

    /// Send raw HTTP/1.1 `bytes` on a new connection; the response.
    pub fn h1(&self, bytes: &[u8]) -> H1Response {
        let mut s = self.connect(b"http/1.1");
        s.write_all(bytes).expect("write");
        s.flush().expect("flush");
        read_response(&mut s)
    }
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` as `localhost`, trusting `ca`, offering `alpn`.
pub fn tls(addr: SocketAddr, ca: &Path, alpn: &[u8]) -> Tls {
    let config = client_config(ca, &[alpn]);
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").expect("name"))
            .expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("handshake");
    }
    s
}

/// One HTTP/1.1 response (or what came before the connection ended).
#[derive(Debug, Clone)]
pub struct H1Response {
    /// 0: no status line.
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl H1Response {
    /// The echo upstream's name (`hello from NAME`), if it answered.
    pub fn upstream(&self) -> Option<&str> {
        self.body.lines().next()?.strip_prefix("hello from ")
    }
}

/// Read one response: its head, then `Content-Length` bytes (or to the end).
pub fn read_response(s: &mut impl Read) -> H1Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(usize::MAX);
            if length != usize::MAX && buf.len() >= end + 4 + length {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    H1Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// === HTTP/2 frames ===

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;

pub const PROTOCOL_ERROR: u32 = 1;
pub const FLOW_CONTROL_ERROR: u32 = 3;
pub const STREAM_CLOSED: u32 = 5;
pub const FRAME_SIZE_ERROR: u32 = 6;
pub const COMPRESSION_ERROR: u32 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The last stream a GOAWAY names.
    pub fn last_stream(&self) -> Option<u32> {
        let b = self.payload.get(..4).filter(|_| self.kind == GOAWAY)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
    }

    /// A response's `:status` when the server sent it as a static-table index.
    pub fn status(&self) -> Option<u16> {
        let statuses = [200, 204, 206, 304, 400, 404, 500];
        let first = *self.payload.first()?;
        (self.kind == HEADERS && (0x88..=0x8e).contains(&first))
            .then(|| statuses[usize::from(first - 0x88)])
    }

    /// SETTINGS parameters.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("length");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields (never indexed, no Huffman coding).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        for s in [name, value] {
            assert!(s.len() < 127, "short fields only");
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// A GET of `/` for `authority` plus `extra` fields.
pub fn get(authority: Option<&str>, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![(":method", "GET"), (":scheme", "https"), (":path", path)];
    if let Some(a) = authority {
        fields.push((":authority", a));
    }
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// An HTTP/2 connection that has sent its preface and an empty SETTINGS.
pub struct H2 {
    pub s: Tls,
    buf: Vec<u8>,
}

impl H2 {
    pub fn open(gate: &Gate) -> H2 {
        H2::over(gate.connect(b"h2"))
    }

    /// The preface and SETTINGS on a TLS connection that negotiated `h2`.
    pub fn over(mut s: Tls) -> H2 {
        assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]), "h2 negotiated");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        s.write_all(&frame(SETTINGS, 0, 0, &[])).expect("settings");
        s.flush().expect("flush");
        H2 { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // The peer may have closed already; what it sent is still read.
        let _ = self.s.write_all(bytes);
        let _ = self.s.flush();
    }

    /// The next frame, or None at the end of the connection or after `within`.
    pub fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    // Acknowledge the server's SETTINGS, as a client must.
                    if f.kind == SETTINGS && f.flags & 1 == 0 {
                        self.send(&frame(SETTINGS, 1, 0, &[]));
                    }
                    return Some(f);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .ok()?;
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until `stop` says so (that frame included), the end, or `within`.
    pub fn until(&mut self, within: Duration, stop: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(f) = self.next(left) else { break };
            let last = stop(&f);
            seen.push(f);
            if last {
                break;
            }
        }
        seen
    }
}
