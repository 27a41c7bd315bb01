//! hsmgate's signer: private-key operations over PKCS#11, on threads of their own.
//!
//! rustls signs synchronously inside the handshake, and a PKCS#11 call can take long or
//! never return (a hung HSM). So no PKCS#11 call runs on an async worker: each session
//! belongs to one OS thread of a [`SignerPool`], requests reach the threads through a
//! bounded queue and come back on a one-shot channel with a deadline, and the waiting
//! side (rustls' [`Signer::sign`](rustls::sign::Signer)) waits outside the runtime's
//! core threads.
//!
//! Parts:
//! - [`module`]: load and initialise a PKCS#11 module once per process.
//! - [`token`]: find the token and key an RFC 7512 URI names; log in; read the public key.
//! - `scheme`: TLS signature schemes ↔ PKCS#11 mechanisms.
//! - [`pool`]: settings and [`SignerPool`]; `group`: HA group, member choice, failover,
//!   supervisor (fencing, probes, recovery); `member`: one HSM's instances, sessions and
//!   state; `worker`: one signer thread; `handoff`: its request queue and answers.
//! - [`rustls_key`]: the pool as a rustls `SigningKey`.
//! - [`admission`]: the limiter of full handshakes per pool (adaptive concurrency limit,
//!   bounded wait, shedding); `capacity`: each member's signatures/s (calibration burst,
//!   live estimate).
//! - [`provision`]: make a token and a key pair on it (for `hsmgate demo`).
//! - `der`, [`verify`], [`pin`], [`metrics`], [`error`]: helpers.
#![deny(unsafe_code)]

pub mod admission;
mod capacity;
mod der;
pub mod error;
mod group;
mod handoff;
mod member;
pub mod metrics;
pub mod module;
pub mod pin;
pub mod pool;
pub mod provision;
pub mod rustls_key;
mod scheme;
pub mod token;
pub mod verify;
mod worker;

pub use admission::{AdmissionStatus, Gate, Limiter, Permit, ShedReason};
pub use capacity::CapacitySource;
pub use error::SignerError;
pub use member::MemberState;
pub use module::Module;
pub use pool::{
    ExpectedKey, GroupSettings, MemberSettings, MemberStatus, PoolSettings, SignerPool,
};
pub use rustls_key::HsmSigningKey;
pub use token::{KeyKind, Token};
pub use worker::wait_for_workers;
