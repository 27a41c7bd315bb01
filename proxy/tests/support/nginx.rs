//! Runners for Debian's nginx and for `hsmgate -c nginx.conf` as subprocesses, and
//! curl as the client that sees both the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::corpus::{Corpus, Keys, Layout};
use super::poll;

/// `hsmgate ARGS` to completion.
pub fn hsmgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hsmgate")
}

/// `nginx -t -q` on `conf` in `prefix`: (success, stderr).
pub fn nginx_t(prefix: &Path, conf: &Path) -> (bool, String) {
    let out = Command::new("nginx")
        .args(["-t", "-q", "-p"])
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .output()
        .expect("run nginx (scripts/deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// hsmgate serving the corpus with token keys under its own prefix: how the lifecycle and
/// resource tests begin.
pub struct CorpusHsmgate {
    pub corpus: Corpus,
    pub layout: Layout,
    pub prefix: PathBuf,
    pub conf: PathBuf,
    pub server: Server,
    /// The HTTPS listener.
    pub https: SocketAddr,
}

impl CorpusHsmgate {
    /// Write the corpus for `layout` and start hsmgate on it (HTTPS and HTTP ports open).
    pub fn start(layout: Layout) -> CorpusHsmgate {
        let corpus = Corpus::new();
        let prefix = corpus.prefix("hsmgate");
        let conf = corpus.write(&prefix, Keys::Token, &layout, "");
        let server = Server::hsmgate(&prefix, &conf, &[layout.https, layout.http]);
        let https = ([127, 0, 0, 1], layout.https).into();
        CorpusHsmgate {
            corpus,
            layout,
            prefix,
            conf,
            server,
            https,
        }
    }
}

/// A server process (nginx or hsmgate), killed by PID on drop.
pub struct Server {
    pub child: Child,
    pub log: PathBuf,
}

impl Server {
    /// Debian's nginx in one process (no master, no daemon), on `conf` in `prefix`.
    pub fn nginx(prefix: &Path, conf: &Path, ports: &[u16]) -> Server {
        let log = prefix.join("logs/stderr.log");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr", "-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start nginx");
        let mut s = Server { child, log };
        s.wait_ports(ports);
        s
    }

    /// `hsmgate -c conf -p prefix -e stderr`, waiting until `ports` accept.
    pub fn hsmgate(prefix: &Path, conf: &Path, ports: &[u16]) -> Server {
        Self::hsmgate_with_env(prefix, conf, ports, &[])
    }

    /// [`hsmgate`](Self::hsmgate) with extra environment variables.
    pub fn hsmgate_with_env(
        prefix: &Path,
        conf: &Path,
        ports: &[u16],
        env: &[(&str, &Path)],
    ) -> Server {
        let log = prefix.join("logs/hsmgate.stderr");
        // HSMGATE_BIN: another build (e.g. release) for measurements.
        let bin = std::env::var_os("HSMGATE_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_hsmgate")),
            PathBuf::from,
        );
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(prefix)
            .args(["-e", "stderr"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start hsmgate");
        let mut s = Server { child, log };
        s.wait_ports(ports);
        s
    }

    fn wait_ports(&mut self, ports: &[u16]) {
        let log = self.log.clone();
        let text = move || std::fs::read_to_string(&log).unwrap_or_default();
        for &port in ports {
            poll(
                Duration::from_secs(30),
                || format!("port {port} not open within 30 s:\n{}", text()),
                || {
                    if let Some(status) = self.child.try_wait().expect("wait") {
                        panic!("server exited ({status}):\n{}", text());
                    }
                    std::net::TcpStream::connect(("127.0.0.1", port)).ok()
                },
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIGNAL pid`.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Wait for `needle` to appear `count` times in the log.
    pub fn wait_log(&self, needle: &str, count: usize, within: Duration) -> String {
        poll(
            within,
            || {
                format!(
                    "{count}× {needle:?} not logged within {within:?}:\n{}",
                    self.log_text()
                )
            },
            || {
                let text = self.log_text();
                (text.matches(needle).count() >= count).then_some(text)
            },
        )
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let log = &self.log;
        let child = &mut self.child;
        poll(
            within,
            || {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                format!("still running after {within:?}:\n{text}")
            },
            || child.try_wait().expect("wait"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the echo upstream saw: its name, the path, the headers.
pub type Echo = (String, String, Vec<(String, String)>);

/// One response seen through curl: status, headers (lower-case names), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The echo upstream's name (`hello from NAME`), path and forwarded headers.
    pub fn upstream(&self) -> Option<Echo> {
        let mut lines = self.body.lines();
        let name = lines.next()?.strip_prefix("hello from ")?.to_owned();
        let path = lines.next()?.split(' ').nth(1)?.to_owned();
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        Some((name, path, headers))
    }
}

/// `curl -i` of `url` with `host` resolved to 127.0.0.1.
pub fn fetch(ca: &Path, host: &str, port: u16, url: &str, extra: &[&str]) -> Seen {
    fetch_at(ca, host, port, "127.0.0.1", url, extra)
}

/// `curl -i` of `url` with `host` resolved to `ip` (`[::1]` for IPv6).
pub fn fetch_at(ca: &Path, host: &str, port: u16, ip: &str, url: &str, extra: &[&str]) -> Seen {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--http1.1", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:{ip}"))
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_owned(),
    }
}
