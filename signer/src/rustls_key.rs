//! The pool as a rustls private key: `SigningKey` chooses a scheme the token supports,
//! `Signer::sign` sends the operation to the pool and waits with the pool's deadline.

use std::sync::Arc;

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::error::SignerError;
use crate::pool::SignerPool;
use crate::token::KeyKind;

/// A rustls signing key whose private half stays in the token.
#[derive(Debug, Clone)]
pub struct HsmSigningKey {
    pool: SignerPool,
}

impl HsmSigningKey {
    /// Wrap a started pool.
    pub fn new(pool: SignerPool) -> Arc<HsmSigningKey> {
        Arc::new(HsmSigningKey { pool })
    }
}

impl SigningKey for HsmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        self.pool
            .schemes()
            .iter()
            .find(|s| offered.contains(s))
            .map(|&scheme| {
                Box::new(HsmSigner {
                    pool: self.pool.clone(),
                    scheme,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.pool.spki()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.pool.key_kind() {
            KeyKind::Rsa(_) => SignatureAlgorithm::RSA,
            KeyKind::EcP256 | KeyKind::EcP384 => SignatureAlgorithm::ECDSA,
        }
    }
}

/// One handshake's signer, bound to the chosen scheme.
#[derive(Debug)]
struct HsmSigner {
    pool: SignerPool,
    scheme: SignatureScheme,
}

impl Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The handshake's admission permit, released once the signature is made.
        let permit = crate::admission::claim(self.pool.limiter()).map_err(|reason| {
            let e = SignerError::Shed {
                group: self.pool.group_name().to_string(),
                reason,
            };
            tracing::debug!(error = %e, "handshake aborted");
            rustls::Error::Other(rustls::OtherError(Arc::new(e)))
        })?;
        let signed = self.pool.sign(self.scheme, message).map_err(|e| {
            tracing::warn!(error = %e, "handshake aborted: private-key operation failed");
            rustls::Error::Other(rustls::OtherError(Arc::new(e)))
        });
        drop(permit);
        signed
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
