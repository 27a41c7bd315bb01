//! `ProvisionError`: why a key pair, a certificate or a CSR could not be made.

use crate::error::SignerError;

/// An error while provisioning a token: the PKCS#11 failure itself (function and CKR
/// code), or what is wrong with the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A PKCS#11 call failed, or the token key could not sign.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The token already holds a private key with this label or id.
    #[error(
        "token {token}: a private key with {what} already exists; choose another {flag}, or use that key"
    )]
    KeyExists {
        /// The token.
        token: String,
        /// What is taken: `label "tls"` or `id 01`.
        what: String,
        /// The flag to change: `--label` or `--id`.
        flag: &'static str,
    },
    /// rcgen could not build the certificate or CSR from the parameters.
    #[error("cannot build the {what}: {source}")]
    Build {
        /// `certificate` or `certificate signing request`.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
}
