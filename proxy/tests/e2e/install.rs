//! scripts/install.sh into a staging root (DESTDIR): what it installs, that a second
//! run changes nothing, --prefix, and `systemd-analyze verify` on the installed units.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn install(root: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("scripts/install.sh"))
        .args(["--bin", env!("CARGO_BIN_EXE_hsmgate")])
        .args(args)
        .env("DESTDIR", root)
        .output()
        .expect("run scripts/install.sh")
}

fn install_ok(root: &Path, args: &[&str]) {
    let out = install(root, args);
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path under `root` with its mode and content.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            let content = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).expect("read")
            };
            out.insert(
                path.strip_prefix(root).expect("under root").into(),
                (mode, content),
            );
        }
    }
    out
}

#[test]
fn install_into_a_staging_root_is_complete_and_idempotent() {
    let root = tempfile::tempdir().expect("tempdir");
    install_ok(root.path(), &[]);
    let first = tree(root.path());
    let mode = |p: &str| first.get(Path::new(p)).map(|(m, _)| *m);
    assert_eq!(mode("usr/local/sbin/hsmgate"), Some(0o755));
    assert_eq!(
        mode("etc/systemd/system/hsmgate-native.service"),
        Some(0o644)
    );
    assert_eq!(mode("etc/systemd/system/hsmgate.service"), Some(0o644));
    assert_eq!(mode("usr/lib/sysusers.d/hsmgate.conf"), Some(0o644));
    assert_eq!(mode("etc/hsmgate"), Some(0o750));
    assert_eq!(mode("var/log/hsmgate"), Some(0o750));
    let unit = String::from_utf8(
        first[Path::new("etc/systemd/system/hsmgate-native.service")]
            .1
            .clone(),
    )
    .expect("utf-8");
    assert!(
        unit.contains("\nExecStart=/usr/local/sbin/hsmgate -c ${HSMGATE_CONF}\n"),
        "{unit}"
    );
    assert!(unit.contains("\nUser=hsmgate\n"), "{unit}");
    let version = Command::new(root.path().join("usr/local/sbin/hsmgate"))
        .arg("--version")
        .output()
        .expect("run the installed binary");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("hsmgate "));

    install_ok(root.path(), &[]);
    assert!(
        tree(root.path()) == first,
        "a second run changed the installed tree"
    );

    let other = tempfile::tempdir().expect("tempdir");
    install_ok(other.path(), &["--prefix", "/opt/hsmgate"]);
    for unit in ["hsmgate-native.service", "hsmgate.service"] {
        let text = std::fs::read_to_string(other.path().join("etc/systemd/system").join(unit))
            .expect("unit");
        assert!(
            text.contains("ExecStart=/opt/hsmgate/sbin/hsmgate -c"),
            "{unit}: {text}"
        );
        assert!(!text.contains("/usr/local/sbin/hsmgate -") && !text.contains("/usr/sbin/hsmgate"));
    }

    let bad = install(other.path(), &["--prefix", "relative"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--prefix must be absolute"));
}

/// `systemd-analyze verify` checks the installed units against the host's systemd
/// (directives, dependencies, executables). The binary path is mapped into the
/// staging root: the units name where it will be once the tree is installed.
#[test]
fn installed_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    install_ok(root.path(), &[]);
    let staged = root.path().join("usr/local/sbin/hsmgate");
    let check = tempfile::tempdir().expect("tempdir");
    for unit in ["hsmgate-native.service", "hsmgate.service"] {
        let text = std::fs::read_to_string(root.path().join("etc/systemd/system").join(unit))
            .expect("installed unit");
        let mapped = check.path().join(unit);
        std::fs::write(
            &mapped,
            text.replace("/usr/local/sbin/hsmgate", staged.to_str().expect("utf-8")),
        )
        .expect("write");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&mapped)
            .output()
            .expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{unit}: systemd-analyze verify failed:\n{stderr}"
        );
        assert!(stderr.trim().is_empty(), "{unit}: warnings:\n{stderr}");
    }
}
