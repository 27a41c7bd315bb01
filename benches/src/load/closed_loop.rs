//! Closed loop: one worker per lane (`--connections`, times `--streams` for h2), each doing
//! requests back to back until the end of the run. Requests started during the warm-up are
//! not recorded; requests started before the end are waited for and recorded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::Outcome;
use super::cli::Args;
use super::client::{Lane, Shared};
use super::stats::Stats;

/// Runs the closed loop.
pub(crate) async fn run(shared: Arc<Shared>, args: &Args) -> Outcome {
    let lanes = Lane::set(shared.mode(), args.connections, args.streams);
    let recorder = Arc::new(Mutex::new(Stats::new()));
    let origin = Instant::now();
    let measure_start = origin + args.warmup;
    let end = measure_start + args.duration;

    let mut workers = Vec::with_capacity(lanes.len());
    for mut lane in lanes {
        let shared = shared.clone();
        let recorder = recorder.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let exchange = lane.request(&shared).await;
                if start >= measure_start {
                    let mut stats = recorder.lock().unwrap_or_else(PoisonError::into_inner);
                    exchange.record(&mut stats, start);
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let measured = Instant::now().saturating_duration_since(measure_start);
    let stats = recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Outcome {
        stats,
        measured,
        connections: args.connections as u64,
    }
}
