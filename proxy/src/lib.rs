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
//! Either configuration format becomes the same runtime model
//! ([`hsmgate_config::site`]): listeners → servers → locations. Parts, in request order
//! (private modules; the public surface is the `pub use` list below and the
//! subcommands' modules):
//! - `proxy`: the [`Proxy`]: built from a configuration, served, reloaded and drained
//!   as [`Control`] messages say; `control`: those messages and where they come from
//!   (signals, the pid file, `-s`); `conn`: sockets, accept loops, connections;
//!   `sockopt`: the two TCP options of `listen` that need a raw `setsockopt`;
//!   `conn_info`: what a request knows about its connection; `conn_stats`: the counts
//!   of `stub_status`; `keepalive_limits`: `keepalive_requests` and `keepalive_time`
//!   close a client connection; `reusable`: idle connections closed for new ones at the
//!   connection limit; `drain`: the graceful drain of client connections;
//! - `generation`: everything one configuration builds, swapped whole on reload
//!   (the format is chosen by file name: `*.toml` native, anything else nginx);
//! - `keys`: certificate/key pairs → signer pools (token keys) or software keys
//!   (`file_key`: a PEM file's key, its signatures' CPU time measured);
//! - `tickets`: session tickets from `ssl_session_ticket_key` files (shared, rotated);
//!   `session_lifetime`: `ssl_session_timeout` enforced on cached and ticket sessions;
//! - `tls`: rustls settings per address, certificate choice by SNI and key type;
//!   `kx`: the P-521 key exchange rustls' provider lacks; `ocsp`: OCSP responses
//!   fetched from the certificate's responder and stapled (`ssl_stapling on`);
//!   `hello`: the ClientHello read before any crypto, full handshake or resumption
//!   (admission control: [`hsmgate_signer::Limiter`]); `door`: what a ClientHello gets
//!   before any crypto (refused, shed, admitted, queued), decided without waiting, and
//!   the accept loop's own answer to the ones shed; `arrival`: when the kernel
//!   received it (the accept queue's wait, for admission's door); `tls_io`: the TLS stream
//!   that sends rustls' own records (alerts) after every read; `prefixed`: a plain
//!   HTTP request on a TLS port, its first bytes given back (nginx's 497);
//! - `proxy_protocol`: the PROXY protocol header of `listen … proxy_protocol`;
//!   `realip`: the client a trusted load balancer names (`set_real_ip_from`);
//! - `route`: server/location choice, `return`, `proxy_pass`; `rewrite_phase`:
//!   `rewrite`, `set` and `if` run in order; `limits`: `limit_req`, `limit_conn`;
//!   `auth_basic`: password files and their hashes; `auth_request`: the subrequest
//!   that lets a request through; `error_redirect`: `error_page` and named locations; `vars`: `$variables`;
//!   `reqlog`: a request's access log line; `uri`: `Host` check, path normalisation;
//! - the answer: `expires` (`Expires`, `Cache-Control`); the upstream's answer:
//!   `proxy_redirect` (`Location`, `Refresh`), `set_cookie`
//!   (`proxy_cookie_path`, `proxy_cookie_domain`), both by `value_rewrite`'s rules;
//! - `h1guard`: HTTP/1.1 request heads checked as nginx does, `client_header_timeout`;
//!   `send_timeout`: a client that stops reading its answer is dropped
//!   (`h2_send_timeout`: an HTTP/2 stream whose window stays shut); `stall_timer`:
//!   the timer of that and of `proxy_read_timeout`, which costs nothing on progress;
//!   `limit_rate`: an answer's body sent no faster than `limit_rate`; `body`: the response body type, and a streamed request body whose failure is
//!   the client's; `spool`: a buffered one (`proxy_request_buffering on`), in memory
//!   or an unlinked temp file;
//! - `tunnel`: `Upgrade` (WebSocket) passed through after the upstream's `101`;
//! - `balance`: upstream groups and their servers' health; `pick`: which server first
//!   (round-robin, `least_conn`, `ip_hash`, `hash`, `random`); `upstream_pool`: keep-alive
//!   connections to upstream servers, each driven by the request that uses it;
//!   `upstream_h1`: hsmgate's own HTTP/1.1 client side of such a connection;
//!   `upstream_stream`: its socket, TCP or a Unix socket;
//!   `upstream_tls`: TLS to upstreams (`proxy_pass https://`, `proxy_ssl_*`);
//! - `client_cert`: client certificates (`ssl_verify_client`) and their variables;
//! - `error_line`: nginx's error log line, for nginx configurations;
//! - `error_page`: the pages hsmgate answers with itself; `hop_by_hop`: headers
//!   never forwarded; `access_log`: the log writer; `notify`: systemd `sd_notify`;
//! - [`waiting`]: a native-format start-up that waits, alive and not ready, for an HSM
//!   that cannot be used yet (down, hung, or a PIN that must not be tried again);
//! - `admin` (`/healthz`, `/readyz`, `/metrics`, `/status`), `status` (the status
//!   document), `status_page` (its HTML page), [`top`] (`hsmgate top`), `metrics`
//!   (the proxy's metric names), [`demo`] (`hsmgate demo`), [`token_cli`] (`hsmgate
//!   token`: key and certificate on your own token), [`pin_check`] (a PIN checked in a
//!   child process when this one is already logged in), [`echo_upstream`] (the built-in
//!   echo upstream), [`version`] (`hsmgate -v`, `-V`), `error`; [`allocator`]: the
//!   process's allocator (mimalloc, plain blocks where they align enough).
// No unsafe code but in `sockopt` (one `setsockopt` call) and `allocator` (the global
// allocator's calls into mimalloc), which allow it.
#![deny(unsafe_code)]

