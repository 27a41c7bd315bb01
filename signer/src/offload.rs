//! A full handshake's signing step run on a signer thread, for a token that computes in
//! this process but slowly (a software token's RSA: 1–2 ms of CPU per signature).
//!
//! rustls signs inside the call that processes the ClientHello. Waiting for a signer
//! thread's answer there costs a tokio worker `block_in_place`: the worker's core moves
//! to another thread and back, and every handshake waiting for the token keeps a thread
//! parked (60 threads and 8 context switches per handshake with 50 in flight, against
//! 2 for a key in a file). For a token whose calls cannot wait on anything but this
//! process's CPU, the whole step goes to the signer thread instead: the connection's
//! task queues a job (process the ClientHello with the rustls settings: key exchange,
//! signature, the server's first flight encrypted), the signer thread runs it and signs
//! with its own session on the way ([`sign_here`]), and the task awaits the result
//! without blocking any thread. Two wake-ups per handshake, no parked threads; the
//! rustls work runs at the signer threads' lower priority, so established connections
//! keep theirs under a flood.
//!
//! What it buys, measured (README, "A slow in-process token"): not CPU per handshake,
//! which stays within the noise (the runtime threads still sleep and wake at every
//! network event, the signature being elsewhere), but the thread each waiting handshake
//! held: under a flood of 500 connections with admission off, 8 threads and 54 MB of
//! resident memory instead of 511 and 1.2 GB.
//!
//! Where a runtime thread can be spared, the step runs on the connection's own thread
//! instead, with a session of the member's (`on_runtime`): no hand-off at all. The
//! signer threads take the steps that find none to spare.
//!
//! Which members: the probe at start (`inline`) sees that the token computes in the
//! process (the calling thread stays on the CPU through a call) and that a call costs
//! more than signing on the connection's thread allows. A member behind a socket (a
//! network HSM, p11-kit) never runs jobs: a hung call there would hold the handshake,
//! where the signature path gives up on the member at its deadline and signs elsewhere.
//!
//! A job is never lost silently: one the member cannot take (queue full, retired, or
//! fenced while it waited) goes back to the caller un-run, which then takes the
//! signature path with its failover; one that waited past its deadline is dropped (its
//! handshake fails, as a signature that waited past its deadline does); a panic inside
//! is caught on the signer thread.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rustls::SignatureScheme;

use crate::error::SignerError;
use crate::worker::{Meters, Shared, Slot};

/// A queued job: run with `true` on a signer thread (with [`Here`] set), with `false`
/// when it is handed back un-run. Dropped un-run (a queue dropped with it, a retired
/// generation's last thread gone), it is handed back too.
pub(crate) struct Job {
    run: Option<Box<dyn FnOnce(bool) + Send>>,
    /// The group whose signatures it may make on the thread.
    pub(crate) group: u64,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Instant,
}

impl Job {
    /// Hand it back to its caller un-run (what dropping it un-run does).
    pub(crate) fn give_back(self) {
        drop(self);
    }

    /// Drop it un-run: it waited past its deadline (its caller sees [`Offloaded::Lost`]).
    pub(crate) fn expire(mut self) {
        self.run = None;
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            run(false);
        }
    }
}

/// Why an offloaded job did not run on a signer thread.
#[derive(Debug)]
pub enum Offloaded<F> {
    /// No member could take it (none runs jobs now, its queue is full, or it was
    /// retired before the job ran): here it is, to run on the caller's side.
    Returned(F),
    /// It waited past its deadline on an overloaded member, or panicked: gone.
    Lost,
}

/// A unique id per group (the [`Job`]'s `group`).
pub(crate) fn next_group_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Wrap `job` for a signer thread: the job itself, and the future of its outcome.
pub(crate) fn wrap<F, T>(
    job: F,
    group: u64,
    deadline: Duration,
) -> (
    Job,
    impl Future<Output = Result<T, Offloaded<F>>> + Send + 'static,
)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = Box::new(move |here: bool| {
        let _ = tx.send(if here { Ok(job()) } else { Err(job) });
    });
    let enqueued = Instant::now();
    let job = Job {
        run: Some(run),
        group,
        enqueued,
        deadline: enqueued + deadline,
    };
    let outcome = async move {
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(job)) => Err(Offloaded::Returned(job)),
            Err(_) => Err(Offloaded::Lost),
        }
    };
    (job, outcome)
}

