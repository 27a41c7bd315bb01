//! Signing on the connections' threads (`[admission] inline_signing`, on by default): a
//! token that computes in the process and fast (SoftHSM's P-256) signs there; a slow
//! operation (SoftHSM's RSA-2048) keeps the signer threads, and the whole signing step
//! of each full handshake (rustls' processing of the ClientHello) runs on a runtime
//! thread that can be spared (half of them stay free) or else on a signer thread, so that
//! no runtime thread waits; a token behind another process (p11-kit's server, in
//! `frozen_token`) keeps the signer threads and signature hand-offs, whatever its speed;
//! the setting turns both off.

use std::sync::Arc;

use crate::support::client::{admin_get_blocking, client_config, connect, metric};
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, start_upstream};

/// Start hsmgate on a fresh `key` token with `admission` added to its `[admission]`
/// section, make `n` full handshakes (eight at a time) and return the proxy's /metrics,
/// /status and log. Shedding is off: eight RSA-2048 handshakes at once on two sessions
/// of a slow machine's SoftHSM are more than admission lets wait, and these tests are
/// about where signatures are made, not about shedding (`admission.rs` is).
async fn handshakes_with(key: KeyType, admission: &str, n: usize) -> (String, String, String) {
    handshakes_under(key, admission, n, &[]).await
}

/// Full handshakes' signing steps counted with `result` (`ran` on signer threads,
/// `ran_inline` on runtime threads) in a /metrics page.
fn steps(metrics: &str, result: &str) -> f64 {
    metric(
        metrics,
        "hsmgate_signer_handshake_jobs_total",
        &[&format!("result=\"{result}\"")],
    )
}

