//! The ClientHello, read before any crypto: rustls' [`Acceptor`] parses it (and answers
//! a malformed one with its alert), and [`HelloKind`] says from its raw bytes whether
//! the handshake will need a private-key operation (a full handshake) or is a
//! resumption attempt (a TLS 1.3 PSK, a TLS 1.2 session ticket or session id), which
//! admission control never throttles.
//!
//! rustls' `ClientHello` does not expose the PSK and session-ticket extensions, so the
//! few fields needed are read here from the bytes rustls has already accepted.
//!
//! Before rustls sees them, the records are checked with RFC 8446's alerts
//! ([`check_record`]) and the message is re-framed in 16 KiB records ([`HelloReader`]),
//! so that a legal ClientHello of nearly 64 KiB in small records fits rustls' buffer.
//! A refusal sends its alert and reads what the client still sends for a moment before
//! closing ([`write_and_close`]).

use std::time::Duration;

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest ClientHello we keep bytes of for classification (records included).
const MAX_HELLO: usize = 1 << 17;

/// What a ClientHello asks for, as far as the server's private key is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelloKind {
    /// A full handshake: the server will sign.
    Full,
    /// A resumption attempt: no signature if the server accepts it.
    Resumption,
}

/// Why no ClientHello could be had.
#[derive(Debug)]
pub(crate) enum HelloError {
    /// The socket failed or closed first.
    Io(std::io::Error),
    /// The client closed (or reset) the connection before sending a byte: a TCP health
    /// check (a kubelet's `tcpSocket` probe, a load balancer's), not a handshake.
    Silent,
    /// rustls refused the ClientHello (its alert has been sent).
    Tls(rustls::Error),
    /// Not TLS but plain HTTP on the TLS port (its first byte a letter), with the bytes
    /// read so far.
    Plain(Vec<u8>),
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::Io(e) => write!(f, "reading the ClientHello: {e}"),
            HelloError::Silent => write!(f, "the client closed before sending anything"),
            HelloError::Tls(e) => write!(f, "bad ClientHello: {e}"),
            HelloError::Plain(_) => write!(f, "client sent plain HTTP request to HTTPS port"),
        }
    }
}

/// A ClientHello as [`read`] returns it.
pub(crate) struct Hello {
    /// rustls' view of it.
    pub(crate) accepted: Accepted,
    /// Its bytes, records included (for [`classify`]).
    pub(crate) raw: Vec<u8>,
    /// When the kernel received its first bytes, where the listener timestamps
    /// ([`crate::arrival`]).
    pub(crate) arrived: Option<std::time::SystemTime>,
}

/// A connection's first read, made by the accept loop ([`read_now`]).
pub(crate) struct FirstRead {
    buf: Vec<u8>,
    n: usize,
    arrived: Option<std::time::SystemTime>,
}

/// Read what the connection has sent so far, without waiting (`None`: nothing yet, or
/// an error that [`read`] will meet again). Straight from the socket, not through
/// tokio's readiness, which a socket just accepted does not have yet.
pub(crate) fn read_now(stream: &TcpStream) -> Option<FirstRead> {
    let mut buf = vec![0u8; FIRST_READ];
    match crate::arrival::recv_once(stream, &mut buf) {
        Ok((n, arrived)) if n > 0 => Some(FirstRead { buf, n, arrived }),
        _ => None,
    }
}

/// The ClientHello in `first`, if it is exactly one whole ClientHello that rustls
/// accepts (anything else, [`read`] goes on with).
pub(crate) fn whole(first: &FirstRead) -> Option<Hello> {
    let bytes = &first.buf[..first.n];
    if bytes[0].is_ascii_alphabetic() {
        return None;
    }
    let mut reader = HelloReader::default();
    match reader.push(bytes) {
        Step::Hello(accepted) => Some(Hello {
            accepted: *accepted,
            raw: reader.raw,
            arrived: first.arrived,
        }),
        _ => None,
    }
}

/// Large enough for a whole ClientHello of today's clients (about 2 KB with a
/// post-quantum key share) in one read; a larger one takes more reads. Zeroing a whole
/// record's 16 KB for each connection showed in the profile of a flood.
const FIRST_READ: usize = 4096;

