//! One signer thread: owns one PKCS#11 session (`Session` is `Send` but not `Sync`),
//! takes requests from its member's bounded queue, signs, and answers on the request's
//! one-shot channel. A request whose deadline passed while it waited is not signed.
//! The thread marks itself busy while inside C_Sign, so a call that never returns (a
//! hung HSM) can be seen and the member fenced; a thread abandoned that way ends as
//! soon as its call returns.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use metrics::{Counter, Gauge, Histogram};

use crate::cpu_time::thread_cpu_time;
use crate::der;
use crate::error::{Function, SignerError, ckr_name};
use crate::handoff::{Receiver, Reply};
use crate::metrics as m;
use crate::scheme::SignOp;

/// What a member's queue carries: a signature, or a handshake's signing step
/// (`offload`).
pub(crate) enum Work {
    Sign(Request),
    Job(crate::offload::Job),
}

/// A signing request as queued.
pub(crate) struct Request {
    pub(crate) op: SignOp,
    pub(crate) message: Arc<[u8]>,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Instant,
    pub(crate) reply: Reply<Result<Vec<u8>, SignerError>>,
    /// A health probe: counted in [`m::PROBES`], not as an operation.
    pub(crate) probe: bool,
}

/// One signer thread's connection to the HSM: its session, the key's handle in that
/// session's module instance (a handle belongs to one instance, and two p11-kit
/// connections to the same HSM are two instances), and the instance itself, kept alive
/// by the thread.
pub(crate) struct Conn {
    pub(crate) session: Session,
    pub(crate) key: ObjectHandle,
    pub(crate) module: Arc<crate::module::Module>,
}

/// What the workers of one member generation share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The member's name (messages).
    pub(crate) member: String,
    /// Its metrics' labels ([`m::member_labels`]).
    pub(crate) labels: Vec<metrics::Label>,
    /// The token's label.
    pub(crate) token: String,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) batch_max: usize,
    /// Threads of this member abandoned in a call that did not return (all generations).
    pub(crate) abandoned: Arc<AtomicUsize>,
    /// Operations and time in the token, for the capacity model (all generations).
    pub(crate) meter: Arc<crate::capacity::Meter>,
    /// The operation for each scheme the member can make (for jobs, `offload`).
    pub(crate) ops: Arc<[(rustls::SignatureScheme, SignOp)]>,
}

impl Shared {
    /// Record that a request left the queue (answered, expired or handed back).
    pub(crate) fn done(&self, result: String) {
        let left = self.leave();
        metrics::gauge!(m::IN_FLIGHT, self.labels.clone()).set(left as f64);
        metrics::counter!(m::OPERATIONS, m::with(&self.labels, "result", result)).increment(1);
    }

    /// One request fewer in flight without an outcome (a job that made no signature).
    pub(crate) fn leave_counted(&self) {
        let left = self.leave();
        metrics::gauge!(m::IN_FLIGHT, self.labels.clone()).set(left as f64);
    }

    /// Count a handshake job's outcome other than `ran` (`offload`; rare, so looked up).
    pub(crate) fn job(&self, result: &'static str) {
        metrics::counter!(m::JOBS_TOTAL, m::with(&self.labels, "result", result)).increment(1);
    }

    /// One request fewer in flight; returns how many are left.
    fn leave(&self) -> usize {
        self.in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1)
    }
}

/// A signer thread's metric handles, looked up once when it starts (the recorder is
/// installed before any pool), so that a signature costs no registry look-up and no
/// label allocation. Outcomes other than success go through [`Shared::done`].
#[derive(Clone)]
pub(crate) struct Meters {
    latency: Histogram,
    cpu: Histogram,
    batch: Histogram,
    in_flight: Gauge,
    ok: Counter,
    /// Handshake jobs run (`offload`).
    jobs_ran: Counter,
}

impl Meters {
    pub(crate) fn new(labels: &[metrics::Label]) -> Meters {
        Meters {
            latency: metrics::histogram!(m::LATENCY, labels.to_vec()),
            cpu: metrics::histogram!(m::CALL_CPU, labels.to_vec()),
            batch: metrics::histogram!(m::BATCH_SIZE, labels.to_vec()),
            in_flight: metrics::gauge!(m::IN_FLIGHT, labels.to_vec()),
            ok: metrics::counter!(m::OPERATIONS, m::with(labels, "result", "ok")),
            jobs_ran: metrics::counter!(m::JOBS_TOTAL, m::with(labels, "result", "ran")),
        }
    }
}

