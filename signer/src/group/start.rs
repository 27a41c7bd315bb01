//! Start-up: bring every member up in parallel, each on a thread of its own, and wait
//! for them at most the recovery timeout. A member still starting then is given up
//! (its thread counted as abandoned, its result discarded when it comes) and left to
//! the supervisor's recovery. The first member up gives the reference key when no
//! certificate does; a member with another key is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::Group;
use super::supervise::supervise;
use crate::admission::Limiter;
use crate::backend::{Backend, Generation};
use crate::error::{KeyDiffers, SignerError};
use crate::member::{Member, MemberState};
use crate::pkcs11::Pkcs11Backend;
use crate::pool::{ExpectedKey, GroupSettings};

/// Whether the group gets its supervisor thread (tests drive it by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Supervisor {
    Thread,
    #[cfg(test)]
    Manual,
}

impl Group {
    /// Bring every member up over PKCS#11 (in parallel, bounded in time), then start the
    /// supervisor.
    pub(crate) fn start(settings: GroupSettings) -> Result<Arc<Group>, SignerError> {
        let backends = settings
            .members
            .iter()
            .map(|m| Box::new(Pkcs11Backend::new(m.clone())) as Box<dyn Backend>)
            .collect();
        Group::start_with(settings, backends, Supervisor::Thread)
    }

    /// Bring the members up through the given backends (one per member, in order).
    pub(crate) fn start_with(
        settings: GroupSettings,
        backends: Vec<Box<dyn Backend>>,
        supervisor: Supervisor,
    ) -> Result<Arc<Group>, SignerError> {
        let members: Vec<Arc<Member>> = settings
            .members
            .iter()
            .zip(backends)
            .map(|(m, backend)| {
                let labels = crate::metrics::member_labels(&settings, &m.name);
                Arc::new(Member::new(m.clone(), labels, backend))
            })
            .collect();
        let results = bring_up_all(&settings, &members)?;
        let mut expected = settings.expected.clone();
        let mut reference: Option<Arc<dyn Generation>> = None;
        let mut errors = Vec::new();
        // With one member its error is the start-up error, which the caller reports
        // once, worded for a single token: no HA-group log line besides it.
        let single = members.len() == 1;
        for (member, result) in members.iter().zip(results) {
            match result {
                Err(SignerError::StartTimeout { after, .. }) if single => {
                    errors.push(SignerError::Timeout {
                        token: member.name().to_string(),
                        after,
                    });
                }
                Err(e @ SignerError::StartTimeout { .. }) => {
                    tracing::warn!(member = %member.name(), error = %e, "HSM member down at start");
                    member.set_cause(e.to_string());
                    errors.push(e);
                }
                Ok(live) => {
                    let key = live.key();
                    // Without a certificate to compare with, the first member's key is the reference.
                    let exp = expected.get_or_insert_with(|| ExpectedKey {
                        spki: key.spki.clone(),
                        from: format!("the key of member {}", member.name()),
                    });
                    if !crate::verify::same_public_key(&exp.spki, &key.spki) {
                        let e = SignerError::KeyDiffers(Box::new(KeyDiffers {
                            member: member.name().to_string(),
                            token: key.token.clone(),
                            key: key.name.clone(),
                            expected_from: exp.from.clone(),
                            found: crate::verify::describe_key(&key.spki),
                            expected: crate::verify::describe_key(&exp.spki),
                        }));
                        if !single {
                            member.refuse(MemberState::Down, &e);
                        }
                        errors.push(e);
                        continue;
                    }
                    reference.get_or_insert_with(|| Arc::clone(&live));
                    if member.install(MemberState::Down, live).is_err() {
                        unreachable!(
                            "nothing else changes a member's state before the supervisor starts"
                        );
                    }
                }
                Err(e) if single => errors.push(e),
                Err(e) => {
                    if e.is_permanent() {
                        member.refuse(MemberState::Down, &e);
                    } else {
                        tracing::warn!(member = %member.name(), error = %e, "HSM member down at start");
                        member.set_cause(e.to_string());
                    }
                    errors.push(e.in_member(member.name()));
                }
            }
        }
        let Some(reference) = reference else {
            // Nothing came up: with one member its own error says it best.
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                SignerError::NoMemberStarted {
                    group: settings.name.clone(),
                    members: errors,
                }
            });
        };
        let key = reference.key();
        let limiter = Arc::new(Limiter::new(
            &settings.name,
            &settings.key_label(),
            settings.admission,
            0.0,
            1,
        ));
        let group = Arc::new(Group {
            limiter,
            id: crate::offload::next_group_id(),
            expected: expected.expect("set by the first member up"),
            schemes: reference.schemes(),
            kind: key.kind,
            key_name: key.name.clone(),
            token_label: key.token.clone(),
            settings,
            members,
            stop: AtomicBool::new(false),
            last_probe: Mutex::new(Instant::now()),
        });
        let (capacity, sessions) = group.serving_capacity();
        group.limiter.set_capacity(capacity, sessions);
        if supervisor == Supervisor::Thread {
            let weak = Arc::downgrade(&group);
            std::thread::Builder::new()
                .name(format!("hsm-supervisor-{}", group.settings.name))
                .spawn(move || supervise(&weak))
                .map_err(SignerError::Thread)?;
        }
        Ok(group)
    }
}