/// As [`handshakes_with`], hsmgate started under `wrapper` (see `ProxyProcess::start_under`).
async fn handshakes_under(
    key: KeyType,
    admission: &str,
    n: usize,
    wrapper: &[&str],
) -> (String, String, String) {
    let token = TestToken::new(key);
    let upstream = start_upstream("echo");
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n\n[admission]\nenabled = false\n{admission}\n",
        config_for(&token, upstream, "sessions = 2")
    );
    let proxy =
        ProxyProcess::start_under(token.path(), &config, &[], wrapper).expect("hsmgate starts");
    let client = client_config(&token.ca_pem, &[b"http/1.1"]);
    for _ in 0..n.div_ceil(8) {
        let batch: Vec<_> = (0..8)
            .map(|_| tokio::spawn(connect(proxy.addr, Arc::clone(&client))))
            .collect();
        for b in batch {
            if let Err(e) = b.await.expect("task") {
                panic!("handshake failed: {e}\n{}", proxy.log_text());
            }
        }
    }
    let admin = proxy.admin_addr();
    let metrics = admin_get_blocking(admin, "/metrics").1;
    let status = admin_get_blocking(admin, "/status?format=json").1;
    (metrics, status, proxy.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_token_in_the_process_signs_on_the_connections_threads() {
    let (metrics, status, log) = handshakes_with(KeyType::EcP256, "", 40).await;
    assert!(
        status.contains("\"signs_inline\": true"),
        "/status: {status}\n{log}"
    );
    assert!(
        status.contains("\"handshake_jobs\": false"),
        "/status: {status}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_signer_inline", &[]),
        1.0,
        "{metrics}\n{log}"
    );
    assert!(
        log.contains("signing on the connections' threads"),
        "no log line says so:\n{log}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_signer_handshake_jobs", &[]),
        0.0,
        "{metrics}"
    );
    // Every signature is counted as before, wherever it was made.
    let ok = metric(
        &metrics,
        "hsmgate_signer_operations_total",
        &["result=\"ok\""],
    );
    assert!(
        ok >= 40.0,
        "{ok} signatures counted for 40 handshakes\n{metrics}"
    );
    assert!(metric(&metrics, "hsmgate_signer_latency_seconds_count", &[]) >= 40.0);
    // And so is each signature's CPU time, on the thread that made it.
    let calls = metric(&metrics, "hsmgate_signer_call_cpu_seconds_count", &[]);
    let cpu = metric(&metrics, "hsmgate_signer_call_cpu_seconds_sum", &[]);
    assert!(calls >= 40.0, "{calls} signatures' CPU time\n{metrics}");
    assert!(cpu > 0.0, "P-256 in SoftHSM takes CPU: {cpu} s\n{metrics}");
    // /status shows it per member, as a moving average.
    let doc: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let per_signature = doc["keys"][0]["members"][0]["cpu_us_per_signature"]
        .as_f64()
        .unwrap_or_default();
    assert!(per_signature > 0.0, "/status: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_operation_or_the_setting_keeps_the_signer_threads() {
    let (metrics, status, log) = handshakes_with(KeyType::Rsa2048, "", 8).await;
    assert!(
        status.contains("\"signs_inline\": false"),
        "/status: {status}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_signer_inline", &[]),
        0.0,
        "RSA-2048 in SoftHSM takes a millisecond or more\n{metrics}\n{log}"
    );
    // On the signer threads too, each signature's CPU is counted: SoftHSM's RSA-2048
    // computes in this process, on the signer thread, for a good part of a millisecond.
    let calls = metric(&metrics, "hsmgate_signer_call_cpu_seconds_count", &[]);
    let cpu = metric(&metrics, "hsmgate_signer_call_cpu_seconds_sum", &[]);
    assert!(calls >= 8.0, "{calls} signatures' CPU time\n{metrics}");
    assert!(
        cpu / calls > 100e-6,
        "{} µs of CPU per RSA-2048 signature\n{metrics}",
        cpu / calls * 1e6
    );
    // The handshakes' signing steps ran with the member's sessions, and said so: on a
    // runtime thread while half of them stayed free (`ran_inline`), else on the signer
    // threads (`ran`).
    assert!(
        status.contains("\"handshake_jobs\": true"),
        "/status: {status}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_signer_handshake_jobs", &[]),
        1.0,
        "{metrics}\n{log}"
    );
    let (ran, inline) = (steps(&metrics, "ran"), steps(&metrics, "ran_inline"));
    assert!(
        ran + inline >= 8.0,
        "{ran} + {inline} steps ran for 8 handshakes\n{metrics}"
    );
    // Two runtime threads here (the test machine's CPUs, at least two): the first of
    // each eight found one to spare.
    assert!(inline >= 1.0, "none on a runtime thread\n{metrics}");
    assert!(
        log.contains("handshakes' signing steps run on signer threads"),
        "{log}"
    );
    let ok = metric(
        &metrics,
        "hsmgate_signer_operations_total",
        &["result=\"ok\""],
    );
    assert!(ok >= 8.0, "{ok} signatures counted\n{metrics}");
    // With one runtime thread, none can be spared: every step on the signer threads.
    let one_thread = "[runtime]\nthreads = 1";
    let (metrics, _, log) = handshakes_with(KeyType::Rsa2048, one_thread, 8).await;
    let (ran, inline) = (steps(&metrics, "ran"), steps(&metrics, "ran_inline"));
    assert!(
        ran >= 8.0 && inline == 0.0,
        "{ran} on signer threads, {inline} on the one runtime thread\n{metrics}\n{log}"
    );
    let (metrics, _, log) = handshakes_with(KeyType::Rsa2048, "inline_signing = false", 8).await;
    assert_eq!(
        metric(&metrics, "hsmgate_signer_handshake_jobs", &[]),
        0.0,
        "inline_signing = false\n{metrics}\n{log}"
    );
    assert_eq!(steps(&metrics, "ran") + steps(&metrics, "ran_inline"), 0.0);
    let (metrics, _, log) = handshakes_with(KeyType::EcP256, "inline_signing = false", 8).await;
    assert_eq!(
        metric(&metrics, "hsmgate_signer_inline", &[]),
        0.0,
        "inline_signing = false\n{metrics}\n{log}"
    );
    assert!(
        !log.contains("signing on the connections' threads"),
        "{log}"
    );
}

