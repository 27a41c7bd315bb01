//! Shared fixture of the criterion benches: a private SoftHSM token made in process.
//!
//! The token lives in a temporary directory with its own `softhsm2.conf`, passed to the
//! module as its `env` when it is loaded (never through `set_var`). It holds an RSA-2048
//! key (`object=rsa`, id 01) and an ECDSA P-256 key (`object=ec`, id 02), both generated
//! on the token. A PKCS#11 module is initialised once per process, so a bench binary makes
//! one fixture and everything in it shares that token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hsmgate_config::{Pkcs11Uri, Secret};
use hsmgate_signer::{KeyKind, Module, PoolSettings, SignerPool, Token, provision};

/// Label of the bench token.
pub(crate) const TOKEN: &str = "bench";

/// The token and the loaded module; the directory is removed on drop.
pub(crate) struct SoftHsm {
    _dir: tempfile::TempDir,
    /// The module path.
    pub(crate) module_path: PathBuf,
    /// `SOFTHSM2_CONF` for the module.
    pub(crate) env: BTreeMap<String, String>,
    /// The user PIN.
    pub(crate) pin: Secret,
    /// The loaded and initialised module (shared with every pool of this process).
    #[allow(
        dead_code,
        reason = "read by the sign bench only; holding it keeps the module loaded"
    )]
    pub(crate) module: Arc<Module>,
}

/// Path of SoftHSM's PKCS#11 module: `SOFTHSM2_MODULE`, else the Debian locations.
fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SOFTHSM2_MODULE") {
        return PathBuf::from(p);
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM is installed (apt-get install softhsm2), or set SOFTHSM2_MODULE")
}

impl SoftHsm {
    /// Makes the token and its two key pairs.
    pub(crate) fn new() -> SoftHsm {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("tokens dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let env = BTreeMap::from([("SOFTHSM2_CONF".to_string(), conf.display().to_string())]);
        let module_path = module_path();
        let module = Module::load(&module_path, &env).expect("load SoftHSM");
        let pin = Secret::new("bench-pin");
        provision::init_token(&module, TOKEN, &Secret::new("bench-so-pin"), &pin)
            .expect("init token");
        let token = Token::find(&module, &uri("object=rsa")).expect("token");
        provision::generate_key_pair(&token, &pin, KeyKind::Rsa(2048), "rsa", &[1])
            .expect("RSA key pair");
        provision::generate_key_pair(&token, &pin, KeyKind::EcP256, "ec", &[2])
            .expect("EC key pair");
        SoftHsm {
            _dir: dir,
            module_path,
            env,
            pin,
            module,
        }
    }

    /// A signer pool over the key `object` (a label) with `sessions` threads, default
    /// settings (a key the token signs fast, P-256, signs on the caller's thread).
    pub(crate) fn pool(&self, object: &str, sessions: usize) -> SignerPool {
        self.pool_with(object, sessions, hsmgate_config::Admission::default())
    }

    /// The same with `admission`'s settings (`inline_signing`, `signer_nice`).
    pub(crate) fn pool_with(
        &self,
        object: &str,
        sessions: usize,
        admission: hsmgate_config::Admission,
    ) -> SignerPool {
        SignerPool::start(&PoolSettings {
            module: self.module_path.clone(),
            env: self.env.clone(),
            uri: uri(&format!("object={object}")),
            pin: self.pin.clone(),
            sessions,
            queue_depth: 1024,
            sign_timeout: Duration::from_secs(10),
            batch_max: hsmgate_config::defaults::BATCH_MAX,
            capacity: None,
            admission,
        })
        .expect("signer pool")
    }
}

/// The URI of an object on the bench token.
pub(crate) fn uri(object: &str) -> Pkcs11Uri {
    format!("pkcs11:token={TOKEN};{object};type=private")
        .parse()
        .expect("pkcs11 uri")
}
