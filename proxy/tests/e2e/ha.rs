//! HA groups with real, killable HSMs: four SoftHSM tokens with the same key, each
//! behind its own `p11-kit server`, two in a primary region and two in a standby one.
//! Under steady handshake load from rustls clients: SIGKILL a primary member (no failed
//! handshake; back in rotation after restart without restarting the proxy), SIGSTOP
//! one (fenced, no failed handshake, back after SIGCONT), kill both primaries (the
//! standby region serves), kill everything (new handshakes fail fast, `/readyz` is
//! false, the log names the cause) and bring everything back (recovers by itself).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::client::{admin_get, client_config, connect};
use crate::support::lab::HaLab;
use crate::support::{ProxyProcess, start_upstream};

/// Full handshakes in a loop on `workers` tasks, counting successes and failures.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    last_error: Arc<std::sync::Mutex<String>>,
}

impl Load {
    fn start(addr: SocketAddr, ca: &std::path::Path, workers: usize) -> Load {
        let (ok, failed, stop) = (
            Arc::default(),
            Arc::default(),
            Arc::new(AtomicBool::new(false)),
        );
        let last_error = Arc::new(std::sync::Mutex::new(String::new()));
        let config = client_config(ca, &[b"http/1.1"]);
        let tasks = (0..workers)
            .map(|_| {
                let (ok, failed, stop): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicBool>) =
                    (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
                let (config, last_error) = (Arc::clone(&config), Arc::clone(&last_error));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            connect(addr, Arc::clone(&config)),
                        )
                        .await
                        {
                            Ok(Ok(_tls)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(e)) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                *last_error.lock().expect("lock") = e.to_string();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                *last_error.lock().expect("lock") =
                                    "handshake timed out after 5 s".into();
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            stop,
            tasks,
            last_error,
        }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Wait until `/readyz` mentions `needle`; how long it took.
async fn wait_readyz(admin: SocketAddr, needle: &str, limit: Duration) -> Duration {
    wait_readyz_or(admin, needle, limit, || false, String::new).await
}

/// Wait until `/readyz` mentions `needle` or `also()` holds; how long it took. On
/// timeout the panic shows the last `/readyz` body and `log()`.
async fn wait_readyz_or(
    admin: SocketAddr,
    needle: &str,
    limit: Duration,
    also: impl Fn() -> bool,
    log: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        let (_, body) = admin_get(admin, "/readyz").await;
        if body.contains(needle) || also() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "/readyz never showed {needle:?} within {limit:?}: {body}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until `member` has been fenced (again); how long it took. `/readyz` shows "fenced"
/// only until the first recovery attempt starts (100 ms later), which a poll on a busy
/// machine can miss, so the log line the fence writes counts too.
async fn wait_fenced(
    admin: SocketAddr,
    proxy: &ProxyProcess,
    member: &str,
    fences_before: usize,
    limit: Duration,
) -> Duration {
    wait_readyz_or(
        admin,
        &format!("{member} fenced"),
        limit,
        || fence_lines(proxy, member) > fences_before,
        || proxy.log_text(),
    )
    .await
}

/// How many times the log says `member` was fenced.
fn fence_lines(proxy: &ProxyProcess, member: &str) -> usize {
    let field = format!("member={member} ");
    proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("HSM member fenced") && l.contains(&field))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fencing_standby_and_recovery_under_load() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b", "hsm-c", "hsm-d"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "op_timeout_ms = 400\nsign_timeout_ms = 3000\nprobe_interval_ms = 1000",
        &[
            ("eu-1", true, &["hsm-a", "hsm-b"]),
            ("eu-2", false, &["hsm-c", "hsm-d"]),
        ],
        "sessions = 2\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    let admin = proxy.admin_addr();
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    for m in ["hsm-a up", "hsm-b up", "hsm-c up", "hsm-d up"] {
        assert!(body.contains(m), "{body}");
    }
    let load = Load::start(proxy.addr, &lab.ca_pem, 4);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // 1. SIGKILL a primary member: no handshake fails; back after restart, no proxy restart.
    lab.kill("hsm-a");
    wait_readyz(admin, "hsm-a down", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    lab.restart("hsm-a");
    let recovered = wait_readyz(admin, "hsm-a up", Duration::from_secs(10)).await;
    eprintln!("hsm-a back in rotation {recovered:?} after its restart");
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );
    let (ok, failed) = load.counts();
    assert_eq!(
        failed,
        0,
        "handshakes failed across a member kill: {}\n{}",
        load.last_error.lock().expect("lock"),
        proxy.log_text()
    );
    assert!(ok > 0);

    // 2. SIGSTOP a primary member: fenced within the op deadline, nothing fails.
    let fences_before = fence_lines(&proxy, "hsm-b");
    lab.signal("hsm-b", "STOP");
    let fenced = wait_fenced(
        admin,
        &proxy,
        "hsm-b",
        fences_before,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("hsm-b fenced {fenced:?} after SIGSTOP");
    tokio::time::sleep(Duration::from_millis(700)).await;
    lab.signal("hsm-b", "CONT");
    wait_readyz(admin, "hsm-b up", Duration::from_secs(10)).await;
    let (ok2, failed) = load.counts();
    assert_eq!(
        failed,
        0,
        "handshakes failed across a member freeze: {}",
        load.last_error.lock().expect("lock")
    );
    assert!(ok2 > ok);

    // 3. Both primary members killed: the standby region serves.
    lab.kill("hsm-a");
    lab.kill("hsm-b");
    wait_readyz(admin, "hsm-b down", Duration::from_secs(5)).await;
    let before = load.counts().0;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (after, failed) = load.counts();
    assert_eq!(
        failed,
        0,
        "handshakes failed when the standby region took over: {}",
        load.last_error.lock().expect("lock")
    );
    assert!(after > before, "the standby region served nothing");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        crate::support::client::metric(
            &metrics,
            "hsmgate_signer_operations_total",
            &["member=\"hsm-c\"", "result=\"ok\""]
        ) > 0.0,
        "no signatures counted on the standby member:\n{metrics}"
    );

    // 4. Every member down: new handshakes fail fast, /readyz is false, the log says why.
    lab.kill("hsm-c");
    lab.kill("hsm-d");
    wait_readyz(admin, "hsm-d down", Duration::from_secs(5)).await;
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let t = Instant::now();
    let refused = connect(proxy.addr, client_config(&lab.ca_pem, &[b"http/1.1"])).await;
    assert!(
        refused.is_err(),
        "a handshake succeeded with every HSM down"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "failing took {:?}",
        t.elapsed()
    );
    assert!(
        proxy.log_text().contains("no healthy member can sign"),
        "{}",
        proxy.log_text()
    );

    // 5. Members return: everything recovers by itself.
    for m in ["hsm-a", "hsm-b", "hsm-c", "hsm-d"] {
        lab.restart(m);
    }
    wait_readyz(
        admin,
        "hsm-a up; hsm-b up; hsm-c up; hsm-d up",
        Duration::from_secs(15),
    )
    .await;
    let (status, _) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200);
    let (ok_before, _) = load.counts();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok_final, _) = load.stop().await;
    assert!(ok_final > ok_before, "no handshake after recovery");
}

/// `connections = 2`: two p11-kit connections to one HSM are two module instances, each
/// with its own sessions and its own lookup of the key (PKCS#11 object handles belong to
/// one instance), all serving the member's one queue without a failed handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_two_connections_signs_through_both() {
    let lab = HaLab::new(&["hsm-a"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "",
        &[("eu-1", true, &["hsm-a"])],
        "sessions = 16\nconnections = 2\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts on the lab");
    // 8 handshakes at a time over one queue feeding 32 sessions (16 per connection).
    let load = Load::start(proxy.addr, &lab.ca_pem, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last_error = load.last_error.lock().expect("lock").clone();
    let (ok, failed) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "handshakes failed with two connections: {last_error}\n{}",
        proxy.log_text()
    );
    assert!(ok >= 20, "only {ok} handshakes in 1.5 s");
    let (_, metrics) = admin_get(proxy.admin_addr(), "/metrics").await;
    assert!(!metrics.contains("CKR_OBJECT_HANDLE_INVALID"), "{metrics}");
}

/// An HA group in an nginx configuration (`map $host $hsmgate_group_NAME`, a key with
/// `x-hsmgate-group=NAME`): the same members as TOML's `[[hsm.group]]`, failover on a
/// killed member, the members on `/status` through `env HSMGATE_ADMIN=…;`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_configuration_names_an_ha_group() {
    use crate::support::hsm::p11kit_client_module;
    use crate::support::net::free_port;
    use crate::support::nginx::Server;
    let mut lab = HaLab::new(&["hsm-a", "hsm-b", "hsm-c"]);
    let upstream = start_upstream("echo");
    let (https, admin) = (free_port(), free_port());
    let d = lab.path().to_path_buf();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let client = p11kit_client_module();
    let member = |name: &str| {
        format!(
            "module={} token={name} pin_file={} sessions=2 env.P11_KIT_SERVER_ADDRESS={}",
            client.display(),
            lab.pin_file.display(),
            lab.address(name)
        )
    };
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "env HSMGATE_ADMIN=127.0.0.1:{admin};\npid {dir}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n\
             map $host $hsmgate_group_lab {{\n        default \"sign_timeout_ms=3000 op_timeout_ms=1000\";\n        \
             \"eu-1 primary hsm-a\" \"{a}\";\n        \"eu-1 primary hsm-b\" \"{b}\";\n        \"us-1 standby hsm-c\" \"{c}\";\n    }}\n    \
             server {{\n        listen 127.0.0.1:{https} ssl;\n        ssl_certificate {chain};\n        \
             ssl_certificate_key \"pkcs11:object=tls;type=private?x-hsmgate-group=lab\";\n        \
             location / {{ proxy_pass http://{upstream}; }}\n    }}\n}}\n",
            dir = d.display(),
            a = member("hsm-a"),
            b = member("hsm-b"),
            c = member("hsm-c"),
            chain = lab.chain_pem.display(),
        ),
    )
    .expect("conf");
    let server = Server::hsmgate(&d, &conf, &[https, admin]);
    let addr: SocketAddr = ([127, 0, 0, 1], https).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    let config = client_config(&lab.ca_pem, &[b"http/1.1"]);
    for _ in 0..4 {
        connect(addr, Arc::clone(&config)).await.expect("handshake");
    }
    let (status, body) = admin_get(admin, "/status?format=json").await;
    assert_eq!(status, 200, "{body}");
    for name in ["hsm-a", "hsm-b", "hsm-c"] {
        assert!(body.contains(name), "{name} missing from /status: {body}");
    }
    // A primary dies: handshakes go on with the other one.
    lab.kill("hsm-a");
    for i in 0..6 {
        connect(addr, Arc::clone(&config))
            .await
            .unwrap_or_else(|e| panic!("handshake {i} after the kill: {e}\n{}", server.log_text()));
    }
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
}

