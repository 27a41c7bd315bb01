//! [`Overrides::load`]: flags and `HSMGATE_*` variables laid over a native file, or
//! standing for the whole configuration, turned into the same [`Config`] the file
//! reader makes.
//!
//! The settings are written into the file's TOML table (or into an empty one) and the
//! result goes through [`load_str`]: one set of rules for both. The file is validated
//! on its own first, so its own mistakes keep their `file:line:col`; a rule broken by
//! the layered document is then reported on the flag or variable that set the
//! offending key ([`ConfigErrorKind::Setting`]), with its value (any `pin-value`
//! masked). Locations in the result point into the file, or name the variable.
//!
//! A variable replaces exactly the file key of its row in the table of [`crate::env`],
//! with two consequences for the PIN and the module of a single token: a PIN file
//! given so also drops `pin_env` and the `pin-source`/`pin-value` of the file's key
//! URI, and a module drops the file URI's `module-path` (each would otherwise be a
//! second source). Relative paths in variables and flags (certificate, PIN file) are
//! relative to the working directory.

use std::path::Path;

use toml::{Table, Value};

use crate::env::{Given, Origin, Overrides, Setting};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::load::{load_str, read};
use crate::model::{Config, Location};

/// [`Config::source`] of a configuration made from flags and the environment alone.
pub const ENVIRONMENT: &str = "(environment)";

/// The settings a configuration needs when there is no file.
const REQUIRED: [Setting; 4] = [
    Setting::Listen,
    Setting::Upstream,
    Setting::Cert,
    Setting::Key,
];

impl Overrides {
    /// The configuration of the native `file` with these settings laid over it, or,
    /// without a file, of these settings alone (then `HSMGATE_LISTEN`,
    /// `HSMGATE_UPSTREAM`, `HSMGATE_CERT` and `HSMGATE_KEY`, or their flags, are
    /// required).
    pub fn load(&self, file: Option<&Path>) -> Result<Config, ConfigError> {
        match file {
            Some(path) => self.over_file(path),
            None => self.standalone(),
        }
    }

    fn standalone(&self) -> Result<Config, ConfigError> {
        let missing: Vec<Setting> = (REQUIRED.iter().copied())
            .filter(|&s| self.get(s).is_none())
            .collect();
        match missing[..] {
            [] => {}
            [setting] => {
                return Err(ConfigError::setting(ConfigErrorKind::MissingSetting {
                    setting,
                    unless: None,
                }));
            }
            _ => {
                return Err(ConfigError::setting(ConfigErrorKind::MissingSettings(
                    missing,
                )));
            }
        }
        let mut doc = Table::new();
        self.lay_over(&mut doc, &Table::new())?;
        let text = toml::to_string(&doc).expect("a table of strings serializes");
        let mut config =
            load_str(&text, Path::new(ENVIRONMENT)).map_err(|e| self.relocate(e, Path::new("")))?;
        self.relocate_locations(&mut config, None);
        Ok(config)
    }

    fn over_file(&self, path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        let alone = load_str(&text, path);
        if !self.configure() {
            return alone;
        }
        // The file may leave out what the settings give (a base file without
        // `[upstream]` under HSMGATE_UPSTREAM): then it need not validate alone. Any
        // other error of the file is its own, at its own line.
        let incomplete = matches!(&alone, Err(e) if e.to_string().contains("missing field"));
        if alone.is_err() && !incomplete {
            return alone;
        }
        let Ok(original) = toml::from_str::<Table>(&text) else {
            return alone;
        };
        let mut doc = original.clone();
        self.lay_over(&mut doc, &original)?;
        let laid = toml::to_string(&doc).expect("a table read from TOML serializes");
        let mut config = load_str(&laid, path).map_err(|e| self.relocate(e, path))?;
        match alone {
            Ok(alone) => self.relocate_locations(&mut config, Some(&alone)),
            // Where the file is incomplete alone, its settings are named by the file
            // (the lines of the laid-over document are not the file's).
            Err(_) => {
                self.relocate_locations(&mut config, None);
                whole_file_locations(&mut config, path);
            }
        }
        Ok(config)
    }

