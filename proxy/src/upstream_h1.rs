//! One HTTP/1.1 connection to an upstream server, spoken by hsmgate itself.
//!
//! The request head is written from the request's parts into one buffer (and on the
//! socket in one write with a small body), the response head is parsed with `httparse`,
//! and the response body is framed as RFC 9112 §6.3 says (no body, `Content-Length`,
//! chunked, or up to the close) by whichever task reads it. hyper's client connection
//! puts a dispatcher between the request and the socket (a request channel, a response
//! channel, a body channel and their wake-ups, per request); here the request's own task
//! reads and writes the socket. [`crate::upstream_pool`] keeps these connections.
//!
//! What hyper's client did is kept: `Host` and the headers as given (names lower case),
//! a body framed by the `Content-Length` or `Transfer-Encoding` it comes with, else by
//! its known length, else chunked; 1xx answers but `101` skipped; the connection kept
//! unless either side says `close` (or the server speaks HTTP/1.0 without
//! `keep-alive`) or the body runs to the close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;

use crate::balance::{BodyError, UpstreamBody, empty_body};
use crate::hop_by_hop::{connection_has, is_hop_by_hop, names_a_header};
use crate::upstream_stream::UpstreamStream;

/// A connection's byte stream: TCP or a Unix socket, or TLS over TCP (`proxy_pass
/// https://`). Boxed: a TLS client's state is about a kilobyte, and a connection moves
/// with each request it serves (out of the pool, into the response body, back), where a
/// box moves a pointer.
pub(crate) type Io = Box<TokioIo<MaybeHttpsStream<UpstreamStream>>>;

/// The largest response head read (hyper's client allowed as much: 8 KiB + 100 × 4 KiB).
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// The most header lines a response head may have.
const MAX_HEADERS: usize = 1024;

/// Header lines parsed on the stack before the rare head with more is parsed again.
const HEADERS_ON_STACK: usize = 64;

/// The first read's size; doubled after each read that fills it, up to [`READ_MAX`].
const READ_MIN: usize = 8192;
const READ_MAX: usize = 256 * 1024;

/// The longest chunk-size line and the most trailer bytes of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A read or write buffer larger than this after an exchange is not kept for the next.
const KEEP_BUFFER: usize = 64 * 1024;

/// Why an exchange or a response body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The server closed the connection before its answer was complete.
    #[error("connection closed before the message completed")]
    Incomplete,
    #[error("writing the request")]
    Write(#[source] io::Error),
    #[error("reading the response")]
    Read(#[source] io::Error),
    #[error("invalid response head")]
    Parse(#[source] httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("the request body failed")]
    Body(#[source] BodyError),
    /// The request body ended before its `Content-Length`, or went past it.
    #[error("request body length differs from its Content-Length")]
    BodyLength,
}

impl H1Error {
    /// The server closed the connection before any answer (a kept connection the server
    /// timed out while the request was on its way: the request may be sent again).
    pub(crate) fn is_incomplete_message(&self) -> bool {
        matches!(self, H1Error::Incomplete)
    }
}

/// How a response body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` (or no body: 0) bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Up to the server's close.
    Close,
    /// Complete.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, at its line end.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// How the request body is written.
enum Encoder {
    Length(u64),
    Chunked,
}

/// The outcome of [`H1Conn::poll_exchange`].
pub(crate) enum Exchanged {
    /// The response head (the body follows on the connection, framed as said).
    Head(Response<()>, Framing),
    /// A `101`: the connection now carries another protocol (with what the server sent
    /// after the head).
    Switched(Response<()>, Bytes),
}

/// An exchange that failed, before any of its request was written or after.
pub(crate) enum ExchangeError {
    Unsent(Box<Request<UpstreamBody>>, H1Error),
    /// With the request if it had no body and nothing of an answer was read (it may be
    /// sent again, when idempotent).
    Sent(H1Error, Option<Box<Request<UpstreamBody>>>),
}

/// What a response head is built without: the proxy's removals made as the head is
/// read, instead of from the built header map (a removal costs about as much as an
/// insertion). The framing and `Connection` are read from all the lines first.
#[derive(Clone, Copy, Default)]
pub(crate) struct LeaveOut<'a> {
    /// The hop-by-hop headers (RFC 9110 §7.6.1), those `Connection` names, and a
    /// `Content-Length` beside `Transfer-Encoding` (RFC 9112 §6.3). Never from a `101`,
    /// whose `Upgrade` and `Connection` the tunnel needs.
    pub(crate) hop_by_hop: bool,
    /// The headers this says (given lower-case names): `proxy_hide_header` and nginx's
    /// hidden defaults.
    pub(crate) hidden: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
}

/// One request in flight on a connection.
pub(crate) struct Exchange<'a> {
    /// Until a byte of it is written (to be given back if none is), or, without a body,
    /// until it is answered (to be sent again).
    request: Option<Request<UpstreamBody>>,
    /// Its head is in the write buffer (or written).
    encoded: bool,
    /// It has a body (written through [`H1Conn::sending`]).
    has_body: bool,
    head_request: bool,
    /// The request says `Connection: close`.
    close: bool,
    /// Some of it reached the socket.
    written: bool,
    /// Writing the rest failed: the server's answer may still be there to read.
    write_failed: Option<io::Error>,
    /// A head (1xx included) was read.
    answered: bool,
    /// What the final response head is built without.
    leave_out: LeaveOut<'a>,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(request: Request<UpstreamBody>, leave_out: LeaveOut<'a>) -> Exchange<'a> {
        Exchange {
            leave_out,
            head_request: request.method() == Method::HEAD,
            close: connection_has(request.headers(), "close"),
            request: Some(request),
            encoded: false,
            has_body: false,
            written: false,
            write_failed: None,
            answered: false,
        }
    }
}

