//! Admission control, end to end: a real SoftHSM token (in process, or behind `p11-kit
//! server` in the lab), real rustls clients. A flood of full handshakes far above what
//! the token can sign is shed promptly with a TLS alert while the wait queue stays
//! bounded and an established keep-alive connection keeps being served; resumptions
//! pass while full handshakes are shed; the group's capacity follows its members.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::client::{KeepAlive, admin_get, admin_get_blocking, client_config, metric};
use crate::support::lab::HaLab;
use crate::support::net::free_port;
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, start_upstream};

/// How one handshake ended, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The server's `internal_error` alert: shed.
    Shed,
    Other,
}

async fn handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> (Outcome, Duration) {
    let started = Instant::now();
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(config).connect(name, tcp).await
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Ok(Ok(_tls)) => Outcome::Ok,
        Ok(Err(e)) if e.to_string().contains("InternalError") => Outcome::Shed,
        Ok(Err(e)) => {
            eprintln!("handshake failed otherwise: {e}");
            Outcome::Other
        }
        Err(_) => Outcome::Other,
    };
    (outcome, started.elapsed())
}

/// A client that keeps TLS 1.3 tickets (resumption on).
fn resuming_client(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut config = (*client_config(ca, &[b"http/1.1"])).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(16);
    Arc::new(config)
}

/// Wait until the group's capacity, as `/metrics` says, is 0 (every member down).
fn wait_for_no_capacity(proxy: &ProxyProcess) {
    let admin = proxy.admin_addr();
    crate::support::poll(
        Duration::from_secs(10),
        || format!("capacity never fell to 0:\n{}", proxy.log_text()),
        || {
            let body = admin_get_blocking(admin, "/metrics").1;
            (metric(&body, "hsmgate_admission_capacity_ops_per_second", &[]) == 0.0).then_some(())
        },
    );
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_an_alert_and_established_clients_are_served() {
    let token = TestToken::new(KeyType::Rsa2048);
    let upstream = start_upstream("echo");
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n\n[admission]\nmax_waiting = 8\n",
        config_for(&token, upstream, "sessions = 1")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();

    let mut established = KeepAlive::open(proxy.addr, &token.ca_pem).await;
    assert_eq!(established.get("/before").await.0, 200);
    // The signer thread (named sign-MEMBER-N) runs below the threads that serve connections (signer_nice 5).
    let nices = thread_nices(proxy.pid());
    let signer: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("sign-"))
        .collect();
    let process_nice = nices.iter().map(|(_, v)| *v).min().expect("threads");
    assert!(!signer.is_empty(), "no signer thread among {nices:?}");
    for (name, nice) in &signer {
        assert_eq!(*nice, (process_nice + 5).min(19), "{name}: {nices:?}");
    }

    // Open loop: waves of 120 simultaneous full handshakes, every 100 ms, for 2 s —
    // far more than one session of a software token signs (with the clients' own
    // crypto on the same two cores), so most must be shed.
    let client = client_config(&token.ca_pem, &[b"http/1.1"]);
    let flood = {
        let client = Arc::clone(&client);
        let addr = proxy.addr;
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..20 {
                for _ in 0..120 {
                    tasks.push(tokio::spawn(handshake(addr, Arc::clone(&client))));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("handshake task"));
            }
            out
        })
    };
    // Meanwhile: the keep-alive connection is served, and the wait queue never exceeds
    // its bound.
    let mut most_waiting = 0.0f64;
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while !flood.is_finished() {
        let t = Instant::now();
        let (status, body) = established.get(&format!("/during/{served}")).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(t.elapsed());
        served += 1;
        let (_, metrics) = admin_get(admin, "/metrics").await;
        most_waiting = most_waiting.max(metric(&metrics, "hsmgate_admission_waiting", &[]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcomes = flood.await.expect("flood");
    let count = |o| outcomes.iter().filter(|(x, _)| *x == o).count();
    let (ok, shed, other) = (
        count(Outcome::Ok),
        count(Outcome::Shed),
        count(Outcome::Other),
    );
    let shed_times: Vec<Duration> = outcomes
        .iter()
        .filter(|(o, _)| *o == Outcome::Shed)
        .map(|(_, t)| *t)
        .collect();
    let ok_times: Vec<Duration> = outcomes
        .iter()
        .filter(|(o, _)| *o == Outcome::Ok)
        .map(|(_, t)| *t)
        .collect();
    eprintln!(
        "flood of {}: {ok} completed (p99 {:?}), {shed} shed (p50 {:?}, p99 {:?}), {other} other; \
         keep-alive: {served} requests, slowest {slowest:?}; most waiting {most_waiting}",
        outcomes.len(),
        percentile(ok_times, 0.99),
        percentile(shed_times.clone(), 0.5),
        percentile(shed_times.clone(), 0.99),
    );
    assert_eq!(other, 0, "every handshake completes or gets the shed alert");
    assert!(ok > 0, "some handshakes are admitted and complete");
    assert!(shed > 0, "a flood far above capacity is shed");
    assert!(
        most_waiting <= 8.0,
        "the wait queue exceeded max_waiting: {most_waiting}"
    );
    // Shed at the door, not refused after waiting out the signing deadline (2 s): no
    // signature request expired or was refused by a full queue. The alert comes long
    // before the handshake timeout (10 s) even on a loaded machine: the clients' own
    // crypto shares the two cores (p99 0.3 s on a quiet machine, 2.7 s at load 10).
    let (_, ops) = admin_get(admin, "/metrics").await;
    for result in ["expired", "lost", "overloaded"] {
        assert_eq!(
            metric(
                &ops,
                "hsmgate_signer_operations_total",
                &[&format!("result=\"{result}\"")]
            ),
            0.0,
            "signatures {result}: {ops}"
        );
    }
    assert!(
        percentile(shed_times, 0.99) < Duration::from_secs(5),
        "shed handshakes were answered slowly"
    );
    assert!(
        served > 0,
        "the established connection was served during the flood"
    );
    assert_eq!(established.get("/after").await.0, 200);

    // The counters match what the clients saw (the keep-alive's handshake was admitted).
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "hsmgate_admission_shed_total", &[]) as usize,
        shed,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_admission_admitted_total", &[]) as usize,
        ok + 1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_tls_shed_duration_seconds_count", &[]) as usize,
        shed,
        "every shed connection's time to its alert is recorded: {metrics}"
    );
    // Every completed full handshake's wait from the kernel's receipt of its ClientHello
    // (the listener timestamps): the flood's and the keep-alive connection's.
    assert_eq!(
        metric(
            &metrics,
            "hsmgate_tls_handshake_wait_seconds_count",
            &["kind=\"full\""]
        ) as usize,
        ok + 1,
        "{metrics}"
    );
    assert!(metric(&metrics, "hsmgate_admission_capacity_ops_per_second", &[]) > 0.0);
    assert!(proxy.log_text().contains("shedding full TLS handshakes"));
}

