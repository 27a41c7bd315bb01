//! `proxy_request_buffering on` (nginx's default): a request body read whole before an
//! upstream is chosen, so it can be sent again to the next server, and a body over
//! `client_max_body_size` (chunked too) is a 413 before any upstream is contacted.
//!
//! Up to `client_body_buffer_size` (16k) the body stays in memory; a larger one goes to
//! an unlinked temporary file in `$TMPDIR` (`/tmp`): `O_TMPFILE`, mode 0600, no name
//! anyone else can open, gone when the request ends (or the process dies), as nginx
//! spills to `client_body_temp_path`. Memory per request stays bounded by that size.
//! Where no file can be made (a read-only `/tmp`), [`SpoolError::Unspooled`] hands back
//! what was read and the rest of the body, and the request streams it ([`Prefixed`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::balance::{BodyError, UpstreamBody};
use crate::body::RequestBody;

/// How much of a spooled file is read at a time when sending it.
const CHUNK: u64 = 64 * 1024;

/// A request body read whole.
#[derive(Debug, Clone)]
pub(crate) enum Spooled {
    /// Up to `client_body_buffer_size`.
    Memory(Bytes),
    /// Larger: an unlinked temporary file of `len` bytes.
    File {
        /// The file, read by offset (never by its shared cursor).
        file: Arc<File>,
        /// Its length.
        len: u64,
    },
}

