//! One HSM member of a group: its module instance(s), sessions and signer threads
//! (together a *generation*), its health state, and how it is taken out of rotation
//! (down on a device error, fenced when a call hangs) and brought back.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::handoff::{Receiver, Sender};
use rustls::SignatureScheme;

use crate::capacity::{Capacity, Meter};
use crate::error::SignerError;
use crate::metrics as m;
use crate::module::Module;
use crate::pool::{ExpectedKey, GroupSettings, MemberSettings};
use crate::scheme::{self, SignOp};
use crate::token::{KeyInfo, Token};
use crate::verify;
use crate::worker::{self, Conn, Request, Shared, Slot};

/// A member's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberState {
    /// In rotation.
    Up = 0,
    /// A call hung: its threads are abandoned, no work goes to it.
    Fenced = 1,
    /// A device-level error, or it could not be brought up.
    Down = 2,
    /// A recovery attempt is running.
    Recovering = 3,
    /// Never used: wrong PIN, or a key that differs from the certificate's.
    Refused = 4,
}

impl MemberState {
    fn from_u8(v: u8) -> MemberState {
        match v {
            0 => MemberState::Up,
            1 => MemberState::Fenced,
            2 => MemberState::Down,
            3 => MemberState::Recovering,
            _ => MemberState::Refused,
        }
    }

    /// Lower-case name for logs and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Fenced => "fenced",
            MemberState::Down => "down",
            MemberState::Recovering => "recovering",
            MemberState::Refused => "refused",
        }
    }
}

/// A running generation: instances, sessions on threads, and their queue.
pub(crate) struct Live {
    pub(crate) queue: Sender<Request>,
    drain: Receiver<Request>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ops: Vec<(SignatureScheme, SignOp)>,
    pub(crate) slots: Vec<Arc<Slot>>,
    pub(crate) key: KeyInfo,
}

impl Live {
    /// The operation for `scheme` on this member, if it can make it.
    pub(crate) fn op(&self, scheme: SignatureScheme) -> Option<SignOp> {
        self.ops
            .iter()
            .find_map(|(s, op)| (*s == scheme).then_some(*op))
    }
}

/// One HSM.
pub(crate) struct Member {
    pub(crate) settings: MemberSettings,
    pub(crate) primary: bool,
    state: AtomicU8,
    live: Mutex<Option<Arc<Live>>>,
    /// Threads abandoned in hung calls (signer threads and recovery attempts).
    pub(crate) abandoned: Arc<AtomicUsize>,
    pub(crate) last_error: Mutex<String>,
    /// Recovery bookkeeping, owned by the supervisor.
    pub(crate) recovery: Mutex<Recovery>,
    /// What its signer threads did (all generations).
    pub(crate) meter: Arc<Meter>,
    /// Its capacity estimate.
    pub(crate) capacity: Mutex<Capacity>,
}

