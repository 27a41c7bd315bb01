//! The `hsmgate` binary as a subprocess.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::hsm::TestToken;

/// A running `hsmgate`, killed (by PID) on drop.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// A configuration for `token` in front of `upstream`, plus `extra` TOML lines appended
/// to the `[pkcs11]` section.
pub fn config_for(token: &TestToken, upstream: SocketAddr, extra_pkcs11: &str) -> String {
    format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[tls]
certificate = "{chain}"
key = "{key}"

[pkcs11]
module = "{module}"
env = {{ SOFTHSM2_CONF = "{conf}" }}
{extra_pkcs11}

[upstream]
address = "{upstream}"
connect_timeout_ms = 1000

[shutdown]
grace_ms = 2000
"#,
        chain = token.chain_pem.display(),
        key = token.key_uri(),
        module = token.module.display(),
        conf = token.conf.display(),
    )
}

/// A fresh token with a `key` key and `hsmgate` on it in front of the built-in echo
/// upstream (the default configuration); the token is returned to outlive the proxy.
pub fn start_echo_proxy(key: super::hsm::KeyType) -> (TestToken, ProxyProcess) {
    let token = TestToken::new(key);
    let upstream = super::net::start_upstream("echo");
    let proxy = ProxyProcess::start(token.path(), &config_for(&token, upstream, ""))
        .expect("hsmgate starts");
    (token, proxy)
}

impl ProxyProcess {
    /// Write `config` into `dir` and start `hsmgate -c` on it; wait until it listens.
    /// Err carries the log when it exits instead.
    pub fn start(dir: &Path, config: &str) -> Result<ProxyProcess, String> {
        Self::start_with_env(dir, config, &[])
    }

    pub fn start_with_env(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<ProxyProcess, String> {
        Self::start_under(dir, config, env, &[])
    }

    /// As [`start_with_env`](Self::start_with_env), under `wrapper` (a program and its
    /// arguments that exec hsmgate in the same process, e.g. `setpriv …`).
    pub fn start_under(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<ProxyProcess, String> {
        let (path, log) = write_config(dir, config);
        let hsmgate = env!("CARGO_BIN_EXE_hsmgate");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(hsmgate);
                cmd
            }
            None => Command::new(hsmgate),
        };
        cmd.arg("-c")
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("start hsmgate");
        Self::wait_listening(child, log)
    }

    /// Start `hsmgate ARGS` in `dir` with `env` added and no configuration file
    /// written; wait until `addr` accepts connections (any log format). The log is
    /// `dir/hsmgate.log`.
    pub fn start_args(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        addr: SocketAddr,
    ) -> Result<ProxyProcess, String> {
        let log = dir.join("hsmgate.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hsmgate");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            let text = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(format!("hsmgate exited ({status}):\n{}", text()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "hsmgate did not listen on {addr} within 30 s:\n{}",
                    text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ProxyProcess { child, addr, log })
    }

    fn wait_listening(mut child: Child, log: PathBuf) -> Result<ProxyProcess, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("listening address=").nth(1))
                .and_then(|a| a.trim().parse().ok())
            {
                return Ok(ProxyProcess { child, addr, log });
            }
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(format!("hsmgate exited ({status}):\n{text}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "hsmgate did not start listening within 30 s:\n{text}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin listener's address (waits for its log line).
    pub fn admin_addr(&self) -> SocketAddr {
        super::poll(
            Duration::from_secs(10),
            || format!("no admin listener:\n{}", self.log_text()),
            || {
                self.log_text()
                    .lines()
                    .filter(|l| l.contains("admin listening"))
                    .find_map(|l| l.split("address=").nth(1))
                    .and_then(|a| a.trim().parse().ok())
            },
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// SIGHUP, then wait (up to 20 s) for the log to say the configuration reloaded
    /// (once more than before).
    pub fn reload(&self) {
        let reloaded = |text: String| text.matches("configuration reloaded").count();
        let before = reloaded(self.log_text());
        let hup = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while reloaded(self.log_text()) == before {
            assert!(Instant::now() < deadline, "{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, config: &str) -> (PathBuf, PathBuf) {
    let path = dir.join("hsmgate.toml");
    std::fs::write(&path, config).expect("write config");
    (path, dir.join("hsmgate.log"))
}

/// Run `hsmgate` with `args` to completion (for start-up failures and `-t`).
pub fn run_hsmgate(dir: &Path, config: &str, args: &[&str]) -> std::process::Output {
    let (path, _) = write_config(dir, config);
    Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .args(args)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run hsmgate")
}
