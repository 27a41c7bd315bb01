//! Supervision: the supervisor thread of a group. Every tick it updates the capacity
//! admission follows, fences up members with a call hung past the op timeout, probes
//! up members now and then, and runs recovery attempts for the others: each on a thread
//! of its own, given up (and its thread counted as abandoned) when it hangs past the
//! recovery timeout, with a growing back-off between attempts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::failover::hung_reason;
use super::{Group, MAX_BACKOFF};
use crate::member::{Claim, Member, MemberState};
use crate::metrics as m;

/// How often the supervisor looks at the members.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// The supervisor loop: ends when the group is dropped or shut down.
pub(super) fn supervise(group: &Weak<Group>) {
    loop {
        std::thread::sleep(TICK);
        // Counted while it holds the group: the last reference may be this one, and its
        // drop closes sessions and finalises the module (before the process may exit).
        let busy = crate::worker::Busy::enter();
        let Some(group) = group.upgrade() else { return };
        if group.stop.load(Ordering::Acquire) {
            return;
        }
        group.tick();
        drop(group);
        drop(busy);
    }
}

impl Group {
    /// One round of supervision.
    pub(super) fn tick(self: &Arc<Self>) {
        // Admission follows the members that serve now (a death takes its share at once).
        self.update_capacity();
        let (capacity, sessions) = self.serving_capacity();
        self.limiter.set_capacity(capacity, sessions);
        self.limiter.flush_shed_log();
        let probe_due = {
            let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= self.settings.probe_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        for (i, member) in self.members.iter().enumerate() {
            match member.state() {
                MemberState::Up => {
                    if let Some(live) = member.live() {
                        let hung = live.longest_call();
                        if let Some(t) = hung.filter(|t| *t >= self.settings.op_timeout) {
                            member.take_out(true, &hung_reason(t));
                        } else if probe_due && idle_since_last_round(member) {
                            spawn_probe(self, i);
                        }
                    }
                }
                MemberState::Down | MemberState::Fenced => maybe_recover(self, i),
                MemberState::Recovering => self.give_up_if_hung(member),
                MemberState::Refused => {}
            }
        }
    }

    /// A recovery attempt that hangs in the module past the recovery timeout is given
    /// up: its thread is counted as abandoned and its result, if it ever comes, is
    /// discarded (see [`crate::member::Recovery`]).
    fn give_up_if_hung(&self, member: &Member) {
        let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if !r.give_up_if_older(self.settings.recovery_timeout) {
            return;
        }
        // Under the recovery lock: the thread cannot see that it was given up before
        // it has been counted.
        member.abandoned.fetch_add(1, Ordering::AcqRel);
        member.recovery_failed(&format!(
            "attempt hung for {:?}",
            self.settings.recovery_timeout
        ));
        member.transition(MemberState::Recovering, MemberState::Down);
    }

    /// Once a window: each member's rate, utilisation and capacity estimate (metrics).
    fn update_capacity(&self) {
        let now = Instant::now();
        for member in &self.members {
            let mut cap = member.capacity.lock().unwrap_or_else(|e| e.into_inner());
            if cap.update(&member.meter, member.threads(), now) {
                let (rate, util) = cap.observed();
                metrics::gauge!(m::CAPACITY, member.labels.clone()).set(cap.current());
                metrics::gauge!(m::RATE, member.labels.clone()).set(rate);
                metrics::gauge!(m::UTILISATION, member.labels.clone()).set(util);
            }
        }
    }
}

/// Start a recovery attempt for a down or fenced member when its back-off has passed
/// and not too many of its threads are stuck.
fn maybe_recover(group: &Arc<Group>, i: usize) {
    let member = Arc::clone(&group.members[i]);
    let attempt = {
        let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() < r.next_attempt {
            return;
        }
        let abandoned = member.abandoned.load(Ordering::Acquire);
        if abandoned >= group.settings.max_abandoned {
            // Too many threads stuck in this member's module: wait for them to return.
            r.next_attempt = Instant::now() + MAX_BACKOFF;
            tracing::debug!(member = %member.name(), abandoned, "recovery postponed: too many abandoned threads");
            return;
        }
        let from = member.state();
        if !matches!(from, MemberState::Down | MemberState::Fenced)
            || !member.transition(from, MemberState::Recovering)
        {
            return;
        }
        r.begin()
    };
    let thread_member = Arc::clone(&member);
    let group = Arc::clone(group);
    // Counted from before the thread holds anything (moved in, dropped last).
    let busy = crate::worker::Busy::enter();
    let spawned = std::thread::Builder::new()
        .name(format!("hsm-recover-{}", member.name()))
        .spawn(move || {
            recover(&group, &thread_member, attempt);
            drop((group, thread_member));
            drop(busy);
        });
    if spawned.is_err() {
        let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if r.claim(attempt) == Claim::Current {
            r.retry_later();
            member.transition(MemberState::Recovering, MemberState::Down);
        }
    }
}

/// One recovery attempt, on its own thread.
fn recover(group: &Group, member: &Member, attempt: u64) {
    let result = member.bring_up(&group.settings, Some(&group.expected));
    let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
    if r.claim(attempt) == Claim::GivenUp {
        // Given up as hung meanwhile, and counted as abandoned then: discard.
        drop(r);
        drop(result);
        member.abandoned_thread_returned();
        return;
    }
    // Claimed: this thread alone ends the `Recovering` state.
    match result {
        Ok(live) => {
            drop(r);
            if member.install(MemberState::Recovering, live).is_err() {
                unreachable!("a claimed attempt owns the Recovering state");
            }
        }
        Err(e) if e.is_permanent() => {
            drop(r);
            member.refuse(MemberState::Recovering, &e);
        }
        Err(e) => {
            r.retry_later();
            drop(r);
            let text = e.to_string();
            if member.recovery_failed(&text) {
                tracing::warn!(member = %member.name(), error = %text, "HSM member recovery failed; retrying");
            } else {
                tracing::debug!(member = %member.name(), error = %text, "HSM member recovery failed");
            }
            member.transition(MemberState::Recovering, MemberState::Down);
        }
    }
}

/// One test signature through an up member's queue; a device error takes it out (a
/// hang is caught by the supervisor's busy check).
/// Whether `member` made no signature since the last probe round (then it is probed;
/// one that signed shows its health through its traffic).
fn idle_since_last_round(member: &Member) -> bool {
    let ops = member.meter.operations();
    member.probe_mark.swap(ops, Ordering::AcqRel) == ops
}

fn spawn_probe(group: &Arc<Group>, i: usize) {
    let group = Arc::clone(group);
    let busy = crate::worker::Busy::enter();
    let _ = std::thread::Builder::new()
        .name("hsm-probe".into())
        .spawn(move || {
            let _busy = busy;
            let group = group;
            let member = &group.members[i];
            let Some(live) = member.live() else { return };
            let Some(&scheme) = live.schemes().first() else {
                return;
            };
            let deadline = Instant::now() + group.settings.op_timeout;
            // A full queue means it is busy signing: healthy enough.
            let Ok(answer) = live.submit_probe(scheme, deadline) else {
                return;
            };
            let answered = answer.recv_deadline(deadline);
            // The probe's own answer is not traffic: the next round may probe again.
            member
                .probe_mark
                .store(member.meter.operations(), Ordering::Release);
            if let Ok(Err(e)) = answered
                && e.is_device_error()
                && !matches!(e, crate::error::SignerError::MemberLost { .. })
            {
                member.take_out(false, &format!("health probe: {e}"));
            }
        });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use cryptoki::error::RvError;
    use rustls::SignatureScheme;

    use crate::backend::fake::{Behaviour, Fake, TestGroup};
    use crate::member::MemberState;

    const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

    /// Tick until `done` or 2 s.
    fn tick_until(g: &TestGroup, done: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            g.group.tick();
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_call_hung_past_the_op_timeout_is_fenced() {
        let a = Fake::new("a").signing(Behaviour::Hang);
        let g = TestGroup::build(&[&a], &[true], |s| {
            s.op_timeout = Duration::from_millis(20);
            s.sign_timeout = Duration::from_millis(20);
        });
        let _ = g.group.sign(SCHEME, b"m");
        std::thread::sleep(Duration::from_millis(5));
        g.group.tick();
        assert_eq!(g.state(0), MemberState::Fenced);
        assert_eq!(g.abandoned(0), 1);
        assert!(g.group.members[0].last_error().contains("has not returned"));
        a.release();
        assert_eq!(g.abandoned(0), 0);
    }

    #[test]
    fn a_lost_member_recovers_back_into_rotation() {
        let a = Fake::new("a").signing(Behaviour::Fail(RvError::DeviceError));
        let b = Fake::new("b");
        let g = TestGroup::primaries(&[&a, &b]);
        assert_eq!(g.group.sign(SCHEME, b"m").expect("b"), b"b");
        assert_eq!(g.state(0), MemberState::Down);
        let cause = g.group.members[0].last_error();
        assert!(cause.contains("CKR_DEVICE_ERROR"), "{cause}");
        // Still broken: recovery attempts fail and it stays out, its first cause still
        // shown before the recovery's error.
        a.set_start(Err(RvError::TokenNotPresent));
        assert!(tick_until(&g, || a.starts() >= 2));
        assert_ne!(g.state(0), MemberState::Up);
        let shown = g.group.members[0].last_error();
        assert!(
            shown.starts_with(&cause)
                && shown.contains("; recovery: ")
                && shown.contains("CKR_TOKEN_NOT_PRESENT"),
            "{shown}"
        );
        // Repaired: the next attempt puts it back, and it signs again.
        a.set_start(Ok(()));
        a.set_signing(Behaviour::Sign);
        assert!(tick_until(&g, || g.state(0) == MemberState::Up));
        assert_eq!(g.group.sign(SCHEME, b"m").expect("a again"), b"a");
        assert!(
            g.group.members[0]
                .recovery
                .lock()
                .expect("lock")
                .out_since
                .is_none()
        );
    }

    #[test]
    fn a_probe_finds_a_broken_member() {
        let a = Fake::new("a");
        let g = TestGroup::build(&[&a], &[true], |s| s.probe_interval = Duration::ZERO);
        a.set_signing(Behaviour::Fail(RvError::DeviceRemoved));
        assert!(tick_until(&g, || g.state(0) != MemberState::Up));
        assert!(a.calls() >= 1);
    }

    #[test]
    fn a_hung_recovery_is_given_up_and_its_late_return_counted_once() {
        let a = Fake::new("a").signing(Behaviour::Fail(RvError::DeviceError));
        let g = TestGroup::build(&[&a], &[true], |s| {
            s.recovery_timeout = Duration::from_millis(100);
        });
        let _ = g.group.sign(SCHEME, b"m");
        assert_eq!(g.state(0), MemberState::Down);
        a.set_start_hangs(true);
        // The attempt starts, hangs, and is given up: its thread is abandoned.
        assert!(tick_until(&g, || g.abandoned(0) == 1));
        // A late device error finds it out already and changes nothing.
        assert!(!g.group.members[0].take_out(false, "late device error"));
        // The hung attempt returns (with a working generation): it is discarded, and
        // the abandoned count goes back to zero without wrapping.
        a.set_signing(Behaviour::Sign);
        a.set_start_hangs(false);
        assert!(tick_until(&g, || g.abandoned(0) == 0));
        assert!(g.abandoned(0) < 1_000, "no wrap: {}", g.abandoned(0));
        // A later, normal attempt brings it back.
        assert!(tick_until(&g, || g.state(0) == MemberState::Up && g.abandoned(0) == 0));
    }

    #[test]
    fn a_wrong_pin_during_recovery_refuses_the_member_for_good() {
        let a = Fake::new("a").signing(Behaviour::Fail(RvError::DeviceError));
        let b = Fake::new("b");
        let g = TestGroup::primaries(&[&a, &b]);
        let _ = g.group.sign(SCHEME, b"m");
        a.set_start(Err(RvError::PinIncorrect));
        assert!(tick_until(&g, || g.state(0) == MemberState::Refused));
        let starts = a.starts();
        std::thread::sleep(Duration::from_millis(150));
        g.group.tick();
        assert_eq!(a.starts(), starts, "no attempt after a refusal");
        assert!(
            g.group.members[0]
                .last_error()
                .contains("CKR_PIN_INCORRECT")
        );
    }

    #[test]
    fn a_reload_tries_a_member_refused_for_its_key_again_but_not_a_wrong_pin() {
        let a = Fake::new("a");
        let b = Fake::new("b").with_other_key();
        let c = Fake::new("c");
        let g = TestGroup::primaries(&[&a, &b, &c]);
        assert_eq!(g.state(1), MemberState::Refused);
        assert!(g.group.members[2].take_out(false, "CKR_DEVICE_ERROR"));
        c.set_start(Err(RvError::PinIncorrect));
        assert!(tick_until(&g, || g.state(2) == MemberState::Refused));
        // Ticks alone try neither again.
        let (b_starts, c_starts) = (b.starts(), c.starts());
        std::thread::sleep(Duration::from_millis(150));
        g.group.tick();
        assert_eq!((b.starts(), c.starts()), (b_starts, c_starts));
        // The HSM's key is put right and the configuration reloaded: b comes back; c,
        // refused for the same PIN, is left alone.
        b.set_default_key();
        c.set_start(Ok(()));
        assert!(g.group.members[1].retry_refused());
        assert!(!g.group.members[2].retry_refused());
        assert!(tick_until(&g, || g.state(1) == MemberState::Up));
        assert_eq!(g.state(2), MemberState::Refused);
        assert_eq!(c.starts(), c_starts);
        // Up already: nothing to try again.
        assert!(!g.group.members[1].retry_refused());
    }
}
