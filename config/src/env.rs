//! Settings from command-line flags and `HSMGATE_*` environment variables, for
//! hsmgate as a sidecar (as ghostunnel is configured): [`Overrides`] holds them, laid
//! over a native file's values or standing for the whole configuration when no file
//! is given (see [`Overrides::load`], in `overlay`).
//!
//! The environment is read through [`Strings`], so tests hand in a fake one instead of
//! changing the process's environment. A flag wins over its variable.
//!
//! | variable | flag | file key it replaces |
//! |---|---|---|
//! | `HSMGATE_LISTEN` | `--listen` | `[[listener]] address` (comma-separated list) |
//! | `HSMGATE_UPSTREAM` | `--upstream` | `[upstream] address` |
//! | `HSMGATE_CERT` | `--cert` | `[tls] certificate` |
//! | `HSMGATE_KEY` | `--key` | `[tls] key` |
//! | `HSMGATE_PIN_FILE` | `--pin-file` | `[pkcs11] pin_file` |
//! | `HSMGATE_PKCS11_MODULE` | `--pkcs11-module` | `[pkcs11] module` |
//! | `HSMGATE_ADMIN` | `--admin` | `[admin] address` |
//! | `HSMGATE_LOG_FORMAT` | `--log-format` | (none: `text` or `json`) |

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

use crate::error::{ConfigError, ConfigErrorKind};

/// Where settings come from: the process environment ([`ProcessEnv`]) or, in tests,
/// a fixed list.
pub trait Strings {
    /// The value of variable `name`, if set.
    fn get(&self, name: &str) -> Option<OsString>;
}

/// The process's own environment (read only).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Strings for ProcessEnv {
    fn get(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// A fixed environment (tests).
impl Strings for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<OsString> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }
}

impl<const N: usize> Strings for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<OsString> {
        Strings::get(&self[..], name)
    }
}

/// One setting that a flag or a variable can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// TLS listen address(es).
    Listen,
    /// The upstream `host:port`.
    Upstream,
    /// The PEM certificate chain.
    Cert,
    /// The key's PKCS#11 URI.
    Key,
    /// The file holding the PIN.
    PinFile,
    /// The PKCS#11 module.
    Module,
    /// The admin listener's address.
    Admin,
    /// `text` or `json` logs.
    LogFormat,
    /// PEM CAs of client certificates (`[tls] client_certificate`: required then).
    ClientCa,
}

impl Setting {
    /// Every setting, in the order of the README's table.
    pub const ALL: [Setting; 9] = [
        Setting::Listen,
        Setting::Upstream,
        Setting::Cert,
        Setting::Key,
        Setting::PinFile,
        Setting::Module,
        Setting::Admin,
        Setting::LogFormat,
        Setting::ClientCa,
    ];

    /// Its environment variable.
    pub fn env(self) -> &'static str {
        match self {
            Setting::Listen => "HSMGATE_LISTEN",
            Setting::Upstream => "HSMGATE_UPSTREAM",
            Setting::Cert => "HSMGATE_CERT",
            Setting::Key => "HSMGATE_KEY",
            Setting::PinFile => "HSMGATE_PIN_FILE",
            Setting::Module => "HSMGATE_PKCS11_MODULE",
            Setting::Admin => "HSMGATE_ADMIN",
            Setting::LogFormat => "HSMGATE_LOG_FORMAT",
            Setting::ClientCa => "HSMGATE_CLIENT_CA",
        }
    }

    /// Its command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Listen => "--listen",
            Setting::Upstream => "--upstream",
            Setting::Cert => "--cert",
            Setting::Key => "--key",
            Setting::PinFile => "--pin-file",
            Setting::Module => "--pkcs11-module",
            Setting::Admin => "--admin",
            Setting::LogFormat => "--log-format",
            Setting::ClientCa => "--client-ca",
        }
    }

    /// True for the settings that make up a configuration (without a file, these
    /// replace it).
    pub fn configures(self) -> bool {
        !matches!(self, Setting::LogFormat)
    }
}

/// Where a value was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The setting's environment variable.
    Env(Setting),
    /// The setting's command-line flag.
    Flag(Setting),
}

