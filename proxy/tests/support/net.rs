//! Network helpers: the built-in upstream on a background runtime, curl, free ports.

use std::net::SocketAddr;
use std::process::{Command, Output};

/// Start the built-in echo upstream (named `name`) on its own thread and runtime.
pub fn start_upstream(name: &'static str) -> SocketAddr {
    serve_upstream(
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream"),
        name,
    )
}

/// [`start_upstream`] on a port of the range 21000-21999 (for tests whose other
/// processes must reach it there, e.g. a container on the host network).
pub fn start_upstream_in_range(name: &'static str) -> SocketAddr {
    serve_upstream(bind_in_range(), name)
}

/// A free port of 127.0.0.1 in 21000-21999 (bound, then released).
pub fn free_port_in_range() -> u16 {
    bind_in_range().local_addr().expect("addr").port()
}

/// Binds 127.0.0.1 on a free port of 21000-21999.
fn bind_in_range() -> std::net::TcpListener {
    bind_free("127.0.0.1", 21000, 1000)
}

/// Binds `host` on a free port of `first..first + count`, starting at a place that
/// differs between processes and calls so parallel tests rarely race for one.
fn bind_free(host: &str, first: u16, count: u16) -> std::net::TcpListener {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() as u16).wrapping_mul(7) % count;
    for _ in 0..count {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % count;
        if let Ok(socket) = std::net::TcpListener::bind((host, first + offset)) {
            return socket;
        }
    }
    panic!("no free port in {first}-{}", first + count - 1);
}

pub fn serve_upstream(socket: std::net::TcpListener, name: &'static str) -> SocketAddr {
    let addr = socket.local_addr().expect("upstream addr");
    socket.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(socket).expect("listener");
            hsmgate_proxy::echo_upstream::serve(listener, name).await;
        });
    });
    addr
}

/// A port nothing listens on (bound, then released), for a server process to bind
/// next. Taken from 23000-31999, below the kernel's ephemeral range (32768-60999): a port
/// from there (`bind(0)`) can become another test's client source port between its
/// release and the server's bind, which then fails with "Address already in use".
pub fn free_port() -> u16 {
    bind_free("127.0.0.1", 23000, 9000)
        .local_addr()
        .expect("addr")
        .port()
}

/// [`free_port`] on the IPv6 loopback `[::1]`, from the same range for the same reason.
pub fn free_port6() -> u16 {
    bind_free("::1", 23000, 9000)
        .local_addr()
        .expect("an IPv6 loopback port")
        .port()
}

/// A process's stdout and then its stderr, as text (for searching and messages).
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run curl with `args`; `-sS --max-time 10` are added.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)")
}