/// Each thread of process `pid`: its name and nice value (`/proc/PID/task/TID/stat`).
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let dir = task.expect("task").path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // After "pid (comm) ": state is field 3, nice field 19.
        let after = &stat[stat.rfind(')').expect("stat") + 2..];
        let nice = after.split(' ').nth(16).and_then(|v| v.parse().ok());
        out.push((name.trim().to_string(), nice.expect("nice field")));
    }
    out
}

/// hsmgate on a lab of one HSM, which is then killed: every full handshake is shed
/// (`no_capacity`). Returned with a client that holds tickets from a first handshake
/// made before (its resumptions need no signature).
async fn shedding_everything() -> (HaLab, ProxyProcess, Arc<rustls::ClientConfig>) {
    let mut lab = HaLab::new(&["hsm-a"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "",
        &[("eu-1", true, &["hsm-a"])],
        "sessions = 2\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    // A first full handshake and a request: the client keeps the TLS 1.3 tickets.
    let resuming = resuming_client(&lab.ca_pem);
    let mut first = KeepAlive::open_with(proxy.addr, Arc::clone(&resuming)).await;
    assert_eq!(first.get("/first").await.0, 200);
    drop(first);
    lab.kill("hsm-a");
    wait_for_no_capacity(&proxy);
    (lab, proxy, resuming)
}

/// With the only HSM dead, a full handshake is refused at once with the alert (not after
/// the signing deadline), while a client holding a ticket resumes: no signature needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumptions_pass_while_full_handshakes_are_shed() {
    let (lab, proxy, resuming) = shedding_everything().await;
    let admin = proxy.admin_addr();

    let fresh = client_config(&lab.ca_pem, &[b"http/1.1"]);
    let (outcome, took) = handshake(proxy.addr, fresh).await;
    assert_eq!(outcome, Outcome::Shed, "{}", proxy.log_text());
    assert!(took < Duration::from_secs(1), "shed after {took:?}");

    let mut resumed = KeepAlive::open_with(proxy.addr, Arc::clone(&resuming)).await;
    assert_eq!(resumed.get("/resumed").await.0, 200);
    assert_eq!(
        resumed.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the second connection resumed"
    );

    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metric(
            &metrics,
            "hsmgate_admission_shed_total",
            &["reason=\"no_capacity\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "hsmgate_admission_resumed_total", &[]) >= 1.0,
        "{metrics}"
    );
}

/// Connections that queue while the proxy cannot run (a stopped process: what a saturated
/// one looks like to its accept queue) have their ClientHello in the socket when they are
/// accepted: the accept loop sheds the full handshakes itself, with the alert, and hands
/// the resumption among them on, which resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_queued_in_the_kernel_are_shed_by_the_accept_loop() {
    let (_lab, proxy, resuming) = shedding_everything().await;
    let admin = proxy.admin_addr();
    let at_accept = |metrics: &str| {
        metric(
            metrics,
            "hsmgate_tls_answered_at_accept_total",
            &["result=\"shed\""],
        )
    };
    let before = at_accept(&admin_get(admin, "/metrics").await.1);

    // Stopped, the proxy accepts nothing: the kernel completes the TCP handshakes and
    // queues the connections with their ClientHellos.
    let kill = |signal: &str| {
        let ok = std::process::Command::new("kill")
            .args([signal, &proxy.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal}");
    };
    kill("-STOP");
    // Each full handshake's ClientHello is written before the proxy runs again: a
    // client task might not have sent its own in time on a busy machine (then the
    // connection's task sheds it, not the accept loop, and the count below is short).
    use crate::support::tlsraw::{ALERT, HANDSHAKE, Offer, client_hello, read_answer, record};
    const FULL: usize = 12;
    let hello = record(HANDSHAKE, &client_hello(Offer::Tls13, 0));
    let full: Vec<std::net::TcpStream> = (0..FULL)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(proxy.addr).expect("connect");
            std::io::Write::write_all(&mut s, &hello).expect("the ClientHello");
            s
        })
        .collect();
    let resumed = tokio::spawn({
        let resuming = Arc::clone(&resuming);
        async move {
            let mut c = KeepAlive::open_with(proxy.addr, resuming).await;
            let status = c.get("/resumed").await.0;
            (status, c.handshake_kind())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill("-CONT");

    let answers = tokio::task::spawn_blocking(move || {
        (full.into_iter())
            .map(|mut s| read_answer(&mut s, Duration::from_secs(10)))
            .collect::<Vec<_>>()
    })
    .await
    .expect("answers");
    for answer in answers {
        // Shed: the fatal internal_error alert before any ServerHello.
        assert!(!answer.server_hello(), "{answer:?}");
        assert_eq!(answer.alert(), Some((2, 80)), "{}", proxy.log_text());
        assert!(answer.records.iter().all(|(ct, _)| *ct == ALERT));
    }
    let (status, kind) = resumed.await.expect("resuming client");
    assert_eq!(status, 200);
    assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    let after = at_accept(&admin_get(admin, "/metrics").await.1);
    assert_eq!(
        after - before,
        FULL as f64,
        "every queued full handshake shed by the accept loop"
    );
}

/// The group's capacity is the sum over its serving members: a killed member takes its
/// share away, a restarted one gives it back; handshakes meanwhile either complete or
/// are shed with the alert, never anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_follows_members_that_die_and_come_back() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "sessions = 2\ncapacity = 500\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    let admin = proxy.admin_addr();
    wait_for_blocking(admin, 1000.0);

    let client = client_config(&lab.ca_pem, &[b"http/1.1"]);
    let load = {
        let (client, addr) = (Arc::clone(&client), proxy.addr);
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                let batch: Vec<_> = (0..4)
                    .map(|_| tokio::spawn(handshake(addr, Arc::clone(&client))))
                    .collect();
                for b in batch {
                    outcomes.push(b.await.expect("task").0);
                }
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.kill("hsm-b");
    tokio::task::spawn_blocking(move || wait_for_blocking(admin, 500.0))
        .await
        .expect("wait");
    lab.restart("hsm-b");
    tokio::task::spawn_blocking(move || wait_for_blocking(admin, 1000.0))
        .await
        .expect("wait");
    let outcomes = load.await.expect("load");
    assert!(
        outcomes.iter().all(|o| *o != Outcome::Other),
        "handshakes failed other than by shedding: {outcomes:?}\n{}",
        proxy.log_text()
    );
    assert!(outcomes.contains(&Outcome::Ok));
}

fn wait_for_blocking(admin: SocketAddr, want: f64) {
    crate::support::poll(
        Duration::from_secs(10),
        || format!("capacity never became {want}"),
        || {
            let body = admin_get_blocking(admin, "/metrics").1;
            (metric(&body, "hsmgate_admission_capacity_ops_per_second", &[]) == want).then_some(())
        },
    )
}

/// A ticket this server cannot resume (here: issued by another instance, with another
/// ticket key) asks for a full handshake: it goes through admission as one and is shed
/// at the door with the alert, not let through as a resumption that then fails. (A
/// TLS 1.3 client's random session id on a TLS 1.2 address: `hello.rs`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_the_server_cannot_resume_is_a_full_handshake() {
    let mut lab = HaLab::new(&["hsm-a"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "",
        &[("eu-1", true, &["hsm-a"])],
        "sessions = 2\n",
    );
    let issuer = ProxyProcess::start(lab.path(), &config).expect("the first instance starts");
    let other_dir = lab.path().join("other");
    std::fs::create_dir_all(&other_dir).expect("dir");
    let other = ProxyProcess::start(&other_dir, &config).expect("the second instance starts");
    let admin = other.admin_addr();

    let resuming = resuming_client(&lab.ca_pem);
    let mut first = KeepAlive::open_with(issuer.addr, Arc::clone(&resuming)).await;
    assert_eq!(first.get("/ticket").await.0, 200);
    drop(first);

    lab.kill("hsm-a");
    wait_for_no_capacity(&other);
    let (outcome, took) = handshake(other.addr, Arc::clone(&resuming)).await;
    assert_eq!(outcome, Outcome::Shed, "{}", other.log_text());
    assert!(took < Duration::from_secs(1), "shed after {took:?}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metric(
            &metrics,
            "hsmgate_admission_shed_total",
            &["reason=\"no_capacity\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_admission_resumed_total", &[]),
        0.0,
        "{metrics}"
    );
}

/// When the HSMs cannot sign (every member killed, before a probe notices; admission
/// off, so nothing is shed first), the client gets rustls' `internal_error` alert, in
/// TLS 1.3 and TLS 1.2, not a bare close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_that_fails_is_answered_with_an_alert() {
    let mut lab = HaLab::new(&["hsm-a"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "op_timeout_ms = 400\nsign_timeout_ms = 1000\nprobe_interval_ms = 600000",
        &[("eu-1", true, &["hsm-a"])],
        "sessions = 1\n",
    ) + "\n[admission]\nenabled = false\n";
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    lab.kill("hsm-a");
    let tls12 = {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(crate::support::client::ca_roots(&lab.ca_pem))
            .with_no_client_auth();
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    };
    for (version, config) in [
        ("TLS 1.3", client_config(&lab.ca_pem, &[b"http/1.1"])),
        ("TLS 1.2", tls12),
    ] {
        let (outcome, _) = handshake(proxy.addr, config).await;
        assert_eq!(outcome, Outcome::Shed, "{version}: {}", proxy.log_text());
    }
}

/// On a TLS 1.2-only address, the random 32-byte session id a TLS 1.3-capable client
/// sends (RFC 8446 §D.4) is no resumption: the handshake is admitted as a full one, not
/// let past the limiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls13_clients_session_id_on_a_tls12_address_is_a_full_handshake() {
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("echo"), "")
        .replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\ntls_versions = [\"1.2\"]\n",
        )
        .replace(
            "\n[pkcs11]",
            "\n[admin]\naddress = \"127.0.0.1:0\"\n\n[pkcs11]",
        );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    // rustls' client offers TLS 1.3 and 1.2, so it sends a random legacy session id.
    let (outcome, _) = handshake(proxy.addr, client_config(&token.ca_pem, &[b"http/1.1"])).await;
    assert_eq!(outcome, Outcome::Ok, "{}", proxy.log_text());
    let (_, metrics) = admin_get(proxy.admin_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "hsmgate_admission_admitted_total", &[]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "hsmgate_admission_resumed_total", &[]),
        0.0,
        "{metrics}"
    );
}

