//! The `[pkcs11]` rules: the module (from `[pkcs11].module` or the key URI's
//! `module-path`), exactly one PIN source, the environment and the pool sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::int;
use crate::defaults as d;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::load::Source;
use crate::model::{ConfigWarning, KeyRef, PinSource, Pkcs11Config};
use crate::raw::RawPkcs11;

pub(crate) const PIN_VALUE_WARNING: &str = "the PIN is written in the configuration (pin-value), where whoever reads the file (or, \
     given on the command line, `ps`) sees it; prefer a PIN file: pin-source=file: in the \
     URI, pin_file in [pkcs11], --pin-file or HSMGATE_PIN_FILE";

pub(crate) fn pkcs11(
    raw: &RawPkcs11,
    key: &KeyRef,
    key_at: usize,
    src: &Source<'_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Pkcs11Config, ConfigError> {
    let module_path = key.uri.module_path.as_deref().map(PathBuf::from);
    let module = match (&raw.module, module_path) {
        (Some(m), _) if m.get_ref().trim().is_empty() => {
            return Err(src.invalid(m.span().start, "pkcs11.module", "must not be empty"));
        }
        (Some(m), Some(uri)) if uri.as_path() != Path::new(m.get_ref()) => {
            let (key, config) = ("pkcs11.module".into(), m.get_ref().into());
            return Err(src.error(
                m.span().start,
                ConfigErrorKind::ModuleConflict { key, config, uri },
            ));
        }
        (Some(m), _) => (PathBuf::from(m.get_ref()), src.location(m.span().start)),
        (None, Some(uri)) => (uri, key.location.clone()),
        (None, None) => {
            return Err(src.error(
                key_at,
                ConfigErrorKind::MissingModule {
                    key: "pkcs11.module".into(),
                },
            ));
        }
    };
    if key.uri.module_name.is_some() {
        let message =
            "module-name in the key URI is ignored; the module is [pkcs11].module or module-path";
        warnings.push(ConfigWarning {
            location: key.location.clone(),
            message: message.into(),
        });
    }
    let (module, module_at) = module;
    let (pin, pin_at) = pin(raw, key, key_at, src, warnings)?;
    let pin_at = src.location(pin_at);
    let env = match &raw.env {
        None => BTreeMap::new(),
        Some(env) => {
            let bad = |s: &str| s.contains('\0');
            if let Some((k, _)) = env
                .get_ref()
                .iter()
                .find(|(k, v)| k.is_empty() || k.contains('=') || bad(k) || bad(v))
            {
                let reason =
                    "not a valid environment variable (empty name, '=' in the name, or NUL)";
                return Err(src.invalid(env.span().start, format!("pkcs11.env.{k}"), reason));
            }
            env.get_ref().clone()
        }
    };
    let count = |v, key, range, default| int(v, key, range, default, src).map(|n| n as usize);
    Ok(Pkcs11Config {
        module,
        module_at,
        env,
        pin,
        pin_at,
        sessions: count(
            raw.sessions.as_ref(),
            "pkcs11.sessions",
            1..=256,
            d::SESSIONS as i64,
        )?,
        queue_depth: count(
            raw.queue_depth.as_ref(),
            "pkcs11.queue_depth",
            1..=1_000_000,
            d::QUEUE_DEPTH as i64,
        )?,
        sign_timeout: Duration::from_millis(int(
            raw.sign_timeout_ms.as_ref(),
            "pkcs11.sign_timeout_ms",
            1..=60_000,
            d::ms(d::SIGN_TIMEOUT),
            src,
        )?),
        capacity: capacity(raw.capacity.as_ref(), "pkcs11.capacity", src)?,
    })
}

/// A rated capacity: a positive number of signatures/s.
pub(crate) fn capacity(
    raw: Option<&toml::Spanned<f64>>,
    key: &str,
    src: &Source<'_>,
) -> Result<Option<f64>, ConfigError> {
    match raw {
        Some(c) if !(c.get_ref().is_finite() && *c.get_ref() > 0.0) => Err(src.invalid(
            c.span().start,
            key,
            "must be a positive number of signatures/s",
        )),
        c => Ok(c.map(|c| *c.get_ref())),
    }
}

