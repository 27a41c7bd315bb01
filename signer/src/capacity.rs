//! The capacity model: how many signatures per second each HSM member can make.
//!
//! - At start, a member with no configured `capacity` gets a **calibration burst**: every
//!   session signs back to back for [`CALIBRATION`]; the rate reached is its capacity.
//! - While serving, each signer thread adds its operations and the time it spent inside
//!   `C_Sign` to the member's [`Meter`]. Once a second the supervisor turns that into the
//!   member's rate and utilisation. When the sessions were busy (utilisation ≥
//!   [`SATURATED`]) the rate is what the member can do at that concurrency, and the
//!   estimate moves toward `rate ÷ utilisation`; a rate above the estimate raises it at
//!   once. A configured capacity is kept as it is.
//!
//! The group's capacity is the sum over the members that serve now (see
//! `Group::serving_capacity`); admission control follows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::scheme::SignOp;
use crate::worker::{self, Conn, Shared};

/// How long the calibration burst at start lasts.
pub(crate) const CALIBRATION: Duration = Duration::from_millis(100);
/// How often the estimate is updated from the meters.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// Utilisation above which a window's rate counts as the member's capacity.
const SATURATED: f64 = 0.85;
/// Weight of a new saturated sample.
const GAIN: f64 = 0.3;

/// Counters the signer threads of one member add to (all generations).
#[derive(Debug, Default)]
pub(crate) struct Meter {
    ops: AtomicU64,
    busy_ns: AtomicU64,
    /// Answers that were errors (any CKR code, a bad signature).
    errors: AtomicU64,
    /// EWMA of enqueue → answer latency, nanoseconds as `f64` bits (0: none yet).
    latency_ewma: AtomicU64,
    /// EWMA of the CPU time one signature's calls took on the calling thread,
    /// nanoseconds as `f64` bits (0: none yet).
    cpu_ewma: AtomicU64,
}

/// Weight of a new sample in the member's EWMAs (latency, CPU per signature; for
/// `/status`).
const LATENCY_GAIN: f64 = 0.1;

/// Move the EWMA stored (as `f64` nanosecond bits) in `avg` toward `sample`; the first
/// sample sets it.
fn ewma(avg: &AtomicU64, sample: Duration) {
    let sample = sample.as_nanos() as f64;
    let _ = avg.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        let old = f64::from_bits(bits);
        let new = if old > 0.0 {
            old + LATENCY_GAIN * (sample - old)
        } else {
            sample
        };
        Some(new.to_bits())
    });
}

impl Meter {
    /// One operation that spent `busy` inside the token.
    /// Answers made so far (signatures and errors, probes included).
    pub(crate) fn operations(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, busy: Duration) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    /// One answer (a signature or an error) `latency` after the request was queued.
    pub(crate) fn answered(&self, latency: Duration, ok: bool) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        ewma(&self.latency_ewma, latency);
    }

    /// The CPU time one signature's PKCS#11 calls took on the thread that made them.
    pub(crate) fn cpu(&self, cpu: Duration) {
        ewma(&self.cpu_ewma, cpu);
    }

    /// The EWMA of a signature's CPU time on the calling thread (zero before the first).
    pub(crate) fn cpu_per_signature(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.cpu_ewma.load(Ordering::Relaxed)) as u64)
    }

    /// Operations signed (all generations) and answers that were errors.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// The EWMA of answer latency (zero before the first answer).
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.latency_ewma.load(Ordering::Relaxed)) as u64)
    }

    fn read(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.busy_ns.load(Ordering::Relaxed),
        )
    }
}

/// One member's capacity estimate.
#[derive(Debug)]
pub(crate) struct Capacity {
    configured: Option<f64>,
    estimate: f64,
    rate: f64,
    utilisation: f64,
    last: (Instant, u64, u64),
}

/// Where a member's capacity figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacitySource {
    /// The `capacity` setting.
    Configured,
    /// The calibration burst, or measured while saturated.
    Measured,
    /// Not known yet (the member never came up).
    Unknown,
}

impl Capacity {
    pub(crate) fn new(configured: Option<f64>) -> Capacity {
        Capacity {
            configured,
            estimate: 0.0,
            rate: 0.0,
            utilisation: 0.0,
            last: (Instant::now(), 0, 0),
        }
    }

    /// Whether a calibration burst is wanted (no configured figure, none measured yet).
    pub(crate) fn needs_calibration(&self) -> bool {
        self.configured.is_none() && self.estimate <= 0.0
    }

    /// The result of a calibration burst.
    pub(crate) fn calibrated(&mut self, ops_per_s: f64) {
        if self.configured.is_none() && ops_per_s > 0.0 {
            self.estimate = ops_per_s;
        }
    }

    /// Signatures/s the member can make (0 when not known).
    pub(crate) fn current(&self) -> f64 {
        self.configured.unwrap_or(self.estimate)
    }

    pub(crate) fn source(&self) -> CapacitySource {
        match (self.configured, self.estimate > 0.0) {
            (Some(_), _) => CapacitySource::Configured,
            (None, true) => CapacitySource::Measured,
            (None, false) => CapacitySource::Unknown,
        }
    }

