//! Open loop: `--rate` requests per second in total, scheduled at fixed intervals by a
//! dispatcher thread (precise sleeps, unlike the 1 ms tokio timer) that spawns each request
//! onto the runtime. Latency is measured from the *scheduled* send time, so queueing in the
//! server (or in the load generator) shows in the latency instead of lowering the rate.
//!
//! At most `--max-inflight` requests are in flight; a request due when that many are in
//! flight is not sent and counts as an `overflow` error. handshake/resume open one connection
//! per request (lanes are created on demand); keepalive/h2 share `--connections` connections
//! (times `--streams` for h2), requests waiting for a free one in FIFO order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::Outcome;
use super::cli::{Args, Mode};
use super::client::{Lane, Shared};
use super::error::ErrorKind;
use super::stats::Stats;

type Recorder = Arc<Mutex<Stats>>;

/// Runs the open loop at `rate` requests per second.
pub(crate) async fn run(shared: Arc<Shared>, args: &Args, rate: f64) -> Outcome {
    let mode = shared.mode();
    let pool = Arc::new(if mode.is_one_shot() {
        Pool::growing(mode)
    } else {
        Pool::fixed(mode, Lane::set(mode, args.connections, args.streams))
    });
    let max_inflight = u32::try_from(args.max_inflight).unwrap_or(u32::MAX);
    let gate = Arc::new(Semaphore::new(max_inflight as usize));
    let recorder: Recorder = Arc::new(Mutex::new(Stats::new()));

    let origin = Instant::now();
    let measure_start = origin + args.warmup;
    let total_secs = (args.warmup + args.duration).as_secs_f64();
    let total = (total_secs * rate).floor() as u64;
    let schedule = Schedule {
        origin,
        measure_start,
        rate,
        total,
    };

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let dispatcher = {
        let (pool, gate, recorder, shared) =
            (pool.clone(), gate.clone(), recorder.clone(), shared.clone());
        move || {
            let overflow = schedule.dispatch(|scheduled, measured| {
                let permit = gate.clone().try_acquire_owned().ok()?;
                let task = request(
                    pool.clone(),
                    shared.clone(),
                    recorder.clone(),
                    scheduled,
                    measured,
                    permit,
                );
                runtime.spawn(task);
                Some(())
            });
            let _ = done_tx.send(overflow);
        }
    };
    let overflow = match std::thread::Builder::new()
        .name("hsmgate-load-dispatch".to_owned())
        .spawn(dispatcher)
    {
        Ok(_) => done_rx.await.unwrap_or(0),
        Err(_) => 0,
    };
    // Wait for every request still in flight.
    let _ = gate.acquire_many(max_inflight).await;
    let measured = Instant::now().saturating_duration_since(measure_start);

    let mut stats = recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for _ in 0..overflow {
        stats.record_error(ErrorKind::Overflow);
    }
    let connections = if mode.is_one_shot() {
        pool.created.load(Ordering::Relaxed)
    } else {
        args.connections as u64
    };
    Outcome {
        stats,
        measured,
        connections,
    }
}

/// One scheduled request: wait for a lane, run the request, record it.
async fn request(
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    recorder: Recorder,
    scheduled: Instant,
    measured: bool,
    _permit: OwnedSemaphorePermit,
) {
    let exchange = {
        let mut lane = pool.take().await;
        lane.lane().request(&shared).await
    };
    if measured {
        let mut stats = recorder.lock().unwrap_or_else(PoisonError::into_inner);
        exchange.record(&mut stats, scheduled);
    }
}

/// The fixed-interval schedule of the open loop.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    origin: Instant,
    measure_start: Instant,
    rate: f64,
    /// Requests scheduled in the whole run (warm-up included).
    total: u64,
}

