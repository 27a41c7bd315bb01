//! How a running hsmgate is controlled, as nginx's processes are: the [`Control`]
//! messages a [`Proxy`](crate::Proxy) obeys, the signals that send them (SIGHUP reload,
//! SIGTERM/SIGINT fast stop, SIGQUIT graceful stop, SIGUSR1 reopen), the pid file and
//! `-s reload|stop|quit|reopen` (a signal sent to the pid in that file).

use std::path::{Path, PathBuf};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::error::ProxyError;

/* --- the messages --- */

/// What the running proxy is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration (SIGHUP).
    Reload,
    /// Reopen log files (SIGUSR1).
    Reopen,
    /// Fast stop (SIGINT; a second stop signal during a drain).
    Stop,
    /// SIGTERM: a fast stop for nginx configurations (as nginx), a graceful one for the
    /// native format (what the kubelet and systemd send; as ghostunnel and Envoy's
    /// sidecars drain on it). A second SIGTERM during the drain stops at once.
    Terminate,
    /// Graceful stop: drain in-flight requests (SIGQUIT).
    Quit,
}

/* --- the pid file and `-s` --- */

/// The pid file: written after start-up, removed at exit (when still ours).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Write this process's pid to `path`.
    pub fn create(path: &Path) -> Result<PidFile, ProxyError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            ProxyError::Io {
                what: format!("write the pid file {}", path.display()),
                source,
            }
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `-s NAME`: the signal for `reload`, `stop`, `quit`, `reopen`.
pub fn signal_for(name: &str) -> Option<&'static str> {
    match name {
        "reload" => Some("HUP"),
        "stop" => Some("TERM"),
        "quit" => Some("QUIT"),
        "reopen" => Some("USR1"),
        _ => None,
    }
}

/// Send `signal` (e.g. `HUP`) to the process whose pid is in `pid_file`.
pub fn send_signal(pid_file: &Path, signal: &str) -> Result<u32, ProxyError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| ProxyError::Io {
        what: format!("open() \"{}\" failed", pid_file.display()),
        source,
    })?;
    let pid: u32 = text.trim().parse().map_err(|_| {
        ProxyError::Invalid(format!(
            "invalid PID number \"{}\" in \"{}\"",
            text.trim(),
            pid_file.display()
        ))
    })?;
    // Sent directly (no `kill` program needed on the PATH of a minimal image).
    let number: nix::sys::signal::Signal = format!("SIG{signal}")
        .parse()
        .map_err(|_| ProxyError::Invalid(format!("unknown signal {signal}")))?;
    let target = i32::try_from(pid)
        .map(nix::unistd::Pid::from_raw)
        .map_err(|_| ProxyError::Invalid(format!("invalid PID number {pid}")))?;
    if let Err(e) = nix::sys::signal::kill(target, number) {
        return Err(ProxyError::Invalid(format!(
            "kill -{signal} {pid} failed ({e}): is hsmgate running?"
        )));
    }
    Ok(pid)
}

/// The signals hsmgate obeys, installed (before the pid file is written, so a `-s`
/// never meets a default handler).
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    quit: Signal,
    usr1: Signal,
}

impl Signals {
    /// Install the handlers (needs a tokio runtime).
    pub fn install() -> Result<Signals, ProxyError> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|source| ProxyError::Io {
                what: format!("install the {name} handler"),
                source,
            })
        };
        Ok(Signals {
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
            usr1: install(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }

    /// Turn signals into [`Control`] messages until the receiver is gone.
    pub async fn forward(mut self, tx: mpsc::Sender<Control>) {
        loop {
            let (name, control) = tokio::select! {
                _ = self.hup.recv() => ("SIGHUP", Control::Reload),
                _ = self.term.recv() => ("SIGTERM", Control::Terminate),
                _ = self.int.recv() => ("SIGINT", Control::Stop),
                _ = self.quit.recv() => ("SIGQUIT", Control::Quit),
                _ = self.usr1.recv() => ("SIGUSR1", Control::Reopen),
            };
            tracing::info!(signal = name, "signal received");
            if tx.send(control).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pid");
        let pid = PidFile::create(&path).expect("pid file");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read").trim(),
            std::process::id().to_string()
        );
        drop(pid);
        assert!(!path.exists());
        assert_eq!(signal_for("reopen"), Some("USR1"));
        assert_eq!(signal_for("restart"), None);
        let err = send_signal(&path, "HUP")
            .expect_err("no pid file")
            .to_string();
        assert!(err.contains("x.pid"), "{err}");
    }
}
