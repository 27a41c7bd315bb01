//! The admin endpoints against the HSM lab: `/readyz` turns 503 when no member can sign
//! and 200 after recovery, also after a reload that changes the key (the admin state
//! follows the current generation); `/status` JSON and `/metrics` member states follow a
//! kill and a restart; the handshake and request counters move by exactly what the
//! clients did; every metric the Grafana dashboard queries exists.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::client::{
    KeepAlive, admin_get_blocking, client_config, connect, member_state, metric, status_json,
};
use crate::support::lab::HaLab;
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, poll, start_upstream};

const FAST_PROBES: &str = "op_timeout_ms = 400\nsign_timeout_ms = 2000\nprobe_interval_ms = 300";

/// Wait until `/readyz` answers `code`; the body.
fn wait_ready(admin: SocketAddr, code: u16, proxy: &ProxyProcess) -> String {
    poll(
        Duration::from_secs(15),
        || {
            format!(
                "/readyz never answered {code}: {:?}\n{}",
                admin_get_blocking(admin, "/readyz"),
                proxy.log_text()
            )
        },
        || {
            let (c, body) = admin_get_blocking(admin, "/readyz");
            (c == code).then_some(body)
        },
    )
}

fn wait_state(admin: SocketAddr, member: &str, want: &str, proxy: &ProxyProcess) {
    poll(
        Duration::from_secs(15),
        || {
            format!(
                "{member} never became {want}: {}\n{}",
                status_json(admin),
                proxy.log_text()
            )
        },
        || (member_state(&status_json(admin), member).as_deref() == Some(want)).then_some(()),
    )
}

fn reload(proxy: &ProxyProcess, dir: &std::path::Path, config: &str) {
    std::fs::write(dir.join("hsmgate.toml"), config).expect("write config");
    let before = proxy.log_text().matches("configuration reloaded").count();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    poll(
        Duration::from_secs(20),
        || format!("no reload:\n{}", proxy.log_text()),
        || (proxy.log_text().matches("configuration reloaded").count() > before).then_some(()),
    );
}

