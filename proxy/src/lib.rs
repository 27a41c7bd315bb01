//! hsmgate's proxy: TLS termination with keys held in PKCS#11 tokens, requests forwarded
//! as plain HTTP to an upstream.
//!
//! Request path:
//!
//! ```text
//! client ─TLS─▶ server (accept, handshake ─sign─▶ hsmgate_signer pool ─▶ token)
//!                  └─ hyper HTTP/1.1 | HTTP/2 ─▶ forward ─HTTP/1.1 keep-alive─▶ upstream
//! ```
//!
//! Parts: [`server`] (listeners, connections, drain), [`admin`] (`/healthz`, `/readyz`,
//! `/metrics`), [`tls`] (rustls settings and the
//! certificate/key check), [`forward`] (upstream client), [`demo`] (`hsmgate demo`),
//! [`upstream`] (the built-in echo upstream), [`error`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod demo;
pub mod error;
pub mod forward;
pub mod server;
pub mod tls;
pub mod upstream;

pub use error::ProxyError;
pub use server::Proxy;
