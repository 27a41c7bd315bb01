//! Signing on the caller's thread, for a token that computes in this process and fast.
//!
//! The signer threads (`worker`) are there for HSMs that take long or may never answer:
//! the caller waits for its answer with a deadline, outside the runtime's core threads.
//! For a software token loaded into the process (SoftHSM) and a fast operation (ECDSA
//! P-256 in about 100 µs), that hand-off costs more than it protects: two thread
//! wake-ups and `block_in_place`'s hand-over of the worker, about 45 µs of CPU per
//! signature on this project's machine, a third of what the token itself spends. Such a
//! member signs on the caller's thread instead, with a session of its own taken from a
//! small pool, as nginx + libp11 always do; when every such session is busy the
//! signature goes to the signer threads as before.
//!
//! Which members: when the generation starts, [`probe`] times a few signatures, by the
//! wall clock and by the calling thread's CPU time. A module that computes in the
//! process keeps the thread on the CPU for the whole call; one that waits for another
//! process or a network (p11-kit's client, a network HSM's library) does not. A member
//! signs inline when its median call costs the thread at most [`MAX_CALL`] of CPU and
//! the thread was on the CPU for at least [`MIN_CPU_SHARE`] of some call's time (the
//! least preempted one: a busy machine stretches calls, it does not make them wait), so
//! a slow operation (a software token's RSA, 1–2 ms) keeps the signer threads and their
//! lower priority (`priority`).
//!
//! While serving, a moving average of the calls' CPU time over [`SLOW_AVERAGE`] turns
//! inline signing off for the generation (CPU time, not wall clock: a saturated core
//! stretches every call by preemption, and that is no reason to hand signatures to
//! threads that would wait for the same core; the average follows a sustained change,
//! not one call), and so does taking the generation out of rotation. Each inline session has a busy mark the supervisor reads like a signer
//! thread's: a call that hangs fences the member, so that no further signature goes
//! there, but the caller's thread stays in that call until it returns (the price of
//! having no hand-off; the probe makes it unlikely). A new generation probes again.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cpu_time::thread_cpu_time;
use crate::error::SignerError;
use crate::scheme::SignOp;
use crate::worker::{self, Conn, IdleSessions, Meters, Shared, Slot};

/// The longest median call that may run on the caller's thread.
pub(crate) const MAX_CALL: Duration = Duration::from_micros(400);
/// The least share of a call's wall-clock time the calling thread must spend on the CPU.
pub(crate) const MIN_CPU_SHARE: f64 = 0.75;
/// The probe stops once its calls have taken this long together, so that a slow HSM is
/// not kept waiting long. (Not at the first slow call: on a busy machine one call may be
/// preempted for a few milliseconds, and the least preempted call is what counts.)
const PROBE_BUDGET: Duration = Duration::from_millis(50);
/// A moving average of the calls' CPU time over this turns inline signing off.
pub(crate) const SLOW_AVERAGE: Duration = Duration::from_millis(2);
/// The weight of one call in that average: 1/16.
const AVERAGE_SHIFT: u32 = 4;
/// Signatures timed by the probe.
const PROBE_CALLS: usize = 9;

/// What [`probe`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Probe {
    /// The median call's CPU time on the calling thread: what a call costs the thread,
    /// however busy the machine.
    pub(crate) cpu_median: Duration,
    /// The median call's wall-clock time.
    pub(crate) wall_median: Duration,
    /// The highest share of a call's wall-clock time the thread spent on the CPU: near 1
    /// for a module that computes in the process (the least preempted call shows it),
    /// low for one that waits for another process or a network.
    pub(crate) best_share: f64,
}

impl Probe {
    /// Whether the member may sign on the caller's thread.
    pub(crate) fn eligible(&self) -> bool {
        self.cpu_median <= MAX_CALL && self.in_process()
    }

    /// Whether the token computes in this process (its calls wait for nothing else).
    pub(crate) fn in_process(&self) -> bool {
        self.best_share >= MIN_CPU_SHARE
    }
}

