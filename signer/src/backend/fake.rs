//! A scripted backend for unit tests of selection, failover, supervision and start-up:
//! each member answers at once with a signature (its own name) or a chosen CKR code,
//! refuses with a full queue, or hangs until released; its start succeeds, fails with
//! a chosen CKR code (member `a` has token `tok-a`), or hangs until released.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use hsmgate_config::{Admission, Pkcs11Uri, Secret};
use rustls::SignatureScheme;

use super::{Answer, Backend, Generation, MemberKey, Refused, StartCtx, Started};
use crate::error::{Function, SignerError};
use crate::group::{Group, Supervisor};
use crate::member::MemberState;
use crate::pool::{GroupSettings, MemberSettings};
use crate::token::KeyKind;

/// How a fake member answers a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// At once, with its name as the signature.
    Sign,
    /// At once, with `C_Sign` failing with this code.
    Fail(RvError),
    /// Its queue is full.
    Full,
    /// The call never returns (until [`Fake::release`]).
    Hang,
}

/// A fake member; clones share it.
#[derive(Clone)]
pub(crate) struct Fake(Arc<Inner>);

struct Inner {
    name: String,
    spki: Mutex<Vec<u8>>,
    signing: Mutex<Behaviour>,
    start: Mutex<Result<(), RvError>>,
    start_hangs: Mutex<bool>,
    start_gate: Condvar,
    starts: AtomicUsize,
    calls: AtomicUsize,
    /// Signatures made on the caller's thread (`sign_inline`).
    inline_calls: AtomicUsize,
    /// Whether its generations sign on the caller's thread, as a fast in-process token.
    inline: AtomicBool,
    generations: Mutex<Vec<Arc<FakeGeneration>>>,
}