/// A runtime thread runs a slow token's signing step only at the signer threads' lower
/// priority, which it must be able to give back afterwards: a process that cannot raise
/// a thread's priority again (no `CAP_SYS_NICE`, as in a non-root container) keeps every
/// step on the signer threads, and says why; with `signer_nice = 0` there is nothing to
/// give back and the runtime threads run them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_priority_to_give_back_the_steps_stay_on_the_signer_threads() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    // Root drops the capability; any other user has none (unless RLIMIT_NICE allows
    // raising priorities, which the test machines do not set).
    let wrapper: &[&str] = match root {
        true => &["setpriv", "--bounding-set=-sys_nice"],
        false => &[],
    };
    let (metrics, _, log) = handshakes_under(KeyType::Rsa2048, "", 8, wrapper).await;
    let (ran, inline) = (steps(&metrics, "ran"), steps(&metrics, "ran_inline"));
    assert!(
        ran >= 8.0 && inline == 0.0,
        "{ran} on signer threads, {inline} on runtime threads\n{metrics}\n{log}"
    );
    assert!(
        log.contains("cannot give a thread's priority back"),
        "{log}"
    );
    let (metrics, _, log) = handshakes_under(KeyType::Rsa2048, "signer_nice = 0", 8, wrapper).await;
    assert!(
        steps(&metrics, "ran_inline") >= 1.0,
        "signer_nice = 0: nothing to give back\n{metrics}\n{log}"
    );
}

/// A flood of full handshakes on a slow in-process token (SoftHSM's RSA-2048), admission
/// off: every handshake waits for the token, yet none holds a thread of its own while it
/// waits (the signing step runs on the signer threads), so the process's threads stay
/// those it started with, and every handshake completes. (With `inline_signing = false`,
/// each waiting signature holds a thread in `block_in_place`: 46 threads instead of 6.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_handshakes_hold_no_thread_each() {
    let token = TestToken::new(KeyType::Rsa2048);
    let upstream = start_upstream("echo");
    let config = format!(
        "{}\n[admission]\nenabled = false\n[runtime]\nthreads = 2\n",
        config_for(&token, upstream, "sessions = 2")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let idle = threads();
    let client = client_config(&token.ca_pem, &[b"http/1.1"]);
    // 64 at once: at 1–2 ms per signature on two sessions, most of them wait.
    let flood: Vec<_> = (0..64)
        .map(|_| tokio::spawn(connect(proxy.addr, Arc::clone(&client))))
        .collect();
    let mut most = idle;
    while !flood.iter().all(|h| h.is_finished()) {
        most = most.max(threads());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for h in flood {
        if let Err(e) = h.await.expect("task") {
            panic!("handshake failed: {e}\n{}", proxy.log_text());
        }
    }
    // A thread or two may come and go (tokio's blocking pool for a log write or a
    // file); a thread per waiting handshake would be dozens.
    assert!(
        most <= idle + 4,
        "{idle} threads idle, {most} during 64 waiting handshakes\n{}",
        proxy.log_text()
    );
}

/// A ClientHello whose key share the server does not take gets a HelloRetryRequest from
/// the step on the signer thread (no signature yet); the second ClientHello is signed on
/// the connection's side, under the same admission: openssl s_client offering ffdhe2048
/// first (rustls has no finite-field groups) and X25519 second, admission on.
#[test]
fn a_hello_retry_is_signed_under_the_same_admission() {
    let token = TestToken::new(KeyType::Rsa2048);
    let upstream = start_upstream("echo");
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, upstream, "sessions = 2")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-tls1_3", "-groups", "ffdhe2048:X25519", "-msg"])
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&token.ca_pem)
        .arg("-connect")
        .arg(proxy.addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", proxy.log_text());
    // The retry request is a ServerHello too: two of them, then the signature.
    assert_eq!(text.matches(", ServerHello").count(), 2, "{text}");
    assert!(text.contains("CertificateVerify"), "{text}");
    assert!(text.contains("Server Temp Key: X25519"), "{text}");
    let metrics = admin_get_blocking(proxy.admin_addr(), "/metrics").1;
    let admitted = metric(&metrics, "hsmgate_admission_admitted_total", &[]);
    assert_eq!(admitted, 1.0, "{metrics}");
    // The permit went back once the signature was made.
    assert_eq!(
        metric(&metrics, "hsmgate_admission_in_flight", &[]),
        0.0,
        "{metrics}"
    );
    // One step, wherever it ran (on a runtime thread that could be spared, here).
    assert_eq!(
        steps(&metrics, "ran") + steps(&metrics, "ran_inline"),
        1.0,
        "{metrics}"
    );
    let ok = metric(
        &metrics,
        "hsmgate_signer_operations_total",
        &["result=\"ok\""],
    );
    assert!(ok >= 1.0, "{metrics}");
}
