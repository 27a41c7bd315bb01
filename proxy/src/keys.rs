//! Certificate/key pairs → rustls [`CertifiedKey`]s. PEM file keys are signed in
//! software; token keys (`engine:pkcs11:…`, `pkcs11:…`) get one [`SignerPool`] per
//! distinct (module, token, key, PIN), reused across reloads while unchanged.
//!
//! For a token key, the PKCS#11 module is, in order: the URI's `module-path`; the
//! `MODULE_PATH` of the OpenSSL configuration nginx's pkcs11 engine reads
//! (`OPENSSL_CONF` from `env` or the environment, else `/etc/ssl/openssl.cnf`);
//! `--pkcs11-module` / `HSMGATE_PKCS11_MODULE`. The PIN: the URI's `pin-value` or
//! `pin-source` (`file:PATH` or a path), else the engine section's `PIN`, else the
//! environment variable `HSMGATE_PIN`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsmgate_config::defaults;
use hsmgate_config::nginx::{CertPair, KeySource};
use hsmgate_config::{PinSource, Pkcs11Uri, Secret};
use hsmgate_signer::{GroupSettings, PoolSettings, SignerPool};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ProxyError;
use crate::tls::{self, KeyEntry};

/// The environment variable holding the PIN when the URI names none.
pub(crate) const PIN_ENV: &str = "HSMGATE_PIN";
/// The environment variable naming the default PKCS#11 module.
pub(crate) const MODULE_ENV: &str = "HSMGATE_PKCS11_MODULE";

/// Where token keys find their module when neither the URI nor OpenSSL's
/// configuration names one.
#[derive(Debug, Clone, Default)]
pub struct KeyDefaults {
    /// `--pkcs11-module` (else `HSMGATE_PKCS11_MODULE`).
    pub module: Option<PathBuf>,
}

/// Signer pools by identity; a new generation takes over the old one's pools for the
/// keys it still uses.
#[derive(Debug, Clone, Default)]
pub struct PoolCache {
    pools: HashMap<String, SignerPool>,
}

impl PoolCache {
    /// Every pool (for readiness).
    pub fn pools(&self) -> impl Iterator<Item = &SignerPool> {
        self.pools.values()
    }
}

/// Opens the keys of one configuration.
pub(crate) struct KeyOpener<'a> {
    pub(crate) defaults: &'a KeyDefaults,
    pub(crate) env: &'a BTreeMap<String, String>,
    /// HA groups of HSMs a key may name (`x-hsmgate-group`).
    pub(crate) groups: &'a BTreeMap<String, hsmgate_config::HsmGroup>,
    /// Admission settings of the configuration, if it has them.
    pub(crate) admission: Option<&'a hsmgate_config::Admission>,
    pub(crate) previous: &'a PoolCache,
    pub(crate) next: PoolCache,
}