/// Time up to [`PROBE_CALLS`] signatures on `conn`; stops as soon as the median is
/// known to be over [`MAX_CALL`] and some call ran unpreempted enough to show the token
/// computes in the process, or once the calls have taken [`PROBE_BUDGET`] (a slow HSM,
/// which is then not eligible, is not kept waiting long).
pub(crate) fn probe(
    conn: &Conn,
    shared: &Shared,
    op: SignOp,
    message: &[u8],
) -> Result<Probe, SignerError> {
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let mut best_share: f64 = 0.0;
    let started = Instant::now();
    for _ in 0..PROBE_CALLS {
        let (w0, c0) = (Instant::now(), thread_cpu_time());
        worker::sign(&conn.session, conn.key, shared, op, message)?;
        let (wall, cpu) = (w0.elapsed(), thread_cpu_time().saturating_sub(c0));
        best_share = best_share.max(cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9));
        walls.push(wall);
        cpus.push(cpu);
        // Past half the calls over MAX_CALL the median is too: no need to go on, once
        // some call has shown whether the token computes in the process (a busy machine
        // may preempt a long call; one that was not shows it).
        if started.elapsed() > PROBE_BUDGET
            || (cpus.iter().filter(|c| **c > MAX_CALL).count() > PROBE_CALLS / 2
                && best_share >= MIN_CPU_SHARE)
        {
            break;
        }
    }
    Ok(Probe {
        cpu_median: median(&mut cpus),
        wall_median: median(&mut walls),
        best_share,
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(Duration::MAX)
}

/// A member's sessions for signing on callers' threads.
pub(crate) struct Inline {
    sessions: IdleSessions,
    on: AtomicBool,
    /// Moving average of the calls' CPU time on the calling thread, nanoseconds.
    average_ns: AtomicU64,
    meters: Meters,
}

impl Inline {
    /// `sessions` with their marks (also given to the supervisor as the generation's);
    /// `typical`: the probe's median call (CPU time).
    pub(crate) fn new(
        sessions: Vec<(Conn, Arc<Slot>)>,
        labels: &[metrics::Label],
        typical: Duration,
    ) -> Inline {
        Inline {
            sessions: IdleSessions::new(sessions),
            on: AtomicBool::new(true),
            average_ns: AtomicU64::new(typical.as_nanos() as u64),
            meters: Meters::new(labels),
        }
    }

    /// Whether it is on (not turned off by slowness or retirement).
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// The sessions' busy marks, for the supervisor.
    pub(crate) fn marks(&self) -> Vec<Arc<Slot>> {
        self.sessions.marks()
    }

    /// Add one call to the moving average; true when the average is now over
    /// [`SLOW_AVERAGE`]. Concurrent callers may lose an update: the average stays close.
    fn slow_on_average(&self, took: Duration) -> bool {
        let sample = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.average_ns.load(Ordering::Relaxed);
        let new = old - (old >> AVERAGE_SHIFT) + (sample >> AVERAGE_SHIFT);
        self.average_ns.store(new, Ordering::Relaxed);
        new > SLOW_AVERAGE.as_nanos() as u64
    }

    /// No more signing on callers' threads (the generation is retired).
    pub(crate) fn turn_off(&self) {
        self.on.store(false, Ordering::Release);
    }

    /// Sign on this thread with an idle session; `None` when inline signing is off or
    /// every session is in a call (the caller then queues for the signer threads).
    pub(crate) fn sign(
        &self,
        shared: &Shared,
        op: SignOp,
        message: &[u8],
    ) -> Option<Result<Vec<u8>, SignerError>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let (conn, slot) = self.sessions.take()?;
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let (result, took) = worker::sign_marked(
            &conn.session,
            conn.key,
            shared,
            &self.meters,
            &slot,
            op,
            message,
            Instant::now(),
            None,
            false,
        );
        if self.slow_on_average(took) && self.on.swap(false, Ordering::AcqRel) {
            tracing::info!(
                member = %shared.member,
                average_us = self.average_ns.load(Ordering::Relaxed) / 1000,
                "signatures on the connections' threads have become slow: signing on the signer threads from now on"
            );
            metrics::gauge!(crate::metrics::INLINE, shared.labels.clone()).set(0.0);
        }
        // Fenced while in the call: the generation counted this session as abandoned.
        slot.call_returned(&shared.abandoned);
        self.sessions.put_back((conn, slot));
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fast_calls_on_the_cpu_are_eligible() {
        let p = |us, share| Probe {
            cpu_median: Duration::from_micros(us),
            wall_median: Duration::from_micros(us),
            best_share: share,
        };
        assert!(p(100, 0.95).eligible(), "a software token's ECDSA");
        assert!(
            !p(1300, 0.99).eligible(),
            "a software token's RSA-2048: too slow"
        );
        assert!(
            !p(150, 0.2).eligible(),
            "waiting for another process (p11-kit's server) or a network"
        );
        assert!(p(400, 0.75).eligible(), "the bounds are inclusive");
    }

    #[test]
    fn one_slow_call_does_not_turn_it_off_a_slow_token_does() {
        let inline = Inline::new(Vec::new(), &[], Duration::from_micros(100));
        assert!(
            !inline.slow_on_average(Duration::from_millis(10)),
            "one preempted call"
        );
        let mut calls = 0;
        for _ in 0..9 {
            inline.slow_on_average(Duration::from_micros(100));
        }
        while !inline.slow_on_average(Duration::from_millis(5)) {
            calls += 1;
            assert!(calls < 20, "a sustained 5 ms must turn it off");
        }
        assert!(calls >= 3, "after a few calls, not at the first ({calls})");
    }
}
