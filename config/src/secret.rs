//! [`Secret`]: a string (a PIN) that never prints its value.

use std::fmt;

/// A secret string (a PIN) whose `Debug` and `Display` both print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use it only where it is handed to the token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Whether `name`, given as the name of a PIN's file or environment variable, could be
/// the PIN itself typed in its place, and so must not be printed: a name with none of
/// `.`, `-`, `_` (`pin.txt`, `hsm-pin`, `HSMGATE_PIN` are shown; `1234`, `s3cret` and
/// `pin` are not). Used where the name is printed and nothing proves it a name (the
/// file does not exist, the variable is not set).
pub fn may_be_a_pin(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', '-', '_'])
}

/// `place` (where a PIN is read from: a `pin-source`, a `pin_file`, a `pin_env`, as
/// written, blanks or a quote before it kept) with its last name printed as `***` when
/// that [`may_be_a_pin`].
pub(crate) fn hide_pin_name(place: &str) -> String {
    let lead = place.len() - place.trim_start_matches([' ', '\t', '"', '\'']).len();
    let last = place.rfind(['/', ':']).map_or(lead, |i| (i + 1).max(lead));
    match may_be_a_pin(place[last..].trim()) {
        true => format!("{}***", &place[..last]),
        false => place.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_may_be_pins() {
        for pin in ["1234", "s3cret", "pin", "My!P@ss"] {
            assert!(may_be_a_pin(pin), "{pin}");
        }
        for name in ["pin.txt", "hsm-pin", "HSMGATE_PIN", ""] {
            assert!(!may_be_a_pin(name), "{name}");
        }
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("1234");
        assert_eq!(
            (format!("{s:?}"), s.to_string(), s.expose()),
            ("***".into(), "***".into(), "1234")
        );
    }
}