    /// Writes the given settings into `doc` (a copy of `original`, or empty).
    fn lay_over(&self, doc: &mut Table, original: &Table) -> Result<(), ConfigError> {
        let grouped = original.contains_key("hsm");
        if let Some(g) = self.get(Setting::Listen) {
            let template = match original.get("listener") {
                Some(Value::Array(a)) => a.first().and_then(Value::as_table).cloned(),
                _ => None,
            };
            let listeners = g
                .text
                .split(',')
                .map(|address| {
                    let mut l = template.clone().unwrap_or_default();
                    l.insert("address".into(), Value::String(address.trim().into()));
                    Value::Table(l)
                })
                .collect();
            doc.insert("listener".into(), Value::Array(listeners));
        }
        if let Some(g) = self.get(Setting::Upstream) {
            table(doc, "upstream").insert("address".into(), g.text.clone().into());
        }
        if let Some(g) = self.get(Setting::Cert) {
            let cert = absolute(g)?;
            table(doc, "tls").insert("certificate".into(), cert.into());
        }
        if let Some(g) = self.get(Setting::Key) {
            table(doc, "tls").insert("key".into(), g.text.clone().into());
        }
        if let Some(g) = self.get(Setting::ClientCa) {
            let cas = absolute(g)?;
            table(doc, "tls").insert("client_certificate".into(), cas.into());
        }
        for (setting, key, drop_from_uri) in [
            (
                Setting::PinFile,
                "pin_file",
                &["pin-source", "pin-value"][..],
            ),
            (Setting::Module, "module", &["module-path"][..]),
        ] {
            let Some(g) = self.get(setting) else { continue };
            if grouped {
                let reason = "applies to a single token ([pkcs11]); the file has an HA group ([[hsm.group]]), whose members name their own";
                return Err(g.error(ConfigErrorKind::Value(reason.into())));
            }
            let value = match setting {
                Setting::PinFile => absolute(g)?,
                _ => g.text.clone(),
            };
            let pkcs11 = table(doc, "pkcs11");
            pkcs11.insert(key.into(), value.into());
            if setting == Setting::PinFile {
                pkcs11.remove("pin_env");
            }
            if self.get(Setting::Key).is_none() {
                let tls = table(doc, "tls");
                if let Some(Value::String(uri)) = tls.get("key") {
                    let stripped = without_query_attributes(uri, drop_from_uri);
                    tls.insert("key".into(), stripped.into());
                }
            }
        }
        if let Some(g) = self.get(Setting::Admin) {
            table(doc, "admin").insert("address".into(), g.text.clone().into());
        }
        Ok(())
    }

    /// Puts an error of the layered document on the flag or variable that set the
    /// offending key. Its position in the layered text means nothing to the user.
    fn relocate(&self, e: ConfigError, file: &Path) -> ConfigError {
        let standalone = file.as_os_str().is_empty();
        let kind = match e.kind {
            ConfigErrorKind::MissingModule { .. } if standalone => {
                return ConfigError::setting(ConfigErrorKind::MissingSetting {
                    setting: Setting::Module,
                    unless: Some("HSMGATE_KEY has module-path"),
                });
            }
            ConfigErrorKind::MissingPin { .. } if standalone => {
                return ConfigError::setting(ConfigErrorKind::MissingSetting {
                    setting: Setting::PinFile,
                    unless: Some("HSMGATE_KEY has pin-source=file:PATH or pin-value"),
                });
            }
            kind => kind,
        };
        let key = kind.key().unwrap_or_default();
        match suspects(key).iter().find_map(|&s| self.get(s)) {
            Some(given) => given.error(kind),
            None => ConfigError {
                file: file.to_path_buf(),
                line: 0,
                col: 0,
                kind,
            },
        }
    }

