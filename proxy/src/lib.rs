//! hsmgate's proxy: TLS termination with keys held in PKCS#11 tokens, requests forwarded
//! to an upstream over plain HTTP or TLS.
//!
//! Request path:
//!
//! ```text
//! client ─TLS─▶ server (accept, handshake ─sign─▶ hsmgate_signer pool ─▶ token)
//!                  └─ hyper HTTP/1.1 | HTTP/2 ─▶ route ─HTTP/1.1 keep-alive─▶ upstream
//! ```
//!
//! Either configuration format becomes the same runtime model ([`site`]): listeners →
//! servers → locations. Parts, in request order:
//! - [`server`]: the control loop: reload/stop ([`server::Control`]); [`conn`]: sockets,
//!   accept loops, connections;
//! - [`generation`]: everything one configuration builds, swapped whole on reload
//!   (the format is chosen by file name: `*.toml` native, anything else nginx);
//! - [`keys`]: certificate/key pairs → signer pools (token keys) or software keys;
//! - [`tickets`]: session tickets from `ssl_session_ticket_key` files (shared, rotated);
//! - [`tls`]: rustls settings per address, certificate choice by SNI and key type;
//!   [`kx`]: the P-521 key exchange rustls' provider lacks;
//!   [`hello`]: the ClientHello read before any crypto, full handshake or resumption
//!   (admission control: [`hsmgate_signer::Limiter`]); [`tls_io`]: the TLS stream
//!   that sends rustls' own records (alerts) after every read;
//! - [`route`]: server/location choice, `return`, `proxy_pass`; [`vars`]: `$variables`;
//!   [`reqlog`]: a request's access log line; [`uri`]: `Host` check, path normalisation;
//! - [`h1guard`]: HTTP/1.1 request heads checked as nginx does, `client_header_timeout`;
//!   [`body`]: a streamed request body whose failure is the client's; [`spool`]: a
//!   buffered one (`proxy_request_buffering on`), in memory or an unlinked temp file;
//! - [`tunnel`]: `Upgrade` (WebSocket) passed through after the upstream's `101`;
//! - [`balance`]: upstream groups (weighted round-robin, keep-alive pools);
//!   [`upstream_tls`]: TLS to upstreams (`proxy_pass https://`, `proxy_ssl_*`);
//! - [`client_cert`]: client certificates (`ssl_verify_client`) and their variables;
//! - [`forward`]: hop-by-hop headers, error responses; [`access_log`]: the log writer;
//! - [`control`]: pid file, `-s`, signals; [`notify`]: systemd `sd_notify`;
//! - [`admin`] (`/healthz`, `/readyz`, `/metrics`, `/status`), [`status`] (the status
//!   document), [`status_page`] (its HTML page), [`top`] (`hsmgate top`), [`metrics`]
//!   (the proxy's metric names), [`demo`] (`hsmgate demo`), [`token_cli`] (`hsmgate
//!   token`: key and certificate on your own token), [`echo_upstream`] (the built-in echo
//!   upstream), [`error`].
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod client_cert;
pub mod conn;
pub mod control;
pub mod demo;
pub mod error;
pub mod forward;
pub mod generation;
pub mod h1guard;
pub mod hello;
pub mod keys;
pub mod kx;
pub mod metrics;
pub mod notify;
pub mod reqlog;
pub mod route;
pub mod server;
pub use hsmgate_config::site;
pub mod echo_upstream;
pub mod spool;
pub mod status;
pub mod status_page;
pub mod tickets;
pub mod tls;
pub mod tls_io;
pub mod token_cli;
pub mod top;
pub mod tunnel;
pub mod upstream_pool;
pub mod upstream_tls;
pub mod uri;
pub mod vars;

pub use error::ProxyError;
pub use generation::{ConfigSource, Generation};
pub use server::{Control, Proxy};
