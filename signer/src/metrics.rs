//! Metric names of the signer, in one place. Recorded through the `metrics` facade: free
//! when no recorder is installed; the proxy installs a Prometheus one for `/metrics`.
//! Every member metric carries `group`, `key` and `member` labels ([`member_labels`]:
//! a member's name alone is not unique, with two keys on one token or one name in two
//! groups); admission metrics carry `group` and `key`.

use metrics::Label;

/// The labels of a group's (admission) metrics.
pub(crate) fn group_labels(group: &str, key: &str) -> Vec<Label> {
    vec![
        Label::new("group", group.to_owned()),
        Label::new("key", key.to_owned()),
    ]
}

/// The labels of a member's metrics: its group's and its own name.
pub(crate) fn member_labels(group: &crate::GroupSettings, member: &str) -> Vec<Label> {
    with(
        &group_labels(&group.name, &group.key_label()),
        "member",
        member,
    )
}

/// The owner of a label set (a member's `group`, `key`, `member`; a limiter's `group`,
/// `key`) while it lives. The Prometheus exporter never forgets a series, so the series
/// of label sets that no one owns any more (a member or a pool a reload removed) are
/// left out of `/metrics` by [`hide_retired`] instead of staying at their last values
/// (a removed member's `member_state` "down" for good, a removed pool's capacity).
#[derive(Debug)]
pub(crate) struct SeriesOwner(SeriesId);

/// `group`, `key` and, for a member, `member`, as the exporter writes them.
type SeriesId = (String, String, Option<String>);

/// A label set's owners alive now (at 0 it is retired), and what the owners that are
/// gone had counted for `/status` (a member's operations and errors; a limiter's
/// admitted, resumed, shed), so that a pool a reload rebuilt shows counts since start,
/// as `/metrics` does.
#[derive(Debug, Default)]
struct Series {
    owners: usize,
    retired: [u64; 3],
}

/// Every label set an owner ever had.
static SERIES: std::sync::Mutex<Option<std::collections::HashMap<SeriesId, Series>>> =
    std::sync::Mutex::new(None);

fn series() -> std::sync::MutexGuard<'static, Option<std::collections::HashMap<SeriesId, Series>>> {
    SERIES.lock().unwrap_or_else(|e| e.into_inner())
}

impl SeriesOwner {
    /// Owns the label set of `labels` (its `group`, `key` and `member`).
    pub(crate) fn new(labels: &[Label]) -> SeriesOwner {
        let value = |name: &str| {
            (labels.iter())
                .find(|l| l.key() == name)
                .map(|l| escape(l.value()))
        };
        let id = (
            value("group").unwrap_or_default(),
            value("key").unwrap_or_default(),
            value("member"),
        );
        (series().get_or_insert_with(Default::default))
            .entry(id.clone())
            .or_default()
            .owners += 1;
        SeriesOwner(id)
    }

    /// Add what a going owner counted to its label set's retired counts.
    pub(crate) fn retire_counts(&self, counts: [u64; 3]) {
        if let Some(s) = series().as_mut().and_then(|m| m.get_mut(&self.0)) {
            for (total, n) in s.retired.iter_mut().zip(counts) {
                *total = total.saturating_add(n);
            }
        }
    }

    /// What earlier owners of this label set counted.
    pub(crate) fn retired_counts(&self) -> [u64; 3] {
        (series().as_ref())
            .and_then(|m| m.get(&self.0))
            .map_or_else(Default::default, |s| s.retired)
    }
}

impl Drop for SeriesOwner {
    fn drop(&mut self) {
        if let Some(s) = series().as_mut().and_then(|m| m.get_mut(&self.0)) {
            s.owners = s.owners.saturating_sub(1);
        }
    }
}