#[test]
fn readyz_follows_members_and_reloads_to_another_key() {
    let mut lab_a = HaLab::new(&["hsm-a"]);
    let mut lab_b = HaLab::new(&["hsm-b"]);
    let upstream = start_upstream("echo");
    let regions_a: &[(&str, bool, &[&str])] = &[("eu-1", true, &["hsm-a"])];
    let regions_b: &[(&str, bool, &[&str])] = &[("us-1", true, &["hsm-b"])];
    let config_a = lab_a.config(upstream, FAST_PROBES, regions_a, "sessions = 1\n");
    let config_b = lab_b.config(upstream, FAST_PROBES, regions_b, "sessions = 1\n");
    let proxy = ProxyProcess::start(lab_a.path(), &config_a).expect("hsmgate starts");
    let admin = proxy.admin_addr();

    let body = wait_ready(admin, 200, &proxy);
    assert!(body.contains("hsm-a up"), "{body}");
    lab_a.kill("hsm-a");
    let body = wait_ready(admin, 503, &proxy);
    assert!(body.contains("no healthy HSM member"), "{body}");
    lab_a.restart("hsm-a");
    wait_ready(admin, 200, &proxy);

    // A reload to another key on another HSM: /readyz now answers for that one only.
    reload(&proxy, lab_a.path(), &config_b);
    let body = wait_ready(admin, 200, &proxy);
    assert!(
        body.contains("hsm-b up") && !body.contains("hsm-a"),
        "/readyz after the reload: {body}"
    );
    // The old key's series leave /metrics once its pool is gone (the exporter keeps
    // them; before 2026-12-04 hsm-a's state stayed there at its last value for good).
    poll(
        Duration::from_secs(15),
        || {
            format!(
                "hsm-a's series stay: {}",
                admin_get_blocking(admin, "/metrics").1
            )
        },
        || {
            let m = admin_get_blocking(admin, "/metrics").1;
            (!m.contains("member=\"hsm-a\"") && m.contains("member=\"hsm-b\"")).then_some(())
        },
    );
    // The old key's HSM dying changes nothing now.
    lab_a.kill("hsm-a");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(admin_get_blocking(admin, "/readyz").0, 200);
    lab_b.kill("hsm-b");
    let body = wait_ready(admin, 503, &proxy);
    assert!(body.contains("hsm-b"), "{body}");
    lab_b.restart("hsm-b");
    let body = wait_ready(admin, 200, &proxy);
    assert!(body.contains("hsm-b up"), "{body}");

    // Reloads are in /metrics: one that worked, then one that failed (the previous
    // configuration serves on, and only the log said so before).
    let metrics = admin_get_blocking(admin, "/metrics").1;
    let reloads = |m: &str, result: &str| {
        metric(
            m,
            "hsmgate_config_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(reloads(&metrics, "ok"), 1.0, "{metrics}");
    assert_eq!(reloads(&metrics, "failed"), 0.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "hsmgate_config_last_reload_successful", &[]),
        1.0
    );
    assert!(
        metric(
            &metrics,
            "hsmgate_config_last_reload_success_timestamp_seconds",
            &[]
        ) > 1.7e9
    );
    assert_eq!(metric(&metrics, "hsmgate_build_info", &["version=\""]), 1.0);
    std::fs::write(lab_a.path().join("hsmgate.toml"), "[listen\n").expect("write");
    let failed = proxy.log_text().matches("reload failed").count();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &proxy.pid().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let metrics = poll(
        Duration::from_secs(20),
        || format!("no failed reload:\n{}", proxy.log_text()),
        || {
            let m = admin_get_blocking(admin, "/metrics").1;
            (reloads(&m, "failed") == 1.0).then_some(m)
        },
    );
    assert!(proxy.log_text().matches("reload failed").count() > failed);
    assert_eq!(
        metric(&metrics, "hsmgate_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(reloads(&metrics, "ok"), 1.0);
    assert_eq!(admin_get_blocking(admin, "/readyz").0, 200, "serves on");
}

#[test]
fn status_and_metrics_follow_a_kill_and_a_restart() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b", "hsm-c"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        FAST_PROBES,
        &[
            ("eu-1", true, &["hsm-a", "hsm-b"]),
            ("us-1", false, &["hsm-c"]),
        ],
        "sessions = 1\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let status = status_json(admin);
    assert_eq!(status["ready"], true, "{status}");
    let key = &status["keys"][0];
    assert_eq!(key["group"], "lab", "{status}");
    assert_eq!(key["kind"], "RSA-2048", "{status}");
    let members = key["members"].as_array().expect("members");
    let names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["hsm-a", "hsm-b", "hsm-c"], "{status}");
    assert_eq!(members[2]["region"], "us-1");
    assert_eq!(members[2]["primary"], false);
    for m in members {
        assert_eq!(m["state"], "up", "{status}");
        assert!(m["capacity_ops_per_second"].as_f64() > Some(0.0), "{m}");
    }
    assert!(key["admission"]["limit"].as_f64() >= Some(1.0), "{status}");
    // Signatures give the members operations and a latency.
    let ca = lab.ca_pem.display().to_string();
    for _ in 0..4 {
        let out = crate::support::curl(&["--cacert", &ca, &proxy.url("/")]);
        assert!(out.status.success(), "{out:?}");
    }
    let status = status_json(admin);
    let signed: Vec<&serde_json::Value> = status["keys"][0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["operations"].as_u64() > Some(0))
        .collect();
    assert!(!signed.is_empty(), "{status}");
    assert!(
        signed.iter().all(|m| m["latency_ms"].as_f64() > Some(0.0)),
        "{status}"
    );
    assert_eq!(status["keys"][0]["admission"]["admitted"], 4, "{status}");

    let state_metric = |member: &str| {
        let (_, body) = admin_get_blocking(admin, "/metrics");
        metric(
            &body,
            "hsmgate_signer_member_state",
            &[&format!("member=\"{member}\"")],
        )
    };
    assert_eq!(state_metric("hsm-b"), 0.0);
    lab.kill("hsm-b");
    wait_state(admin, "hsm-b", "down", &proxy);
    let status = status_json(admin);
    let b = &status["keys"][0]["members"][1];
    assert!(!b["last_error"].as_str().unwrap_or("").is_empty(), "{b}");
    assert_eq!(b["serving"], false, "{b}");
    assert_eq!(status["ready"], true, "hsm-a still signs: {status}");
    assert_eq!(state_metric("hsm-b"), 2.0, "down is 2");
    lab.restart("hsm-b");
    wait_state(admin, "hsm-b", "up", &proxy);
    assert_eq!(state_metric("hsm-b"), 0.0);
    let (_, page) = admin_get_blocking(admin, "/status");
    assert!(page.starts_with("<!doctype html>"), "{page}");
}

/// N full handshakes carrying M requests move the counters by exactly N and M.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_handshakes_and_requests_made() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream("echo");
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, upstream, "")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let counts = move || {
        let (_, body) = admin_get_blocking(admin, "/metrics");
        (
            metric(
                &body,
                "hsmgate_tls_handshakes_total",
                &["result=\"ok\"", "kind=\"full\""],
            ),
            metric(&body, "hsmgate_tls_handshakes_total", &[]),
            metric(&body, "hsmgate_http_requests_total", &["status=\"200\""]),
            metric(
                &body,
                "hsmgate_upstream_response_duration_seconds_count",
                &[],
            ),
            metric(&body, "hsmgate_admission_admitted_total", &[]),
        )
    };
    // Before any handshake, the admission counters are there at 0, every shed reason
    // included (an alert on `rate(...shed_total[1m])` works before the first shed).
    let (_, body) = tokio::task::spawn_blocking(move || admin_get_blocking(admin, "/metrics"))
        .await
        .expect("metrics");
    let at_zero = |name: &str, label: &str| {
        body.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(label) && l.ends_with(" 0"))
    };
    for reason in [
        "queue_full",
        "wait_timeout",
        "no_capacity",
        "resumption_fallback",
        "late",
    ] {
        let label = format!("reason=\"{reason}\"");
        assert!(
            at_zero("hsmgate_admission_shed_total", &label),
            "shed_total{{{label}}} at 0 before any handshake:\n{body}"
        );
    }
    for name in [
        "hsmgate_admission_admitted_total",
        "hsmgate_admission_resumed_total",
    ] {
        assert!(
            at_zero(name, "group="),
            "{name} at 0 before any handshake:\n{body}"
        );
    }
    let before = tokio::task::spawn_blocking(counts).await.expect("metrics");
    const N: usize = 3;
    const M: [usize; N] = [1, 4, 2];
    // TCP health checks (a kubelet's tcpSocket probe: connect, close) are no handshakes.
    for _ in 0..5 {
        drop(
            tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect"),
        );
    }
    for requests in M {
        let mut conn = KeepAlive::open(proxy.addr, &token.ca_pem).await;
        assert_eq!(
            conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "the test client does not resume"
        );
        for i in 0..requests {
            assert_eq!(conn.get(&format!("/count/{i}")).await.0, 200);
        }
    }
    let after = tokio::task::spawn_blocking(counts).await.expect("metrics");
    let m: usize = M.iter().sum();
    assert_eq!(after.0 - before.0, N as f64, "full handshakes");
    assert_eq!(after.1 - before.1, N as f64, "all handshakes");
    assert_eq!(after.2 - before.2, m as f64, "requests answered 200");
    assert_eq!(after.3 - before.3, m as f64, "upstream exchanges");
    assert_eq!(after.4 - before.4, N as f64, "admitted full handshakes");
}

