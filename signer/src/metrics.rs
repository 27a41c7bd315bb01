//! Metric names of the signer, in one place. Recorded through the `metrics` facade: free
//! when no recorder is installed; the proxy installs a Prometheus one for `/metrics`.

/// Counter: signing operations, labelled `token` and `result` (`ok`, a CKR code, `timeout`, `overloaded`).
pub const OPERATIONS: &str = "hsmgate_signer_operations_total";
/// Histogram (seconds): time from enqueue to the token's answer, as the handshake sees it.
pub const LATENCY: &str = "hsmgate_signer_latency_seconds";
/// Gauge: operations queued or being signed, labelled `token`.
pub const IN_FLIGHT: &str = "hsmgate_signer_in_flight";
/// Histogram: how many requests a worker took in one wake-up.
pub const BATCH_SIZE: &str = "hsmgate_signer_batch_size";

/// Describe the metrics (help text and units) to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(OPERATIONS, "Private-key operations by token and result");
    metrics::describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "Time from queueing a signature to the token's answer"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Signatures queued or being signed");
    metrics::describe_histogram!(BATCH_SIZE, "Requests taken by a signer thread per wake-up");
}
