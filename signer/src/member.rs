//! One HSM member of a group: its backend, the generation in rotation, its health
//! state, and how it is taken out of rotation (down on a device error, fenced when a
//! call hangs) and put back.

mod state;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use state::MemberState;
use state::StateCell;

use crate::backend::{Backend, Generation, StartCtx};
use crate::capacity::{Capacity, Meter};
use crate::error::{RvError, SignerError};
use crate::metrics as m;
use crate::pool::{ExpectedKey, GroupSettings, MemberSettings};

/// The first wait before a recovery attempt.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// One HSM.
///
/// Invariant: the state is `Up` exactly when a generation is installed; both change
/// together under the `live` lock (in [`Member::install`] and [`Member::take_out`]).
/// Other transitions are compare-and-swaps on the state alone (see [`MemberState`]).
pub(crate) struct Member {
    pub(crate) settings: MemberSettings,
    /// Its metrics' labels (group, key, member).
    pub(crate) labels: Vec<metrics::Label>,
    pub(crate) primary: bool,
    backend: Box<dyn Backend>,
    state: StateCell,
    live: Mutex<Option<Arc<dyn Generation>>>,
    /// Threads abandoned in hung calls: signer threads, and start-up or recovery
    /// attempts given up on. Whoever gives a thread up adds it (before the thread can
    /// see that it was given up); the thread subtracts itself when it returns.
    pub(crate) abandoned: Arc<AtomicUsize>,
    pub(crate) last_error: Mutex<String>,
    /// What took it out of rotation (or kept it from starting): recovery errors are
    /// shown after it, not in its place, so `/status` keeps the first cause.
    cause: Mutex<String>,
    /// Refused because its PIN is wrong: a reload with the same PIN does not try it
    /// again (a changed PIN starts a new pool).
    refused_for_its_pin: std::sync::atomic::AtomicBool,
    /// Recovery bookkeeping (see [`Recovery`]).
    pub(crate) recovery: Mutex<Recovery>,
    /// What its signer threads did (all generations).
    pub(crate) meter: Arc<Meter>,
    /// Its capacity estimate.
    pub(crate) capacity: Mutex<Capacity>,
    /// Its operations count when it was last probed or last seen working: a member that
    /// signed since needs no probe (its traffic shows whether it is healthy).
    pub(crate) probe_mark: std::sync::atomic::AtomicU64,
    /// Held while the state gauge is written, so that the last writer writes the state
    /// as it is then (see [`Member::publish_state`]).
    publishing: Mutex<()>,
    /// Its series are on `/metrics` while it lives.
    series: m::SeriesOwner,
}

impl Drop for Member {
    /// Its counts go on in the next member of its name (a reload that rebuilt the pool).
    fn drop(&mut self) {
        let (ops, errors) = self.meter.totals();
        self.series.retire_counts([ops, errors, 0]);
    }
}

/// When to try again, and which attempt is current.
///
/// An attempt belongs to the supervisor while `attempt_started` is set: it may give it
/// up as hung (a new `attempt` number, the thread counted as abandoned). The attempt's
/// thread, when it returns, [`claims`](Recovery::claim) it under the same lock: then it
/// alone ends the `Recovering` state.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) next_attempt: Instant,
    pub(crate) backoff: Duration,
    pub(crate) attempt: u64,
    pub(crate) attempt_started: Option<Instant>,
    pub(crate) out_since: Option<Instant>,
}

/// What a returning recovery thread finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Its attempt is current: the thread owns the `Recovering` state now.
    Current,
    /// Its attempt was given up as hung and counted as abandoned.
    GivenUp,
}

impl Recovery {
    /// Start attempt number `attempt + 1` now.
    pub(crate) fn begin(&mut self) -> u64 {
        self.attempt += 1;
        self.attempt_started = Some(Instant::now());
        self.attempt
    }

