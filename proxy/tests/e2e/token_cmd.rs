//! `hsmgate token`: from an empty SoftHSM store to a serving proxy with hsmgate's own
//! commands (list, init, keygen, csr, csr --self-signed), checked with openssl,
//! pkcs11-tool and curl; their errors; start-up errors printed once for one token; the
//! demo's access lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::hsm::{self, PIN};
use crate::support::proxy::run_hsmgate;
use crate::support::{KeyType, ProxyProcess, TestToken, config_for, curl, start_upstream};

/// An empty SoftHSM store (its own `softhsm2.conf`, no token yet) and the PIN files.
struct Store {
    dir: tempfile::TempDir,
    conf: PathBuf,
    pin_file: PathBuf,
    so_pin_file: PathBuf,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::Builder::new()
            .prefix("hsmgate-token-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.path().join("tokens").display()
            ),
        )
        .expect("softhsm2.conf");
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).expect("pin file");
        let so_pin_file = dir.path().join("so-pin");
        std::fs::write(&so_pin_file, "so-8642\n").expect("so pin file");
        Store {
            dir,
            conf,
            pin_file,
            so_pin_file,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `hsmgate token ARGS` with this store's `SOFTHSM2_CONF`.
    fn token(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .arg("token")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .expect("run hsmgate token")
    }

    fn token_ok(&self, args: &[&str]) -> String {
        let out = self.token(args);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "hsmgate token {args:?} failed:\n{stdout}{stderr}"
        );
        assert!(
            !stdout.contains(PIN) && !stderr.contains(PIN),
            "the PIN was printed"
        );
        stdout
    }

    fn pkcs11_tool(&self, args: &[&str]) -> String {
        hsm::run(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &self.conf)
                .arg("--module")
                .arg(hsm::softhsm_module())
                .args(args),
        )
    }
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{stdout}{stderr}"
    );
    stdout + &stderr
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn token_commands_take_an_empty_softhsm_token_to_a_serving_proxy() {
    let store = Store::new();
    let dir = store.path();

    // An empty store has one slot whose token is not initialised: shown as such.
    let listing = store.token_ok(&["list"]);
    assert!(listing.contains("token not initialised"), "{listing}");
    assert!(!listing.contains("\"\""), "{listing}");

    let pin = s(&store.pin_file);
    store.token_ok(&[
        "init",
        "--label",
        "web",
        "--pin-file",
        pin,
        "--so-pin-file",
        s(&store.so_pin_file),
    ]);
    let generated = store.token_ok(&[
        "keygen",
        "--token",
        "web",
        "--label",
        "tls",
        "--key",
        "rsa2048",
        "--id",
        "a1b2",
        "--pin-file",
        pin,
    ]);
    let uri = generated
        .lines()
        .find(|l| l.starts_with("pkcs11:"))
        .unwrap_or_else(|| panic!("no URI printed:\n{generated}"))
        .to_string();
    assert_eq!(uri, "pkcs11:token=web;object=tls;type=private;id=%a1%b2");
    assert!(generated.contains("RSA-2048"), "{generated}");

    // The listing now names the token and the key's URI.
    let listing = store.token_ok(&["list"]);
    assert!(listing.contains("token \"web\""), "{listing}");
    assert!(listing.contains(&uri), "{listing}");

    // The private key is sensitive and was never extractable, with CKA_ID a1b2.
    let objects = store.pkcs11_tool(&[
        "--token-label",
        "web",
        "--login",
        "--pin",
        PIN,
        "--list-objects",
        "--type",
        "privkey",
    ]);
    assert!(objects.contains("ID:         a1b2"), "{objects}");
    assert!(
        objects.contains("sensitive") && objects.contains("never extractable"),
        "{objects}"
    );

    // A CSR signed by the token key, verified by openssl.
    let csr = dir.join("req.pem");
    let key = format!("{uri}?pin-source=file:{pin}");
    store.token_ok(&[
        "csr",
        "--key",
        &key,
        "--subject",
        "CN=localhost,O=hsmgate test",
        "--san",
        "DNS:localhost",
        "--san",
        "IP:127.0.0.1",
        "-o",
        s(&csr),
    ]);
    let verified = openssl_ok(&["req", "-in", s(&csr), "-noout", "-verify", "-text"]);
    assert!(verified.contains("verify OK"), "{verified}");
    assert!(
        verified.contains("DNS:localhost") && verified.contains("IP Address:127.0.0.1"),
        "{verified}"
    );

    // A self-signed certificate: its key is the token's public key, and its signature
    // verifies with it.
    let cert = dir.join("cert.pem");
    store.token_ok(&[
        "csr",
        "--key",
        &uri,
        "--pin-file",
        pin,
        "--subject",
        "CN=localhost",
        "--san",
        "DNS:localhost",
        "--san",
        "IP:127.0.0.1",
        "--self-signed",
        "--days",
        "30",
        "-o",
        s(&cert),
    ]);
    let pub_der = dir.join("pub.der");
    store.pkcs11_tool(&[
        "--token-label",
        "web",
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "a1b2",
        "-o",
        s(&pub_der),
    ]);
    let token_key = openssl_ok(&["pkey", "-pubin", "-inform", "DER", "-in", s(&pub_der)]);
    let cert_key = openssl_ok(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
    assert_eq!(
        cert_key, token_key,
        "the certificate's key is not the token's"
    );
    let checked = openssl_ok(&["verify", "-CAfile", s(&cert), s(&cert)]);
    assert!(checked.contains(": OK"), "{checked}");
    let dates = openssl_ok(&["x509", "-in", s(&cert), "-noout", "-checkend", "2500000"]);
    assert!(dates.contains("will not expire"), "{dates}");
    assert!(
        !openssl(&["x509", "-in", s(&cert), "-noout", "-checkend", "2700000"])
            .status
            .success(),
        "--days 30 should give about 30 days"
    );

    // hsmgate serves with the generated key and certificate; curl trusts the certificate.
    let upstream = start_upstream("token-walk-upstream");
    let config = format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[tls]
certificate = "cert.pem"
key = "{uri}?pin-source=file:pin"

[pkcs11]
module = "{module}"
env = {{ SOFTHSM2_CONF = "{conf}" }}

[upstream]
address = "{upstream}"
"#,
        module = hsm::softhsm_module().display(),
        conf = store.conf.display(),
    );
    let proxy = ProxyProcess::start(dir, &config).expect("hsmgate starts");
    let url = format!("https://localhost:{}/walk", proxy.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", proxy.addr.port());
    let out = curl(&["--cacert", s(&cert), "--resolve", &resolve, &url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && body.contains("hello from token-walk-upstream"),
        "curl: {}\n{body}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_text()
    );
    assert!(!proxy.log_text().contains(PIN), "the PIN is in the log");
}

#[test]
fn token_command_errors_name_the_pkcs11_function_and_code() {
    let store = Store::new();
    let pin = s(&store.pin_file);
    store.token_ok(&[
        "init",
        "--label",
        "web",
        "--pin-file",
        pin,
        "--so-pin-file",
        s(&store.so_pin_file),
    ]);
    let wrong = store.path().join("wrong-pin");
    std::fs::write(&wrong, "wrong-5555\n").expect("pin file");
    let out = store.token(&[
        "keygen",
        "--token",
        "web",
        "--label",
        "tls",
        "--key",
        "p256",
        "--pin-file",
        s(&wrong),
    ]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("token web: C_Login failed: CKR_PIN_INCORRECT"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-5555"),
        "the PIN was printed: {stderr}"
    );

    store.token_ok(&[
        "keygen",
        "--token",
        "web",
        "--label",
        "tls",
        "--key",
        "p256",
        "--pin-file",
        pin,
    ]);
    let out = store.token(&[
        "keygen",
        "--token",
        "web",
        "--label",
        "tls",
        "--pin-file",
        pin,
    ]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("already exists"), "{stderr}");

    let out = store.token(&[
        "keygen",
        "--token",
        "nope",
        "--label",
        "x",
        "--pin-file",
        pin,
    ]);
    let (_, stderr) = texts(&out);
    assert!(stderr.contains("no token matching token=nope"), "{stderr}");
    assert!(
        stderr.contains("an uninitialised token in slot"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"\""), "{stderr}");

    let out = store.token(&[
        "csr",
        "--key",
        "pkcs11:token=web;object=tls;type=private",
        "--subject",
        "CN=x",
        "-o",
        "x.pem",
    ]);
    let (_, stderr) = texts(&out);
    assert!(stderr.contains("no PIN for pkcs11:token=web"), "{stderr}");
}

#[test]
fn start_up_error_is_printed_once_for_a_single_token() {
    let token = TestToken::new(KeyType::EcP256);
    let upstream = start_upstream("once-upstream");
    let wrong = token.path().join("wrong-pin");
    std::fs::write(&wrong, "wrong-4444\n").expect("pin file");
    let config = config_for(&token, upstream, "").replace(
        &format!("pin-source=file:{}", token.pin_file.display()),
        &format!("pin-source=file:{}", wrong.display()),
    );
    let out = run_hsmgate(token.path(), &config, &[]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    let all = stdout + &stderr;
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("CKR_PIN_INCORRECT"))
        .collect();
    assert_eq!(lines.len(), 1, "printed more than once:\n{all}");
    assert!(
        lines[0].starts_with("hsmgate: [emerg] token hsmgate-test: C_Login failed"),
        "{all}"
    );
    assert!(
        !all.contains("member"),
        "HA-group wording for one token:\n{all}"
    );
    assert!(!all.contains("wrong-4444"), "the PIN was printed");

    // An absent token: named once, the uninitialised slot shown as such.
    let config = config_for(&token, upstream, "").replace("token=hsmgate-test", "token=absent");
    let out = run_hsmgate(token.path(), &config, &[]);
    let all = texts(&out).0 + &texts(&out).1;
    assert_eq!(all.matches("no token matching").count(), 1, "{all}");
    assert!(all.contains("an uninitialised token in slot"), "{all}");
    assert!(!all.contains("\"\""), "{all}");
}

/// `hsmgate demo ARGS` with its stdout's lines coming through the receiver.
fn spawn_demo(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hsmgate demo");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The demo's next line of stdout that `pred` accepts (within 30 s).
fn next_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pred: &dyn Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => continue,
            Err(_) => panic!("the demo printed no {what}"),
        }
    }
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn demo_prints_an_access_line_per_request() {
    let (child, rx) = spawn_demo(&["--listen", "127.0.0.1:0", "--key", "p256"]);
    let curl_line = next_line(&rx, "curl line", &|l| l.starts_with("curl --cacert "));
    let args: Vec<&str> = curl_line.split_whitespace().skip(1).collect();
    let url = format!("{}demo-path?x=1", args[2]);
    let out = curl(&[args[0], args[1], "-A", "token-test-agent", &url]);
    let access = next_line(&rx, "access line", &|l| l.starts_with("access: "));
    stop(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        access.contains("127.0.0.1 \"GET /demo-path?x=1 HTTP/1.1\" 200")
            && access.contains("\"token-test-agent\""),
        "{access}"
    );
}

/// With the default admin port taken (here by the test; as by a first demo), the demo
/// serves its admin endpoints on a port the system picks and prints it, instead of
/// failing to start.
#[test]
fn demo_takes_another_admin_port_when_the_default_is_taken() {
    // Held for the test's length, unless something else holds it already.
    let _taken = std::net::TcpListener::bind("127.0.0.1:9901");
    let (child, rx) = spawn_demo(&["--listen", "127.0.0.1:0", "--key", "p256"]);
    next_line(&rx, "curl line", &|l| l.starts_with("curl --cacert "));
    let healthz = next_line(&rx, "healthz line", &|l| l.starts_with("healthz: "));
    let url = healthz.trim_start_matches("healthz: ").to_string();
    let out = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    stop(child);
    assert!(!url.contains(":9901/"), "{healthz}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{url}");
}

/// A free port of 127.0.0.1 in 26000-26999 (bound, then released).
fn free_port_26k(skip: u16) -> u16 {
    let start = (std::process::id() as u16).wrapping_mul(13) % 1000;
    (0..1000)
        .map(|i| 26000 + (start + i) % 1000)
        .filter(|p| *p != skip)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 26000-26999")
}

#[test]
fn readme_walk_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let port = free_port_26k(0);
    let upstream_port = free_port_26k(port);
    let out = Command::new(repo.join("scripts/newcomer-walk.sh"))
        .env("HSMGATE", env!("CARGO_BIN_EXE_hsmgate"))
        .env("WALK_PORT", port.to_string())
        .env("WALK_UPSTREAM_PORT", upstream_port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/newcomer-walk.sh");
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "the README walk failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("hello through hsmgate"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every step succeeded"), "{stdout}");
    assert!(
        stderr.contains("Certificate request self-signature verify OK")
            || stdout.contains("Certificate request self-signature verify OK"),
        "{stdout}\n{stderr}"
    );
}