// The modules are private: the public surface is the `pub use` list below, plus the
// subcommands' modules (`demo`, `token_cli`, `top`, `echo_upstream`, `version`) and
// `waiting` (the binary's start-up), which the
// `hsmgate` binary and the tests call as namespaces.
mod access_log;
mod admin;
pub mod allocator;
mod arrival;
mod auth_basic;
mod auth_request;
mod balance;
mod body;
mod client_cert;
mod conn;
mod conn_info;
mod conn_stats;
mod control;
pub mod demo;
mod door;
mod drain;
pub mod echo_upstream;
mod error;
mod error_line;
mod error_page;
mod error_redirect;
mod expires;
mod file_key;
mod generation;
mod h1guard;
mod h2_send_timeout;
mod hello;
mod hop_by_hop;
mod keepalive_limits;
mod keys;
mod kx;
mod limit_rate;
mod limits;
mod metrics;
mod notify;
mod ocsp;
mod pick;
pub mod pin_check;
mod prefixed;
mod proxy;
mod proxy_protocol;
mod proxy_redirect;
mod realip;
mod reqlog;
mod reusable;
mod rewrite_phase;
mod route;
mod send_timeout;
mod session_lifetime;
mod set_cookie;
mod sockopt;
mod spool;
mod stall_timer;
mod status;
mod status_page;
mod tickets;
mod tls;
mod tls_io;
pub mod token_cli;
pub mod top;
mod tunnel;
mod upstream_h1;
mod upstream_pool;
mod upstream_stream;
mod upstream_tls;
mod uri;
mod value_rewrite;
mod vars;
pub mod version;
pub mod waiting;

/// The runtime model, from `hsmgate-config` (`crate::site` inside this crate).
use hsmgate_config::site;

/* --- the proxy: build, serve, control --- */
pub use control::{Control, PidFile, Signals, send_signal, signal_for};
pub use generation::{ConfigSource, Generation};
pub use keys::KeyDefaults;
pub use proxy::{Proxy, ReopenHook};

/* --- metrics --- */
pub use admin::install_recorder;
pub use metrics::describe as describe_metrics;

/* --- errors --- */
pub use error::ProxyError;
pub use error_line::NginxLine;