/// Sessions signing on callers' threads (`inline`, `on_runtime`), each idle one with the
/// busy mark it carries while in a call.
pub(crate) struct IdleSessions(std::sync::Mutex<Vec<(Conn, Arc<Slot>)>>);

impl IdleSessions {
    pub(crate) fn new(sessions: Vec<(Conn, Arc<Slot>)>) -> IdleSessions {
        IdleSessions(std::sync::Mutex::new(sessions))
    }

    /// An idle session, if there is one.
    pub(crate) fn take(&self) -> Option<(Conn, Arc<Slot>)> {
        self.lock().pop()
    }

    /// A session back after its call.
    pub(crate) fn put_back(&self, session: (Conn, Arc<Slot>)) {
        self.lock().push(session);
    }

    /// The sessions' busy marks, for the supervisor (taken while all are idle).
    pub(crate) fn marks(&self) -> Vec<Arc<Slot>> {
        self.lock()
            .iter()
            .map(|(_, slot)| Arc::clone(slot))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Conn, Arc<Slot>)>> {
        // The critical sections are a push or a pop: a poisoned lock holds valid state.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A worker's busy mark, read by the supervisor.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Milliseconds since [`epoch`] when the current call started; 0 when idle.
    busy_since: AtomicU64,
    /// Set when the member was fenced while this worker was in a call.
    abandoned: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // +1 so that 0 can mean idle.
    epoch().elapsed().as_millis() as u64 + 1
}

impl Slot {
    /// How long the current call has been running, if there is one.
    pub(crate) fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    /// Abandon the thread if it is in a call; returns whether it was.
    pub(crate) fn abandon_if_busy(&self) -> bool {
        self.busy_since.load(Ordering::Acquire) != 0 && !self.abandoned.swap(true, Ordering::AcqRel)
    }

