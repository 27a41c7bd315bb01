//! hsmgate bench suite.
//!
//! Table of contents:
//! - [`load`]: the `hsmgate-load` HTTPS load generator (handshake, resume, keep-alive and
//!   HTTP/2 modes; closed and open loop; HDR latency histogram; human or JSON report).
//!   The binary is `src/bin/hsmgate-load.rs`.
#![forbid(unsafe_code)]

pub mod load;
