//! When a connection's first bytes reached this machine: the kernel's receive timestamp
//! of the ClientHello (`SO_TIMESTAMPNS`), for admission's door check.
//!
//! A proxy that falls behind accepts late: connections wait in the kernel's accept queue
//! before hsmgate sees them, and a wait measured from `accept` misses that queue
//! entirely. The ClientHello follows the TCP handshake at once, so the time since the
//! kernel received it is the connection's whole wait, accept queue included. The
//! listening socket asks for timestamps ([`enable`]; accepted sockets inherit the
//! option) and the first read of each connection takes them ([`recv_stamped`]).
//!
//! The kernel turns receive timestamps on for the machine with a deferred work item the
//! first time a socket asks (`net_enable_timestamp`): packets that arrive before it has
//! run carry no stamp, and those connections count from their accept instead.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Ask the kernel to timestamp what `listener`'s connections receive.
pub(crate) fn enable(listener: &impl AsFd) -> io::Result<()> {
    setsockopt(listener, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Read into `buf` as `read` does (waiting until the socket is readable), with the
/// kernel's receive time of the bytes read when the socket has one.
pub(crate) async fn recv_stamped(
    stream: &TcpStream,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SystemTime>)> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || recv_once(stream, buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// One non-blocking `recvmsg`.
pub(crate) fn recv_once(
    stream: &TcpStream,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let stamp = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let (secs, nanos) = (u64::try_from(ts.tv_sec()).ok()?, ts.tv_nsec());
                let since_epoch = Duration::new(secs, u32::try_from(nanos).ok()?);
                SystemTime::UNIX_EPOCH.checked_add(since_epoch)
            }
            _ => None,
        })
    });
    Ok((msg.bytes, stamp))
}

/// How long ago the kernel received bytes stamped `at` (zero if the clock went back).
pub(crate) fn age(at: SystemTime) -> Duration {
    SystemTime::now().duration_since(at).unwrap_or_default()
}

/// How long a connection has waited: since the kernel received its ClientHello
/// (`arrived`), or since its accept where the kernel gave no stamp.
pub(crate) fn waited(arrived: Option<SystemTime>, accepted: Instant) -> Duration {
    arrived.map_or_else(|| accepted.elapsed(), age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Connect to `listener`, send a byte, accept and read it: whether it was stamped.
    async fn stamped_once(listener: &tokio::net::TcpListener) -> bool {
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(b"x").await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        let (n, stamp) = recv_stamped(&server, &mut buf).await.unwrap();
        assert_eq!(n, 1);
        stamp.is_some()
    }

    #[tokio::test]
    async fn an_accepted_socket_inherits_the_option_and_its_first_read_is_stamped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        enable(&listener).unwrap();
        // The first socket on the machine that asks for receive timestamps turns them on
        // for all packets through a deferred kernel work item (`net_enable_timestamp`):
        // until it has run, arriving packets carry no stamp (the proxy then counts from
        // the accept). Wait for it, so that the packet measured below is stamped.
        let mut tries = 0;
        while !stamped_once(&listener).await {
            tries += 1;
            assert!(tries < 200, "the kernel never stamped a received packet");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(b"hello").await.unwrap();
        // The bytes wait in the kernel before the accept, as in a proxy that is behind.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (server, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let (n, stamp) = recv_stamped(&server, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        let waited = age(stamp.expect("a kernel timestamp"));
        assert!(
            waited >= Duration::from_millis(50),
            "the wait before the accept is counted: {waited:?}"
        );
    }

    #[tokio::test]
    async fn without_the_option_there_is_no_stamp_and_the_read_still_works() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 4];
        let (n, stamp) = recv_stamped(&server, &mut buf).await.unwrap();
        assert_eq!((n, stamp), (1, None));
        drop(client);
        let (n, _) = recv_stamped(&server, &mut buf).await.unwrap();
        assert_eq!(n, 0, "end of stream reads as 0");
    }
}
