//! hsmgate as a sidecar: configured by `HSMGATE_*` variables alone (no file), with
//! JSON logs, and by flags laid over a file; bad values name their variable or flag.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::hsm::PIN;
use crate::support::{
    KeyType, ProxyProcess, TestToken, config_for, curl, free_port_in_range, start_upstream_in_range,
};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The variables that configure hsmgate for `token` in front of `upstream`.
fn sidecar_env(
    token: &TestToken,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Vec<(String, String)> {
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    vec![
        ("HSMGATE_LISTEN".into(), listen.to_string()),
        ("HSMGATE_UPSTREAM".into(), upstream.to_string()),
        ("HSMGATE_CERT".into(), path(&token.chain_pem)),
        (
            "HSMGATE_KEY".into(),
            format!("pkcs11:token={};object=tls;type=private", token.label),
        ),
        ("HSMGATE_PIN_FILE".into(), "pin".into()), // relative: to the working directory
        ("HSMGATE_PKCS11_MODULE".into(), path(&token.module)),
        ("SOFTHSM2_CONF".into(), path(&token.conf)),
    ]
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn get(url: &str, ca: &std::path::Path) -> (String, String) {
    let ca = ca.to_str().expect("utf-8");
    let out = curl(&["--cacert", ca, "-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (status.to_owned(), body.to_owned())
}

#[test]
fn environment_alone_runs_a_proxy_with_json_logs() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream_in_range("app");
    let (listen, admin) = (local(free_port_in_range()), local(free_port_in_range()));
    let mut env = sidecar_env(&token, listen, upstream);
    env.push(("HSMGATE_ADMIN".into(), admin.to_string()));
    env.push(("HSMGATE_LOG_FORMAT".into(), "json".into()));
    let proxy = ProxyProcess::start_args(token.path(), &[], &borrowed(&env), listen)
        .expect("hsmgate starts from the environment alone");

    let (status, body) = get(
        &format!("https://{listen}/through/the/sidecar"),
        &token.ca_pem,
    );
    assert_eq!(status, "200", "{body}\n{}", proxy.log_text());
    assert!(body.contains("hello from app"), "{body}");
    assert!(body.contains("GET /through/the/sidecar HTTP/1.1"), "{body}");
    for path in ["/healthz", "/readyz"] {
        let out = curl(&[
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &format!("http://{admin}{path}"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{path}");
    }

    let log = proxy.log_text();
    assert!(!log.contains(PIN), "the PIN leaked into the log:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening line:\n{log}"));
    assert_eq!(listening["fields"]["address"], listen.to_string());
    assert_eq!(listening["level"], "INFO");
}

#[test]
fn flags_replace_values_of_a_file() {
    let token = TestToken::new(KeyType::EcP256);
    let from_file = start_upstream_in_range("file-upstream");
    let from_flag = start_upstream_in_range("flag-upstream");
    let listen = local(free_port_in_range());
    let config_path = token.path().join("hsmgate.toml");
    std::fs::write(&config_path, config_for(&token, from_file, "")).expect("config");
    let args = [
        "-c",
        config_path.to_str().expect("utf-8"),
        "--listen",
        &listen.to_string(),
        "--upstream",
        &from_flag.to_string(),
    ];
    // A variable loses to its flag.
    let proxy = ProxyProcess::start_args(
        token.path(),
        &args,
        &[("HSMGATE_UPSTREAM", &from_file.to_string())],
        listen,
    )
    .expect("hsmgate starts");
    let (status, body) = get(&format!("https://{listen}/"), &token.ca_pem);
    assert_eq!(status, "200", "{}", proxy.log_text());
    assert!(body.contains("hello from flag-upstream"), "{body}");
}

#[test]
fn bad_values_name_the_variable_and_never_the_pin() {
    let token = TestToken::new(KeyType::EcP256);
    let good = sidecar_env(&token, local(21999), local(21998));
    let pin_key = format!("pkcs11:token={};object=tls?pin-value={PIN}", token.label);
    for (var, value, expected) in [
        (
            "HSMGATE_LISTEN",
            "127.0.0.1",
            "environment variable HSMGATE_LISTEN=\"127.0.0.1\": `listener[0].address`",
        ),
        (
            "HSMGATE_UPSTREAM",
            "app:http",
            "environment variable HSMGATE_UPSTREAM=\"app:http\": `upstream.address`: port \"http\"",
        ),
        (
            "HSMGATE_KEY",
            pin_key.as_str(),
            "pin-value=***\": `tls.key`: several PIN sources given",
        ),
        (
            "HSMGATE_LOG_FORMAT",
            "yaml",
            "environment variable HSMGATE_LOG_FORMAT=\"yaml\"",
        ),
        (
            "HSMGATE_CERT",
            "",
            "environment variable HSMGATE_CERT=\"\": is empty",
        ),
    ] {
        let mut env = borrowed(&good);
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let out = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .current_dir(token.path())
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("run hsmgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{var}: expected {expected:?} in:\n{stderr}"
        );
        assert!(!stderr.contains(PIN), "the PIN leaked:\n{stderr}");
    }
}

/// Started while its HSM cannot be used (here: SoftHSM's token store is away), a
/// sidecar with an admin listener does not exit into the kubelet's restart loop: it is
/// alive (`/healthz` 200) and not ready (`/readyz` 503 with the reason), tries the HSM
/// again with a back-off, and serves once the token is back, without a restart.
#[test]
fn a_sidecar_whose_hsm_is_away_at_start_waits_alive_and_not_ready() {
    use crate::support::client::admin_get_blocking;
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream_in_range("app");
    let (listen, admin) = (local(free_port_in_range()), local(free_port_in_range()));
    let mut env = sidecar_env(&token, listen, upstream);
    env.push(("HSMGATE_ADMIN".into(), admin.to_string()));
    let store = token.path().join("tokens");
    let away = token.path().join("tokens.away");
    std::fs::rename(&store, &away).expect("move the token store away");
    std::fs::create_dir(&store).expect("an empty token store");
    let log = token.path().join("waiting.log");
    let mut child = crate::support::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .current_dir(token.path())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start hsmgate"),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    // Polled with curl, which tells a refused or reset connection from an answer.
    let readyz = || {
        let url = format!("http://{admin}/readyz");
        let out = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    crate::support::poll(
        std::time::Duration::from_secs(20),
        || format!("not answering 503 while waiting:\n{}", text()),
        || (readyz() == "503").then_some(()),
    );
    let (status, why) = admin_get_blocking(admin, "/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("no token matching"), "{why}");
    assert_eq!(admin_get_blocking(admin, "/healthz").0, 200);
    assert!(
        std::net::TcpStream::connect(listen).is_err(),
        "serving without its key"
    );
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "exited:\n{}",
        text()
    );

    std::fs::remove_dir(&store).expect("remove the empty store");
    std::fs::rename(&away, &store).expect("the token store is back");
    crate::support::poll(
        std::time::Duration::from_secs(30),
        || format!("never ready:\n{}", text()),
        || (readyz() == "200").then_some(()),
    );
    let (status, body) = get(&format!("https://{listen}/after/the/wait"), &token.ca_pem);
    assert_eq!(status, "200", "{body}\n{}", text());
    assert!(text().matches("cannot start").count() >= 1, "{}", text());
    assert!(!text().contains(PIN), "the PIN was logged");
    let _ = Command::new("kill").arg(child.0.id().to_string()).status();
    assert!(child.0.wait().expect("wait").success(), "{}", text());
}