    /// Called by attempt `attempt`'s thread when it returns.
    pub(crate) fn claim(&mut self, attempt: u64) -> Claim {
        if self.attempt == attempt && self.attempt_started.take().is_some() {
            Claim::Current
        } else {
            Claim::GivenUp
        }
    }

    /// Give the running attempt up if it has run longer than `limit`: it no longer
    /// counts, and the caller counts its thread as abandoned (under this lock).
    pub(crate) fn give_up_if_older(&mut self, limit: Duration) -> bool {
        if self.attempt_started.is_none_or(|t| t.elapsed() <= limit) {
            return false;
        }
        self.attempt += 1;
        self.attempt_started = None;
        self.retry_later();
        true
    }

    /// The attempt failed: wait longer before the next one.
    pub(crate) fn retry_later(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(crate::group::MAX_BACKOFF);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Member {
    pub(crate) fn new(
        settings: MemberSettings,
        labels: Vec<metrics::Label>,
        backend: Box<dyn Backend>,
    ) -> Member {
        let m = Member {
            series: m::SeriesOwner::new(&labels),
            labels,
            primary: settings.primary,
            backend,
            state: StateCell::new(MemberState::Down),
            live: Mutex::new(None),
            abandoned: Arc::new(AtomicUsize::new(0)),
            last_error: Mutex::new("not started".into()),
            cause: Mutex::new(String::new()),
            refused_for_its_pin: std::sync::atomic::AtomicBool::new(false),
            meter: Arc::new(Meter::default()),
            capacity: Mutex::new(Capacity::new(settings.capacity)),
            probe_mark: std::sync::atomic::AtomicU64::new(u64::MAX),
            recovery: Mutex::new(Recovery {
                next_attempt: Instant::now(),
                backoff: FIRST_BACKOFF,
                attempt: 0,
                attempt_started: None,
                out_since: Some(Instant::now()),
            }),
            settings,
            publishing: Mutex::new(()),
        };
        m.publish_state();
        m
    }

    pub(crate) fn name(&self) -> &str {
        &self.settings.name
    }

    pub(crate) fn state(&self) -> MemberState {
        self.state.get()
    }

    /// A state change that involves no generation (see [`MemberState`] for the edges).
    pub(crate) fn transition(&self, from: MemberState, to: MemberState) -> bool {
        debug_assert!(from != MemberState::Up && to != MemberState::Up);
        let done = self.state.transition(from, to).is_ok();
        if done {
            self.publish_state();
        }
        done
    }

    /// Write the state gauge from the state as it is now, not as the caller left it:
    /// two threads that change the state one after the other may publish in the other
    /// order, and the gauge must not be left showing the first one's state. Under the
    /// lock, whoever writes last reads a state at least as new as every other writer's.
    /// `/metrics` also calls it at each scrape (through [`crate::SignerPool::publish_states`]),
    /// so a scrape shows the state `/status` shows at that moment.
    pub(crate) fn publish_state(&self) {
        let _one_writer = lock(&self.publishing);
        metrics::gauge!(m::STATE, self.labels.clone()).set(f64::from(self.state() as u8));
    }

    /// The current generation, if the member is up.
    pub(crate) fn live(&self) -> Option<Arc<dyn Generation>> {
        let live = lock(&self.live);
        if self.state() != MemberState::Up {
            return None;
        }
        live.clone()
    }

    pub(crate) fn last_error(&self) -> String {
        lock(&self.last_error).clone()
    }

    pub(crate) fn set_last_error(&self, text: String) {
        *lock(&self.last_error) = text;
    }

    /// Record why the member is out of rotation (taken out, or down at start): the
    /// first cause, which later recovery errors do not replace.
    pub(crate) fn set_cause(&self, text: String) {
        lock(&self.cause).clone_from(&text);
        self.set_last_error(text);
    }

    /// A recovery attempt failed with `text`: the last error becomes the cause followed
    /// by it. Returns whether that changed the last error (a new failure, worth a log
    /// line; the same one again is not).
    pub(crate) fn recovery_failed(&self, text: &str) -> bool {
        let cause = lock(&self.cause).clone();
        let shown = if cause.is_empty() || cause == text {
            text.to_string()
        } else {
            format!("{cause}; recovery: {text}")
        };
        let mut last = lock(&self.last_error);
        if *last == shown {
            return false;
        }
        *last = shown;
        true
    }

    /// Signatures/s it can make (configured, calibrated or measured; 0 if not known).
    pub(crate) fn capacity(&self) -> f64 {
        lock(&self.capacity).current()
    }

    /// Its signer threads: sessions × connections.
    pub(crate) fn threads(&self) -> usize {
        self.settings.sessions.max(1) * self.settings.connections.max(1)
    }

    /// Signatures queued or being signed on it.
    pub(crate) fn in_flight(&self) -> usize {
        self.live().map_or(0, |l| l.in_flight())
    }

    /// Put a freshly started generation into rotation, moving from `from` (`Down` at
    /// start-up, `Recovering` for a claimed recovery attempt). If the state is no longer
    /// `from`, the generation is not installed and is handed back.
    pub(crate) fn install(
        &self,
        from: MemberState,
        generation: Arc<dyn Generation>,
    ) -> Result<(), Arc<dyn Generation>> {
        {
            let mut live = lock(&self.live);
            if self.state.transition(from, MemberState::Up).is_err() {
                return Err(generation);
            }
            *live = Some(generation);
        }
        self.publish_state();
        lock(&self.cause).clear();
        let mut r = lock(&self.recovery);
        r.backoff = FIRST_BACKOFF;
        r.attempt_started = None;
        if let Some(since) = r.out_since.take() {
            tracing::info!(member = %self.settings.name, out_for = ?since.elapsed(), "HSM member in rotation");
        }
        Ok(())
    }

    /// Take the member out of rotation if it is up. `hung`: its calls do not return
    /// (fenced: threads in a call are abandoned); otherwise a device error (down).
    /// Queued requests are handed back to their callers at once so they retry
    /// elsewhere. Returns whether this call took it out (false: it was not up).
    pub(crate) fn take_out(&self, hung: bool, reason: &str) -> bool {
        let new_state = if hung {
            MemberState::Fenced
        } else {
            MemberState::Down
        };
        let generation = {
            let mut live = lock(&self.live);
            // Only this function leaves `Up`, and only under the `live` lock: a member
            // seen up here is still up at the swap below. The error is recorded first, so
            // no reader sees the member out of rotation without its reason.
            if self.state() != MemberState::Up {
                // Already out, or being recovered: whoever changed it owns it.
                return false;
            }
            self.set_cause(reason.to_string());
            if self.state.transition(MemberState::Up, new_state).is_err() {
                return false;
            }
            let mut r = lock(&self.recovery);
            r.out_since = Some(Instant::now());
            r.next_attempt = Instant::now() + r.backoff;
            drop(r);
            live.take()
        };
        self.publish_state();
        let Some(generation) = generation else {
            return true;
        };
        let stuck = generation.retire(hung);
        if hung {
            tracing::warn!(member = %self.settings.name, abandoned_threads = stuck, %reason, "HSM member fenced");
        } else {
            tracing::warn!(member = %self.settings.name, %reason, "HSM member down");
        }
        true
    }

    /// Let the current generation go without logging (the pool is being dropped).
    pub(crate) fn retire_for_shutdown(&self) {
        lock(&self.live).take();
    }

    /// Start a new generation through the backend (calibrating it if no capacity figure
    /// is known yet). Blocks as long as the HSM does.
    pub(crate) fn bring_up(
        &self,
        group: &GroupSettings,
        expected: Option<&ExpectedKey>,
    ) -> Result<Arc<dyn Generation>, SignerError> {
        let calibrate = lock(&self.capacity).needs_calibration();
        let started = self.backend.start(&StartCtx {
            group,
            expected,
            calibrate,
            abandoned: &self.abandoned,
            meter: &self.meter,
        })?;
        if let Some(rate) = started.calibrated {
            lock(&self.capacity).calibrated(rate);
        }
        metrics::gauge!(m::CAPACITY, self.labels.clone()).set(self.capacity());
        Ok(started.generation)
    }

    /// Its operations and errors since start: its own, and those of the members of its
    /// name a reload replaced.
    pub(crate) fn totals_since_start(&self) -> (u64, u64) {
        let (ops, errors) = self.meter.totals();
        let [before_ops, before_errors, _] = self.series.retired_counts();
        (ops + before_ops, errors + before_errors)
    }

    /// A thread of this member that was given up on has returned.
    pub(crate) fn abandoned_thread_returned(&self) {
        let before = self.abandoned.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(
            before > 0,
            "an abandoned thread was counted before it returned"
        );
        metrics::gauge!(m::ABANDONED, self.labels.clone()).set(before.saturating_sub(1) as f64);
    }

    /// Refuse the member for good (wrong PIN, another key), from `from`.
    pub(crate) fn refuse(&self, from: MemberState, e: &SignerError) {
        tracing::error!(member = %self.name(), error = %e, "HSM member refused: it will not be used");
        self.set_cause(e.to_string());
        let wrong_pin = matches!(
            e.rv(),
            Some(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange)
        ) || matches!(e, SignerError::Pin { .. });
        self.refused_for_its_pin.store(wrong_pin, Ordering::Release);
        self.transition(from, MemberState::Refused);
    }

    /// A reload kept this member: if it was refused for anything but its PIN (another
    /// key on the HSM, a locked or expired PIN that an officer may have reset), put it
    /// back to `Down` so that the supervisor tries it again at once. Returns whether it
    /// did.
    pub(crate) fn retry_refused(&self) -> bool {
        if self.state() != MemberState::Refused || self.refused_for_its_pin.load(Ordering::Acquire)
        {
            return false;
        }
        {
            let mut r = lock(&self.recovery);
            r.next_attempt = Instant::now();
            r.backoff = FIRST_BACKOFF;
            r.out_since = Some(Instant::now());
        }
        if !self.transition(MemberState::Refused, MemberState::Down) {
            return false;
        }
        tracing::info!(member = %self.name(), "HSM member refused before: trying it again (reload)");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::fake::{Fake, TestGroup};

    fn recovery() -> Recovery {
        Recovery {
            next_attempt: Instant::now(),
            backoff: FIRST_BACKOFF,
            attempt: 0,
            attempt_started: None,
            out_since: None,
        }
    }

    #[test]
    fn the_current_attempt_is_claimed_once() {
        let mut r = recovery();
        let n = r.begin();
        assert_eq!(r.claim(n), Claim::Current);
        // Claimed: the supervisor can no longer give it up, and it is not claimed twice.
        assert!(!r.give_up_if_older(Duration::ZERO));
        assert_eq!(r.claim(n), Claim::GivenUp);
    }

    #[test]
    fn a_given_up_attempt_is_not_claimed_and_backs_off() {
        let mut r = recovery();
        let n = r.begin();
        assert!(!r.give_up_if_older(Duration::from_secs(60)), "not old yet");
        std::thread::sleep(Duration::from_millis(2));
        assert!(r.give_up_if_older(Duration::from_millis(1)));
        assert_eq!(r.claim(n), Claim::GivenUp);
        assert_eq!(r.backoff, FIRST_BACKOFF * 2);
        assert!(r.next_attempt > Instant::now());
        // A later attempt is its own.
        let m = r.begin();
        assert_ne!(m, n);
        assert_eq!(r.claim(m), Claim::Current);
    }

    #[test]
    fn of_many_concurrent_failures_one_takes_the_member_out() {
        let a = Fake::new("a");
        let g = TestGroup::primaries(&[&a]);
        let member = Arc::clone(&g.group.members[0]);
        let took: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let member = &member;
                    s.spawn(move || member.take_out(i % 2 == 0, "device error"))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().expect("no panic")))
                .sum()
        });
        assert_eq!(took, 1);
        assert!(matches!(
            member.state(),
            MemberState::Down | MemberState::Fenced
        ));
        assert!(
            member.live().is_none(),
            "out of rotation means no generation"
        );
    }

    #[test]
    fn install_is_refused_once_the_state_moved_on() {
        let a = Fake::new("a");
        let g = TestGroup::primaries(&[&a]);
        let member = &g.group.members[0];
        let spare = member.live().expect("up");
        // Up already: a second install (say, a late start-up result) is handed back.
        assert!(
            member
                .install(MemberState::Down, Arc::clone(&spare))
                .is_err()
        );
        assert!(member.take_out(false, "device error"));
        // Not taken out twice, and a recovery that was not claimed cannot install.
        assert!(!member.take_out(true, "hung"));
        assert!(member.install(MemberState::Recovering, spare).is_err());
        assert_eq!(member.state(), MemberState::Down);
        assert!(member.live().is_none());
    }

    /// Gauges by name, for a test's thread-local recorder.
    #[derive(Default)]
    struct Gauges(Mutex<Vec<(String, Arc<std::sync::atomic::AtomicU64>)>>);

    impl Gauges {
        fn value(&self, name: &str) -> Option<f64> {
            let g = lock(&self.0);
            let (_, v) = g.iter().find(|(n, _)| n == name)?;
            Some(f64::from_bits(v.load(Ordering::Acquire)))
        }
    }

    impl metrics::Recorder for Gauges {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            let mut g = lock(&self.0);
            let name = key.name().to_string();
            let cell = match g.iter().find(|(n, _)| *n == name) {
                Some((_, v)) => Arc::clone(v),
                None => {
                    let v = Arc::new(std::sync::atomic::AtomicU64::new(0));
                    g.push((name, Arc::clone(&v)));
                    v
                }
            };
            metrics::Gauge::from_arc(cell)
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// Two state changes whose gauge writes land in the other order (the first
    /// changer's thread was descheduled between its swap and its write) leave the gauge
    /// showing the state the member is in, not the first changer's.
    #[test]
    fn a_late_gauge_write_shows_the_state_as_it_is_now() {
        let a = Fake::new("a");
        let g = TestGroup::primaries(&[&a]);
        let member = &g.group.members[0];
        let gauges = Gauges::default();
        metrics::with_local_recorder(&gauges, || {
            assert!(member.take_out(false, "device error"));
            assert_eq!(gauges.value(m::STATE), Some(2.0), "down is 2");
            // A recovery attempt starts: its swap is done, its gauge write is late.
            assert!(
                member
                    .state
                    .transition(MemberState::Down, MemberState::Recovering)
                    .is_ok()
            );
            // The attempt fails at once, on another thread, which publishes first.
            assert!(member.transition(MemberState::Recovering, MemberState::Down));
            // Now the late write.
            member.publish_state();
            assert_eq!(member.state(), MemberState::Down);
            assert_eq!(
                gauges.value(m::STATE),
                Some(2.0),
                "the gauge shows the state now"
            );
        });
    }

    /// A member taken out of rotation has its reason recorded by the time any reader
    /// can see it out.
    #[test]
    fn a_member_seen_out_of_rotation_has_its_reason() {
        let a = Fake::new("a");
        let g = TestGroup::primaries(&[&a]);
        let member = Arc::clone(&g.group.members[0]);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                loop {
                    if member.state() != MemberState::Up {
                        return member.last_error();
                    }
                    std::hint::spin_loop();
                }
            });
            assert!(member.take_out(false, "CKR_DEVICE_ERROR"));
            assert_eq!(watcher.join().expect("no panic"), "CKR_DEVICE_ERROR");
        });
    }
}
