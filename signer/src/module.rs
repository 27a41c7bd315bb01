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
use std::time::Duration;

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
    /// An instance with a state of its own (p11-kit-client gives one, with its own
    /// connection, per C_GetFunctionList): finalised when dropped, whoever else uses the
    /// path. Known when `C_Initialize` succeeded while another instance of the path was
    /// live (a module with one global state would have answered
    /// CKR_CRYPTOKI_ALREADY_INITIALIZED); the first instance of such a path learns it
    /// from the path's record ([`PathInstances::independent`]).
    independent: bool,
}

/// Live instances per module path, and the environment the first was initialised
/// with. A module with one global state (SoftHSM) gives every instance the same state,
/// so C_Finalize waits until the last instance of that path is dropped; an independent
/// instance (every p11-kit-client instance, once a second one was initialised) is
/// finalised when it goes, so that a member re-initialised after its HSM froze or a
/// reload does not keep the old connection (and the HSM's session) open.
static INSTANCES: Mutex<Option<Instances>> = Mutex::new(None);

/// Path → its live instances.
type Instances = HashMap<PathBuf, PathInstances>;

/// The live instances of one module path.
#[derive(Debug)]
struct PathInstances {
    live: usize,
    /// The environment of the first.
    env: BTreeMap<String, String>,
    /// An instance was initialised while another was live: the module gives independent
    /// instances (p11-kit-client), so each is finalised when it goes, the first too
    /// (which could not know it when it was made).
    independent: bool,
}

fn instances() -> std::sync::MutexGuard<'static, Option<Instances>> {
    INSTANCES.lock().unwrap_or_else(|e| e.into_inner())
}

type Key = (PathBuf, BTreeMap<String, String>);

/// Modules loaded by this process. Weak, so a module nobody uses is finalised.
static LOADED: Mutex<Option<HashMap<Key, Weak<Module>>>> = Mutex::new(None);

/// The lock that applies a module's environment: held while its environment is set
/// (for `dlopen` + `C_GetFunctionList`, and `C_Initialize` up to [`ENV_HOLD`]).
static ENVIRONMENT: Mutex<()> = Mutex::new(());

/// How long a module's `C_Initialize` runs with its environment applied (and the lock
/// held): long enough for a module that reads it there (SoftHSM's `SOFTHSM2_CONF`),
/// short, so that one that hangs there (p11-kit-client connecting to a frozen server)
/// keeps no other member from starting. It then goes on without the lock.
const ENV_HOLD: Duration = Duration::from_millis(250);

impl Module {
    /// Load `path` with `env` applied, or return the instance this process already has.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Arc<Module>, SignerError> {
        let key = (path.to_path_buf(), env.clone());
        let shared = |loaded: &mut Option<HashMap<Key, Weak<Module>>>| {
            (loaded.get_or_insert_with(HashMap::new).get(&key)).and_then(Weak::upgrade)
        };
        if let Some(module) = shared(&mut LOADED.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(module);
        }
        let module = Arc::new(Self::init(path, env)?);
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have loaded it meanwhile: one instance is shared.
        if let Some(first) = shared(&mut loaded) {
            return Ok(first);
        }
        (loaded.get_or_insert_with(HashMap::new)).insert(key, Arc::downgrade(&module));
        Ok(module)
    }

    /// Load a new instance of `path`, not shared with anyone: for an HSM member that must
    /// be re-initialised on its own (p11-kit-client gives an independent instance, with
    /// its own connection, on every C_GetFunctionList).
    pub fn load_fresh(
        path: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<Module>, SignerError> {
        Ok(Arc::new(Self::init(path, env)?))
    }

    /// dlopen + C_GetFunctionList + C_Initialize with `env` applied (see [`ENV_HOLD`]).
    fn init(path: &Path, env: &BTreeMap<String, String>) -> Result<Module, SignerError> {
        let (ctx, initialised) = {
            let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
            with_env(env, || {
                let ctx = Pkcs11::new(path).map_err(|source| SignerError::Load {
                    path: path.to_path_buf(),
                    source,
                })?;
                let (tx, rx) = std::sync::mpsc::channel();
                let initialising = ctx.clone();
                let flags = || CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK);
                let spawned = std::thread::Builder::new()
                    .name("hsmgate-c-init".into())
                    .spawn(move || {
                        let _ = tx.send(initialising.initialize(flags()));
                    });
                // Done within the hold, or later without the environment and the lock
                // (here, if no thread could be made).
                let early = match spawned {
                    Ok(_) => rx.recv_timeout(ENV_HOLD).ok(),
                    Err(_) => Some(ctx.initialize(flags())),
                };
                Ok::<_, SignerError>((ctx, early.ok_or(rx)))
            })?
        };
        let initialised = match initialised {
            Ok(done) => done,
            Err(rx) => rx.recv().unwrap_or(Err(CkError::Pkcs11(
                RvError::GeneralError,
                Function::Initialize,
            ))),
        };
        let own_state = match initialised {
            Ok(()) => true,
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                // A module that keeps one global state (SoftHSM does) was initialised
                // earlier in this process: its first configuration stays in effect.
                let first_env = instances()
                    .as_ref()
                    .and_then(|m| m.get(path))
                    .map(|p| p.env.clone());
                if first_env.is_some_and(|first| first != *env) {
                    tracing::warn!(module = %path.display(), "PKCS#11 module already initialised in this process with another environment; the first one stays in effect");
                }
                false
            }
            Err(e) => {
                return Err(SignerError::pkcs11(
                    &path.display().to_string(),
                    Function::Initialize,
                    e,
                ));
            }
        };
        // Registered under the lock: of instances initialised at the same time (members
        // start in parallel), every one but the first to get here sees another live.
        let independent = {
            let mut map = instances();
            let entry = (map.get_or_insert_with(HashMap::new))
                .entry(path.to_path_buf())
                .or_insert_with(|| PathInstances {
                    live: 0,
                    env: env.clone(),
                    independent: false,
                });
            let independent = own_state && entry.live > 0;
            entry.independent |= independent;
            entry.live += 1;
            independent
        };
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
            env: env.clone(),
            independent,
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
    /// The last instance of a module path finalises it, and an independent instance
    /// itself. This may block for as long as the module does, so the last holders are
    /// signer threads, never async workers.
    fn drop(&mut self) {
        let finalise = {
            let mut map = instances();
            let map = map.get_or_insert_with(HashMap::new);
            match map.get_mut(&self.path) {
                Some(p) if p.live > 1 => {
                    p.live -= 1;
                    p.independent
                }
                _ => {
                    map.remove(&self.path);
                    true
                }
            }
        };
        if (finalise || self.independent)
            && let Err(e) = self.ctx.clone().finalize()
        {
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
        // hsmgate loads modules at start-up and on reload while holding ENVIRONMENT; its own
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
