//! Failover and retry: one signature, tried on one member after another until one
//! answers or the signature's deadline passes. Each attempt signs on the calling thread
//! when the member does that (`inline`), and otherwise queues for its signer threads.
//! Inside a handshake job on a signer thread (`offload`) the first attempt is that
//! thread's own session.
//!
//! - A device error (`CKR_DEVICE_ERROR`, `CKR_SESSION_HANDLE_INVALID`, a lost member…,
//!   see [`SignerError::is_device_error`]) takes the member down and the signature
//!   moves on.
//! - No answer by the attempt's deadline: the member is fenced if one of its calls has
//!   hung that long, and the signature moves on.
//! - An error about the request itself (`CKR_DATA_LEN_RANGE`, a mechanism the key does
//!   not allow…) is returned at once: another member would refuse it too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use rustls::SignatureScheme;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::Group;
use crate::backend::Refused;
use crate::error::SignerError;
use crate::metrics as m;

impl Group {
    /// Sign with failover: retries on other members within the signature's deadline.
    pub(crate) fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        if !self.schemes.contains(&scheme) {
            return Err(SignerError::UnsupportedScheme {
                token: self.token_label.clone(),
                scheme,
            });
        }
        let start = Instant::now();
        let deadline = start + self.settings.sign_timeout;
        let message: Arc<[u8]> = message.into();
        let mut tried = vec![false; self.members.len()];
        let mut saturated = false;
        let mut last_error: Option<SignerError> = None;
        if let Some(here) = crate::offload::sign_here(self.id, scheme, &message) {
            let i = self.members.iter().position(|m| m.name() == here.member);
            match here.result {
                Ok(signature) => {
                    self.limiter.observe(here.latency);
                    return Ok(signature);
                }
                // As below: the member goes down and another one signs (this thread
                // waits for it: it is no runtime worker).
                Err(e) if e.is_device_error() => {
                    if let Some(i) = i {
                        device_failed(&self.members[i], &e);
                        tried[i] = true;
                    }
                    last_error = Some(e);
                }
                Err(e) => return Err(e.in_member(&here.member)),
            }
        }
        while let Some((i, live)) = self.pick(scheme, &tried, saturated) {
            tried[i] = true;
            let member = &self.members[i];
            let now = Instant::now();
            let op_deadline = (now + self.settings.op_timeout).min(deadline);
            // A token that computes in the process and fast signs on this thread
            // (`inline`); otherwise a signer thread signs and this one waits.
            let outcome = match live.sign_inline(scheme, &message) {
                Some(result) => Ok(result),
                None => match live.submit(scheme, Arc::clone(&message), op_deadline) {
                    Ok(answer) => off_runtime(|| answer.recv_deadline(op_deadline)),
                    Err(Refused::Full) => {
                        saturated = true;
                        continue;
                    }
                    Err(Refused::Closed) => continue,
                },
            };
            match outcome {
                Ok(Ok(signature)) => {
                    self.limiter.observe(start.elapsed());
                    return Ok(signature);
                }
                Ok(Err(e)) if e.is_device_error() => {
                    device_failed(member, &e);
                    last_error = Some(e);
                }
                // About the request: another member would refuse it too.
                Ok(Err(e)) => return Err(e.in_member(member.name())),
                Err(RecvTimeoutError::Timeout) => {
                    let hung = live
                        .longest_call()
                        .filter(|t| *t >= self.settings.op_timeout);
                    if let Some(t) = hung {
                        member.take_out(true, &hung_reason(t));
                    }
                    last_error = Some(SignerError::Timeout {
                        token: live.key().token.clone(),
                        after: now.elapsed().max(Duration::from_millis(1)),
                    });
                    if Instant::now() >= deadline {
                        break;
                    }
                    metrics::counter!(m::RETRIES, m::with(&member.labels, "reason", "timeout"))
                        .increment(1);
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
                token: match last_error {
                    Some(SignerError::Timeout { token, .. }) => token,
                    _ => self.settings.name.clone(),
                },
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
}

/// A device error from `member`: out of rotation (unless it already is: a lost member),
/// and a retry counted.
fn device_failed(member: &crate::member::Member, e: &SignerError) {
    if !matches!(e, SignerError::MemberLost { .. }) {
        member.take_out(false, &e.to_string());
    }
    metrics::counter!(m::RETRIES, m::with(&member.labels, "reason", "device")).increment(1);
}

/// Why a member is fenced: the running call's age.
pub(super) fn hung_reason(t: Duration) -> String {
    format!("a C_Sign call has not returned for {} ms", t.as_millis())
}

/// Run a blocking wait without stalling a tokio worker thread.
fn off_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cryptoki::error::RvError;
    use rustls::SignatureScheme;

    use crate::backend::fake::{Behaviour, Fake, TestGroup};
    use crate::error::SignerError;
    use crate::member::MemberState;

    const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

    #[test]
    fn device_errors_take_the_member_down_and_retry_elsewhere() {
        for rv in [
            RvError::DeviceError,
            RvError::SessionHandleInvalid,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
        ] {
            let a = Fake::new("a").signing(Behaviour::Fail(rv));
            let b = Fake::new("b");
            let g = TestGroup::primaries(&[&a, &b]);
            let signature = g.group.sign(SCHEME, b"m").expect("b signs");
            assert_eq!(signature, b"b", "{rv:?}");
            assert_eq!(g.state(0), MemberState::Down, "{rv:?}");
            assert!(g.group.members[0].last_error().contains("CKR_"), "{rv:?}");
            assert_eq!((a.calls(), b.calls()), (1, 1), "{rv:?}");
        }
    }

    #[test]
    fn a_member_signing_on_the_callers_thread_fails_over_like_the_others() {
        // Signs inline: the queue is not used.
        let a = Fake::new("a").inline();
        let g = TestGroup::primaries(&[&a]);
        assert_eq!(g.group.sign(SCHEME, b"m").expect("a signs"), b"a");
        assert_eq!((a.inline_calls(), a.calls()), (1, 0));
        // A device error inline takes the member down and the signature moves on.
        let a = Fake::new("a")
            .inline()
            .signing(Behaviour::Fail(RvError::DeviceError));
        let b = Fake::new("b");
        let g = TestGroup::primaries(&[&a, &b]);
        assert_eq!(g.group.sign(SCHEME, b"m").expect("b signs"), b"b");
        assert_eq!(g.state(0), MemberState::Down);
        assert_eq!((a.inline_calls(), b.calls()), (1, 1));
        // A request error inline is returned at once, naming the member.
        let a = Fake::new("a")
            .inline()
            .signing(Behaviour::Fail(RvError::DataLenRange));
        let b = Fake::new("b");
        let g = TestGroup::primaries(&[&a, &b]);
        let err = g.group.sign(SCHEME, b"m").expect_err("no retry");
        assert!(err.to_string().starts_with("HSM member a: "), "{err}");
        assert_eq!(b.calls(), 0);
    }

    #[test]
    fn request_errors_are_returned_without_a_retry() {
        for rv in [
            RvError::DataLenRange,
            RvError::MechanismInvalid,
            RvError::KeyFunctionNotPermitted,
        ] {
            let a = Fake::new("a").signing(Behaviour::Fail(rv));
            let b = Fake::new("b");
            let g = TestGroup::primaries(&[&a, &b]);
            let err = g.group.sign(SCHEME, b"m").expect_err("no retry");
            assert_eq!(err.rv(), Some(rv));
            let text = err.to_string();
            assert!(
                text.starts_with("HSM member a: token tok-a: C_Sign failed: CKR_"),
                "{text}"
            );
            assert_eq!(b.calls(), 0, "{rv:?}: not retried on b");
            assert_eq!(g.state(0), MemberState::Up, "{rv:?}: a stays in rotation");
        }
    }

    #[test]
    fn a_hung_call_fences_its_member_and_the_signature_moves_on() {
        let a = Fake::new("a").signing(Behaviour::Hang);
        let b = Fake::new("b");
        let g = TestGroup::build(&[&a, &b], &[true, true], |s| {
            s.op_timeout = Duration::from_millis(50);
            s.sign_timeout = Duration::from_secs(2);
        });
        let signature = g.group.sign(SCHEME, b"m").expect("b signs");
        assert_eq!(signature, b"b");
        // Fenced by the signature that saw it hang, or at the supervisor's next look.
        std::thread::sleep(Duration::from_millis(5));
        g.group.tick();
        assert_eq!(g.state(0), MemberState::Fenced);
        assert_eq!(g.abandoned(0), 1, "the hung thread is counted");
        // The call returns at last: the thread is no longer abandoned.
        a.release();
        assert_eq!(g.abandoned(0), 0);
    }

    #[test]
    fn every_member_slow_is_a_timeout_not_unhealthy() {
        let a = Fake::new("a").signing(Behaviour::Hang);
        let g = TestGroup::build(&[&a], &[true], |s| {
            s.op_timeout = Duration::from_millis(30);
            s.sign_timeout = Duration::from_millis(30);
        });
        let err = g.group.sign(SCHEME, b"m").expect_err("hangs");
        assert!(matches!(err, SignerError::Timeout { .. }), "{err}");
        assert!(err.is_device_error());
        a.release();
    }

    #[test]
    fn full_queues_are_overload_and_spill_to_standby_only_when_configured() {
        let a = Fake::new("a").signing(Behaviour::Full);
        let standby = Fake::new("s");
        let g = TestGroup::build(&[&a, &standby], &[true, false], |_| {});
        let err = g.group.sign(SCHEME, b"m").expect_err("full");
        assert!(matches!(err, SignerError::Overloaded { .. }), "{err}");
        assert_eq!(standby.calls(), 0);
        assert_eq!(g.state(0), MemberState::Up, "a full queue is not a failure");

        let g = TestGroup::build(&[&a, &standby], &[true, false], |s| {
            s.standby_when_saturated = true;
        });
        assert_eq!(g.group.sign(SCHEME, b"m").expect("standby signs"), b"s");
    }

    #[test]
    fn the_standby_region_serves_only_when_no_primary_is_up() {
        let a = Fake::new("a");
        let standby = Fake::new("s");
        let g = TestGroup::build(&[&a, &standby], &[true, false], |_| {});
        for _ in 0..5 {
            assert_eq!(g.group.sign(SCHEME, b"m").expect("signs"), b"a");
        }
        assert_eq!(standby.calls(), 0);
        assert_eq!(g.group.serving(), [true, false]);
        a.set_signing(Behaviour::Fail(RvError::DeviceError));
        assert_eq!(g.group.sign(SCHEME, b"m").expect("standby"), b"s");
        assert_eq!(g.group.sign(SCHEME, b"m").expect("standby"), b"s");
        assert_eq!(g.group.serving(), [false, true]);
    }

    #[test]
    fn nothing_up_says_which_member_is_in_which_state() {
        let a = Fake::new("a").signing(Behaviour::Fail(RvError::DeviceError));
        let b = Fake::new("b").signing(Behaviour::Fail(RvError::SessionHandleInvalid));
        let g = TestGroup::primaries(&[&a, &b]);
        let err = g.group.sign(SCHEME, b"m").expect_err("both fail");
        let text = err.to_string();
        assert!(matches!(err, SignerError::NoHealthyMember { .. }), "{text}");
        assert!(
            text.contains("a down (token tok-a: C_Sign failed: CKR_DEVICE_ERROR)"),
            "{text}"
        );
        assert!(text.contains("CKR_SESSION_HANDLE_INVALID"), "{text}");
    }

    #[test]
    fn an_unsupported_scheme_is_refused_before_any_member() {
        let a = Fake::new("a");
        let g = TestGroup::primaries(&[&a]);
        let err = g
            .group
            .sign(SignatureScheme::ED25519, b"m")
            .expect_err("not offered");
        assert!(
            matches!(err, SignerError::UnsupportedScheme { .. }),
            "{err}"
        );
        assert_eq!(a.calls(), 0);
    }
}
