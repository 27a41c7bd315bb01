//! `SignerError`: what went wrong in the signer, naming the token, the PKCS#11 function
//! and its CKR code. A PIN never appears in any variant.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use cryptoki::context::Function;
use cryptoki::error::Error as CkError;
pub(crate) use cryptoki::error::RvError;
use rustls::SignatureScheme;

/// An error from the signer: loading a module, finding a token or key, or signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The PKCS#11 module could not be loaded (dlopen / C_GetFunctionList).
    #[error("cannot load PKCS#11 module {path}: {source}")]
    Load {
        /// The module's path.
        path: PathBuf,
        /// What cryptoki reported.
        #[source]
        source: CkError,
    },
    /// A PKCS#11 function returned an error code.
    #[error("{}{}: C_{function:?} failed: {}{}", in_member(member, token), what(token), ckr_name(*rv), softhsm_hint(token, *function))]
    Pkcs11 {
        /// The group member whose call it was, once known (named by the group when it hands the error on).
        member: Option<String>,
        /// Which token (label, or the module path before a token is chosen).
        token: String,
        /// The PKCS#11 function, e.g. `Login` (shown as `C_Login`).
        function: Function,
        /// The CKR code, e.g. `PinIncorrect` (shown as `CKR_PIN_INCORRECT`).
        rv: RvError,
    },
    /// cryptoki refused a call before or after the module answered (a missing function,
    /// a value it cannot convert).
    #[error(
        "{}token {token}: C_{function:?} failed: {source}",
        in_member(member, token)
    )]
    Cryptoki {
        /// The group member whose call it was, once known.
        member: Option<String>,
        /// Which token (label, or the module path before a token is chosen).
        token: String,
        /// The PKCS#11 function called.
        function: Function,
        /// What cryptoki reported.
        #[source]
        source: CkError,
    },
    /// No slot holds a token matching the URI.
    #[error(
        "no token matching {wanted} in module {module} (tokens present: {present}){}",
        softhsm_tokens_hint(module)
    )]
    TokenNotFound {
        /// The token attributes asked for.
        wanted: String,
        /// The module searched.
        module: PathBuf,
        /// The labels of the tokens that are there.
        present: String,
    },
    /// Every slot's token is initialised already: none to make a new token in.
    #[error("no uninitialised token in module {module}: every slot's token is initialised")]
    NoFreeSlot {
        /// The module searched.
        module: PathBuf,
    },
    /// No private key object matches the URI on the token.
    #[error("token {token}: no private key object matching {wanted}")]
    KeyNotFound {
        /// The token searched.
        token: String,
        /// The object attributes asked for.
        wanted: String,
    },
    /// Several private keys match and the URI does not say which.
    #[error(
        "token {token}: {count} private key objects match {wanted}; add id= or object= to the URI"
    )]
    KeyAmbiguous {
        /// The token searched.
        token: String,
        /// The object attributes asked for.
        wanted: String,
        /// How many matched.
        count: usize,
    },
    /// The key's type or size is one we do not sign with.
    #[error("token {token}: key {key}: {reason}")]
    UnsupportedKey {
        /// The token.
        token: String,
        /// The key (object label).
        key: String,
        /// Why it is not supported.
        reason: KeyProblem,
    },
    /// The PIN could not be read from its source.
    #[error("cannot read the PIN from {source_name}: {reason}")]
    Pin {
        /// Where the PIN was to come from (file path or variable name; never the PIN).
        source_name: String,
        /// Why it could not be read.
        #[source]
        reason: PinProblem,
    },
    /// A PIN could not be checked: this process is already logged in to the token (so
    /// its `C_Login` answers for no PIN), and the check elsewhere did not answer.
    #[error(
        "token {token}: cannot check the PIN (this process is already logged in to the token): {reason}"
    )]
    PinNotChecked {
        /// The token.
        token: String,
        /// Why the check did not answer.
        reason: String,
    },
    /// The signer's queue is full: the request was refused at once.
    #[error("signer queue for token {token} is full ({capacity} waiting)")]
    Overloaded {
        /// The token.
        token: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// Admission control refused the signature (the handshake was not admitted).
    #[error("HSM group {group}: handshake shed: {reason}")]
    Shed {
        /// The group.
        group: String,
        /// Why.
        reason: crate::admission::ShedReason,
    },
    /// The signer did not answer within the deadline (a hung or slow HSM).
    #[error("token {token} did not answer within {after:?} (hung or overloaded HSM?)")]
    Timeout {
        /// The token.
        token: String,
        /// How long we waited.
        after: Duration,
    },
    /// The key cannot make the signature scheme asked for.
    #[error("token {token}: key cannot sign with {scheme:?}")]
    UnsupportedScheme {
        /// The token.
        token: String,
        /// The scheme asked for.
        scheme: SignatureScheme,
    },
    /// The start-up test signature did not verify with the key's public key.
    #[error(
        "token {token}: key {key}: test signature ({scheme:?}) does not verify with its public key"
    )]
    SelfTest {
        /// The token.
        token: String,
        /// The key.
        key: String,
        /// The scheme tried.
        scheme: SignatureScheme,
    },
    /// A signer thread could not be started.
    #[error("cannot start a signer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// No member of the group is healthy (or every one refused the request).
    #[error("HSM group {group}: no healthy member can sign ({detail})")]
    NoHealthyMember {
        /// The group.
        group: String,
        /// Each member's state and last error, e.g. `hsm-a up; hsm-b down (…)`.
        detail: String,
    },
    /// A member's start-up did not finish within the recovery timeout (a hung module).
    #[error("HSM member {member}: did not come up within {after:?}")]
    StartTimeout {
        /// The member.
        member: String,
        /// How long start-up waited.
        after: Duration,
    },
    /// Several members failed to start: each one's error.
    #[error("HSM group {group}: no healthy member can sign ({})", join(.members))]
    NoMemberStarted {
        /// The group.
        group: String,
        /// Each member's start-up error.
        members: Vec<SignerError>,
    },
    /// The configuration has no `[pkcs11]` token (and no HSM group).
    #[error("the configuration has no [pkcs11] section")]
    NoToken,
    /// A member was fenced (hung) or taken down while the request waited in its queue.
    #[error("HSM member {member} was taken out of rotation while the request waited")]
    MemberLost {
        /// The member.
        member: String,
    },
    /// A member's key is not the key of the certificate (or of the other members).
    #[error(transparent)]
    KeyDiffers(Box<KeyDiffers>),
    /// The token returned a signature we cannot use.
    #[error(
        "token {token}: malformed signature from C_{function:?}: ECDSA signature of odd length {length}"
    )]
    BadSignature {
        /// The token.
        token: String,
        /// The function that produced it.
        function: Function,
        /// Its length in bytes (an `r || s` pair has an even length).
        length: usize,
    },
}

