//! The PIN checker hsmgate installs in the signer ([`hsmgate_signer::set_pin_checker`]):
//! a PIN this process cannot check, because it is already logged in to the token (a
//! reload that changes the PIN, a second key on the same token), is checked by
//! `hsmgate token check-pin` in a child process, whose own `C_Login` answers for it.
//!
//! The child is this same executable (`/proc/self/exe`, so an upgrade in place does not
//! change it), with the module's environment; the PIN goes through its standard input,
//! never its arguments or environment. It has [`DEADLINE`] to answer.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsmgate_signer::{PinCheck, SignerError};

/// How long the child may take (loading the module, finding the token, `C_Login`).
const DEADLINE: Duration = Duration::from_secs(15);

/// Install the checker (once per process; serving processes only, never the child).
pub fn install() {
    hsmgate_signer::set_pin_checker(check_in_child);
}

fn check_in_child(check: &PinCheck<'_>) -> Result<(), SignerError> {
    let not_checked = |reason: String| check.refused(None, &reason);
    let mut child = Command::new("/proc/self/exe")
        .args(["token", "check-pin", "--pin-file", "-", "--module"])
        .arg(check.module)
        .arg("--token")
        .arg(check.token.to_string())
        .envs(check.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_checked(format!("cannot run `hsmgate token check-pin`: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that fails before reading closes the pipe: its status says why.
        let _ = writeln!(stdin, "{}", check.pin.expose());
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(not_checked(format!(
                    "`hsmgate token check-pin` did not answer within {DEADLINE:?}"
                )));
            }
            Err(e) => return Err(not_checked(format!("waiting for the check: {e}"))),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let message = stderr.lines().last().unwrap_or("").trim();
    let ckr = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("CKR_"));
    Err(check.refused(
        ckr,
        &format!("`hsmgate token check-pin` failed ({status}): {message}"),
    ))
}
