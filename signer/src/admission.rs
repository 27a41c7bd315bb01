//! Admission control: how many full TLS handshakes may be on their way to the HSMs at
//! once, so that handshakes offered beyond what the HSMs can sign are shed early and
//! cheaply instead of all waiting and timing out together.
//!
//! One [`Limiter`] per signer pool (key group). The proxy asks it for a [`Permit`] when a
//! ClientHello that needs a private-key operation arrives, before any key exchange:
//!
//! ```text
//! ClientHello ─▶ in_flight < limit? ─yes─▶ Permit (released when the signature is made)
//!                     │ no
//!                     ▼
//!     expected wait ≤ target and waiting < max_waiting? ─no─▶ shed now (queue_full)
//!                     │ yes
//!                     ▼
//!     wait (FIFO) for a released slot, at most max_wait ─timeout─▶ shed (wait_timeout)
//! ```
//!
//! The expected wait is the number of waiters ahead × the mean time a permit is held ÷
//! the limit. The target is `target_wait`, or one mean hold time if that is longer: a
//! waiter may always wait about as long as its own handshake takes the HSMs (so a few
//! closed-loop clients on a slow HSM are queued, not shed, while an open-loop flood
//! builds no queue longer than that). `max_wait` is at least twice the target.
//!
//! **The limit** is a concurrency limit (handshakes admitted and not yet signed) that
//! adapts to the signing latency the pool observes, TCP-Vegas style: with `floor` the
//! unloaded latency and `rtt` the recent one, `limit × (1 − floor/rtt)` estimates how many
//! signatures are queued rather than being signed. Fewer than α queued: the HSMs have
//! room, the limit grows; more than β: it shrinks (α and β are 3 and 6 scaled by
//! log10 of the limit: a limit under about 7 never shrinks for latency, so each
//! instance keeps up to that many signatures at shared HSMs; see the README). So the
//! HSMs stay busy with a short queue, and several hsmgate instances sharing the same HSMs each back off as the
//! latency rises: together they neither overload the HSMs nor leave them idle, with no
//! coordinator. The limit follows the members that serve ([`Limiter::set_capacity`]): a
//! member that dies takes its share of the limit away at once, one that comes back gives
//! it back; with none serving, every full handshake is shed at once.
//!
//! **The door** ([`Limiter::door`], CoDel on the time from the kernel's receipt of a
//! connection's ClientHello, or from its accept where the socket has no receive
//! timestamp, to the ClientHello reaching admission): when the proxy itself is the
//! bottleneck (its CPU is saturated, e.g. by the HSM's client library or by the shedding
//! itself), connections wait in the kernel's accept queue and in the runtime's queue
//! before admission sees them, and admitted handshakes inherit that wait. If the *shortest* such wait of a whole [`DOOR_INTERVAL`] exceeds
//! [`DOOR_TARGET`], there is a standing queue (not a burst): full handshakes that waited
//! longer than the target are shed (`late`) until it drains. Resumptions are never shed.
//!
//! **Which signature belongs to which permit**: rustls signs synchronously inside the
//! handshake, on the task that drives it. The proxy runs the handshake inside [`scope`];
//! [`claim`] (called by the signing key) takes the task's permit, so the permit is
//! released as soon as the signature is made, not when the client's Finished arrives. A
//! handshake admitted as a resumption (no permit) that turns out to need a signature
//! after all (an unknown ticket, a forged PSK) gets a permit only if one is free at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hsmgate_config::Admission;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::oneshot;

use crate::metrics as m;

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// The expected wait exceeded the target, or the wait queue is full.
    QueueFull,
    /// It waited `max_wait` without a slot.
    WaitTimeout,
    /// No HSM member can sign now.
    NoCapacity,
    /// A resumption that fell back to a full handshake found no free slot.
    ResumptionFallback,
    /// The proxy itself is the bottleneck: every full handshake of the last interval
    /// reached the door later than [`DOOR_TARGET`] after its ClientHello reached the
    /// machine (or after its accept), and this one too.
    Late,
}

impl ShedReason {
    /// How many reasons there are.
    const COUNT: usize = 5;

    /// Every reason, in [`index`](Self::index) order.
    const ALL: [ShedReason; ShedReason::COUNT] = [
        ShedReason::QueueFull,
        ShedReason::WaitTimeout,
        ShedReason::NoCapacity,
        ShedReason::ResumptionFallback,
        ShedReason::Late,
    ];

    /// A distinct index below [`COUNT`](Self::COUNT) (the limiter's counter handles).
    fn index(self) -> usize {
        match self {
            ShedReason::QueueFull => 0,
            ShedReason::WaitTimeout => 1,
            ShedReason::NoCapacity => 2,
            ShedReason::ResumptionFallback => 3,
            ShedReason::Late => 4,
        }
    }

    /// The `reason` label of the shed counter.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::WaitTimeout => "wait_timeout",
            ShedReason::NoCapacity => "no_capacity",
            ShedReason::ResumptionFallback => "resumption_fallback",
            ShedReason::Late => "late",
        }
    }
}

impl std::fmt::Display for ShedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShedReason::QueueFull => "the expected wait for the HSMs is over the target",
            ShedReason::WaitTimeout => "no signing slot within the maximum wait",
            ShedReason::NoCapacity => "no HSM member can sign",
            ShedReason::Late => {
                "the proxy is saturated: ClientHellos reach the door late (accept queue)"
            }
            ShedReason::ResumptionFallback => {
                "a failed resumption needs a signature and no slot is free"
            }
        })
    }
}

/// A snapshot of a limiter, for logs, `/readyz` and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionStatus {
    /// Whether admission control is on.
    pub enabled: bool,
    /// The current concurrency limit.
    pub limit: f64,
    /// Handshakes admitted and not yet signed.
    pub in_flight: usize,
    /// Handshakes waiting for admission.
    pub waiting: usize,
    /// Signatures/s the serving members can make.
    pub capacity: f64,
    /// The unloaded signing latency.
    pub floor: Duration,
    /// Full handshakes admitted since start.
    pub admitted: u64,
    /// Resumption attempts let through since start.
    pub resumed: u64,
    /// Full handshakes shed since start.
    pub shed: u64,
}

/// Vegas thresholds (signatures queued, scaled by log10 of the limit as in Netflix's
/// concurrency-limits) and the bounds of the limit.
const ALPHA: f64 = 3.0;
const BETA: f64 = 6.0;
const MIN_LIMIT: f64 = 1.0;
/// The unloaded latency is the minimum over two windows of this length.
const FLOOR_WINDOW: Duration = Duration::from_secs(30);
/// Latency samples are averaged over at least this long before the limit moves.
const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(10);

