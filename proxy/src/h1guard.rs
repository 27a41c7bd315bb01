//! The raw HTTP/1.1 request heads, checked as nginx checks them before hyper parses them.
//!
//! hyper accepts (and re-frames) requests nginx refuses, and some of what nginx refuses is
//! gone from the parsed request (a `Content-Length` next to `Transfer-Encoding` is dropped,
//! the whitespace before a value is trimmed). So the client's bytes go through [`H1Guard`]
//! first: it reads each request head whole (bounded by `large_client_header_buffers`),
//! checks it, and passes it on unchanged, then follows the body's framing to the next head.
//! A head nginx would refuse is replaced by a bodiless request that carries the verdict in
//! [`REJECT`]; [`crate::route`] answers it with nginx's page and the connection closes.
//! A chunked body the guard cannot follow ends the stream with an error, which hyper turns
//! into a body error (a 400 for that request). The HTTP/2 preface switches the guard off,
//! and so does an HTTP/1.1 upgrade request without a body (`Upgrade` with `Connection:
//! upgrade`, e.g. a WebSocket handshake): what follows may be the tunnel's bytes.
//! [`crate::route`] then closes the connection after any answer but `101`, so nothing
//! unchecked is ever read as a request.
//!
//! It also enforces `client_header_timeout`: a head must be complete within it, counted from
//! the connection's start for the first request and from the first byte for later ones (the
//! wait between requests is `keepalive_timeout`, hyper's `header_read_timeout`), and it
//! notes which requests were pipelined ([`Pipelined`], nginx's `$pipe`).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The header of the stand-in request that carries a rejection to [`crate::route`]:
/// `400`, `414`, `494` (nginx's "Request Header Or Cookie Too Large", sent as 400) or `501`.
/// A client that sends this header itself gets a 400.
pub(crate) const REJECT: &str = "x-hsmgate-reject";

/// What a request head may be (nginx's `client_header_buffer_size`,
/// `large_client_header_buffers` and `client_header_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// The longest request line or header line (`large_client_header_buffers`' size, 8k).
    pub line: usize,
    /// The longest head (`large_client_header_buffers`' number × size, 4 × 8k).
    pub total: usize,
    /// How long reading a head may take (60 s).
    pub timeout: Duration,
    /// HTTP/2 may be spoken (ALPN chose `h2`, or a plain `listen … http2` address with
    /// prior knowledge): its preface switches the guard off. Otherwise the preface is a
    /// 400 (HTTP/1.1 was negotiated), as from nginx.
    pub http2: bool,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            line: 8 * 1024,
            total: 4 * 8 * 1024,
            timeout: Duration::from_secs(60),
            http2: false,
        }
    }
}

/// An HTTP/1.1 connection's bytes, checked head by head (see the module documentation).
pub(crate) struct H1Guard<I> {
    io: I,
    limits: HeadLimits,
    peer: std::net::SocketAddr,
    state: State,
    /// The head being read.
    head: Vec<u8>,
    /// Bytes checked and ready for hyper.
    out: Vec<u8>,
    out_pos: usize,
    /// The deadline of the head being read (None between requests).
    deadline: Option<Pin<Box<Sleep>>>,
    /// In a lingering close (nginx's `lingering_close`): the wait for the client's next
    /// bytes, and when the whole close must end.
    linger: Option<(Pin<Box<Sleep>>, tokio::time::Instant)>,
    /// The write side is shut (the answer and close_notify are out).
    shut: bool,
    /// Request heads passed on so far (the last one's number on the connection).
    heads: u64,
    /// The head being read began in the read that ended the request before it.
    next_pipelined: bool,
    /// The pipelined requests' numbers, for `$pipe`.
    pipelined: Arc<Pipelined>,
    /// Set while a head is part-way read, for whoever asked ([`H1Guard::note_heads`]).
    head_begun: Option<Arc<AtomicBool>>,
    /// `keepalive_timeout` ([`H1Guard::keepalive`]): the connection's requests, and how
    /// long it may wait for the next one.
    keepalive: Option<(Arc<crate::keepalive_limits::ConnLimits>, Duration)>,
    /// The wait for the next request, while one is armed.
    idle: Option<Pin<Box<Sleep>>>,
}

/// The numbers of a connection's requests that were pipelined: their head came in the
/// same read as the end of the request before it (nginx's `$pipe`: `p`). Written by the
/// guard as it passes heads on, read by the request it names.
#[derive(Debug, Default)]
pub(crate) struct Pipelined {
    /// Whether `numbers` holds any (read without the lock).
    any: AtomicBool,
    numbers: Mutex<VecDeque<u64>>,
}

/// The most pipelined requests remembered ahead of the one being served (hyper reads
/// ahead at most its buffer); past it, more are not marked.
const PIPELINED_MAX: usize = 1024;

impl Pipelined {
    fn mark(&self, number: u64) {
        let mut numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        if numbers.len() < PIPELINED_MAX {
            numbers.push_back(number);
            self.any.store(true, Ordering::Release);
        }
    }

    /// Whether request `number` was pipelined; the marks up to it are forgotten.
    pub(crate) fn take(&self, number: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        while numbers.front().is_some_and(|&n| n < number) {
            numbers.pop_front();
        }
        let hit = numbers.front() == Some(&number);
        if hit {
            numbers.pop_front();
        }
        if numbers.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        hit
    }
}

