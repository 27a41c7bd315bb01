//! A TLS 1.3 client written by hand (TLS_AES_128_GCM_SHA256, X25519; aws-lc-rs for the
//! primitives), just enough to send malformed *encrypted* records and read the server's
//! encrypted alert: it does the key exchange, reads and decrypts the server's flight up to
//! its Finished (without checking the certificate: the probes test the server's record
//! layer, not its identity), and then sends whatever a probe wants under the client's
//! handshake keys. The server writes under its application keys after its Finished, so
//! its alert is read with those.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{agreement, digest, hkdf, hmac, rand};

use super::tlsraw::{ALERT, APPLICATION_DATA, CCS, End, HANDSHAKE, read_answer, record};

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1).
fn expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Vec<u8> {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, secret);
    let full = format!("tls13 {label}");
    let info = [
        &(len as u16).to_be_bytes()[..],
        &[full.len() as u8],
        full.as_bytes(),
        &[context.len() as u8],
        context,
    ];
    let mut out = vec![0; len];
    prk.expand(&info, Len(len))
        .expect("expand")
        .fill(&mut out)
        .expect("fill");
    out
}

fn extract(salt: &[u8], ikm: &[u8]) -> Vec<u8> {
    // The PRK's bytes: HKDF-Extract is HMAC(salt, ikm).
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    hmac::sign(&key, ikm).as_ref().to_vec()
}

fn hash(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

/// One direction's record protection.
struct Keys {
    key: LessSafeKey,
    iv: Vec<u8>,
    seq: u64,
}

impl Keys {
    fn new(secret: &[u8]) -> Keys {
        let key = expand_label(secret, "key", &[], 16);
        let iv = expand_label(secret, "iv", &[], 12);
        Keys {
            key: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).expect("key")),
            iv,
            seq: 0,
        }
    }

    fn nonce(&mut self) -> Nonce {
        let mut n = [0u8; 12];
        n.copy_from_slice(&self.iv);
        for (i, b) in self.seq.to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// A TLSCiphertext record of `inner` (TLSInnerPlaintext: content, type, padding).
    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let len = inner.len() + 16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut body = inner.to_vec();
        let nonce = self.nonce();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(header), &mut body)
            .expect("seal");
        [header.to_vec(), body].concat()
    }

    /// (inner content type, content) of an encrypted record's payload.
    fn open(&mut self, payload: &[u8]) -> Option<(u8, Vec<u8>)> {
        let len = payload.len();
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut body = payload.to_vec();
        let nonce = self.nonce();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut body)
            .ok()?;
        let end = plain.iter().rposition(|&b| b != 0)?;
        Some((plain[end], plain[..end].to_vec()))
    }
}

/// A TLS 1.3 connection whose server flight has been read up to its Finished.
pub struct Tls13Probe {
    pub s: TcpStream,
    client_hs: Keys,
    server_ap: Keys,
    client_hs_secret: Vec<u8>,
    transcript: Vec<u8>,
}

/// What the server answered a probe: its (decrypted) alert, and how the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// (level, description) of the server's alert, if one came.
    pub alert: Option<(u8, u8)>,
    pub end: End,
}

