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

use crate::error::SignerError;

/// A loaded and initialised PKCS#11 module instance.
#[derive(Debug)]
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    /// Whether our C_Initialize succeeded and no C_Finalize was made since: only then
    /// does dropping the instance finalise it (a module with one global state, like
    /// SoftHSM, must not be finalised under another instance's feet).
    owns_init: std::sync::atomic::AtomicBool,
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
        let mut owns = true;
        let ctx = with_env(env, || {
            let ctx = Pkcs11::new(path).map_err(|source| SignerError::Load {
                path: path.to_path_buf(),
                source,
            })?;
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) => Ok(ctx),
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    owns = false;
                    // A module that keeps one global state (SoftHSM does) was initialised
                    // earlier by another user in this process, maybe with another environment.
                    tracing::warn!(module = %path.display(), "PKCS#11 module was already initialised in this process; its first configuration stays in effect");
                    Ok(ctx)
                }
                Err(e) => Err(SignerError::pkcs11(
                    &path.display().to_string(),
                    "C_Initialize",
                    e,
                )),
            }
        })?;
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
            owns_init: std::sync::atomic::AtomicBool::new(owns),
        })
    }

    /// C_Finalize this instance now (its sessions become invalid). May block for as
    /// long as the module does: call it from a thread that may be abandoned.
    pub fn finalize(&self) -> Result<(), SignerError> {
        use std::sync::atomic::Ordering;
        if self.owns_init.swap(false, Ordering::AcqRel) {
            self.ctx.clone().finalize().map_err(|e| {
                SignerError::pkcs11(&self.path.display().to_string(), "C_Finalize", e)
            })?;
        }
        Ok(())
    }

    /// The cryptoki context.
    pub fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.finalize();
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