/// Read records until rustls has a whole ClientHello, starting with what the accept
/// loop read (`first`), if anything. Any failure that has an alert sends it and closes
/// the connection without a reset.
pub(crate) async fn read(
    stream: &mut TcpStream,
    first: Option<FirstRead>,
) -> Result<Hello, HelloError> {
    let mut reader = HelloReader::default();
    // The first read also takes the kernel's receive time of the ClientHello.
    let (mut buf, mut n, arrived) = match first {
        Some(FirstRead { buf, n, arrived }) => (buf, n, arrived),
        None => {
            let mut buf = vec![0u8; FIRST_READ];
            let (n, arrived) = crate::arrival::recv_stamped(stream, &mut buf)
                .await
                .map_err(|_| HelloError::Silent)?;
            if n == 0 {
                return Err(HelloError::Silent);
            }
            (buf, n, arrived)
        }
    };
    // Plain HTTP on the TLS port: a request's first byte is a method's letter, where a
    // TLS record starts with its content type (20 to 24; others get RFC 8446's alerts
    // below) and an SSLv2 hello with its high bit. (nginx reads any first byte but a
    // handshake record's or SSLv2's as plain HTTP.)
    if n > 0 && buf[0].is_ascii_alphabetic() {
        buf.truncate(n);
        return Err(HelloError::Plain(buf));
    }
    loop {
        if n == 0 {
            return Err(HelloError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match reader.push(&buf[..n]) {
            Step::More => {}
            Step::Hello(accepted) => {
                return Ok(Hello {
                    accepted: *accepted,
                    raw: reader.raw,
                    arrived,
                });
            }
            Step::Refused { error, alert } => {
                if !alert.is_empty() {
                    let _ = write_and_close(stream, &alert, || ()).await;
                }
                return Err(HelloError::Tls(error));
            }
        }
        n = stream.read(&mut buf).await.map_err(HelloError::Io)?;
    }
}

/// What [`HelloReader::push`] made of the bytes so far.
pub(crate) enum Step {
    /// The ClientHello is not whole yet.
    More,
    /// The ClientHello, accepted by rustls (boxed: it is large).
    Hello(Box<Accepted>),
    /// Refused: the alert to send (may be empty), then close.
    Refused {
        /// Why.
        error: rustls::Error,
        /// The records to send before closing.
        alert: Vec<u8>,
    },
}

/// The ClientHello as bytes arrive. Each record passes [`check_record`] first (the RFC
/// 8446 §5.1 rules that rustls answers with another alert, or none); then the handshake
/// message is joined from its records and handed to rustls' [`Acceptor`] re-framed in
/// records of the largest size. rustls buffers at most 64 KiB of a handshake message's
/// records, headers included: a legal ClientHello of nearly 64 KiB sent in small records
/// would not fit as sent, but fits re-framed.
#[derive(Default)]
pub(crate) struct HelloReader {
    acceptor: Acceptor,
    /// What was received (up to [`MAX_HELLO`] bytes), for [`classify`].
    raw: Vec<u8>,
    /// Received bytes not yet looked at (at most one partial record).
    pending: Vec<u8>,
    /// The handshake bytes of the records so far, and the first record's version.
    joined: Vec<u8>,
    version: Option<[u8; 2]>,
}

/// The largest handshake message rustls accepts (header included).
const MAX_MESSAGE: usize = 0xffff + 4;

impl HelloReader {
    /// Take the next bytes received. After a step other than [`Step::More`], the reader
    /// is done.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Step {
        if self.raw.len() < MAX_HELLO {
            let keep = bytes.len().min(MAX_HELLO - self.raw.len());
            self.raw.extend_from_slice(&bytes[..keep]);
        }
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let step = loop {
            let rest = &self.pending[at..];
            let len = match check_record(rest) {
                Ok(Some(len)) => len,
                Ok(None) => break Step::More,
                Err(refusal) => break refusal.step(),
            };
            let record = &rest[..len];
            at += len;
            let feed: Vec<Vec<u8>> = if record[0] == 22 && record.len() >= 5 {
                self.version.get_or_insert([record[1], record[2]]);
                self.joined.extend_from_slice(&record[5..]);
                let need = self.joined.get(1..4).map(|l| {
                    4 + ((usize::from(l[0]) << 16) | (usize::from(l[1]) << 8) | usize::from(l[2]))
                });
                // The first handshake message must be a ClientHello (RFC 8446 §4): rustls
                // refuses any other without an alert; OpenSSL answers unexpected_message.
                if self.joined.first().is_some_and(|&t| t != CLIENT_HELLO) {
                    break Refusal::new(
                        UNEXPECTED_MESSAGE,
                        "the first handshake message is not a ClientHello",
                    )
                    .step();
                }
                if need.is_some_and(|need| self.joined.len() == need)
                    && let Some(refusal) = version_refusal(&self.joined)
                {
                    break refusal.step();
                }
                match need {
                    // RFC 8446 allows 2^24 bytes; rustls takes 64 KiB (OpenSSL, 128 KiB).
                    Some(need) if need > MAX_MESSAGE => {
                        break Refusal::new(
                            ILLEGAL_PARAMETER,
                            "ClientHello larger than the 64 KiB rustls accepts",
                        )
                        .step();
                    }
                    Some(need) if self.joined.len() > need => {
                        // More than the ClientHello before the server's answer (a
                        // pipelining client): rustls would need it back; refuse.
                        break Refusal::new(
                            UNEXPECTED_MESSAGE,
                            "data after the ClientHello before the server's answer",
                        )
                        .step();
                    }
                    Some(need) if self.joined.len() == need => {}
                    // Not whole yet: wait, up to what rustls would take (past that,
                    // rustls refuses what it is given).
                    _ if self.joined.len() <= MAX_MESSAGE => continue,
                    _ => {}
                }
                let version = self.version.unwrap_or([3, 1]);
                let joined = std::mem::take(&mut self.joined);
                joined
                    .chunks(MAX_PLAINTEXT)
                    .map(|c| {
                        let n = u16::try_from(c.len()).expect("at most 2^14");
                        let mut r = vec![22, version[0], version[1]];
                        r.extend_from_slice(&n.to_be_bytes());
                        r.extend_from_slice(c);
                        r
                    })
                    .collect()
            } else {
                // Not TLS at all: rustls says so.
                vec![record.to_vec()]
            };
            match self.feed(&feed) {
                Step::More => {}
                // 0-RTT offered: what follows the ClientHello at once is the
                // compatibility ChangeCipherSpec and early data, which the server does
                // not take and skips (RFC 8446 §4.2.10); rustls would skip them too.
                // Whole records of those are dropped, and the handshake goes on in 1-RTT.
                Step::Hello(accepted)
                    if parse(&self.raw).is_some_and(|f| f.early_data)
                        && whole_records(
                            &self.pending[at..],
                            &[CHANGE_CIPHER_SPEC, APPLICATION_DATA],
                        ) =>
                {
                    break Step::Hello(accepted);
                }
                Step::Hello(accepted) if at != self.pending.len() => {
                    drop(accepted);
                    break Refusal::new(
                        UNEXPECTED_MESSAGE,
                        "data after the ClientHello before the server's answer",
                    )
                    .step();
                }
                done => break done,
            }
        };
        self.pending.drain(..at);
        step
    }

    /// Hand `records` to rustls, one record and one `accept` at a time (before the first
    /// `accept`, rustls buffers only one record's worth).
    fn feed(&mut self, records: &[Vec<u8>]) -> Step {
        for record in records {
            let mut rest = &record[..];
            while !rest.is_empty() {
                // rustls refuses more than 64 KiB of records with an error (no alert).
                if !matches!(self.acceptor.read_tls(&mut rest), Ok(n) if n > 0) {
                    return Refusal::new(
                        ILLEGAL_PARAMETER,
                        "ClientHello larger than the 64 KiB rustls buffers",
                    )
                    .step();
                }
            }
            match self.acceptor.accept() {
                Ok(Some(accepted)) => return Step::Hello(Box::new(accepted)),
                Ok(None) => {}
                Err((error, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    return Step::Refused { error, alert: out };
                }
            }
        }
        Step::More
    }
}

/// `unexpected_message`, `record_overflow`, `illegal_parameter` (RFC 8446 §6).
const UNEXPECTED_MESSAGE: u8 = 10;
const PROTOCOL_VERSION: u8 = 70;
/// Not an alert: close without answering (a [`Refusal`] of the client's own alert).
const CLOSE_QUIETLY: u8 = 0;
/// The ClientHello's handshake type.
const CLIENT_HELLO: u8 = 1;
const RECORD_OVERFLOW: u8 = 22;
const ILLEGAL_PARAMETER: u8 = 47;

/// The largest plaintext record payload (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 1 << 14;

/// A record refused before rustls sees it: the fatal alert to send, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The alert description.
    pub description: u8,
    /// For the log.
    pub reason: &'static str,
}

impl Refusal {
    fn new(description: u8, reason: &'static str) -> Refusal {
        Refusal {
            description,
            reason,
        }
    }

    fn step(self) -> Step {
        Step::Refused {
            error: rustls::Error::General(self.reason.into()),
            alert: match self.description {
                CLOSE_QUIETLY => Vec::new(),
                _ => self.alert().to_vec(),
            },
        }
    }

    /// The fatal alert in a plaintext record.
    pub(crate) fn alert(&self) -> [u8; 7] {
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, self.description]
    }
}

