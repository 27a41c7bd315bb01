//! Loading a PKCS#11 module: once per (path, environment) per process, initialised with
//! OS locking, and shared as an `Arc` by everything that signs with it.
//!
//! Some modules read their target from the environment: SoftHSM reads `SOFTHSM2_CONF`
//! at `C_Initialize`, p11-kit-client reads `P11_KIT_SERVER_ADDRESS` at
//! `C_GetFunctionList` and gives an independent instance on every call. So a module's
//! configured environment is applied while it is loaded and initialised, under one
//! process-wide lock, and restored afterwards. This is the only place in hsmgate that
//! writes the environment.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::{Function, SignerError};

/// A loaded and initialised PKCS#11 module instance.
#[derive(Debug)]
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    /// The environment it was loaded with.
    env: BTreeMap<String, String>,
}

/// Live instances per module path, and the environment the first was initialised
/// with. A module with one global state (SoftHSM) gives every instance the same state,
/// so C_Finalize waits until the last instance of that path is dropped; a module with
/// independent instances (p11-kit-client) just keeps a dead member's instance until
/// then, which costs nothing (its connection is gone).
static INSTANCES: Mutex<Option<Instances>> = Mutex::new(None);

/// Path → (live instances, environment of the first).
type Instances = HashMap<PathBuf, (usize, BTreeMap<String, String>)>;

fn instances() -> std::sync::MutexGuard<'static, Option<Instances>> {
    INSTANCES.lock().unwrap_or_else(|e| e.into_inner())
}

type Key = (PathBuf, BTreeMap<String, String>);

/// Modules loaded by this process. Weak, so a module nobody uses is finalised.
static LOADED: Mutex<Option<HashMap<Key, Weak<Module>>>> = Mutex::new(None);

impl Module {
    /// Load `path` with `env` applied, or return the instance this process already has.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Arc<Module>, SignerError> {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        let map = loaded.get_or_insert_with(HashMap::new);
        let key = (path.to_path_buf(), env.clone());
        if let Some(module) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(module);
        }
        // The lock on LOADED is held: no other thread of ours loads a module now.
        let module = Arc::new(Self::init(path, env)?);
        map.insert(key, Arc::downgrade(&module));
        Ok(module)
    }

    /// Load a new instance of `path`, not shared with anyone: for an HSM member that must
    /// be re-initialised on its own (p11-kit-client gives an independent instance, with
    /// its own connection, on every C_GetFunctionList).
    pub fn load_fresh(
        path: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<Module>, SignerError> {
        let _guard = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::new(Self::init(path, env)?))
    }

    /// dlopen + C_GetFunctionList + C_Initialize with `env` applied. Caller holds LOADED.
    fn init(path: &Path, env: &BTreeMap<String, String>) -> Result<Module, SignerError> {
        let ctx = with_env(env, || {
            let ctx = Pkcs11::new(path).map_err(|source| SignerError::Load {
                path: path.to_path_buf(),
                source,
            })?;
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) => Ok(ctx),
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    // A module that keeps one global state (SoftHSM does) was initialised
                    // earlier in this process: its first configuration stays in effect.
                    let first_env = instances()
                        .as_ref()
                        .and_then(|m| m.get(path))
                        .map(|(_, e)| e.clone());
                    if first_env.is_some_and(|first| first != *env) {
                        tracing::warn!(module = %path.display(), "PKCS#11 module already initialised in this process with another environment; the first one stays in effect");
                    }
                    Ok(ctx)
                }
                Err(e) => Err(SignerError::pkcs11(
                    &path.display().to_string(),
                    Function::Initialize,
                    e,
                )),
            }
        })?;
        instances()
            .get_or_insert_with(HashMap::new)
            .entry(path.to_path_buf())
            .or_insert_with(|| (0, env.clone()))
            .0 += 1;
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
            env: env.clone(),
        })
    }

    /// The cryptoki context.
    pub fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The environment it was loaded with.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }
}

impl Drop for Module {
    /// The last instance of a module path finalises it. This may block for as long as
    /// the module does, so the last holders are signer threads, never async workers.
    fn drop(&mut self) {
        let last = {
            let mut map = instances();
            let map = map.get_or_insert_with(HashMap::new);
            match map.get_mut(&self.path) {
                Some((n, _)) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    map.remove(&self.path);
                    true
                }
            }
        };
        if last && let Err(e) = self.ctx.clone().finalize() {
            tracing::debug!(module = %self.path.display(), error = %e, "C_Finalize failed");
        }
    }
}

/// Run `f` with `env` set, then restore the previous values.
fn with_env<T>(env: &BTreeMap<String, String>, f: impl FnOnce() -> T) -> T {
    if env.is_empty() {
        return f();
    }
    let saved: Vec<(String, Option<OsString>)> = env
        .keys()
        .map(|k| (k.clone(), std::env::var_os(k)))
        .collect();
    for (k, v) in env {
        // SAFETY: setenv races only with concurrent getenv/setenv from other threads.
        // hsmgate loads modules at start-up and on reload while holding LOADED; its own
        // code reads the environment only while parsing the configuration, before any
        // module is loaded, and tokio/rustls do not read it. The module loaded here is
        // the reader we are setting it for.
        #[allow(clippy::disallowed_methods)]
        unsafe {
            std::env::set_var(k, v)
        };
    }
    let out = f();
    for (k, v) in saved {
        // SAFETY: as above.
        #[allow(clippy::disallowed_methods)]
        unsafe {
            match v {
                Some(v) => std::env::set_var(&k, v),
                None => std::env::remove_var(&k),
            }
        }
    }
    out
}
