//! A full handshake's signing step run on the connection's own runtime thread, for a
//! token that computes in this process but slowly (a software token's RSA), while at
//! least half the runtime threads stay free to serve everything else.
//!
//! `offload` moved that step (rustls processing the ClientHello: key exchange,
//! signature, the server's first flight) to a signer thread, so that no thread waits per
//! handshake. Its price is the hand-off: the runtime thread goes to sleep, the signer
//! thread wakes, its answer wakes the runtime thread again, about 8 context switches
//! per handshake against 2 for a key in a file. A token in the process waits for
//! nothing but this process's CPU, so the step can as well run where the handshake is:
//! on the runtime thread, with a session of the member's own, as a key in a file signs
//! (and nginx + libp11 always do). What that must not cost is the latency of
//! established connections: a runtime thread inside a 1–2 ms signature polls nothing
//! else. So at most half the runtime's threads (rounded down) run such a step at a time
//! ([`spare`]): one of the default two on a machine of one or two CPUs, four of eight;
//! the others keep every established connection served under a flood of handshakes. A
//! handshake that finds none to spare, or no idle session here, queues its step for a
//! signer thread as before. With one runtime thread (nginx's `worker_processes 1`)
//! nothing runs here.
//!
//! Priority: the signer threads run below the threads serving connections
//! (`priority`). A runtime thread running a step lowers itself to the signer threads'
//! priority for the step and back afterwards. That needs a process that may raise a
//! thread's priority again (root, `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows it:
//! checked once, on a thread of its own, see [`priority::can_restore`]); elsewhere (a
//! non-root container) no step runs on a runtime thread unless `signer_nice` is 0: at
//! the runtime's priority the steps would come before established connections under a
//! flood (measured: the established client's p50 up by half, shed alerts twice as slow
//! at p99).
//!
//! A hung call cannot happen to such a token (it computes; the probe saw it), but the
//! sessions carry the same busy marks as the signer threads', which the supervisor reads.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use metrics::Counter;

use crate::offload::{Here, Job};
use crate::priority;
use crate::worker::{Conn, IdleSessions, Meters, Shared, Slot};

/// Runtime threads of this process inside a step now (all pools).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many runtime threads may run a step at once: half the runtime's threads, rounded
/// down; none outside a multi-thread tokio runtime.
fn spare() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers() / 2)
        .unwrap_or(0)
}

/// One runtime thread's turn, taken only while fewer than [`spare`] run a step.
struct Turn;

impl Turn {
    fn take() -> Option<Turn> {
        let spare = spare();
        RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < spare).then_some(n + 1)
            })
            .ok()
            .map(|_| Turn)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A member's sessions for steps run on runtime threads.
pub(crate) struct OnRuntime {
    sessions: IdleSessions,
    on: AtomicBool,
    meters: Meters,
    /// `hsmgate_signer_handshake_jobs_total{result="ran_inline"}`.
    ran: Counter,
    /// The signer threads' nice value, taken for the step (`pkcs11` checked it can be given back).
    nice: u8,
}

impl OnRuntime {
    pub(crate) fn new(
        sessions: Vec<(Conn, Arc<Slot>)>,
        labels: &[metrics::Label],
        nice: u8,
    ) -> Self {
        OnRuntime {
            sessions: IdleSessions::new(sessions),
            on: AtomicBool::new(true),
            meters: Meters::new(labels),
            ran: metrics::counter!(
                crate::metrics::JOBS_TOTAL,
                crate::metrics::with(labels, "result", "ran_inline")
            ),
            nice,
        }
    }

    /// The sessions' busy marks, for the supervisor.
    pub(crate) fn marks(&self) -> Vec<Arc<Slot>> {
        self.sessions.marks()
    }

    /// No more steps here (the generation is retired).
    pub(crate) fn turn_off(&self) {
        self.on.store(false, Ordering::Release);
    }

    /// Run `job` now on this thread with one of the sessions; given back when this is
    /// off, no runtime thread can be spared, or every session is in a call.
    pub(crate) fn run(&self, shared: &Arc<Shared>, job: Job) -> Result<(), Job> {
        if !self.on.load(Ordering::Acquire) {
            return Err(job);
        }
        let Some(turn) = Turn::take() else {
            return Err(job);
        };
        let Some((conn, slot)) = self.sessions.take() else {
            return Err(job);
        };
        let Conn {
            session,
            key,
            module,
        } = conn;
        // Counted in flight as the signature it will make (`offload::run` takes it off
        // when it made none).
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        self.ran.increment(1);
        let here = Here {
            session,
            key,
            shared: Arc::clone(shared),
            meters: self.meters.clone(),
            slot: Arc::clone(&slot),
            group: job.group,
            enqueued: job.enqueued,
            signed: false,
        };
        let here = {
            let _lowered = priority::Lowered::this_thread(self.nice);
            crate::offload::run(job, here)
        };
        drop(turn);
        // Fenced while in the call: the generation counted this session as abandoned.
        slot.call_returned(&shared.abandoned);
        let conn = Conn {
            session: here.session,
            key,
            module,
        };
        self.sessions.put_back((conn, slot));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_turn_outside_a_runtime_or_on_a_single_thread() {
        assert!(Turn::take().is_none(), "no runtime");
        let one = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        assert!(one.block_on(async { Turn::take() }).is_none(), "one thread");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert!(current.block_on(async { Turn::take() }).is_none());
    }

    #[test]
    fn half_the_runtime_threads_may_take_a_turn() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(5)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let a = Turn::take().expect("first");
            let b = Turn::take().expect("second");
            assert!(Turn::take().is_none(), "three of five threads stay free");
            drop(a);
            let c = Turn::take().expect("one given back");
            drop((b, c));
        });
        assert_eq!(RUNNING.load(Ordering::Acquire), 0);
    }
}
