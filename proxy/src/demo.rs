//! `hsmgate demo`: a fresh SoftHSM token in a temporary directory (its own
//! `SOFTHSM2_CONF`), a key pair generated on it (private half sensitive and
//! non-extractable), a self-signed certificate whose signature the token makes, the
//! built-in upstream, and the proxy in front of it, configured through an ordinary
//! `hsmgate.toml` written next to the token.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hsmgate_config::{Pkcs11Uri, Secret};
use hsmgate_signer::{KeyKind, Module, Token, provision};

use crate::error::ProxyError;

/// Where Debian and other distributions put SoftHSM's module.
const SOFTHSM_PATHS: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

const TOKEN_LABEL: &str = "hsmgate-demo";
const KEY_LABEL: &str = "tls-key";

/// The demo's token, certificate and configuration, in a directory removed on drop.
#[derive(Debug)]
pub struct Demo {
    dir: tempfile::TempDir,
    /// The configuration file written for the proxy.
    pub config: PathBuf,
    /// The self-signed certificate (to give curl as `--cacert`).
    pub certificate: PathBuf,
    _module: std::sync::Arc<Module>,
}

impl Demo {
    /// The demo's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Find SoftHSM's PKCS#11 module.
pub fn find_softhsm() -> Result<PathBuf, ProxyError> {
    SOFTHSM_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            ProxyError::Demo(format!(
                "SoftHSM's module is not installed (looked in {}); on Debian: apt-get install softhsm2",
                SOFTHSM_PATHS.join(", ")
            ))
        })
}

/// Make the token, key, certificate and configuration. `upstream` is where the proxy forwards to.
pub fn prepare(
    listen: SocketAddr,
    upstream: SocketAddr,
    kind: KeyKind,
    module_path: Option<PathBuf>,
    admin: Option<SocketAddr>,
) -> Result<Demo, ProxyError> {
    let module_path = match module_path {
        Some(p) => p,
        None => find_softhsm()?,
    };
    let dir = tempfile::Builder::new()
        .prefix("hsmgate-demo-")
        .tempdir()
        .map_err(|source| io("create the demo directory", source))?;
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("tokens"))
        .map_err(|source| io("create the token directory", source))?;
    let softhsm_conf = root.join("softhsm2.conf");
    write(
        &softhsm_conf,
        &format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            root.join("tokens").display()
        ),
    )?;
    let env = BTreeMap::from([(
        "SOFTHSM2_CONF".to_string(),
        softhsm_conf.display().to_string(),
    )]);

    let pin = Secret::new(random_hex(8));
    let so_pin = Secret::new(random_hex(8));
    let pin_file = root.join("pin");
    write_private(&pin_file, pin.expose())?;

    let module = Module::load(&module_path, &env)?;
    provision::init_token(&module, TOKEN_LABEL, &so_pin, &pin)?;
    let uri: Pkcs11Uri = format!("pkcs11:token={TOKEN_LABEL};object={KEY_LABEL};type=private")
        .parse()
        .map_err(|e| ProxyError::Demo(format!("demo key URI: {e}")))?;
    let token = Token::find(&module, &uri)?;
    provision::generate_key_pair(&token, &pin, kind, KEY_LABEL, &[1])?;

    // Sign the certificate with the token key through the same pool the proxy uses.
    let pool = provision::signing_pool(&module_path, &env, uri, pin)?;
    let cert_pem = provision::self_signed(&pool, &certificate_params()?)?;
    drop(pool);
    let certificate = root.join("cert.pem");
    write(&certificate, &cert_pem)?;

    let config = root.join("hsmgate.toml");
    write(
        &config,
        &format!(
            r#"# Written by `hsmgate demo`.
[[listener]]
address = {listen}

[tls]
certificate = "cert.pem"
key = {key}

[pkcs11]
module = {module}
sessions = 4
env = {{ SOFTHSM2_CONF = {conf} }}

[upstream]
address = {upstream}
{admin}"#,
            listen = quote(&listen.to_string()),
            key = quote(&format!(
                "pkcs11:token={TOKEN_LABEL};object={KEY_LABEL};type=private?pin-source=file:{}",
                pin_file.display()
            )),
            module = quote(&module_path.display().to_string()),
            conf = quote(&softhsm_conf.display().to_string()),
            upstream = quote(&upstream.to_string()),
            admin = admin.map_or_else(String::new, |a| format!(
                "\n[admin]\naddress = {}\n",
                quote(&a.to_string())
            )),
        ),
    )?;
    Ok(Demo {
        dir,
        config,
        certificate,
        _module: module,
    })
}

/// A curl command line that works against `listen` with the demo certificate.
pub fn curl_line(listen: SocketAddr, certificate: &Path) -> String {
    let host = match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    };
    format!("curl --cacert {} https://{host}/", certificate.display())
}

/// One line per admin endpoint: `healthz: http://ADDR/healthz`, then readyz, metrics,
/// status.
pub fn admin_lines(admin: SocketAddr) -> Vec<String> {
    let host = match admin {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    };
    ["healthz", "readyz", "metrics", "status"]
        .iter()
        .map(|p| format!("{p}: http://{host}/{p}"))
        .collect()
}

/// The demo certificate: `localhost`, 127.0.0.1 and ::1.
fn certificate_params() -> Result<rcgen::CertificateParams, ProxyError> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .map_err(|e| ProxyError::Demo(e.to_string()))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv6Addr::LOCALHOST.into(),
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hsmgate demo");
    Ok(params)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("the system RNG works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn io(what: &str, source: std::io::Error) -> ProxyError {
    ProxyError::Io {
        what: what.to_string(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), ProxyError> {
    std::fs::write(path, text).map_err(|source| io(&format!("write {}", path.display()), source))
}

fn write_private(path: &Path, text: &str) -> Result<(), ProxyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io(&format!("create {}", path.display()), source))?;
    f.write_all(text.as_bytes())
        .map_err(|source| io(&format!("write {}", path.display()), source))
}