/// An HTTP/1.1 client connection.
pub(crate) struct H1Conn {
    io: Io,
    read: BytesMut,
    write: BytesMut,
    /// The size of the next read.
    read_size: usize,
    /// Another request may follow the current one.
    reusable: bool,
    /// The request body still to be written: while the response head is awaited, and
    /// after it while the response body is read (a server may answer before it has read
    /// an upload, and read the rest as it answers).
    sending: Option<Sending>,
    /// Bytes written to the server so far (wrapping): whether a wait saw progress.
    sent: u64,
}

/// Where the writing of a request stands, as [`H1Conn::poll_exchange`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendPhase {
    /// The server takes no more bytes now (nginx's `proxy_send_timeout` runs).
    Blocked,
    /// Waiting for more of the request body from the client (whose
    /// `client_body_timeout` runs, not the upstream's).
    AwaitingBody,
    /// All written (or the writing failed): the answer is awaited
    /// (`proxy_read_timeout` runs).
    Sent,
}

/// A request body being written.
struct Sending {
    body: UpstreamBody,
    encoder: Encoder,
}

/// Why writing a request stopped.
enum SendFailure {
    /// The connection's write failed.
    Write(io::Error),
    /// The body failed, or did not match its length.
    Body(H1Error),
}

impl H1Conn {
    pub(crate) fn new(io: Io) -> H1Conn {
        H1Conn {
            io,
            read: BytesMut::new(),
            write: BytesMut::new(),
            read_size: READ_MIN,
            reusable: true,
            sending: None,
            sent: 0,
        }
    }

    /// Bytes written to the server so far (wrapping).
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Where the writing of the request stands.
    pub(crate) fn send_phase(&self) -> SendPhase {
        match (self.write.is_empty(), self.sending.is_some()) {
            (false, _) => SendPhase::Blocked,
            (true, true) => SendPhase::AwaitingBody,
            (true, false) => SendPhase::Sent,
        }
    }