/// With no traffic at all, a member that dies takes its capacity away within a few
/// seconds (the default probe round, 1 s, probes members idle since the last one), and
/// the probes are counted as probes, not as operations.
#[test]
fn an_idle_member_that_dies_takes_its_capacity_away() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let config = lab.config(
        start_upstream("echo"),
        "",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "sessions = 1\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    let admin = proxy.admin_addr();
    let capacity = || {
        let body = admin_get_blocking(admin, "/metrics").1;
        metric(&body, "hsmgate_admission_capacity_ops_per_second", &[])
    };
    let both = capacity();
    assert!(both > 0.0);
    std::thread::sleep(Duration::from_millis(2500));
    let body = admin_get_blocking(admin, "/metrics").1;
    assert!(
        metric(&body, "hsmgate_signer_probes_total", &["result=\"ok\""]) >= 1.0,
        "idle members are probed:\n{body}"
    );
    assert_eq!(
        metric(&body, "hsmgate_signer_operations_total", &[]),
        0.0,
        "probes are not operations:\n{body}"
    );
    lab.kill("hsm-b");
    let killed = Instant::now();
    crate::support::poll(
        Duration::from_secs(6),
        || format!("capacity stayed {both}:\n{}", proxy.log_text()),
        || (capacity() < both).then_some(()),
    );
    eprintln!("capacity fell {:?} after the kill", killed.elapsed());
}