fn ext(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn handshake_message(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

/// Handshake messages (header included) in `bytes`; the rest stays.
fn split_messages(bytes: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([0, bytes[1], bytes[2], bytes[3]]) as usize;
        if bytes.len() < 4 + len {
            break;
        }
        out.push(bytes.drain(..4 + len).collect());
    }
    out
}

impl Tls13Probe {
    /// Connect to `addr` as `localhost` and read the server's flight.
    pub fn connect(addr: SocketAddr) -> Tls13Probe {
        let rng = rand::SystemRandom::new();
        let private =
            agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).expect("x25519");
        let public = private.compute_public_key().expect("public");
        let mut private = Some(private);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(32);
        body.extend_from_slice(&[0x11; 32]);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        let mut exts = Vec::new();
        ext(&mut exts, 0, b"\x00\x0c\x00\x00\x09localhost");
        ext(&mut exts, 10, &[0, 2, 0x00, 0x1d]);
        ext(&mut exts, 13, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x08, 0x09]);
        ext(&mut exts, 43, &[2, 0x03, 0x04]);
        let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
        share.extend_from_slice(public.as_ref());
        ext(&mut exts, 51, &share);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let hello = handshake_message(1, &body);
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&record(HANDSHAKE, &hello)).expect("hello");

        let mut transcript = hello;
        let mut pending = Vec::new();
        let mut hs_secret = Vec::new();
        let mut client_hs_secret = Vec::new();
        let mut server_hs: Option<Keys> = None;
        let mut done = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done {
            assert!(Instant::now() < deadline, "no server Finished within 10 s");
            let answer = read_answer(&mut s, Duration::from_millis(300));
            assert!(
                !answer.records.is_empty() || answer.end == End::Open,
                "server closed during its flight: {answer:?}"
            );
            for (ct, payload) in answer.records {
                match ct {
                    CCS => {}
                    HANDSHAKE if server_hs.is_none() => {
                        pending.extend_from_slice(&payload);
                        for m in split_messages(&mut pending) {
                            assert_eq!(m[0], 2, "ServerHello expected: {m:?}");
                            transcript.extend_from_slice(&m);
                            let peer = agreement::UnparsedPublicKey::new(
                                &agreement::X25519,
                                server_share(&m).to_vec(),
                            );
                            let shared = agreement::agree_ephemeral(
                                private.take().expect("one ServerHello"),
                                &peer,
                                (),
                                |k| Ok::<_, ()>(k.to_vec()),
                            )
                            .expect("ecdhe");
                            let early = extract(&[0; 32], &[0; 32]);
                            let derived = expand_label(&early, "derived", &hash(&[]), 32);
                            hs_secret = extract(&derived, &shared);
                            let th = hash(&transcript);
                            client_hs_secret = expand_label(&hs_secret, "c hs traffic", &th, 32);
                            let server_secret = expand_label(&hs_secret, "s hs traffic", &th, 32);
                            server_hs = Some(Keys::new(&server_secret));
                        }
                    }
                    APPLICATION_DATA if server_hs.is_some() => {
                        let keys = server_hs.as_mut().expect("keys");
                        let (inner, content) = keys.open(&payload).expect("decrypt");
                        assert_eq!(inner, HANDSHAKE, "server flight");
                        pending.extend_from_slice(&content);
                        for m in split_messages(&mut pending) {
                            transcript.extend_from_slice(&m);
                            done |= m[0] == 20;
                        }
                    }
                    other => panic!("unexpected record in the server's flight: {other:?}"),
                }
            }
        }
        let derived = expand_label(&hs_secret, "derived", &hash(&[]), 32);
        let master = extract(&derived, &[0; 32]);
        let server_ap = expand_label(&master, "s ap traffic", &hash(&transcript), 32);
        Tls13Probe {
            s,
            client_hs: Keys::new(&client_hs_secret),
            server_ap: Keys::new(&server_ap),
            client_hs_secret,
            transcript,
        }
    }

    /// The client's correct Finished message (header included).
    pub fn finished(&self) -> Vec<u8> {
        let key = expand_label(&self.client_hs_secret, "finished", &[], 32);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let verify = hmac::sign(&key, &hash(&self.transcript));
        handshake_message(20, verify.as_ref())
    }

    /// A handshake message of type `typ` with `body`.
    pub fn message(typ: u8, body: &[u8]) -> Vec<u8> {
        handshake_message(typ, body)
    }

    /// Send an encrypted record whose TLSInnerPlaintext is `inner` (content, type, zeros).
    pub fn send_inner(&mut self, inner: &[u8]) {
        let rec = self.client_hs.seal(inner);
        let _ = self.s.write_all(&rec);
    }

    /// Send `content` of type `ct` encrypted, with `pad` zeros of padding.
    pub fn send(&mut self, ct: u8, content: &[u8], pad: usize) {
        let mut inner = content.to_vec();
        inner.push(ct);
        inner.resize(inner.len() + pad, 0);
        self.send_inner(&inner);
    }

    /// Send bytes as they are (plaintext records).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// The server's answer: its alert (decrypted), and how the connection ended.
    pub fn verdict(&mut self) -> Verdict {
        let answer = read_answer(&mut self.s, Duration::from_secs(5));
        let mut alert = None;
        for (ct, payload) in &answer.records {
            if *ct == ALERT && payload.len() == 2 {
                alert = Some((payload[0], payload[1]));
                break;
            }
            if *ct == APPLICATION_DATA
                && let Some((ALERT, content)) = self.server_ap.open(payload)
                && content.len() == 2
            {
                alert = Some((content[0], content[1]));
                break;
            }
        }
        Verdict {
            alert,
            end: answer.end,
        }
    }
}

/// The X25519 key share of a ServerHello message.
fn server_share(m: &[u8]) -> &[u8] {
    let body = &m[4..];
    let sid_len = body[34] as usize;
    let mut at = 35 + sid_len + 3; // cipher suite, compression
    at += 2; // extensions length
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let data = &body[at + 4..at + 4 + len];
        if typ == 51 {
            return &data[4..];
        }
        at += 4 + len;
    }
    panic!("no key share in the ServerHello")
}
