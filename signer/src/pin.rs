//! Reading the PIN from where the configuration says it is. The PIN itself is never
//! logged nor put in an error: errors name only its source.

use hsmgate_config::{PinSource, Secret};

use crate::error::{PinProblem, SignerError};

/// Resolve a PIN source to the PIN.
pub fn read_pin(source: &PinSource) -> Result<Secret, SignerError> {
    match source {
        PinSource::Value(secret) => Ok(secret.clone()),
        PinSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| SignerError::Pin {
                source_name: format!("file {}", path.display()),
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
                source_name: format!("environment variable {name}"),
                reason: PinProblem::Unset(e),
            }),
        },
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
        let missing = read_pin(&PinSource::File(dir.path().join("nope"))).expect_err("missing");
        assert!(missing.to_string().contains("nope"));
    }

    #[test]
    fn unset_env_names_the_variable() {
        let err = read_pin(&PinSource::Env("HSMGATE_TEST_SURELY_UNSET_PIN".into()))
            .expect_err("unset")
            .to_string();
        assert!(err.contains("HSMGATE_TEST_SURELY_UNSET_PIN"), "{err}");
    }
}
