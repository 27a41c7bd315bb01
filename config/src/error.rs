//! [`ConfigError`]: every load failure, located at `file:line:col` and naming
//! the key (or URI attribute) that is wrong.

use std::fmt;
use std::path::PathBuf;

use crate::env::{Origin, Setting};
use crate::model::Location;
use crate::pkcs11_uri::UriError;

/// A configuration file could not be loaded.
///
/// `Display` is self-contained: `"{file}:{line}:{col}: {kind}"`, or
/// `"{file}: {kind}"` when there is no position (`line == 0`, read errors), or just
/// `"{kind}"` when `file` is empty (settings from flags and the environment, whose
/// kind names the flag or variable).
/// The underlying I/O or URI error stays reachable through
/// [`std::error::Error::source`].
#[derive(Debug)]
pub struct ConfigError {
    /// The config file (empty for settings from flags and the environment).
    pub file: PathBuf,
    /// 1-based line of the offending value; 0 if the error has no position.
    pub line: usize,
    /// 1-based column (in characters) of the offending value; 0 if none.
    pub col: usize,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    pub(crate) fn at(location: Location, kind: ConfigErrorKind) -> Self {
        let Location { file, line, col } = location;
        Self {
            file,
            line,
            col,
            kind,
        }
    }

    /// An error about flags or environment variables, in no file.
    pub(crate) fn setting(kind: ConfigErrorKind) -> Self {
        Self {
            file: PathBuf::new(),
            line: 0,
            col: 0,
            kind,
        }
    }

    /// Where the error is, as a [`Location`].
    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 if self.file.as_os_str().is_empty() => write!(f, "{}", self.kind),
            0 => write!(f, "{}: {}", self.file.display(), self.kind),
            _ => write!(f, "{}: {}", self.location(), self.kind),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The cause of a [`ConfigError`]. Variants with a `key` name the offending
/// key in dotted form, e.g. `listener[0].address` or `tls.key`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read the config file: {0}")]
    Read(#[source] std::io::Error),
    /// TOML syntax error, unknown key, missing key or wrong value type
    /// (the TOML parser's message, first line).
    #[error("{0}")]
    Syntax(String),
    /// A value breaks a validation rule.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A `proxy_pass` or upstream `server` host that is neither an `upstream` block nor
    /// an address, and that does not resolve (nginx's wording, `[emerg] host not found
    /// in upstream "HOST" in FILE:LINE`; the location is the error's).
    #[error("host not found in upstream \"{host}\"")]
    HostNotFound {
        /// The host (and port) as written.
        host: String,
    },
    /// The key string is not a valid PKCS#11 URI.
    #[error("`{key}`: invalid PKCS#11 URI: {source}")]
    Uri {
        /// The offending key (`tls.key`).
        key: String,
        /// The parser's error, naming the attribute.
        #[source]
        source: Box<UriError>,
    },
    /// No PIN source is configured.
    #[error("`{key}`: no PIN source: set pin_file, pin_env or pin-source in the key URI")]
    MissingPin {
        /// The key the error is reported on (`tls.key`).
        key: String,
    },
    /// More than one PIN source is configured.
    #[error("`{key}`: several PIN sources given ({}); keep exactly one", .sources.join(", "))]
    ConflictingPin {
        /// The later of the conflicting keys.
        key: String,
        /// All the PIN sources found.
        sources: Vec<String>,
    },
    /// Neither `[pkcs11].module` nor the key URI's `module-path` is set.
    #[error("`{key}`: no PKCS#11 module: set [pkcs11].module or module-path in the key URI")]
    MissingModule {
        /// `pkcs11.module`.
        key: String,
    },
    /// `[pkcs11].module` and the key URI's `module-path` disagree.
    #[error(
        "`{key}`: {config:?} differs from the key URI's module-path {uri:?}; give one, or the same path"
    )]
    ModuleConflict {
        /// `pkcs11.module`.
        key: String,
        /// The path in `[pkcs11].module`.
        config: PathBuf,
        /// The path in the URI's `module-path`.
        uri: PathBuf,
    },
    /// A flag or `HSMGATE_*` environment variable is wrong; `value` is shown with any
    /// `pin-value` masked, `source` says why (naming the file key it stands for).
    #[error("{origin}={value:?}: {source}")]
    Setting {
        /// The flag or variable.
        origin: Origin,
        /// Its value, `pin-value` masked.
        value: String,
        /// What is wrong.
        #[source]
        source: Box<ConfigErrorKind>,
    },
    /// Without a configuration file, a required setting is not given.
    #[error("{} (or {}) is required without a configuration file (-c){}", .setting.env(), .setting.flag(), .unless.map_or_else(String::new, |u| format!(", unless {u}")))]
    MissingSetting {
        /// The setting.
        setting: Setting,
        /// When it is not required.
        unless: Option<&'static str>,
    },
    /// Without a configuration file, several required settings are not given.
    #[error("{} are required without a configuration file (-c)", .0.iter().map(|s| format!("{} (or {})", s.env(), s.flag())).collect::<Vec<_>>().join(", "))]
    MissingSettings(Vec<Setting>),
    /// A value is rejected (for settings from flags and the environment).
    #[error("{0}")]
    Value(String),
    /// nginx syntax: a token where it may not be (`unexpected "}"`,
    /// `unexpected end of file, expecting ";" or "}"`), worded as nginx does.
    #[error("unexpected {found}{}", expecting_suffix(*.expecting))]
    Unexpected {
        /// The directive being read, if any.
        directive: Option<String>,
        /// What was found: `"}"`, `";"`, `"{"`, `end of file`, …
        found: String,
        /// What nginx would have accepted there, e.g. `";" or "}"`.
        expecting: Option<&'static str>,
    },
    /// An nginx directive that hsmgate neither implements nor may ignore.
    #[error("unknown directive \"{directive}\"")]
    UnknownDirective {
        /// The directive name.
        directive: String,
    },
    /// A known nginx directive in the wrong block.
    #[error("\"{directive}\" directive is not allowed here")]
    NotAllowedHere {
        /// The directive name.
        directive: String,
    },
    /// Wrong argument count, or a block where none is expected (or the reverse).
    #[error("{reason} in \"{directive}\" directive")]
    Arguments {
        /// The directive name.
        directive: String,
        /// nginx's wording: `invalid number of arguments`, `no opening "{"`, …
        reason: &'static str,
    },
    /// An `include`d file could not be read (reported at the `include`).
    #[error("open() \"{}\" failed: {source}", .path.display())]
    Include {
        /// `include`.
        directive: String,
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file includes itself, directly or through others.
    #[error("include loop: {}", chain_text(.chain))]
    IncludeLoop {
        /// `include`.
        directive: String,
        /// The files from the outermost to the one included again.
        chain: Vec<PathBuf>,
    },
    /// A `$variable` that hsmgate does not provide.
    #[error("unknown \"{variable}\" variable in \"{directive}\" directive")]
    UnknownVariable {
        /// The directive the variable is used in.
        directive: String,
        /// The variable name, without `$`.
        variable: String,
    },
}