/// How long a connection closed while its client may still send (a refused head, a body
/// not read to its end) waits for the client's next bytes, reading and discarding what
/// it sends after the answer, so that the client can read the answer instead of a reset
/// (nginx's `lingering_timeout`, 5 s there).
const LINGER: Duration = Duration::from_secs(2);

/// The longest such a close lasts however the client keeps sending (nginx's
/// `lingering_time`).
const LINGER_TIME: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// A `Content-Length` body: bytes left.
    Fixed(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// HTTP/2 (or a stream the guard stopped following after passing it on).
    Passthrough,
    /// The client's stream ended: end of stream once `out` is drained.
    Done,
    /// A rejection was passed on: nothing more is read (hyper closes the connection
    /// after answering the stand-in request's `connection: close`).
    Refused,
    /// The body could not be followed: an error once `out` is drained.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8 },
    Ext { value: u64, len: usize },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { len: usize },
    TrailerLf { len: usize },
}

/// The most the guard reads at once (on the stack of the poll).
const SCRATCH: usize = 16 * 1024;

/// Longest chunk extension or trailer line followed (hyper's own limits are larger).
const CHUNK_LINE_MAX: usize = 4096;

impl<I> H1Guard<I> {
    /// Guard `io` (a new connection) with `limits`.
    pub(crate) fn new(io: I, limits: HeadLimits, peer: std::net::SocketAddr) -> Self {
        H1Guard {
            io,
            limits,
            peer,
            state: State::Head,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            deadline: Some(Box::pin(tokio::time::sleep(limits.timeout))),
            linger: None,
            shut: false,
            heads: 0,
            next_pipelined: false,
            pipelined: Arc::default(),
            head_begun: None,
            keepalive: None,
            idle: None,
        }
    }

    /// nginx's `keepalive_timeout`: after an answer (`limits` counts the requests in
    /// progress), the next request must begin within `timeout`, else the stream ends
    /// as if the client had closed, and hyper closes the connection as it closes any
    /// (TLS: with `close_notify`, as nginx; RFC 8446 §6.1).
    pub(crate) fn keepalive(
        &mut self,
        limits: Arc<crate::keepalive_limits::ConnLimits>,
        timeout: Duration,
    ) {
        self.keepalive = Some((limits, timeout));
    }

