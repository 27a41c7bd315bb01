//! Test fixtures with real parts: SoftHSM tokens made per test in temp dirs (their own
//! `SOFTHSM2_CONF`), certificates issued by a test CA for the token's public key, the
//! `hsmgate` binary as a subprocess (stopped by PID on drop), the built-in echo upstream,
//! and `p11-kit server` as a separately killable HSM.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod client;
pub mod corpus;
pub mod hsm;
pub mod lab;
pub mod net;
pub mod nginx;
pub mod proxy;
pub mod raw;
pub mod realworld;
pub mod tls13;
pub mod tlsraw;

pub use hsm::{KeyType, P11KitServer, TestToken};
pub use net::{
    curl, free_port, free_port_in_range, free_port6, output_text, start_upstream,
    start_upstream_in_range,
};
pub use proxy::{ProxyProcess, config_for, start_echo_proxy};

/// Call `check` every 20 ms until it gives a value. After `within`, panic with `what()`
/// (which usually ends with the process's log).
pub fn poll<T>(
    within: std::time::Duration,
    what: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{}", what());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) however the test that started it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