/// A signer thread's session, lent to the job it runs.
pub(crate) struct Here {
    pub(crate) session: Session,
    pub(crate) key: ObjectHandle,
    pub(crate) shared: Arc<Shared>,
    pub(crate) meters: Meters,
    pub(crate) slot: Arc<Slot>,
    pub(crate) group: u64,
    pub(crate) enqueued: Instant,
    /// Whether the job has signed (a second signature takes the usual path).
    pub(crate) signed: bool,
}

thread_local! {
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
}

/// Run `job` on this signer thread with `here` lent to it; returns `here` afterwards.
/// A panic inside the job is caught (its caller sees [`Offloaded::Lost`]).
pub(crate) fn run(mut job: Job, here: Here) -> Here {
    HERE.with(|h| *h.borrow_mut() = Some(here));
    if let Some(run) = job.run.take()
        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(true))).is_err()
    {
        tracing::error!("a handshake job panicked on a signer thread");
    }
    let here = HERE
        .with(|h| h.borrow_mut().take())
        .expect("lent for the job's run");
    if !here.signed {
        // Counted in flight when queued, as a signature; it made none.
        here.shared.leave_counted();
    }
    here
}

/// What [`sign_here`] did.
pub(crate) struct SignedHere {
    /// The member whose session signed.
    pub(crate) member: String,
    pub(crate) result: Result<Vec<u8>, SignerError>,
    /// Since the job was queued.
    pub(crate) latency: Duration,
}

/// Sign on this thread's session if this is a signer thread running a job of `group`
/// that has not signed yet; `None` otherwise (the usual path then).
pub(crate) fn sign_here(group: u64, scheme: SignatureScheme, message: &[u8]) -> Option<SignedHere> {
    HERE.with(|h| {
        let mut h = h.try_borrow_mut().ok()?;
        let here = h.as_mut().filter(|h| h.group == group && !h.signed)?;
        let op = here
            .shared
            .ops
            .iter()
            .find_map(|(s, op)| (*s == scheme).then_some(*op))?;
        here.signed = true;
        let (result, _cpu) = crate::worker::sign_marked(
            &here.session,
            here.key,
            &here.shared,
            &here.meters,
            &here.slot,
            op,
            message,
            here.enqueued,
            None,
            false,
        );
        Some(SignedHere {
            member: here.shared.member.clone(),
            result,
            latency: here.enqueued.elapsed(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome<T, F>(f: impl Future<Output = Result<T, Offloaded<F>>>) -> Result<T, Offloaded<F>> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_job_runs_where_it_is_run_and_its_result_comes_back() {
        let (job, out) = wrap(|| 6 * 7, 1, Duration::from_secs(1));
        let here = std::thread::spawn(move || {
            let mut job = job;
            let run = job.run.take().expect("un-run");
            run(true);
        });
        here.join().expect("thread");
        assert!(matches!(outcome(out), Ok(42)));
    }

    #[test]
    fn a_job_given_back_or_dropped_unrun_returns_to_its_caller() {
        let (job, out) = wrap(|| "ran", 1, Duration::from_secs(1));
        job.give_back();
        match outcome(out) {
            Err(Offloaded::Returned(f)) => assert_eq!(f(), "ran"),
            _ => panic!("not given back"),
        }
        // Dropped with a queue, un-run: given back too, never lost silently.
        let (job, out) = wrap(|| "ran", 1, Duration::from_secs(1));
        drop(job);
        assert!(matches!(outcome(out), Err(Offloaded::Returned(_))));
    }

    #[test]
    fn an_expired_job_is_lost_to_its_caller() {
        let (job, out) = wrap(|| (), 1, Duration::ZERO);
        assert!(Instant::now() >= job.deadline);
        job.expire();
        assert!(matches!(outcome(out), Err(Offloaded::Lost)));
    }

    #[test]
    fn outside_a_job_nothing_signs_here() {
        assert!(sign_here(1, SignatureScheme::RSA_PSS_SHA256, b"m").is_none());
    }
}