impl Origin {
    /// The variable or flag name.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Env(s) => s.env(),
            Origin::Flag(s) => s.flag(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(s) => write!(f, "environment variable {}", s.env()),
            Origin::Flag(s) => write!(f, "flag {}", s.flag()),
        }
    }
}

/// A value and where it was given.
#[derive(Clone, PartialEq, Eq)]
pub struct Given {
    /// The value as written (for [`Setting::Key`] it may hold a PIN: see [`Given::shown`]).
    pub text: String,
    /// The variable or flag.
    pub origin: Origin,
}

impl Given {
    /// The value as it may appear in messages: a `pin-value` is printed as `***`.
    pub fn shown(&self) -> String {
        mask_pin_value(&self.text)
    }

    /// An error about this value.
    pub(crate) fn error(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::setting(ConfigErrorKind::Setting {
            origin: self.origin,
            value: self.shown(),
            source: Box::new(kind),
        })
    }
}

impl fmt::Debug for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.origin.name(), self.shown())
    }
}

/// Log output format (`HSMGATE_LOG_FORMAT`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings given by flags and `HSMGATE_*` variables; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    values: BTreeMap<Setting, Given>,
}

impl Overrides {
    /// Reads every `HSMGATE_*` variable of the table, without blanks around its value.
    /// A set but empty variable, or one that is not UTF-8, is an error naming it.
    pub fn from_env(env: &(impl Strings + ?Sized)) -> Result<Overrides, ConfigError> {
        let mut values = BTreeMap::new();
        for setting in Setting::ALL {
            let Some(raw) = env.get(setting.env()) else {
                continue;
            };
            // Blanks around a value are not part of it (a YAML `value: |` block ends
            // with a newline).
            let given = Given {
                text: raw.to_string_lossy().trim().to_owned(),
                origin: Origin::Env(setting),
            };
            if raw.to_str().is_none() {
                return Err(given.error(ConfigErrorKind::Value("not valid UTF-8".into())));
            }
            check_not_empty(&given)?;
            values.insert(setting, given);
        }
        Ok(Overrides { values })
    }

    /// Sets `setting` from its flag (a flag wins over the variable).
    pub fn flag(&mut self, setting: Setting, value: Option<String>) -> Result<(), ConfigError> {
        let Some(text) = value else { return Ok(()) };
        let given = Given {
            text,
            origin: Origin::Flag(setting),
        };
        check_not_empty(&given)?;
        self.values.insert(setting, given);
        Ok(())
    }

    /// Each setting given, as `NAME=value` (variable or flag; a `pin-value` as `***`).
    pub fn describe(&self) -> Vec<String> {
        self.values
            .values()
            .map(|g| format!("{}={}", g.origin.name(), g.shown()))
            .collect()
    }

    /// The value of `setting`, if given.
    pub fn get(&self, setting: Setting) -> Option<&Given> {
        self.values.get(&setting)
    }

    /// True when some setting that makes up a configuration is given (without a file,
    /// they then replace it).
    pub fn configure(&self) -> bool {
        self.values.keys().any(|s| s.configures())
    }

    /// The log format (text unless given as `json`).
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        let Some(given) = self.get(Setting::LogFormat) else {
            return Ok(LogFormat::Text);
        };
        match given.text.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(given.error(ConfigErrorKind::Value(
                "expected \"text\" or \"json\"".into(),
            ))),
        }
    }

    /// `--admin` / `HSMGATE_ADMIN` as an address, if given (for nginx configurations,
    /// where it wins over the file's `env HSMGATE_ADMIN=…;`).
    pub fn admin_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(given) = self.get(Setting::Admin) else {
            return Ok(None);
        };
        given.text.trim().parse().map(Some).map_err(|_| {
            given.error(ConfigErrorKind::Value(format!(
                "\"{}\" is not an IP:port address",
                given.text
            )))
        })
    }

    /// Checks that only settings an nginx configuration can take are given: the module
    /// (its default for token keys), the admin listener and the log format.
    pub fn check_nginx(&self, file: &std::path::Path) -> Result<(), ConfigError> {
        let other = self
            .values
            .iter()
            .find(|(s, _)| !matches!(s, Setting::Module | Setting::LogFormat | Setting::Admin));
        match other {
            None => Ok(()),
            Some((_, given)) => Err(given.error(ConfigErrorKind::Value(format!(
                "applies to the native format only; {} is read as nginx syntax (its name does not end in .toml)",
                file.display()
            )))),
        }
    }
}

