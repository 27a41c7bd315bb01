//! The PIN appears nowhere: hsmgate runs on the HSM lab with debug logs while clients
//! make requests, a reload with a wrong PIN fails, a good one succeeds, a member dies
//! and comes back, and `-t` fails on wrong PINs given as a file, in the key URI
//! (`pin-value`) and as a flag; then the log, every output, `/metrics`, `/readyz` and
//! `/status` (JSON and HTML) are searched for each PIN.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::client::{admin_get_blocking, member_state, status_json};
use crate::support::hsm::PIN;
use crate::support::lab::HaLab;
use crate::support::{
    KeyType, ProxyProcess, TestToken, config_for, curl, output_text, poll, start_upstream,
};

const WRONG_FILE_PIN: &str = "wrong-file-pin-40417";
const WRONG_URI_PIN: &str = "wrong-uri-pin-58123";
const WRONG_FLAG_PIN: &str = "wrong-flag-pin-77310";

/// SIGHUP, then wait until `marker` appears in the log once more.
fn hup_until(proxy: &ProxyProcess, marker: &str) {
    let before = proxy.log_text().matches(marker).count();
    Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("kill");
    poll(
        Duration::from_secs(20),
        || format!("no {marker:?} in the log:\n{}", proxy.log_text()),
        || (proxy.log_text().matches(marker).count() > before).then_some(()),
    );
}

#[test]
fn no_pin_in_logs_metrics_status_or_errors() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let good = lab.config(
        upstream,
        "op_timeout_ms = 400\nsign_timeout_ms = 2000\nprobe_interval_ms = 300",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "sessions = 1\n",
    );
    let wrong_pin_file = lab.path().join("wrong-pin");
    std::fs::write(&wrong_pin_file, WRONG_FILE_PIN).expect("pin file");
    let bad = good.replace(
        &lab.pin_file.display().to_string(),
        &wrong_pin_file.display().to_string(),
    );
    assert_ne!(good, bad);
    let proxy = ProxyProcess::start_with_env(lab.path(), &good, &[("RUST_LOG", "debug")])
        .expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let ca = lab.ca_pem.display().to_string();
    let get = |path: &str| {
        let out = curl(&["--cacert", &ca, &proxy.url(path)]);
        assert!(out.status.success(), "{}", output_text(&out));
    };
    get("/one");
    get("/two?x=1");

    let reload = |config: &str, marker: &str| {
        std::fs::write(lab.path().join("hsmgate.toml"), config).expect("config");
        hup_until(&proxy, marker);
    };
    reload(&bad, "reload failed");
    assert!(
        proxy.log_text().contains("CKR_PIN_INCORRECT"),
        "the wrong PIN was refused by the token:\n{}",
        proxy.log_text()
    );
    reload(&good, "configuration reloaded");
    get("/three");

    lab.kill("hsm-b");
    poll(
        Duration::from_secs(15),
        || format!("hsm-b never went down:\n{}", proxy.log_text()),
        || (member_state(&status_json(admin), "hsm-b").as_deref() == Some("down")).then_some(()),
    );
    get("/four");
    let mut texts = vec![
        (
            "/status JSON while a member is down",
            admin_get_blocking(admin, "/status?format=json").1,
        ),
        (
            "/readyz while a member is down",
            admin_get_blocking(admin, "/readyz").1,
        ),
    ];
    lab.restart("hsm-b");
    poll(
        Duration::from_secs(15),
        || format!("hsm-b never came back:\n{}", proxy.log_text()),
        || (member_state(&status_json(admin), "hsm-b").as_deref() == Some("up")).then_some(()),
    );

    // `-t` with a wrong PIN: in a file, in the URI, and through the sidecar flag's URI.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_path = dir.path().join("bad.toml");
    std::fs::write(&bad_path, &bad).expect("bad config");
    let t_file = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("-t")
        .arg("-c")
        .arg(&bad_path)
        .stdin(Stdio::null())
        .output()
        .expect("hsmgate -t");
    assert!(!t_file.status.success());
    let token = TestToken::new(KeyType::EcP256);
    let with_uri_pin = config_for(&token, upstream, "").replace(
        &token.key_uri(),
        &format!(
            "pkcs11:token={};object=tls;type=private?pin-value={WRONG_URI_PIN}",
            token.label
        ),
    );
    let uri_path = dir.path().join("uri.toml");
    std::fs::write(&uri_path, &with_uri_pin).expect("uri config");
    let t_uri = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("-t")
        .arg("-c")
        .arg(&uri_path)
        .stdin(Stdio::null())
        .output()
        .expect("hsmgate -t");
    assert!(!t_uri.status.success(), "{}", output_text(&t_uri));
    let t_flag = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .args(["-t", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(upstream.to_string())
        .arg("--cert")
        .arg(&token.chain_pem)
        .arg("--pkcs11-module")
        .arg(&token.module)
        .arg("--key")
        .arg(format!(
            "pkcs11:token={};object=tls;type=private?pin-value={WRONG_FLAG_PIN}",
            token.label
        ))
        .env("SOFTHSM2_CONF", &token.conf)
        .stdin(Stdio::null())
        .output()
        .expect("hsmgate -t with flags");
    assert!(!t_flag.status.success(), "{}", output_text(&t_flag));
    // A start on the wrong PIN, with an admin listener: it stays up, not ready, and
    // does not try the PIN again by itself (each try counts towards the token's lock).
    let log = dir.path().join("bad-start.log");
    let mut child = crate::support::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .arg("-c")
            .arg(&bad_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("hsmgate"),
    );
    let start = poll(
        Duration::from_secs(20),
        || "no \"cannot start\" in the log".to_owned(),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("cannot start").then_some(text)
        },
    );
    let waiting: SocketAddr = (start.lines())
        .filter(|l| l.contains("while waiting to start"))
        .find_map(|l| l.split("address=").nth(1))
        .and_then(|a| a.trim().parse().ok())
        .expect("the waiting admin listener's address");
    let (status, why) = admin_get_blocking(waiting, "/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("CKR_PIN_INCORRECT"), "{why}");
    std::thread::sleep(Duration::from_secs(2));
    let start = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        start.matches("cannot start").count(),
        1,
        "tried again:\n{start}"
    );
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "exited:\n{start}"
    );
    let _ = Command::new("kill").arg(child.0.id().to_string()).status();
    let stopped = child.0.wait().expect("wait");
    assert!(stopped.success(), "a stop while waiting exits 0: {stopped}");

    texts.extend([
        ("the log", proxy.log_text()),
        ("/metrics", admin_get_blocking(admin, "/metrics").1),
        (
            "/status JSON",
            admin_get_blocking(admin, "/status?format=json").1,
        ),
        ("/status HTML", admin_get_blocking(admin, "/status").1),
        ("/readyz", admin_get_blocking(admin, "/readyz").1),
        ("-t with a wrong PIN file", output_text(&t_file)),
        ("-t with a wrong pin-value", output_text(&t_uri)),
        ("-t with a wrong pin-value flag", output_text(&t_flag)),
        ("a start with a wrong PIN", start.clone()),
    ]);
    for (what, text) in &texts {
        assert!(!text.is_empty(), "{what} is empty");
        for pin in [PIN, WRONG_FILE_PIN, WRONG_URI_PIN, WRONG_FLAG_PIN] {
            assert!(!text.contains(pin), "{what} shows a PIN ({pin}):\n{text}");
        }
    }
    // The failures said why, without the PIN.
    assert!(
        output_text(&t_uri).contains("CKR_PIN_INCORRECT"),
        "{}",
        output_text(&t_uri)
    );
    assert!(start.contains("CKR_PIN_INCORRECT"), "{start}");
}

