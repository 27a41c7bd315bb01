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
        "token {token}: a private key labelled {label:?} or with id {id} already exists; choose another --label (and --id), or use that key"
    )]
    KeyExists {
        /// The token.
        token: String,
        /// The label asked for.
        label: String,
        /// The id asked for, in hex.
        id: String,
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