/// A label value as the Prometheus text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `text` (the Prometheus exposition) without the series of retired label sets (see
/// [`SeriesOwner`]); everything else as it is.
pub fn hide_retired(text: &str) -> String {
    let guard = series();
    let Some(map) = guard.as_ref().filter(|m| m.values().any(|s| s.owners == 0)) else {
        return text.to_owned();
    };
    let retired = |line: &str| {
        let Some(labels) = series_labels(line) else {
            return false;
        };
        let get = |name: &str| {
            (labels.iter())
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let (Some(group), Some(key)) = (get("group"), get("key")) else {
            return false;
        };
        map.get(&(group, key, get("member")))
            .is_some_and(|s| s.owners == 0)
    };
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !retired(line) {
            out.push_str(line);
        }
    }
    out
}

/// The label pairs of a series line (`name{a="1",b="x\"y"} 3`), values as written
/// (escaped); None for a comment or a line without labels.
fn series_labels(line: &str) -> Option<Vec<(&str, &str)>> {
    if line.starts_with('#') {
        return None;
    }
    let open = line.find('{')?;
    let mut pairs = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        let eq = rest.find("=\"")?;
        let name = rest[..eq].trim_start_matches(',');
        let body = &rest[eq + 2..];
        let mut escaped = false;
        let end = body.char_indices().find_map(|(i, c)| match (escaped, c) {
            (true, _) => {
                escaped = false;
                None
            }
            (false, '\\') => {
                escaped = true;
                None
            }
            (false, '"') => Some(i),
            _ => None,
        })?;
        pairs.push((name, &body[..end]));
        rest = &body[end + 1..];
        if !rest.starts_with(',') {
            return Some(pairs);
        }
    }
}

/// `labels` and one more.
pub(crate) fn with(labels: &[Label], key: &'static str, value: impl Into<String>) -> Vec<Label> {
    let mut out = labels.to_vec();
    out.push(Label::new(key, value.into()));
    out
}

/// Counter: health probes (a test signature of an idle member), by `result`.
pub const PROBES: &str = "hsmgate_signer_probes_total";
/// Counter: signing operations by `result` (`ok`, a CKR code, `expired`, `late`, `lost`,
/// `overloaded`).
pub const OPERATIONS: &str = "hsmgate_signer_operations_total";
/// Histogram (seconds): time from enqueue to the token's answer.
pub const LATENCY: &str = "hsmgate_signer_latency_seconds";
/// Histogram (seconds): the CPU time this process spent in one signature's PKCS#11 calls
/// (`C_SignInit` + `C_Sign`), on the thread that made them: the client library's own
/// share of this machine (a software token's whole signature; a network HSM's client
/// mostly waits, so little).
pub const CALL_CPU: &str = "hsmgate_signer_call_cpu_seconds";
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
/// Gauge: 1 when the member signs on the connections' threads (a token that computes in
/// the process and fast), 0 when on signer threads.
pub const INLINE: &str = "hsmgate_signer_inline";
/// Gauge: 1 when full handshakes' signing steps run with the member's sessions, on its
/// signer threads or a spare runtime thread (a token that computes in the process,
/// slowly), 0 otherwise.
pub const JOBS: &str = "hsmgate_signer_handshake_jobs";
/// Counter: full handshakes' signing steps for the member, by result (`ran` on a
/// signer thread; `ran_inline` on the connection's runtime thread with a session of the
/// member's, while half the runtime threads stay free; `returned` to the connection's
/// task, which then signs by the usual path; `expired` after waiting past the signature
/// deadline).
pub const JOBS_TOTAL: &str = "hsmgate_signer_handshake_jobs_total";

/// Gauge: the member's capacity in signatures/s (configured, calibrated at start, or
/// measured while saturated).
pub const CAPACITY: &str = "hsmgate_signer_capacity_ops_per_second";
/// Gauge: signatures/s the member made over the last second.
pub const RATE: &str = "hsmgate_signer_rate_ops_per_second";
/// Gauge: share of the member's sessions' time spent in C_Sign over the last second.
pub const UTILISATION: &str = "hsmgate_signer_utilisation_ratio";

