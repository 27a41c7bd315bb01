//! Metric names of the proxy (TLS handshakes, HTTP requests, upstream answers), in one
//! place, and the helpers that record them. The signer's are in
//! [`hsmgate_signer::metrics`]; README "Metrics" has the whole table.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Counter: TLS handshakes by `result` (`ok`, `failed`, `shed`, `timeout`), `version`
/// (`TLSv1.3`, `TLSv1.2`, `unknown` when it failed before one was chosen) and `kind`
/// (`full`, `resumed`; for a failed handshake, what the ClientHello attempted).
pub(crate) const HANDSHAKES: &str = "hsmgate_tls_handshakes_total";
/// Histogram (seconds): ClientHello read → handshake complete, by `kind`.
pub(crate) const HANDSHAKE_DURATION: &str = "hsmgate_tls_handshake_duration_seconds";
/// Histogram (seconds): the kernel's receipt of the ClientHello → handshake complete, by
/// `kind`: what the client waited for its handshake, accept queue included, seen from
/// the server (from the accept for a connection whose ClientHello carries no kernel
/// timestamp; see `arrival`).
pub(crate) const HANDSHAKE_WAIT: &str = "hsmgate_tls_handshake_wait_seconds";
/// Histogram (seconds): a shed handshake's accept → its alert written (the server's
/// side of the time a shed client waits for its answer).
pub(crate) const SHED_DURATION: &str = "hsmgate_tls_shed_duration_seconds";
/// Counter: handshakes shed (or refused by `ssl_reject_handshake`) by the accept loop
/// itself, their ClientHello in the socket when accepted: no task, no timer (a part of
/// [`HANDSHAKES`]' `shed` and `failed`).
pub(crate) const ANSWERED_AT_ACCEPT: &str = "hsmgate_tls_answered_at_accept_total";
/// Counter: HTTP requests answered, by `status` (the code sent, or 444 for a closed one).
pub(crate) const REQUESTS: &str = "hsmgate_http_requests_total";
/// Histogram (seconds): request sent upstream → response head, by `upstream` and
/// `result` (`ok`, `error`, `timeout`).
pub(crate) const UPSTREAM_DURATION: &str = "hsmgate_upstream_response_duration_seconds";
/// Histogram (seconds): the CPU time of one signature with a key from a PEM file, made in
/// software on the connection's thread (the counterpart of the signer's
/// `hsmgate_signer_call_cpu_seconds`).
pub(crate) const FILE_KEY_SIGN_CPU: &str = "hsmgate_tls_file_key_sign_cpu_seconds";
/// Counter: access log lines dropped because the writer's queue was full.
pub(crate) const ACCESS_LOG_DROPPED: &str = "hsmgate_access_log_dropped_total";

/// Counter: OCSP responses fetched for stapling, by `certificate` (its subject) and
/// `result` (`stapled`, `error`).
pub(crate) const OCSP_FETCHES: &str = "hsmgate_ocsp_fetches_total";
/// Gauge: the `nextUpdate` (Unix seconds) of the OCSP response stapled now to
/// `certificate`'s handshakes; 0 while none is (not yet fetched, refused or expired).
pub(crate) const OCSP_NEXT_UPDATE: &str = "hsmgate_ocsp_staple_next_update_seconds";
/// Gauge: 1 when the last load of the configuration (the start, or a reload) succeeded,
/// 0 when a reload failed and the previous configuration serves on (Prometheus's own
/// `prometheus_config_last_reload_successful`).
pub(crate) const CONFIG_RELOAD_OK: &str = "hsmgate_config_last_reload_successful";
/// Gauge: when (Unix seconds) the configuration serving now was loaded.
pub(crate) const CONFIG_RELOAD_TIME: &str = "hsmgate_config_last_reload_success_timestamp_seconds";
/// Counter: reloads by `result` (`ok`, `failed`).
pub(crate) const CONFIG_RELOADS: &str = "hsmgate_config_reloads_total";
/// Gauge: 1, with the `version` running.
pub(crate) const BUILD_INFO: &str = "hsmgate_build_info";

/// A configuration loaded (`reload`: by a reload, else at start) or a reload failed.
pub(crate) fn config_loaded(ok: bool, reload: bool) {
    metrics::gauge!(CONFIG_RELOAD_OK).set(f64::from(u8::from(ok)));
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(CONFIG_RELOAD_TIME).set(now.floor());
    }
    let (done, failed) = (
        metrics::counter!(CONFIG_RELOADS, "result" => "ok"),
        metrics::counter!(CONFIG_RELOADS, "result" => "failed"),
    );
    match (reload, ok) {
        (false, _) => {
            // Both series from the start, so that a rate or an alert has data.
            done.increment(0);
            failed.increment(0);
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        }
        (true, true) => done.increment(1),
        (true, false) => failed.increment(1),
    }
}

