//! An HA group: members in a primary and a standby region, the choice of a member for
//! each signature, failover with retry within the signature's deadline, and the
//! supervisor thread that fences hung members, probes healthy ones and brings lost
//! ones back without a restart.
//!
//! ```text
//! sign() ─pick─▶ least loaded primary member (in-flight ÷ capacity) ─queue─▶ its threads
//!    │ device error: member down, retry elsewhere │ no answer by the op deadline:
//!    │                                           │ fence if a call hangs, retry elsewhere
//!    └─ standby region only when no primary member is up (or, if configured, all are full)
//! supervisor (50 ms tick): fence hung calls · probe up members · recover down/fenced ones
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TrySendError};
use rustls::SignatureScheme;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::admission::Limiter;
use crate::error::SignerError;
use crate::member::{Live, Member, MemberState, retire};
use crate::metrics as m;
use crate::pool::{ExpectedKey, GroupSettings};
use crate::token::KeyKind;
use crate::worker::Request;

const TICK: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A running group.
pub(crate) struct Group {
    pub(crate) settings: GroupSettings,
    pub(crate) members: Vec<Arc<Member>>,
    pub(crate) expected: ExpectedKey,
    pub(crate) schemes: Vec<SignatureScheme>,
    pub(crate) kind: KeyKind,
    pub(crate) key_name: String,
    pub(crate) token_label: String,
    stop: AtomicBool,
    last_probe: Mutex<Instant>,
    /// Admission control of the full handshakes this group signs.
    pub(crate) limiter: Arc<Limiter>,
}

