//! TLS records written by hand: a ClientHello of any size, framed over records of any
//! size, sent over a plain TCP socket; and what the server answers (its plaintext
//! records, whether an alert came, and how the connection ended).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const HANDSHAKE: u8 = 22;
pub const ALERT: u8 = 21;
pub const CCS: u8 = 20;
pub const APPLICATION_DATA: u8 = 23;

pub const UNEXPECTED_MESSAGE: u8 = 10;
pub const RECORD_OVERFLOW: u8 = 22;
pub const DECODE_ERROR: u8 = 50;
pub const DECRYPT_ERROR: u8 = 51;
pub const NO_RENEGOTIATION: u8 = 100;

/// The TLS version a raw ClientHello offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// TLS 1.3 only (supported_versions, an X25519 key share).
    Tls13,
    /// TLS 1.2 only (no supported_versions).
    Tls12,
    /// TLS 1.3 only, its one key share for ffdhe2048, which rustls does not take, with
    /// X25519 among the groups: the server must answer with a HelloRetryRequest.
    Tls13Retry,
    /// The second ClientHello after [`Offer::Tls13Retry`]'s retry request: the same
    /// groups, an X25519 key share.
    Tls13Retried,
}

/// ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256: what [`client_hello`] offers.
pub const SIGALGS: &[u16] = &[0x0403, 0x0804];

fn ext(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).expect("ext").to_be_bytes());
    out.extend_from_slice(data);
}

/// A ClientHello handshake message (with its 4-byte header) for `localhost`, padded
/// with a padding extension to `size` bytes in all (at least its natural size).
pub fn client_hello(offer: Offer, size: usize) -> Vec<u8> {
    client_hello_signed(offer, SIGALGS, size)
}

/// [`client_hello`] offering the signature schemes `sigalgs`.
pub fn client_hello_signed(offer: Offer, sigalgs: &[u16], size: usize) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x11; 32]); // legacy session id (middlebox compatibility)
    let suites: &[u8] = match offer {
        Offer::Tls13 | Offer::Tls13Retry | Offer::Tls13Retried => {
            &[0x13, 0x01, 0x13, 0x02, 0x13, 0x03]
        }
        Offer::Tls12 => &[0xc0, 0x2b, 0xc0, 0x2c, 0xc0, 0x2f, 0xc0, 0x30, 0xcc, 0xa9],
    };
    body.extend_from_slice(&u16::try_from(suites.len()).expect("suites").to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    ext(&mut exts, 0, b"\x00\x0c\x00\x00\x09localhost"); // server_name
    match offer {
        // groups: ffdhe2048, x25519
        Offer::Tls13Retry | Offer::Tls13Retried => {
            ext(&mut exts, 10, &[0, 4, 0x01, 0x00, 0x00, 0x1d]);
        }
        // groups: x25519, secp256r1
        _ => ext(&mut exts, 10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]),
    }
    ext(&mut exts, 11, &[1, 0]); // ec_point_formats: uncompressed
    let schemes: Vec<u8> = sigalgs.iter().flat_map(|s| s.to_be_bytes()).collect();
    let mut signature_algorithms = u16::try_from(schemes.len())
        .expect("schemes")
        .to_be_bytes()
        .to_vec();
    signature_algorithms.extend_from_slice(&schemes);
    ext(&mut exts, 13, &signature_algorithms);
    ext(&mut exts, 0xff01, &[0]); // renegotiation_info (empty)
    if offer != Offer::Tls12 {
        ext(&mut exts, 43, &[2, 0x03, 0x04]); // supported_versions: TLS 1.3
        let share = match offer {
            Offer::Tls13Retry => {
                let mut share = vec![1, 4, 0x01, 0x00, 1, 0];
                share.extend_from_slice(&[0x42; 256]); // a 2048-bit group element
                share
            }
            _ => {
                let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
                share.extend_from_slice(&[0x42; 32]); // any 32 bytes are an X25519 key
                share
            }
        };
        ext(&mut exts, 51, &share); // key_share
    }
    // header (4) + body + extensions length (2) + exts + padding header (4) + padding
    let natural = 4 + body.len() + 2 + exts.len() + 4;
    let pad = size.saturating_sub(natural);
    ext(&mut exts, 21, &vec![0; pad]);
    body.extend_from_slice(&u16::try_from(exts.len()).expect("extensions").to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![1u8];
    msg.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// One record of type `ct` (any length: the header says what the payload is).
pub fn record(ct: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ct, 0x03, 0x03];
    out.extend_from_slice(&u16::try_from(payload.len()).expect("record").to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `payload` as records of type `ct` of at most `max` bytes each.
pub fn records(ct: u8, payload: &[u8], max: usize) -> Vec<u8> {
    payload.chunks(max).flat_map(|c| record(ct, c)).collect()
}

/// How the server's side of the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// FIN.
    Closed,
    /// RST (or any other read error).
    Reset,
    /// Still open when we stopped waiting.
    Open,
}

/// What the server sent back to a probe.
#[derive(Debug, Clone)]
pub struct Answer {
    /// (content type, payload) of each whole record received.
    pub records: Vec<(u8, Vec<u8>)>,
    pub end: End,
}

impl Answer {
    /// The (level, description) of the first plaintext alert.
    pub fn alert(&self) -> Option<(u8, u8)> {
        self.records
            .iter()
            .find(|(ct, p)| *ct == ALERT && p.len() == 2)
            .map(|(_, p)| (p[0], p[1]))
    }

    /// Whether the server answered with a handshake flight (a ServerHello).
    pub fn server_hello(&self) -> bool {
        self.records
            .first()
            .is_some_and(|(ct, p)| *ct == HANDSHAKE && p.first() == Some(&2))
    }
}

/// Connect to `addr`, send `bytes`, and read what comes back until the server closes,
/// an alert has come, or `within`.
pub fn probe(addr: SocketAddr, bytes: &[u8], within: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(bytes);
    read_answer(&mut s, within)
}

/// Read records from `s` as in [`probe`].
pub fn read_answer(s: &mut TcpStream, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let end = loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break End::Open;
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => break End::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break End::Open;
            }
            Err(_) => break End::Reset,
        }
        if parse(&buf).iter().any(|(ct, _)| *ct == ALERT) {
            // Whatever follows the alert (FIN or RST) is read too, briefly.
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let end = match s.read(&mut chunk) {
                Ok(0) => End::Closed,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    End::Open
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    End::Open
                }
                Err(_) => End::Reset,
            };
            break end;
        }
    };
    Answer {
        records: parse(&buf),
        end,
    }
}

fn parse(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if buf.len() < 5 + len {
            break;
        }
        out.push((buf[0], buf[5..5 + len].to_vec()));
        buf = &buf[5 + len..];
    }
    out
}