    /// An idle connection still open, the server having sent nothing since: polled once
    /// without a task (nothing is woken later).
    pub(crate) fn poll_idle(&mut self) -> bool {
        if !self.reusable || !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Pending => true,
            // Closed (0), or bytes nobody asked for, or an error.
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Read more into the read buffer: the bytes read, 0 at the server's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let spare = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n == spare && self.read_size < READ_MAX {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Write what the write buffer holds; ready when it is empty and flushed.
    fn poll_drain(&mut self, cx: &mut Context<'_>, written: &mut bool) -> Poll<io::Result<()>> {
        while !self.write.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written = true;
            self.sent = self.sent.wrapping_add(n as u64);
            self.write.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Write the request as far as it goes now: the write buffer, then the body's frames
    /// as they come. Ok when it can go no further (all written, or waiting).
    fn poll_send(&mut self, cx: &mut Context<'_>, written: &mut bool) -> Result<(), SendFailure> {
        loop {
            match self.poll_drain(cx, written) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(SendFailure::Write(e)),
                Poll::Ready(Ok(())) => {}
            }
            let H1Conn { sending, write, .. } = self;
            let Some(s) = sending.as_mut() else {
                return Ok(());
            };
            match Pin::new(&mut s.body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        encode_data(&mut s.encoder, data, write).map_err(SendFailure::Body)?;
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(SendFailure::Body(H1Error::Body(e))),
                Poll::Ready(None) => {
                    encode_end(&s.encoder, write).map_err(SendFailure::Body)?;
                    *sending = None;
                }
            }
        }
    }

    /// Send the exchange's request and read the response head, the body written while
    /// the head is awaited (after an early answer, the rest is written as the body is
    /// read: [`H1Conn::poll_body`]; the connection is then not reused).
    pub(crate) fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        ex: &mut Exchange<'_>,
    ) -> Poll<Result<Exchanged, ExchangeError>> {
        if !ex.encoded
            && let Some(req) = ex.request.take()
        {
            ex.encoded = true;
            let (parts, body) = req.into_parts();
            let encoder = encode_head(&parts, &body, &mut self.write);
            if !body.is_end_stream() {
                ex.has_body = true;
                self.sending = Some(Sending { body, encoder });
            }
            // Kept until a byte is written, to be given back.
            ex.request = Some(Request::from_parts(parts, empty_body()));
        }
        // The writing side, as far as it goes now.
        if ex.write_failed.is_none() {
            match self.poll_send(cx, &mut ex.written) {
                Ok(()) => {}
                Err(SendFailure::Write(e)) if !ex.written => {
                    return Poll::Ready(Err(self.failed(ex, H1Error::Write(e))));
                }
                Err(SendFailure::Write(e)) => {
                    // A server that answers early (a 413 to a large body) and closes makes
                    // the rest of the request fail: its answer may be read all the same.
                    ex.write_failed = Some(e);
                    self.reusable = false;
                    self.sending = None;
                    self.write.clear();
                }
                Err(SendFailure::Body(e)) => return Poll::Ready(Err(self.failed(ex, e))),
            }
            // A request with a body is not sent again once any of it is written.
            if ex.written && ex.has_body {
                ex.request = None;
            }
        }
        // The reading side: a head, or more bytes of one.
        loop {
            match self.parse_head(ex) {
                Err(e) => return Poll::Ready(Err(self.failed(ex, e))),
                Ok(Some(done)) => {
                    if self.sending.is_some() || !self.write.is_empty() {
                        // Answered before the request was all written: the rest goes on
                        // as the answer is read (`poll_body`), and the connection is not
                        // reused.
                        self.reusable = false;
                    }
                    ex.request = None;
                    return Poll::Ready(Ok(done));
                }
                Ok(None) => {}
            }
            let filled = self.poll_fill(cx);
            // The connection is gone (reset or closed) and no answer was read: the write's
            // error is the failure. (Until the read sees the end, the answer may still be
            // on its way to the runtime: a reset connection reads as ready at once.)
            if matches!(filled, Poll::Ready(Ok(0) | Err(_)))
                && let Some(e) = ex.write_failed.take()
            {
                return Poll::Ready(Err(self.failed(ex, H1Error::Write(e))));
            }
            match filled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.failed(ex, H1Error::Incomplete)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.failed(ex, H1Error::Read(e)))),
            }
        }
    }

    fn failed(&mut self, ex: &mut Exchange<'_>, e: H1Error) -> ExchangeError {
        self.reusable = false;
        let body = self.sending.take();
        match (ex.written, ex.request.take()) {
            (false, Some(mut req)) => {
                // The head was never written; the body, if any, never polled.
                if let Some(s) = body {
                    *req.body_mut() = s.body;
                }
                ExchangeError::Unsent(Box::new(req), e)
            }
            // Kept only without a body; given back only if no answer began.
            (true, Some(req)) if self.read.is_empty() && !ex.answered => {
                ExchangeError::Sent(e, Some(Box::new(req)))
            }
            _ => ExchangeError::Sent(e, None),
        }
    }

    /// A complete response head from the read buffer (1xx answers but `101` skipped).
    fn parse_head(&mut self, ex: &mut Exchange<'_>) -> Result<Option<Exchanged>, H1Error> {
        loop {
            let Some((parsed, len)) = parse_response(&self.read)? else {
                if self.read.len() > MAX_HEAD {
                    return Err(H1Error::HeadTooLarge);
                }
                return Ok(None);
            };
            ex.answered = true;
            let head = self.read.split_to(len).freeze();
            let status = parsed.status()?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let resp = parsed.build(&head, status, &Facts::default(), LeaveOut::default())?;
                self.reusable = false;
                let rest = std::mem::take(&mut self.read).freeze();
                return Ok(Some(Exchanged::Switched(resp, rest)));
            }
            if status.is_informational() {
                continue;
            }
            let facts = parsed.facts(&head);
            let framing = response_framing(status, parsed.version, &facts, ex.head_request)?;
            let keep = match parsed.version {
                Version::HTTP_11 => !facts.close,
                _ => facts.keep_alive,
            };
            let resp = parsed.build(&head, status, &facts, ex.leave_out)?;
            if !keep || ex.close || framing == Framing::Close {
                self.reusable = false;
            }
            return Ok(Some(Exchanged::Head(resp, framing)));
        }
    }

    /// The next frame of a response body framed as `framing` (which it moves on).
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        if self.sending.is_some() || !self.write.is_empty() {
            // The rest of a request the server answered early; its failure ends only the
            // writing.
            let mut written = true;
            if self.poll_send(cx, &mut written).is_err() {
                self.sending = None;
                self.write.clear();
            }
        }
        let polled = self.poll_body_inner(cx, framing);
        if let Poll::Ready(Some(Err(_))) = polled {
            self.reusable = false;
            *framing = Framing::Done;
        }
        polled
    }

    fn poll_body_inner(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            match framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !self.read.is_empty() {
                        let n = (*left).min(self.read.len() as u64) as usize;
                        *left -= n as u64;
                        let data = self.read.split_to(n).freeze();
                        if *left == 0 {
                            *framing = Framing::Done;
                            self.finished();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    if !self.read.is_empty() {
                        let data = std::mem::take(&mut self.read).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => match decode_chunked(&mut self.read, state)? {
                    Some(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Decoded::End(_trailers)) => {
                        *framing = Framing::Done;
                        self.finished();
                        // An upstream's trailer fields are not passed on, as nginx (1.22)
                        // passes none: unfiltered, they would reach HTTP/2 clients with
                        // fields that end the stream (`connection`, `content-length`) or
                        // that `proxy_hide_header` and `proxy_cookie_*` never saw.
                        return Poll::Ready(None);
                    }
                    None => {}
                },
            }
            // The buffer has nothing more of the body: read.
            match ready!(self.poll_fill(cx)) {
                Ok(0) if *framing == Framing::Close => {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                // A TLS server that closes without close_notify ends such a body too.
                Err(e)
                    if *framing == Framing::Close && e.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(H1Error::Incomplete))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(H1Error::Read(e)))),
            }
        }
    }

    /// A body ended; bytes after it are an answer nobody asked for. Buffers grown for a
    /// large exchange are not kept while the connection waits in the pool.
    fn finished(&mut self) {
        if !self.read.is_empty() {
            self.reusable = false;
        } else if self.read.capacity() > KEEP_BUFFER {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > KEEP_BUFFER {
            self.write = BytesMut::new();
        }
    }

    /// The connection after a `101`, for the tunnel.
    pub(crate) fn into_io(self) -> Io {
        self.io
    }
}