/// Check the record at the front of `bytes`, received while the ClientHello is read:
/// `Ok(Some(len))` when it is whole and acceptable (`len`: header included), `Ok(None)`
/// when more bytes are needed. Refused, with RFC 8446's alert: a record longer than
/// 2^14 bytes (`record_overflow`), a zero-length handshake record, and any record other
/// than a handshake record (`unexpected_message`: no other content type may come before
/// or inside the ClientHello). The version field and a record that is not TLS at all are
/// left to rustls.
pub(crate) fn check_record(bytes: &[u8]) -> Result<Option<usize>, Refusal> {
    let Some(header) = bytes.get(..5) else {
        return Ok(None);
    };
    let content_type = header[0];
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    // Not a TLS record header at all (plain HTTP on the TLS port, garbage): rustls says so.
    if header[1] != 0x03 {
        return Ok(Some(bytes.len()));
    }
    if len > MAX_PLAINTEXT {
        return Err(Refusal::new(
            RECORD_OVERFLOW,
            "record longer than 2^14 bytes",
        ));
    }
    match content_type {
        // The client's own alert (a close_notify, a fatal one): the connection is over
        // on its side; nothing is answered (RFC 8446 §6).
        21 if len == 2 => Err(Refusal::new(
            CLOSE_QUIETLY,
            "the client sent an alert before its ClientHello",
        )),
        22 if len == 0 => Err(Refusal::new(
            UNEXPECTED_MESSAGE,
            "zero-length handshake record",
        )),
        22 => Ok((bytes.len() >= 5 + len).then_some(5 + len)),
        _ => Err(Refusal::new(
            UNEXPECTED_MESSAGE,
            "a record other than handshake before the ClientHello is whole",
        )),
    }
}

/// A fatal `internal_error` alert in a TLS 1.2-format plaintext record: the answer to a
/// shed handshake (there is no "busy" alert in TLS; this one says the failure is the
/// server's, not the client's).
pub(crate) const SHED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80];

/// A fatal `unrecognized_name` alert (RFC 6066 §3), as above: the answer of a server with
/// `ssl_reject_handshake on` (nginx sends the same).
pub(crate) const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// A fatal `inappropriate_fallback` alert (RFC 7507 §3), as above: the answer to a
/// ClientHello with `TLS_FALLBACK_SCSV` from a client whose newest version is older than
/// the server's (a downgrade, by a client retrying or by an attacker); OpenSSL, and so
/// nginx, send the same.
pub(crate) const INAPPROPRIATE_FALLBACK_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 86];

/// `TLS_FALLBACK_SCSV` (RFC 7507), a cipher suite value that is a signal.
pub(crate) const TLS_FALLBACK_SCSV: u16 = 0x5600;

