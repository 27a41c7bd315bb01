//! [`UriError`]: why a PKCS#11 URI was rejected, naming the attribute.

use std::fmt;

/// Why a PKCS#11 URI was rejected; see [`UriErrorReason`] for the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError {
    /// The attribute at fault, if the error concerns one.
    pub attribute: Option<String>,
    /// Byte offset in the parsed string where the problem starts.
    pub offset: usize,
    /// What is wrong.
    pub reason: UriErrorReason,
}

/// The message, with any PIN in what it quotes masked (a value that swallowed a
/// `pin-value=…` typed after `&` instead of `?`).
impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match &self.attribute {
            Some(name) => format!("attribute \"{name}\": {}", self.reason),
            None => format!("at byte {}: {}", self.offset, self.reason),
        };
        f.write_str(&crate::env::mask_pin_value(&text))
    }
}

impl std::error::Error for UriError {}

/// The cause of a [`UriError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriErrorReason {
    /// The string is neither `pkcs11:...` nor `engine:pkcs11:pkcs11:...`.
    #[error("expected a \"pkcs11:\" URI or \"engine:pkcs11:pkcs11:...\"")]
    NotPkcs11,
    /// An `engine:NAME:` prefix names an engine other than `pkcs11`.
    #[error("engine \"{0}\" is not supported (only engine:pkcs11:)")]
    UnsupportedEngine(String),
    /// Empty attribute, e.g. a stray `;` or `&`, or a missing name before `=`.
    #[error("empty attribute (stray separator?)")]
    EmptyAttribute,
    /// An attribute without `=`.
    #[error("expected name=value")]
    MissingEquals,
    /// An attribute RFC 7512 does not define and that does not start with `x-`.
    #[error("unknown attribute (vendor attributes must start with \"x-\")")]
    UnknownAttribute,
    /// A path attribute written in the query, or the reverse.
    #[error("belongs in the {0}")]
    WrongPart(&'static str),
    /// The attribute is given twice.
    #[error("given more than once")]
    Duplicate,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape \"{0}\" (expected %XX with two hex digits)")]
    BadEscape(String),
    /// A textual attribute that is not UTF-8 after percent-decoding.
    #[error("value is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// A value outside the allowed set.
    #[error("unknown value \"{value}\" (expected {expected})")]
    UnknownValue {
        /// The value found.
        value: String,
        /// The allowed values, comma-separated.
        expected: &'static str,
    },
    /// A `slot-id` that is not an unsigned integer.
    #[error("\"{0}\" is not an unsigned integer")]
    NotANumber(String),
    /// A `library-version` that is not `MAJOR[.MINOR]`.
    #[error("\"{0}\" is not a version (expected MAJOR or MAJOR.MINOR)")]
    BadVersion(String),
}