/// How a handshake ended, for [`HANDSHAKES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeResult {
    /// Completed.
    Ok,
    /// The client or the signer failed it (bad ClientHello, alert, signing error).
    Failed,
    /// Shed by admission control before any key exchange.
    Shed,
    /// Not complete within the handshake timeout.
    Timeout,
}

impl HandshakeResult {
    fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Failed => "failed",
            HandshakeResult::Shed => "shed",
            HandshakeResult::Timeout => "timeout",
        }
    }
}

/// Count one handshake; `took` is recorded for completed ones (ClientHello → done) and
/// for shed ones (accept → alert written).
pub(crate) fn handshake(
    result: HandshakeResult,
    version: &'static str,
    resumed: bool,
    took: Duration,
) {
    // One handle per label set, taken once (as for requests): no registry lookup per
    // handshake, which a flood of shed ones would pay thousands of times a second.
    const VERSIONS: [&str; 3] = ["TLSv1.3", "TLSv1.2", "unknown"];
    static COUNTERS: [OnceLock<metrics::Counter>; 4 * 3 * 2] =
        [const { OnceLock::new() }; 4 * 3 * 2];
    static DURATION: [OnceLock<metrics::Histogram>; 2] = [const { OnceLock::new() }; 2];
    static SHED: OnceLock<metrics::Histogram> = OnceLock::new();
    let kind = kind_label(resumed);
    let count = || metrics::counter!(HANDSHAKES, "result" => result.as_str(), "version" => version, "kind" => kind);
    match VERSIONS.iter().position(|v| *v == version) {
        Some(v) => with_handle(
            // The variants in declaration order index the handles (4 results).
            &COUNTERS[result as usize * 6 + v * 2 + usize::from(resumed)],
            count,
            |c| c.increment(1),
        ),
        None => count().increment(1),
    }
    if result == HandshakeResult::Ok {
        with_handle(
            &DURATION[usize::from(resumed)],
            || metrics::histogram!(HANDSHAKE_DURATION, "kind" => kind),
            |h| h.record(took.as_secs_f64()),
        );
    } else if result == HandshakeResult::Shed {
        with_handle(
            &SHED,
            || metrics::histogram!(SHED_DURATION),
            |h| h.record(took.as_secs_f64()),
        );
    }
}

/// Count a handshake shed (`shed`) or refused by the accept loop itself.
pub(crate) fn answered_at_accept(shed: bool) {
    static COUNTERS: [OnceLock<metrics::Counter>; 2] = [const { OnceLock::new() }; 2];
    let result = if shed { "shed" } else { "rejected" };
    with_handle(
        &COUNTERS[usize::from(shed)],
        || metrics::counter!(ANSWERED_AT_ACCEPT, "result" => result),
        |c| c.increment(1),
    );
}

/// Record a completed handshake's whole wait (see [`HANDSHAKE_WAIT`]).
pub(crate) fn handshake_wait(resumed: bool, waited: Duration) {
    static WAIT: [OnceLock<metrics::Histogram>; 2] = [const { OnceLock::new() }; 2];
    with_handle(
        &WAIT[usize::from(resumed)],
        || metrics::histogram!(HANDSHAKE_WAIT, "kind" => kind_label(resumed)),
        |h| h.record(waited.as_secs_f64()),
    );
}

/// Use the handle `make` gives, kept in `slot` once the recorder is installed (a handle
/// taken before would stay a no-op, so until then each use makes its own).
fn with_handle<T>(slot: &OnceLock<T>, make: impl FnOnce() -> T, apply: impl FnOnce(&T)) {
    if INSTALLED.load(Ordering::Acquire) {
        apply(slot.get_or_init(make));
    } else {
        apply(&make());
    }
}

/// The `kind` label of the handshake metrics.
fn kind_label(resumed: bool) -> &'static str {
    if resumed { "resumed" } else { "full" }
}

/// The label of a negotiated protocol version.
pub(crate) fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// Count one answered request.
pub(crate) fn request(status: u16) {
    // One handle per status, taken once: no registry lookup and label string per request.
    static COUNTERS: [OnceLock<metrics::Counter>; 600] = [const { OnceLock::new() }; 600];
    let register = || metrics::counter!(REQUESTS, "status" => status.to_string());
    match COUNTERS.get(usize::from(status)) {
        Some(slot) => with_handle(slot, register, |c| c.increment(1)),
        None => register().increment(1),
    }
}

