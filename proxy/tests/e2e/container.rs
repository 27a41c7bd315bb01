//! The container image (deploy/container): built with build.sh from the test binary,
//! run by podman read-only, as UID 10001, with every capability dropped, configured by
//! HSMGATE_* variables alone, with a SoftHSM token, its module and the certificate and
//! PIN mounted in, in front of an upstream on the host; a request through it gets a 200.
//! Skipped with a message where podman or runc is missing (apt-get install podman runc).
//!
//! podman's defaults fail on these machines (deploy/container/container-facts.md): runc, and
//! explicit nofile/nproc limits, are needed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::hsm::PIN;
use crate::support::{KeyType, TestToken, curl, free_port_in_range, start_upstream_in_range};

const UID: u32 = 10001;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A running container, removed (`podman rm -f`) on drop.
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = Command::new("podman")
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn inspect(&self, format: &str) -> String {
        let out = run(Command::new("podman").args(["inspect", "--format", format, &self.name]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "2", &self.name])
            .output();
    }
}

/// The module and the libraries it needs beyond the image's (glibc, libgcc_s, libm)
/// into `dir/lib`; a softhsm2.conf for the token store mounted at /tokens.
fn hsm_dir(token: &TestToken, dir: &Path) {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).expect("hsm/lib");
    std::fs::copy(&token.module, lib.join("libsofthsm2.so")).expect("copy the module");
    let ldd = run(Command::new("ldd").arg(&token.module));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(path) = line.split("=> ").nth(1).and_then(|r| r.split(' ').next()) else {
            continue;
        };
        let name = Path::new(path)
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let in_image = ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"];
        if !in_image.iter().any(|p| name.starts_with(p)) {
            std::fs::copy(path, lib.join(&name)).expect("copy a library of the module");
        }
    }
    std::fs::write(
        dir.join("softhsm2.conf"),
        "directories.tokendir = /tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
    )
    .expect("softhsm2.conf");
}

fn chown_tree(path: &Path, uid: u32) {
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path));
}

#[test]
fn image_runs_read_only_as_non_root_in_front_of_an_upstream() {
    for tool in ["podman", "runc"] {
        if !available(tool) {
            eprintln!("SKIPPED: {tool} is not installed (apt-get install podman runc)");
            return;
        }
    }
    let tag = format!("localhost/hsmgate-test:{}", std::process::id());
    let build = run(
        Command::new(repo().join("deploy/container/build.sh")).args([
            "--bin",
            env!("CARGO_BIN_EXE_hsmgate"),
            "--tag",
            &tag,
        ]),
    );
    eprintln!("built {}", String::from_utf8_lossy(&build.stdout).trim());
    let _image = scopeguard(tag.clone());

    let token = TestToken::new(KeyType::EcP256);
    let mounts = tempfile::Builder::new()
        .prefix("hsmgate-container-")
        .tempdir()
        .expect("tempdir");
    let hsm = mounts.path().join("hsm");
    hsm_dir(&token, &hsm);
    // The token store belongs to the container's user; module, certificate and PIN
    // are read-only mounts, readable by it.
    let tokens = token.path().join("tokens");
    chown_tree(&tokens, UID);
    for f in [&token.pin_file, &token.chain_pem] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    let upstream = start_upstream_in_range("app-container");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port_in_range()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port_in_range()).into();
    let name = format!("hsmgate-test-{}", std::process::id());
    let container = Container { name: name.clone() };
    let volume =
        |host: &Path, inside: &str, mode: &str| format!("{}:{inside}:{mode}", host.display());
    run(Command::new("podman")
        .args(["--runtime", "runc", "run", "-d", "--name", &name])
        .args(["--read-only", "--user", "10001:10001", "--cap-drop", "ALL"])
        .args(["--security-opt", "no-new-privileges"])
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args(["--network", "host"])
        .args(["-v", &volume(&hsm, "/hsm", "ro")])
        .args(["-v", &volume(&tokens, "/tokens", "rw")])
        .args(["-v", &volume(&token.chain_pem, "/tls/chain.pem", "ro")])
        .args(["-v", &volume(&token.pin_file, "/run/secrets/hsm-pin", "ro")])
        .args(["-e", "SOFTHSM2_CONF=/hsm/softhsm2.conf"])
        .args(["-e", &format!("HSMGATE_LISTEN={listen}")])
        .args(["-e", &format!("HSMGATE_UPSTREAM={upstream}")])
        .args(["-e", "HSMGATE_CERT=/tls/chain.pem"])
        .args([
            "-e",
            &format!(
                "HSMGATE_KEY=pkcs11:token={};object=tls;type=private",
                token.label
            ),
        ])
        .args(["-e", "HSMGATE_PIN_FILE=/run/secrets/hsm-pin"])
        .args(["-e", "HSMGATE_PKCS11_MODULE=/hsm/lib/libsofthsm2.so"])
        .args(["-e", &format!("HSMGATE_ADMIN={admin}")])
        .arg(&tag));

    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(listen).is_err() {
        let running = container.inspect("{{.State.Running}}");
        assert!(
            running == "true",
            "the container stopped:\n{}",
            container.logs()
        );
        assert!(
            Instant::now() < deadline,
            "not listening within 30 s:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let ca = token.ca_pem.to_str().expect("utf-8");
    let out = curl(&[
        "--cacert",
        ca,
        "-w",
        "\n%{http_code}",
        &format!("https://{listen}/from/outside"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n200"),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        container.logs()
    );
    assert!(text.contains("hello from app-container"), "{text}");
    let ready = curl(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("http://{admin}/readyz"),
    ]);
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "200");

    // What the container really was: its main process's user, a read-only root.
    let pid = container.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert_eq!(uids.split_whitespace().nth(1), Some("10001"), "{uids}");
    let caps = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff line");
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert!(
        !container.logs().contains(PIN),
        "the PIN leaked into the logs"
    );
}

/// Removes the test image on drop.
fn scopeguard(tag: String) -> impl Drop {
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
        }
    }
    Image(tag)
}
