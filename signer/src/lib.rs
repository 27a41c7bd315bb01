//! hsmgate's signer: private-key operations over PKCS#11, on threads of their own.
//!
//! rustls signs synchronously inside the handshake, and a PKCS#11 call can take long or
//! never return (a hung HSM). So no PKCS#11 call runs on an async worker: each session
//! belongs to one OS thread of a [`SignerPool`], requests reach the threads through a
//! bounded queue and come back on a one-shot channel with a deadline, and the waiting
//! side (rustls' [`Signer::sign`](rustls::sign::Signer)) waits outside the runtime's
//! core threads. The one exception is a token that computes in the process and fast (a
//! software token's ECDSA, measured by a probe at start: `inline`), whose calls cannot
//! hang on anything but this process's CPU: it signs on the caller's thread.
//!
//! Parts (private modules; the public surface is the `pub use` list below):
//! - `pool`: settings and [`SignerPool`], the public face of a group.
//! - `group`: an HA group, one file per job: `group/start` (bring-up), `group/select`
//!   (which member signs), `group/failover` (retry within the deadline),
//!   `group/supervise` (fencing, probes, recovery).
//! - `member`: one HSM's health state (compare-and-swap transitions, see
//!   [`MemberState`]) and the generation in rotation.
//! - `backend`: the small trait a member signs through; `pkcs11` is the real backend
//!   (module instances, login, key check, self-test), `worker` one signer thread,
//!   `handoff` its request queue and answers (mutex + condvar, no spinning),
//!   `priority` its CPU priority (below the threads serving connections), `inline`
//!   signing on the caller's thread instead for a token that computes in the process
//!   and fast (a software token's ECDSA), `offload` a handshake's signing step run on
//!   a signer thread for a token that computes in the process but slowly (a software
//!   token's RSA), `on_runtime` the same step on the connection's runtime thread where
//!   half the runtime threads stay free, `cpu_time` the calling thread's CPU clock (the probe's and each
//!   signature's CPU cost).
//! - `module`: load and initialise a PKCS#11 module; `token`: find the token and key an
//!   RFC 7512 URI names, log in, read the public key; `scheme`: TLS signature schemes ↔
//!   PKCS#11 mechanisms.
//! - [`HsmSigningKey`] (`rustls_key`): the pool as a rustls `SigningKey`.
//! - `admission`: the limiter of full handshakes per pool ([`Limiter`]); `capacity`:
//!   each member's signatures/s (calibration burst, live estimate).
//! - [`provision`]: make a token, a key pair on it, and a certificate or CSR the token
//!   signs (for `hsmgate demo` and `hsmgate token`).
//! - [`metrics`]: metric names and their descriptions.
//! - `error`: [`SignerError`], typed: the PKCS#11 function and CKR code as values.
//! - `pin_check`: a PIN the module cannot check because this process is already logged
//!   in (a reload, a second key on the token) is checked elsewhere.
//! - `der`, `verify`, `pin`: helpers.
#![deny(unsafe_code)]

mod admission;
mod backend;
mod capacity;
mod cpu_time;
mod der;
mod error;
mod group;
mod handoff;
mod inline;
mod member;
pub mod metrics;
mod module;
mod offload;
mod on_runtime;
mod pin;
mod pin_check;
mod pkcs11;
mod pool;
mod priority;
pub mod provision;
mod rustls_key;
mod scheme;
mod token;
mod verify;
mod worker;

/* --- the pool and its settings --- */
pub use offload::Offloaded;
pub use pool::{
    ExpectedKey, GroupSettings, MemberSettings, MemberStatus, PoolSettings, SignerPool,
};
pub use rustls_key::HsmSigningKey;
pub use worker::wait_for_workers;

/* --- members --- */
pub use capacity::CapacitySource;
pub use member::MemberState;

/* --- admission control --- */
pub use admission::{
    AdmissionStatus, Entry, Gate, Limiter, Permit, ShedReason, Ticket, scope as admission_scope,
    scope_sync as admission_scope_sync,
};

/* --- tokens and keys --- */
pub use module::Module;
pub use pin::read_pin;
pub use pin_check::{PinCheck, PinChecker, set_pin_checker};
pub use token::{KeyInfo, KeyKind, Token};
pub use verify::{describe_key, same_public_key, verify};

/* --- measuring --- */
pub use cpu_time::thread_cpu_time;

/* --- errors --- */
pub use error::{KeyDiffers, KeyProblem, PinProblem, SignerError};
