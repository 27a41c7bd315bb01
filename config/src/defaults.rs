//! Every default of hsmgate's settings, in one place: the TOML validator, the nginx
//! reader's token keys, the signer pool and the benches all take their values from here,
//! so both configuration formats behave the same where neither says otherwise.
//!
//! | setting | default | where it applies |
//! |---|---|---|
//! | token sessions (signer threads) | [`SESSIONS`] = 4 | `[pkcs11] sessions`, group members, nginx token keys |
//! | queued signatures per token/member | [`QUEUE_DEPTH`] = 1024 | `queue_depth` |
//! | deadline of one signature | [`SIGN_TIMEOUT`] = 2 s | `sign_timeout_ms`, nginx token keys |
//! | deadline of one attempt on one member | [`OP_TIMEOUT`] = 500 ms | `hsm.group.op_timeout_ms` |
//! | requests a signer thread takes per wake-up | [`BATCH_MAX`] = 32 | every pool |
//! | health probe interval (members idle since the last round) | [`PROBE_INTERVAL`] = 1 s | `hsm.group.probe_interval_ms`, single tokens |
//! | recovery attempt deadline | [`RECOVERY_TIMEOUT`] = 3 s | `hsm.group.recovery_timeout_ms` |
//! | signer threads abandoned in hung calls, at most | [`MAX_ABANDONED_THREADS`] = 64 | `hsm.group.max_abandoned_threads` |
//! | PKCS#11 connections per member | [`CONNECTIONS`] = 1 | `hsm.group...member.connections` |
//! | upstream connect timeout | [`UPSTREAM_CONNECT_TIMEOUT`] = 3 s | `upstream.connect_timeout_ms` |
//! | upstream request timeout | [`UPSTREAM_REQUEST_TIMEOUT`] = 60 s | `upstream.request_timeout_ms` |
//! | graceful stop | [`SHUTDOWN_GRACE`] = 10 s | `shutdown.grace_ms` (nginx files: 30 s, nginx's own) |
//! | session lifetime | [`SESSION_TIMEOUT`] = 5 min | `tls.session_timeout_ms`, nginx's `ssl_session_timeout` |
//! | client certificates | asked for and required (`on`) when CAs are given, else not asked for; depth 1 | `tls.client_certificate`, `tls.verify_client`, `tls.verify_depth`; nginx's `ssl_verify_client` (default `off` even with CAs), `ssl_verify_depth` |
//! | OCSP stapling | off; when on: the certificate's responder, response not verified, fetched again hourly (or 5 min before `nextUpdate`), retried after 5 s doubling to 5 min | `tls.ocsp_stapling`, `tls.ocsp_responder`, `tls.ocsp_verify`; nginx's `ssl_stapling`, `ssl_stapling_responder`, `ssl_stapling_verify` |
//! | TLS handshake (connection → handshake done) | [`HANDSHAKE_TIMEOUT`] = 10 s | `limits.handshake_timeout_ms`, nginx's `ssl_handshake_timeout` |
//! | client limits: head and body timeouts, header buffers, HTTP/2 streams, keep-alive | nginx's ([`ClientLimits::default`](crate::nginx::ClientLimits)) | `[limits]`, nginx's `client_*`, `large_client_header_buffers`, `http2_max_concurrent_streams`, `keepalive_timeout`, `keepalive_requests`, `keepalive_time` |
//! | pid file of nginx configurations | [`PID_FILE`] | nginx's `pid` |
//! | admission control | [`Admission::default`](crate::Admission) | `[admission]`, `HSMGATE_ADMISSION*` |
//! | async runtime threads | one per CPU the process may use, at least [`MIN_RUNTIME_THREADS`] = 2 | `[runtime] threads`, nginx's `worker_processes N` (`auto`: this default) |

use std::time::Duration;

/// The pid file of an nginx configuration without `pid` (`-s` finds the process by it).
pub const PID_FILE: &str = "/run/hsmgate/hsmgate.pid";
/// The fewest async runtime threads when none are configured, however few CPUs the
/// process may use. With one CPU shared with its upstream (a sidecar's pod, the
/// benchmarks' layout), a second thread carries on while the first is preempted by the
/// upstream it has just written to, and the upstream finds several requests per wake-up
/// (keep-alive through the upstream: 1.6 → 0.7 context switches and about −7 % CPU per
/// request; full handshakes unchanged; see the README's "More runtime threads than
/// cores").
pub const MIN_RUNTIME_THREADS: usize = 2;
/// Signer threads (one PKCS#11 session each) per token or member.
pub const SESSIONS: usize = 4;
/// Signatures queued per token or member before new ones are refused.
pub const QUEUE_DEPTH: usize = 1024;
/// How long one signature may take, queueing and retries included.
pub const SIGN_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long one attempt on one member may take before it is fenced and retried elsewhere.
pub const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How many queued requests a signer thread takes per wake-up.
pub const BATCH_MAX: usize = 32;
/// How often a member idle since the last round is probed (one that signed needs no
/// probe): a member that dies while idle takes its capacity away within about this.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(1000);
/// How long one recovery attempt (open, log in, find the key) may take.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_millis(3000);
/// Signer threads left in hung calls, at most, before a member is not recovered again.
pub const MAX_ABANDONED_THREADS: usize = 64;
/// PKCS#11 module instances (connections to a network HSM) per member.
pub const CONNECTIONS: usize = 1;
/// Upstream TCP connect timeout.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(3000);
/// Upstream response timeout.
pub const UPSTREAM_REQUEST_TIMEOUT: Duration = Duration::from_millis(60_000);
/// How long a graceful stop drains (TOML configurations).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(10_000);
/// How long a client may take from its connection to the end of its TLS handshake
/// (nginx 1.22 uses `client_header_timeout`, 60 s; 1.25.5's `ssl_handshake_timeout`
/// defaults to 60 s too: hsmgate is stricter, a connection stuck in its handshake holds
/// a connection slot).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS session (ticket and cache) lifetime, nginx's `ssl_session_timeout`.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(300);

/// A duration default as the milliseconds the validators take.
pub(crate) const fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}