/// The admission limiter of one signer pool.
pub struct Limiter {
    group: String,
    /// Its metrics' labels: `group` and `key`.
    labels: Vec<metrics::Label>,
    /// Changed in place by a reload ([`Limiter::update`]).
    settings: std::sync::RwLock<Admission>,
    state: Mutex<State>,
    door: Mutex<Door>,
    /// Sheds since the last log line, and the second of that line.
    shed_since_log: AtomicU64,
    last_log_second: AtomicU64,
    /// The last shed's [`ShedReason::index`].
    last_reason: AtomicU64,
    /// Decisions since start (for `/status`): admitted, resumed, shed.
    decisions: [AtomicU64; 3],
    /// Every slot taken, a queue, or no capacity ([`Limiter::saturated`]).
    saturated: AtomicBool,
    meters: Meters,
    /// Its series are on `/metrics` while it lives.
    series: m::SeriesOwner,
}

/// The limiter's metric handles, made once rather than looked up by name and label on
/// every decision (some are taken under the state's lock). The counters are made with
/// the limiter, every shed reason included, so that each series is on `/metrics` at 0
/// before its first event (a `rate()` or an alert on them works from the start, as
/// Prometheus advises for known label values); the wait histogram at its first use.
struct Meters {
    limit: Gauge,
    in_flight: Gauge,
    waiting: Gauge,
    capacity: Gauge,
    wait: std::sync::OnceLock<Histogram>,
    admitted: Counter,
    resumed: Counter,
    /// By [`ShedReason::index`].
    shed: [Counter; ShedReason::COUNT],
}

/// `counter`, registered at 0 (it is on `/metrics` before its first event).
fn zero(counter: Counter) -> Counter {
    counter.increment(0);
    counter
}

impl Meters {
    fn new(labels: &[metrics::Label]) -> Meters {
        Meters {
            limit: metrics::gauge!(m::ADMISSION_LIMIT, labels.to_vec()),
            in_flight: metrics::gauge!(m::ADMISSION_IN_FLIGHT, labels.to_vec()),
            waiting: metrics::gauge!(m::ADMISSION_WAITING, labels.to_vec()),
            capacity: metrics::gauge!(m::ADMISSION_CAPACITY, labels.to_vec()),
            wait: std::sync::OnceLock::new(),
            admitted: zero(metrics::counter!(m::ADMITTED, labels.to_vec())),
            resumed: zero(metrics::counter!(m::RESUMED, labels.to_vec())),
            shed: ShedReason::ALL.map(|reason| {
                zero(metrics::counter!(
                    m::SHED,
                    m::with(labels, "reason", reason.as_str())
                ))
            }),
        }
    }
}

struct State {
    limit: f64,
    max_limit: f64,
    in_flight: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
    capacity: f64,
    /// Sessions of the serving members (the last known, while none serves).
    sessions: usize,
    floor: Floor,
    /// Mean time a permit is held (admission → signature), seconds.
    hold: f64,
    window: Window,
}

impl State {
    /// Fewer handshakes admitted and not yet signed than the limit (at least
    /// [`MIN_LIMIT`]).
    fn slot_free(&self) -> bool {
        (self.in_flight as f64) < self.limit.floor().max(MIN_LIMIT)
    }
}

/// The door's CoDel state: the shortest accept→admission wait of the current interval,
/// and whether the last whole interval's shortest was over the target.
struct Door {
    started: Instant,
    min: Duration,
    count: u32,
    standing: bool,
}

/// Fewer full handshakes than this in an interval say nothing about a queue.
const DOOR_MIN_SAMPLES: u32 = 4;

/// Above this accept→admission wait, a full handshake counts as late.
pub(crate) const DOOR_TARGET: Duration = Duration::from_millis(50);
/// The interval whose shortest wait decides whether there is a standing queue.
pub(crate) const DOOR_INTERVAL: Duration = Duration::from_millis(100);

struct Waiter {
    id: u64,
    tx: oneshot::Sender<()>,
}

/// Windowed minimum of the signing latency.
struct Floor {
    current: f64,
    previous: f64,
    since: Instant,
}

impl Floor {
    fn observe(&mut self, rtt: f64, now: Instant) {
        if now.duration_since(self.since) >= FLOOR_WINDOW {
            self.previous = self.current;
            self.current = f64::INFINITY;
            self.since = now;
        }
        self.current = self.current.min(rtt);
    }

    fn get(&self) -> f64 {
        self.current.min(self.previous)
    }
}

/// Latency samples since the last limit update.
struct Window {
    sum: f64,
    count: u32,
    started: Instant,
}