/// The admission variables, read for nginx configurations only (TOML: `[admission]`).
const ADMISSION_VARS: [&str; 6] = [
    "HSMGATE_ADMISSION",
    "HSMGATE_ADMISSION_TARGET_WAIT_MS",
    "HSMGATE_ADMISSION_MAX_WAIT_MS",
    "HSMGATE_ADMISSION_MAX_WAITING",
    "HSMGATE_ADMISSION_SIGNER_NICE",
    "HSMGATE_ADMISSION_INLINE_SIGNING",
];

/// What is wrong with each `HSMGATE_*` variable of `names` that hsmgate does not read
/// for this kind of configuration (`nginx`: an nginx file, else the native format or
/// variables alone): a name it does not know at all (a typo, most likely), or an
/// admission variable under the native format. Names with `PIN` in them are left out:
/// a configuration's `pin_env` may name any variable.
pub fn unread_variables<'a>(names: impl IntoIterator<Item = &'a str>, nginx: bool) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        if !name.starts_with("HSMGATE_")
            || name.contains("PIN")
            || Setting::ALL.iter().any(|s| s.env() == name)
        {
            continue;
        }
        match ADMISSION_VARS.contains(&name) {
            true if nginx => {}
            true => out.push(format!(
                "{name} is read for nginx configurations only: it is ignored here (set \
                 [admission] in a TOML file)"
            )),
            false => out.push(format!(
                "{name} is not a variable hsmgate reads: it is ignored (the variables are \
                 {}, and for nginx configurations HSMGATE_ADMISSION…)",
                Setting::ALL.map(Setting::env).join(", ")
            )),
        }
    }
    out
}

fn check_not_empty(given: &Given) -> Result<(), ConfigError> {
    match given.text.trim().is_empty() {
        true => Err(given.error(ConfigErrorKind::Value(
            "is empty (unset it to use the file's value or the default)".into(),
        ))),
        false => Ok(()),
    }
}