/// Whether the ClientHello in `raw` signals a fallback (`TLS_FALLBACK_SCSV`) while
/// offering nothing newer than TLS 1.2 to a server whose newest version is TLS 1.3
/// (`tls13`); RFC 7507 §3: the server "MUST respond with a fatal inappropriate_fallback
/// alert". The client's newest version is that of `supported_versions` where it is sent
/// (GREASE and unknown values left out), else its `legacy_version`. A server whose newest
/// is TLS 1.2 never refuses (hsmgate speaks nothing older). Anything unreadable is left
/// to rustls.
pub(crate) fn inappropriate_fallback(raw: &[u8], tls13: bool) -> bool {
    if !tls13 {
        return false;
    }
    let Some(msg) = message(raw) else {
        return false;
    };
    let Some(HelloParts {
        legacy,
        suites,
        exts,
        ..
    }) = hello_parts(&msg)
    else {
        return false;
    };
    let scsv = TLS_FALLBACK_SCSV.to_be_bytes();
    if !suites.chunks_exact(2).any(|s| s == scsv) {
        return false;
    }
    newest_version(legacy, exts).is_some_and(|newest| newest < 0x0304)
}

/// A ClientHello's newest TLS version: the highest of `supported_versions` that is a TLS
/// version (0x03xx), else `legacy`; None when its extensions do not read.
fn newest_version(legacy: usize, exts: &[u8]) -> Option<usize> {
    let mut exts = Cursor(exts);
    let mut listed: Option<usize> = None;
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        if typ == 43 {
            let list = Cursor(data).vec8()?;
            for v in list.chunks_exact(2) {
                let v = usize::from(u16::from_be_bytes([v[0], v[1]]));
                if (0x0300..=0x03ff).contains(&v) {
                    listed = Some(listed.map_or(v, |n| n.max(v)));
                }
            }
        }
    }
    Some(listed.unwrap_or(legacy))
}

/// Write `bytes` and close the connection, giving up after a short while. A client that
/// is still sending has what it sends read and dropped for a moment (a lingering close,
/// as nginx's): closing a socket with unread input makes the kernel send a reset, which
/// can destroy the alert before the client reads it. A client that has sent nothing
/// more (one that waits for the server's answer to its ClientHello, as every client of
/// a shed handshake does) is not waited for: the kernel completes the close, and the
/// connection costs no further wake-up. `answered` is called once the write is done
/// (written, failed or given up), before any lingering.
pub(crate) async fn write_and_close(
    stream: &mut TcpStream,
    bytes: &[u8],
    answered: impl FnOnce(),
) -> std::io::Result<()> {
    match answer_now(stream, bytes) {
        Ok(state) => close_after(stream, bytes, state, answered).await,
        Err(e) => {
            answered();
            Err(e)
        }
    }
}

/// How far [`answer_now`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// Written and the write side shut, nothing unread: dropping the socket closes it.
    Closed,
    /// Written and shut, but the client is still sending: read and drop for a moment
    /// before closing.
    Linger,
    /// This many bytes written; the rest must wait for the socket.
    Rest(usize),
}

/// The part of [`write_and_close`] that does not wait. The answer and the FIN go in one
/// segment: MSG_MORE holds the bytes back (whatever TCP_NODELAY says) until the
/// shutdown, whose FIN the kernel tacks onto them. The client gets the alert and the end
/// of the stream in one packet, and a refused connection costs both sides one delivery
/// less.
pub(crate) fn answer_now(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<Answered> {
    let sock = socket2::SockRef::from(stream);
    let sent = match sock.send_with_flags(bytes, libc::MSG_MORE) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if sent < bytes.len() {
        return Ok(Answered::Rest(sent));
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    Ok(match unread(stream) {
        true => Answered::Linger,
        false => Answered::Closed,
    })
}

/// What is next in a (non-blocking) socket, looked at without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing yet.
    Nothing,
    /// Bytes not read yet.
    Data,
    /// The end of the client's stream.
    Closed,
    /// An error (a reset).
    Failed,
}

fn peek(stream: &TcpStream) -> Next {
    let mut next = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut next) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Nothing,
        Err(_) => Next::Failed,
        Ok(0) => Next::Closed,
        Ok(_) => Next::Data,
    }
}

/// Whether the client has sent bytes not read yet (or the socket failed: the close then
/// lingers as for unread bytes).
fn unread(stream: &TcpStream) -> bool {
    matches!(peek(stream), Next::Data | Next::Failed)
}

/// Whether the client has closed or reset its connection: the end of its stream (or an
/// error) is next in the socket. A client that sent a ClientHello and then its FIN can
/// never finish a handshake, so one waiting for its signature that has done so is not
/// signed for (the HSM's time goes to a client still there).
pub(crate) fn client_gone(stream: &TcpStream) -> bool {
    matches!(peek(stream), Next::Closed | Next::Failed)
}

/// The rest of [`write_and_close`] after [`answer_now`] got as far as `state`.
pub(crate) async fn close_after(
    stream: &mut TcpStream,
    bytes: &[u8],
    state: Answered,
    answered: impl FnOnce(),
) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + LINGER;
    match state {
        Answered::Closed => {
            answered();
            return Ok(());
        }
        Answered::Linger => answered(),
        Answered::Rest(sent) => {
            let rest = async {
                stream.write_all(&bytes[sent..]).await?;
                stream.shutdown().await
            };
            let written = tokio::time::timeout_at(deadline, rest)
                .await
                .unwrap_or(Ok(()));
            answered();
            written?;
            if !unread(stream) {
                return Ok(());
            }
        }
    }
    let linger = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok(())
    };
    tokio::time::timeout_at(deadline, linger)
        .await
        .unwrap_or(Ok(()))
}