    /// Whether the keep-alive wait is over (`cx` woken when it may be): the client sent
    /// nothing for `keepalive_timeout` after the last answer.
    fn keepalive_over(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((limits, timeout)) = &self.keepalive else {
            return false;
        };
        if self.state != State::Head || !self.head.is_empty() || self.heads == 0 {
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some(since) = limits.quiet_since() else {
            // A request in progress (its answer not done): look again in `timeout` (a
            // timer armed already is kept, not moved on every poll).
            let timer = (self.idle).get_or_insert_with(|| Box::pin(tokio::time::sleep(*timeout)));
            if timer.as_mut().poll(cx).is_ready() {
                timer.as_mut().reset(now + *timeout);
                let _ = timer.as_mut().poll(cx);
            }
            return false;
        };
        let until = tokio::time::Instant::from_std(since) + *timeout;
        if until <= now {
            return true;
        }
        let timer = (self.idle).get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if timer.deadline() != until {
            timer.as_mut().reset(until);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Keeps `flag` set while a request head is part-way read (a connection reading a
    /// request is not idle; `reusable`).
    pub(crate) fn note_heads(&mut self, flag: Arc<AtomicBool>) {
        self.head_begun = Some(flag);
    }

    /// Which of the connection's requests were pipelined.
    pub(crate) fn pipelined(&self) -> Arc<Pipelined> {
        Arc::clone(&self.pipelined)
    }

    /// A request head is passed on: counted, and marked if it was pipelined.
    fn passed_head(&mut self) {
        self.heads += 1;
        if std::mem::take(&mut self.next_pipelined) {
            self.pipelined.mark(self.heads);
        }
    }

    /// Take `input`, moving what is checked to `out`.
    fn feed(&mut self, mut input: &[u8]) {
        // A request ended in this read: a head that begins in it was pipelined.
        let mut request_ended = false;
        while !input.is_empty() {
            let (state, heads) = (self.state, self.heads);
            match self.state {
                State::Head => {
                    if self.head.is_empty() && request_ended {
                        self.next_pipelined = true;
                    }
                    input = self.feed_head(input);
                }
                State::Fixed(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = match left - n as u64 {
                        0 => State::Head,
                        left => State::Fixed(left),
                    };
                }
                State::Chunked(c) => input = self.feed_chunked(c, input),
                State::Passthrough => {
                    self.out.extend_from_slice(input);
                    return;
                }
                State::Done | State::Refused | State::Broken => return,
            }
            // Back to a new head, from a body or after a head without one (not after
            // an empty line before a request line).
            if self.state == State::Head
                && self.head.is_empty()
                && (state != State::Head || self.heads != heads)
            {
                request_ended = true;
            }
        }
    }

    fn feed_head<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let line_start = memchr::memrchr(b'\n', &self.head).map_or(0, |i| i + 1);
        let (take, complete_line) = match memchr::memchr(b'\n', input) {
            Some(i) => (i + 1, true),
            None => (input.len(), false),
        };
        self.head.extend_from_slice(&input[..take]);
        let rest = &input[take..];
        let line_len = self.head.len() - line_start;
        let first_line = line_start == 0;
        if line_len > self.limits.line + 2 || self.head.len() > self.limits.total {
            let code = if first_line { 414 } else { 494 };
            tracing::info!(peer = %self.peer, code, "client sent too long header line or request line");
            self.reject(code);
            return &[];
        }
        // A method nginx refuses is refused at once, as nginx's parser does, without
        // waiting for the rest of the head (garbage has no end of head).
        if first_line && !method_so_far(trim_eol(&self.head)) {
            tracing::info!(peer = %self.peer, "client sent invalid method");
            self.reject(400);
            return &[];
        }
        if !complete_line {
            return rest;
        }
        let line = trim_eol(&self.head[line_start..]);
        if first_line && line.is_empty() {
            // Empty lines before the request line are allowed (RFC 9112 §2.2).
            self.out.extend_from_slice(&self.head);
            self.head.clear();
            return rest;
        }
        if first_line && self.limits.http2 && line == b"PRI * HTTP/2.0" {
            self.out.extend_from_slice(&self.head);
            self.out.extend_from_slice(rest);
            self.head.clear();
            self.state = State::Passthrough;
            self.deadline = None;
            return &[];
        }
        if !line.is_empty() {
            return rest;
        }
        // The whole head.
        self.deadline = None;
        tidy_request_line(&mut self.head);
        tidy_header_lines(&mut self.head, self.peer);
        match check_head(&self.head) {
            Ok(next) => {
                self.out.append(&mut self.head);
                self.state = next;
                self.passed_head();
            }
            Err((code, why)) => {
                tracing::info!(peer = %self.peer, code, "{why}");
                self.reject(code);
                return &[];
            }
        }
        rest
    }

    fn feed_chunked<'a>(&mut self, c: Chunk, input: &'a [u8]) -> &'a [u8] {
        if let Chunk::Data(left) = c {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
            self.out.extend_from_slice(&input[..n]);
            self.state = State::Chunked(match left - n as u64 {
                0 => Chunk::DataCr,
                left => Chunk::Data(left),
            });
            return &input[n..];
        }
        let b = input[0];
        let next = match (c, b) {
            (Chunk::Size { value, digits }, _) if b.is_ascii_hexdigit() && digits < 15 => {
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                Some(State::Chunked(Chunk::Size {
                    value: value * 16 + d,
                    digits: digits + 1,
                }))
            }
            (Chunk::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                Some(State::Chunked(Chunk::Ext { value, len: 0 }))
            }
            (Chunk::Size { value, digits }, b'\r') if digits > 0 => {
                Some(State::Chunked(Chunk::SizeLf { value }))
            }
            (Chunk::Ext { value, .. }, b'\r') => Some(State::Chunked(Chunk::SizeLf { value })),
            (Chunk::Ext { value, len }, _) if b != b'\n' && len < CHUNK_LINE_MAX => {
                Some(State::Chunked(Chunk::Ext {
                    value,
                    len: len + 1,
                }))
            }
            (Chunk::SizeLf { value: 0 }, b'\n') => Some(State::Chunked(Chunk::Trailer { len: 0 })),
            (Chunk::SizeLf { value }, b'\n') => Some(State::Chunked(Chunk::Data(value))),
            (Chunk::DataCr, b'\r') => Some(State::Chunked(Chunk::DataLf)),
            (Chunk::DataLf, b'\n') => Some(State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            })),
            (Chunk::Trailer { len }, b'\r') => Some(State::Chunked(Chunk::TrailerLf { len })),
            (Chunk::Trailer { len }, _) if b != b'\n' && len < CHUNK_LINE_MAX => {
                Some(State::Chunked(Chunk::Trailer { len: len + 1 }))
            }
            (Chunk::TrailerLf { len: 0 }, b'\n') => Some(State::Head),
            (Chunk::TrailerLf { .. }, b'\n') => Some(State::Chunked(Chunk::Trailer { len: 0 })),
            _ => None,
        };
        match next {
            Some(next) => {
                self.out.push(b);
                self.state = next;
                &input[1..]
            }
            None => {
                tracing::info!(peer = %self.peer, "client sent invalid chunked body");
                self.state = State::Broken;
                &[]
            }
        }
    }

    /// Replace the head being read by the stand-in request carrying `code`.
    fn reject(&mut self, code: u16) {
        let line = lines_of(&self.head).next().unwrap_or_default();
        // The client's method and target (for the access log), always answered as 1.1.
        let request_line = match std::str::from_utf8(line) {
            Ok(l) if l.len() <= self.limits.line && plausible_request_line(l) => {
                l.rsplit_once(' ').map_or("GET /", |(start, _)| start)
            }
            _ => "GET /",
        };
        self.out.extend_from_slice(
            format!("{request_line} HTTP/1.1\r\n{REJECT}: {code}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
        self.head.clear();
        self.deadline = None;
        self.state = State::Refused;
        self.passed_head();
    }
}

/// `METHOD SP TARGET SP HTTP/1.x` with a token method and a visible target.
fn plausible_request_line(line: &str) -> bool {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
        && !target.is_empty()
        && target.bytes().all(|b| b.is_ascii_graphic())
        && (version == "HTTP/1.1" || version == "HTTP/1.0")
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows_end(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &v[..end]
}

/// The request line as nginx reads it, where hyper would refuse it: spaces (not tabs)
/// repeated between its three words or after the last are taken as one, a later
/// minor version (`HTTP/1.2` to `HTTP/1.999`) is understood as the highest this server
/// speaks, `HTTP/1.1` (RFC 9110 §6.2; nginx answers it), and the characters RFC 3986
/// does not allow in a URI that nginx takes as they come and hyper's URI parser refuses
/// (`<` and `>`, a backquote in the path, `"` in the query; curl sends them unencoded)
/// are percent-encoded, as a browser sends them. Any other line stays as it came.
fn tidy_request_line(head: &mut Vec<u8>) {
    let line = lines_of(head).next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return;
    };
    if line.first() == Some(&b' ') {
        return;
    }
    let later = version
        .strip_prefix(b"HTTP/1.")
        .filter(|m| (1..=3).contains(&m.len()) && m.iter().all(u8::is_ascii_digit))
        .and_then(|m| std::str::from_utf8(m).ok()?.parse::<u16>().ok())
        .is_some_and(|m| m >= 2);
    let single = line.len() == method.len() + target.len() + version.len() + 2;
    let encoded = encode_refused(target);
    if single && !later && encoded.is_none() {
        return;
    }
    let version: &[u8] = if later { b"HTTP/1.1" } else { version };
    let target = encoded.as_deref().unwrap_or(target);
    let mut tidy = [method, b" ", target, b" ", version].concat();
    tidy.extend_from_slice(&head[line.len()..]);
    *head = tidy;
}

/// `target` with the characters hyper's URI parser refuses where they are percent-encoded
/// (`<`, `>`; a backquote before the query, `"` in it), or `None` when it has none.
fn encode_refused(target: &[u8]) -> Option<Vec<u8>> {
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let refused = |i: usize, b: u8| match b {
        b'<' | b'>' => true,
        b'`' => i < query,
        b'"' => i > query,
        _ => false,
    };
    if !target.iter().enumerate().any(|(i, &b)| refused(i, b)) {
        return None;
    }
    let mut out = Vec::with_capacity(target.len() + 8);
    for (i, &b) in target.iter().enumerate() {
        match refused(i, b) {
            true => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
            false => out.push(b),
        }
    }
    Some(out)
}

/// Whether the start of a request line may still be one: its method so far is made of
/// token characters (RFC 9110 §9.1) and, once a space ends it, not empty.
fn method_so_far(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b' ') {
        Some(end) => end > 0 && line[..end].iter().all(|&b| is_tchar(b)),
        None => line.iter().all(|&b| is_tchar(b)),
    }
}