fn expecting_suffix(expecting: Option<&'static str>) -> String {
    expecting.map_or_else(String::new, |e| format!(", expecting {e}"))
}

fn chain_text(chain: &[PathBuf]) -> String {
    let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
    names.join(" -> ")
}

impl ConfigErrorKind {
    /// The offending key (for nginx files: the directive), if the error
    /// concerns one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Unexpected { directive, .. } => directive.as_deref(),
            Self::UnknownDirective { directive }
            | Self::NotAllowedHere { directive }
            | Self::Arguments { directive, .. }
            | Self::Include { directive, .. }
            | Self::IncludeLoop { directive, .. }
            | Self::UnknownVariable { directive, .. } => Some(directive),
            Self::Invalid { key, .. }
            | Self::Uri { key, .. }
            | Self::MissingPin { key }
            | Self::ConflictingPin { key, .. }
            | Self::MissingModule { key }
            | Self::ModuleConflict { key, .. } => Some(key),
            Self::Setting { origin, .. } => Some(origin.name()),
            Self::MissingSetting { setting, .. } => Some(setting.env()),
            Self::MissingSettings(settings) => settings.first().map(|s| s.env()),
            Self::Read(_) | Self::Syntax(_) | Self::Value(_) | Self::HostNotFound { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let loc = Location {
            file: "/etc/h.toml".into(),
            line: 3,
            col: 9,
        };
        let kind = ConfigErrorKind::Invalid {
            key: "tls.certificate".into(),
            reason: "must not be empty".into(),
        };
        let e = ConfigError::at(loc, kind);
        assert_eq!(
            e.to_string(),
            "/etc/h.toml:3:9: `tls.certificate`: must not be empty"
        );
        assert_eq!(e.kind.key(), Some("tls.certificate"));
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = ConfigError {
            file: "/etc/h.toml".into(),
            line: 0,
            col: 0,
            kind: ConfigErrorKind::Read(io),
        };
        assert!(e.to_string().starts_with("/etc/h.toml: cannot read"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert!(
            size_of::<ConfigError>() <= 128,
            "keep Result<_, ConfigError> small"
        );
    }
}