/// How long [`write_and_close`] may take in all, and how many bytes it reads after its
/// answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// A whole ClientHello message (`msg`, header included) that offers nothing from TLS 1.2
/// up: `protocol_version` (RFC 8446 Appendix D.2: "If the server only supports versions
/// greater than ClientHello.legacy_version, it MUST abort the handshake with a
/// "protocol_version" alert"). rustls would first miss TLS 1.2's extensions and answer
/// handshake_failure. Anything unreadable is left to rustls.
fn version_refusal(msg: &[u8]) -> Option<Refusal> {
    let HelloParts { legacy, exts, .. } = hello_parts(msg)?;
    if legacy >= 0x0303 {
        return None;
    }
    (newest_version(legacy, exts)? < 0x0303)
        .then(|| Refusal::new(PROTOCOL_VERSION, "the client offers only TLS 1.1 or older"))
}

/// What a ClientHello offers to resume with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer<'a> {
    /// A TLS 1.2 session id (RFC 5246): a session in the server's cache.
    SessionId(&'a [u8]),
    /// A TLS 1.2 session ticket (RFC 5077), or a TLS 1.3 PSK identity (RFC 8446 §4.2.11):
    /// a ticket the server issued, or the key of a session in its cache.
    Ticket(&'a [u8]),
}

/// Whether the ClientHello in `raw` (TLS records as received) attempts a resumption that,
/// if accepted, needs no signature. `tls13`: the server offers TLS 1.3 on this address
/// (then a client offering 1.3 gets 1.3, and only a PSK resumes). `known`: whether the
/// server can resume what is offered ([`server_knows`]): a TLS 1.3-capable client sends a
/// random session id to every server (RFC 8446 §D.4), and a stale or forged ticket gets
/// a full handshake, so neither is a resumption. Anything unreadable is a full
/// handshake.
pub(crate) fn classify(raw: &[u8], tls13: bool, known: impl Fn(Offer<'_>) -> bool) -> HelloKind {
    let Some(h) = parse(raw) else {
        return HelloKind::Full;
    };
    let resumes = if tls13 && h.offers_tls13 {
        h.psk_identities.iter().any(|id| known(Offer::Ticket(id)))
    } else {
        h.ticket.as_deref().is_some_and(|t| known(Offer::Ticket(t)))
            || h.session_id
                .as_deref()
                .is_some_and(|id| known(Offer::SessionId(id)))
    };
    match resumes {
        true => HelloKind::Resumption,
        false => HelloKind::Full,
    }
}

/// Whether `config` can resume `offer`: a session id in its session cache; a ticket its
/// ticketer decrypts, or (TLS 1.3 without tickets) a PSK identity in its cache. A look
/// only: the cache keeps the session (rustls takes it in the handshake).
pub(crate) fn server_knows(config: &rustls::ServerConfig, offer: Offer<'_>) -> bool {
    match offer {
        Offer::SessionId(id) => config.session_storage.get(id).is_some(),
        Offer::Ticket(ticket) => {
            (config.ticketer.enabled() && config.ticketer.decrypt(ticket).is_some())
                || config.session_storage.get(ticket).is_some()
        }
    }
}

/// The fields of a ClientHello that matter for resumption.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fields {
    offers_tls13: bool,
    /// The `pre_shared_key` extension's identities.
    psk_identities: Vec<Vec<u8>>,
    /// A non-empty `session_ticket` extension.
    ticket: Option<Vec<u8>>,
    /// A non-empty legacy session id.
    session_id: Option<Vec<u8>>,
    /// The `early_data` extension (TLS 1.3 0-RTT offered).
    early_data: bool,
}

/// Record content types: ChangeCipherSpec, application data.
const CHANGE_CIPHER_SPEC: u8 = 20;
const APPLICATION_DATA: u8 = 23;

/// Whether `bytes` is whole records (none cut short), each of one of `types`.
fn whole_records(mut bytes: &[u8], types: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..5) else {
            return false;
        };
        let len = 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !types.contains(&header[0]) || bytes.len() < len {
            return false;
        }
        bytes = &bytes[len..];
    }
    true
}

/// A byte cursor that fails (None) on any overrun.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The ClientHello's handshake message (its records' payloads joined), if whole.
fn message(raw: &[u8]) -> Option<Vec<u8>> {
    let mut records = Cursor(raw);
    let mut hs: Vec<u8> = Vec::new();
    loop {
        let content_type = records.u8()?;
        records.take(2)?;
        let body = records.vec16()?;
        if content_type != 22 {
            return None;
        }
        hs.extend_from_slice(body);
        if hs.len() >= 4 {
            let len = Cursor(&hs[1..4]).u24()?;
            if hs.len() >= 4 + len {
                return Some(hs);
            }
        }
    }
}

/// The parts of a ClientHello message read here.
struct HelloParts<'a> {
    /// `legacy_version`.
    legacy: usize,
    /// The legacy session id.
    session_id: &'a [u8],
    /// The cipher suites, two bytes each.
    suites: &'a [u8],
    /// The extensions (empty when it has none).
    exts: &'a [u8],
}

