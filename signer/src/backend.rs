//! What the group needs from one member's HSM, as two small traits: a [`Backend`]
//! starts [`Generation`]s (log in, find and check the key, self-test, start its
//! threads), and a generation signs with a deadline until it is retired.
//!
//! Production uses PKCS#11 on signer threads (`pkcs11`). Unit tests of selection,
//! failover and supervision use a scripted fake (`fake`); the end-to-end tests keep
//! real, killable HSMs.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use rustls::SignatureScheme;

use crate::capacity::Meter;
use crate::error::SignerError;
use crate::pool::{ExpectedKey, GroupSettings};
use crate::token::KeyKind;

#[cfg(test)]
pub(crate) mod fake;

/// Starts generations of one member.
pub(crate) trait Backend: Send + Sync {
    /// Bring up a new generation. Blocks for as long as the HSM takes (possibly for
    /// ever): callers run it on a thread of its own, bounded by the recovery timeout.
    fn start(&self, ctx: &StartCtx<'_>) -> Result<Started, SignerError>;
}

/// What a start is given: the group's settings, the key to expect, and the member's
/// counters that outlive generations.
pub(crate) struct StartCtx<'a> {
    pub(crate) group: &'a GroupSettings,
    /// The public key every member must have (`None`: the first member's is the reference).
    pub(crate) expected: Option<&'a ExpectedKey>,
    /// Whether to measure the member's signatures/s (no configured or measured figure yet).
    pub(crate) calibrate: bool,
    /// The member's count of threads abandoned in hung calls. A generation adds a
    /// thread *before* marking it abandoned, and the thread subtracts itself when its
    /// call returns, so the count never goes below zero.
    pub(crate) abandoned: &'a Arc<AtomicUsize>,
    /// Operations and time in the token, for the capacity model.
    pub(crate) meter: &'a Arc<Meter>,
}

/// A started generation, and the calibration result if one was asked for.
pub(crate) struct Started {
    pub(crate) generation: Arc<dyn Generation>,
    /// Signatures/s measured by the calibration burst (0: it failed).
    pub(crate) calibrated: Option<f64>,
}

/// The key a generation found and checked.
#[derive(Debug, Clone)]
pub(crate) struct MemberKey {
    /// The token's label.
    pub(crate) token: String,
    /// The key's label (or id).
    pub(crate) name: String,
    pub(crate) kind: KeyKind,
    /// DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
}

/// The channel a signature's answer comes on.
pub(crate) type Answer = crate::handoff::Answer<Result<Vec<u8>, SignerError>>;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is full.
    Full,
    /// The generation has been retired.
    Closed,
}

/// What a health probe signs.
pub(crate) const PROBE_MESSAGE: &[u8] = b"hsmgate health probe";

/// One running generation of a member: its sessions on threads, and their queue.
pub(crate) trait Generation: Send + Sync {
    /// The key it signs with.
    fn key(&self) -> &MemberKey;

    /// The schemes it can make, best first.
    fn schemes(&self) -> Vec<SignatureScheme>;

    /// Whether it can make `scheme`.
    fn can_sign(&self, scheme: SignatureScheme) -> bool;

    /// Queue one signature without blocking. The answer comes on the returned channel;
    /// a request still queued at `deadline` is dropped unanswered.
    fn submit(
        &self,
        scheme: SignatureScheme,
        message: Arc<[u8]>,
        deadline: Instant,
    ) -> Result<Answer, Refused>;

    /// Queue a health probe: a signature of [`PROBE_MESSAGE`] that the metrics count as
    /// a probe, not as an operation.
    fn submit_probe(&self, scheme: SignatureScheme, deadline: Instant) -> Result<Answer, Refused> {
        self.submit(scheme, Arc::from(PROBE_MESSAGE), deadline)
    }

    /// Sign on the calling thread, if this generation does that (`inline`: a token that
    /// computes in the process and fast) and has an idle session for it; `None` means
    /// [`submit`](Self::submit) instead.
    fn sign_inline(
        &self,
        _scheme: SignatureScheme,
        _message: &[u8],
    ) -> Option<Result<Vec<u8>, SignerError>> {
        None
    }

    /// Whether it signs on callers' threads now (see [`sign_inline`](Self::sign_inline)).
    fn signs_inline(&self) -> bool {
        false
    }

    /// Whether its signer threads run handshakes' signing steps (`offload`).
    fn runs_jobs(&self) -> bool {
        false
    }

    /// Queue a handshake's signing step for a signer thread without blocking; given
    /// back when this generation does not run jobs or cannot take it now.
    fn submit_job(&self, job: crate::offload::Job) -> Result<(), crate::offload::Job> {
        Err(job)
    }

    /// Run a handshake's signing step on the calling (runtime) thread now, with a session
    /// of this generation's (`on_runtime`); given back when it does not do that or
    /// cannot now (no runtime thread to spare, no idle session).
    fn run_job_here(&self, job: crate::offload::Job) -> Result<(), crate::offload::Job> {
        Err(job)
    }

    /// Signatures queued or being signed.
    fn in_flight(&self) -> usize;

    /// How long the longest call in progress has been running.
    fn longest_call(&self) -> Option<Duration>;

    /// Out of rotation. With `fence`, the threads inside a call are abandoned (counted
    /// first, see [`StartCtx::abandoned`]); queued requests are answered with
    /// [`SignerError::MemberLost`] so their callers retry elsewhere at once. Returns how
    /// many threads were abandoned.
    fn retire(&self, fence: bool) -> usize;
}
