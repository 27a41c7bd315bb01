//! What people look at: the `/status` page rendered by a real headless Chromium (its DOM
//! after the page's script ran, and a screenshot), `hsmgate top` in a real terminal
//! (tmux: capture the pane, send keys), and `hsmgate demo` printing its admin URLs.
//! Chromium and tmux come from scripts/deps.sh; a test skips, saying so, without them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::client::{admin_get_blocking, member_state, status_json};
use crate::support::lab::HaLab;
use crate::support::{ProxyProcess, free_port, poll, start_upstream};

fn have(tool: &str, version_flag: &str) -> bool {
    Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A lab of two primaries and a standby behind hsmgate, with `hsm-b` killed and seen down.
fn lab_with_b_down() -> (HaLab, ProxyProcess, SocketAddr) {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b", "hsm-c"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "op_timeout_ms = 400\nsign_timeout_ms = 2000\nprobe_interval_ms = 300",
        &[
            ("eu-1", true, &["hsm-a", "hsm-b"]),
            ("us-1", false, &["hsm-c"]),
        ],
        "sessions = 1\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    lab.kill("hsm-b");
    wait_state(admin, "hsm-b", "down", &proxy);
    (lab, proxy, admin)
}

fn wait_state(admin: SocketAddr, member: &str, want: &str, proxy: &ProxyProcess) {
    poll(
        Duration::from_secs(15),
        || format!("{member} never became {want}:\n{}", proxy.log_text()),
        || (member_state(&status_json(admin), member).as_deref() == Some(want)).then_some(()),
    );
}

fn chromium(args: &[&str], url: &str, profile: &std::path::Path) -> std::process::Output {
    Command::new("timeout")
        .arg("90")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

#[test]
fn the_status_page_renders_members_in_chromium() {
    if !have("chromium", "--version") {
        eprintln!("SKIPPED: chromium is not installed (scripts/deps.sh installs it)");
        return;
    }
    let (_lab, proxy, admin) = lab_with_b_down();
    let url = format!("http://{admin}/status");
    let profile = tempfile::tempdir().expect("profile dir");
    let out = chromium(&["--dump-dom"], &url, profile.path());
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "data-member=\"hsm-a\"",
        "data-member=\"hsm-b\"",
        "data-member=\"hsm-c\"",
        "group lab",
        "<span class=\"pill up\">up</span>",
        "us-1 (standby)",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered page lacks {needle:?}:\n{dom}\n{}",
            proxy.log_text()
        );
    }
    // The killed member is down, or in one of the supervisor's recovery attempts (it
    // retries with back-off, so the state alternates while the HSM stays dead).
    assert!(
        dom.contains("<span class=\"pill down\">down</span>")
            || dom.contains("<span class=\"pill recovering\">recovering</span>"),
        "the rendered page shows hsm-b neither down nor recovering:\n{dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hsmgate-status.png");
    let out = chromium(
        &[
            "--window-size=1400,420",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
        profile.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&shot).expect("screenshot").len();
    assert!(size > 10_000, "a screenshot of {size} bytes is blank");
    eprintln!("screenshot of /status: {}", shot.display());
}

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The state column of `member`'s line in a `hsmgate top` screen.
fn top_state(screen: &str, member: &str) -> Option<String> {
    screen
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut w| (w.next() == Some(member)).then(|| w.nth(1).map(str::to_owned))?)
}

#[test]
fn top_in_a_terminal_follows_a_kill_and_quits_on_q() {
    if !have("tmux", "-V") {
        eprintln!("SKIPPED: tmux is not installed (scripts/deps.sh installs it)");
        return;
    }
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "op_timeout_ms = 400\nsign_timeout_ms = 2000\nprobe_interval_ms = 300",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "sessions = 1\n",
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts");
    let admin = proxy.admin_addr();
    let tmux = Tmux {
        socket: format!("hsmgate-top-{}", std::process::id()),
    };
    let command = format!(
        "{} top --admin {admin} --interval 0.2",
        env!("CARGO_BIN_EXE_hsmgate")
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen = poll(
        Duration::from_secs(15),
        || format!("top never showed both members up:\n{}", tmux.pane()),
        || {
            let s = tmux.pane();
            (top_state(&s, "hsm-a").as_deref() == Some("up")
                && top_state(&s, "hsm-b").as_deref() == Some("up"))
            .then_some(s)
        },
    );
    assert!(screen.contains("READY"), "{screen}");
    assert!(screen.contains("group lab"), "{screen}");

    lab.kill("hsm-b");
    let screen = poll(
        Duration::from_secs(15),
        || format!("top never showed hsm-b down:\n{}", tmux.pane()),
        || {
            let s = tmux.pane();
            (top_state(&s, "hsm-b").as_deref() == Some("down")).then_some(s)
        },
    );
    assert_eq!(
        top_state(&screen, "hsm-a").as_deref(),
        Some("up"),
        "{screen}"
    );
    lab.restart("hsm-b");
    poll(
        Duration::from_secs(15),
        || format!("top never showed hsm-b up again:\n{}", tmux.pane()),
        || (top_state(&tmux.pane(), "hsm-b").as_deref() == Some("up")).then_some(()),
    );

    assert!(tmux.run(&["send-keys", "-t", "top", "q"]).status.success());
    poll(
        Duration::from_secs(10),
        || format!("top did not exit on q:\n{}", tmux.pane()),
        || (!tmux.run(&["has-session", "-t", "top"]).status.success()).then_some(()),
    );
}

/// `hsmgate demo` kept alive for the test, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_serves_and_prints_its_admin_endpoints() {
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .args(["demo", "--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hsmgate demo");
    let stdout = child.stdout.take().expect("stdout");
    let _demo = Demo(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("demo output");
        let done = line.starts_with("status: ");
        lines.push(line);
        if done {
            break;
        }
    }
    let text = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.starts_with("curl --cacert ")),
        "{text}"
    );
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    for endpoint in ["healthz", "readyz", "metrics", "status"] {
        let want = format!("{endpoint}: http://127.0.0.1:{admin}/{endpoint}");
        assert!(lines.contains(&want), "no line {want:?} in:\n{text}");
        let (code, body) = admin_get_blocking(admin_addr, &format!("/{endpoint}"));
        assert_eq!(code, 200, "/{endpoint}: {body}");
    }
    assert_eq!(status_json(admin_addr)["keys"][0]["group"], "hsmgate-demo");
}