/// A ClientHello message's (header included) parts; None when it does not read as one.
fn hello_parts(msg: &[u8]) -> Option<HelloParts<'_>> {
    let mut m = Cursor(msg);
    if m.u8()? != usize::from(CLIENT_HELLO) {
        return None;
    }
    let len = m.u24()?;
    let mut hello = Cursor(m.take(len)?);
    let legacy = hello.u16()?;
    hello.take(32)?; // random
    let session_id = hello.vec8()?;
    let suites = hello.vec16()?;
    hello.vec8()?; // compression methods
    let exts = match hello.0.is_empty() {
        true => &[][..],
        false => hello.vec16()?,
    };
    Some(HelloParts {
        legacy,
        session_id,
        suites,
        exts,
    })
}

fn parse(raw: &[u8]) -> Option<Fields> {
    let hs = message(raw)?;
    let HelloParts {
        session_id, exts, ..
    } = hello_parts(&hs)?;
    let mut f = Fields {
        session_id: (!session_id.is_empty()).then(|| session_id.to_vec()),
        ..Fields::default()
    };
    let mut exts = Cursor(exts);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        match typ {
            // pre_shared_key: identities<7..2^16-1> of (identity<1..2^16-1>,
            // obfuscated_ticket_age u32), then the binders
            41 => {
                let mut ids = Cursor(Cursor(data).vec16()?);
                while !ids.0.is_empty() {
                    f.psk_identities.push(ids.vec16()?.to_vec());
                    ids.take(4)?;
                }
            }
            // session_ticket (RFC 5077): empty asks for a new ticket, non-empty resumes
            35 => f.ticket = (!data.is_empty()).then(|| data.to_vec()),
            42 => f.early_data = true,
            // supported_versions
            43 => {
                let mut v = Cursor(data);
                let list = v.vec8()?;
                f.offers_tls13 = list.chunks(2).any(|c| c == [0x03, 0x04]);
            }
            _ => {}
        }
    }
    Some(f)
}