/// Whether `b` may be in a header name (RFC 9110 §5.6.2's `tchar`, as httparse checks it).
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: every byte of every head's names goes through it.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

/// A byte hyper refuses in a header value: a control byte other than a tab, or DEL.
const VALUE_CTL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i < 0x20 && i != b'\t' as usize) || i == 0x7f;
        i += 1;
    }
    table
};

/// The lines of `head`, split at each `\n` (the `\r` before it trimmed), as
/// `split(|&b| b == b'\n')` gives them: an empty last line after a final `\n`.
fn lines_of(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(trim_eol(&r[..i]))
            }
            None => {
                rest = None;
                Some(trim_eol(r))
            }
        }
    })
}

/// What nginx makes of a header line's name (`ngx_http_parse_header_line`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// A token, followed by its colon: hyper takes the line as it is.
    Valid,
    /// A token without a colon: nginx takes it as a header with an empty value, hyper
    /// refuses it; the guard adds the colon.
    NoColon,
    /// A visible character outside RFC 9110's token (`@`, `/`, `{`, …) or a byte over
    /// 0x7f: nginx ignores the line (`ignore_invalid_headers`, on by default), hyper
    /// refuses it; the guard drops it.
    Ignored,
    /// Empty, or with a space or a control byte: nginx's 400 ([`check_head`]).
    Invalid,
}

fn name_of(line: &[u8]) -> Name {
    match memchr::memchr(b':', line) {
        Some(i) => name_kind(&line[..i], true),
        None => name_kind(line, false),
    }
}

/// What nginx makes of `name`, written with or without its `colon`.
fn name_kind(name: &[u8], colon: bool) -> Name {
    // A token has no space, control byte or DEL: one pass decides the common case.
    if name.is_empty() {
        Name::Invalid
    } else if name.iter().all(|&b| is_tchar(b)) {
        match colon {
            true => Name::Valid,
            false => Name::NoColon,
        }
    } else if name.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        Name::Invalid
    } else {
        Name::Ignored
    }
}

/// The header lines of `head` made what nginx makes of them where hyper would refuse
/// the whole request (see [`Name`]): an ignored one dropped and logged as nginx logs it
/// ("client sent invalid header line", at `info`), a bare name given its colon. The
/// names the variables and the upstream then see are filtered as
/// `underscores_in_headers` and `ignore_invalid_headers` say ([`crate::route`]).
fn tidy_header_lines(head: &mut Vec<u8>, peer: std::net::SocketAddr) {
    // The request line is not a header; a continuation line is check_head's to refuse.
    let Some(first) = memchr::memchr(b'\n', head) else {
        return;
    };
    fn header(l: &[u8]) -> (&[u8], Name) {
        let l = trim_eol(l);
        let name = match l.first() {
            None | Some(b' ' | b'\t') => Name::Valid,
            Some(_) => name_of(l),
        };
        (l, name)
    }
    let lines = || {
        head[first + 1..]
            .split_inclusive(|&b| b == b'\n')
            .map(header)
    };
    let clean = |l: &[u8]| match l.first() {
        None | Some(b' ' | b'\t') => true,
        Some(_) => !matches!(name_of(l), Name::Ignored | Name::NoColon),
    };
    if lines_of(&head[first + 1..]).all(clean) {
        return;
    }
    let mut tidy = head[..first + 1].to_vec();
    for (line, name) in lines() {
        match name {
            Name::Ignored => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(256)]).into_owned();
                tracing::info!(%peer, "client sent invalid header line: {shown:?}");
                continue;
            }
            Name::NoColon => {
                tidy.extend_from_slice(line);
                tidy.push(b':');
            }
            Name::Valid | Name::Invalid => tidy.extend_from_slice(line),
        }
        tidy.extend_from_slice(b"\r\n");
    }
    *head = tidy;
}