impl Schedule {
    /// Scheduled send time of request `i`.
    fn at(&self, i: u64) -> Instant {
        self.origin + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Calls `start(scheduled, measured)` for each request when it is due (on this thread,
    /// sleeping in between); `start` returns `None` if the request could not start.
    /// Returns how many measured requests could not start.
    fn dispatch(&self, mut start: impl FnMut(Instant, bool) -> Option<()>) -> u64 {
        let mut overflow = 0;
        let mut i = 0;
        while i < self.total {
            let elapsed = Instant::now().saturating_duration_since(self.origin);
            let due = ((elapsed.as_secs_f64() * self.rate) as u64 + 1).min(self.total);
            while i < due {
                let scheduled = self.at(i);
                i += 1;
                let measured = scheduled >= self.measure_start;
                if start(scheduled, measured).is_none() && measured {
                    overflow += 1;
                }
            }
            if i < self.total {
                wait_until(self.at(i));
            }
        }
        overflow
    }
}

/// How long before a due time the dispatcher stops sleeping and spins (yielding). Waking
/// from a long sleep can take a few hundred microseconds on an idle (virtual) CPU, which
/// would be counted as latency; spinning only happens when the next request is further
/// away than this, so at high rates (where the CPU does not go idle) nothing spins.
const SPIN: Duration = Duration::from_micros(250);

/// Sleeps until `due` (see [`SPIN`]).
fn wait_until(due: Instant) {
    let wait = due.saturating_duration_since(Instant::now());
    if wait <= SPIN {
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        return;
    }
    std::thread::sleep(wait - SPIN);
    while Instant::now() < due {
        std::thread::yield_now();
    }
}

/// The lanes of the open loop: a fixed set (keepalive/h2) or created on demand.
#[derive(Debug)]
struct Pool {
    mode: Mode,
    lanes: Mutex<VecDeque<Lane>>,
    /// Free lanes of a fixed pool; `None` for a growing one.
    free: Option<Semaphore>,
    /// Lanes created by a growing pool (its peak concurrency).
    created: AtomicU64,
}

impl Pool {
    fn fixed(mode: Mode, lanes: Vec<Lane>) -> Self {
        Pool {
            mode,
            free: Some(Semaphore::new(lanes.len())),
            created: AtomicU64::new(lanes.len() as u64),
            lanes: Mutex::new(lanes.into()),
        }
    }

    fn growing(mode: Mode) -> Self {
        Pool {
            mode,
            lanes: Mutex::new(VecDeque::new()),
            free: None,
            created: AtomicU64::new(0),
        }
    }

    async fn take(&self) -> LaneGuard<'_> {
        let permit = match &self.free {
            Some(free) => free.acquire().await.ok(),
            None => None,
        };
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let lane = lane.unwrap_or_else(|| {
            self.created.fetch_add(1, Ordering::Relaxed);
            Lane::new(self.mode)
        });
        LaneGuard {
            pool: self,
            lane: Some(lane),
            _permit: permit,
        }
    }
}

/// A lane taken from the pool; given back on drop (before its permit is released).
struct LaneGuard<'a> {
    pool: &'a Pool,
    lane: Option<Lane>,
    _permit: Option<SemaphorePermit<'a>>,
}

impl LaneGuard<'_> {
    fn lane(&mut self) -> &mut Lane {
        self.lane.as_mut().expect("present until drop")
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            self.pool
                .lanes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_and_counts_overflow() {
        let origin = Instant::now();
        let s = Schedule {
            origin,
            measure_start: origin + Duration::from_millis(50),
            rate: 1000.0,
            total: 100,
        };
        let mut times = Vec::new();
        let overflow = s.dispatch(|at, measured| {
            times.push((at, measured));
            // Refuse every 10th request.
            (times.len() % 10 != 0).then_some(())
        });
        assert_eq!(times.len(), 100);
        assert_eq!(times[1].0 - times[0].0, Duration::from_millis(1));
        assert_eq!(times.iter().filter(|t| t.1).count(), 50);
        // Refused: 10, 20, ..., 100 (1-based); measured ones are 60..=100.
        assert_eq!(overflow, 5);
        assert!(origin.elapsed() >= Duration::from_millis(99));
    }
}
