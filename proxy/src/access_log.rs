//! Access logs: lines formatted on the request path, written by one writer thread
//! through a bounded queue (a request never waits for the disk; when the queue is
//! full the line is dropped and counted). SIGUSR1 reopens every file (logrotate).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use hsmgate_config::nginx::LogEscape;

/// Lines that may wait for the writer.
const QUEUE: usize = 16 * 1024;

enum Msg {
    Line(Arc<PathBuf>, String),
    Reopen,
    Flush(std::sync::mpsc::Sender<()>),
}

/// The process-wide writer.
#[derive(Debug, Clone)]
pub(crate) struct AccessLogWriter {
    tx: SyncSender<Msg>,
}

static WRITER: OnceLock<AccessLogWriter> = OnceLock::new();

impl AccessLogWriter {
    /// The writer (its thread starts on first use).
    pub(crate) fn get() -> &'static AccessLogWriter {
        WRITER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            std::thread::Builder::new()
                .name("hsmgate-accesslog".into())
                .spawn(move || write_loop(rx))
                .expect("start the access log thread");
            AccessLogWriter { tx }
        })
    }

    /// Queue `line` (without newline) for `path`; dropped if the queue is full.
    pub(crate) fn log(&self, path: &Arc<PathBuf>, line: String) {
        match self.tx.try_send(Msg::Line(Arc::clone(path), line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED).increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Close and reopen every file before the next line.
    pub(crate) fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Wait until queued lines are written (at exit).
    pub(crate) fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Open (create) `path` for appending, as a check at configuration time.
pub(crate) fn check_open(path: &Path) -> std::io::Result<()> {
    open(path).map(drop)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(rx: Receiver<Msg>) {
    let mut files: HashMap<Arc<PathBuf>, std::io::BufWriter<File>> = HashMap::new();
    let mut failed: HashMap<Arc<PathBuf>, ()> = HashMap::new();
    // When each open file was last written: one no configuration writes to any more (a
    // reload changed `access_log`) is closed after IDLE_CLOSE, and reopened if written
    // to again.
    let mut used: HashMap<Arc<PathBuf>, std::time::Instant> = HashMap::new();
    loop {
        let first = match rx.recv_timeout(IDLE_CLOSE) {
            Ok(first) => first,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                close_idle(&mut files, &mut used);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        close_idle(&mut files, &mut used);
        let mut next = Some(first);
        // Drain what is queued, then flush once.
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Line(path, line) => {
                    if !files.contains_key(&path) {
                        match open(&path) {
                            Ok(f) => {
                                failed.remove(&path);
                                files.insert(Arc::clone(&path), std::io::BufWriter::new(f));
                            }
                            Err(e) => {
                                if failed.insert(Arc::clone(&path), ()).is_none() {
                                    tracing::error!(file = %path.display(), error = %e, "cannot open access log");
                                }
                                continue;
                            }
                        }
                    }
                    if let Some(f) = files.get_mut(&path) {
                        let _ = f.write_all(line.as_bytes());
                        let _ = f.write_all(b"\n");
                        used.insert(path, std::time::Instant::now());
                    }
                }
                Msg::Reopen => {
                    for f in files.values_mut() {
                        let _ = f.flush();
                    }
                    files.clear();
                    failed.clear();
                }
                Msg::Flush(done) => {
                    for f in files.values_mut() {
                        let _ = f.flush();
                    }
                    let _ = done.send(());
                }
            }
        }
        for f in files.values_mut() {
            let _ = f.flush();
        }
    }
}

/// How long an access log file nothing writes to stays open.
const IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(60);

/// Closes the files not written for [`IDLE_CLOSE`].
fn close_idle(
    files: &mut HashMap<Arc<PathBuf>, std::io::BufWriter<File>>,
    used: &mut HashMap<Arc<PathBuf>, std::time::Instant>,
) {
    used.retain(|path, at| {
        let idle = at.elapsed() >= IDLE_CLOSE;
        if idle && let Some(mut f) = files.remove(path) {
            let _ = f.flush();
        }
        !idle
    });
}

/// A variable's value escaped as `log_format escape=` says.
pub(crate) fn escape(value: &str, how: LogEscape) -> String {
    match how {
        LogEscape::None => value.to_owned(),
        LogEscape::Default => {
            let mut out = String::with_capacity(value.len());
            for b in value.bytes() {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    out.push_str(&format!("\\x{b:02X}"));
                } else {
                    out.push(b as char);
                }
            }
            out
        }
        LogEscape::Json => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_nginx() {
        assert_eq!(
            escape("a\"b\\c\n", LogEscape::Default),
            "a\\x22b\\x5Cc\\x0A"
        );
        assert_eq!(escape("a\"b\n", LogEscape::Json), "a\\\"b\\n");
        assert_eq!(escape("a\"", LogEscape::None), "a\"");
    }

    #[test]
    fn writes_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Arc::new(dir.path().join("access.log"));
        let w = AccessLogWriter::get();
        w.log(&path, "one".into());
        w.flush();
        std::fs::rename(&*path, dir.path().join("access.log.1")).expect("rotate");
        w.reopen();
        w.log(&path, "two".into());
        w.flush();
        assert_eq!(std::fs::read_to_string(&*path).expect("log"), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("access.log.1")).expect("old"),
            "one\n"
        );
    }
}