/// Exactly one of: URI `pin-source=file:`, URI `pin-value`, `pin_file`, `pin_env`; and
/// where it is set (a byte offset).
fn pin(
    raw: &RawPkcs11,
    key: &KeyRef,
    key_at: usize,
    src: &Source<'_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(PinSource, usize), ConfigError> {
    let mut found: Vec<(&str, usize, PinSource)> = Vec::new();
    if let Some(source) = &key.uri.pin_source {
        let path = source
            .strip_prefix("file:")
            .map(|p| match p.strip_prefix("//") {
                Some(rest) if rest.starts_with('/') => rest,
                Some(_) => "",
                None => p,
            });
        let path = path.filter(|p| !p.is_empty()).ok_or_else(|| {
            let reason =
                "attribute \"pin-source\": only the form file:PATH (or file:///PATH) is supported";
            src.invalid(key_at, "tls.key", reason)
        })?;
        found.push((
            "pin-source in tls.key",
            key_at,
            PinSource::File(src.dir.join(path)),
        ));
    }
    if let Some(value) = &key.uri.pin_value {
        found.push((
            "pin-value in tls.key",
            key_at,
            PinSource::Value(value.clone()),
        ));
        warnings.push(ConfigWarning {
            location: key.location.clone(),
            message: PIN_VALUE_WARNING.into(),
        });
    }
    for (name, value) in [
        ("pkcs11.pin_file", &raw.pin_file),
        ("pkcs11.pin_env", &raw.pin_env),
    ] {
        let Some(value) = value else { continue };
        let (text, at) = (value.get_ref(), value.span().start);
        if text.is_empty()
            || text.contains('\0')
            || (name == "pkcs11.pin_env" && text.contains('='))
        {
            return Err(src.invalid(at, name, "must be non-empty (and a valid name for pin_env)"));
        }
        let pin = match name {
            "pkcs11.pin_file" => PinSource::File(src.dir.join(text)),
            _ => PinSource::Env(text.clone()),
        };
        found.push((name, at, pin));
    }
    found.sort_by_key(|(_, at, _)| *at);
    match found.len() {
        0 => Err(src.error(
            key_at,
            ConfigErrorKind::MissingPin {
                key: "tls.key".into(),
            },
        )),
        1 => {
            let (_, at, pin) = found.remove(0);
            Ok((pin, at))
        }
        _ => {
            let (name, at) = (found[1].0, found[1].1);
            let key = name.rsplit(' ').next().unwrap_or(name).to_owned();
            let sources = found.iter().map(|(n, ..)| (*n).to_owned()).collect();
            Err(src.error(at, ConfigErrorKind::ConflictingPin { key, sources }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fixture::{bad, good};

    /// Errors about the module or the PIN (raised when they are used) name the line
    /// that sets them: `[pkcs11]`'s, else the key's URI.
    #[test]
    fn the_module_and_the_pin_know_where_they_are_set() {
        let c = good(&[]);
        let p = c.pkcs11.as_ref().expect("single token");
        assert_eq!((p.module_at.line, p.pin_at.line), (9, 6));
        let c = good(&[
            (
                "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
                "module = \"/usr/lib/softhsm/libsofthsm2.so\"\npin_file = \"/run/pin\"",
            ),
            ("?pin-source=file:pin.txt", ""),
        ]);
        let p = c.pkcs11.as_ref().expect("single token");
        assert_eq!((p.module_at.line, p.pin_at.line), (9, 10));
        let c = good(&[
            ("module = \"/usr/lib/softhsm/libsofthsm2.so\"", ""),
            ("pin.txt", "pin.txt&module-path=/opt/p11.so"),
        ]);
        let p = c.pkcs11.as_ref().expect("single token");
        assert_eq!((p.module_at.line, p.pin_at.line), (6, 6));
    }

    #[test]
    fn pin_rules() {
        bad(
            &[("?pin-source=file:pin.txt", "")],
            6,
            &[
                "`tls.key`",
                "no PIN source: set pin_file, pin_env or pin-source",
            ],
        );
        bad(
            &[("file:pin.txt", "env:PIN")],
            6,
            &["`tls.key`", "attribute \"pin-source\"", "file:"],
        );
        let e = bad(
            &[(
                "libsofthsm2.so\"",
                "libsofthsm2.so\"\npin_env = \"HSMGATE_PIN\"",
            )],
            10,
            &[
                "`pkcs11.pin_env`",
                "several PIN sources",
                "pin-source in tls.key, pkcs11.pin_env",
            ],
        );
        assert!(matches!(
            e.kind,
            crate::ConfigErrorKind::ConflictingPin { .. }
        ));
        bad(
            &[("libsofthsm2.so\"", "libsofthsm2.so\"\npin_file = \"\"")],
            10,
            &["`pkcs11.pin_file`"],
        );
        let env = good(&[
            ("?pin-source=file:pin.txt", ""),
            ("libsofthsm2.so\"", "libsofthsm2.so\"\npin_env = \"P\""),
        ]);
        assert_eq!(
            env.pkcs11.as_ref().expect("single token").pin,
            crate::PinSource::Env("P".into())
        );
        let abs = good(&[("file:pin.txt", "file:///run/pin")]);
        assert_eq!(
            abs.pkcs11.as_ref().expect("single token").pin,
            crate::PinSource::File("/run/pin".into())
        );
    }

    #[test]
    fn pin_value_is_accepted_with_a_warning_and_never_printed() {
        const PIN: &str = "s3cr3t-PIN-4711";
        let c = good(&[("pin-source=file:pin.txt", &format!("pin-value={PIN}"))]);
        assert!(
            matches!(&c.pkcs11.as_ref().expect("single token").pin, crate::PinSource::Value(s) if s.expose() == PIN)
        );
        assert_eq!(c.warnings.len(), 1);
        let w = &c.warnings[0];
        assert_eq!(w.location.line, 6);
        assert!(
            w.message.contains("pin-value") && !w.to_string().contains(PIN),
            "{w}"
        );
        assert!(!format!("{c:?}").contains(PIN));
        assert!(!c.tls.key.uri.to_string().contains(PIN));
        let both = format!("pin-source=file:pin.txt&pin-value={PIN}");
        let e = bad(
            &[("pin-source=file:pin.txt", &both)],
            6,
            &["`tls.key`: several PIN sources", "pin-value in tls.key"],
        );
        assert!(
            !e.to_string().contains(PIN) && !format!("{e:?}").contains(PIN),
            "{e}"
        );
        let e = bad(
            &[
                ("token=demo", &format!("token=%z{PIN}")),
                ("pin-source=file:pin.txt", &both),
            ],
            6,
            &[],
        );
        assert!(!e.to_string().contains(&PIN[1..]), "{e}");
    }

    #[test]
    fn module_rules() {
        let no_module = ("module = \"/usr/lib/softhsm/libsofthsm2.so\"", "");
        bad(&[no_module], 6, &["`pkcs11.module`", "no PKCS#11 module"]);
        let c = good(&[no_module, ("pin.txt", "pin.txt&module-path=/opt/p11.so")]);
        assert_eq!(
            c.pkcs11.as_ref().expect("single token").module,
            Path::new("/opt/p11.so")
        );
        let same = good(&[(
            "pin.txt",
            "pin.txt&module-path=/usr/lib/softhsm/libsofthsm2.so",
        )]);
        assert_eq!(
            same.pkcs11.as_ref().expect("single token").module,
            Path::new("/usr/lib/softhsm/libsofthsm2.so")
        );
        bad(
            &[("pin.txt", "pin.txt&module-path=/opt/p11.so")],
            9,
            &["`pkcs11.module`", "libsofthsm2.so", "/opt/p11.so"],
        );
        bad(
            &[("/usr/lib/softhsm/libsofthsm2.so", "")],
            9,
            &["`pkcs11.module`", "empty"],
        );
        let named = good(&[("pin.txt", "pin.txt&module-name=softhsm2")]);
        assert!(named.warnings[0].message.contains("module-name"));
    }
}