/// A member whose HSM is frozen (its `C_Initialize` never returns) keeps no other member
/// from starting: hsmgate starts and serves on the others. Freezes and thaws of a member
/// leave no connection to its HSM behind (each re-initialised instance is finalised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_keeps_no_other_from_starting_and_thaws_leak_nothing() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "op_timeout_ms = 300\nprobe_interval_ms = 200",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "",
    );
    lab.signal("hsm-a", "STOP");
    let started = ProxyProcess::start(lab.path(), &config);
    lab.signal("hsm-a", "CONT");
    let proxy = started.expect("hsmgate starts on hsm-b while hsm-a is frozen");
    let config = client_config(&lab.ca_pem, &[b"http/1.1"]);
    let tls = connect(proxy.addr, config.clone()).await;
    assert!(tls.is_ok(), "a handshake on hsm-b: {}", proxy.log_text());
    drop(tls);
    wait_readyz(proxy.admin_addr(), "hsm-a up", Duration::from_secs(15)).await;

    // Freeze and thaw hsm-a a few times: the file descriptors come back to where they were.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let admin = proxy.admin_addr();
    for _ in 0..4 {
        let fences = fence_lines(&proxy, "hsm-a");
        lab.signal("hsm-a", "STOP");
        wait_fenced(admin, &proxy, "hsm-a", fences, Duration::from_secs(5)).await;
        lab.signal("hsm-a", "CONT");
        wait_readyz(admin, "hsm-a up", Duration::from_secs(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = fds();
    assert!(
        after <= before + 1,
        "file descriptors {before} → {after} over four freezes\n{}",
        proxy.log_text()
    );
    // The threads abandoned in the frozen calls have returned: the gauge says so too
    // (it stayed at its highest before 2026-12-04, while /status said 0).
    let abandoned = |body: &str| {
        crate::support::client::metric(
            body,
            "hsmgate_signer_abandoned_threads",
            &["member=\"hsm-a\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = admin_get(admin, "/metrics").await;
        if abandoned(&body) == 0.0 && body.contains("hsmgate_signer_abandoned_threads") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "abandoned threads still {} after the thaws\n{}",
            abandoned(&body),
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