    /// Locations of the layered document point into text the user never wrote: put
    /// them back into the file (`alone`: the file validated on its own) or on the
    /// variable that gave the key.
    fn relocate_locations(&self, config: &mut Config, alone: Option<&Config>) {
        let layered_key = config.tls.key.location.clone();
        // A key pair given by flags or variables: its errors (certificate, PIN, module,
        // key) name every flag and variable that made it up.
        let given: Vec<&Given> = [
            Setting::Cert,
            Setting::Key,
            Setting::PinFile,
            Setting::Module,
        ]
        .iter()
        .filter_map(|s| self.get(*s))
        .collect();
        let names = |env: bool| -> Vec<&'static str> {
            given
                .iter()
                .filter(|g| matches!(g.origin, Origin::Env(_)) == env)
                .map(|g| g.origin.name())
                .collect()
        };
        let mut from = Vec::new();
        for (env, one, many) in [
            (true, "environment variable", "environment variables"),
            (false, "flag", "flags"),
        ] {
            match names(env).as_slice() {
                [] => {}
                [name] => from.push(format!("{one} {name}")),
                list => from.push(format!("{many} {}", list.join(", "))),
            }
        }
        config.tls.key.location = match (self.get(Setting::Key), alone) {
            (Some(_), _) => Location::whole(from.join(" and ")),
            (None, Some(alone)) => alone.tls.key.location.clone(),
            (None, None) => Location::whole(config.source.clone()),
        };
        config.tls.certificate_location = match (self.get(Setting::Cert), alone) {
            (Some(g), _) => Location::whole(g.origin.to_string()),
            (None, Some(alone)) => alone.tls.certificate_location.clone(),
            (None, None) => Location::whole(config.source.clone()),
        };
        // The key's own warnings (a `pin-value`) are about the one setting that gave it.
        let key_location = match self.get(Setting::Key) {
            Some(g) => Location::whole(g.origin.to_string()),
            None => config.tls.key.location.clone(),
        };
        let source = config.source.clone();
        for w in &mut config.warnings {
            w.location = match w.location == layered_key {
                true => key_location.clone(),
                false => Location::whole(source.clone()),
            };
        }
        config.tls.client_certificate_at = match (self.get(Setting::ClientCa), alone) {
            (Some(g), _) => Some(Location::whole(g.origin.to_string())),
            (None, Some(alone)) => alone.tls.client_certificate_at.clone(),
            (None, None) => None,
        };
        // The module and the PIN: the flag or variable that set them, else where the
        // file sets them, else the key (a URI's attributes).
        if let Some(p) = &mut config.pkcs11 {
            let file = alone.and_then(|f| f.pkcs11.as_ref());
            for (setting, at, file_at) in [
                (
                    Setting::Module,
                    &mut p.module_at,
                    file.map(|f| &f.module_at),
                ),
                (Setting::PinFile, &mut p.pin_at, file.map(|f| &f.pin_at)),
            ] {
                *at = match (self.get(setting), file_at) {
                    (Some(g), _) => Location::whole(g.origin.to_string()),
                    (None, Some(f)) => f.clone(),
                    (None, None) => config.tls.key.location.clone(),
                };
            }
        }
        if let Some(file) = alone {
            for (p, f) in config.tls.pairs.iter_mut().zip(&file.tls.pairs) {
                p.key.location = f.key.location.clone();
                p.certificate_location = f.certificate_location.clone();
            }
            let members = config.hsm.iter_mut().flat_map(|g| &mut g.regions);
            let file_members = file.hsm.iter().flat_map(|g| &g.regions);
            for (r, f) in members.zip(file_members) {
                for (m, f) in r.members.iter_mut().zip(&f.members) {
                    m.location = f.location.clone();
                }
            }
        }
    }
}

/// Every location in `path` made a whole-file one (no line: the laid-over document's
/// lines are not the file's).
fn whole_file_locations(config: &mut Config, path: &Path) {
    let fix = |at: &mut Location| {
        if at.file == path {
            *at = Location::whole(path);
        }
    };
    fix(&mut config.tls.key.location);
    fix(&mut config.tls.certificate_location);
    if let Some(at) = &mut config.tls.client_certificate_at {
        fix(at);
    }
    if let Some(at) = &mut config.tls.session_ticket_keys_at {
        fix(at);
    }
    for p in &mut config.tls.pairs {
        fix(&mut p.key.location);
        fix(&mut p.certificate_location);
    }
    if let Some(p) = &mut config.pkcs11 {
        fix(&mut p.module_at);
        fix(&mut p.pin_at);
    }
    for m in config
        .hsm
        .iter_mut()
        .flat_map(|g| &mut g.regions)
        .flat_map(|r| &mut r.members)
    {
        fix(&mut m.location);
    }
    for w in &mut config.warnings {
        fix(&mut w.location);
    }
}

/// The settings that may have set file key `key` (first the one that names it).
fn suspects(key: &str) -> &'static [Setting] {
    use Setting::*;
    let section = key.split(['.', '[']).next().unwrap_or_default();
    match (section, key) {
        ("listener", _) => &[Listen, Admin],
        ("admin", _) => &[Admin, Listen],
        ("upstream", _) => &[Upstream],
        (_, "tls.certificate") => &[Cert],
        (_, "tls.client_certificate" | "tls.verify_client") => &[ClientCa],
        (_, "pkcs11.pin_file" | "pkcs11.pin_env") => &[PinFile, Key],
        (_, "pkcs11.module") => &[Module, Key],
        ("tls" | "pkcs11" | "hsm", _) => &[Key, PinFile, Module],
        _ => &[],
    }
}

/// The `[name]` table of `doc`, made if missing.
fn table<'a>(doc: &'a mut Table, name: &str) -> &'a mut Table {
    let entry = doc
        .entry(name.to_owned())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    entry.as_table_mut().expect("just made a table")
}

/// A path from a flag or variable, made absolute against the working directory.
fn absolute(g: &Given) -> Result<String, ConfigError> {
    let path = std::path::absolute(&g.text).map_err(|e| {
        g.error(ConfigErrorKind::Value(format!(
            "cannot make the path absolute: {e}"
        )))
    })?;
    Ok(path.to_string_lossy().into_owned())
}

/// `uri` without the query attributes `names` (a `?` left with nothing is dropped).
fn without_query_attributes(uri: &str, names: &[&str]) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|a| !names.contains(&a.split('=').next().unwrap_or_default()))
        .collect();
    match kept.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{}", kept.join("&")),
    }
}

#[cfg(test)]
#[path = "overlay/tests.rs"]
mod tests;