impl Limiter {
    /// A limiter for the pool `group`, starting at `sessions` concurrent handshakes.
    pub fn new(
        group: &str,
        key: &str,
        settings: Admission,
        capacity: f64,
        sessions: usize,
    ) -> Limiter {
        let now = Instant::now();
        let sessions = sessions.max(1);
        let labels = m::group_labels(group, key);
        let limiter = Limiter {
            group: group.to_string(),
            meters: Meters::new(&labels),
            series: m::SeriesOwner::new(&labels),
            labels,
            settings: std::sync::RwLock::new(settings),
            state: Mutex::new(State {
                limit: sessions as f64,
                max_limit: max_limit(capacity, sessions, f64::INFINITY),
                in_flight: 0,
                waiters: VecDeque::new(),
                next_id: 0,
                capacity,
                sessions,
                floor: Floor {
                    current: f64::INFINITY,
                    previous: f64::INFINITY,
                    since: now,
                },
                hold: 0.0,
                window: Window {
                    sum: 0.0,
                    count: 0,
                    started: now,
                },
            }),
            door: Mutex::new(Door {
                started: now,
                min: Duration::MAX,
                count: 0,
                standing: false,
            }),
            shed_since_log: AtomicU64::new(0),
            last_log_second: AtomicU64::new(0),
            last_reason: AtomicU64::new(0),
            decisions: Default::default(),
            saturated: AtomicBool::new(false),
        };
        limiter.publish(&limiter.lock());
        limiter
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether admission control is on (off: every handshake is admitted).
    pub fn enabled(&self) -> bool {
        self.settings().enabled
    }

    /// The settings.
    pub fn settings(&self) -> Admission {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a reloaded configuration's settings (the pool itself kept: same members,
    /// same sessions). `signer_nice` and `inline_signing` shape the pool's threads and
    /// sessions, so a change of those starts a new pool instead (`GroupSettings::identity`).
    pub fn update(&self, settings: Admission) {
        let changed = {
            let mut current = self.settings.write().unwrap_or_else(|e| e.into_inner());
            let changed = *current != settings;
            *current = settings;
            changed
        };
        if changed {
            tracing::info!(group = %self.group, enabled = settings.enabled, target_wait = ?settings.target_wait, max_wait = ?settings.max_wait, max_waiting = settings.max_waiting, "admission settings reloaded");
            let mut s = self.lock();
            self.dispatch(&mut s);
        }
    }

    /// The pool's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The door check for a full handshake whose ClientHello reached admission `waited`
    /// after the kernel received it (or after its accept; see the module documentation): `Err(Late)` when
    /// there is a standing queue in front of admission and this one waited in it.
    pub fn door(&self, waited: Duration) -> Result<(), ShedReason> {
        if !self.settings().enabled {
            return Ok(());
        }
        let now = Instant::now();
        let standing = {
            let mut d = self.door.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = now.duration_since(d.started);
            if elapsed >= DOOR_INTERVAL {
                // The interval just closed decides, if it was busy and not followed by
                // a quiet gap: its shortest wait over the target is a standing queue.
                d.standing = elapsed < 2 * DOOR_INTERVAL
                    && d.count >= DOOR_MIN_SAMPLES
                    && d.min > DOOR_TARGET;
                d.started = now;
                d.min = Duration::MAX;
                d.count = 0;
            }
            d.min = d.min.min(waited);
            d.count += 1;
            d.standing
        };
        match standing && waited > DOOR_TARGET {
            true => Err(self.shed(ShedReason::Late)),
            false => Ok(()),
        }
    }

    /// Admit a full handshake, waiting (bounded) for a slot; `Err` means shed it now.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, ShedReason> {
        match self.enter()? {
            Entry::Admitted(permit) => Ok(permit),
            Entry::Wait(ticket) => ticket.wait().await,
        }
    }

    /// The part of [`acquire`](Self::acquire) that does not wait: admitted now, shed
    /// now (`Err`), or a place in the queue ([`Ticket::wait`] for the slot). So a caller
    /// that must not wait (the accept loop) sheds at once and hands the rest on.
    pub fn enter(self: &Arc<Self>) -> Result<Entry, ShedReason> {
        if !self.settings().enabled {
            return Ok(Entry::Admitted(self.admitted(false, true)));
        }
        let mut s = self.lock();
        let target = match self.judge(&s) {
            Judged::Shed(reason) => {
                drop(s);
                return Err(self.shed(reason));
            }
            Judged::Admit => {
                s.in_flight += 1;
                self.publish(&s);
                drop(s);
                self.wait_histogram().record(0.0);
                return Ok(Entry::Admitted(self.admitted(true, true)));
            }
            Judged::Queue { target } => target,
        };
        let (tx, rx) = oneshot::channel();
        let id = s.next_id;
        s.next_id += 1;
        s.waiters.push_back(Waiter { id, tx });
        self.publish(&s);
        drop(s);
        let max_wait = self
            .settings()
            .max_wait
            .max(Duration::from_secs_f64((2.0 * target).min(60.0)));
        Ok(Entry::Wait(Ticket {
            limiter: Arc::clone(self),
            id,
            rx,
            deadline: tokio::time::Instant::now() + max_wait,
            started: Instant::now(),
            armed: true,
        }))
    }

    /// Whether a full handshake arriving now would not be admitted at once (every slot
    /// taken, handshakes waiting, or no capacity): the only time [`shed_now`] can shed,
    /// read without the lock (the accept loop asks it for every connection).
    ///
    /// [`shed_now`]: Self::shed_now
    pub fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Shed now (counted) if [`enter`](Self::enter) would, taking nothing otherwise: for
    /// a caller that sheds at once but leaves admitting to later (the accept loop: a
    /// slot taken there would be held while the handshake's task waits to run, time the
    /// HSMs could be signing in).
    pub fn shed_now(&self) -> Result<(), ShedReason> {
        if !self.settings().enabled {
            return Ok(());
        }
        let judged = self.judge(&self.lock());
        match judged {
            Judged::Shed(reason) => Err(self.shed(reason)),
            _ => Ok(()),
        }
    }

    /// What [`enter`](Self::enter) does with a full handshake arriving now.
    fn judge(&self, s: &State) -> Judged {
        if s.capacity <= 0.0 {
            return Judged::Shed(ShedReason::NoCapacity);
        }
        if s.waiters.is_empty() && s.slot_free() {
            return Judged::Admit;
        }
        // Each slot frees about every hold/limit seconds. A waiter may expect to wait
        // the target, or one handshake's own time if that is longer (a slow HSM).
        let floor = s.floor.get();
        let hold = if s.hold > 0.0 {
            s.hold
        } else if floor.is_finite() {
            floor
        } else {
            0.0 // nothing measured yet: queue up to max_waiting
        };
        let per_slot = hold / s.limit.max(MIN_LIMIT);
        let expected = (s.waiters.len() + 1) as f64 * per_slot;
        let settings = self.settings();
        let target = settings.target_wait.as_secs_f64().max(s.hold);
        if s.waiters.len() >= settings.max_waiting || expected.is_nan() || expected > target {
            return Judged::Shed(ShedReason::QueueFull);
        }
        Judged::Queue { target }
    }

    /// Admit without waiting, if a slot is free (a resumption that fell back to a full
    /// handshake, or a signature made outside any handshake scope).
    pub fn try_acquire(self: &Arc<Self>, reason: ShedReason) -> Result<Permit, ShedReason> {
        self.try_slot(reason, true, false)
    }

    /// A free slot now (counted as admitted if `count`); shed (and counted) if there is
    /// none. `spare`: a handshake admitted once already, whose first step gave its slot
    /// back with a HelloRetryRequest ([`Gate::Returned`]), may also take one of a few
    /// slots past the limit (a quarter of it, at least one): under a standing queue no
    /// slot is ever free when its second ClientHello comes, and such clients were all
    /// shed. The overshoot is bounded, and a client that never sends its second
    /// ClientHello holds nothing.
    fn try_slot(
        self: &Arc<Self>,
        reason: ShedReason,
        count: bool,
        spare: bool,
    ) -> Result<Permit, ShedReason> {
        if !self.settings().enabled {
            return Ok(self.admitted(false, count));
        }
        let mut s = self.lock();
        let limit = s.limit.floor().max(MIN_LIMIT);
        let spare_room = (s.in_flight as f64) < limit + (limit / 4.0).floor().max(1.0);
        if s.capacity > 0.0 && (s.slot_free() || (spare && spare_room)) {
            s.in_flight += 1;
            self.publish(&s);
            drop(s);
            return Ok(self.admitted(true, count));
        }
        drop(s);
        Err(self.shed(reason))
    }

    fn admitted(self: &Arc<Self>, counted: bool, count: bool) -> Permit {
        if count {
            self.meters.admitted.increment(1);
            self.decisions[0].fetch_add(1, Ordering::Relaxed);
        }
        Permit {
            limiter: Arc::clone(self),
            since: Instant::now(),
            counted,
            unused: false,
        }
    }

    /// Count a handshake that resumed (let through without a permit; one that fell back
    /// to a full handshake is counted admitted or shed instead).
    pub fn note_resumption(&self) {
        self.meters.resumed.increment(1);
        self.decisions[1].fetch_add(1, Ordering::Relaxed);
    }

    fn shed(&self, reason: ShedReason) -> ShedReason {
        self.meters.shed[reason.index()].increment(1);
        self.decisions[2].fetch_add(1, Ordering::Relaxed);
        self.last_reason
            .store(reason.index() as u64, Ordering::Relaxed);
        self.shed_since_log.fetch_add(1, Ordering::Relaxed);
        self.log_shed(false);
        reason
    }

    /// The shed log line: at most one a second, with the count since the last one and
    /// the last reason. At nginx's level for `limit_req`'s refusals (`error`), so that
    /// an `error_log` without a level shows it. `tail`: called by the group's supervisor
    /// tick, it writes the count of a burst that ended since the last line (which no
    /// later shed would write until the next burst).
    fn log_shed(&self, tail: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_log_second.load(Ordering::Relaxed) == now
            || (tail && self.shed_since_log.load(Ordering::Relaxed) == 0)
            || self.last_log_second.swap(now, Ordering::Relaxed) == now
        {
            return;
        }
        let shed = self.shed_since_log.swap(0, Ordering::Relaxed);
        if shed == 0 {
            return;
        }
        let reason = ShedReason::ALL
            .get(self.last_reason.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or(ShedReason::QueueFull);
        let st = self.status();
        tracing::error!(
            group = %self.group,
            shed,
            last_reason = reason.as_str(),
            limit = st.limit.floor(),
            in_flight = st.in_flight,
            waiting = st.waiting,
            capacity_ops = st.capacity.round(),
            "shedding full TLS handshakes: {}",
            match reason {
                // The log line's words follow the reason it names: with every
                // member down nothing is "offered beyond" anything.
                ShedReason::NoCapacity | ShedReason::Late => reason.to_string(),
                _ => "more offered than the HSMs can sign".to_string(),
            }
        );
    }

    /// The supervisor's tick: the shed count of a burst that ended is logged.
    pub(crate) fn flush_shed_log(&self) {
        self.log_shed(true);
    }

    /// Give a slot back; `held`: how long a signature held it (`None`: the slot went
    /// unused, which says nothing about how long slots are held).
    fn release(&self, held: Option<Duration>, counted: bool) {
        if !counted {
            return;
        }
        let mut s = self.lock();
        if let Some(held) = held {
            let held = held.as_secs_f64();
            s.hold = if s.hold == 0.0 {
                held
            } else {
                0.9 * s.hold + 0.1 * held
            };
        }
        s.in_flight = s.in_flight.saturating_sub(1);
        self.dispatch(&mut s);
    }

    /// Hand free slots to the oldest waiters.
    fn dispatch(&self, s: &mut State) {
        while s.slot_free() {
            let Some(w) = s.waiters.pop_front() else {
                break;
            };
            if w.tx.send(()).is_ok() {
                s.in_flight += 1;
            }
        }
        self.publish(s);
    }

    /// A signing latency observed by the pool (queue + HSM), for the Vegas update.
    pub fn observe(&self, latency: Duration) {
        let now = Instant::now();
        let rtt = latency.as_secs_f64().max(1e-6);
        let mut s = self.lock();
        s.floor.observe(rtt, now);
        s.window.sum += rtt;
        s.window.count += 1;
        let floor = s.floor.get();
        let interval = MIN_UPDATE_INTERVAL.max(Duration::from_secs_f64((2.0 * floor).min(1.0)));
        if now.duration_since(s.window.started) < interval {
            return;
        }
        let mean = s.window.sum / f64::from(s.window.count);
        s.window = Window {
            sum: 0.0,
            count: 0,
            started: now,
        };
        let limit = s.limit;
        let queued = limit * (1.0 - floor / mean);
        let step = limit.log10().max(1.0);
        if queued < ALPHA * step {
            // Grow only when the limit is what holds handshakes back.
            if (s.in_flight as f64) * 2.0 >= limit || !s.waiters.is_empty() {
                s.limit = (limit + step).min(s.max_limit);
            }
        } else if queued > BETA * step {
            s.limit = (limit - step).max(MIN_LIMIT);
        }
        self.dispatch(&mut s);
    }

    /// What the serving members can sign now (signatures/s) and their sessions. Losing
    /// members (a death, a fence) lowers the limit at once in proportion to the sessions
    /// lost, members coming back raise it; the latency then fine-tunes it. (Sessions, not
    /// the capacity figures: those are estimates, the sessions are configuration.)
    pub fn set_capacity(&self, capacity: f64, sessions: usize) {
        let mut s = self.lock();
        let serving = if capacity > 0.0 { sessions.max(1) } else { 0 };
        let before = if s.capacity > 0.0 { s.sessions } else { 0 };
        if (capacity - s.capacity).abs() < f64::EPSILON && serving == before {
            return;
        }
        s.capacity = capacity;
        if serving > 0 {
            s.sessions = serving;
        }
        let floor = s.floor.get();
        s.max_limit = max_limit(capacity, s.sessions, floor);
        if before > 0 && serving > 0 {
            s.limit *= serving as f64 / before as f64;
        } else if serving > 0 {
            s.limit = serving as f64;
        }
        s.limit = s.limit.clamp(MIN_LIMIT, s.max_limit);
        if serving == 0 {
            // Nobody can sign: the waiters are shed now rather than at max_wait.
            s.waiters.clear();
        }
        self.dispatch(&mut s);
        self.meters.capacity.set(capacity);
    }

    /// A snapshot of the state.
    pub fn status(&self) -> AdmissionStatus {
        // Since start: with what the limiters of its pool a reload replaced counted.
        let before = self.series.retired_counts();
        let s = self.lock();
        AdmissionStatus {
            enabled: self.settings().enabled,
            limit: s.limit,
            in_flight: s.in_flight,
            waiting: s.waiters.len(),
            capacity: s.capacity,
            floor: Duration::from_secs_f64(if s.floor.get().is_finite() {
                s.floor.get()
            } else {
                0.0
            }),
            admitted: before[0] + self.decisions[0].load(Ordering::Relaxed),
            resumed: before[1] + self.decisions[1].load(Ordering::Relaxed),
            shed: before[2] + self.decisions[2].load(Ordering::Relaxed),
        }
    }

    fn publish(&self, s: &State) {
        let saturated = s.capacity <= 0.0 || !s.waiters.is_empty() || !s.slot_free();
        (self.saturated).store(self.settings().enabled && saturated, Ordering::Relaxed);
        self.meters.limit.set(s.limit.floor());
        self.meters.in_flight.set(s.in_flight as f64);
        self.meters.waiting.set(s.waiters.len() as f64);
    }

    fn wait_histogram(&self) -> &Histogram {
        self.meters
            .wait
            .get_or_init(|| metrics::histogram!(m::ADMISSION_WAIT, self.labels.clone()))
    }
}

impl Drop for Limiter {
    /// Its counts go on in the next limiter of its pool (a reload that rebuilt it).
    fn drop(&mut self) {
        let counts = self.decisions.each_ref().map(|d| d.load(Ordering::Relaxed));
        self.series.retire_counts(counts);
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("group", &self.group)
            .field("status", &self.status())
            .finish()
    }
}

/// The highest sensible limit: what it takes to keep the serving members busy (their
/// sessions, or capacity × latency by Little's law) with room for the Vegas queue.
fn max_limit(capacity: f64, sessions: usize, floor: f64) -> f64 {
    let little = if floor.is_finite() {
        capacity * floor
    } else {
        0.0
    };
    (2.0 * (sessions as f64).max(little) + BETA * 2.0).max(MIN_LIMIT)
}

/// Removes a waiter that gave up (or whose handshake was dropped) from the queue.
/// [`Limiter::judge`]'s answer.
enum Judged {
    Admit,
    Queue { target: f64 },
    Shed(ShedReason),
}

/// What [`Limiter::enter`] decided.
#[derive(Debug)]
pub enum Entry {
    /// A slot now.
    Admitted(Permit),
    /// A place in the queue: [`Ticket::wait`] for the slot.
    Wait(Ticket),
}

/// A full handshake's place in the admission queue. Dropped before its slot comes (the
/// client went away), it leaves the queue, and gives back a slot granted meanwhile.
#[derive(Debug)]
pub struct Ticket {
    limiter: Arc<Limiter>,
    id: u64,
    rx: oneshot::Receiver<()>,
    deadline: tokio::time::Instant,
    started: Instant,
    armed: bool,
}

impl Ticket {
    /// Wait for the slot, at most the queue's maximum wait from [`Limiter::enter`];
    /// `Err(WaitTimeout)`: shed (`Err(NoCapacity)`: the queue was emptied because no
    /// member can sign).
    pub async fn wait(mut self) -> Result<Permit, ShedReason> {
        let granted = tokio::select! {
            // The sender dropped unsent: cleared from the queue (`set_capacity`).
            r = &mut self.rx => r.map_err(|_| ShedReason::NoCapacity),
            _ = tokio::time::sleep_until(self.deadline) => match self.leave() {
                true => Err(ShedReason::WaitTimeout),
                // Out of the queue already: granted just as the wait ended (then the
                // slot is ours), or cleared.
                false => self.rx.try_recv().map_err(|_| ShedReason::NoCapacity),
            },
        };
        self.armed = false;
        let limiter = Arc::clone(&self.limiter);
        match granted {
            Ok(()) => {
                limiter
                    .wait_histogram()
                    .record(self.started.elapsed().as_secs_f64());
                Ok(limiter.admitted(true, true))
            }
            Err(reason) => Err(limiter.shed(reason)),
        }
    }

    /// Leave the queue; false if the waiter was no longer in it (it was granted a slot).
    fn leave(&mut self) -> bool {
        self.armed = false;
        let mut s = self.limiter.lock();
        let before = s.waiters.len();
        let id = self.id;
        s.waiters.retain(|w| w.id != id);
        let left = s.waiters.len() != before;
        self.limiter.publish(&s);
        left
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            // Dropped while waiting: leave the queue; a slot granted meanwhile is the
            // oneshot's, whose receiver is going, so give it back (a waiter cleared from
            // the queue was granted nothing).
            if !self.leave() && self.rx.try_recv().is_ok() {
                self.limiter.release(None, true);
            }
        }
    }
}

/// One admitted full handshake. Released (the slot handed to the next waiter) when
/// dropped: after the signature, or when the handshake ends without one.
pub struct Permit {
    limiter: Arc<Limiter>,
    since: Instant,
    counted: bool,
    /// Given back without a signature ([`Gate::after_first_step`]).
    unused: bool,
}

impl Permit {
    /// Whether this permit is `limiter`'s.
    pub fn is_for(&self, limiter: &Arc<Limiter>) -> bool {
        Arc::ptr_eq(&self.limiter, limiter)
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("group", &self.limiter.group)
            .finish()
    }
}

impl Permit {
    /// Gives the slot back without a signature made with it (the client left before
    /// its turn): no sample of how long slots are held.
    pub fn give_back_unused(mut self) {
        self.unused = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let held = (!self.unused).then(|| self.since.elapsed());
        self.limiter.release(held, self.counted);
    }
}

/// What a handshake was admitted as, carried through the handshake by [`scope`].
#[derive(Debug)]
pub enum Gate {
    /// A full handshake with its permit.
    Admitted(Permit),
    /// A resumption attempt, let through without a permit.
    Resumption,
    /// The permit was claimed by a signature already.
    Spent,
    /// A full handshake whose first step answered without signing (a HelloRetryRequest:
    /// the client must send a second ClientHello) and gave back its slot of this
    /// limiter, so that a client that never sends it holds no slot. Its signature takes
    /// a free slot, or one of a few spare ones past the limit, or the handshake is shed;
    /// by the same limiter it is not counted as admitted twice.
    Returned(Arc<Limiter>),
    /// A handshake the door let through with no limiter: its ClientHello chose a key
    /// from a file (or a pool with admission off). rustls chooses again when it signs,
    /// from what the ClientHello allows with the cipher suite it picks (TLS 1.2), or
    /// from a second ClientHello (after a HelloRetryRequest): if that choice is a
    /// token's key after all, its signature takes a free slot of that key's limiter or
    /// the handshake is shed, as a resumption that falls back is.
    Unadmitted,
    /// A signature found no slot (a resumption that fell back to a full handshake, or
    /// a second signature): the handshake was shed.
    Shed(ShedReason),
}

impl Gate {
    /// The gate for the rest of a handshake whose first step (the ClientHello processed,
    /// the server's first flight made) is done: a permit the step did not spend is given
    /// back ([`Gate::Returned`]), since the handshake now waits for the client.
    pub fn after_first_step(self) -> Gate {
        match self {
            Gate::Admitted(mut permit) => {
                permit.unused = true;
                Gate::Returned(Arc::clone(&permit.limiter))
            }
            other => other,
        }
    }
}

tokio::task_local! {
    static GATE: RefCell<Gate>;
}

/// Drive `handshake` with `gate` as its admission: signatures made inside (by
/// [`crate::HsmSigningKey`], on this task) claim it. Also returns why a signature inside
/// was refused a slot, if one was (the handshake was then shed).
pub async fn scope<F: Future>(gate: Gate, handshake: F) -> (F::Output, Option<ShedReason>) {
    GATE.scope(RefCell::new(gate), async {
        let out = handshake.await;
        let shed = GATE.with(|g| match *g.borrow() {
            Gate::Shed(reason) => Some(reason),
            _ => None,
        });
        (out, shed)
    })
    .await
}

/// Run `step` (a handshake's synchronous step that may sign, e.g. on a signer thread:
/// `offload`) with `gate` as its admission, as [`scope`] does for a future; returns the
/// step's output and the gate as the step left it (to carry into the rest of the
/// handshake's [`scope`]).
pub fn scope_sync<T>(gate: Gate, step: impl FnOnce() -> T) -> (T, Gate) {
    GATE.sync_scope(RefCell::new(gate), || {
        let out = step();
        let gate = GATE.with(|g| std::mem::replace(&mut *g.borrow_mut(), Gate::Spent));
        (out, gate)
    })
}

/// The permit for a signature through `limiter`, if the caller is inside a handshake
/// [`scope`]: the handshake's own permit, or — for a resumption that fell back to a full
/// handshake — a slot if one is free now. Outside any scope (benchmarks, tools) `Ok(None)`:
/// no admission.
pub(crate) fn claim(limiter: &Arc<Limiter>) -> Result<Option<Permit>, ShedReason> {
    let taken = GATE.try_with(|g| std::mem::replace(&mut *g.borrow_mut(), Gate::Spent));
    let claimed = match taken {
        Err(_) => return Ok(None),
        Ok(Gate::Admitted(p)) if p.is_for(limiter) => return Ok(Some(p)),
        // Admitted for another key (rustls chose another certificate than the door
        // did): that slot goes back unused, and only a free slot of this key's will do.
        Ok(Gate::Admitted(mut other)) => {
            other.unused = true;
            drop(other);
            limiter.try_acquire(ShedReason::QueueFull)
        }
        // A second signature in one handshake, or a handshake the door saw no limiter
        // for: only a free slot will do.
        Ok(Gate::Spent | Gate::Shed(_) | Gate::Unadmitted) => {
            limiter.try_acquire(ShedReason::QueueFull)
        }
        Ok(Gate::Resumption) => limiter.try_acquire(ShedReason::ResumptionFallback),
        Ok(Gate::Returned(gave)) => {
            limiter.try_slot(ShedReason::QueueFull, !Arc::ptr_eq(&gave, limiter), true)
        }
    };
    if let Err(reason) = claimed {
        let _ = GATE.try_with(|g| *g.borrow_mut() = Gate::Shed(reason));
    }
    claimed.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Admission {
        Admission {
            enabled: true,
            target_wait: Duration::from_millis(20),
            max_wait: Duration::from_millis(60),
            max_waiting: 4,
            signer_nice: 0,
            inline_signing: false,
        }
    }

    #[test]
    fn every_shed_reason_is_listed_at_its_index() {
        for (i, reason) in ShedReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }

    #[test]
    fn each_shed_reason_has_its_own_counter_slot() {
        let all = [
            ShedReason::QueueFull,
            ShedReason::WaitTimeout,
            ShedReason::NoCapacity,
            ShedReason::ResumptionFallback,
            ShedReason::Late,
        ];
        let mut seen = [false; ShedReason::COUNT];
        for r in all {
            assert!(!std::mem::replace(&mut seen[r.index()], true), "{r:?}");
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn the_door_sheds_late_handshakes_only_behind_a_standing_queue() {
        let l = Limiter::new("g", "k", settings(), 1000.0, 2);
        let (fast, late) = (Duration::from_millis(2), DOOR_TARGET * 3);
        let interval = |l: &Limiter, waits: &[Duration]| {
            let start = Instant::now();
            let out: Vec<_> = waits.iter().map(|w| l.door(*w)).collect();
            std::thread::sleep(
                DOOR_INTERVAL.saturating_sub(start.elapsed()) + Duration::from_millis(5),
            );
            out
        };
        // The first handshakes after start never count as a queue.
        assert!(interval(&l, &[late; 3]).iter().all(Result::is_ok));
        // A busy interval with one fast handshake: a burst, not a standing queue.
        assert!(
            interval(&l, &[late, late, fast, late, late])
                .iter()
                .all(Result::is_ok)
        );
        // A busy interval of late ones only: the next interval sheds the late, not the fast.
        assert!(interval(&l, &[late; 5]).iter().all(Result::is_ok));
        assert_eq!(
            interval(&l, &[late, fast, late, late]),
            [
                Err(ShedReason::Late),
                Ok(()),
                Err(ShedReason::Late),
                Err(ShedReason::Late)
            ]
        );
        // That interval had a fast one: the queue is gone.
        assert_eq!(l.door(late), Ok(()));
        // After a quiet gap the old interval says nothing.
        let l = Limiter::new("g", "k", settings(), 1000.0, 2);
        interval(&l, &[late; 3]);
        interval(&l, &[late; 5]);
        std::thread::sleep(DOOR_INTERVAL * 2);
        assert_eq!(l.door(late), Ok(()));
        // Off: never shed.
        let off = Limiter::new(
            "g",
            "k",
            Admission {
                enabled: false,
                ..settings()
            },
            1000.0,
            2,
        );
        for _ in 0..3 {
            assert!(interval(&off, &[late; 5]).iter().all(Result::is_ok));
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    #[test]
    fn admits_up_to_the_limit_then_queues_then_sheds() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 2));
            let a = l.acquire().await.expect("first");
            let b = l.acquire().await.expect("second");
            assert_eq!(l.status().in_flight, 2);
            // Full: a waiter is queued (expected wait from the floor is tiny) and gets
            // the slot the moment one is released.
            let l2 = Arc::clone(&l);
            let waiter = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
            tokio::task::yield_now().await;
            assert_eq!(l.status().waiting, 1);
            drop(a);
            assert_eq!(waiter.await.expect("join"), Ok(()));
            drop(b);
            assert_eq!(l.status().in_flight, 0);
        });
    }

