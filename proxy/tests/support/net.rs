//! Network helpers: the built-in upstream on a background runtime, curl, free ports.

use std::net::SocketAddr;
use std::process::{Command, Output};

/// Start the built-in echo upstream (named `name`) on its own thread and runtime.
pub fn start_upstream(name: &'static str) -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = socket.local_addr().expect("upstream addr");
    socket.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(socket).expect("listener");
            hsmgate_proxy::upstream::serve(listener, name).await;
        });
    });
    addr
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Run curl with `args`; `-sS --max-time 10` are added.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)")
}