#[cfg(test)]
#[path = "hello_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair over loopback: (the server's side, the client's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// Everything the client reads until the end of the stream (or an error).
    async fn read_to_end(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.map(|_| got)
    }

    /// A client that waits for the answer (as a shed one does) gets the alert and the end
    /// of the stream, and the server does not wait for it to close: on a paused clock,
    /// no time passes.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_sent_nothing_more_is_not_waited_for() {
        let (mut server, mut client) = pair().await;
        let started = tokio::time::Instant::now();
        write_and_close(&mut server, &SHED_ALERT, || ())
            .await
            .expect("answered");
        assert_eq!(started.elapsed(), Duration::ZERO, "it lingered");
        drop(server);
        assert_eq!(
            read_to_end(&mut client).await.expect("no reset"),
            SHED_ALERT
        );
    }

    /// A client still sending is read from until it stops or the linger ends, so that
    /// the close is not a reset that could destroy the alert.
    #[tokio::test(start_paused = true)]
    async fn a_client_still_sending_gets_a_lingering_close() {
        let (mut server, mut client) = pair().await;
        client.write_all(&[0u8; 3000]).await.expect("more input");
        // Let it reach the server's socket.
        while server.peek(&mut [0u8; 1]).await.expect("peek") == 0 {}
        let started = tokio::time::Instant::now();
        write_and_close(&mut server, &SHED_ALERT, || ())
            .await
            .expect("answered");
        assert_eq!(started.elapsed(), LINGER, "it lingered until the deadline");
        drop(server);
        assert_eq!(
            read_to_end(&mut client).await.expect("no reset"),
            SHED_ALERT
        );
    }

    /// The client's ClientHello, in the server's socket before anyone reads.
    async fn sent(client: &mut TcpStream, server: &TcpStream, bytes: &[u8]) {
        client.write_all(bytes).await.expect("send");
        let mut probe = vec![0u8; bytes.len() + 1];
        while server.peek(&mut probe).await.expect("peek") < bytes.len() {}
    }

    /// A whole ClientHello already received is read and judged without waiting (the
    /// accept loop's path), and the answer and the close need no wait either.
    #[tokio::test]
    async fn a_hello_already_received_is_whole_at_once_and_answered_at_once() {
        let (server, mut client) = pair().await;
        let bytes = fuzz::records(22, &fuzz::client_hello(0, false), 1 << 14);
        sent(&mut client, &server, &bytes).await;
        let first = read_now(&server).expect("the bytes are there");
        let hello = whole(&first).expect("a whole ClientHello");
        assert_eq!(
            hello.accepted.client_hello().server_name(),
            Some("localhost")
        );
        assert_eq!(hello.raw, bytes);
        assert_eq!(
            answer_now(&server, &SHED_ALERT).expect("answered"),
            Answered::Closed
        );
        drop(server);
        assert_eq!(
            read_to_end(&mut client).await.expect("no reset"),
            SHED_ALERT
        );
    }

    /// Nothing received yet: nothing read, and the task reads as before.
    #[tokio::test]
    async fn nothing_received_yet_is_nothing_read() {
        let (server, _client) = pair().await;
        assert!(read_now(&server).is_none());
    }

    /// A ClientHello cut in two: the first part is not whole, and [`read`] goes on from
    /// it to the whole ClientHello.
    #[tokio::test]
    async fn a_partial_hello_is_read_on_from_what_was_read() {
        let (mut server, mut client) = pair().await;
        let bytes = fuzz::records(22, &fuzz::client_hello(300, true), 1 << 14);
        let (head, tail) = bytes.split_at(100);
        sent(&mut client, &server, head).await;
        let first = read_now(&server).expect("the first part");
        assert!(whole(&first).is_none());
        client.write_all(tail).await.expect("the rest");
        let hello = read(&mut server, Some(first)).await.expect("read on");
        assert_eq!(hello.raw, bytes);
        assert_eq!(classify(&hello.raw, true, |_| true), HelloKind::Resumption);
    }

    /// Plain HTTP on the TLS port is not a ClientHello, and [`read`] says so from the
    /// bytes the accept loop read.
    #[tokio::test]
    async fn plain_http_read_first_is_plain() {
        let (mut server, mut client) = pair().await;
        sent(&mut client, &server, b"GET / HTTP/1.1\r\n").await;
        let first = read_now(&server).expect("the request's start");
        assert!(whole(&first).is_none());
        match read(&mut server, Some(first)).await {
            Err(HelloError::Plain(got)) => assert_eq!(got, b"GET / HTTP/1.1\r\n"),
            Err(e) => panic!("not plain: {e}"),
            Ok(_) => panic!("not plain: a ClientHello"),
        }
    }

    /// A client still sending when answered at once: the close is left to a lingering
    /// read ([`close_after`]), which ends with the alert delivered, not reset.
    #[tokio::test(start_paused = true)]
    async fn answered_at_once_while_the_client_sends_lingers() {
        let (mut server, mut client) = pair().await;
        sent(&mut client, &server, &[0u8; 3000]).await;
        let state = answer_now(&server, &SHED_ALERT).expect("answered");
        assert_eq!(state, Answered::Linger);
        close_after(&mut server, &SHED_ALERT, state, || ())
            .await
            .expect("closed");
        drop(server);
        assert_eq!(
            read_to_end(&mut client).await.expect("no reset"),
            SHED_ALERT
        );
    }

    /// A ClientHello in one record, with the given session id and extensions.
    fn hello(session_id: &[u8], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        hello_with(0x0303, session_id, &[0x1301], exts)
    }

    /// A ClientHello in one record, with this legacy_version, session id, suites and
    /// extensions.
    fn hello_with(
        legacy: u16,
        session_id: &[u8],
        suites: &[u16],
        exts: &[(u16, Vec<u8>)],
    ) -> Vec<u8> {
        let mut body = legacy.to_be_bytes().to_vec();
        body.extend_from_slice(&[7u8; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for suite in suites {
            body.extend_from_slice(&suite.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // null compression
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut hs = vec![1u8];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22u8, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    /// RFC 7507 §3: the signal with a newest version older than the server's is a
    /// downgrade; with the server's newest, or to a server whose newest is TLS 1.2, it is
    /// not. GREASE in `supported_versions` is no version.
    #[test]
    fn fallback_scsv_below_the_servers_newest_version_is_inappropriate() {
        let scsv = &[0xc02f, TLS_FALLBACK_SCSV];
        let tls12_only = hello_with(0x0303, &[], scsv, &[]);
        assert!(inappropriate_fallback(&tls12_only, true));
        assert!(!inappropriate_fallback(&tls12_only, false));
        let listed12 = hello_with(0x0303, &[], scsv, &[(43, vec![4, 0x0a, 0x0a, 0x03, 0x03])]);
        assert!(inappropriate_fallback(&listed12, true));
        let listed13 = hello_with(0x0303, &[], scsv, &[(43, vec![4, 0x03, 0x04, 0x03, 0x03])]);
        assert!(!inappropriate_fallback(&listed13, true));
        let tls11 = hello_with(0x0302, &[], scsv, &[]);
        assert!(inappropriate_fallback(&tls11, true));
        let no_signal = hello_with(0x0303, &[], &[0xc02f], &[]);
        assert!(!inappropriate_fallback(&no_signal, true));
        assert!(
            !inappropriate_fallback(&tls12_only[..20], true),
            "cut short"
        );
    }

    fn versions13() -> (u16, Vec<u8>) {
        (43, vec![4, 0x03, 0x04, 0x03, 0x03])
    }

    /// A `pre_shared_key` extension with these identities (and one binder).
    fn psk(ids: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for id in ids {
            list.extend_from_slice(&(id.len() as u16).to_be_bytes());
            list.extend_from_slice(id);
            list.extend_from_slice(&[0, 0, 0, 0]);
        }
        let mut p = (list.len() as u16).to_be_bytes().to_vec();
        p.extend_from_slice(&list);
        p.extend_from_slice(&[0, 33, 32]);
        p.extend_from_slice(&[7; 32]);
        (41, p)
    }

    /// The server knows these tickets and session ids.
    fn knows<'a>(known: &'a [&'a [u8]]) -> impl Fn(Offer<'_>) -> bool + 'a {
        move |o| match o {
            Offer::Ticket(t) | Offer::SessionId(t) => known.contains(&t),
        }
    }

    #[test]
    fn tls13_resumes_only_with_a_psk_the_server_knows() {
        // A TLS 1.3 client sends a legacy session id for middlebox compatibility:
        // without a PSK that is a full handshake.
        let full = hello(&[1; 32], &[versions13()]);
        assert_eq!(classify(&full, true, |_| true), HelloKind::Full);
        let with_psk = hello(&[1; 32], &[versions13(), psk(&[b"old", b"good"])]);
        assert_eq!(
            classify(&with_psk, true, knows(&[b"good"])),
            HelloKind::Resumption
        );
        assert_eq!(
            classify(&with_psk, true, knows(&[b"other"])),
            HelloKind::Full,
            "a stale or forged PSK gets a full handshake"
        );
        // On a TLS 1.2-only address the session id is what resumes, if the server has
        // it: the random one a TLS 1.3 client sends everywhere is a full handshake.
        assert_eq!(
            classify(&full, false, knows(&[&[1; 32]])),
            HelloKind::Resumption
        );
        assert_eq!(classify(&full, false, knows(&[])), HelloKind::Full);
    }

    #[test]
    fn tls12_resumes_with_a_ticket_or_session_id_the_server_knows() {
        let all = |_: Offer<'_>| true;
        assert_eq!(classify(&hello(&[], &[]), true, all), HelloKind::Full);
        assert_eq!(
            classify(&hello(&[], &[(35, vec![])]), true, all),
            HelloKind::Full,
            "an empty ticket extension only asks for a ticket"
        );
        let ticket = hello(&[], &[(35, vec![9; 100])]);
        assert_eq!(classify(&ticket, true, all), HelloKind::Resumption);
        assert_eq!(classify(&ticket, true, knows(&[])), HelloKind::Full);
        assert_eq!(
            classify(&hello(&[5; 32], &[]), true, all),
            HelloKind::Resumption
        );
    }

    /// The alert description a refusal of `bytes` sends, if refused.
    fn refused_with(bytes: &[u8]) -> Option<u8> {
        match HelloReader::default().push(bytes) {
            Step::Refused { alert, .. } => alert.last().copied(),
            _ => None,
        }
    }

    /// 0-RTT offered (`early_data`): the ChangeCipherSpec and early data right behind the
    /// ClientHello are dropped (the server does not take early data; RFC 8446 §4.2.10)
    /// and the handshake goes on; without the offer, data there is refused; a record
    /// cut short is refused too.
    #[test]
    fn early_data_behind_a_hello_that_offers_it_is_dropped() {
        let ccs = [20u8, 3, 3, 0, 1, 1];
        let early = [&[23u8, 3, 3, 0, 4][..], b"abcd"].concat();
        let sigalgs = (13, vec![0, 2, 0x08, 0x04]);
        let offered = hello(&[], &[versions13(), sigalgs.clone(), (42, vec![])]);
        let bytes = [&offered[..], &ccs, &early].concat();
        let step = HelloReader::default().push(&bytes);
        let what = match &step {
            Step::Hello(_) => "hello".to_owned(),
            Step::More => "more".to_owned(),
            Step::Refused { error, .. } => format!("refused: {error}"),
        };
        assert!(matches!(step, Step::Hello(_)), "{what}");
        let cut = [&offered[..], &ccs, &early[..6]].concat();
        assert!(refused_with(&cut).is_some());
        let not_offered = [&hello(&[], &[versions13(), sigalgs])[..], &ccs, &early].concat();
        assert!(refused_with(&not_offered).is_some());
    }

    #[test]
    fn the_clients_own_alert_is_not_answered() {
        for alert in [[1u8, 0], [2, 40]] {
            let record = [&[21u8, 3, 3, 0, 2][..], &alert].concat();
            match HelloReader::default().push(&record) {
                Step::Refused { alert, .. } => assert!(alert.is_empty(), "{alert:?}"),
                _ => panic!("an alert record was not refused"),
            }
        }
        // An empty alert record is still unexpected_message (RFC 8446 §5.4).
        assert_eq!(refused_with(&[21, 3, 3, 0, 0]), Some(UNEXPECTED_MESSAGE));
    }

    #[test]
    fn another_first_message_is_unexpected_and_tls11_is_protocol_version() {
        // A Finished, a ClientKeyExchange and a HelloRequest where the ClientHello goes.
        for msg in [
            [&[20u8, 0, 0, 32][..], &[0; 32]].concat(),
            vec![16, 0, 0, 3, 2, 0, 0],
            vec![0, 0, 0, 0],
        ] {
            let mut rec = vec![22, 3, 1];
            rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            rec.extend_from_slice(&msg);
            assert_eq!(refused_with(&rec), Some(UNEXPECTED_MESSAGE), "{msg:?}");
        }
        // A TLS 1.1 ClientHello (legacy_version 3.2, no supported_versions).
        let mut tls11 = hello(&[], &[]);
        tls11[9..11].copy_from_slice(&[3, 2]);
        assert_eq!(refused_with(&tls11), Some(PROTOCOL_VERSION));
        // legacy_version 3.2 with supported_versions offering TLS 1.3 is not refused here.
        let mut modern = hello(&[], &[versions13()]);
        modern[9..11].copy_from_slice(&[3, 2]);
        assert_ne!(refused_with(&modern), Some(PROTOCOL_VERSION));
    }

    #[test]
    fn a_hello_split_over_records_is_read_whole() {
        let one = hello(&[], &[versions13(), psk(&[&[3; 300]])]);
        let payload = &one[5..];
        let mut split = Vec::new();
        for part in payload.chunks(100) {
            split.extend_from_slice(&[22, 3, 3]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(classify(&split, true, |_| true), HelloKind::Resumption);
    }

    #[test]
    fn anything_unreadable_is_a_full_handshake() {
        let good = hello(&[], &[versions13(), psk(&[b"t"])]);
        assert_eq!(classify(&good, true, |_| true), HelloKind::Resumption);
        for cut in 0..good.len() {
            assert_eq!(
                classify(&good[..cut], true, |_| true),
                HelloKind::Full,
                "cut {cut}"
            );
        }
        assert_eq!(
            classify(&[23, 3, 3, 0, 1, 0], true, |_| true),
            HelloKind::Full
        );
        assert_eq!(classify(&[], true, |_| true), HelloKind::Full);
    }
}
