//! An upstream connection's socket: TCP, or a Unix domain socket (nginx's
//! `server unix:/path;` in an `upstream` block, `proxy_pass http://unix:/path:/uri;`, TOML's
//! `address = "unix:/path"`), as one type under the TLS layer and hsmgate's HTTP/1.1
//! client.
//!
//! An upstream address is a string throughout (the balancer's servers, the pool's keys,
//! `$upstream_addr`): `host:port`, or `unix:` and the socket's path, as nginx writes it.
//! [`Dial`] is the TCP connector of a pool ([`hyper_util`]'s, its sockets wrapped); a Unix
//! socket is connected by [`connect_unix`] (plain HTTP only: the configuration refuses
//! `https://` to a Unix socket).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;

/// The socket's path when `addr` is a Unix socket's address (the configuration's rule).
pub(crate) use hsmgate_config::unix_socket_path as unix_path;

/// A connected upstream socket.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    Tcp(TokioIo<TcpStream>),
    Unix(TokioIo<UnixStream>),
}

/// Connect to the Unix socket at `path`.
pub(crate) async fn connect_unix(path: &str) -> io::Result<UpstreamStream> {
    let stream = UnixStream::connect(path).await?;
    Ok(UpstreamStream::Unix(TokioIo::new(stream)))
}

impl Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Tcp(s) => s.connected(),
            UpstreamStream::Unix(_) => Connected::new(),
        }
    }
}

/// A pool's TCP connector: [`HttpConnector`], its sockets as [`UpstreamStream`]s (the
/// TLS connector wraps this one).
#[derive(Clone, Debug)]
pub(crate) struct Dial(pub(crate) HttpConnector);

impl Service<Uri> for Dial {
    type Response = UpstreamStream;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<UpstreamStream, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(UpstreamStream::Tcp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn unix_addresses_are_told_apart() {
        assert_eq!(unix_path("unix:/run/app.sock"), Some("/run/app.sock"));
        assert_eq!(unix_path("127.0.0.1:8080"), None);
    }

    #[tokio::test]
    async fn a_unix_socket_carries_bytes_both_ways() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(b"pong").await.expect("write");
            buf
        });
        let stream = connect_unix(path.to_str().expect("utf-8"))
            .await
            .expect("connect");
        let mut io = TokioIo::new(stream);
        io.write_all(b"ping").await.expect("write");
        let mut answer = [0u8; 4];
        io.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"pong");
        assert_eq!(&server.await.expect("server"), b"ping");
        let missing = connect_unix("/nonexistent/hsmgate.sock").await;
        assert!(missing.is_err());
    }
}