impl KeyOpener<'_> {
    /// The certified key of one `ssl_certificate`/`ssl_certificate_key` pair; errors
    /// name where the key is written.
    pub(crate) fn pair(&mut self, pair: &CertPair) -> Result<KeyEntry, ProxyError> {
        self.open(pair).map_err(|e| match e {
            located @ ProxyError::At { .. } => located,
            e => ProxyError::At {
                at: crate::site::at(&pair.location),
                source: Box::new(e),
            },
        })
    }

    fn open(&mut self, pair: &CertPair) -> Result<KeyEntry, ProxyError> {
        // A certificate that cannot be read is where the certificate is named.
        let chain = tls::load_chain(&pair.cert).map_err(|e| ProxyError::At {
            at: crate::site::at(&pair.cert_location),
            source: Box::new(e),
        })?;
        match &pair.key {
            KeySource::File(path) => {
                let der = PrivateKeyDer::from_pem_file(path).map_err(|e| ProxyError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let provider = rustls::crypto::aws_lc_rs::default_provider();
                let key = crate::file_key::certified_key(chain, der, &provider).map_err(|e| {
                    ProxyError::Key {
                        path: path.clone(),
                        reason: format!("does not fit certificate {}: {e}", pair.cert.display()),
                    }
                })?;
                Ok(KeyEntry {
                    certified: Arc::new(key),
                    pool: None,
                    staple: None,
                })
            }
            KeySource::Pkcs11(uri) if uri.group.is_some() => {
                let expected = tls::expected_key(&chain, &pair.cert)?;
                let name = uri.group.as_deref().unwrap_or_default();
                let group = self.groups.get(name).ok_or_else(|| ProxyError::NoGroup {
                    group: name.to_owned(),
                    key: uri.to_string(),
                })?;
                let settings =
                    GroupSettings::from_group(group, uri, self.admission()?, Some(expected))?;
                self.token_entry(settings, chain, &pair.cert, &uri.to_string())
            }
            KeySource::Token(key) => {
                let expected = tls::expected_key(&chain, &pair.cert)?;
                let p = &key.pkcs11;
                let settings = PoolSettings {
                    module: p.module.clone(),
                    env: p.env.clone(),
                    uri: key.uri.clone(),
                    pin: hsmgate_signer::read_pin(&p.pin).map_err(|e| ProxyError::At {
                        at: crate::site::at(&p.pin_at),
                        source: Box::new(e.into()),
                    })?,
                    sessions: p.sessions,
                    queue_depth: p.queue_depth,
                    sign_timeout: p.sign_timeout,
                    batch_max: defaults::BATCH_MAX,
                    capacity: p.capacity,
                    admission: self.admission()?,
                };
                let settings = settings.into_group(Some(expected));
                let entry = self.token_entry(settings, chain, &pair.cert, &key.uri.to_string());
                // A module that cannot be loaded is where the module is named.
                entry.map_err(|e| match e {
                    e @ ProxyError::Signer(hsmgate_signer::SignerError::Load { .. }) => {
                        ProxyError::At {
                            at: crate::site::at(&p.module_at),
                            source: Box::new(e),
                        }
                    }
                    e => e,
                })
            }
            KeySource::Pkcs11(uri) => {
                let expected = tls::expected_key(&chain, &pair.cert)?;
                let settings = self.pool_settings(uri)?.into_group(Some(expected));
                self.token_entry(settings, chain, &pair.cert, &uri.to_string())
            }
        }
    }

    /// A token key's certified key through the signer pool of `settings`: the pool open
    /// for the same settings and PINs (the previous generation's on reload, or this one's
    /// for another certificate of the key), else a new one.
    fn token_entry(
        &mut self,
        settings: GroupSettings,
        chain: Vec<CertificateDer<'static>>,
        cert: &Path,
        key: &str,
    ) -> Result<KeyEntry, ProxyError> {
        let id = settings.identity();
        let pool = match self.previous.pools.get(&id).or(self.next.pools.get(&id)) {
            Some(p) => {
                // Kept across a reload: the new configuration's admission settings, and
                // members refused before are tried again (not for a PIN known wrong).
                p.limiter().update(settings.admission);
                p.retry_refused();
                p.clone()
            }
            None => SignerPool::start_group(settings)?,
        };
        self.next.pools.insert(id, pool.clone());
        Ok(KeyEntry {
            certified: tls::certified_key(chain, cert, &pool, key)?,
            pool: Some(pool),
            staple: None,
        })
    }

    /// The configuration's admission settings, else the defaults changed by
    /// `HSMGATE_ADMISSION*` variables.
    fn admission(&self) -> Result<hsmgate_config::Admission, ProxyError> {
        match self.admission {
            Some(a) => Ok(*a),
            None => admission_settings(self.env),
        }
    }

    fn pool_settings(&self, uri: &Pkcs11Uri) -> Result<PoolSettings, ProxyError> {
        let engine = openssl_engine_section(self.env);
        let module = uri
            .module_path
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| engine.as_ref().and_then(|e| e.module.clone()))
            .or_else(|| self.defaults.module.clone())
            .or_else(|| std::env::var_os(MODULE_ENV).map(PathBuf::from))
            .ok_or_else(|| ProxyError::NoModule(uri.to_string()))?;
        let source = if let Some(v) = &uri.pin_value {
            PinSource::Value(v.clone())
        } else if let Some(s) = &uri.pin_source {
            PinSource::File(PathBuf::from(s.strip_prefix("file:").unwrap_or(s)))
        } else if let Some(pin) = engine.and_then(|e| e.pin) {
            PinSource::Value(pin)
        } else if let Some(pin) = self.env.get(PIN_ENV) {
            // nginx's `env HSMGATE_PIN=…;`, which sets the variable for the process.
            PinSource::Value(Secret::new(pin.clone()))
        } else {
            PinSource::Env(PIN_ENV.into())
        };
        let pin = hsmgate_signer::read_pin(&source)?;
        Ok(PoolSettings {
            module,
            env: self.env.clone(),
            uri: uri.clone(),
            pin,
            sessions: defaults::SESSIONS,
            queue_depth: defaults::QUEUE_DEPTH,
            sign_timeout: defaults::SIGN_TIMEOUT,
            batch_max: defaults::BATCH_MAX,
            capacity: None,
            admission: self.admission()?,
        })
    }
}

/// Admission settings for nginx configurations (which have no `[admission]` section):
/// the defaults, changed by `HSMGATE_ADMISSION*` from nginx's `env NAME=VALUE;`
/// directives or else the process environment.
pub(crate) fn admission_settings(
    env: &BTreeMap<String, String>,
) -> Result<hsmgate_config::Admission, ProxyError> {
    Ok(hsmgate_config::Admission::from_vars(|k| {
        env.get(k).cloned().or_else(|| std::env::var(k).ok())
    })?)
}

/// What libp11's engine section of an OpenSSL configuration says.
#[derive(Debug, Default)]
struct EngineSection {
    module: Option<PathBuf>,
    pin: Option<Secret>,
}

fn openssl_engine_section(env: &BTreeMap<String, String>) -> Option<EngineSection> {
    let path = env
        .get("OPENSSL_CONF")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("OPENSSL_CONF").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/openssl.cnf"));
    let text = std::fs::read_to_string(&path).ok()?;
    parse_engine_section(&text, &path)
}

/// The first section with a `MODULE_PATH` key (libp11's engine section).
fn parse_engine_section(text: &str, path: &Path) -> Option<EngineSection> {
    let mut section = EngineSection::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            if section.module.is_some() {
                break;
            }
            section.pin = None;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_uppercase().as_str() {
            "MODULE_PATH" => {
                section.module = Some(PathBuf::from(v));
            }
            "PIN" => section.pin = Some(Secret::new(v.to_owned())),
            _ => {}
        }
    }
    tracing::debug!(file = %path.display(), found = section.module.is_some(), "OpenSSL engine section");
    section.module.is_some().then_some(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_section_module_and_pin() {
        let text = "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
                    [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
                    MODULE_PATH = /usr/lib/softhsm/libsofthsm2.so # the module\nPIN = \"1234\"\ninit = 0\n[other]\nPIN = 9\n";
        let s = parse_engine_section(text, Path::new("x")).expect("section");
        assert_eq!(
            s.module.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            s.pin.map(|p| p.expose().to_owned()).as_deref(),
            Some("1234")
        );
        assert!(parse_engine_section("[a]\nx=1\n", Path::new("x")).is_none());
    }
}
