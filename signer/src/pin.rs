//! Reading the PIN from where the configuration says it is. The PIN itself is never
//! logged nor put in an error: errors name only its source.

use std::path::Path;

use hsmgate_config::{PinSource, Secret, may_be_a_pin};

use crate::error::{PinProblem, SignerError};

/// Resolve a PIN source to the PIN.
pub fn read_pin(source: &PinSource) -> Result<Secret, SignerError> {
    match source {
        PinSource::Value(secret) => Ok(secret.clone()),
        PinSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| SignerError::Pin {
                source_name: file_name(path, e.kind() == std::io::ErrorKind::NotFound),
                reason: PinProblem::Unreadable(e),
            })?;
            let pin = text.strip_suffix('\n').unwrap_or(&text);
            let pin = pin.strip_suffix('\r').unwrap_or(pin);
            if pin.is_empty() {
                return Err(SignerError::Pin {
                    source_name: format!("file {}", path.display()),
                    reason: PinProblem::EmptyFile,
                });
            }
            Ok(Secret::new(pin.to_string()))
        }
        PinSource::Env(name) => match std::env::var(name) {
            Ok(pin) if !pin.is_empty() => Ok(Secret::new(pin)),
            Ok(_) => Err(SignerError::Pin {
                source_name: format!("environment variable {name}"),
                reason: PinProblem::EmptyVariable,
            }),
            Err(e) => Err(SignerError::Pin {
                source_name: match may_be_a_pin(name) {
                    true => "an environment variable whose name is not shown (it has no \
                             `_`, `.` or `-`: it may be a PIN typed in place of a name)"
                        .into(),
                    false => format!("environment variable {name}"),
                },
                reason: PinProblem::Unset(e),
            }),
        },
    }
}

/// How an error names the PIN file at `path`; when nothing shows that it exists
/// (`missing`), a last name that may be a PIN typed in its place is not printed.
fn file_name(path: &Path, missing: bool) -> String {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if missing && may_be_a_pin(name) => {
            let dir = path.parent().map(Path::display);
            let dir = dir.map(|d| d.to_string()).filter(|d| !d.is_empty());
            format!(
                "a file in {} whose name is not shown (it has no `.`, `-` or `_`: it may be \
                 a PIN typed in place of a file name)",
                dir.as_deref().unwrap_or(".")
            )
        }
        _ => format!("file {}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_pin_strips_one_newline_and_errors_never_show_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret\n").expect("write");
        let pin = read_pin(&PinSource::File(path.clone())).expect("pin");
        assert_eq!(pin.expose(), "s3cret");
        std::fs::write(&path, "\n").expect("write");
        let err = read_pin(&PinSource::File(path))
            .expect_err("empty")
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let missing = read_pin(&PinSource::File(dir.path().join("no-pin"))).expect_err("missing");
        assert!(missing.to_string().contains("no-pin"));
        let missing = read_pin(&PinSource::File(dir.path().join("pin.txt"))).expect_err("missing");
        assert!(missing.to_string().contains("pin.txt"), "{missing}");
    }

    #[test]
    fn a_pin_typed_for_a_name_is_not_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_pin(&PinSource::File(dir.path().join("4711")))
            .expect_err("missing")
            .to_string();
        assert!(!err.contains("4711"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        let err = read_pin(&PinSource::Env("s3cret".into()))
            .expect_err("unset")
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn unset_env_names_the_variable() {
        let err = read_pin(&PinSource::Env("HSMGATE_TEST_SURELY_UNSET_PIN".into()))
            .expect_err("unset")
            .to_string();
        assert!(err.contains("HSMGATE_TEST_SURELY_UNSET_PIN"), "{err}");
    }
}