impl Group {
    /// Bring every member up (in parallel, bounded in time), then start the supervisor.
    pub(crate) fn start(settings: GroupSettings) -> Result<Arc<Group>, SignerError> {
        let members: Vec<Arc<Member>> = settings
            .members
            .iter()
            .map(|m| Arc::new(Member::new(m.clone(), m.primary)))
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, member) in members.iter().enumerate() {
            let (member, settings, tx) = (Arc::clone(member), settings.clone(), tx.clone());
            let expected = settings.expected.clone();
            std::thread::Builder::new()
                .name(format!("hsm-start-{}", member.name()))
                .spawn(move || {
                    let result = member.bring_up(&settings, expected.as_ref());
                    if let Err(crossbeam_channel::SendError((_, late))) = tx.send((i, result)) {
                        // Start-up gave up on this member: it was counted as abandoned.
                        if let Ok(live) = late {
                            retire(live);
                        }
                        member.abandoned.fetch_sub(1, Ordering::AcqRel);
                    }
                })
                .map_err(SignerError::Thread)?;
        }
        drop(tx);
        let startup_deadline = Instant::now() + settings.recovery_timeout;
        let mut results: Vec<Option<Result<Arc<Live>, SignerError>>> =
            (0..members.len()).map(|_| None).collect();
        let mut pending = members.len();
        while pending > 0 {
            match rx.recv_deadline(startup_deadline) {
                Ok((i, r)) => {
                    results[i] = Some(r);
                    pending -= 1;
                }
                Err(_) => break,
            }
        }
        drop(rx);
        let mut expected = settings.expected.clone();
        let mut reference: Option<(KeyKind, String, String, Vec<SignatureScheme>)> = None;
        let mut errors = Vec::new();
        for (member, result) in members.iter().zip(results) {
            match result {
                None => {
                    member.abandoned.fetch_add(1, Ordering::AcqRel);
                    let reason = format!("did not come up within {:?}", settings.recovery_timeout);
                    tracing::warn!(member = %member.name(), %reason, "HSM member down at start");
                    *member.last_error.lock().unwrap_or_else(|e| e.into_inner()) = reason.clone();
                    errors.push(SignerError::NoHealthyMember {
                        group: settings.name.clone(),
                        detail: format!("{}: {reason}", member.name()),
                    });
                }
                Some(Ok(live)) => {
                    // Without a certificate to compare with, the first member's key is the reference.
                    let exp = expected.get_or_insert_with(|| ExpectedKey {
                        spki: live.key.spki.clone(),
                        from: format!("the key of member {}", member.name()),
                    });
                    if !crate::verify::same_public_key(&exp.spki, &live.key.spki) {
                        let e = SignerError::KeyDiffers(Box::new(crate::error::KeyDiffers {
                            member: member.name().to_string(),
                            token: live.shared.token.clone(),
                            key: live.key.name.clone(),
                            expected_from: exp.from.clone(),
                            found: crate::verify::describe_key(&live.key.spki),
                            expected: crate::verify::describe_key(&exp.spki),
                        }));
                        refuse(member, &e);
                        retire(live);
                        errors.push(e);
                        continue;
                    }
                    if reference.is_none() {
                        let schemes = live.ops.iter().map(|(s, _)| *s).collect();
                        reference = Some((
                            live.key.kind,
                            live.key.name.clone(),
                            live.shared.token.clone(),
                            schemes,
                        ));
                    }
                    member.install(live);
                }
                Some(Err(e)) => {
                    if e.is_permanent() {
                        refuse(member, &e);
                    } else {
                        tracing::warn!(member = %member.name(), error = %e, "HSM member down at start");
                        *member.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            e.to_string();
                    }
                    errors.push(e);
                }
            }
        }
        let Some((kind, key_name, token_label, schemes)) = reference else {
            // Nothing came up: with one member its own error says it best.
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                SignerError::NoHealthyMember {
                    group: settings.name.clone(),
                    detail: errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            });
        };
        let limiter = Arc::new(Limiter::new(
            &settings.name,
            settings.admission.clone(),
            0.0,
            1,
        ));
        let group = Arc::new(Group {
            limiter,
            expected: expected.expect("set by the first member up"),
            settings,
            members,
            schemes,
            kind,
            key_name,
            token_label,
            stop: AtomicBool::new(false),
            last_probe: Mutex::new(Instant::now()),
        });
        let (capacity, sessions) = group.serving_capacity();
        group.limiter.set_capacity(capacity, sessions);
        let weak = Arc::downgrade(&group);
        std::thread::Builder::new()
            .name(format!("hsm-supervisor-{}", group.settings.name))
            .spawn(move || supervise(&weak))
            .map_err(SignerError::Thread)?;
        Ok(group)
    }

    /// Sign with failover: retries on other members within the signature's deadline.
    pub(crate) fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        if !self.schemes.contains(&scheme) {
            return Err(SignerError::UnsupportedScheme {
                token: self.token_label.clone(),
                scheme: format!("{scheme:?}"),
            });
        }
        let start = Instant::now();
        let deadline = start + self.settings.sign_timeout;
        let message: Arc<[u8]> = message.into();
        let mut tried = vec![false; self.members.len()];
        let mut saturated = false;
        let mut last_error: Option<SignerError> = None;
        while let Some((i, live, op)) = self.pick(scheme, &tried, saturated) {
            tried[i] = true;
            let member = &self.members[i];
            let now = Instant::now();
            let op_deadline = (now + self.settings.op_timeout).min(deadline);
            let (reply, answer) = crate::handoff::oneshot();
            live.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let request = Request {
                op,
                message: Arc::clone(&message),
                enqueued: now,
                deadline: op_deadline,
                reply,
            };
            match live.queue.try_send(request) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    live.shared.done("overloaded".into());
                    saturated = true;
                    continue;
                }
                Err(TrySendError::Disconnected(_)) => {
                    live.shared.done("closed".into());
                    continue;
                }
            }
            match off_runtime(|| answer.recv_deadline(op_deadline)) {
                Ok(Ok(signature)) => {
                    self.limiter.observe(start.elapsed());
                    return Ok(signature);
                }
                Ok(Err(e)) if e.is_device_error() => {
                    if !matches!(e, SignerError::MemberLost { .. }) {
                        member.take_out(false, &e.to_string());
                    }
                    metrics::counter!(m::RETRIES, "member" => member.name().to_string(), "reason" => "device").increment(1);
                    last_error = Some(e);
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    let hung = live
                        .slots
                        .iter()
                        .filter_map(|s| s.busy_for())
                        .max()
                        .filter(|t| *t >= self.settings.op_timeout);
                    if let Some(t) = hung {
                        member.take_out(
                            true,
                            &format!("a C_Sign call has not returned for {} ms", t.as_millis()),
                        );
                    }
                    last_error = Some(SignerError::Timeout {
                        token: live.shared.token.clone(),
                        after: now.elapsed().max(Duration::from_millis(1)),
                    });
                    if Instant::now() >= deadline {
                        break;
                    }
                    metrics::counter!(m::RETRIES, "member" => member.name().to_string(), "reason" => "timeout").increment(1);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    last_error = Some(SignerError::MemberLost {
                        member: member.name().to_string(),
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(SignerError::Timeout {
                token: last_error
                    .as_ref()
                    .and_then(|e| match e {
                        SignerError::Timeout { token, .. } => Some(token.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| self.settings.name.clone()),
                after: self.settings.sign_timeout,
            });
        }
        if saturated {
            return Err(SignerError::Overloaded {
                token: self.settings.name.clone(),
                capacity: self.settings.queue_depth,
            });
        }
        // Every member was tried and at least one was merely slow: say so, not "unhealthy".
        if let Some(e @ SignerError::Timeout { .. }) = last_error {
            return Err(e);
        }
        Err(SignerError::NoHealthyMember {
            group: self.settings.name.clone(),
            detail: self.describe_members(),
        })
    }

    /// The least loaded up member not tried yet: primary region first; the standby
    /// region only when no primary member is up, or (if configured) all were full.
    fn pick(
        &self,
        scheme: SignatureScheme,
        tried: &[bool],
        saturated: bool,
    ) -> Option<(usize, Arc<Live>, crate::scheme::SignOp)> {
        let primary_up = self
            .members
            .iter()
            .any(|m| m.primary && m.state() == MemberState::Up);
        let standby_ok = !primary_up || (self.settings.standby_when_saturated && saturated);
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| !tried[*i] && (m.primary || standby_ok))
            .filter_map(|(i, m)| {
                let live = m.live()?;
                let op = live.op(scheme)?;
                let load = (live.shared.in_flight.load(Ordering::Relaxed) as f64 + 1.0)
                    / m.capacity().max(1.0);
                Some((i, live, op, !m.primary, load))
            })
            .min_by(|a, b| {
                (a.3, a.4)
                    .partial_cmp(&(b.3, b.4))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, live, op, _, _)| (i, live, op))
    }

    /// "hsm-a up, hsm-b down (CKR_DEVICE_ERROR…)", for errors and `/readyz`.
    pub(crate) fn describe_members(&self) -> String {
        self.members
            .iter()
            .map(|m| match m.state() {
                MemberState::Up => format!("{} up", m.name()),
                s => format!("{} {} ({})", m.name(), s.as_str(), m.last_error()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Which members count toward the group's capacity now: up, and primary — or
    /// standby while no primary member is up (or when the standby takes overflow).
    pub(crate) fn serving(&self) -> Vec<bool> {
        let primary_up = self
            .members
            .iter()
            .any(|m| m.primary && m.state() == MemberState::Up);
        self.members
            .iter()
            .map(|m| {
                m.state() == MemberState::Up
                    && (m.primary || !primary_up || self.settings.standby_when_saturated)
            })
            .collect()
    }

    /// Signatures/s the serving members can make, and how many sessions they have.
    pub(crate) fn serving_capacity(&self) -> (f64, usize) {
        self.members
            .iter()
            .zip(self.serving())
            .filter(|(_, serving)| *serving)
            .fold((0.0, 0), |(c, s), (m, _)| {
                (c + m.capacity(), s + m.threads())
            })
    }

    /// Once a window: each member's rate, utilisation and capacity estimate (metrics).
    fn update_capacity(&self) {
        let now = Instant::now();
        for member in &self.members {
            let mut cap = member.capacity.lock().unwrap_or_else(|e| e.into_inner());
            if cap.update(&member.meter, member.threads(), now) {
                let (rate, util) = cap.observed();
                let name = member.name().to_string();
                metrics::gauge!(m::CAPACITY, "member" => name.clone()).set(cap.current());
                metrics::gauge!(m::RATE, "member" => name.clone()).set(rate);
                metrics::gauge!(m::UTILISATION, "member" => name).set(util);
            }
        }
    }

    /// At least one member can sign.
    pub(crate) fn ready(&self) -> bool {
        self.members.iter().any(|m| m.state() == MemberState::Up)
    }

    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shutdown();
        // Close every member's queue: idle threads end, close their sessions and
        // release their module instances (see `wait_for_workers`).
        for member in &self.members {
            member.retire_for_shutdown();
        }
    }
}

fn refuse(member: &Member, e: &SignerError) {
    tracing::error!(member = %member.name(), error = %e, "HSM member refused: it will not be used");
    *member.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
    member.set_state(MemberState::Refused);
}

/// Run a blocking wait without stalling a tokio worker thread.
pub(crate) fn off_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// The supervisor: every tick, fence members with a hung call, probe healthy members
/// now and then, and start (bounded, timed) recovery attempts for the others.
fn supervise(group: &Weak<Group>) {
    loop {
        std::thread::sleep(TICK);
        let Some(group) = group.upgrade() else { return };
        if group.stop.load(Ordering::Acquire) {
            return;
        }
        // Admission follows the members that serve now (a death takes its share at once).
        group.update_capacity();
        let (capacity, sessions) = group.serving_capacity();
        group.limiter.set_capacity(capacity, sessions);
        let probe_due = {
            let mut last = group.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= group.settings.probe_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        for (i, member) in group.members.iter().enumerate() {
            match member.state() {
                MemberState::Up => {
                    if let Some(live) = member.live() {
                        let hung = live.slots.iter().filter_map(|s| s.busy_for()).max();
                        if let Some(t) = hung.filter(|t| *t >= group.settings.op_timeout) {
                            member.take_out(
                                true,
                                &format!("a C_Sign call has not returned for {} ms", t.as_millis()),
                            );
                        } else if probe_due {
                            spawn_probe(&group, i);
                        }
                    }
                }
                MemberState::Down | MemberState::Fenced => maybe_recover(&group, i),
                MemberState::Recovering => {
                    let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
                    if r.attempt_started
                        .is_some_and(|t| t.elapsed() > group.settings.recovery_timeout)
                    {
                        // The attempt hangs in the module: abandon it; its result, if it
                        // ever comes, is discarded.
                        r.attempt += 1;
                        r.attempt_started = None;
                        r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
                        r.next_attempt = Instant::now() + r.backoff;
                        drop(r);
                        member.abandoned.fetch_add(1, Ordering::AcqRel);
                        *member.last_error.lock().unwrap_or_else(|e| e.into_inner()) = format!(
                            "recovery attempt hung for {:?}",
                            group.settings.recovery_timeout
                        );
                        member.set_state(MemberState::Down);
                    }
                }
                MemberState::Refused => {}
            }
        }
    }
}

fn maybe_recover(group: &Arc<Group>, i: usize) {
    let member = Arc::clone(&group.members[i]);
    let abandoned = member.abandoned.load(Ordering::Acquire);
    let attempt = {
        let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() < r.next_attempt {
            return;
        }
        if abandoned >= group.settings.max_abandoned {
            // Too many threads stuck in this member's module: wait for them to return.
            r.next_attempt = Instant::now() + MAX_BACKOFF;
            tracing::debug!(member = %member.name(), abandoned, "recovery postponed: too many abandoned threads");
            return;
        }
        r.attempt += 1;
        r.attempt_started = Some(Instant::now());
        r.attempt
    };
    member.set_state(MemberState::Recovering);
    let fallback = Arc::clone(&member);
    let group = Arc::clone(group);
    let spawned = std::thread::Builder::new()
        .name(format!("hsm-recover-{}", member.name()))
        .spawn(move || {
            let result = member.bring_up(&group.settings, Some(&group.expected));
            let mut r = member.recovery.lock().unwrap_or_else(|e| e.into_inner());
            if r.attempt != attempt || member.state() != MemberState::Recovering {
                // Declared hung meanwhile: discard.
                drop(r);
                if let Ok(live) = result {
                    retire(live);
                }
                member.abandoned.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            match result {
                Ok(live) => {
                    drop(r);
                    member.install(live);
                }
                Err(e) if e.is_permanent() => {
                    drop(r);
                    refuse(&member, &e);
                }
                Err(e) => {
                    r.attempt_started = None;
                    r.next_attempt = Instant::now() + r.backoff;
                    r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
                    drop(r);
                    let text = e.to_string();
                    let mut last = member.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    if *last != text {
                        tracing::warn!(member = %member.name(), error = %text, "HSM member recovery failed; retrying");
                        *last = text;
                    } else {
                        tracing::debug!(member = %member.name(), error = %text, "HSM member recovery failed");
                    }
                    drop(last);
                    member.set_state(MemberState::Down);
                }
            }
        });
    if spawned.is_err() {
        fallback.set_state(MemberState::Down);
    }
}

/// One test signature through an up member's queue; a device error takes it out (a
/// hang is caught by the supervisor's busy check).
fn spawn_probe(group: &Arc<Group>, i: usize) {
    let group = Arc::clone(group);
    let _ = std::thread::Builder::new()
        .name("hsm-probe".into())
        .spawn(move || {
            let member = &group.members[i];
            let Some(live) = member.live() else { return };
            let Some(&(_, op)) = live.ops.first() else {
                return;
            };
            let (reply, answer) = crate::handoff::oneshot();
            let now = Instant::now();
            live.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let request = Request {
                op,
                message: Arc::from(&b"hsmgate health probe"[..]),
                enqueued: now,
                deadline: now + group.settings.op_timeout,
                reply,
            };
            if live.queue.try_send(request).is_err() {
                // A full queue means it is busy signing: healthy enough.
                live.shared.done("overloaded".into());
                return;
            }
            if let Ok(Err(e)) = answer.recv_deadline(now + group.settings.op_timeout)
                && e.is_device_error()
                && !matches!(e, SignerError::MemberLost { .. })
            {
                member.take_out(false, &format!("health probe: {e}"));
            }
        });
}
