//! The hand-rolled HTTP/1.1 exchange of the handshake and resume modes: one pre-built
//! `Connection: close` request, and a response reader (status line and headers with
//! `httparse`, body by Content-Length, chunked, or until EOF) that reuses one buffer.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::cli::Header;
use super::error::ErrorKind;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Initial size of a lane's read buffer.
pub(crate) const READ_BUF: usize = 16 * 1024;

/// Builds the request bytes, sent as they are on every new connection.
pub(crate) fn request_bytes(path: &str, authority: &str, extra: &[Header]) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !extra.iter().any(|h| h.name == http::header::HOST) {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"User-Agent: hsmgate-load\r\nAccept: */*\r\n");
    for h in extra {
        if h.name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Bytes::from(out)
}

/// How the response body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    Eof,
}

/// Reads one response from `io` (using `buf` as scratch space) and returns its status.
/// The body is read and discarded; `Ok(status)` means the response was complete.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> Result<u16, ErrorKind> {
    if buf.len() < READ_BUF {
        buf.resize(READ_BUF, 0);
    }
    let mut filled = 0;
    let mut start = 0;
    let (status, mut framing, body_start) = loop {
        // Try to parse what we have (possibly several interim 1xx responses).
        if filled > start {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf[start..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = resp.code.unwrap_or(0);
                    if (100..200).contains(&code) && code != 101 {
                        start += len;
                        continue;
                    }
                    let framing = framing_of(code, resp.headers)?;
                    break (code, framing, start + len);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(ErrorKind::Protocol),
            }
        }
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Err(ErrorKind::Protocol);
            }
            let n = buf.len() * 2;
            buf.resize(n, 0);
        }
        match io.read(&mut buf[filled..]).await {
            Ok(0) => return Err(ErrorKind::Reset),
            Ok(n) => filled += n,
            Err(e) => return Err(ErrorKind::from_io(&e)),
        }
    };

    // Body bytes that came with the head.
    if consume(&mut framing, &buf[body_start..filled])? {
        return Ok(status);
    }
    loop {
        match io.read(&mut buf[..]).await {
            Ok(0) => {
                return if framing == Framing::Eof {
                    Ok(status)
                } else {
                    Err(ErrorKind::Reset)
                };
            }
            Ok(n) => {
                if consume(&mut framing, &buf[..n])? {
                    return Ok(status);
                }
            }
            // A server that closes without close_notify ends a read-to-EOF body too.
            Err(e) if framing == Framing::Eof && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(status);
            }
            Err(e) => return Err(ErrorKind::from_io(&e)),
        }
    }
}

/// Reads until EOF (or error), discarding; used to let the server close first.
pub(crate) async fn drain<S: AsyncRead + Unpin>(io: &mut S, buf: &mut [u8]) {
    while let Ok(n) = io.read(buf).await {
        if n == 0 {
            break;
        }
    }
}

fn framing_of(code: u16, headers: &[httparse::Header<'_>]) -> Result<Framing, ErrorKind> {
    if code == 204 || code == 304 {
        return Ok(Framing::Length(0));
    }
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Ok(Framing::Chunked(ChunkedDecoder::default()));
            }
            return Ok(Framing::Eof);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ErrorKind::Protocol)?;
            length = Some(v);
        }
    }
    Ok(length.map_or(Framing::Eof, Framing::Length))
}

/// Feeds body bytes; true when the body is complete.
fn consume(framing: &mut Framing, data: &[u8]) -> Result<bool, ErrorKind> {
    match framing {
        Framing::Length(rem) => {
            *rem = rem.saturating_sub(data.len() as u64);
            Ok(*rem == 0)
        }
        Framing::Chunked(dec) => dec.feed(data),
        Framing::Eof => Ok(false),
    }
}