/// Every metric `deploy/grafana/hsmgate.json` queries is in a live `/metrics` once
/// traffic (including a shed handshake and a member down) has made the series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_that_exist() {
    let dashboard =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/hsmgate.json");
    let text = std::fs::read_to_string(&dashboard).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has queries: {exprs:?}");
    let mut names: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();

    let mut lab = HaLab::new(&["hsm-a"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        FAST_PROBES,
        &[("eu-1", true, &["hsm-a"])],
        "sessions = 1\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    // A full handshake, then a resumption with its ticket.
    let mut resuming = (*client_config(&lab.ca_pem, &[b"http/1.1"])).clone();
    resuming.resumption = rustls::client::Resumption::default();
    let resuming = std::sync::Arc::new(resuming);
    for _ in 0..2 {
        let mut conn = KeepAlive::open_with(proxy.addr, std::sync::Arc::clone(&resuming)).await;
        assert_eq!(conn.get("/").await.0, 200);
    }
    // The rate and utilisation gauges are set once a window (a second) has closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lab.kill("hsm-a");
    tokio::task::spawn_blocking(move || {
        poll(
            Duration::from_secs(15),
            || "the group's capacity never fell to 0".into(),
            || {
                let (_, body) = admin_get_blocking(admin, "/metrics");
                (member_state(&status_json(admin), "hsm-a").as_deref() == Some("down")
                    && metric(&body, "hsmgate_admission_capacity_ops_per_second", &[]) == 0.0)
                    .then_some(())
            },
        )
    })
    .await
    .expect("poll");
    let shed = connect(proxy.addr, client_config(&lab.ca_pem, &[b"http/1.1"])).await;
    assert!(shed.is_err(), "no member: the handshake is shed");
    let (_, body) = tokio::task::spawn_blocking(move || admin_get_blocking(admin, "/metrics"))
        .await
        .expect("metrics");
    let present: std::collections::HashSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}\n{body}"
    );
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// The `hsmgate_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hsmgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Two keys on one token (an RSA key and an ECDSA key, the README's layout) are two
/// signer pools whose members have the same name: their metrics stay apart by their
/// `key` label, each with its own capacity and operations, instead of one series that
/// both overwrite.
#[test]
fn two_keys_on_one_token_keep_their_metrics_apart() {
    let token = TestToken::new(KeyType::Rsa2048);
    let hsmgate = env!("CARGO_BIN_EXE_hsmgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(hsmgate)
            .env("SOFTHSM2_CONF", &token.conf)
            .args(args)
            .output()
            .expect("hsmgate token");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let module = token.module.display().to_string();
    let pin = token.pin_file.display().to_string();
    run(&[
        "token",
        "keygen",
        "--module",
        &module,
        "--token",
        &token.label,
        "--label",
        "ec",
        "--key",
        "p256",
        "--id",
        "02",
        "--pin-file",
        &pin,
    ]);
    let ec_cert = token.path().join("ec.pem");
    run(&[
        "token",
        "csr",
        "--module",
        &module,
        "--pin-file",
        &pin,
        "--self-signed",
        "--subject",
        "CN=localhost",
        "-o",
        &ec_cert.display().to_string(),
        "--key",
        &format!("pkcs11:token={};object=ec;type=private", token.label),
    ]);
    let config = config_for(&token, start_upstream("echo"), "").replace(
        "\n[pkcs11]",
        &format!(
            "\n[[tls.pair]]\ncertificate = \"{}\"\nkey = \"pkcs11:token={};object=ec;type=private\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[pkcs11]",
            ec_cert.display(),
            token.label
        ),
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let (_, body) = admin_get_blocking(proxy.admin_addr(), "/metrics");
    let capacity = |key: &str| {
        metric(
            &body,
            "hsmgate_signer_capacity_ops_per_second",
            &[
                &format!("key=\"{key}\""),
                &format!("member=\"{}\"", token.label),
            ],
        )
    };
    assert!(capacity("tls") > 0.0, "{body}");
    assert!(capacity("ec") > 0.0, "{body}");
    let series = body
        .lines()
        .filter(|l| l.starts_with("hsmgate_signer_capacity_ops_per_second{"))
        .count();
    assert_eq!(series, 2, "one series per key:\n{body}");
    let limits = body
        .lines()
        .filter(|l| l.starts_with("hsmgate_admission_limit{"))
        .count();
    assert_eq!(limits, 2, "one admission series per key:\n{body}");
}

/// The admin port cannot be filled up: past its connection limit the oldest connection
/// is closed for the new one, so probes are answered while idle and half-sent
/// connections pile up; a method other than GET or HEAD on an endpoint is a 405 with
/// `Allow`.
#[test]
fn idle_admin_connections_keep_no_probe_out() {
    use std::io::{Read, Write};
    let token = TestToken::new(KeyType::EcP256);
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_for(&token, start_upstream("echo"), "")
    );
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let mut half = std::net::TcpStream::connect(admin).expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    let idle: Vec<_> = (0..150)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect"))
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(admin_get_blocking(admin, "/healthz").0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The oldest were closed for the newer ones.
    let mut first = idle.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(matches!(first.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    let (code, _) = {
        let mut s = std::net::TcpStream::connect(admin).expect("connect");
        s.write_all(
            b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("post");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(
            answer.to_ascii_lowercase().contains("allow: get, head"),
            "{answer}"
        );
        (answer[9..12].to_owned(), ())
    };
    assert_eq!(code, "405");
    drop(half);
}

/// Reloads that rebuild an HA group's pool (its members' session count changes) leave
/// no connection to the HSMs behind: every p11-kit-client instance is finalised when its
/// pool goes, the first one of each member too (before 2026-12-04 the first instance of
/// each module path was kept until exit: one open HSM connection and session per member
/// after the first rebuild).
#[test]
fn reloads_that_rebuild_the_pool_keep_no_old_hsm_connection() {
    let lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let regions: &[(&str, bool, &[&str])] = &[("eu-1", true, &["hsm-a", "hsm-b"])];
    let config = |sessions: u32| {
        lab.config(
            upstream,
            FAST_PROBES,
            regions,
            &format!("sessions = {sessions}\n"),
        )
    };
    let proxy = ProxyProcess::start(lab.path(), &config(1)).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    wait_ready(admin, 200, &proxy);
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Full handshakes before the reloads: /status counts them since start, also once
    // the pool was rebuilt (it started again at 0 before 2026-12-04; /metrics counted on).
    let ca = lab.ca_pem.display().to_string();
    for _ in 0..3 {
        let out = crate::support::curl(&["--cacert", &ca, &proxy.url("/")]);
        assert!(out.status.success(), "{out:?}");
    }
    let before = sockets();
    for sessions in [2, 1, 2, 1] {
        reload(&proxy, lab.path(), &config(sessions));
        wait_ready(admin, 200, &proxy);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = sockets();
    assert!(
        after <= before,
        "sockets {before} → {after} over four reloads that rebuilt the pool\n{}",
        proxy.log_text()
    );
    let status = status_json(admin);
    let key = &status["keys"][0];
    assert!(key["admission"]["admitted"].as_u64() >= Some(3), "{status}");
    let signed: u64 = (key["members"].as_array().expect("members").iter())
        .filter_map(|m| m["operations"].as_u64())
        .sum();
    assert!(signed >= 3, "{status}");
}