impl SignerError {
    /// Wrap a cryptoki error from `function` on `token`: a CKR code keeps the function
    /// the module answered for.
    pub(crate) fn pkcs11(token: &str, function: Function, err: CkError) -> Self {
        match err {
            CkError::Pkcs11(rv, function) => SignerError::Pkcs11 {
                member: None,
                token: token.to_string(),
                function,
                rv,
            },
            source => SignerError::Cryptoki {
                member: None,
                token: token.to_string(),
                function,
                source,
            },
        }
    }

    /// Name the group member a PKCS#11 error came from (its message then starts with
    /// `HSM member <name>: `, unless the member is named after its token).
    pub(crate) fn in_member(mut self, name: &str) -> Self {
        if let SignerError::Pkcs11 { member, .. } | SignerError::Cryptoki { member, .. } = &mut self
        {
            member.get_or_insert_with(|| name.to_string());
        }
        self
    }

    /// Whether the error says the device (or our connection to it) failed, so that
    /// the same request may succeed on another member; errors about the request itself
    /// (mechanism, data, key) are not.
    pub fn is_device_error(&self) -> bool {
        match self {
            SignerError::Pkcs11 { rv, .. } => matches!(
                rv,
                RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::DeviceMemory
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::SlotIdInvalid
                    | RvError::GeneralError
                    | RvError::FunctionFailed
                    | RvError::CryptokiNotInitialized
                    | RvError::UserNotLoggedIn
                    | RvError::HostMemory
                    // The handle was this member's own, found at bring-up: if the HSM
                    // no longer knows it, the member lost its state (key re-created,
                    // partition restored, a new connection behind the same module), and
                    // a recovery that finds the key again is what fixes it.
                    | RvError::ObjectHandleInvalid
                    | RvError::KeyHandleInvalid
            ),
            SignerError::Timeout { .. } | SignerError::MemberLost { .. } => true,
            _ => false,
        }
    }

