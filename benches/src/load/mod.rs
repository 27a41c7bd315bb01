//! The `hsmgate-load` load generator.
//!
//! One job per file:
//! - [`cli`]: command-line arguments and their value parsers,
//! - [`error`]: setup errors ([`LoadError`]) and per-request error kinds ([`ErrorKind`]),
//! - `target`: the URL (https only), address resolution and the start-up reachability probe,
//! - `tls`: the rustls client configuration (CA file, `--insecure`, versions, resumption, ALPN),
//! - `http1`: the hand-rolled HTTP/1.1 `Connection: close` exchange of the handshake/resume modes,
//! - `client`: connections ("lanes") and one request per mode,
//! - `closed_loop` / `open_loop`: the two ways of driving requests,
//! - [`stats`]: latency histogram and error counters,
//! - [`report`]: the summary (human or JSON).

pub mod cli;
mod client;
mod closed_loop;
pub mod error;
mod http1;
mod open_loop;
pub mod report;
pub mod stats;
mod target;
mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use cli::{Args, Mode, TlsVersion};
pub use error::{ErrorKind, LoadError};
pub use report::Report;
pub use stats::Stats;

use client::Shared;
use target::Target;

/// What a finished run hands to the report.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Merged statistics of the measured period.
    pub(crate) stats: Stats,
    /// Wall time from the end of the warm-up until the last measured request finished.
    pub(crate) measured: Duration,
    /// Connections used: the configured number, or the peak of concurrent connections for
    /// handshake/resume in open loop.
    pub(crate) connections: u64,
}

/// Runs a whole load test as described by `args` (on its own tokio runtime) and returns the report.
///
/// Setup problems (bad URL, CA file, unreachable target, failed TLS handshake at start) are
/// returned as [`LoadError`]; errors of individual requests are counted in the report.
pub fn run(args: &Args) -> Result<Report, LoadError> {
    let target = Target::parse(&args.url, args.server_name.as_deref())?;
    let config = tls::client_config(args.mode, args.tls, args.cacert.as_deref(), args.insecure)?;
    let runtime = build_runtime(args.threads)?;
    runtime.block_on(async {
        let addr = target.resolve().await?;
        let shared = Arc::new(Shared::new(args, &target, addr, config));
        match shared.probe(&target).await {
            Err(LoadError::Handshake { reason, .. })
                if args.alert_ok_at_start && reason.starts_with("received fatal alert") => {}
            probed => probed?,
        }
        let outcome = match args.rate {
            Some(rate) => open_loop::run(shared, args, rate).await,
            None => closed_loop::run(shared, args).await,
        };
        Ok(Report::new(args, &outcome))
    })
}

fn build_runtime(threads: usize) -> Result<tokio::runtime::Runtime, LoadError> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().map_err(LoadError::Runtime)
}
