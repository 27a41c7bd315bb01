//! The real backend: a generation is fresh module instance(s), a login, the key (checked
//! against the expected public key), one verified test signature per connection, and
//! sessions on signer threads (`worker`) fed by one bounded queue, and, for a token
//! that computes in the process and fast, sessions for callers' threads (`inline`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use crate::handoff::{Receiver, Sender};
use rustls::SignatureScheme;

use crate::backend::{Answer, Backend, Generation, MemberKey, Refused, StartCtx, Started};
use crate::error::{KeyDiffers, KeyProblem, SignerError};
use crate::inline::{self, Inline};
use crate::metrics as m;
use crate::module::Module;
use crate::offload::Job;
use crate::on_runtime::OnRuntime;
use crate::pool::MemberSettings;
use crate::scheme::{self, SignOp};
use crate::token::{KeyInfo, Token};
use crate::verify::{self, verify};
use crate::worker::{self, Conn, Request, Shared, Slot, Work};

/// One member's HSM over PKCS#11.
pub(crate) struct Pkcs11Backend {
    settings: MemberSettings,
}

impl Pkcs11Backend {
    pub(crate) fn new(settings: MemberSettings) -> Pkcs11Backend {
        Pkcs11Backend { settings }
    }
}

/// A running generation: instances, sessions on threads, and their queue.
pub(crate) struct Live {
    queue: Sender<Work>,
    drain: Receiver<Work>,
    shared: Arc<Shared>,
    ops: Arc<[(SignatureScheme, SignOp)]>,
    slots: Vec<Arc<Slot>>,
    key: MemberKey,
    /// Signing on callers' threads, when the probe at start found the token eligible.
    inline: Option<Inline>,
    /// Whether its signer threads run handshakes' signing steps (`offload`): the probe
    /// found a token that computes in the process, too slowly to sign inline.
    runs_jobs: bool,
    /// Such a token's sessions for steps run on the connection's runtime thread.
    on_runtime: Option<OnRuntime>,
}

impl Live {
    /// The operation for `scheme` on this member, if it can make it.
    fn op(&self, scheme: SignatureScheme) -> Option<SignOp> {
        self.ops
            .iter()
            .find_map(|(s, op)| (*s == scheme).then_some(*op))
    }

    /// Queue one request (a health probe with `probe`) without blocking.
    fn queue_request(
        &self,
        scheme: SignatureScheme,
        message: Arc<[u8]>,
        deadline: Instant,
        probe: bool,
    ) -> Result<Answer, Refused> {
        let op = self.op(scheme).ok_or(Refused::Closed)?;
        let (reply, answer) = crate::handoff::oneshot();
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            op,
            message,
            enqueued: Instant::now(),
            deadline,
            reply,
            probe,
        };
        match self.queue.try_send(Work::Sign(request)) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => {
                self.shared.done("overloaded".into());
                Err(Refused::Full)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.done("closed".into());
                Err(Refused::Closed)
            }
        }
    }
}

impl Generation for Live {
    fn key(&self) -> &MemberKey {
        &self.key
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.ops.iter().map(|(s, _)| *s).collect()
    }

    fn can_sign(&self, scheme: SignatureScheme) -> bool {
        self.op(scheme).is_some()
    }

    fn submit(
        &self,
        scheme: SignatureScheme,
        message: Arc<[u8]>,
        deadline: Instant,
    ) -> Result<Answer, Refused> {
        self.queue_request(scheme, message, deadline, false)
    }

    fn submit_probe(&self, scheme: SignatureScheme, deadline: Instant) -> Result<Answer, Refused> {
        let message = Arc::from(crate::backend::PROBE_MESSAGE);
        self.queue_request(scheme, message, deadline, true)
    }

