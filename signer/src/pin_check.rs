//! Checking a PIN that `C_Login` cannot check: the application is already logged in.
//!
//! PKCS#11 logs in the *application*, not a session. A module with one state per process
//! (SoftHSM loaded directly, most vendors' client libraries) answers a second `C_Login`
//! with `CKR_USER_ALREADY_LOGGED_IN` whatever PIN it is given. hsmgate logs in again
//! whenever a pool starts on a token this process already uses: a second key on the
//! same token, and every reload that changes the PIN (the old pool still serves until
//! the new configuration replaces it). Taking that answer as success would accept a
//! wrong PIN on reload and report it as good; the next restart would then fail.
//!
//! So each successful login is remembered here by a digest of its PIN (in memory only).
//! An "already logged in" answer for the same PIN is success; for another PIN, the PIN
//! is checked where it can be: by the checker the program installs
//! ([`set_pin_checker`]; hsmgate's runs `hsmgate token check-pin` in a child process,
//! whose own `C_Login` answers for the PIN). Without a checker the answer is taken as
//! success, as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::error::RvError;
use hsmgate_config::{Pkcs11Uri, Secret};
use sha2::Digest;

use crate::error::SignerError;

/// What a checker is asked: log in to this token with this PIN, elsewhere than here.
#[derive(Debug)]
pub struct PinCheck<'a> {
    /// The module's path.
    pub module: &'a Path,
    /// The environment the module is loaded with (e.g. `SOFTHSM2_CONF`).
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// The token's attributes (no PIN, no object, no module attributes).
    pub token: &'a Pkcs11Uri,
    /// The token's label, for errors.
    pub label: &'a str,
    /// The PIN to check.
    pub pin: &'a Secret,
}

/// A checker: `Ok` when the token accepts the PIN; the token's answer otherwise.
pub type PinChecker = fn(&PinCheck<'_>) -> Result<(), SignerError>;

static CHECKER: OnceLock<PinChecker> = OnceLock::new();

/// Install the process's PIN checker (once; later calls are ignored).
pub fn set_pin_checker(checker: PinChecker) {
    let _ = CHECKER.set(checker);
}

/// Which login: module path, slot id, token label.
type LoginKey = (PathBuf, u64, String);

/// The PIN digest of each login this process made.
static LOGINS: Mutex<Option<HashMap<LoginKey, [u8; 32]>>> = Mutex::new(None);

/// The PIN's SHA-256 (for comparing PINs; kept in memory only).
pub(crate) fn digest(pin: &Secret) -> [u8; 32] {
    sha2::Sha256::digest(pin.expose().as_bytes()).into()
}

/// A login succeeded with `pin`.
pub(crate) fn logged_in(module: &Path, slot: u64, label: &str, pin: &Secret) {
    let mut logins = LOGINS.lock().unwrap_or_else(|e| e.into_inner());
    logins
        .get_or_insert_with(HashMap::new)
        .insert((module.to_path_buf(), slot, label.to_owned()), digest(pin));
}

/// The module said the application is already logged in: `Ok` if `pin` is the one it
/// logged in with, or the checker accepts it.
pub(crate) fn already_logged_in(check: &PinCheck<'_>, slot: u64) -> Result<(), SignerError> {
    let key = (check.module.to_path_buf(), slot, check.label.to_owned());
    let known = LOGINS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|l| l.get(&key).copied());
    if known == Some(digest(check.pin)) {
        return Ok(());
    }
    let Some(checker) = CHECKER.get() else {
        return Ok(());
    };
    checker(check)?;
    logged_in(check.module, slot, check.label, check.pin);
    Ok(())
}

/// What `C_Login` answers besides success (PKCS#11 3.0 §5.6), as a check reports them.
const LOGIN_ANSWERS: [RvError; 17] = [
    RvError::PinIncorrect,
    RvError::PinInvalid,
    RvError::PinLenRange,
    RvError::PinLocked,
    RvError::PinExpired,
    RvError::UserPinNotInitialized,
    RvError::UserTypeInvalid,
    RvError::UserAnotherAlreadyLoggedIn,
    RvError::UserTooManyTypes,
    RvError::TokenNotPresent,
    RvError::TokenNotRecognized,
    RvError::DeviceError,
    RvError::DeviceMemory,
    RvError::DeviceRemoved,
    RvError::GeneralError,
    RvError::FunctionFailed,
    RvError::OperationNotInitialized,
];

impl PinCheck<'_> {
    /// The token's refusal, from the CKR code's name a check elsewhere reported (e.g.
    /// `CKR_PIN_INCORRECT`): `C_Login` failed with it. An unknown name (or none) is a
    /// check that did not answer, with `detail` as its reason.
    pub fn refused(&self, ckr: Option<&str>, detail: &str) -> SignerError {
        let rv = ckr.and_then(|name| {
            LOGIN_ANSWERS
                .into_iter()
                .find(|rv| crate::error::ckr_name(*rv) == name)
        });
        match rv {
            Some(rv) => SignerError::Pkcs11 {
                member: None,
                token: self.label.to_owned(),
                function: crate::error::Function::Login,
                rv,
            },
            None => SignerError::PinNotChecked {
                token: self.label.to_owned(),
                reason: detail.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_pin_needs_no_check_and_another_is_checked() {
        fn refuse(c: &PinCheck<'_>) -> Result<(), SignerError> {
            Err(SignerError::Pkcs11 {
                member: None,
                token: c.label.to_owned(),
                function: crate::error::Function::Login,
                rv: RvError::PinIncorrect,
            })
        }
        set_pin_checker(refuse);
        let module = Path::new("/test/pin_check/module.so");
        let env = Default::default();
        let token = Pkcs11Uri::default();
        let good = Secret::new("1234");
        let bad = Secret::new("4321");
        logged_in(module, 7, "web", &good);
        let check = |pin| PinCheck {
            module,
            env: &env,
            token: &token,
            label: "web",
            pin,
        };
        assert!(already_logged_in(&check(&good), 7).is_ok());
        let err = already_logged_in(&check(&bad), 7).unwrap_err();
        assert_eq!(err.rv(), Some(RvError::PinIncorrect));
        // Another slot's login is another login.
        assert!(already_logged_in(&check(&good), 8).is_err());
    }

    #[test]
    fn a_reported_ckr_name_becomes_the_login_error() {
        let env = Default::default();
        let token = Pkcs11Uri::default();
        let pin = Secret::new("1234");
        let check = PinCheck {
            module: Path::new("/m.so"),
            env: &env,
            token: &token,
            label: "web",
            pin: &pin,
        };
        let err = check.refused(Some("CKR_PIN_LOCKED"), "exit status 1");
        assert_eq!(err.rv(), Some(RvError::PinLocked));
        assert_eq!(err.to_string(), "token web: C_Login failed: CKR_PIN_LOCKED");
        let err = check.refused(None, "timed out after 15s");
        assert!(matches!(err, SignerError::PinNotChecked { .. }), "{err}");
        assert!(err.to_string().contains("timed out after 15s"), "{err}");
    }
}