    /// Once the call has returned: if the member was fenced during it, this slot was
    /// counted in the member's `abandoned` threads; take it off that count. Returns
    /// whether it had been abandoned.
    pub(crate) fn call_returned(&self, abandoned: &AtomicUsize) -> bool {
        let was = self.abandoned.swap(false, Ordering::AcqRel);
        if was {
            abandoned.fetch_sub(1, Ordering::AcqRel);
        }
        was
    }
}

/// Signer threads alive in this process (all groups, all generations), and the other
/// threads while they may call into a module or drop its last reference (a group's
/// supervisor, probe, start-up and recovery threads: [`Busy`]).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Counted in [`RUNNING`] while alive: a thread holds one for as long as it may call
/// into a module or hold a reference whose drop finalises one, so that
/// [`wait_for_workers`] also waits for it. Take it before the references and drop it
/// after them.
#[must_use = "counted only while held"]
pub(crate) struct Busy(());

impl Busy {
    pub(crate) fn enter() -> Busy {
        RUNNING.fetch_add(1, Ordering::AcqRel);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wait until every signer thread has ended (their sessions closed and module instances
/// finalised), for at most `timeout`. Call it before the process exits: some modules
/// (p11-kit) abort when their exit-time destructors race with a thread still in a call.
/// Threads stuck in a hung HSM never end; the wait gives up at `timeout`. Returns
/// whether every thread ended.
pub fn wait_for_workers(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while RUNNING.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            tracing::warn!(
                threads = RUNNING.load(Ordering::Acquire),
                "signer threads still in PKCS#11 calls at exit"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Start a signer thread that owns `session` and keeps its module instance alive: the
/// instance is finalised (when its last user drops it) only after every session on it
/// is closed. Finalising under a thread still in a call crashes some modules (p11-kit
/// asserts), so this order matters.
pub(crate) fn spawn(
    name: String,
    conn: Conn,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    queue: Receiver<Work>,
    nice: u8,
) -> std::io::Result<JoinHandle<()>> {
    RUNNING.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        crate::priority::lower_this_thread(nice);
        let Conn {
            session,
            key,
            module,
        } = conn;
        run(session, key, &shared, &slot, &queue);
        drop(module);
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
    spawned
}

fn run(
    session: Session,
    key: ObjectHandle,
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    queue: &Receiver<Work>,
) {
    // The queue closes when the member generation is dropped: then the thread ends and
    // the session closes.
    let meters = Meters::new(&shared.labels);
    let mut session = Some(session);
    'serve: while let Ok(first) = queue.recv() {
        if !serve(&mut session, key, shared, &meters, slot, first) {
            break 'serve;
        }
        // Drain what is already queued before sleeping again.
        let mut batch = 1;
        while batch < shared.batch_max {
            let Ok(next) = queue.try_recv() else { break };
            if !serve(&mut session, key, shared, &meters, slot, next) {
                break 'serve;
            }
            batch += 1;
        }
        meters.batch.record(batch as f64);
    }
    // Closed here, not on drop: a session of a dead HSM fails to close, and that is
    // expected (cryptoki's drop would log it as an error).
    if let Some(Err(e)) = session.map(Session::close) {
        tracing::debug!(member = %shared.member, error = %e, "closing the session failed");
    }
    // Counted as abandoned when the member was fenced while this thread was in a call:
    // it has returned now.
    if slot.call_returned(&shared.abandoned) {
        tracing::info!(member = %shared.member, "a signer thread abandoned in a hung call has returned");
        metrics::gauge!(m::ABANDONED, shared.labels.clone())
            .set(shared.abandoned.load(Ordering::Acquire) as f64);
    }
}

/// Serve one request or job; false when this thread was abandoned and must end.
/// `session` is lent to a job while it runs, and always back afterwards.
fn serve(
    session: &mut Option<Session>,
    key: ObjectHandle,
    shared: &Arc<Shared>,
    meters: &Meters,
    slot: &Arc<Slot>,
    work: Work,
) -> bool {
    let req = match work {
        Work::Sign(req) => req,
        Work::Job(job) => {
            if Instant::now() >= job.deadline {
                // As an expired signature: its handshake fails.
                shared.done("expired".into());
                shared.job("expired");
                job.expire();
                return true;
            }
            meters.jobs_ran.increment(1);
            let here = crate::offload::Here {
                session: session.take().expect("the session is back after every job"),
                key,
                shared: Arc::clone(shared),
                meters: meters.clone(),
                slot: Arc::clone(slot),
                group: job.group,
                enqueued: job.enqueued,
                signed: false,
            };
            *session = Some(crate::offload::run(job, here).session);
            return !slot.abandoned.load(Ordering::Acquire);
        }
    };
    let Some(session) = session.as_ref() else {
        return false;
    };
    if Instant::now() >= req.deadline {
        // The waiter has given up; signing now would only delay the requests behind it.
        shared.done("expired".into());
        return true;
    }
    let (result, _cpu) = sign_marked(
        session,
        key,
        shared,
        meters,
        slot,
        req.op,
        &req.message,
        req.enqueued,
        Some(req.deadline),
        req.probe,
    );
    // The waiter may have timed out and gone: nothing to do then.
    let _ = req.reply.send(result);
    // An abandoned thread ends (its member was fenced; a new generation serves).
    !slot.abandoned.load(Ordering::Acquire)
}

/// Sign one request counted in flight (since `enqueued`) with `slot` marked busy for the
/// call, and record it: the token's time, the CPU time this thread spent in the calls,
/// the latency since `enqueued`, the outcome. Returns the result and that CPU time.
/// Used by the signer threads and by signing on the caller's thread (`inline`). A
/// health `probe` is counted as one (`hsmgate_signer_probes_total`), not in the
/// operations, latency and CPU series, which describe the signatures clients asked for.
/// A signature that succeeds after `deadline`, when its waiter has given up, is counted
/// `late`, not `ok`: its answer went nowhere (its time still counts: the HSM took it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_marked(
    session: &Session,
    key: ObjectHandle,
    shared: &Shared,
    meters: &Meters,
    slot: &Slot,
    op: SignOp,
    message: &[u8],
    enqueued: Instant,
    deadline: Option<Instant>,
    probe: bool,
) -> (Result<Vec<u8>, SignerError>, Duration) {
    slot.busy_since.store(now_ms(), Ordering::Release);
    let (started, cpu) = (Instant::now(), thread_cpu_time());
    let result = sign(session, key, shared, op, message);
    let cpu = thread_cpu_time().saturating_sub(cpu);
    // Given up on while it ran (the member fenced as hung): its answer went nowhere, and
    // its time (the HSM's freeze) says nothing of the member's speed. It is counted
    // `lost`, not `ok`, and left out of the latency, CPU and capacity figures.
    if slot.abandoned.load(Ordering::Acquire) {
        slot.busy_since.store(0, Ordering::Release);
        match probe {
            true => meters.in_flight.set(shared.leave() as f64),
            false => shared.done("lost".into()),
        }
        return (result, cpu);
    }
    shared.meter.record(started.elapsed());
    shared.meter.cpu(cpu);
    slot.busy_since.store(0, Ordering::Release);
    let latency = enqueued.elapsed();
    shared.meter.answered(latency, result.is_ok());
    if probe {
        meters.in_flight.set(shared.leave() as f64);
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.rv().map(ckr_name).unwrap_or_else(|| "error".into()),
        };
        metrics::counter!(m::PROBES, m::with(&shared.labels, "result", outcome)).increment(1);
        return (result, cpu);
    }
    meters.cpu.record(cpu.as_secs_f64());
    meters.latency.record(latency.as_secs_f64());
    match &result {
        Ok(_) if deadline.is_some_and(|d| Instant::now() >= d) => shared.done("late".into()),
        Ok(_) => {
            meters.in_flight.set(shared.leave() as f64);
            meters.ok.increment(1);
        }
        Err(e) => shared.done(e.rv().map(ckr_name).unwrap_or_else(|| "error".into())),
    }
    (result, cpu)
}

/// The largest signature of a key we accept: RSA-8192 (1024 bytes); an ECDSA P-384
/// `r || s` is 96.
const MAX_SIGNATURE: usize = 8192 / 8;

/// Sign `message` with `key` (a handle valid in this session's module instance): two
/// PKCS#11 calls, C_SignInit and C_Sign.
pub(crate) fn sign(
    session: &Session,
    key: ObjectHandle,
    shared: &Shared,
    op: SignOp,
    message: &[u8],
) -> Result<Vec<u8>, SignerError> {
    let failed = |e| SignerError::pkcs11(&shared.token, Function::Sign, e);
    let (mechanism, input) = (op.mechanism(), op.input(message));
    // C_SignInit + one C_Sign into a buffer large enough for any key we accept, instead
    // of cryptoki's `sign`, which first asks for the length (a third call, and a round
    // trip to a network HSM).
    let mut buf = [0u8; MAX_SIGNATURE];
    let raw = match session.sign_into(&mechanism, key, &input, &mut buf) {
        Ok(len) => buf[..len].to_vec(),
        // The operation is still active (PKCS#11 3.0 §5.2: CKR_BUFFER_TOO_SMALL does not
        // end it): finish it with the length query and a second C_Sign.
        Err(CkError::Pkcs11(RvError::BufferTooSmall, _)) => match session.sign_single(&input) {
            // A module that ended the operation anyway: start again.
            Err(CkError::Pkcs11(RvError::OperationNotInitialized, _)) => {
                session.sign(&mechanism, key, &input).map_err(failed)?
            }
            other => other.map_err(failed)?,
        },
        Err(e) => return Err(failed(e)),
    };
    if op.needs_der() {
        der::ecdsa_signature(&raw).ok_or_else(|| SignerError::BadSignature {
            token: shared.token.clone(),
            function: Function::Sign,
            length: raw.len(),
        })
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_wait_counts_a_busy_thread_until_it_lets_go() {
        // A thread that may drop a module's last reference (a supervisor holding its
        // group) is waited for like a signer thread.
        let busy = Busy::enter();
        let held = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(busy);
        });
        assert!(!wait_for_workers(Duration::from_millis(50)));
        held.join().unwrap();
    }
}