/// A client that is sent a HelloRetryRequest (its one key share is for a group the
/// server does not take) and never sends its second ClientHello holds no admission slot
/// while the server waits for it: more such clients than the limit has slots each get
/// their retry request, none is shed, and another client's full handshake is admitted
/// at once. (Before, each held its slot until the handshake timed out: a few stalled
/// connections shed every other client's full handshake.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalled_after_a_hello_retry_hold_no_admission_slot() {
    use crate::support::tlsraw::{HANDSHAKE, Offer, client_hello, read_answer, record};
    use std::io::Write;
    /// SHA-256("HelloRetryRequest"), a retry request's random (RFC 8446 §4.1.3).
    const RETRY: [u8; 8] = [0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11];

    let token = TestToken::new(KeyType::Rsa2048);
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, start_upstream("echo"), "sessions = 1")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let limit = metric(
        &admin_get(admin, "/metrics").await.1,
        "hsmgate_admission_limit",
        &[],
    );
    assert!(limit >= 1.0, "limit {limit}");
    let addr = proxy.addr;
    let stalled = tokio::task::spawn_blocking(move || {
        let hello = record(HANDSHAKE, &client_hello(Offer::Tls13Retry, 0));
        (0..limit as usize + 2)
            .map(|i| {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.write_all(&hello).expect("send the ClientHello");
                let answer = read_answer(&mut s, Duration::from_millis(300));
                let retry = answer.records.first().is_some_and(|(ct, p)| {
                    *ct == HANDSHAKE && p.first() == Some(&2) && p.get(6..14) == Some(&RETRY)
                });
                assert!(retry, "client {i}: no HelloRetryRequest: {answer:?}");
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the stalled clients");

    let (outcome, took) = handshake(proxy.addr, client_config(&token.ca_pem, &[b"http/1.1"])).await;
    assert_eq!(
        outcome,
        Outcome::Ok,
        "with {} clients stalled after a retry request\n{}",
        stalled.len(),
        proxy.log_text()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    for reason in ["queue_full", "wait_timeout", "late", "no_capacity"] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            metric(&metrics, "hsmgate_admission_shed_total", &[label.as_str()]),
            0.0,
            "{metrics}"
        );
    }
    assert_eq!(
        metric(&metrics, "hsmgate_admission_in_flight", &[]),
        0.0,
        "{metrics}"
    );
    // Each is a full handshake admitted once; the completed one too.
    assert_eq!(
        metric(&metrics, "hsmgate_admission_admitted_total", &[]),
        stalled.len() as f64 + 1.0,
        "{metrics}"
    );
    drop(stalled);
}

/// A client whose ClientHello arrives with its FIN (it has given up, as one does after a
/// timeout while its handshake waited in the accept queue or admission's queue) can never
/// finish a handshake: it gets no signature, and its slot goes back unused. A client
/// that stays is signed for as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_its_signature_is_not_signed_for() {
    use crate::support::tlsraw::{HANDSHAKE, Offer, client_hello, read_answer, record};
    use std::io::Write;

    let token = TestToken::new(KeyType::Rsa2048);
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, start_upstream("echo"), "sessions = 1")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let count = move |name: &'static str, labels: &'static [&'static str]| {
        metric(&admin_get_blocking(admin, "/metrics").1, name, labels)
    };
    const OPS: &str = "hsmgate_signer_operations_total";
    const FAILED: &[&str] = &["result=\"failed\""];
    let addr = proxy.addr;
    let hello = record(HANDSHAKE, &client_hello(Offer::Tls13, 0));
    let check = tokio::task::spawn_blocking(move || {
        let (ops, failed) = (
            count(OPS, &[]),
            count("hsmgate_tls_handshakes_total", FAILED),
        );
        const GONE: usize = 5;
        for i in 0..GONE {
            let s = std::net::TcpStream::connect(addr).expect("connect");
            // Corked: the ClientHello and the FIN leave in one segment, so the server
            // finds both whenever it reads.
            socket2::SockRef::from(&s).set_tcp_cork(true).expect("cork");
            (&s).write_all(&hello).expect("send the ClientHello");
            s.shutdown(std::net::Shutdown::Write).expect("FIN");
            let mut s = s;
            let answer = read_answer(&mut s, Duration::from_secs(5));
            assert!(
                !answer.server_hello(),
                "client {i} got a ServerHello: {answer:?}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while count("hsmgate_tls_handshakes_total", FAILED) < failed + GONE as f64 {
            assert!(
                Instant::now() < deadline,
                "the gone clients' handshakes not counted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count(OPS, &[]), ops, "signed for a client that had gone");
        // A client that stays is signed for.
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(&hello).expect("send the ClientHello");
        let answer = read_answer(&mut s, Duration::from_secs(5));
        assert!(answer.server_hello(), "{answer:?}");
        assert_eq!(count(OPS, &[]), ops + 1.0);
    });
    check.await.expect("the clients");
}

/// A server with a token's RSA key and a file's ECDSA key. The door chooses the key
/// from the ClientHello as sent; rustls chooses again when it signs, from the schemes
/// its TLS 1.2 cipher suite allows, or from a second ClientHello after a retry request.
/// Where that choice is the token's key, the signature is admitted by the token's
/// limiter all the same (a free slot, or shed), not made past the limit unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signature_rustls_chooses_past_the_doors_choice_is_admitted() {
    use crate::support::tlsraw::{
        HANDSHAKE, Offer, SIGALGS, client_hello_signed, read_answer, record,
    };
    use std::io::Write;

    let corpus = crate::support::corpus::Corpus::new();
    let upstream = start_upstream("echo");
    let (https, admin) = (free_port(), free_port());
    let d = corpus.dir.path().join("two-keys");
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let token = &corpus.token;
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "env HSMGATE_ADMIN=127.0.0.1:{admin};\nenv SOFTHSM2_CONF={softhsm};\n\
             pid {dir}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n    \
             server {{\n        listen 127.0.0.1:{https} ssl;\n        \
             ssl_protocols TLSv1.2 TLSv1.3;\n        \
             ssl_certificate {rsa_cert};\n        \
             ssl_certificate_key \"engine:pkcs11:pkcs11:token={label};object=tls;type=private?pin-source=file:{pin}&module-path={module}\";\n        \
             ssl_certificate {ec_cert};\n        ssl_certificate_key {ec_key};\n        \
             location / {{ proxy_pass http://{upstream}; }}\n    }}\n}}\n",
            softhsm = token.conf.display(),
            dir = d.display(),
            rsa_cert = corpus.certs[0].display(),
            label = token.label,
            pin = token.pin_file.display(),
            module = token.module.display(),
            ec_cert = corpus.certs[3].display(),
            ec_key = corpus.file_keys[1].display(),
        ),
    )
    .expect("conf");
    let proxy = crate::support::nginx::Server::hsmgate(&d, &conf, &[https, admin]);
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    let admitted = move || {
        metric(
            &admin_get_blocking(admin, "/metrics").1,
            "hsmgate_admission_admitted_total",
            &[],
        )
    };

    // TLS 1.2: ECDSA schemes offered (the door sees the file key), RSA suites only
    // (rustls can sign only with the RSA key, the token's).
    let before = tokio::task::spawn_blocking(admitted)
        .await
        .expect("metrics");
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ])
        .args(["-servername", "localhost", "-connect"])
        .arg(format!("127.0.0.1:{https}"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Peer signature type: RSA"),
        "{text}\n{}",
        proxy.log_text()
    );
    let after = tokio::task::spawn_blocking(admitted)
        .await
        .expect("metrics");
    assert_eq!(
        after,
        before + 1.0,
        "TLS 1.2: the token's signature admitted"
    );

    // TLS 1.3: a first ClientHello that gets a retry request with the ECDSA key's
    // schemes offered too, then a second one offering RSA-PSS only.
    let before = after;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", https)).expect("connect");
        let first = client_hello_signed(Offer::Tls13Retry, SIGALGS, 0);
        s.write_all(&record(HANDSHAKE, &first)).expect("send");
        let retry = read_answer(&mut s, Duration::from_millis(500));
        assert!(
            retry.records.first().is_some_and(
                |(ct, p)| *ct == HANDSHAKE && p.get(6..10) == Some(&[0xcf, 0x21, 0xad, 0x74])
            ),
            "no retry request: {retry:?}"
        );
        let second = client_hello_signed(Offer::Tls13Retried, &[0x0804], 0);
        s.write_all(&record(HANDSHAKE, &second)).expect("send");
        read_answer(&mut s, Duration::from_millis(1500))
    })
    .await
    .expect("the raw client");
    assert!(
        answer.server_hello(),
        "the second ClientHello was answered: {answer:?}\n{}",
        proxy.log_text()
    );
    let after = tokio::task::spawn_blocking(admitted)
        .await
        .expect("metrics");
    assert_eq!(after, before + 1.0, "TLS 1.3 after a retry: admitted");
}

