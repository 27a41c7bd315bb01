//! systemd's `sd_notify` protocol without libsystemd: one datagram to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! `READY=1` once listening, `RELOADING=1` + `MONOTONIC_USEC` while a reload runs,
//! `STOPPING=1` when a stop begins. Without `$NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`) to systemd, if hsmgate runs under it.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    if let Err(e) = send(&path, state) {
        tracing::warn!(socket = %path, error = %e, "sd_notify failed");
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd wants (Type=notify-reload).
pub(crate) fn reloading() {
    let usec = monotonic_usec();
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, read from /proc/uptime's clock source
/// (std has no portable accessor; `Instant` is CLOCK_MONOTONIC on Linux but opaque).
fn monotonic_usec() -> u128 {
    // /proc/uptime is CLOCK_BOOTTIME; close enough when no suspend happened. systemd
    // only uses the value to order the reload against its own timestamps.
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1_000_000.0) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        assert!(monotonic_usec() > 0);
    }
}