    /// Whether retrying can never help (a wrong or locked PIN: retries would lock the token).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::PinIncorrect
                    | RvError::PinLocked
                    | RvError::PinExpired
                    | RvError::PinInvalid
                    | RvError::PinLenRange
            )
        ) || matches!(self, SignerError::KeyDiffers(_) | SignerError::Pin { .. })
    }

    /// The CKR code if this is a PKCS#11 error.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            SignerError::Pkcs11 { rv, .. } => Some(*rv),
            _ => None,
        }
    }

    /// The PKCS#11 function that failed, if one did.
    pub fn function(&self) -> Option<Function> {
        match self {
            SignerError::Pkcs11 { function, .. }
            | SignerError::Cryptoki { function, .. }
            | SignerError::BadSignature { function, .. } => Some(*function),
            _ => None,
        }
    }
}

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Neither RSA nor EC (`None`: the token did not say).
    #[error("key type {0:?} is not RSA or EC")]
    KeyType(Option<cryptoki::object::KeyType>),
    /// An RSA key whose public half cannot be read.
    #[error("cannot read the RSA public key (CKA_MODULUS, CKA_PUBLIC_EXPONENT)")]
    NoRsaPublicKey,
    /// An RSA modulus of this many bits.
    #[error("RSA-{0} is outside 2048..8192 bits")]
    RsaSize(usize),
    /// An EC key without its curve.
    #[error("no CKA_EC_PARAMS")]
    NoEcParams,
    /// An EC key on another curve.
    #[error("EC curve is not P-256 or P-384")]
    Curve,
    /// An EC key whose public point cannot be found.
    #[error(
        "no public key object with the same CKA_ID to read CKA_EC_POINT from (needed to check the certificate)"
    )]
    NoEcPoint,
    /// The token offers none of the mechanisms that sign with it.
    #[error("the token offers no signing mechanism for it")]
    NoMechanism,
}

/// Why a PIN could not be read from its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinProblem {
    /// The file could not be read.
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    /// The file holds nothing but a line end.
    #[error("the file is empty")]
    EmptyFile,
    /// The variable is not set, or not Unicode.
    #[error("{0}")]
    Unset(#[source] std::env::VarError),
    /// The variable is set to the empty string.
    #[error("it is empty")]
    EmptyVariable,
}

/// What a PKCS#11 error is about: a token by its label, or the module by its path
/// before a token is chosen.
fn what(token: &str) -> String {
    match token.contains('/') {
        true => format!("module {token}"),
        false => format!("token {token}"),
    }
}

/// SoftHSM fails `C_Initialize` (CKR_GENERAL_ERROR) when its configuration file cannot
/// be read: say where it looks.
fn softhsm_hint(token: &str, function: Function) -> &'static str {
    match token.contains("softhsm") && matches!(function, Function::Initialize) {
        true => " (SoftHSM: is SOFTHSM2_CONF, or /etc/softhsm/softhsm2.conf, a readable file?)",
        false => "",
    }
}

/// SoftHSM finds its tokens in the `directories.tokendir` of `SOFTHSM2_CONF`.
fn softhsm_tokens_hint(module: &std::path::Path) -> &'static str {
    match module.to_string_lossy().contains("softhsm") {
        true => {
            "; SoftHSM reads its tokens from the directories.tokendir of SOFTHSM2_CONF: is it set for this process, and the directory readable by its user?"
        }
        false => "",
    }
}

/// "HSM member hsm-a: " before a token's error, when it names another member than the token.
fn in_member(member: &Option<String>, token: &str) -> String {
    match member {
        Some(m) if m != token => format!("HSM member {m}: "),
        _ => String::new(),
    }
}

fn join(errors: &[SignerError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A member whose key is not the expected one.
#[derive(Debug, thiserror::Error)]
#[error(
    "HSM member {member}: key {key} on token {token} does not match {expected_from}: its public key is {found}, expected {expected}; member refused"
)]
pub struct KeyDiffers {
    /// The member.
    pub member: String,
    /// The token's label.
    pub token: String,
    /// The key's name.
    pub key: String,
    /// What the expected key comes from, e.g. "certificate /etc/x.pem (subject CN=a)".
    pub expected_from: String,
    /// Its public key (short form).
    pub found: String,
    /// The expected public key (short form).
    pub expected: String,
}

