//! `hsmgate top`: a terminal view of `/status` that redraws like `top`.
//!
//! It polls `GET /status?format=json` on the admin address (plain HTTP over std's
//! `TcpStream`, no async runtime) and redraws the screen with plain ANSI escapes (an
//! alternate screen, cursor home, clear to end of line), so it works in any terminal
//! and over SSH. Keys are read unbuffered by putting the terminal in
//! `stty -icanon -echo -isig` mode (restored on exit): `q` or Ctrl-C quits. With
//! `--once` (or when stdout is not a terminal) it prints one frame and exits.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::status::{KeyStatus, MemberView, Status};

/// What `hsmgate top` is asked to do.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The admin listener, `host:port`.
    pub admin: String,
    /// How often to poll.
    pub interval: Duration,
    /// Print one frame (no escapes) and exit.
    pub once: bool,
}

/// Why `hsmgate top` could not show the status.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The admin address could not be reached or read.
    #[error("cannot read http://{admin}/status: {source}")]
    Fetch {
        /// The admin address.
        admin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It answered something other than a 200 with JSON.
    #[error("http://{admin}/status answered {detail}")]
    Answer {
        /// The admin address.
        admin: String,
        /// The status line, or the JSON error.
        detail: String,
    },
    /// The terminal could not be written.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
}

/// Run until `q`/Ctrl-C (or after one frame with `--once`).
pub fn run(opts: &TopOptions) -> Result<(), TopError> {
    let interactive = !opts.once && std::io::stdout().is_terminal();
    if !interactive {
        let status = fetch(&opts.admin)?;
        let mut frame = render(&opts.admin, Ok(&status), 200, false);
        // One frame, nothing to quit.
        if frame.last().is_some_and(|l| l.trim() == "q: quit") {
            frame.pop();
            frame.pop();
        }
        let mut out = std::io::stdout().lock();
        for line in frame {
            writeln!(out, "{line}").map_err(TopError::Terminal)?;
        }
        return Ok(());
    }
    let _screen = Screen::enter().map_err(TopError::Terminal)?;
    // None once stdin has ended: then only a signal stops `top`.
    let mut keys = Some(read_keys());
    loop {
        let status = fetch(&opts.admin);
        let (rows, cols) = terminal_size();
        let mut frame = render(&opts.admin, status.as_ref(), cols, true);
        frame.truncate(rows.saturating_sub(1).max(1));
        draw(&frame).map_err(TopError::Terminal)?;
        match keys.as_ref().map(|k| k.recv_timeout(opts.interval)) {
            Some(Ok(())) => return Ok(()),
            Some(Err(mpsc::RecvTimeoutError::Timeout)) => {}
            Some(Err(mpsc::RecvTimeoutError::Disconnected)) => keys = None,
            None => std::thread::sleep(opts.interval),
        }
    }
}

/// A thread reading single bytes from stdin; sends once on `q`, `Q`, Ctrl-C or Ctrl-D,
/// and hangs up when stdin ends.
fn read_keys() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if matches!(byte[0], b'q' | b'Q' | 0x03 | 0x04) {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx
}

/// `GET /status?format=json` on `admin`.
pub fn fetch(admin: &str) -> Result<Status, TopError> {
    let fetch_err = |source| TopError::Fetch {
        admin: admin.to_owned(),
        source,
    };
    let addr = admin
        .to_socket_addrs()
        .map_err(fetch_err)?
        .next()
        .ok_or_else(|| {
            fetch_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fetch_err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(fetch_err)?;
    write!(
        stream,
        "GET /status?format=json HTTP/1.1\r\nHost: {admin}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(fetch_err)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| match e.kind() {
        // The read timeout (a hung or stopped server), as it is.
        std::io::ErrorKind::WouldBlock => fetch_err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within 2 s",
        )),
        _ => fetch_err(e),
    })?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("").to_owned();
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(TopError::Answer {
            admin: admin.to_owned(),
            detail: format!("{status_line:?}"),
        });
    }
    serde_json::from_str(body).map_err(|e| TopError::Answer {
        admin: admin.to_owned(),
        detail: format!("JSON that does not parse: {e}"),
    })
}