/// How one upstream exchange ended, the `result` label of [`UPSTREAM_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamResult {
    /// A response head arrived.
    Ok,
    /// The exchange failed (connect, request or connection).
    Error,
    /// No response head within `proxy_read_timeout`.
    Timeout,
}

impl UpstreamResult {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::Error => "error",
            UpstreamResult::Timeout => "timeout",
        }
    }
}

/// The [`UPSTREAM_DURATION`] histograms of one upstream group, one per result: taken
/// when the group is built (with its generation, after the recorder is installed), so
/// a request records without a label string and a registry lookup.
pub(crate) struct UpstreamTimes([metrics::Histogram; 3]);

impl UpstreamTimes {
    /// The handles of the upstream group `name`.
    pub(crate) fn new(name: &str) -> UpstreamTimes {
        // In the order of the variants: `record` indexes by the variant.
        use UpstreamResult::{Error, Ok, Timeout};
        UpstreamTimes([Ok, Error, Timeout].map(|result| {
            metrics::histogram!(UPSTREAM_DURATION, "upstream" => name.to_owned(), "result" => result.as_str())
        }))
    }

    /// Record one exchange.
    pub(crate) fn record(&self, result: UpstreamResult, took: Duration) {
        self.0[result as usize].record(took.as_secs_f64());
    }
}

impl std::fmt::Debug for UpstreamTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamTimes")
    }
}

/// Handles are kept (by [`with_handle`]) only once a recorder is installed: one taken
/// before would stay the no-op recorder's.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A recorder has been installed (by [`crate::admin::install_recorder`]).
pub(crate) fn recorder_installed() {
    INSTALLED.store(true, Ordering::Release);
}

/// Describe the proxy's metrics (help text and units) to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        HANDSHAKES,
        "TLS handshakes by result, protocol version and kind (full or resumed)"
    );
    metrics::describe_histogram!(
        HANDSHAKE_DURATION,
        metrics::Unit::Seconds,
        "Time from the ClientHello to the end of a completed handshake"
    );
    metrics::describe_histogram!(
        HANDSHAKE_WAIT,
        metrics::Unit::Seconds,
        "Time from the kernel's receipt of the ClientHello (the accept queue included; the accept where the kernel gave no timestamp) to the end of a completed handshake"
    );
    metrics::describe_histogram!(
        SHED_DURATION,
        metrics::Unit::Seconds,
        "Time from accepting a shed handshake's connection to its alert written"
    );
    metrics::describe_counter!(
        ANSWERED_AT_ACCEPT,
        "Handshakes shed or refused by the accept loop itself (ClientHello already received), by result"
    );
    metrics::describe_counter!(REQUESTS, "HTTP requests answered, by status code");
    metrics::describe_histogram!(
        FILE_KEY_SIGN_CPU,
        metrics::Unit::Seconds,
        "CPU time of one signature with a key from a file (in software), on the thread that made it"
    );
    metrics::describe_histogram!(
        UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "Time from sending a request upstream to its response head, by upstream and result"
    );
    metrics::describe_counter!(
        OCSP_FETCHES,
        "OCSP responses fetched for stapling, by certificate and result (stapled, error)"
    );
    metrics::describe_gauge!(
        OCSP_NEXT_UPDATE,
        metrics::Unit::Seconds,
        "nextUpdate (Unix time) of the OCSP response stapled now, by certificate; 0 while none is stapled"
    );
    metrics::describe_gauge!(
        CONFIG_RELOAD_OK,
        "1 when the last load of the configuration (start or reload) succeeded, 0 when a reload failed and the previous configuration serves on"
    );
    metrics::describe_gauge!(
        CONFIG_RELOAD_TIME,
        metrics::Unit::Seconds,
        "When (Unix time) the configuration serving now was loaded"
    );
    metrics::describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads, by result (ok, failed)"
    );
    metrics::describe_gauge!(
        BUILD_INFO,
        "1, labelled with the version of hsmgate running"
    );
    metrics::describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer's queue was full"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels() {
        assert_eq!(
            version_label(Some(rustls::ProtocolVersion::TLSv1_3)),
            "TLSv1.3"
        );
        assert_eq!(
            version_label(Some(rustls::ProtocolVersion::TLSv1_2)),
            "TLSv1.2"
        );
        assert_eq!(version_label(None), "unknown");
        assert_eq!(HandshakeResult::Shed.as_str(), "shed");
    }
}