/// nginx's checks of a whole head (`ngx_http_process_request_headers` and
/// `ngx_http_process_request_header`): the framing of its body, or the status and why.
fn check_head(head: &[u8]) -> Result<State, (u16, &'static str)> {
    let mut lines = lines_of(head);
    let request_line = lines.next().unwrap_or_default();
    let Some(version) = request_line.rsplit(|&b| b == b' ').next() else {
        return Ok(State::Head);
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        // HTTP/2's connection preface where HTTP/1.1 was negotiated: nginx's 400.
        b"HTTP/2.0" if request_line == b"PRI * HTTP/2.0" => {
            return Err((
                400,
                "client sent the HTTP/2 preface on an HTTP/1.1 connection",
            ));
        }
        // HTTP/2.0 and later spoken as HTTP/1: nginx's 505 (RFC 9110 §15.6.6).
        [b'H', b'T', b'T', b'P', b'/', b'2'..=b'9', b'.', b'0'..=b'9'] => {
            return Err((
                505,
                "client sent a request with an unsupported HTTP major version",
            ));
        }
        // Not HTTP/1.x (HTTP/0.9 too, which nginx would answer): nginx's 400.
        _ => return Err((400, "client sent invalid request")),
    };
    // What hyper would refuse with a bare 400: nginx's page instead.
    let mut words = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(_), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err((400, "client sent invalid request"));
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || target.iter().any(|&b| b <= 0x20 || b == 0x7f)
    {
        return Err((400, "client sent invalid request"));
    }
    let (mut hosts, mut length, mut chunked) = (0, None::<u64>, None::<bool>);
    let (mut upgrade, mut connection_upgrade) = (false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        if line[0] == b' ' || line[0] == b'\t' {
            return Err((400, "client sent obsolete line folding"));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err((400, "client sent invalid header line"));
        };
        if name_kind(&line[..colon], true) == Name::Invalid {
            return Err((400, "client sent invalid header line"));
        }
        // A control byte in a value: hyper refuses it (nginx passes all but NUL and CR
        // on; RFC 9110 §5.5 lets a recipient refuse them), so it gets nginx's 400 page.
        if line[colon + 1..].iter().any(|&b| VALUE_CTL[usize::from(b)]) {
            return Err((400, "client sent invalid header line"));
        }
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err((400, "client sent duplicate host header"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = trim_ows_end(value.trim_ascii_start());
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (length, n) {
                (Some(_), _) => return Err((400, "client sent duplicate Content-Length header")),
                (None, None) => return Err((400, "client sent invalid Content-Length header")),
                (None, Some(n)) => length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked.is_some() {
                return Err((400, "client sent duplicate Transfer-Encoding header"));
            }
            // nginx skips spaces, not tabs, before a value.
            let v = trim_ows_end(&value[value.iter().take_while(|&&b| b == b' ').count()..]);
            chunked = Some(v.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(REJECT.as_bytes()) {
            return Err((400, "client sent the internal rejection header"));
        }
    }
    if http11 && hosts == 0 {
        return Err((400, "client sent HTTP/1.1 request without \"Host\" header"));
    }
    match (chunked, length) {
        (Some(_), _) if !http11 => Err((400, "client sent Transfer-Encoding in HTTP/1.0 request")),
        (Some(_), Some(_)) => Err((
            400,
            "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time",
        )),
        (Some(false), None) => Err((501, "client sent unknown \"Transfer-Encoding\"")),
        (Some(true), None) => Ok(State::Chunked(Chunk::Size {
            value: 0,
            digits: 0,
        })),
        // An upgrade: what follows may be the tunnel (see the module documentation).
        (None, Some(0) | None) if http11 && upgrade && connection_upgrade => Ok(State::Passthrough),
        (None, Some(0) | None) => Ok(State::Head),
        (None, Some(n)) => Ok(State::Fixed(n)),
    }
}

// === impl H1Guard ===

impl<I: AsyncRead + Unpin> AsyncRead for H1Guard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Passthrough => return Pin::new(&mut this.io).poll_read(cx, buf),
                State::Done => return Poll::Ready(Ok(())),
                State::Refused => return Poll::Pending,
                State::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "invalid chunked body",
                    )));
                }
                // A large body: straight into hyper's buffer.
                State::Fixed(left) => {
                    let before = buf.filled().len();
                    let want = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
                    ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
                    let n = limited.filled().len();
                    buf.advance(n);
                    debug_assert_eq!(buf.filled().len(), before + n);
                    if n > 0 {
                        this.state = match left - n as u64 {
                            0 => State::Head,
                            left => State::Fixed(left),
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Head | State::Chunked(_) => {}
            }
            if this.keepalive_over(cx) {
                tracing::debug!(peer = %this.peer, "keepalive_timeout: connection closed");
                this.state = State::Done;
                this.idle = None;
                return Poll::Ready(Ok(()));
            }
            if let Some(deadline) = this.deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                tracing::debug!(peer = %this.peer, "client timed out reading the request head");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client_header_timeout",
                )));
            }
            // Read into the stack, not a buffer per connection: an idle keep-alive
            // connection holds no read buffer of the guard's.
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut rb = ReadBuf::uninit(&mut scratch);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            match polled {
                Poll::Ready(Ok(())) if n == 0 => {
                    // End of stream: hyper sees what was read so far, then the end.
                    let partial = std::mem::take(&mut this.head);
                    this.out.extend_from_slice(&partial);
                    this.state = State::Done;
                    continue;
                }
                Poll::Ready(Ok(())) => {
                    this.feed(rb.filled());
                    if let Some(flag) = &this.head_begun {
                        let begun = this.state == State::Head && !this.head.is_empty();
                        if flag.load(Ordering::Relaxed) != begun {
                            flag.store(begun, Ordering::Release);
                        }
                    }
                    // A later request's head begun in this read and not ended: it must
                    // follow in time, counted from here (its first byte came in this
                    // read). A head read whole in one read needs no timer.
                    if this.deadline.is_none() && this.state == State::Head && !this.head.is_empty()
                    {
                        this.deadline = Some(Box::pin(tokio::time::sleep(this.limits.timeout)));
                    }
                }
                other => return other,
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H1Guard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The client may still be sending: the rest of a refused head, or a request body
        // not read to its end (an answer given before it: a 413, a 403, an upstream's
        // early answer).
        let client_sending = match this.state {
            State::Refused | State::Chunked(_) => true,
            State::Fixed(left) => left > 0,
            State::Head | State::Passthrough | State::Done | State::Broken => false,
        };
        if !this.shut && !client_sending {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        }
        // Lingering close: the answer goes out with our half closed, then what the client
        // is still sending is read and dropped until it stops (LINGER without a byte) or
        // LINGER_TIME; closing at once would reset the connection and the client could
        // lose the answer (or, still writing, fail with a broken pipe before reading it).
        if !this.shut {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.shut = true;
            let end = tokio::time::Instant::now() + LINGER_TIME;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER)), end));
        }
        let Some((wait, end)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut rb = ReadBuf::uninit(&mut scratch);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            match polled {
                Poll::Ready(Ok(())) if n > 0 => {
                    let next = (tokio::time::Instant::now() + LINGER).min(*end);
                    wait.as_mut().reset(next);
                }
                // End of stream or an error: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &str) -> Result<State, u16> {
        check_head(head.as_bytes()).map_err(|(code, _)| code)
    }

    #[test]
    fn versions_as_nginx_answers_them() {
        assert_eq!(verdict("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(505));
        assert_eq!(verdict("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), Err(505));
        let mut head = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec();
        tidy_request_line(&mut head);
        assert!(head.starts_with(b"GET / HTTP/1.1\r\n"));
        assert_eq!(
            verdict(std::str::from_utf8(&head).unwrap()),
            Ok(State::Head)
        );
        let mut other = b"GET /HTTP/1.5 HTTP/1.0\r\n\r\n".to_vec();
        tidy_request_line(&mut other);
        assert!(other.starts_with(b"GET /HTTP/1.5 HTTP/1.0"));
    }

    #[test]
    fn the_tables_and_the_line_splitter_say_what_their_definitions_say() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "tchar {b:#x}");
            let ctl = (b < 0x20 && b != b'\t') || b == 0x7f;
            assert_eq!(VALUE_CTL[usize::from(b)], ctl, "value control byte {b:#x}");
        }
        for head in [
            &b""[..],
            b"\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"a\nb\r\n\r",
            b"no end",
        ] {
            let split: Vec<&[u8]> = head.split(|&b| b == b'\n').map(trim_eol).collect();
            assert_eq!(lines_of(head).collect::<Vec<_>>(), split);
        }
    }

    #[test]
    fn header_lines_as_nginx_takes_them() {
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let tidy = |head: &[u8]| {
            let mut head = head.to_vec();
            tidy_header_lines(&mut head, peer);
            head
        };
        let head = b"GET /a@b HTTP/1.1\r\nHost: a\r\nX@At: 1\r\nX_U: 2\r\nX/Y: 3\r\nX\xe9: 4\r\nA: b@c\r\nBare\r\n\r\n";
        assert_eq!(
            tidy(head),
            b"GET /a@b HTTP/1.1\r\nHost: a\r\nX_U: 2\r\nA: b@c\r\nBare:\r\n\r\n"
        );
        // Left for check_head's 400, as nginx's: a space or a control byte in the name,
        // an empty name; and heads with nothing to change stay as they came.
        for kept in [
            &b"GET / HTTP/1.1\r\nX Y: 1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX\x7fY: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo Colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
        ] {
            assert_eq!(tidy(kept), kept);
            assert_eq!(
                verdict(std::str::from_utf8(kept).unwrap()).ok(),
                (kept.ends_with(b"a\n\n")).then_some(State::Head)
            );
        }
        assert_eq!(
            tidy(b"GET / HTTP/1.1\nA{: 1\nB: 2\n\n"),
            b"GET / HTTP/1.1\nB: 2\r\n\r\n"
        );
        for value in ["a\x01b", "a\x7fb", "a\rb", "a\x00b"] {
            let head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {value}\r\n\r\n");
            assert_eq!(verdict(&head), Err(400), "{value:?}");
        }
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb \u{e9}\r\n\r\n"),
            Ok(State::Head)
        );
    }

    #[test]
    fn heads_nginx_refuses() {
        let h = |rest: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{rest}\r\n");
        assert_eq!(verdict(&h("")), Ok(State::Head));
        assert_eq!(verdict(&h("Content-Length: 5\r\n")), Ok(State::Fixed(5)));
        assert!(matches!(
            verdict(&h("Transfer-Encoding: Chunked \r\n")),
            Ok(State::Chunked(_))
        ));
        assert_eq!(verdict("GET / HTTP/1.1\r\n\r\n"), Err(400), "no Host");
        assert_eq!(
            verdict("GET / HTTP/1.0\r\n\r\n"),
            Ok(State::Head),
            "1.0 needs none"
        );
        assert_eq!(verdict(&h("host: b\r\n")), Err(400));
        assert_eq!(
            verdict(&h("Content-Length: 5\r\nContent-Length: 5\r\n")),
            Err(400)
        );
        assert_eq!(verdict(&h("Content-Length: +5\r\n")), Err(400));
        let te = "Transfer-Encoding: chunked\r\n";
        assert_eq!(verdict(&h(&format!("Content-Length: 5\r\n{te}"))), Err(400));
        assert_eq!(verdict(&h(&format!("{te}Content-Length: 5\r\n"))), Err(400));
        assert_eq!(verdict(&h(&format!("{te}{te}"))), Err(400));
        for odd in [
            "xchunked",
            "chunked, chunked",
            "identity, chunked",
            "\tchunked",
            "gzip",
        ] {
            assert_eq!(
                verdict(&h(&format!("Transfer-Encoding: {odd}\r\n"))),
                Err(501),
                "{odd}"
            );
        }
        assert_eq!(
            verdict(&h("Transfer-Encoding:\r\n chunked\r\n")),
            Err(400),
            "obs-fold"
        );
        assert_eq!(verdict(&format!("POST / HTTP/1.0\r\n{te}\r\n")), Err(400));
        assert_eq!(verdict(&h("X-Hsmgate-Reject: 200\r\n")), Err(400));
        assert_eq!(verdict("GET / HTTP/2.0\r\n\r\n"), Err(505));
        assert_eq!(
            verdict("PRI * HTTP/2.0\r\n\r\n"),
            Err(400),
            "HTTP/2's preface"
        );
        // Request lines hyper would refuse with a bare 400: nginx's page.
        for line in [
            "GET / HTTP/9",
            "GET / HTTP/01.1",
            "GET /x",
            "GET /a b HTTP/1.1",
            "G@T / HTTP/1.1",
            "GET /\x01 HTTP/1.1",
            "GET\t/ HTTP/1.1",
        ] {
            assert_eq!(
                verdict(&format!("{line}\r\nHost: a\r\n\r\n")),
                Err(400),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_bad_method_is_refused_before_the_head_ends() {
        assert!(method_so_far(b""));
        assert!(method_so_far(b"GE"));
        assert!(method_so_far(b"GET /x HTTP/1.1"));
        assert!(!method_so_far(b" GET /"));
        assert!(!method_so_far(b"G\x00"));
        assert!(!method_so_far(b"{\"json\": 1"));
        assert!(!method_so_far(b"\x16\x03\x01"));
    }

    #[test]
    fn request_lines_as_nginx_reads_them() {
        let tidy = |line: &str| {
            let mut head = format!("{line}\r\nHost: a\r\n\r\n").into_bytes();
            tidy_request_line(&mut head);
            let head = String::from_utf8(head).unwrap();
            assert_eq!(verdict(&head).ok(), Some(State::Head), "{head:?}");
            head.split_once("\r\n").unwrap().0.to_owned()
        };
        assert_eq!(tidy("GET /x HTTP/1.1"), "GET /x HTTP/1.1");
        assert_eq!(tidy("GET  /x   HTTP/1.1  "), "GET /x HTTP/1.1");
        assert_eq!(tidy("GET /x HTTP/1.10"), "GET /x HTTP/1.1");
        assert_eq!(tidy("GET /x HTTP/1.999"), "GET /x HTTP/1.1");
        assert_eq!(tidy("GET /x HTTP/1.0 "), "GET /x HTTP/1.0");
        assert_eq!(
            tidy("GET /a<b>`c\"?q=\"<x>`&r={} HTTP/1.1"),
            "GET /a%3Cb%3E%60c\"?q=%22%3Cx%3E`&r={} HTTP/1.1"
        );
        assert_eq!(
            tidy("GET  /q?a=\"1\"  HTTP/1.2"),
            "GET /q?a=%221%22 HTTP/1.1"
        );
        let mut untouched = b" GET /x HTTP/1.1\r\n\r\n".to_vec();
        tidy_request_line(&mut untouched);
        assert_eq!(untouched, b" GET /x HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn an_upgrade_without_a_body_stops_the_guard() {
        let ws = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n";
        for connection in ["Connection: Upgrade", "connection: keep-alive, upgrade"] {
            assert_eq!(
                verdict(&format!("{ws}{connection}\r\n\r\n")),
                Ok(State::Passthrough),
                "{connection}"
            );
        }
        // Not an upgrade: no `Connection: upgrade`, HTTP/1.0, or a body to follow.
        assert_eq!(verdict(&format!("{ws}\r\n")), Ok(State::Head));
        assert_eq!(
            verdict("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
            Ok(State::Head)
        );
        assert_eq!(
            verdict(&format!(
                "{ws}Connection: upgrade\r\nContent-Length: 3\r\n\r\n"
            )),
            Ok(State::Fixed(3))
        );
    }

    fn guard() -> H1Guard<tokio::io::Empty> {
        let limits = HeadLimits {
            line: 64,
            total: 128,
            timeout: Duration::from_secs(1),
            http2: true,
        };
        H1Guard::new(tokio::io::empty(), limits, ([127, 0, 0, 1], 1).into())
    }

    #[tokio::test]
    async fn follows_bodies_to_the_next_head_and_refuses_long_lines() {
        let mut g = guard();
        let input = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
                     POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
                     GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        // Byte by byte: the state survives every split.
        for b in input.as_bytes() {
            g.feed(std::slice::from_ref(b));
        }
        let out = String::from_utf8(g.out.clone()).expect("utf-8");
        let (passed, refused) =
            out.split_at(out.find("GET / HTTP/1.1\r\nx-hsmgate").expect("stand-in"));
        assert_eq!(passed, &input[..passed.len()], "passed unchanged");
        assert!(
            refused.contains("x-hsmgate-reject: 400\r\nconnection: close"),
            "{refused}"
        );
        assert_eq!(g.state, State::Refused);

        let mut g = guard();
        g.feed(format!("GET /{} HTTP/1.1\r\n", "a".repeat(70)).as_bytes());
        assert!(String::from_utf8_lossy(&g.out).contains("reject: 414"));
        let mut g = guard();
        g.feed(format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(70)).as_bytes());
        assert!(String::from_utf8_lossy(&g.out).contains("reject: 494"));
        let mut g = guard();
        g.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..3 {
            g.feed(format!("X: {}\r\n", "a".repeat(40)).as_bytes());
        }
        assert!(
            String::from_utf8_lossy(&g.out).contains("reject: 494"),
            "total"
        );
    }

    #[tokio::test]
    async fn marks_the_heads_that_came_with_the_end_of_the_request_before() {
        let mut g = guard();
        let marks = g.pipelined();
        // 1 alone; 2 and 3 in one read after a body's end (3 after an empty line);
        // 4 in a read of its own after 3's body ended.
        g.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
        g.feed(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n");
        g.feed(b"hiGET /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n");
        g.feed(b"x");
        g.feed(b"\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\nGET /5 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(g.heads, 5);
        let seen: Vec<bool> = (1..=5).map(|n| marks.take(n)).collect();
        assert_eq!(seen, [false, false, true, false, true]);
        assert!(!marks.take(5), "taken once");
    }

    #[test]
    fn pipelined_marks_are_bounded_and_forgotten_once_passed() {
        let marks = Pipelined::default();
        for n in 1..=(PIPELINED_MAX as u64 + 10) {
            marks.mark(n);
        }
        assert_eq!(marks.numbers.lock().expect("lock").len(), PIPELINED_MAX);
        assert!(
            marks.take(7),
            "an earlier number's mark is dropped on the way"
        );
        assert_eq!(marks.numbers.lock().expect("lock").front(), Some(&8));
        assert!(
            !marks.take(PIPELINED_MAX as u64 + 5),
            "past the bound: not marked"
        );
        assert!(!marks.any.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_chunked_body_it_cannot_follow_breaks_the_stream() {
        for body in ["zz\r\n", "3\r\nabcX", "3\nabc\r\n", "\r\n"] {
            let mut g = guard();
            g.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
            g.feed(body.as_bytes());
            assert_eq!(g.state, State::Broken, "{body:?}");
        }
        let mut g = guard();
        g.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
        assert_eq!(g.state, State::Passthrough);
        assert_eq!(g.out.len(), 26);
    }

    /// A header line of bytes from an alphabet of what matters to the guard and to
    /// hyper: a name, mostly a colon, a value.
    fn line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::strategy::Strategy;
        let alphabet: &[u8] = b"aZ09-_.@/{}\"; \t\r\x01\x7f\xe9";
        let part = || proptest::collection::vec(proptest::sample::select(alphabet), 0..6);
        let colon = proptest::sample::select(vec![&b":"[..], b":", b":", b""]);
        (part(), colon, part())
            .prop_map(|(name, colon, value)| [&name[..], colon, &value[..]].concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
            failure_persistence: None,
            ..Default::default()
        })]

        /// Whatever the client sends, the guard does not panic, and a head it lets
        /// through is one hyper's parser takes whole: no request gets hyper's bare 400.
        #[test]
        fn a_head_the_guard_passes_is_one_hyper_parses(
            method in proptest::sample::select(vec!["GET", "get", "G@T", "", "POST"]),
            target in proptest::sample::select(vec!["/", "/a b", "/x?y", "*", "/\x01", "/é"]),
            version in proptest::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/1.10", "HTTP/01.1", "HTTP/1.1 "]),
            gap in proptest::sample::select(vec![" ", "  ", "\t"]),
            lines in proptest::collection::vec(line(), 0..5),
            lf_only in proptest::bool::ANY,
        ) {
            let eol: &[u8] = if lf_only { b"\n" } else { b"\r\n" };
            let mut head = format!("{method}{gap}{target}{gap}{version}").into_bytes();
            head.extend_from_slice(eol);
            head.extend_from_slice(b"Host: a");
            head.extend_from_slice(eol);
            for l in &lines {
                head.extend_from_slice(l);
                head.extend_from_slice(eol);
            }
            head.extend_from_slice(eol);
            let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
            tidy_request_line(&mut head);
            tidy_header_lines(&mut head, peer);
            if let Ok(State::Head | State::Fixed(_) | State::Chunked(_)) = check_head(&head) {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                let parsed = req.parse(&head);
                proptest::prop_assert!(
                    matches!(parsed, Ok(httparse::Status::Complete(_))),
                    "{:?}: {parsed:?}",
                    String::from_utf8_lossy(&head)
                );
            }
        }
    }
}
