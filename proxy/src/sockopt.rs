//! Integer TCP socket options that neither socket2 nor nix sets: `TCP_DEFER_ACCEPT`
//! (`listen … deferred`) and `TCP_FASTOPEN` (`listen … fastopen=N`). The one unsafe call
//! of this crate.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `TCP_DEFER_ACCEPT`: wake the accept only once data has arrived, or `secs` passed.
pub(crate) fn set_defer_accept(socket: &impl AsFd, secs: u32) -> io::Result<()> {
    set_tcp_int(socket, libc::TCP_DEFER_ACCEPT, secs)
}

/// `TCP_FASTOPEN` on a listening socket: the queue of pending fast-open connections.
pub(crate) fn set_fastopen(socket: &impl AsFd, queue: u32) -> io::Result<()> {
    set_tcp_int(socket, libc::TCP_FASTOPEN, queue)
}

/// `setsockopt(fd, IPPROTO_TCP, option, &value, sizeof(int))`.
fn set_tcp_int(socket: &impl AsFd, option: libc::c_int, value: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    let fd = socket.as_fd().as_raw_fd();
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is an open descriptor borrowed for the call, and the option value is
    // a pointer to a live c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            (&raw const value).cast(),
            len,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read an integer TCP option back (getsockopt through nix is not offered either).
    fn get(socket: &std::net::TcpListener, option: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap();
        // SAFETY: as in `set_tcp_int`, with a writable value and length.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                option,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    #[test]
    fn options_are_set_on_a_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_defer_accept(&l, 1).unwrap();
        // Linux keeps the timeout as SYN-ACK retransmissions and reports it back rounded
        // up to their schedule: 1 s reads back as a small positive number.
        assert!(get(&l, libc::TCP_DEFER_ACCEPT) > 0);
        set_fastopen(&l, 256).unwrap();
        assert_eq!(get(&l, libc::TCP_FASTOPEN), 256);
    }
}