/// A P-256 SubjectPublicKeyInfo whose point is made of `fill` bytes.
fn spki(fill: u8) -> Vec<u8> {
    let mut point = [fill; 65];
    point[0] = 4;
    crate::der::ec_spki(crate::der::OID_P256, &point)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fake {
    pub(crate) fn new(name: &str) -> Fake {
        Fake(Arc::new(Inner {
            name: name.into(),
            spki: Mutex::new(spki(4)),
            signing: Mutex::new(Behaviour::Sign),
            start: Mutex::new(Ok(())),
            start_hangs: Mutex::new(false),
            start_gate: Condvar::new(),
            starts: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            inline_calls: AtomicUsize::new(0),
            inline: AtomicBool::new(false),
            generations: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn signing(self, b: Behaviour) -> Fake {
        self.set_signing(b);
        self
    }

    pub(crate) fn starting(self, r: Result<(), RvError>) -> Fake {
        self.set_start(r);
        self
    }

    /// Another key than the other members' (which share the default one).
    pub(crate) fn with_other_key(self) -> Fake {
        *lock(&self.0.spki) = spki(5);
        self
    }

    /// The default key again (the HSM's key put right).
    pub(crate) fn set_default_key(&self) {
        *lock(&self.0.spki) = spki(4);
    }

    /// Sign on the caller's thread (`sign_inline`) where the behaviour allows: `Sign`
    /// and `Fail` answer there; `Full` and `Hang` fall back to the queue, as a busy
    /// inline pool does.
    pub(crate) fn inline(self) -> Fake {
        self.0.inline.store(true, Ordering::Release);
        self
    }

    /// Signatures made on the caller's thread.
    pub(crate) fn inline_calls(&self) -> usize {
        self.0.inline_calls.load(Ordering::Acquire)
    }

    pub(crate) fn set_signing(&self, b: Behaviour) {
        *lock(&self.0.signing) = b;
    }

    /// What the next starts return (`Err`: `C_Login` fails with that code).
    pub(crate) fn set_start(&self, r: Result<(), RvError>) {
        *lock(&self.0.start) = r;
    }

    /// Make starts block (until set back to false).
    pub(crate) fn set_start_hangs(&self, hangs: bool) {
        *lock(&self.0.start_hangs) = hangs;
        self.0.start_gate.notify_all();
    }

    /// Starts so far (including those still running).
    pub(crate) fn starts(&self) -> usize {
        self.0.starts.load(Ordering::Acquire)
    }

    /// Signatures submitted (answered, failed or hung).
    pub(crate) fn calls(&self) -> usize {
        self.0.calls.load(Ordering::Acquire)
    }

    /// Every hung call returns (with a signature); a thread abandoned in one subtracts
    /// itself from its member's count, as a real signer thread does.
    pub(crate) fn release(&self) {
        for generation in lock(&self.0.generations).iter() {
            for call in lock(&generation.hung).drain(..) {
                generation.in_flight.fetch_sub(1, Ordering::AcqRel);
                let _ = call.reply.send(Ok(self.0.name.as_bytes().to_vec()));
                if call.abandoned {
                    generation.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

impl Backend for Fake {
    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started, SignerError> {
        self.0.starts.fetch_add(1, Ordering::AcqRel);
        let mut hangs = lock(&self.0.start_hangs);
        while *hangs {
            hangs = self
                .0
                .start_gate
                .wait(hangs)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(hangs);
        if let Err(rv) = *lock(&self.0.start) {
            return Err(SignerError::Pkcs11 {
                member: None,
                token: format!("tok-{}", self.0.name),
                function: Function::Login,
                rv,
            });
        }
        let generation = Arc::new(FakeGeneration {
            fake: Arc::downgrade(&self.0),
            key: MemberKey {
                token: format!("tok-{}", self.0.name),
                name: "key".into(),
                kind: KeyKind::EcP256,
                spki: lock(&self.0.spki).clone(),
            },
            abandoned: Arc::clone(ctx.abandoned),
            in_flight: AtomicUsize::new(0),
            hung: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        });
        lock(&self.0.generations).push(Arc::clone(&generation));
        Ok(Started {
            generation,
            calibrated: ctx.calibrate.then_some(1000.0),
        })
    }
}

/// A call that has not returned.
struct Hung {
    reply: crate::handoff::Reply<Result<Vec<u8>, SignerError>>,
    since: Instant,
    /// Counted in the member's abandoned threads (it was fenced).
    abandoned: bool,
}

/// A fake generation: answers per its member's [`Behaviour`].
pub(crate) struct FakeGeneration {
    fake: Weak<Inner>,
    key: MemberKey,
    abandoned: Arc<AtomicUsize>,
    in_flight: AtomicUsize,
    hung: Mutex<Vec<Hung>>,
    retired: AtomicBool,
}

impl FakeGeneration {
    /// `C_Sign` failing with `rv`, as a real member reports it.
    fn sign_failed(&self, rv: RvError) -> SignerError {
        SignerError::Pkcs11 {
            member: None,
            token: self.key.token.clone(),
            function: Function::Sign,
            rv,
        }
    }
}

impl Generation for FakeGeneration {
    fn key(&self) -> &MemberKey {
        &self.key
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }

    fn can_sign(&self, scheme: SignatureScheme) -> bool {
        scheme == SignatureScheme::ECDSA_NISTP256_SHA256
    }

    fn sign_inline(
        &self,
        _scheme: SignatureScheme,
        _message: &[u8],
    ) -> Option<Result<Vec<u8>, SignerError>> {
        let fake = self.fake.upgrade()?;
        if !fake.inline.load(Ordering::Acquire) || self.retired.load(Ordering::Acquire) {
            return None;
        }
        let result = match *lock(&fake.signing) {
            Behaviour::Sign => Ok(fake.name.as_bytes().to_vec()),
            Behaviour::Fail(rv) => Err(self.sign_failed(rv)),
            Behaviour::Full | Behaviour::Hang => return None,
        };
        fake.inline_calls.fetch_add(1, Ordering::AcqRel);
        Some(result)
    }

    fn submit(
        &self,
        _scheme: SignatureScheme,
        _message: Arc<[u8]>,
        _deadline: Instant,
    ) -> Result<Answer, Refused> {
        let fake = self.fake.upgrade().ok_or(Refused::Closed)?;
        if self.retired.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let behaviour = *lock(&fake.signing);
        if behaviour == Behaviour::Full {
            return Err(Refused::Full);
        }
        fake.calls.fetch_add(1, Ordering::AcqRel);
        let (reply, answer) = crate::handoff::oneshot();
        match behaviour {
            Behaviour::Sign | Behaviour::Full => {
                let _ = reply.send(Ok(fake.name.as_bytes().to_vec()));
            }
            Behaviour::Fail(rv) => {
                let _ = reply.send(Err(self.sign_failed(rv)));
            }
            Behaviour::Hang => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                lock(&self.hung).push(Hung {
                    reply,
                    since: Instant::now(),
                    abandoned: false,
                });
            }
        }
        Ok(answer)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn longest_call(&self) -> Option<Duration> {
        lock(&self.hung).iter().map(|h| h.since.elapsed()).max()
    }

    fn retire(&self, fence: bool) -> usize {
        self.retired.store(true, Ordering::Release);
        if !fence {
            return 0;
        }
        let mut stuck = 0;
        for call in lock(&self.hung).iter_mut().filter(|c| !c.abandoned) {
            self.abandoned.fetch_add(1, Ordering::AcqRel);
            call.abandoned = true;
            stuck += 1;
        }
        stuck
    }
}

/// A group of fake members, with no supervisor thread: tests call `tick` themselves.
pub(crate) struct TestGroup {
    pub(crate) group: Arc<Group>,
}

impl TestGroup {
    /// Every member primary, default settings.
    pub(crate) fn primaries(fakes: &[&Fake]) -> TestGroup {
        Self::build(fakes, &vec![true; fakes.len()], |_| {})
    }

    /// Members in the primary region or not, settings adjusted by `tweak`.
    pub(crate) fn build(
        fakes: &[&Fake],
        primary: &[bool],
        tweak: impl FnOnce(&mut GroupSettings),
    ) -> TestGroup {
        Self::try_build(fakes, primary, tweak).expect("a member starts")
    }

    pub(crate) fn try_build(
        fakes: &[&Fake],
        primary: &[bool],
        tweak: impl FnOnce(&mut GroupSettings),
    ) -> Result<TestGroup, SignerError> {
        let members = fakes
            .iter()
            .zip(primary)
            .map(|(f, &primary)| MemberSettings {
                name: f.0.name.clone(),
                region: if primary { "primary" } else { "standby" }.into(),
                primary,
                module: "/fake".into(),
                env: Default::default(),
                uri: Pkcs11Uri::default(),
                pin: Secret::new("0000"),
                sessions: 1,
                connections: 1,
                capacity: Some(1000.0),
            })
            .collect();
        let mut settings = GroupSettings {
            name: "test".into(),
            members,
            expected: None,
            sign_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_millis(500),
            queue_depth: 8,
            batch_max: 1,
            standby_when_saturated: false,
            probe_interval: Duration::from_secs(3600),
            recovery_timeout: Duration::from_secs(1),
            max_abandoned: 8,
            admission: Admission::default(),
        };
        tweak(&mut settings);
        let backends = fakes
            .iter()
            .map(|f| Box::new((*f).clone()) as Box<dyn Backend>)
            .collect();
        let group = Group::start_with(settings, backends, Supervisor::Manual)?;
        Ok(TestGroup { group })
    }

    pub(crate) fn state(&self, i: usize) -> MemberState {
        self.group.members[i].state()
    }

    pub(crate) fn abandoned(&self, i: usize) -> usize {
        self.group.members[i].abandoned.load(Ordering::Acquire)
    }
}