/// `CKR_PIN_INCORRECT` style name of a return value (cryptoki's Display gives prose).
pub(crate) fn ckr_name(rv: RvError) -> String {
    // cryptoki's Debug is the variant name in CamelCase, e.g. `PinIncorrect`.
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for ch in camel.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_match_the_spec() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
        assert_eq!(
            ckr_name(RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
    }

    #[test]
    fn a_module_error_names_the_module_and_softhsm_gets_a_hint() {
        let module = "/usr/lib/softhsm/libsofthsm2.so";
        let err = SignerError::pkcs11(
            module,
            Function::Initialize,
            CkError::Pkcs11(RvError::GeneralError, Function::Initialize),
        )
        .to_string();
        assert!(
            err.starts_with(&format!(
                "module {module}: C_Initialize failed: CKR_GENERAL_ERROR"
            )),
            "{err}"
        );
        assert!(err.contains("SOFTHSM2_CONF"), "{err}");
        let none = SignerError::TokenNotFound {
            wanted: "token=web".into(),
            module: module.into(),
            present: "none".into(),
        }
        .to_string();
        assert!(none.contains("directories.tokendir"), "{none}");
    }

    #[test]
    fn pkcs11_error_names_function_and_code() {
        let err = SignerError::pkcs11(
            "demo",
            Function::Login,
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        let text = err.to_string();
        assert!(text.contains("token demo"), "{text}");
        assert!(text.contains("C_Login"), "{text}");
        assert!(text.contains("CKR_PIN_INCORRECT"), "{text}");
        assert_eq!(err.rv(), Some(RvError::PinIncorrect));
        assert!(matches!(err.function(), Some(Function::Login)));
        // In a group, the member is named too (unless it is named after its token).
        let text = err.in_member("hsm-a").to_string();
        assert!(
            text.starts_with("HSM member hsm-a: token demo: C_Login failed: CKR_PIN_INCORRECT"),
            "{text}"
        );
        let same = SignerError::pkcs11(
            "demo",
            Function::Login,
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        )
        .in_member("demo");
        assert_eq!(
            same.to_string(),
            "token demo: C_Login failed: CKR_PIN_INCORRECT"
        );
    }

    #[test]
    fn cryptoki_errors_keep_their_source_and_function() {
        let err = SignerError::pkcs11("demo", Function::Sign, CkError::NullFunctionPointer);
        let text = err.to_string();
        assert!(text.contains("C_Sign"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.rv(), None);
        assert!(!err.is_device_error());
    }

    #[test]
    fn unsupported_keys_say_why_in_words() {
        let err = SignerError::UnsupportedKey {
            token: "t".into(),
            key: "k".into(),
            reason: KeyProblem::RsaSize(1024),
        };
        assert_eq!(
            err.to_string(),
            "token t: key k: RSA-1024 is outside 2048..8192 bits"
        );
    }

    #[test]
    fn several_start_errors_name_every_member() {
        let err = SignerError::NoMemberStarted {
            group: "g".into(),
            members: vec![
                SignerError::StartTimeout {
                    member: "hsm-a".into(),
                    after: Duration::from_secs(3),
                },
                SignerError::pkcs11(
                    "b",
                    Function::Login,
                    CkError::Pkcs11(RvError::DeviceError, Function::Login),
                ),
            ],
        };
        let text = err.to_string();
        assert!(text.contains("no healthy member can sign"), "{text}");
        assert!(text.contains("hsm-a: did not come up within 3s"), "{text}");
        assert!(text.contains("C_Login failed: CKR_DEVICE_ERROR"), "{text}");
    }

    #[test]
    fn device_and_lost_state_errors_move_to_another_member_request_errors_do_not() {
        let err =
            |rv| SignerError::pkcs11("t", Function::Sign, CkError::Pkcs11(rv, Function::Sign));
        for rv in [
            RvError::DeviceError,
            RvError::SessionHandleInvalid,
            RvError::TokenNotPresent,
            RvError::ObjectHandleInvalid,
            RvError::KeyHandleInvalid,
        ] {
            assert!(err(rv).is_device_error(), "{rv:?}");
        }
        for rv in [
            RvError::MechanismInvalid,
            RvError::DataLenRange,
            RvError::KeyFunctionNotPermitted,
        ] {
            assert!(!err(rv).is_device_error(), "{rv:?}");
        }
    }
}