/// `s` with every PIN replaced by `***` (also in strings that are not valid URIs, since
/// those are printed in errors, and in whole configuration files): the value of every
/// attribute or setting named `pin`, `pin-…` or `pin_…`, or ending so after a `_`
/// (`env HSMGATE_PIN=…;`, `HSMGATE_PIN_EU_A=…`) (any case, `%`-escapes read,
/// blanks before the `=` allowed: `pin-value`, `PIN_VALUE`, `pin%2Dvalue`), but for
/// those that name where the PIN is (`pin-source`, `pin_file`, `pin_env`), of which only
/// a last name that may be a PIN typed in its place is hidden
/// ([`may_be_a_pin`](crate::may_be_a_pin)). A value ends at the next `;`, `&` or line
/// end (a PIN may hold spaces and quotes), a closing quote just before that end kept.
pub fn mask_pin_value(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let (mut from, mut search) = (0, 0);
    while let Some(found) = lower[search..].find("pin") {
        let at = search + found;
        search = at + 3;
        let starts_attribute =
            at == 0 || s[..at].ends_with([';', '?', '&', ':', ' ', '\t', '"', '\'', '_']);
        if !starts_attribute {
            continue;
        }
        let Some(eq) = s[at..].find(['=', ';', '&', '?', '\r', '\n']) else {
            break;
        };
        if s.as_bytes()[at + eq] != b'=' {
            continue;
        }
        let raw_name = s[at..at + eq].trim();
        let name = crate::pkcs11_uri::decode(raw_name)
            .map_or_else(
                |_| raw_name.to_owned(),
                |b| String::from_utf8_lossy(&b).into_owned(),
            )
            .to_ascii_lowercase();
        let pin_name = name == "pin"
            || name.starts_with("pin-")
            || name.starts_with("pin_")
            || name.starts_with("pinvalue");
        if !pin_name
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            continue;
        }
        let value = at + eq + 1;
        let mut end = s[value..]
            .find([';', '&', '\r', '\n'])
            .map_or(s.len(), |i| value + i);
        if end > value && s[..end].ends_with(['"', '\'']) {
            end -= 1;
        }
        let names_a_place = matches!(
            name.replace('_', "-").as_str(),
            "pin-source" | "pin-file" | "pin-env"
        );
        let shown = match names_a_place {
            false => "***".to_owned(),
            true => crate::secret::hide_pin_name(&s[value..end]),
        };
        out.push_str(&s[from..value]);
        out.push_str(&shown);
        from = end;
        search = end.max(search);
    }
    out.push_str(&s[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_hsmgate_does_not_read_are_named() {
        let names = [
            "HSMGATE_LISTN",
            "HSMGATE_LISTEN",
            "HSMGATE_ADMISSION",
            "HSMGATE_PIN",
            "HSMGATE_PIN_EU_A",
            "PATH",
        ];
        let native = unread_variables(names, false);
        assert_eq!(native.len(), 2, "{native:?}");
        assert!(native[0].starts_with("HSMGATE_LISTN is not a variable hsmgate reads"));
        assert!(native[0].contains("HSMGATE_LISTEN"), "{}", native[0]);
        assert!(
            native[1].contains("nginx configurations only"),
            "{}",
            native[1]
        );
        let nginx = unread_variables(names, true);
        assert_eq!(nginx.len(), 1, "{nginx:?}");
    }

    #[test]
    fn reads_every_variable_and_flags_win() {
        let env = [
            ("HSMGATE_LISTEN", "0.0.0.0:8443"),
            ("HSMGATE_UPSTREAM", "127.0.0.1:8080"),
            ("HSMGATE_LOG_FORMAT", "json"),
            ("OTHER", "x"),
        ];
        let mut o = Overrides::from_env(&env).unwrap();
        assert!(o.configure());
        assert_eq!(o.log_format().unwrap(), LogFormat::Json);
        o.flag(Setting::Listen, Some("127.0.0.1:9443".into()))
            .unwrap();
        o.flag(Setting::Upstream, None).unwrap();
        let listen = o.get(Setting::Listen).unwrap();
        assert_eq!(
            (listen.text.as_str(), listen.origin),
            ("127.0.0.1:9443", Origin::Flag(Setting::Listen))
        );
        let upstream = o.get(Setting::Upstream).unwrap();
        assert_eq!(upstream.origin, Origin::Env(Setting::Upstream));
        assert_eq!(o.get(Setting::Cert), None);
    }

    #[test]
    fn names_are_distinct_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for s in Setting::ALL {
            assert!(s.env().starts_with("HSMGATE_") && s.flag().starts_with("--"));
            assert!(seen.insert(s.env()) && seen.insert(s.flag()), "{s:?}");
        }
    }

    #[test]
    fn log_format_alone_configures_nothing() {
        let o = Overrides::from_env(&[("HSMGATE_LOG_FORMAT", "text")]).unwrap();
        assert!(!o.configure());
        assert_eq!(o.log_format().unwrap(), LogFormat::Text);
        let o = Overrides::from_env(&[("HSMGATE_LOG_FORMAT", "xml")]).unwrap();
        let e = o.log_format().unwrap_err().to_string();
        assert_eq!(
            e,
            "environment variable HSMGATE_LOG_FORMAT=\"xml\": expected \"text\" or \"json\""
        );
    }

    #[test]
    fn empty_values_are_errors_naming_the_variable_or_flag() {
        // Blanks around a value are not part of it.
        let o = Overrides::from_env(&[("HSMGATE_UPSTREAM", "127.0.0.1:8080\n")]).unwrap();
        assert_eq!(
            o.get(Setting::Upstream).map(|g| g.text.as_str()),
            Some("127.0.0.1:8080")
        );
        let e = Overrides::from_env(&[("HSMGATE_CERT", " ")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment variable HSMGATE_CERT=\"\": is empty"),
            "{e}"
        );
        assert_eq!(e.kind.key(), Some("HSMGATE_CERT"));
        let e = Overrides::default()
            .flag(Setting::Key, Some(String::new()))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("flag --key=\"\": is empty"),
            "{e}"
        );
    }

    #[test]
    fn nginx_takes_only_the_module_and_the_log_format() {
        let nginx = std::path::Path::new("/etc/nginx/nginx.conf");
        let env = [
            ("HSMGATE_PKCS11_MODULE", "/m.so"),
            ("HSMGATE_LOG_FORMAT", "json"),
        ];
        Overrides::from_env(&env)
            .unwrap()
            .check_nginx(nginx)
            .unwrap();
        let env = [("HSMGATE_UPSTREAM", "a:1")];
        let e = Overrides::from_env(&env)
            .unwrap()
            .check_nginx(nginx)
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "environment variable HSMGATE_UPSTREAM=\"a:1\": applies to the native format only; /etc/nginx/nginx.conf"
            ),
            "{e}"
        );
    }

    #[test]
    fn pin_values_are_masked() {
        for (raw, shown) in [
            (
                "pkcs11:token=a;object=k?pin-value=1234",
                "pkcs11:token=a;object=k?pin-value=***",
            ),
            (
                "pkcs11:token=a?pin-value=12%zz&module-path=/m.so",
                "pkcs11:token=a?pin-value=***&module-path=/m.so",
            ),
            (
                "pkcs11:pin-value=1;pin-value=2",
                "pkcs11:pin-value=***;pin-value=***",
            ),
            (
                "pkcs11:object=my-pin-value=1",
                "pkcs11:object=my-pin-value=1",
            ),
            ("pin-value=", "pin-value=***"),
            // Typed in other ways, and where a place belongs.
            ("pkcs11:a?pin%2Dvalue=1234", "pkcs11:a?pin%2Dvalue=***"),
            ("pkcs11:a?pin-value =1234", "pkcs11:a?pin-value =***"),
            (
                "pkcs11:a;type=private&pin-value=1234",
                "pkcs11:a;type=private&pin-value=***",
            ),
            ("pkcs11:a?pin-source=1234", "pkcs11:a?pin-source=***"),
            (
                "pkcs11:a?pin-source=file:/etc/1234",
                "pkcs11:a?pin-source=file:/etc/***",
            ),
            (
                "pkcs11:a?pin-source=file:/etc/pin.txt",
                "pkcs11:a?pin-source=file:/etc/pin.txt",
            ),
            (
                "pin_file = \"/run/secrets/hsm-pin\"",
                "pin_file = \"/run/secrets/hsm-pin\"",
            ),
            ("pin_env = \"4711\"", "pin_env = \"***\""),
            ("pin_env = \"HSM_PIN\"", "pin_env = \"HSM_PIN\""),
            ("pinned = 1", "pinned = 1"),
            // A variable named so in nginx's `env` directive.
            ("env HSMGATE_PIN=1234;", "env HSMGATE_PIN=***;"),
            ("env HSMGATE_PIN_EU_A=1234;", "env HSMGATE_PIN_EU_A=***;"),
            (
                "HSMGATE_PIN_FILE=/run/hsm-pin",
                "HSMGATE_PIN_FILE=/run/hsm-pin",
            ),
            ("env SSL_PINNING=1;", "env SSL_PINNING=1;"),
            // Any case, `pin_value`, after a space; a value with spaces and quotes.
            ("pkcs11:a?PIN-VALUE=1234", "pkcs11:a?PIN-VALUE=***"),
            ("pkcs11:a?pin_value=1234", "pkcs11:a?pin_value=***"),
            ("pkcs11:a; pin-value=1234", "pkcs11:a; pin-value=***"),
            (
                "key = \"pkcs11:a?pin-value=12 34\"\nnext = 1",
                "key = \"pkcs11:a?pin-value=***\"\nnext = 1",
            ),
            (
                "ssl_certificate_key \"pkcs11:a;pin-value=12\"34\";\n",
                "ssl_certificate_key \"pkcs11:a;pin-value=***\";\n",
            ),
            (
                "key = \"pkcs11:token=a?pin-value=1234\"\nnext = 1",
                "key = \"pkcs11:token=a?pin-value=***\"\nnext = 1",
            ),
        ] {
            assert_eq!(mask_pin_value(raw), shown);
        }
        let given = Given {
            text: "pkcs11:token=a?pin-value=1234".into(),
            origin: Origin::Env(Setting::Key),
        };
        assert_eq!(
            format!("{given:?}"),
            "HSMGATE_KEY=\"pkcs11:token=a?pin-value=***\""
        );
    }
}
