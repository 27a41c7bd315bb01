//! hsmgate bench suite.
//!
//! Table of contents:
//! - [`load`]: the `hsmgate-load` HTTPS load generator (handshake, resume, keep-alive and
//!   HTTP/2 modes; closed and open loop; HDR latency histogram; human or JSON report).
//!   The binary is `src/bin/hsmgate-load.rs`.
//! - [`sweep`]: open-loop sweep results (JSON lines) and their two-panel SVG plot; the
//!   binary is `src/bin/plot-sweep.rs`, called by `compare/compare.sh`.
//!
//! Also in this package: the criterion benches (`benches/sign.rs`, `benches/handshake.rs`,
//! `benches/config.rs`) and the side-by-side comparison with nginx (`compare/compare.sh`).
#![forbid(unsafe_code)]

pub mod load;
pub mod sweep;