/// Counter: full handshakes admitted, by `group`.
pub const ADMITTED: &str = "hsmgate_admission_admitted_total";
/// Counter: resumption attempts let through without admission, by `group`.
pub const RESUMED: &str = "hsmgate_admission_resumed_total";
/// Counter: full handshakes shed, by `group` and `reason`.
pub const SHED: &str = "hsmgate_admission_shed_total";
/// Histogram (seconds): how long admitted handshakes waited for admission.
pub const ADMISSION_WAIT: &str = "hsmgate_admission_wait_seconds";
/// Gauge: the current concurrency limit of full handshakes.
pub const ADMISSION_LIMIT: &str = "hsmgate_admission_limit";
/// Gauge: handshakes admitted and not yet signed.
pub const ADMISSION_IN_FLIGHT: &str = "hsmgate_admission_in_flight";
/// Gauge: handshakes waiting for admission.
pub const ADMISSION_WAITING: &str = "hsmgate_admission_waiting";
/// Gauge: signatures/s the group's serving members can make.
pub const ADMISSION_CAPACITY: &str = "hsmgate_admission_capacity_ops_per_second";

/// Describe the metrics (help text and units) to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(OPERATIONS, "Private-key operations by member and result");
    metrics::describe_counter!(
        PROBES,
        "Health probes (a test signature of an idle member, not counted in operations), by result"
    );
    metrics::describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "Time from queueing a signature to the token's answer"
    );
    metrics::describe_histogram!(
        CALL_CPU,
        metrics::Unit::Seconds,
        "CPU time this process spent in one signature's PKCS#11 calls"
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
    metrics::describe_gauge!(
        INLINE,
        "1 when the member signs on the connections' threads, 0 on signer threads"
    );
    metrics::describe_gauge!(
        JOBS,
        "1 when full handshakes' signing steps run with the member's sessions (signer threads or a spare runtime thread)"
    );
    metrics::describe_counter!(
        JOBS_TOTAL,
        "Full handshakes' signing steps run with the member's sessions (on signer threads or inline), by result"
    );
    metrics::describe_gauge!(CAPACITY, "Member capacity, signatures/s");
    metrics::describe_gauge!(RATE, "Signatures/s made by the member over the last second");
    metrics::describe_gauge!(
        UTILISATION,
        "Share of the member's session time spent in C_Sign over the last second"
    );
    metrics::describe_counter!(ADMITTED, "Full TLS handshakes admitted to the signer");
    metrics::describe_counter!(RESUMED, "Resumption attempts let through without admission");
    metrics::describe_counter!(SHED, "Full TLS handshakes shed, by reason");
    metrics::describe_histogram!(
        ADMISSION_WAIT,
        metrics::Unit::Seconds,
        "Time admitted handshakes waited for admission"
    );
    metrics::describe_gauge!(ADMISSION_LIMIT, "Concurrency limit of full handshakes");
    metrics::describe_gauge!(
        ADMISSION_IN_FLIGHT,
        "Full handshakes admitted, not yet signed"
    );
    metrics::describe_gauge!(ADMISSION_WAITING, "Full handshakes waiting for admission");
    metrics::describe_gauge!(
        ADMISSION_CAPACITY,
        "Signatures/s the group's serving members can make"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label set no one owns any more is left out of the page; one owned again is
    /// back; other series are untouched.
    #[test]
    fn retired_label_sets_are_left_out_of_the_page() {
        let member = |name: &str| {
            vec![
                Label::new("group", "g-test"),
                Label::new("key", "k\"1"),
                Label::new("member", name.to_owned()),
            ]
        };
        let page = "# TYPE m gauge\nm{group=\"g-test\",key=\"k\\\"1\",member=\"a\"} 0\n\
                    m{group=\"g-test\",key=\"k\\\"1\",member=\"b\"} 2\n\
                    n{key=\"k\\\"1\",group=\"g-test\",result=\"ok\",member=\"b\"} 5\n\
                    other 1\n";
        let a = SeriesOwner::new(&member("a"));
        let b = SeriesOwner::new(&member("b"));
        assert_eq!(hide_retired(page), page);
        drop(b);
        let shown = hide_retired(page);
        assert!(
            shown.contains("member=\"a\"} 0") && shown.contains("other 1"),
            "{shown}"
        );
        assert!(!shown.contains("member=\"b\""), "{shown}");
        let b = SeriesOwner::new(&member("b"));
        assert_eq!(hide_retired(page), page);
        drop((a, b));
    }
}