/// The frame's lines, each at most `width` characters of text (colour escapes added
/// when `color`).
pub fn render(
    admin: &str,
    status: Result<&Status, &TopError>,
    width: usize,
    color: bool,
) -> Vec<String> {
    let clock = clock();
    let mut lines = Vec::new();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            lines.push(fit(&format!("hsmgate top · {admin} · {clock}"), width));
            lines.push(String::new());
            lines.push(fit(&format!("{e}"), width));
            lines.push(fit("retrying; q quits", width));
            return lines;
        }
    };
    let readiness = if status.draining {
        "DRAINING"
    } else if status.ready {
        "READY"
    } else {
        "NOT READY"
    };
    lines.push(fit(
        &format!(
            "hsmgate top · {admin} · v{} · up {} · {readiness} · {clock}",
            status.version,
            uptime(status.uptime_seconds)
        ),
        width,
    ));
    if status.keys.is_empty() {
        lines.push(String::new());
        lines.push(fit("no token keys (file keys only)", width));
    }
    for key in &status.keys {
        lines.push(String::new());
        key_lines(key, width, color, &mut lines);
    }
    lines.push(String::new());
    lines.push(fit("q: quit", width));
    lines
}

const HEADER: &str = "  MEMBER       REGION      STATE       SESS   CAP/s  RATE/s  UTIL  LAT ms  CPU us  INFL        OPS    ERR  LAST ERROR";
/// Where the state column starts in a member line, and its width.
const STATE_AT: usize = 27;
const STATE_WIDTH: usize = 10;

fn key_lines(key: &KeyStatus, width: usize, color: bool, lines: &mut Vec<String>) {
    let a = &key.admission;
    lines.push(fit(
        &format!(
            "key {} ({}) · group {} · {} · capacity {:.0} sig/s",
            key.key,
            key.kind,
            key.group,
            if key.ready { "can sign" } else { "CANNOT SIGN" },
            key.capacity_ops_per_second
        ),
        width,
    ));
    lines.push(fit(
        &format!(
            "  admission {}: limit {:.1}, in flight {}, waiting {} · admitted {}, resumed {}, shed {}",
            if a.enabled { "on" } else { "off" },
            a.limit,
            a.in_flight,
            a.waiting,
            a.admitted,
            a.resumed,
            a.shed
        ),
        width,
    ));
    lines.push(fit(HEADER, width));
    for m in &key.members {
        let line = fit(&member_line(m), width);
        lines.push(if color {
            paint_state(&line, &m.state)
        } else {
            line
        });
    }
}

fn member_line(m: &MemberView) -> String {
    let region = if m.primary {
        m.region.clone()
    } else {
        format!("{}*", m.region)
    };
    format!(
        "  {:<12} {:<11} {:<width$}  {:>4} {:>7.0} {:>7.1} {:>4.0}% {:>7.2} {:>7.0} {:>5} {:>10} {:>6}  {}",
        cut(&m.name, 12),
        cut(&region, 11),
        cut(&m.state, STATE_WIDTH),
        m.sessions,
        m.capacity_ops_per_second,
        m.rate_ops_per_second,
        m.utilisation * 100.0,
        m.latency_ms,
        m.cpu_us_per_signature,
        m.in_flight,
        m.operations,
        m.errors,
        m.last_error.replace('\n', " "),
        width = STATE_WIDTH,
    )
}

/// Colour the state column (green up, yellow fenced/recovering, red otherwise).
fn paint_state(line: &str, state: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= STATE_AT {
        return line.to_owned();
    }
    let end = (STATE_AT + STATE_WIDTH).min(chars.len());
    let code = match state {
        "up" => "32",
        "fenced" | "recovering" => "33",
        _ => "31;1",
    };
    let before: String = chars[..STATE_AT].iter().collect();
    let word: String = chars[STATE_AT..end].iter().collect();
    let after: String = chars[end..].iter().collect();
    format!("{before}\x1b[{code}m{word}\x1b[0m{after}")
}

/// The first `n` characters of `s`, control characters written out (`\u{1b}`): a key
/// label, a token label in an error, a CKR text come from the HSM or another tenant, and
/// written raw they could drive the terminal (set its title, colours, or worse).
fn cut(s: &str, n: usize) -> String {
    s.chars()
        .flat_map(|c| {
            let control = c.is_control();
            let escaped = control.then(|| c.escape_default()).into_iter().flatten();
            (!control).then_some(c).into_iter().chain(escaped)
        })
        .take(n)
        .collect()
}

fn fit(s: &str, width: usize) -> String {
    cut(s, width.max(20))
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Write a frame over the previous one.
fn draw(frame: &[String]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "\x1b[H")?;
    for line in frame {
        write!(out, "{line}\x1b[K\r\n")?;
    }
    write!(out, "\x1b[J")?;
    out.flush()
}

/// Rows and columns of the terminal (24×80 when `stty` cannot tell).
fn terminal_size() -> (usize, usize) {
    let out = Command::new("stty")
        .arg("size")
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output();
    let text = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|n| n.parse().ok());
    match (it.next(), it.next()) {
        (Some(r), Some(c)) if r > 0 && c > 0 => (r, c),
        _ => (24, 80),
    }
}

