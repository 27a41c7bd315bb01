//! The TLS stream hyper reads and writes: tokio-rustls' server stream, plus a flush of
//! what rustls has queued to send after every read.
//!
//! rustls may answer a record with records of its own without the application writing
//! anything: the `no_renegotiation` warning to a TLS 1.2 ClientHello after the
//! handshake, a KeyUpdate reply, an alert before it fails. tokio-rustls 0.26 writes
//! pending TLS output only from `poll_write`/`poll_flush` (its `poll_read` reads and
//! processes records, and writes only a last alert when processing fails), so an idle
//! HTTP connection would keep such an answer queued and the client would wait for it
//! until its timeout. [`FlushingTls`] writes it after each read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A server TLS stream that sends rustls' pending records after every read.
#[derive(Debug)]
pub(crate) struct FlushingTls(pub TlsStream<TcpStream>);

impl AsyncRead for FlushingTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if self.0.get_ref().1.wants_write() {
            // Pending: the socket is full, and the records go with the next write (the
            // waker is registered for writability, so the connection is polled again).
            // An error is the read side's to report (or the next write's).
            let _ = Pin::new(&mut self.0).poll_flush(cx);
        }
        read
    }
}

impl AsyncWrite for FlushingTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