/// Incremental decoder of a chunked body (sizes, extensions, data, trailers); it only
/// tracks where the body ends.
#[derive(Debug, Default, PartialEq, Eq)]
struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum ChunkState {
    /// Expecting the first hex digit of a chunk size.
    #[default]
    SizeStart,
    /// Reading hex digits of a chunk size (value so far).
    Size(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

impl ChunkedDecoder {
    fn feed(&mut self, mut data: &[u8]) -> Result<bool, ErrorKind> {
        use ChunkState::*;
        while let Some((&b, rest)) = data.split_first() {
            self.state = match self.state {
                Done => return Ok(true),
                Data(rem) => {
                    let take = rem.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.state = if rem == take {
                        DataCr
                    } else {
                        Data(rem - take)
                    };
                    continue;
                }
                SizeStart => match hex(b) {
                    Some(d) => Size(d),
                    None => return Err(ErrorKind::Protocol),
                },
                Size(v) => match (hex(b), b) {
                    (Some(d), _) => Size(
                        v.checked_mul(16)
                            .and_then(|v| v.checked_add(d))
                            .ok_or(ErrorKind::Protocol)?,
                    ),
                    (None, b';' | b' ' | b'\t') => Ext(v),
                    (None, b'\r') => SizeLf(v),
                    (None, b'\n') => after_size(v),
                    _ => return Err(ErrorKind::Protocol),
                },
                Ext(v) => match b {
                    b'\r' => SizeLf(v),
                    b'\n' => after_size(v),
                    _ => Ext(v),
                },
                SizeLf(v) => match b {
                    b'\n' => after_size(v),
                    _ => return Err(ErrorKind::Protocol),
                },
                DataCr => match b {
                    b'\r' => DataLf,
                    b'\n' => SizeStart,
                    _ => return Err(ErrorKind::Protocol),
                },
                DataLf => match b {
                    b'\n' => SizeStart,
                    _ => return Err(ErrorKind::Protocol),
                },
                TrailerStart => match b {
                    b'\r' => FinalLf,
                    b'\n' => Done,
                    _ => TrailerLine,
                },
                TrailerLine => match b {
                    b'\n' => TrailerStart,
                    _ => TrailerLine,
                },
                FinalLf => match b {
                    b'\n' => Done,
                    _ => return Err(ErrorKind::Protocol),
                },
            };
            data = rest;
        }
        Ok(self.state == Done)
    }
}

fn after_size(v: u64) -> ChunkState {
    if v == 0 {
        ChunkState::TrailerStart
    } else {
        ChunkState::Data(v)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all_parts(parts: &[&[u8]]) -> Result<u16, ErrorKind> {
        let mut builder = tokio_test_io(parts);
        let mut buf = Vec::new();
        read_response(&mut builder, &mut buf).await
    }

    /// An AsyncRead that yields `parts` one read at a time, then EOF.
    fn tokio_test_io(parts: &[&[u8]]) -> impl AsyncRead + Unpin {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for p in parts {
                tx.write_all(&p).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        rx
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn content_length() {
        block_on(async {
            let r = read_all_parts(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"]);
            assert_eq!(r.await, Ok(200));
            let r = read_all_parts(&[b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"]);
            assert_eq!(r.await, Ok(503));
            // Truncated body.
            let r = read_all_parts(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"]);
            assert_eq!(r.await, Err(ErrorKind::Reset));
        });
    }

    #[test]
    fn chunked_eof_and_interim() {
        block_on(async {
            let r = read_all_parts(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel",
                b"lo\r\n1",
                b"0\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n",
            ]);
            assert_eq!(r.await, Ok(200));
            let r = read_all_parts(&[b"HTTP/1.1 200 OK\r\n\r\nuntil eof"]);
            assert_eq!(r.await, Ok(200));
            let r = read_all_parts(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\n\r\n"]);
            assert_eq!(r.await, Ok(204));
        });
    }

    #[test]
    fn malformed() {
        block_on(async {
            assert_eq!(
                read_all_parts(&[b"garbage\r\n\r\n"]).await,
                Err(ErrorKind::Protocol)
            );
            assert_eq!(read_all_parts(&[b""]).await, Err(ErrorKind::Reset));
            let r = read_all_parts(&[b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]);
            assert_eq!(r.await, Err(ErrorKind::Protocol));
            let r =
                read_all_parts(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
            assert_eq!(r.await, Err(ErrorKind::Protocol));
        });
    }

    #[test]
    fn chunked_byte_by_byte() {
        let body = b"3\r\nabc\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::default();
        for (i, b) in body.iter().enumerate() {
            let done = d.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(done, i == body.len() - 1, "at {i}");
        }
    }

    #[test]
    fn request_has_host_and_close() {
        let extra = [crate::load::cli::parse_header("X-A: 1").unwrap()];
        let r = request_bytes("/p", "h:1", &extra);
        assert_eq!(
            &r[..],
            b"GET /p HTTP/1.1\r\nHost: h:1\r\nUser-Agent: hsmgate-load\r\nAccept: */*\r\nx-a: 1\r\nConnection: close\r\n\r\n"
        );
        let extra = [crate::load::cli::parse_header("Host: other").unwrap()];
        let r = request_bytes("/", "h:1", &extra);
        assert!(!r.windows(6).any(|w| w == b"Host: "));
    }
}