/// Why a body could not be read; the client's fault but for [`SpoolError::Io`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Bad framing or the connection ended.
    #[error("client sent an invalid request body: {0}")]
    Malformed(#[source] hyper::Error),
    /// More than `client_max_body_size`.
    #[error("client intended to send too large body: more than {0} bytes")]
    TooLarge(u64),
    /// No bytes for `client_body_timeout`.
    #[error("client timed out sending its body ({0:?} without a byte)")]
    Timeout(Duration),
    /// The temporary file failed.
    #[error("request body temporary file: {0}")]
    Io(#[from] io::Error),
    /// No temporary file could be made (e.g. a read-only `/tmp`): what was read, and the
    /// rest of the body, to be streamed instead.
    #[error("no temporary file for the request body: {}", .0.error)]
    Unspooled(Box<Unspooled>),
}

/// A body that could not be spooled: sent as it arrives instead (and not retried).
#[derive(Debug)]
pub(crate) struct Unspooled {
    /// Why no file could be made.
    pub error: io::Error,
    /// The bytes read so far.
    pub head: Bytes,
    /// The rest of the client's body.
    pub rest: RequestBody,
    /// How many bytes `head` has.
    pub seen: u64,
}

impl SpoolError {
    /// The status for the client.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            SpoolError::Malformed(_) => StatusCode::BAD_REQUEST,
            SpoolError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SpoolError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            SpoolError::Io(_) | SpoolError::Unspooled(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Read `body` whole: at most `max` bytes, in memory up to `memory` bytes, at most
/// `timeout` between two reads.
pub(crate) async fn read(
    mut body: RequestBody,
    max: Option<u64>,
    memory: u64,
    timeout: Duration,
) -> Result<Spooled, SpoolError> {
    let mut buf = BytesMut::new();
    // Once past `memory`: the file, its length so far, and `buf` holds what is to be
    // written next (at most about WRITE_BATCH).
    let mut file: Option<(Arc<File>, u64)> = None;
    let mut seen: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(SpoolError::Timeout(timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(SpoolError::Malformed(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        seen += data.len() as u64;
        if let Some(max) = max.filter(|&m| seen > m) {
            return Err(SpoolError::TooLarge(max));
        }
        buf.extend_from_slice(&data);
        match &mut file {
            Some((f, written)) if buf.len() >= WRITE_BATCH => {
                *written = write_at(f, buf.split().freeze(), *written).await?;
            }
            Some(_) => {}
            None if seen > memory => {
                let made = tokio::task::spawn_blocking(tempfile::tempfile)
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r);
                let f = match made {
                    Ok(f) => Arc::new(f),
                    Err(error) => {
                        let head = buf.freeze();
                        let rest = body;
                        let u = Unspooled {
                            error,
                            head,
                            rest,
                            seen,
                        };
                        return Err(SpoolError::Unspooled(Box::new(u)));
                    }
                };
                let written = write_at(&f, buf.split().freeze(), 0).await?;
                file = Some((f, written));
            }
            None => {}
        }
    }
    Ok(match file {
        None => Spooled::Memory(buf.freeze()),
        Some((f, written)) => {
            write_at(&f, buf.freeze(), written).await?;
            Spooled::File { file: f, len: seen }
        }
    })
}

/// A spooled body is written to its file in batches of about this size, not a write
/// (a task of the blocking pool) per frame read: an HTTP/2 upload comes in frames of
/// 16 KB.
const WRITE_BATCH: usize = 128 * 1024;

/// Blocking writes of spooled bodies at once, process-wide: many uploads at once share
/// them instead of taking a thread of the blocking pool each.
static WRITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Writes `bytes` to `file` at `offset` on the blocking pool (one of [`WRITERS`]);
/// returns the offset after them.
async fn write_at(file: &Arc<File>, bytes: Bytes, offset: u64) -> io::Result<u64> {
    if bytes.is_empty() {
        return Ok(offset);
    }
    let _writer = WRITERS.acquire().await.map_err(io::Error::other)?;
    let (file, end) = (Arc::clone(file), offset + bytes.len() as u64);
    tokio::task::spawn_blocking(move || file.write_all_at(&bytes, offset))
        .await
        .map_err(io::Error::other)??;
    Ok(end)
}

// === impl Spooled ===

impl Spooled {
    /// The body's length.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Spooled::Memory(b) => b.len() as u64,
            Spooled::File { len, .. } => *len,
        }
    }

    /// True for an empty body.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A body sending it from the start (again).
    pub(crate) fn body(&self) -> UpstreamBody {
        match self {
            Spooled::Memory(b) => Full::new(b.clone()).map_err(|never| match never {}).boxed(),
            Spooled::File { file, len } => FileBody {
                file: Arc::clone(file),
                offset: 0,
                len: *len,
                pending: None,
            }
            .boxed(),
        }
    }
}

/// A spooled file sent in [`CHUNK`]s read on the blocking pool.
struct FileBody {
    file: Arc<File>,
    offset: u64,
    len: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

// === impl FileBody ===

impl Body for FileBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.offset >= this.len {
            return Poll::Ready(None);
        }
        let pending = this.pending.get_or_insert_with(|| {
            let (file, offset) = (Arc::clone(&this.file), this.offset);
            let n = CHUNK.min(this.len - offset) as usize;
            tokio::task::spawn_blocking(move || {
                let mut chunk = vec![0; n];
                file.read_exact_at(&mut chunk, offset)?;
                Ok(Bytes::from(chunk))
            })
        });
        let read = std::task::ready!(Pin::new(pending).poll(cx));
        this.pending = None;
        match read.map_err(io::Error::other).and_then(|r| r) {
            Ok(chunk) => {
                this.offset += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(e) => Poll::Ready(Some(Err(Box::new(SpoolError::Io(e))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

/// `head`, then `rest`: an [`Unspooled`] body sent on.
pub(crate) struct Prefixed<B> {
    head: Option<Bytes>,
    rest: B,
}

impl<B> Prefixed<B> {
    /// `head` first.
    pub(crate) fn new(head: Bytes, rest: B) -> Self {
        Prefixed {
            head: Some(head).filter(|h| !h.is_empty()),
            rest,
        }
    }
}

// === impl Prefixed ===

impl<B: Body<Data = Bytes, Error = BodyError> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_body_is_sent_whole_and_again() -> Result<(), Box<dyn std::error::Error>> {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // Written as `read` writes it, in batches at their offsets.
        let file = Arc::new(tempfile::tempfile()?);
        let mut end = 0;
        for part in data.chunks(WRITE_BATCH / 2 + 7) {
            end = write_at(&file, Bytes::copy_from_slice(part), end).await?;
        }
        assert_eq!(end, data.len() as u64);
        let spooled = Spooled::File {
            file,
            len: data.len() as u64,
        };
        for _ in 0..2 {
            let body = spooled.body();
            assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
            let got = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            assert_eq!(got.as_ref(), &data[..]);
        }
        Ok(())
    }
}