/// SoftHSM in the process keeps one login for the whole process: a reload's new pool
/// gets CKR_USER_ALREADY_LOGGED_IN whatever PIN it gives. A changed PIN must still be
/// checked (in a child process): a wrong one fails the reload, naming the token's
/// refusal, and the old configuration keeps serving; the right one reloads.
#[test]
fn a_reload_checks_a_changed_pin_although_the_process_is_logged_in() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream("echo");
    let config = config_for(&token, upstream, "");
    let proxy = ProxyProcess::start(token.path(), &config).expect("hsmgate starts");
    let ca = token.ca_pem.display().to_string();
    let get = |path: &str| {
        let out = curl(&["--cacert", &ca, &proxy.url(path)]);
        assert!(out.status.success(), "{}", output_text(&out));
    };
    get("/before");
    let hup = |marker: &str| hup_until(&proxy, marker);
    std::fs::write(&token.pin_file, format!("{WRONG_FILE_PIN}\n")).expect("pin file");
    hup("reload failed");
    let log = proxy.log_text();
    assert!(log.contains("CKR_PIN_INCORRECT"), "{log}");
    assert!(
        !log.contains(WRONG_FILE_PIN),
        "the PIN is in the log:\n{log}"
    );
    get("/after-the-failed-reload");
    std::fs::write(&token.pin_file, format!("{PIN}\n")).expect("pin file");
    hup("configuration reloaded");
    get("/after-the-good-reload");
}

/// `-T` prints the configuration as hsmgate reads it: the file, then the flags and
/// variables over it; a `pin-value` in it is printed as `***`.
#[test]
fn dump_shows_the_overrides_and_hides_a_pin_value() {
    let token = TestToken::new(KeyType::EcP256);
    let config = config_for(&token, start_upstream("echo"), "").replace(
        &token.key_uri(),
        &format!(
            "pkcs11:token={};object=tls;type=private?pin-value={PIN}",
            token.label
        ),
    );
    let path = token.path().join("dump.toml");
    std::fs::write(&path, &config).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("-T")
        .arg("-c")
        .arg(&path)
        .env("HSMGATE_LISTEN", "127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .expect("hsmgate -T");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(PIN), "{text}");
    assert!(text.contains("pin-value=***\""), "{text}");
    assert!(text.contains("HSMGATE_LISTEN=127.0.0.1:1"), "{text}");
}