    fn sign_inline(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Option<Result<Vec<u8>, SignerError>> {
        let inline = self.inline.as_ref()?;
        inline.sign(&self.shared, self.op(scheme)?, message)
    }

    fn signs_inline(&self) -> bool {
        self.inline.as_ref().is_some_and(Inline::is_on)
    }

    fn runs_jobs(&self) -> bool {
        self.runs_jobs
    }

    fn submit_job(&self, job: Job) -> Result<(), Job> {
        if !self.runs_jobs {
            return Err(job);
        }
        // Counted in flight as the signature it will make (`offload::run` takes it off
        // when it made none).
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(Work::Job(job)) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Work::Job(job)) | TrySendError::Disconnected(Work::Job(job)),
            ) => {
                self.shared.leave_counted();
                self.shared.job("returned");
                Err(job)
            }
            Err(_) => unreachable!("a job was sent"),
        }
    }

    fn run_job_here(&self, job: Job) -> Result<(), Job> {
        match &self.on_runtime {
            Some(here) => here.run(&self.shared, job),
            None => Err(job),
        }
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    fn longest_call(&self) -> Option<Duration> {
        self.slots.iter().filter_map(|s| s.busy_for()).max()
    }

    fn retire(&self, fence: bool) -> usize {
        if let Some(inline) = &self.inline {
            inline.turn_off();
        }
        if let Some(here) = &self.on_runtime {
            here.turn_off();
        }
        let mut stuck = 0;
        if fence {
            for slot in &self.slots {
                // Counted before the mark: the thread subtracts itself once its call
                // returns and it sees the mark, never before this addition.
                self.shared.abandoned.fetch_add(1, Ordering::AcqRel);
                if slot.abandon_if_busy() {
                    stuck += 1;
                } else {
                    self.shared.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
            }
            metrics::gauge!(m::ABANDONED, self.shared.labels.clone())
                .set(self.shared.abandoned.load(Ordering::Acquire) as f64);
        }
        while let Ok(work) = self.drain.try_recv() {
            match work {
                Work::Sign(req) => {
                    self.shared.done("lost".into());
                    let _ = req.reply.send(Err(SignerError::MemberLost {
                        member: self.shared.member.clone(),
                    }));
                }
                // Back to its caller, who signs elsewhere.
                Work::Job(job) => {
                    self.shared.leave_counted();
                    self.shared.job("returned");
                    job.give_back();
                }
            }
        }
        stuck
    }
}

impl Backend for Pkcs11Backend {
    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started, SignerError> {
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
            let expected_spki = match (&found, ctx.expected) {
                (Some((_, k)), _) => Some((k.spki.as_slice(), "its other connection".to_string())),
                (None, Some(e)) => Some((e.spki.as_slice(), e.from.clone())),
                (None, None) => None,
            };
            if let Some((spki, from)) = expected_spki
                && !verify::same_public_key(spki, &key.spki)
            {
                return Err(SignerError::KeyDiffers(Box::new(KeyDiffers {
                    member: s.name.clone(),
                    token: token.label.clone(),
                    key: key.name.clone(),
                    expected_from: from,
                    found: verify::describe_key(&key.spki),
                    expected: verify::describe_key(spki),
                })));
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
        let ops: Arc<[(SignatureScheme, SignOp)]> = scheme::supported(&token, key.kind).into();
        let Some(&(test_scheme, test_op)) = ops.first() else {
            return Err(SignerError::UnsupportedKey {
                token: token.label.clone(),
                key: key.name.clone(),
                reason: KeyProblem::NoMechanism,
            });
        };
        let shared = Arc::new(Shared {
            member: s.name.clone(),
            labels: crate::metrics::member_labels(ctx.group, &s.name),
            token: token.label.clone(),
            in_flight: AtomicUsize::new(0),
            batch_max: ctx.group.batch_max.max(1),
            abandoned: Arc::clone(ctx.abandoned),
            meter: Arc::clone(ctx.meter),
            ops: Arc::clone(&ops),
        });
        // One verified test signature through each connection (its first session).
        const MESSAGE: &[u8] = b"hsmgate member self-test";
        for conn in conns.iter().step_by(s.sessions.max(1)) {
            let signature = worker::sign(&conn.session, conn.key, &shared, test_op, MESSAGE)?;
            if !verify(&key.spki, test_scheme, MESSAGE, &signature) {
                return Err(SignerError::SelfTest {
                    token: token.label.clone(),
                    key: key.name.clone(),
                    scheme: test_scheme,
                });
            }
        }
        let (inline, runs_jobs, on_runtime) = match ctx.group.admission.inline_signing {
            true => start_inline(
                &conns[0],
                &token,
                &shared,
                (test_op, MESSAGE),
                s,
                ctx.group.admission.signer_nice,
            )?,
            false => (None, false, None),
        };
        metrics::gauge!(m::INLINE, shared.labels.clone())
            .set(f64::from(u8::from(inline.is_some())));
        metrics::gauge!(m::JOBS, shared.labels.clone()).set(f64::from(u8::from(runs_jobs)));
        let (conns, calibrated) = if ctx.calibrate {
            let (conns, rate) = crate::capacity::calibrate(conns, &shared, test_op, MESSAGE);
            tracing::info!(member = %s.name, capacity_ops = rate.round(), sessions = conns.len(), "HSM member calibrated");
            (conns, Some(rate))
        } else {
            (conns, None)
        };
        let (tx, rx) = crate::handoff::bounded(ctx.group.queue_depth.max(1));
        // The inline sessions' marks too: the supervisor sees a hung call there as well.
        let mut slots: Vec<Arc<Slot>> = inline.as_ref().map(Inline::marks).unwrap_or_default();
        slots.extend(
            on_runtime
                .as_ref()
                .map(OnRuntime::marks)
                .unwrap_or_default(),
        );
        for (i, conn) in conns.into_iter().enumerate() {
            let slot = Arc::new(Slot::default());
            worker::spawn(
                format!("sign-{}-{i}", s.name),
                conn,
                Arc::clone(&shared),
                Arc::clone(&slot),
                rx.clone(),
                ctx.group.admission.signer_nice,
            )
            .map_err(SignerError::Thread)?;
            slots.push(slot);
        }
        let key = MemberKey {
            token: token.label.clone(),
            name: key.name,
            kind: key.kind,
            spki: key.spki,
        };
        Ok(Started {
            generation: Arc::new(Live {
                queue: tx,
                drain: rx,
                shared,
                ops,
                slots,
                key,
                inline,
                runs_jobs,
                on_runtime,
            }),
            calibrated,
        })
    }
}

/// Probe whether the member may sign on callers' threads (`inline`), and if so open its
/// sessions for that (as many as it has signer threads); else whether it computes in the
/// process, slowly: then its signer threads run handshakes' signing steps (`offload`,
/// the `bool`), and so do runtime threads that can be spared, with sessions of their own
/// (`on_runtime`, as many as it has signer threads), where such a thread can take the
/// signer threads' lower priority for the step and give it back (or that is 0): a step at
/// the runtime's priority would come before established connections under a flood.
fn start_inline(
    first: &Conn,
    token: &Token,
    shared: &Shared,
    (op, message): (SignOp, &[u8]),
    s: &MemberSettings,
    nice: u8,
) -> Result<(Option<Inline>, bool, Option<OnRuntime>), SignerError> {
    let probe = inline::probe(first, shared, op, message)?;
    let open = || -> Result<Vec<(Conn, Arc<Slot>)>, SignerError> {
        let mut sessions = Vec::new();
        for _ in 0..s.sessions.max(1) {
            let conn = Conn {
                session: token.open_session()?,
                key: first.key,
                module: Arc::clone(&first.module),
            };
            sessions.push((conn, Arc::new(Slot::default())));
        }
        Ok(sessions)
    };
    let inline = match probe.eligible() {
        true => Some(Inline::new(open()?, &shared.labels, probe.cpu_median)),
        false => None,
    };
    let runs_jobs = inline.is_none() && probe.in_process();
    let on_runtime = match runs_jobs && crate::priority::can_restore(nice) {
        true => Some(OnRuntime::new(open()?, &shared.labels, nice)),
        false => None,
    };
    tracing::info!(
        member = %s.name,
        cpu_us = probe.cpu_median.as_micros() as u64,
        wall_us = probe.wall_median.as_micros() as u64,
        cpu_share = format!("{:.2}", probe.best_share),
        "{}",
        match (&inline, runs_jobs, &on_runtime) {
            (Some(_), _, _) => "the token signs in this process and fast: signing on the connections' threads",
            (None, true, Some(_)) => "the token signs in this process, slowly: handshakes' signing steps run on signer threads, or on a runtime thread that can be spared",
            (None, true, None) => "the token signs in this process, slowly: handshakes' signing steps run on signer threads (not on runtime threads: this process cannot give a thread's priority back)",
            (None, false, _) => "signing on signer threads (the token waits for another process or a network)",
        }
    );
    Ok((inline, runs_jobs, on_runtime))
}