    /// The last window's rate (signatures/s) and utilisation (0..1).
    pub(crate) fn observed(&self) -> (f64, f64) {
        (self.rate, self.utilisation)
    }

    /// Fold the meter into the estimate once a window has passed; `threads` is how many
    /// sessions served. Returns whether the window closed.
    pub(crate) fn update(&mut self, meter: &Meter, threads: usize, now: Instant) -> bool {
        let (at, ops0, busy0) = self.last;
        let elapsed = now.duration_since(at);
        if elapsed < WINDOW {
            return false;
        }
        let (ops, busy) = meter.read();
        self.last = (now, ops, busy);
        let secs = elapsed.as_secs_f64();
        self.rate = ops.saturating_sub(ops0) as f64 / secs;
        self.utilisation = if threads == 0 {
            0.0
        } else {
            (busy.saturating_sub(busy0) as f64 / 1e9 / (secs * threads as f64)).min(1.0)
        };
        if self.configured.is_none() {
            if self.utilisation >= SATURATED && self.rate > 0.0 {
                let sample = self.rate / self.utilisation;
                self.estimate = if self.estimate > 0.0 {
                    (1.0 - GAIN) * self.estimate + GAIN * sample
                } else {
                    sample
                };
            }
            self.estimate = self.estimate.max(self.rate);
        }
        true
    }
}

/// Sign back to back on every connection for [`CALIBRATION`], each on its own thread;
/// returns the connections and the rate reached (signatures/s), or 0 if a signature
/// failed (the self-test before has checked the key; a failure here is left to the
/// health checks).
pub(crate) fn calibrate(
    conns: Vec<Conn>,
    shared: &Shared,
    op: SignOp,
    message: &[u8],
) -> (Vec<Conn>, f64) {
    // One burst at a time in the process: members started together would otherwise
    // share the CPU (an in-process token, a lab on one machine) and each measure less.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let deadline = started + CALIBRATION;
    let (conns, counts): (Vec<Conn>, Vec<Option<u64>>) = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                scope.spawn(move || {
                    let mut n = 0u64;
                    let mut ok = true;
                    while Instant::now() < deadline {
                        if worker::sign(&conn.session, conn.key, shared, op, message).is_err() {
                            ok = false;
                            break;
                        }
                        n += 1;
                    }
                    (conn, ok.then_some(n))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("calibration thread does not panic"))
            .unzip()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rate = match counts.iter().copied().collect::<Option<Vec<u64>>>() {
        Some(c) => c.iter().sum::<u64>() as f64 / elapsed,
        None => 0.0,
    };
    (conns, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_feed_the_latency_average_and_error_count() {
        let meter = Meter::default();
        assert_eq!(meter.latency(), Duration::ZERO);
        meter.answered(Duration::from_millis(10), true);
        assert_eq!(meter.latency(), Duration::from_millis(10));
        meter.answered(Duration::from_millis(20), false);
        // 10 + 0.1 × (20 − 10) = 11 ms.
        assert_eq!(meter.latency().as_micros(), 11_000);
        assert_eq!(meter.totals().1, 1);
    }

    #[test]
    fn configured_capacity_is_kept() {
        let mut c = Capacity::new(Some(10_000.0));
        assert!(!c.needs_calibration());
        c.calibrated(5.0);
        let meter = Meter::default();
        for _ in 0..100 {
            meter.record(Duration::from_millis(10));
        }
        c.last.0 -= WINDOW;
        assert!(c.update(&meter, 1, Instant::now()));
        assert_eq!(c.current(), 10_000.0);
        assert_eq!(c.source(), CapacitySource::Configured);
    }

    #[test]
    fn saturated_windows_move_the_estimate_idle_ones_do_not() {
        let mut c = Capacity::new(None);
        assert!(c.needs_calibration());
        c.calibrated(2000.0);
        assert_eq!(c.current(), 2000.0);
        let meter = Meter::default();
        // An idle second: 10 signatures, 1 % busy: the estimate stays.
        for _ in 0..10 {
            meter.record(Duration::from_millis(1));
        }
        let t0 = c.last.0 + WINDOW;
        assert!(c.update(&meter, 1, t0));
        assert_eq!(c.current(), 2000.0);
        assert!((c.observed().0 - 10.0).abs() < 1e-9);
        // A saturated second at 1000/s (the HSM got slower): the estimate falls toward it.
        for _ in 0..1000 {
            meter.record(Duration::from_millis(1));
        }
        assert!(c.update(&meter, 1, t0 + WINDOW));
        let after = c.current();
        assert!(after < 2000.0 && after > 1000.0, "{after}");
        // Not within a window: nothing changes.
        assert!(!c.update(&meter, 1, t0 + WINDOW + Duration::from_millis(10)));
    }

    #[test]
    fn a_rate_above_the_estimate_raises_it() {
        let mut c = Capacity::new(None);
        c.calibrated(100.0);
        let meter = Meter::default();
        for _ in 0..500 {
            meter.record(Duration::from_micros(100));
        }
        let t = c.last.0 + WINDOW;
        assert!(c.update(&meter, 4, t));
        assert!((c.current() - 500.0).abs() < 1e-6);
    }
}
