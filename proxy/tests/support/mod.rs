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

pub use hsm::{KeyType, P11KitServer, TestToken};
pub use net::{curl, free_port, start_upstream};
pub use proxy::{ProxyProcess, config_for};
