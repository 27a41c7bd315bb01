//! The signer pool: a token's key, a bounded queue, and one thread per PKCS#11 session.
//!
//! ```text
//!  rustls handshake ──sign()──▶ [bounded queue] ──▶ hsm-signer-0 (session 0) ──C_Sign──▶ token
//!      (waits with a deadline,                   ├─▶ hsm-signer-1 (session 1)
//!       off the async workers)  ◀── one-shot ────┘   …
//! ```
//!
//! A full queue refuses at once (`Overloaded`); a waiter gives up at its deadline
//! (`Timeout`), and a request that waited past its deadline is dropped unsigned.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use hsmgate_config::{Pkcs11Uri, Secret};
use rustls::SignatureScheme;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::error::SignerError;
use crate::module::Module;
use crate::scheme::{self, SignOp};
use crate::token::{KeyInfo, KeyKind, Token};
use crate::worker::{self, Request, Shared};

/// Everything needed to start a pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Environment applied while the module is loaded and initialised.
    pub env: BTreeMap<String, String>,
    /// The key's URI (token and object attributes).
    pub uri: Pkcs11Uri,
    /// The user PIN.
    pub pin: Secret,
    /// Number of sessions, each on its own thread.
    pub sessions: usize,
    /// Capacity of the request queue.
    pub queue_depth: usize,
    /// How long a signature may take, queueing included.
    pub sign_timeout: Duration,
    /// How many queued requests a thread takes per wake-up.
    pub batch_max: usize,
}

impl PoolSettings {
    /// Settings from a validated configuration (reads the PIN from its source).
    pub fn from_config(config: &hsmgate_config::Config) -> Result<Self, SignerError> {
        let p = &config.pkcs11;
        Ok(PoolSettings {
            module: p.module.clone(),
            env: p.env.clone(),
            uri: config.tls.key.uri.clone(),
            pin: crate::pin::read_pin(&p.pin)?,
            sessions: p.sessions,
            queue_depth: p.queue_depth,
            sign_timeout: p.sign_timeout,
            batch_max: 32,
        })
    }
}

/// A pool of signer threads for one key on one token. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignerPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Sender<Request>,
    shared: Arc<Shared>,
    token: Token,
    key: KeyInfo,
    schemes: Vec<SignatureScheme>,
    ops: Vec<(SignatureScheme, SignOp)>,
    timeout: Duration,
    capacity: usize,
}

impl SignerPool {
    /// Load the module, find the token and key, log in, check the key with one test
    /// signature, and start `sessions` signer threads.
    pub fn start(settings: &PoolSettings) -> Result<SignerPool, SignerError> {
        let module = Module::load(&settings.module, &settings.env)?;
        let token = Token::find(&module, &settings.uri)?;
        // Sessions are opened one after another: SoftHSM races when many open at once.
        let first = token.open_session()?;
        token.login(&first, &settings.pin)?;
        let key = token.find_key(&first, &settings.uri)?;
        let ops = scheme::supported(&token, key.kind);
        let schemes: Vec<SignatureScheme> = ops.iter().map(|(s, _)| *s).collect();
        let Some(&(test_scheme, test_op)) = ops.first() else {
            return Err(SignerError::UnsupportedKey {
                token: token.label.clone(),
                key: key.name.clone(),
                reason: "the token offers no signing mechanism for it".into(),
            });
        };
        let shared = Arc::new(Shared {
            token: token.label.clone(),
            key: key.handle,
            in_flight: AtomicUsize::new(0),
            batch_max: settings.batch_max.max(1),
        });
        self_test(&first, &shared, &key, test_scheme, test_op)?;
        let mut sessions = vec![first];
        for _ in 1..settings.sessions.max(1) {
            sessions.push(token.open_session()?);
        }
        let capacity = settings.queue_depth.max(1);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        for (i, session) in sessions.into_iter().enumerate() {
            worker::spawn(i, session, Arc::clone(&shared), rx.clone())
                .map_err(SignerError::Thread)?;
        }
        tracing::info!(
            token = %token.label,
            key = %key.name,
            kind = ?key.kind,
            sessions = settings.sessions,
            schemes = ?schemes,
            "signer pool started"
        );
        Ok(SignerPool {
            inner: Arc::new(Inner {
                queue: tx,
                shared,
                token,
                key,
                schemes,
                ops,
                timeout: settings.sign_timeout,
                capacity,
            }),
        })
    }

    /// Sign `message` with `scheme`, waiting up to the pool's deadline.
    ///
    /// This blocks the calling thread. On a tokio multi-thread worker it waits inside
    /// `block_in_place`, so the runtime moves its other tasks to another thread and
    /// established connections keep being served while the token is slow or hung.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let inner = &*self.inner;
        let op = inner
            .ops
            .iter()
            .find_map(|(s, op)| (*s == scheme).then_some(*op))
            .ok_or_else(|| SignerError::UnsupportedScheme {
                token: inner.token.label.clone(),
                scheme: format!("{scheme:?}"),
            })?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let enqueued = Instant::now();
        let deadline = enqueued + inner.timeout;
        inner.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            op,
            message: message.to_vec(),
            enqueued,
            deadline,
            reply,
        };
        if let Err(e) = inner.queue.try_send(request) {
            let (result, err) = match e {
                TrySendError::Full(_) => (
                    "overloaded",
                    SignerError::Overloaded {
                        token: inner.token.label.clone(),
                        capacity: inner.capacity,
                    },
                ),
                TrySendError::Disconnected(_) => (
                    "closed",
                    SignerError::Closed {
                        token: inner.token.label.clone(),
                    },
                ),
            };
            inner.shared.done(result.into());
            return Err(err);
        }
        match off_runtime(|| answer.recv_deadline(deadline)) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(SignerError::Timeout {
                token: inner.token.label.clone(),
                after: inner.timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(SignerError::Closed {
                token: inner.token.label.clone(),
            }),
        }
    }

    /// The schemes the key can make, best first.
    pub fn schemes(&self) -> &[SignatureScheme] {
        &self.inner.schemes
    }

    /// The key's kind and size.
    pub fn key_kind(&self) -> KeyKind {
        self.inner.key.kind
    }

    /// The key's public key, DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.inner.key.spki
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.inner.token.label
    }

    /// The key's name (label, or id).
    pub fn key_name(&self) -> &str {
        &self.inner.key.name
    }

    /// Signatures queued or being signed now.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.in_flight.load(Ordering::Relaxed)
    }
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

/// Sign a fixed message and verify it against the key's public key.
fn self_test(
    session: &cryptoki::session::Session,
    shared: &Shared,
    key: &KeyInfo,
    scheme: SignatureScheme,
    op: SignOp,
) -> Result<(), SignerError> {
    const MESSAGE: &[u8] = b"hsmgate start-up self-test";
    let signature = worker::sign(session, shared, op, MESSAGE)?;
    if crate::verify::verify(&key.spki, scheme, MESSAGE, &signature) {
        Ok(())
    } else {
        Err(SignerError::SelfTest {
            token: shared.token.clone(),
            key: key.name.clone(),
            scheme: format!("{scheme:?}"),
        })
    }
}
