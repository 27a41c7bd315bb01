//! One signer thread: owns one PKCS#11 session (`Session` is `Send` but not `Sync`),
//! takes requests from the pool's bounded queue, signs, and answers on the request's
//! one-shot channel. A request whose deadline passed while it waited is not signed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use crate::der;
use crate::error::{SignerError, ckr_name};
use crate::metrics as m;
use crate::scheme::SignOp;

/// A signing request as queued.
pub(crate) struct Request {
    pub(crate) op: SignOp,
    pub(crate) message: Vec<u8>,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Instant,
    pub(crate) reply: Sender<Result<Vec<u8>, SignerError>>,
}

/// What the workers of one pool share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) token: String,
    pub(crate) key: ObjectHandle,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) batch_max: usize,
}

impl Shared {
    /// Record that a request left the pool (answered, expired or refused).
    pub(crate) fn done(&self, result: String) {
        let left = self
            .in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!(m::IN_FLIGHT, "token" => self.token.clone()).set(left as f64);
        metrics::counter!(m::OPERATIONS, "token" => self.token.clone(), "result" => result)
            .increment(1);
    }
}

/// Start a signer thread that owns `session`.
pub(crate) fn spawn(
    index: usize,
    session: Session,
    shared: Arc<Shared>,
    queue: Receiver<Request>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("hsm-signer-{index}"))
        .spawn(move || run(session, &shared, &queue))
}

fn run(session: Session, shared: &Shared, queue: &Receiver<Request>) {
    // The queue closes when the pool is dropped: then the thread ends and the session closes.
    while let Ok(first) = queue.recv() {
        serve(&session, shared, first);
        // Drain what is already queued before sleeping again.
        let mut batch = 1;
        while batch < shared.batch_max {
            let Ok(next) = queue.try_recv() else { break };
            serve(&session, shared, next);
            batch += 1;
        }
        metrics::histogram!(m::BATCH_SIZE, "token" => shared.token.clone()).record(batch as f64);
    }
}

fn serve(session: &Session, shared: &Shared, req: Request) {
    if Instant::now() >= req.deadline {
        // The waiter has given up; signing now would only delay the requests behind it.
        shared.done("expired".into());
        return;
    }
    let result = sign(session, shared, req.op, &req.message);
    metrics::histogram!(m::LATENCY, "token" => shared.token.clone())
        .record(req.enqueued.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.rv().map(ckr_name).unwrap_or_else(|| "error".into()),
    };
    shared.done(label);
    // The waiter may have timed out and gone: nothing to do then.
    let _ = req.reply.send(result);
}

/// Sign `message` with the pool's key in this session.
pub(crate) fn sign(
    session: &Session,
    shared: &Shared,
    op: SignOp,
    message: &[u8],
) -> Result<Vec<u8>, SignerError> {
    let raw = session
        .sign(&op.mechanism(), shared.key, &op.input(message))
        .map_err(|e| SignerError::pkcs11(&shared.token, "C_Sign", e))?;
    if op.needs_der() {
        der::ecdsa_signature(&raw).ok_or_else(|| SignerError::BadSignature {
            token: shared.token.clone(),
            function: "C_Sign",
            reason: format!("ECDSA signature of odd length {}", raw.len()),
        })
    } else {
        Ok(raw)
    }
}
