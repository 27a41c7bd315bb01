//! A second PKCS#11 implementation besides SoftHSM2 (issue 10): NSS's softokn
//! (`libsoftokn3.so`, Debian's libnss3), with its key database made by `certutil`.
//!
//! softokn's `C_Initialize` needs its database directory in the `pReserved` field of
//! `CK_C_INITIALIZE_ARGS` (`CKR_ARGUMENTS_BAD` without it). hsmgate passes none, so the
//! module is loaded by `p11-kit server`, whose module configuration has
//! `x-init-reserved`, and hsmgate reaches it through `p11-kit-client.so`. p11-kit reads
//! per-user module configurations only for a non-root user, so under root the server
//! runs as `nobody`. The key is made on the module (pkcs11-tool), the certificate is
//! issued for its public key, and a TLS handshake and a request go through hsmgate.
//! Skipped, saying why, when a part is not installed (scripts/deps.sh installs them).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hsm::{issue_certificate_for, p11kit_client_module};
use crate::support::{ProxyProcess, curl, start_upstream};

const SOFTOKN: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
    "/usr/lib/aarch64-linux-gnu/libsoftokn3.so",
    "/usr/lib64/libsoftokn3.so",
];
const TOKEN: &str = "NSS Certificate DB";
const PIN: &str = "4711-nss";

fn missing_part() -> Option<String> {
    if !SOFTOKN.iter().any(|p| Path::new(p).exists()) {
        return Some("libsoftokn3.so (apt-get install libnss3)".into());
    }
    for tool in ["certutil", "p11-kit", "pkcs11-tool", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} (scripts/deps.sh installs it)"));
        }
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `cmd` as `nobody` when we are root (p11-kit ignores root's user configuration).
fn as_module_user(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            program,
        ]);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `p11-kit server` for the softokn database in `dir`, stopped (its process group) on drop.
struct NssServer {
    child: Child,
    socket: PathBuf,
}

impl NssServer {
    fn start(dir: &Path) -> NssServer {
        let softokn = SOFTOKN
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("softokn");
        let db = dir.join("db");
        let home = dir.join("home");
        let modules = home.join(".config/pkcs11/modules");
        for d in [&db, &modules] {
            std::fs::create_dir_all(d).expect("dir");
        }
        std::fs::write(
            modules.join("nss.module"),
            format!(
                "module: {softokn}\nx-init-reserved: configdir='sql:{}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\n",
                db.display()
            ),
        )
        .expect("module config");
        std::fs::write(dir.join("pin"), PIN).expect("pin");
        open_to_all(dir);
        run_ok(
            as_module_user("certutil")
                .args(["-N", "-d"])
                .arg(format!("sql:{}", db.display()))
                .arg("-f")
                .arg(dir.join("pin")),
        );
        let socket = dir.join("p11kit.sock");
        let child = as_module_user("env")
            .arg(format!("HOME={}", home.display()))
            .args(["p11-kit", "server", "-f", "-n"])
            .arg(&socket)
            .arg("pkcs11:token=NSS%20Certificate%20DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start p11-kit server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "p11-kit server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        NssServer { child, socket }
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// pkcs11-tool on the served token.
    fn tool(&self, args: &[&str]) -> Vec<u8> {
        run_ok(
            Command::new("pkcs11-tool")
                .env("P11_KIT_SERVER_ADDRESS", self.address())
                .arg("--module")
                .arg(p11kit_client_module())
                .args(["--token-label", TOKEN])
                .args(args),
        )
    }
}

impl Drop for NssServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}

/// Let `nobody` use the test's directory (the module's database and socket live there).
fn open_to_all(dir: &Path) {
    for entry in walk(dir).into_iter().chain([dir.to_path_buf()]) {
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o777));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn an_ecdsa_key_in_nss_softokn_serves_tls_through_hsmgate() {
    if let Some(missing) = missing_part() {
        eprintln!("SKIPPED: the second PKCS#11 module needs {missing}");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("hsmgate-nss")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let dir = tmp.path();
    let server = NssServer::start(dir);
    server.tool(&[
        "--login",
        "--pin",
        PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "tls",
        "--id",
        "01",
    ]);
    let spki_path = dir.join("pub.der");
    server.tool(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "01",
        "-o",
        spki_path.to_str().expect("utf-8"),
    ]);
    let spki = std::fs::read(&spki_path).expect("public key");
    let (ca, chain) = issue_certificate_for(dir, &spki);
    let config = format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[tls]
certificate = "{chain}"
key = "pkcs11:token=NSS%20Certificate%20DB;object=tls;type=private?pin-source=file:{pin}"

[pkcs11]
module = "{module}"
env = {{ P11_KIT_SERVER_ADDRESS = "{address}" }}
sessions = 2

[upstream]
address = "{upstream}"
connect_timeout_ms = 1000
"#,
        chain = chain.display(),
        pin = dir.join("pin").display(),
        module = p11kit_client_module().display(),
        address = server.address(),
        upstream = start_upstream("echo"),
    );
    let proxy = ProxyProcess::start(dir, &config).expect("hsmgate starts on the NSS key");
    let log = proxy.log_text();
    assert!(
        log.contains("signer pool started") && log.contains("NSS Certificate DB"),
        "the pool runs on the NSS token:\n{log}"
    );
    for version in ["--tlsv1.3", "--tlsv1.2"] {
        let out = curl(&[
            "--cacert",
            ca.to_str().expect("utf-8"),
            version,
            "--tls-max",
            &version[6..],
            &proxy.url("/nss"),
        ]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.contains("hello from echo"),
            "{version}: {body}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            proxy.log_text()
        );
    }
}
