//! `ProxyError`: start-up failures of the proxy, each naming the file, token or address
//! involved, and [`error_chain`] for logging an error with its sources. Request-time
//! failures become HTTP statuses in [`crate::route`] (pages: [`crate::error_page`]).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] hsmgate_config::ConfigError),
    /// The signer could not start (module, token, PIN, key).
    #[error(transparent)]
    Signer(#[from] hsmgate_signer::SignerError),
    /// A token, key pair or certificate could not be made (demo).
    #[error(transparent)]
    Provision(#[from] hsmgate_signer::provision::ProvisionError),
    /// The certificate chain file could not be read or holds no certificate.
    #[error("certificate chain {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file a TLS directive names (`ssl_client_certificate`, `ssl_stapling_file`)
    /// could not be read or does not hold what it should.
    #[error("{directive} {path}: {reason}")]
    TlsFile {
        /// The directive.
        directive: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate's public key is not the token key's.
    #[error(transparent)]
    KeyMismatch(Box<KeyMismatch>),
    /// A bad `HSMGATE_ADMISSION*` setting (environment or nginx `env` directive).
    #[error("admission settings: {0}")]
    Admission(#[from] hsmgate_config::EnvSettingError),
    /// rustls refused the TLS settings.
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `listen` (TLS or plain HTTP) or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something else failed with an I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A failure tied to a place in the configuration (`file:line`).
    #[error("{source} in {at}")]
    At {
        /// `file:line`.
        at: String,
        /// What failed there.
        #[source]
        source: Box<ProxyError>,
    },
    /// A key names an HA group the configuration does not define.
    #[error("no HA group \"{group}\" for key {key}")]
    NoGroup {
        /// The group's name.
        group: String,
        /// The key's URI.
        key: String,
    },
    /// A session ticket key file that cannot be used.
    #[error("ssl_session_ticket_key {file}: {reason}")]
    TicketKey {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A private key file could not be used.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No PKCS#11 module is known for a token key.
    #[error(
        "no PKCS#11 module for key {0}: add module-path=… to the URI, MODULE_PATH to the pkcs11 section of OPENSSL_CONF, or pass --pkcs11-module / set HSMGATE_PKCS11_MODULE"
    )]
    NoModule(String),
    /// The configuration is consistent but cannot be served as written.
    #[error("{0}")]
    Invalid(String),
    /// The demo could not make its token or certificate.
    #[error("demo: {0}")]
    Demo(String),
}

/// A certificate whose public key is not the token key's.
#[derive(Debug, thiserror::Error)]
#[error(
    "certificate {cert} (subject {subject}) does not match key {key} on token {token}: the certificate's public key is {cert_key}, the token key's is {token_key}"
)]
pub struct KeyMismatch {
    /// The certificate file.
    pub cert: PathBuf,
    /// Its subject.
    pub subject: String,
    /// The key URI (without PIN).
    pub key: String,
    /// The token label.
    pub token: String,
    /// A short description of the certificate's key.
    pub cert_key: String,
    /// A short description of the token's key.
    pub token_key: String,
}

/// An error and its sources, `: `-separated (for log lines).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