    #[test]
    fn a_waiter_past_max_wait_is_shed_and_leaves_the_queue() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let _held = l.acquire().await.expect("first");
            let started = Instant::now();
            assert_eq!(l.acquire().await.err(), Some(ShedReason::WaitTimeout));
            assert!(started.elapsed() >= Duration::from_millis(60));
            assert_eq!(l.status().waiting, 0);
        });
    }

    #[test]
    fn sheds_at_once_when_the_expected_wait_is_over_the_target() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            // Each permit is held ~100 ms: one waiter may wait that long (its own
            // handshake's time), a second would wait 200 ms: shed at once.
            let p = l.acquire().await.expect("first");
            l.lock().hold = 0.1;
            let l2 = Arc::clone(&l);
            let first = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
            tokio::task::yield_now().await;
            assert_eq!(l.status().waiting, 1);
            let started = Instant::now();
            assert_eq!(l.acquire().await.err(), Some(ShedReason::QueueFull));
            // At once, not after waiting: well under the 100 ms a slot would take (loose
            // enough for a busy CI machine).
            assert!(started.elapsed() < Duration::from_millis(50));
            drop(p);
            assert_eq!(first.await.expect("join"), Ok(()));
        });
    }

    /// `shed_now` sheds (and counts) exactly where `enter` would, and takes nothing:
    /// no slot, no place in the queue.
    #[test]
    fn shed_now_sheds_where_enter_would_and_takes_nothing_and_saturated_says_when() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            assert_eq!(l.shed_now(), Ok(()));
            assert!(!l.saturated());
            assert_eq!((l.status().in_flight, l.status().waiting), (0, 0));
            let p = l.acquire().await.expect("the slot");
            assert!(l.saturated(), "every slot taken");
            l.lock().hold = 0.1;
            // One waiter may still queue: not shed, and nothing taken.
            assert_eq!(l.shed_now(), Ok(()));
            assert_eq!((l.status().in_flight, l.status().waiting), (1, 0));
            let l2 = Arc::clone(&l);
            let first = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
            tokio::task::yield_now().await;
            // A second would wait past the target: shed, counted as enter counts it.
            let shed_before = l.decisions[2].load(Ordering::Relaxed);
            assert_eq!(l.shed_now(), Err(ShedReason::QueueFull));
            assert_eq!(l.decisions[2].load(Ordering::Relaxed), shed_before + 1);
            assert_eq!(l.status().waiting, 1);
            drop(p);
            assert_eq!(first.await.expect("join"), Ok(()));
            assert!(!l.saturated(), "the slot given back");
            l.set_capacity(0.0, 1);
            assert!(l.saturated(), "no capacity");
            assert_eq!(l.shed_now(), Err(ShedReason::NoCapacity));
        });
    }

    #[test]
    fn the_wait_queue_is_bounded() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let _p = l.acquire().await.expect("first");
            let mut waiting = Vec::new();
            for _ in 0..4 {
                let l = Arc::clone(&l);
                waiting.push(tokio::spawn(async move { l.acquire().await.map(|_| ()) }));
            }
            tokio::task::yield_now().await;
            assert_eq!(l.status().waiting, 4);
            assert_eq!(l.acquire().await.err(), Some(ShedReason::QueueFull));
            for w in waiting {
                assert_eq!(w.await.expect("join"), Err(ShedReason::WaitTimeout));
            }
        });
    }

    #[test]
    fn a_dropped_waiter_leaves_the_queue() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let p = l.acquire().await.expect("first");
            let l2 = Arc::clone(&l);
            let waiter = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
            tokio::task::yield_now().await;
            assert_eq!(l.status().waiting, 1);
            waiter.abort();
            let _ = waiter.await;
            assert_eq!(l.status().waiting, 0);
            drop(p);
            assert_eq!(l.status().in_flight, 0);
        });
    }

    #[test]
    fn no_capacity_sheds_everything_and_clears_waiters() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let p = l.acquire().await.expect("first");
            l.set_capacity(0.0, 0);
            assert_eq!(l.acquire().await.err(), Some(ShedReason::NoCapacity));
            drop(p);
            l.set_capacity(500.0, 2);
            assert!(l.acquire().await.is_ok());
        });
    }

    #[test]
    fn waiters_cleared_for_no_capacity_are_shed_as_such_and_take_no_slot() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let held = l.acquire().await.expect("first");
            let Ok(Entry::Wait(waiting)) = l.enter() else {
                panic!("the second waits")
            };
            let Ok(Entry::Wait(dropped)) = l.enter() else {
                panic!("the third waits")
            };
            assert_eq!(l.status().waiting, 2);
            l.set_capacity(0.0, 0);
            assert_eq!(waiting.wait().await.err(), Some(ShedReason::NoCapacity));
            // One cleared from the queue and then dropped was granted nothing: the
            // slot still held stays counted.
            drop(dropped);
            assert_eq!(l.status().in_flight, 1);
            drop(held);
            assert_eq!(l.status().in_flight, 0);
        });
    }

    #[test]
    fn the_limit_follows_the_latency() {
        let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 4));
        let start = l.status().limit;
        // Unloaded latency 1 ms, and the limit in use: it grows.
        l.lock().in_flight = 4;
        for _ in 0..50 {
            l.observe(Duration::from_millis(1));
            std::thread::sleep(Duration::from_millis(11));
        }
        let grown = l.status().limit;
        assert!(grown > start, "{start} -> {grown}");
        // Latency 10× the floor: most of the limit is queueing; it shrinks.
        for _ in 0..50 {
            l.observe(Duration::from_millis(10));
            std::thread::sleep(Duration::from_millis(21));
        }
        let shrunk = l.status().limit;
        assert!(shrunk < grown, "{grown} -> {shrunk}");
        l.lock().in_flight = 0;
    }

    #[test]
    fn losing_capacity_lowers_the_limit_at_once() {
        let l = Limiter::new("g", "k", settings(), 1000.0, 8);
        assert_eq!(l.status().limit, 8.0);
        l.set_capacity(500.0, 4);
        assert_eq!(l.status().limit, 4.0);
        l.set_capacity(1000.0, 8);
        assert_eq!(l.status().limit, 8.0);
    }

    #[test]
    fn claim_takes_the_scope_permit_or_a_free_slot() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            // Outside a scope: no admission.
            assert!(claim(&l).expect("no scope").is_none());
            let p = l.acquire().await.expect("admit");
            scope(Gate::Admitted(p), async {
                let got = claim(&l).expect("own permit");
                assert!(got.is_some());
                assert_eq!(l.status().in_flight, 1);
            })
            .await;
            assert_eq!(l.status().in_flight, 0);
            // A resumption that falls back: a free slot is taken; none free: shed.
            let held = l.acquire().await.expect("admit");
            let (shed, reported) = scope(Gate::Resumption, async { claim(&l).map(|_| ()) }).await;
            assert_eq!(shed, Err(ShedReason::ResumptionFallback));
            assert_eq!(reported, Some(ShedReason::ResumptionFallback));
            drop(held);
            let (ok, reported) =
                scope(Gate::Resumption, async { claim(&l).map(|p| p.is_some()) }).await;
            assert_eq!(ok, Ok(true));
            assert_eq!(reported, None);
        });
    }

    #[test]
    fn a_permit_the_first_step_did_not_sign_with_is_given_back() {
        rt().block_on(async {
            let l = Arc::new(Limiter::new("g", "k", settings(), 1000.0, 1));
            let p = l.acquire().await.expect("admit");
            let hold_before = l.lock().hold;
            let admitted = l.decisions[0].load(Ordering::Relaxed);
            // A HelloRetryRequest: the step signed nothing, the slot is free again while
            // the client is asked for a second ClientHello, and no hold time is learnt.
            let gate = Gate::Admitted(p).after_first_step();
            assert!(matches!(&gate, Gate::Returned(by) if Arc::ptr_eq(by, &l)));
            assert_eq!(l.status().in_flight, 0);
            assert_eq!(l.lock().hold, hold_before);
            // Its signature then takes a free slot, not counted as a second admission…
            let (got, reported) = scope(gate, async { claim(&l).map(|p| p.is_some()) }).await;
            assert_eq!((got, reported), (Ok(true), None));
            assert_eq!(l.decisions[0].load(Ordering::Relaxed), admitted);
            assert_eq!(l.status().in_flight, 0, "released after the signature");
            // …or, with every slot taken (by a handshake admitted meanwhile), a spare
            // one past the limit (one here: a quarter of the limit, at least one)…
            let held = l.acquire().await.expect("admit");
            let (spare, reported) = scope(Gate::Returned(Arc::clone(&l)), async {
                claim(&l).map(|p| p.expect("a permit"))
            })
            .await;
            let spare = spare.expect("a spare slot for a handshake admitted once");
            assert_eq!((reported, l.status().in_flight), (None, 2));
            // …and with the spare slots taken too, it is shed; a fresh full handshake
            // gets no spare slot.
            let gate = Gate::Returned(Arc::clone(&l));
            let (shed, reported) = scope(gate, async { claim(&l).map(|_| ()) }).await;
            assert_eq!(shed, Err(ShedReason::QueueFull));
            assert_eq!(reported, Some(ShedReason::QueueFull));
            drop(spare);
            assert!(l.try_acquire(ShedReason::QueueFull).is_err());
            drop(held);
            // A spent or resumption gate is left as it is.
            assert!(matches!(Gate::Spent.after_first_step(), Gate::Spent));
            assert!(matches!(
                Gate::Resumption.after_first_step(),
                Gate::Resumption
            ));
        });
    }

    #[test]
    fn a_signature_by_another_key_than_the_doors_takes_a_slot_of_its_own() {
        rt().block_on(async {
            let token = Arc::new(Limiter::new("g", "token", settings(), 1000.0, 1));
            let other = Arc::new(Limiter::new("g", "other", settings(), 1000.0, 1));
            let admitted = |l: &Limiter| l.decisions[0].load(Ordering::Relaxed);
            // The door saw a key from a file (no limiter); rustls signs with the token's.
            let (got, reported) = scope(Gate::Unadmitted, async {
                let p = claim(&token).expect("a free slot");
                assert_eq!(token.status().in_flight, 1);
                p.is_some()
            })
            .await;
            assert!(got && reported.is_none());
            assert_eq!((admitted(&token), token.status().in_flight), (1, 0));
            // With the token's slot taken, it is shed, not signed past the limit.
            let held = token.acquire().await.expect("admit");
            let (shed, reported) =
                scope(Gate::Unadmitted, async { claim(&token).map(|_| ()) }).await;
            assert_eq!(
                (shed, reported),
                (Err(ShedReason::QueueFull), Some(ShedReason::QueueFull))
            );
            drop(held);
            // Admitted by another key's limiter: that slot goes back, this key's counts.
            let p = other.acquire().await.expect("admit");
            let (got, _) = scope(Gate::Admitted(p), async {
                let got = claim(&token).expect("a free slot").is_some();
                assert_eq!(other.status().in_flight, 0, "the door's slot given back");
                got
            })
            .await;
            assert!(got);
            // Returned by another key's limiter: this key counts its admission.
            let before = admitted(&token);
            let gate = Gate::Returned(Arc::clone(&other));
            let (got, _) = scope(gate, async { claim(&token).map(|p| p.is_some()) }).await;
            assert_eq!(got, Ok(true));
            assert_eq!(admitted(&token), before + 1);
        });
    }

    #[test]
    fn disabled_admits_everything() {
        rt().block_on(async {
            let mut s = settings();
            s.enabled = false;
            let l = Arc::new(Limiter::new("g", "k", s, 0.0, 1));
            let permits: Vec<_> = futures_lite_join(&l, 10).await;
            assert_eq!(permits.len(), 10);
            assert_eq!(l.status().in_flight, 0);
        });
    }

    async fn futures_lite_join(l: &Arc<Limiter>, n: usize) -> Vec<Permit> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(l.acquire().await.expect("admitted"));
        }
        v
    }
}