/// The terminal in top's mode: alternate screen, hidden cursor, keys unbuffered and
/// unechoed (Ctrl-C arrives as a byte). Restored on drop.
struct Screen {
    saved: Option<String>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let saved = if std::io::stdin().is_terminal() {
            let out = Command::new("stty")
                .arg("-g")
                .stdin(Stdio::inherit())
                .output()?;
            let saved = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Command::new("stty")
                .args(["-icanon", "-echo", "-isig", "min", "1", "time", "0"])
                .stdin(Stdio::inherit())
                .status()?;
            Some(saved).filter(|s| !s.is_empty())
        } else {
            None
        };
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")?;
        out.flush()?;
        Ok(Screen { saved })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        if let Some(saved) = &self.saved {
            let _ = Command::new("stty")
                .arg(saved)
                .stdin(Stdio::inherit())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AdmissionView, KeyStatus, MemberView};

    fn member(name: &str, state: &str) -> MemberView {
        MemberView {
            name: name.into(),
            region: "east".into(),
            primary: true,
            state: state.into(),
            serving: state == "up",
            sessions: 2,
            in_flight: 0,
            capacity_ops_per_second: 1500.0,
            capacity_source: "measured".into(),
            rate_ops_per_second: 12.5,
            utilisation: 0.25,
            signs_inline: false,
            handshake_jobs: false,
            latency_ms: 1.5,
            cpu_us_per_signature: 120.0,
            operations: 42,
            errors: 1,
            last_error: if state == "up" {
                String::new()
            } else {
                "C_Sign: CKR_DEVICE_ERROR".into()
            },
            abandoned_threads: 0,
        }
    }

    #[test]
    fn a_frame_shows_every_member_and_its_state() {
        let status = Status {
            version: "0.1.0".into(),
            uptime_seconds: 75,
            ready: true,
            draining: false,
            config: String::new(),
            keys: vec![KeyStatus {
                key: "tls".into(),
                kind: "RSA-2048".into(),
                group: "lab".into(),
                ready: true,
                capacity_ops_per_second: 1500.0,
                admission: AdmissionView {
                    enabled: true,
                    limit: 2.0,
                    in_flight: 0,
                    waiting: 0,
                    admitted: 5,
                    resumed: 1,
                    shed: 0,
                },
                members: vec![member("hsm-a", "up"), member("hsm-b", "down")],
            }],
        };
        let frame = render("127.0.0.1:9901", Ok(&status), 200, false).join("\n");
        assert!(frame.contains("READY · "), "{frame}");
        assert!(frame.contains("up 1m15s"), "{frame}");
        let a = frame.lines().find(|l| l.contains("hsm-a")).expect("hsm-a");
        let b = frame.lines().find(|l| l.contains("hsm-b")).expect("hsm-b");
        assert_eq!(&a[STATE_AT..STATE_AT + 2], "up", "{a}");
        assert_eq!(&b[STATE_AT..STATE_AT + 4], "down", "{b}");
        assert!(b.ends_with("CKR_DEVICE_ERROR"), "{b}");
        assert!(frame.contains("admitted 5, resumed 1, shed 0"), "{frame}");
        let painted = paint_state(b, "down");
        assert!(painted.contains("\x1b[31;1mdown"), "{painted:?}");
        // Narrow terminals cut lines instead of wrapping them.
        let narrow = render("x", Ok(&status), 40, false);
        assert!(narrow.iter().all(|l| l.chars().count() <= 40));
    }

    /// A key or error text holding terminal controls (an HSM's label, another tenant's)
    /// is shown with them written out, never sent to the terminal.
    #[test]
    fn control_characters_from_the_server_are_written_out() {
        let mut m = member("esc\x1b[31mRED\x1b]0;PWN\x07x", "down");
        m.last_error = "tokens present: \x1b]0;TITLE\x07".into();
        let line = member_line(&m);
        let shown = cut(&line, 500);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("esc\\u{1b}[31"), "{shown:?}");
        assert!(shown.contains("\\u{7}"), "{shown:?}");
    }

    #[test]
    fn an_unreachable_admin_address_is_an_error_frame() {
        let err = fetch("127.0.0.1:1").expect_err("nothing listens on port 1");
        let frame = render("127.0.0.1:1", Err(&err), 120, false).join("\n");
        assert!(
            frame.contains("cannot read http://127.0.0.1:1/status"),
            "{frame}"
        );
    }
}
