//! Metric names of the signer, in one place. Recorded through the `metrics` facade: free
//! when no recorder is installed; the proxy installs a Prometheus one for `/metrics`.
//! Every signer metric carries a `member` label (the HSM member's name).

/// Counter: signing operations by `result` (`ok`, a CKR code, `expired`, `lost`, `overloaded`).
pub const OPERATIONS: &str = "hsmgate_signer_operations_total";
/// Histogram (seconds): time from enqueue to the token's answer.
pub const LATENCY: &str = "hsmgate_signer_latency_seconds";
/// Gauge: operations queued or being signed.
pub const IN_FLIGHT: &str = "hsmgate_signer_in_flight";
/// Histogram: how many requests a worker took in one wake-up.
pub const BATCH_SIZE: &str = "hsmgate_signer_batch_size";
/// Gauge: the member's state: 0 up, 1 fenced, 2 down, 3 recovering, 4 refused.
pub const STATE: &str = "hsmgate_signer_member_state";
/// Gauge: signer threads abandoned in calls that have not returned.
pub const ABANDONED: &str = "hsmgate_signer_abandoned_threads";
/// Counter: operations retried on another member, by `reason`.
pub const RETRIES: &str = "hsmgate_signer_retries_total";

/// Describe the metrics (help text and units) to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(OPERATIONS, "Private-key operations by member and result");
    metrics::describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "Time from queueing a signature to the token's answer"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Signatures queued or being signed");
    metrics::describe_histogram!(BATCH_SIZE, "Requests taken by a signer thread per wake-up");
    metrics::describe_gauge!(
        STATE,
        "Member state: 0 up, 1 fenced, 2 down, 3 recovering, 4 refused"
    );
    metrics::describe_gauge!(
        ABANDONED,
        "Signer threads abandoned in PKCS#11 calls that have not returned"
    );
    metrics::describe_counter!(RETRIES, "Signatures retried on another member, by reason");
}