/// A reload that changes only `[admission]` keeps the key's signer pool (no new login,
/// no calibration) and applies the new settings to it: admission turned on by a reload
/// is on, and off by the next one is off.
#[test]
fn a_reload_applies_new_admission_settings_to_a_kept_pool() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream("echo");
    let config = |enabled: bool| {
        format!(
            "{}\n[admin]\naddress = \"127.0.0.1:0\"\n\n[admission]\nenabled = {enabled}\n",
            config_for(&token, upstream, "")
        )
    };
    let path = token.path().join("hsmgate.toml");
    let proxy = ProxyProcess::start(token.path(), &config(false)).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let enabled = || {
        let status = admin_get_blocking(admin, "/status?format=json")
            .1
            .replace(' ', "");
        match (
            status.contains("\"enabled\":true"),
            status.contains("\"enabled\":false"),
        ) {
            (true, false) => true,
            (false, true) => false,
            _ => panic!("no one admission state in /status: {status}"),
        }
    };
    assert!(!enabled());
    let logins = |proxy: &ProxyProcess| proxy.log_text().matches("signer pool started").count();
    let started = logins(&proxy);
    for on in [true, false] {
        std::fs::write(&path, config(on)).expect("rewrite");
        proxy.reload();
        assert_eq!(enabled(), on, "{}", proxy.log_text());
    }
    assert_eq!(
        logins(&proxy),
        started,
        "the pool was kept: {}",
        proxy.log_text()
    );
}

/// A ClientHello that offers no cipher suite the server has fails before any signature:
/// it is not admitted (no slot taken, no `admitted` count), and the handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_no_common_cipher_suite_is_not_admitted() {
    let token = TestToken::new(KeyType::Rsa2048);
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, start_upstream("echo"), "")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let addr = proxy.addr;
    let counts = tokio::task::spawn_blocking(move || {
        let admitted = || {
            metric(
                &admin_get_blocking(admin, "/metrics").1,
                "hsmgate_admission_admitted_total",
                &[],
            )
        };
        let before = admitted();
        for cipher in [
            ["-tls1_2", "-cipher", "AES128-SHA"],
            ["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"],
        ] {
            let out = std::process::Command::new("openssl")
                .arg("s_client")
                .args(cipher)
                .args(["-connect", &addr.to_string()])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("openssl");
            assert!(
                !out.status.success(),
                "{cipher:?}: the handshake cannot succeed"
            );
        }
        (before, admitted())
    })
    .await
    .expect("clients");
    assert_eq!(
        counts.0, counts.1,
        "no admission for a hopeless ClientHello"
    );
}