type StartResult = Result<Arc<dyn Generation>, SignerError>;

/// One member's start-up, handed from its thread to the waiting group.
enum Handoff {
    Starting,
    Done(StartResult),
    /// The group stopped waiting; the thread was counted as abandoned.
    GivenUp,
}

/// The start-up threads' results, and the condition the group waits on.
struct Startup {
    slots: Mutex<Vec<Handoff>>,
    done: Condvar,
}

impl Startup {
    fn lock(&self) -> MutexGuard<'_, Vec<Handoff>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Start every member on its own thread and collect the results, giving up on the
/// members still starting after the recovery timeout (`StartTimeout`).
///
/// Each hand-off is decided under one lock: the group marks a member given up and
/// counts its thread as abandoned in the same critical section, and a late thread
/// finds the mark there and only then subtracts itself. So the count never goes below
/// zero, and a result that arrives in time is never counted as abandoned.
fn bring_up_all(
    settings: &GroupSettings,
    members: &[Arc<Member>],
) -> Result<Vec<StartResult>, SignerError> {
    let startup = Arc::new(Startup {
        slots: Mutex::new(members.iter().map(|_| Handoff::Starting).collect()),
        done: Condvar::new(),
    });
    for (i, member) in members.iter().enumerate() {
        let (member, settings, startup) =
            (Arc::clone(member), settings.clone(), Arc::clone(&startup));
        let busy = crate::worker::Busy::enter();
        let spawned = std::thread::Builder::new()
            .name(format!("hsm-start-{}", member.name()))
            .spawn(move || {
                let _busy = busy;
                let (member, settings, startup) = (member, settings, startup);
                let result = member.bring_up(&settings, settings.expected.as_ref());
                let mut slots = startup.lock();
                if matches!(slots[i], Handoff::GivenUp) {
                    drop(slots);
                    drop(result);
                    member.abandoned_thread_returned();
                    return;
                }
                slots[i] = Handoff::Done(result);
                startup.done.notify_all();
            });
        if let Err(e) = spawned {
            // Threads already started store their results when they return (their slots
            // are still `Starting`, so nothing is counted as abandoned), and the results
            // are dropped with the last reference to `startup`.
            return Err(SignerError::Thread(e));
        }
    }
    let deadline = Instant::now() + settings.recovery_timeout;
    let mut slots = startup.lock();
    loop {
        if !slots.iter().any(|s| matches!(s, Handoff::Starting)) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        slots = startup
            .done
            .wait_timeout(slots, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let results = slots
        .iter_mut()
        .zip(members)
        .map(
            |(slot, member)| match std::mem::replace(slot, Handoff::GivenUp) {
                Handoff::Done(result) => result,
                Handoff::Starting => {
                    member.abandoned.fetch_add(1, Ordering::AcqRel);
                    Err(SignerError::StartTimeout {
                        member: member.name().to_string(),
                        after: settings.recovery_timeout,
                    })
                }
                Handoff::GivenUp => unreachable!("only the group gives up"),
            },
        )
        .collect();
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use cryptoki::error::RvError;

    use crate::backend::fake::{Fake, TestGroup};
    use crate::error::SignerError;
    use crate::member::MemberState;

    #[test]
    fn members_that_fail_at_start_are_down_the_others_serve() {
        let a = Fake::new("a").starting(Err(RvError::DeviceError));
        let b = Fake::new("b");
        let g = TestGroup::primaries(&[&a, &b]);
        assert_eq!(g.state(0), MemberState::Down);
        assert_eq!(g.state(1), MemberState::Up);
        assert!(g.group.members[0].last_error().contains("CKR_DEVICE_ERROR"));
        assert_eq!(g.group.token_label, "tok-b");
    }

    #[test]
    fn a_start_that_hangs_is_given_up_and_its_late_return_counted_once() {
        let a = Fake::new("a");
        a.set_start_hangs(true);
        let b = Fake::new("b");
        let started = Instant::now();
        let g = TestGroup::build(&[&a, &b], &[true, true], |s| {
            s.recovery_timeout = Duration::from_millis(200);
        });
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(g.state(0), MemberState::Down);
        assert_eq!(g.abandoned(0), 1, "the hung start-up thread is counted");
        assert!(g.group.members[0].last_error().contains("did not come up"));
        a.set_start_hangs(false);
        let end = Instant::now() + Duration::from_secs(2);
        while g.abandoned(0) != 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(g.abandoned(0), 0, "returned once, no wrap");
        // Its late generation was discarded, not installed behind the group's back.
        assert_eq!(g.state(0), MemberState::Down);
    }

    #[test]
    fn a_member_with_another_key_is_refused() {
        let a = Fake::new("a");
        let b = Fake::new("b").with_other_key();
        let g = TestGroup::primaries(&[&a, &b]);
        assert_eq!(g.state(1), MemberState::Refused);
        assert!(g.group.members[1].last_error().contains("does not match"));
    }

    #[test]
    fn a_single_member_fails_with_its_own_error_in_token_wording() {
        let a = Fake::new("a").starting(Err(RvError::PinIncorrect));
        let Err(err) = TestGroup::try_build(&[&a], &[true], |_| {}) else {
            panic!("it should not come up");
        };
        let text = err.to_string();
        assert_eq!(err.rv(), Some(RvError::PinIncorrect));
        assert!(!text.contains("member"), "{text}");

        let hung = Fake::new("b");
        hung.set_start_hangs(true);
        let Err(err) = TestGroup::try_build(&[&hung], &[true], |s| {
            s.recovery_timeout = Duration::from_millis(20);
        }) else {
            panic!("it should not come up");
        };
        assert!(matches!(err, SignerError::Timeout { .. }), "{err}");
        hung.set_start_hangs(false);
    }

    #[test]
    fn nothing_up_names_every_member() {
        let a = Fake::new("a").starting(Err(RvError::DeviceError));
        let b = Fake::new("b").starting(Err(RvError::PinIncorrect));
        let Err(err) = TestGroup::try_build(&[&a, &b], &[true, true], |_| {}) else {
            panic!("no member should come up");
        };
        let text = err.to_string();
        assert!(matches!(err, SignerError::NoMemberStarted { .. }), "{text}");
        assert!(
            text.contains("HSM member a: token tok-a: C_Login failed: CKR_DEVICE_ERROR"),
            "{text}"
        );
        assert!(text.contains("CKR_PIN_INCORRECT"), "{text}");
    }
}