/// Decode what the read buffer holds of a chunked body: data, the end (with trailer
/// fields, if any), or None when more must be read.
fn decode_chunked(read: &mut BytesMut, state: &mut Chunk) -> Result<Option<Decoded>, H1Error> {
    loop {
        match state {
            Chunk::Size => {
                let Some(end) = memchr_lf(read) else {
                    if read.len() > MAX_CHUNK_LINE {
                        return Err(H1Error::Invalid("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let size = chunk_size(&read[..end])?;
                read.advance(end + 1);
                *state = match size {
                    0 => Chunk::Trailers,
                    n => Chunk::Data(n),
                };
            }
            Chunk::Data(left) => {
                if read.is_empty() {
                    return Ok(None);
                }
                let n = (*left).min(read.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                return Ok(Some(Decoded::Data(read.split_to(n).freeze())));
            }
            Chunk::DataEnd => match read.first() {
                None => return Ok(None),
                Some(b'\n') => {
                    read.advance(1);
                    *state = Chunk::Size;
                }
                Some(b'\r') => match read.get(1) {
                    None => return Ok(None),
                    Some(b'\n') => {
                        read.advance(2);
                        *state = Chunk::Size;
                    }
                    Some(_) => return Err(H1Error::Invalid("chunk data longer than its size")),
                },
                Some(_) => return Err(H1Error::Invalid("chunk data longer than its size")),
            },
            Chunk::Trailers => {
                // Trailer fields up to an empty line, all in the buffer at once.
                let Some(len) = trailers_end(read) else {
                    if read.len() > MAX_TRAILERS {
                        return Err(H1Error::Invalid("trailer fields too large"));
                    }
                    return Ok(None);
                };
                let block = read.split_to(len).freeze();
                return Ok(Some(Decoded::End(parse_trailers(&block))));
            }
        }
    }
}

enum Decoded {
    Data(Bytes),
    End(Option<HeaderMap>),
}

/// Write the request head into `out`; the body's encoder (RFC 9112 §6.1–6.2, as hyper's
/// client chose it: the framing headers given, else the body's known length, else
/// chunked).
fn encode_head(parts: &http::request::Parts, body: &UpstreamBody, out: &mut BytesMut) -> Encoder {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let size = 32 + path.len() + parts.headers.len() * 32;
    out.reserve(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let empty = body.is_end_stream();
    let mut encoder = Encoder::Length(0);
    let mut framed = empty;
    // The request's own `Content-Length` fields are never copied: one is written for
    // what is sent, so that no value this side read one way (an empty one, `00`, a
    // repeated field from HTTP/2, where the client's framing is the frames) reaches a
    // kept upstream connection for its parser to read another way.
    let length = if empty {
        // No body: a zero length, where the request gave one.
        parts
            .headers
            .contains_key(header::CONTENT_LENGTH)
            .then_some(0)
    } else if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // Whatever else it says, chunked is what is written (hyper's client: the same).
        encoder = Encoder::Chunked;
        framed = is_chunked(&parts.headers);
        None
    } else if let Some(len) = content_length(&parts.headers) {
        encoder = Encoder::Length(len);
        framed = true;
        Some(len)
    } else {
        None
    };
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || (empty && name == header::TRANSFER_ENCODING) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !framed {
        match (&encoder, body.size_hint().exact()) {
            (Encoder::Chunked, _) => {
                // A Transfer-Encoding that does not end in chunked: chunked is added.
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            (_, Some(len)) => {
                encoder = Encoder::Length(len);
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(len.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            (_, None) => {
                encoder = Encoder::Chunked;
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    encoder
}

/// Put one data frame of the request body into `out`, framed.
fn encode_data(encoder: &mut Encoder, data: Bytes, out: &mut BytesMut) -> Result<(), H1Error> {
    if data.is_empty() {
        return Ok(());
    }
    match encoder {
        Encoder::Length(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err(H1Error::BodyLength);
            }
            *left -= n;
            out.extend_from_slice(&data);
        }
        Encoder::Chunked => {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}

/// The end of the request body.
fn encode_end(encoder: &Encoder, out: &mut BytesMut) -> Result<(), H1Error> {
    match encoder {
        Encoder::Length(0) => Ok(()),
        Encoder::Length(_) => Err(H1Error::BodyLength),
        Encoder::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            Ok(())
        }
    }
}

/// A parsed response head, its header lines as ranges of the head's bytes.
struct Parsed {
    version: Version,
    status: u16,
    /// The reason phrase's place in the head, when it is not the status's usual one
    /// (`499 Client Closed`): passed on to HTTP/1.1 clients as nginx passes it.
    reason: Option<(usize, usize)>,
    headers: Vec<(HeaderName, usize, usize)>,
}

/// Parse a response head at the start of `buf`: None while incomplete, else the head
/// and its length.
fn parse_response(buf: &[u8]) -> Result<Option<(Parsed, usize)>, H1Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut stack = [httparse::EMPTY_HEADER; HEADERS_ON_STACK];
    match parse_with(buf, &mut stack) {
        Err(H1Error::Parse(httparse::Error::TooManyHeaders)) => {
            let mut heap = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_with(buf, &mut heap)
        }
        other => other,
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<(Parsed, usize)>, H1Error> {
    let mut resp = httparse::Response::new(headers);
    let len = match resp.parse(buf).map_err(H1Error::Parse)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = resp.code.unwrap_or(0);
    let base = buf.as_ptr() as usize;
    let usual = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    let reason = (resp.reason)
        .filter(|r| !r.is_empty() && Some(*r) != usual)
        .map(|r| {
            (
                r.as_ptr() as usize - base,
                r.as_ptr() as usize - base + r.len(),
            )
        });
    let mut out = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Invalid("invalid header name"))?;
        let start = h.value.as_ptr() as usize - base;
        out.push((name, start, start + h.value.len()));
    }
    Ok(Some((
        Parsed {
            version,
            status,
            reason,
            headers: out,
        },
        len,
    )))
}

/// What a response head's framing and `Connection` lines say, read in one pass over
/// its lines (before any is left out of the header map).
#[derive(Debug, Default, PartialEq, Eq)]
struct Facts {
    /// `Transfer-Encoding` is present.
    transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    chunked: bool,
    /// `Content-Length`: absent (None), one number however often repeated (Some(Some)),
    /// or invalid or conflicting (Some(None)).
    content_length: Option<Option<u64>>,
    /// `Connection` lists `close`, `keep-alive`, and header names (other tokens).
    close: bool,
    keep_alive: bool,
    names_headers: bool,
}

impl Parsed {
    /// The value of line `i`, in `head`.
    fn value<'h>(&self, head: &'h [u8], i: usize) -> &'h [u8] {
        let (_, start, end) = &self.headers[i];
        &head[*start..*end]
    }

    /// Its status code, which must be a valid one.
    fn status(&self) -> Result<StatusCode, H1Error> {
        StatusCode::from_u16(self.status).map_err(|_| H1Error::Invalid("invalid status code"))
    }

    fn facts(&self, head: &[u8]) -> Facts {
        let mut facts = Facts::default();
        for (i, (name, _, _)) in self.headers.iter().enumerate() {
            let value = self.value(head, i);
            if name == header::TRANSFER_ENCODING {
                facts.transfer_encoding = true;
                facts.chunked = last_coding_is_chunked(value);
            } else if name == header::CONTENT_LENGTH {
                facts.content_length = Some(match facts.content_length {
                    None => add_length(None, value),
                    Some(found) => found.and_then(|n| add_length(Some(n), value)),
                });
            } else if name == header::CONNECTION {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        facts.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        facts.keep_alive = true;
                    } else if names_a_header(token) {
                        facts.names_headers = true;
                    }
                }
            }
        }
        facts
    }

    /// The response, its header values slices of `head` (the bytes it was parsed from),
    /// without what `leave_out` says.
    fn build(
        self,
        head: &Bytes,
        status: StatusCode,
        facts: &Facts,
        leave_out: LeaveOut<'_>,
    ) -> Result<Response<()>, H1Error> {
        // The header names `Connection` lists (rare: only when it names any).
        let named = |name: &HeaderName| {
            (self.headers.iter().enumerate())
                .filter(|(_, (n, _, _))| n == header::CONNECTION)
                .flat_map(|(i, _)| self.value(head, i).split(|&b| b == b','))
                .any(|t| {
                    t.trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
        };
        let left_out = |name: &HeaderName| {
            let hop = leave_out.hop_by_hop
                && (is_hop_by_hop(name)
                    || (facts.transfer_encoding && name == header::CONTENT_LENGTH)
                    || (facts.names_headers && named(name)));
            hop || leave_out.hidden.is_some_and(|hidden| hidden(name.as_str()))
        };
        // A length the body is framed by goes on as one field, its number written as a
        // number (the upstream's own bytes when they are that already): `5, 5`, `05`
        // or two fields are read as 5 here, and an HTTP/2 client refuses them.
        let length = match facts.content_length {
            Some(Some(n)) if !facts.transfer_encoding => Some(n),
            _ => None,
        };
        let mut length_kept = false;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (i, (name, start, end)) in self.headers.iter().enumerate() {
            if left_out(name) {
                continue;
            }
            if length.is_some() && name == header::CONTENT_LENGTH {
                let plain = |v: &[u8]| {
                    !v.is_empty() && v.iter().all(u8::is_ascii_digit) && (v == b"0" || v[0] != b'0')
                };
                if length_kept || !plain(self.value(head, i)) {
                    continue;
                }
                length_kept = true;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(*start..*end))
                .map_err(|_| H1Error::Invalid("invalid header value"))?;
            headers.append(name.clone(), value);
        }
        if let Some(n) = length.filter(|_| !length_kept && !left_out(&header::CONTENT_LENGTH)) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = headers;
        if let Some((start, end)) = self.reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.slice(start..end))
        {
            resp.extensions_mut().insert(reason);
        }
        Ok(resp)
    }
}

/// How the body of `resp` is delimited (RFC 9112 §6.3).
fn response_framing(
    status: StatusCode,
    version: Version,
    facts: &Facts,
    head_request: bool,
) -> Result<Framing, H1Error> {
    if head_request || crate::body::bodyless(status) {
        return Ok(Framing::Length(0));
    }
    if facts.transfer_encoding {
        // HTTP/1.0 has no transfer codings (hyper's client refused these too).
        if version == Version::HTTP_10 {
            return Err(H1Error::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        return Ok(match facts.chunked {
            true => Framing::Chunked(Chunk::Size),
            false => Framing::Close,
        });
    }
    match facts.content_length {
        Some(Some(len)) => Ok(Framing::Length(len)),
        Some(None) => Err(H1Error::Invalid("invalid Content-Length")),
        None => Ok(Framing::Close),
    }
}

/// The `Content-Length` of `headers`: one number, however often repeated; None when
/// absent, invalid or conflicting.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        found = Some(add_length(found, value.as_bytes())?);
    }
    found
}

/// One more `Content-Length` value (`found`: the number so far): the number, or None
/// when invalid or different.
fn add_length(mut found: Option<u64>, value: &[u8]) -> Option<u64> {
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// The last transfer coding is `chunked`.
fn is_chunked(headers: &HeaderMap) -> bool {
    (headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back())
    .is_some_and(|v| last_coding_is_chunked(v.as_bytes()))
}

/// The last coding of a `Transfer-Encoding` value is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    (value.rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn memchr_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The size of a chunk-size line (without its LF): hex digits, then optional
/// whitespace and extensions (ignored), and a CR.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(H1Error::Invalid("invalid chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(H1Error::Invalid("invalid chunk size"));
    }
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| H1Error::Invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Invalid("invalid chunk size"))
}

/// The length of a trailer section ending in an empty line, if all of it is in `buf`.
fn trailers_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let lf = memchr_lf(&buf[at..])?;
        let line = &buf[at..at + lf];
        at += lf + 1;
        if line.is_empty() || line == b"\r" {
            return Some(at);
        }
    }
}

/// The trailer fields of a section (lines that do not parse are left out); None when
/// there are none.
fn parse_trailers(block: &Bytes) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(head: &str) -> Result<Option<Response<()>>, H1Error> {
        resp_without(head, LeaveOut::default())
    }

    fn resp_without(head: &str, leave_out: LeaveOut<'_>) -> Result<Option<Response<()>>, H1Error> {
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        match parse_response(&bytes)? {
            None => Ok(None),
            Some((p, len)) => {
                let head = bytes.slice(..len);
                let (status, facts) = (p.status()?, p.facts(&head));
                p.build(&head, status, &facts, leave_out).map(Some)
            }
        }
    }

    /// How the body of the response `head` is delimited.
    fn framing(head: &str, head_request: bool) -> Result<Framing, H1Error> {
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        let (p, len) = parse_response(&bytes)?.expect("a whole head");
        let status = p.status()?;
        response_framing(status, p.version, &p.facts(&bytes[..len]), head_request)
    }

    #[test]
    fn heads_parse_with_their_values_shared() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let r = resp(head).unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(framing(head, false).unwrap(), Framing::Length(5));
        assert_eq!(framing(head, true).unwrap(), Framing::Length(0));
        assert!(resp("HTTP/1.1 200 OK\r\nX-A: b\r\n").unwrap().is_none());
        assert!(resp("HTTP/1.1 2000 OK\r\n\r\n").is_err());
        // More header lines than the stack holds.
        let many: String = (0..200).map(|i| format!("x-{i}: {i}\r\n")).collect();
        let head = format!("HTTP/1.1 204 No Content\r\n{many}\r\n");
        let r = resp(&head).unwrap().unwrap();
        assert_eq!(r.headers().len(), 200);
        assert_eq!(framing(&head, false).unwrap(), Framing::Length(0));
    }

    #[test]
    fn heads_are_built_without_what_the_proxy_leaves_out() {
        let head = "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
            Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\
            Date: today\r\nServer: up\r\nX-Kept: 1\r\nSet-Cookie: a=1\r\n\r\n";
        let hidden = |n: &str| n == "date" || n == "server";
        let all = LeaveOut {
            hop_by_hop: true,
            hidden: Some(&hidden),
        };
        let r = resp_without(head, all).unwrap().unwrap();
        let names: Vec<&str> = r.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "set-cookie"]);
        // The framing and the connection were read before: chunked, not kept.
        assert_eq!(framing(head, false).unwrap(), Framing::Chunked(Chunk::Size));
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        let (p, len) = parse_response(&bytes).unwrap().unwrap();
        let facts = p.facts(&bytes[..len]);
        assert!(facts.close && facts.names_headers && facts.transfer_encoding && facts.chunked);
        // Only the hop-by-hop ones; nothing left out by default.
        let hop = LeaveOut {
            hop_by_hop: true,
            hidden: None,
        };
        assert_eq!(resp_without(head, hop).unwrap().unwrap().headers().len(), 4);
        assert_eq!(resp(head).unwrap().unwrap().headers().len(), 9);
        // A `Content-Length` without `Transfer-Encoding` stays.
        let plain = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
        let r = resp_without(plain, hop).unwrap().unwrap();
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
    }

    #[test]
    fn the_length_a_body_is_framed_by_goes_on_as_one_number() {
        for (fields, want) in [
            ("Content-Length: 5\r\n", "5"),
            ("Content-Length: 5, 5\r\n", "5"),
            ("Content-Length: 05\r\n", "5"),
            ("Content-Length: 0\r\n", "0"),
            ("Content-Length: 5\r\nContent-Length: 5\r\n", "5"),
            ("Content-Length: 005\r\nContent-Length: 5\r\n", "5"),
        ] {
            let r = resp(&format!("HTTP/1.1 200 OK\r\n{fields}X-A: b\r\n\r\n"))
                .unwrap()
                .unwrap();
            let lengths: Vec<_> = r.headers().get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(lengths, [want], "{fields:?}");
            assert_eq!(r.headers()["x-a"], "b");
        }
        // Hidden (`proxy_hide_header`), it stays hidden.
        let hidden = |n: &str| n == "content-length";
        let hide = LeaveOut {
            hop_by_hop: true,
            hidden: Some(&hidden),
        };
        let r = resp_without("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", hide);
        assert!(r.unwrap().unwrap().headers().is_empty());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |h: &str| framing(h, false);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n")
                .unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(),
            Framing::Close
        );
        assert_eq!(f("HTTP/1.0 200 OK\r\n\r\n").unwrap(), Framing::Close);
        assert!(f("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n").unwrap(),
            Framing::Length(7)
        );
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").unwrap(),
            Framing::Length(0)
        );
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(chunk_size(b"1A;ext=1\r").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"10 ;x\r").unwrap(), 16);
        assert!(chunk_size(b"\r").is_err());
        assert!(chunk_size(b"x1\r").is_err());
        assert!(chunk_size(b"1 2\r").is_err());
        assert!(chunk_size(b"fffffffffffffffff\r").is_err());
        assert_eq!(trailers_end(b"a: b\r\n\r\nrest"), Some(8));
        assert_eq!(trailers_end(b"\r\n"), Some(2));
        assert_eq!(trailers_end(b"a: b\r\n"), None);
        let t = parse_trailers(&Bytes::from_static(b"grpc-status: 0\r\n\r\n")).unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert!(parse_trailers(&Bytes::from_static(b"\r\n")).is_none());
    }

    fn head_of(req: Request<UpstreamBody>) -> (String, bool) {
        let (parts, body) = req.into_parts();
        let mut out = BytesMut::new();
        let enc = encode_head(&parts, &body, &mut out);
        (
            String::from_utf8(out.to_vec()).unwrap(),
            matches!(enc, Encoder::Chunked),
        )
    }

    #[test]
    fn request_heads_are_framed_as_hyper_framed_them() {
        use http_body_util::{BodyExt, Full};
        let full = |s: &'static str| {
            Full::new(Bytes::from_static(s.as_bytes()))
                .map_err(|n| match n {})
                .boxed()
        };
        let mut req = Request::new(empty_body());
        *req.uri_mut() = "/a?b=1".parse().unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("up"));
        assert_eq!(head_of(req).0, "GET /a?b=1 HTTP/1.1\r\nhost: up\r\n\r\n");
        let mut req = Request::new(full("abc"));
        *req.method_mut() = Method::POST;
        assert_eq!(
            head_of(req).0,
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
        );
        let mut req = Request::new(Unsized.boxed());
        *req.method_mut() = Method::POST;
        let (head, chunked) = head_of(req);
        assert!(chunked);
        assert!(
            head.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{head}"
        );
        let mut enc = Encoder::Chunked;
        let mut out = BytesMut::new();
        encode_data(
            &mut enc,
            Bytes::from_static(b"hello world, 26 bytes long"),
            &mut out,
        )
        .unwrap();
        encode_end(&enc, &mut out).unwrap();
        assert_eq!(&out[..], b"1a\r\nhello world, 26 bytes long\r\n0\r\n\r\n");
        let mut enc = Encoder::Length(2);
        assert!(encode_data(&mut enc, Bytes::from_static(b"abc"), &mut out).is_err());
    }

    #[test]
    fn the_requests_own_content_length_fields_are_written_once_as_a_number() {
        use http_body_util::{BodyExt, Full};
        let with = |body: UpstreamBody, lengths: &[&'static str]| {
            let mut req = Request::new(body);
            *req.method_mut() = Method::POST;
            for v in lengths {
                req.headers_mut()
                    .append(header::CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            head_of(req).0
        };
        // No body: an empty, `00` or repeated length is one `0`; none stays none.
        for lengths in [&[""][..], &["00"], &["0", "00"], &["3"]] {
            assert_eq!(
                with(empty_body(), lengths),
                "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
                "{lengths:?}"
            );
        }
        assert_eq!(with(empty_body(), &[]), "POST / HTTP/1.1\r\n\r\n");
        // A body: its length, once.
        let abc = || {
            Full::new(Bytes::from_static(b"abc"))
                .map_err(|n| match n {})
                .boxed()
        };
        assert_eq!(
            with(abc(), &["3", "3"]),
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            with(abc(), &["003"]),
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
        );
    }

    /// A request whose head and body each fill the socket's buffers (so that writing
    /// waits), answered one byte per write (so that every parser state waits for more).
    #[tokio::test]
    async fn an_exchange_survives_waiting_writes_and_split_reads() {
        use http_body_util::{BodyExt, Full};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const BIG: usize = 6 << 20;
        let framing = "POST /up HTTP/1.1\r\nx-big: \r\ncontent-length: 6291356\r\n\r\n".len();
        let expected = BIG + BIG - 100 + framing;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < expected {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short at {}", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
            for b in answer {
                s.write_all(&[*b]).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            got
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut conn = H1Conn::new(Box::new(TokioIo::new(MaybeHttpsStream::Http(
            UpstreamStream::Tcp(TokioIo::new(tcp)),
        ))));
        let body = Full::new(Bytes::from(vec![b'b'; BIG - 100]))
            .map_err(|never| match never {})
            .boxed();
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "/up".parse().unwrap();
        let big = HeaderValue::from_str(&"h".repeat(BIG)).unwrap();
        req.headers_mut().insert("x-big", big);
        let mut ex = Exchange::new(req, LeaveOut::default());
        let head = std::future::poll_fn(|cx| conn.poll_exchange(cx, &mut ex)).await;
        let Ok(Exchanged::Head(resp, mut framing)) = head else {
            panic!("no head");
        };
        assert_eq!(resp.status(), 200);
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut framing)).await {
            match frame.unwrap().into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        assert_eq!(data, b"hello world");
        assert!(trailers.is_none(), "upstream trailers are not passed on");
        assert!(conn.reusable && framing == Framing::Done);
        let sent = server.await.unwrap();
        let text = String::from_utf8_lossy(&sent[..200]);
        assert!(text.starts_with("POST /up HTTP/1.1\r\n"), "{text}");
        assert_eq!(sent.len(), expected);
        assert!(sent.ends_with(b"bbbb"));
        // Once, whatever the polls: the head is encoded a single time.
        let heads = sent.windows(9).filter(|w| w == b"HTTP/1.1\r").count();
        assert_eq!(heads, 1);
    }

    /// Decode `wire` fed in pieces of the given sizes: the data, whether it ended (with
    /// its trailers), or the error.
    fn decode_in_pieces(
        wire: &[u8],
        pieces: &[usize],
    ) -> Result<(Vec<u8>, Option<Option<HeaderMap>>), H1Error> {
        let (mut read, mut state, mut data) = (BytesMut::new(), Chunk::Size, Vec::new());
        let mut rest = wire;
        let mut sizes = pieces.iter().copied().chain(std::iter::repeat(usize::MAX));
        loop {
            match decode_chunked(&mut read, &mut state)? {
                Some(Decoded::Data(d)) => data.extend_from_slice(&d),
                Some(Decoded::End(t)) => return Ok((data, Some(t))),
                None if rest.is_empty() => return Ok((data, None)),
                None => {
                    let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
                    read.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    proptest::proptest! {
        /// Whatever an upstream sends as a chunked body, in whatever pieces, decoding
        /// does not panic.
        #[test]
        fn chunked_decoding_never_panics(
            wire in proptest::collection::vec(proptest::sample::select(b"0123456789abcdefABCDEFx; =\r\n:\t".to_vec()), 0..200),
            pieces in proptest::collection::vec(1usize..8, 0..40),
        ) {
            let _ = decode_in_pieces(&wire, &pieces);
            let _ = parse_response(&wire);
        }

        /// A body chunked in any sizes (with extensions, CRLF or bare LF, trailers)
        /// decodes to the same bytes however the reads split it.
        #[test]
        fn chunked_bodies_decode_whole_in_any_pieces(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..8),
            ext in proptest::bool::ANY,
            bare_lf in proptest::bool::ANY,
            trailer in proptest::bool::ANY,
            pieces in proptest::collection::vec(1usize..16, 0..60),
        ) {
            let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:X}", c.len()).as_bytes());
                if ext {
                    wire.extend_from_slice(b" ;name=\"v\"");
                }
                wire.extend_from_slice(eol);
                wire.extend_from_slice(c);
                wire.extend_from_slice(eol);
            }
            wire.extend_from_slice(b"0");
            wire.extend_from_slice(eol);
            if trailer {
                wire.extend_from_slice(b"x-t: 1");
                wire.extend_from_slice(eol);
            }
            wire.extend_from_slice(eol);
            wire.extend_from_slice(b"next");
            let (data, end) = decode_in_pieces(&wire, &pieces).expect("decodes");
            proptest::prop_assert_eq!(data, chunks.concat());
            let trailers = end.expect("ended");
            proptest::prop_assert_eq!(trailers.is_some(), trailer);
        }
    }

    /// A server that answers before it has read the upload and reads the rest as it
    /// answers (full duplex): the rest of the body is written as the answer is read.
    #[tokio::test]
    async fn the_rest_of_a_body_goes_on_after_an_early_answer() {
        use http_body_util::{BodyExt, Full};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const BODY: usize = 8 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nstart \r\n")
                .await
                .unwrap();
            let mut body = got.len() - head_end;
            while body < BODY {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "upload cut short at {body}");
                body += n;
            }
            let end = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.to_string().len());
            s.write_all(end.as_bytes()).await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut conn = H1Conn::new(Box::new(TokioIo::new(MaybeHttpsStream::Http(
            UpstreamStream::Tcp(TokioIo::new(tcp)),
        ))));
        let body = Full::new(Bytes::from(vec![b'u'; BODY]))
            .map_err(|never| match never {})
            .boxed();
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        let mut ex = Exchange::new(req, LeaveOut::default());
        let head = std::future::poll_fn(|cx| conn.poll_exchange(cx, &mut ex)).await;
        let Ok(Exchanged::Head(resp, mut framing)) = head else {
            panic!("no head");
        };
        assert_eq!(resp.status(), 200);
        assert!(
            conn.sending.is_some() || !conn.write.is_empty(),
            "answered before the upload ended"
        );
        let mut data = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut framing)).await {
            if let Ok(d) = frame.unwrap().into_data() {
                data.extend_from_slice(&d);
            }
        }
        assert_eq!(String::from_utf8(data).unwrap(), format!("start {BODY}"));
        assert!(!conn.reusable);
        server.await.unwrap();
    }

    /// A body of unknown length.
    struct Unsized;
    impl Body for Unsized {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(None)
        }
    }
}