/// When to try again, and which attempt is current.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) next_attempt: Instant,
    pub(crate) backoff: std::time::Duration,
    pub(crate) attempt: u64,
    pub(crate) attempt_started: Option<Instant>,
    pub(crate) out_since: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Member {
    pub(crate) fn new(settings: MemberSettings, primary: bool) -> Member {
        let m = Member {
            primary,
            state: AtomicU8::new(MemberState::Down as u8),
            live: Mutex::new(None),
            abandoned: Arc::new(AtomicUsize::new(0)),
            last_error: Mutex::new("not started".into()),
            meter: Arc::new(Meter::default()),
            capacity: Mutex::new(Capacity::new(settings.capacity)),
            recovery: Mutex::new(Recovery {
                next_attempt: Instant::now(),
                backoff: std::time::Duration::from_millis(100),
                attempt: 0,
                attempt_started: None,
                out_since: Some(Instant::now()),
            }),
            settings,
        };
        m.publish_state(MemberState::Down);
        m
    }

    pub(crate) fn name(&self) -> &str {
        &self.settings.name
    }

    pub(crate) fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: MemberState) {
        self.state.store(s as u8, Ordering::Release);
        self.publish_state(s);
    }

    fn publish_state(&self, s: MemberState) {
        metrics::gauge!(m::STATE, "member" => self.settings.name.clone()).set(f64::from(s as u8));
    }

    /// The current generation, if the member is up.
    pub(crate) fn live(&self) -> Option<Arc<Live>> {
        if self.state() != MemberState::Up {
            return None;
        }
        lock(&self.live).clone()
    }

    pub(crate) fn last_error(&self) -> String {
        lock(&self.last_error).clone()
    }

    /// Signatures/s it can make (configured, calibrated or measured; 0 if not known).
    pub(crate) fn capacity(&self) -> f64 {
        lock(&self.capacity).current()
    }

    /// Its signer threads: sessions × connections.
    pub(crate) fn threads(&self) -> usize {
        self.settings.sessions.max(1) * self.settings.connections.max(1)
    }

    /// Put a freshly started generation into rotation.
    pub(crate) fn install(&self, live: Arc<Live>) {
        *lock(&self.live) = Some(live);
        self.set_state(MemberState::Up);
        let mut r = lock(&self.recovery);
        r.backoff = std::time::Duration::from_millis(100);
        r.attempt_started = None;
        if let Some(since) = r.out_since.take() {
            tracing::info!(member = %self.settings.name, out_for = ?since.elapsed(), "HSM member in rotation");
        }
    }

    /// Take the member out of rotation. `hung`: its calls do not return (fence: busy
    /// threads are abandoned); otherwise a device error (down). Queued requests are
    /// handed back to their callers at once so they retry elsewhere.
    pub(crate) fn take_out(&self, hung: bool, reason: &str) {
        let new_state = if hung {
            MemberState::Fenced
        } else {
            MemberState::Down
        };
        let previous = self.state.swap(new_state as u8, Ordering::AcqRel);
        if MemberState::from_u8(previous) != MemberState::Up {
            // Already out (or being recovered): keep the earlier state.
            self.state.store(previous, Ordering::Release);
            return;
        }
        self.publish_state(new_state);
        *lock(&self.last_error) = reason.to_string();
        {
            let mut r = lock(&self.recovery);
            r.out_since = Some(Instant::now());
            r.next_attempt = Instant::now() + r.backoff;
        }
        let Some(live) = lock(&self.live).take() else {
            return;
        };
        if hung {
            let stuck = live.slots.iter().filter(|s| s.abandon_if_busy()).count();
            self.abandoned.fetch_add(stuck, Ordering::AcqRel);
            metrics::gauge!(m::ABANDONED, "member" => self.settings.name.clone())
                .set(self.abandoned.load(Ordering::Acquire) as f64);
            tracing::warn!(member = %self.settings.name, abandoned_threads = stuck, %reason, "HSM member fenced");
        } else {
            tracing::warn!(member = %self.settings.name, %reason, "HSM member down");
        }
        while let Ok(req) = live.drain.try_recv() {
            live.shared.done("lost".into());
            let _ = req.reply.send(Err(SignerError::MemberLost {
                member: self.settings.name.clone(),
            }));
        }
        retire(live);
    }

    /// Let the current generation go without logging (the pool is being dropped).
    pub(crate) fn retire_for_shutdown(&self) {
        if let Some(live) = lock(&self.live).take() {
            retire(live);
        }
    }

    /// Bring up a new generation: fresh module instance(s), token, login, key (checked
    /// against `expected` SPKI), one verified test signature per connection, sessions on
    /// threads.
    pub(crate) fn bring_up(
        &self,
        group: &GroupSettings,
        expected: Option<&ExpectedKey>,
    ) -> Result<Arc<Live>, SignerError> {
        let s = &self.settings;
        let mut conns: Vec<Conn> = Vec::new();
        let mut found: Option<(Token, KeyInfo)> = None;
        for _ in 0..s.connections.max(1) {
            let module = Module::load_fresh(&s.module, &s.env)?;
            let token = Token::find(&module, &s.uri)?;
            let first = token.open_session()?;
            token.login(&first, &s.pin)?;
            // Object handles belong to one module instance: look the key up on each.
            let key = token.find_key(&first, &s.uri)?;
            let expected_spki = match (&found, expected) {
                (Some((_, k)), _) => Some((k.spki.as_slice(), "its other connection".to_string())),
                (None, Some(e)) => Some((e.spki.as_slice(), e.from.clone())),
                (None, None) => None,
            };
            if let Some((spki, from)) = expected_spki
                && !verify::same_public_key(spki, &key.spki)
            {
                return Err(SignerError::KeyDiffers(Box::new(
                    crate::error::KeyDiffers {
                        member: s.name.clone(),
                        token: token.label.clone(),
                        key: key.name.clone(),
                        expected_from: from,
                        found: verify::describe_key(&key.spki),
                        expected: verify::describe_key(spki),
                    },
                )));
            }
            let handle = key.handle;
            if found.is_none() {
                found = Some((token.clone(), key));
            }
            conns.push(Conn {
                session: first,
                key: handle,
                module: Arc::clone(&module),
            });
            // Sessions are opened one after another: SoftHSM races when many open at once.
            for _ in 1..s.sessions.max(1) {
                conns.push(Conn {
                    session: token.open_session()?,
                    key: handle,
                    module: Arc::clone(&module),
                });
            }
        }
        let (token, key) = found.expect("at least one connection");
        let ops = scheme::supported(&token, key.kind);
        let Some(&(test_scheme, test_op)) = ops.first() else {
            return Err(SignerError::UnsupportedKey {
                token: token.label.clone(),
                key: key.name.clone(),
                reason: "the token offers no signing mechanism for it".into(),
            });
        };
        let shared = Arc::new(Shared {
            member: s.name.clone(),
            token: token.label.clone(),
            in_flight: AtomicUsize::new(0),
            batch_max: group.batch_max.max(1),
            abandoned: Arc::clone(&self.abandoned),
            meter: Arc::clone(&self.meter),
        });
        // One verified test signature through each connection (its first session).
        const MESSAGE: &[u8] = b"hsmgate member self-test";
        for conn in conns.iter().step_by(s.sessions.max(1)) {
            let signature = worker::sign(&conn.session, conn.key, &shared, test_op, MESSAGE)?;
            if !verify::verify(&key.spki, test_scheme, MESSAGE, &signature) {
                return Err(SignerError::SelfTest {
                    token: token.label.clone(),
                    key: key.name.clone(),
                    scheme: format!("{test_scheme:?}"),
                });
            }
        }
        let conns = if lock(&self.capacity).needs_calibration() {
            let (conns, rate) = crate::capacity::calibrate(conns, &shared, test_op, MESSAGE);
            lock(&self.capacity).calibrated(rate);
            tracing::info!(member = %s.name, capacity_ops = rate.round(), sessions = conns.len(), "HSM member calibrated");
            conns
        } else {
            conns
        };
        metrics::gauge!(m::CAPACITY, "member" => s.name.clone()).set(self.capacity());
        let (tx, rx) = crate::handoff::bounded(group.queue_depth.max(1));
        let mut slots = Vec::new();
        for (i, conn) in conns.into_iter().enumerate() {
            let slot = Arc::new(Slot::default());
            worker::spawn(
                format!("hsm-{}-{i}", s.name),
                conn,
                Arc::clone(&shared),
                Arc::clone(&slot),
                rx.clone(),
            )
            .map_err(SignerError::Thread)?;
            slots.push(slot);
        }
        Ok(Arc::new(Live {
            queue: tx,
            drain: rx,
            shared,
            ops,
            slots,
            key,
        }))
    }
}

/// Let an old generation go: closing its queue ends its idle threads; each module
/// instance is finalised when the last thread using it ends (a thread stuck in a hung
/// call keeps its instance alive until the call returns).
pub(crate) fn retire(live: Arc<Live>) {
    drop(live);
}
