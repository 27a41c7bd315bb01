//! A private key from a PEM file (`ssl_certificate_key /path.key`), signed in software by
//! rustls' aws-lc-rs provider on the connection's thread, with each signature's CPU time
//! recorded in `hsmgate_tls_file_key_sign_cpu_seconds`: the software counterpart of the
//! signer's `hsmgate_signer_call_cpu_seconds`. With both, a token key's handshake and a
//! file key's can be compared signature for signature, each as it cost in its own run
//! (`benches/compare/compare.sh` decomposes the offload's own cost that way).

use std::sync::Arc;

use metrics::Histogram;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};

/// `chain` with the software key `der`, checked to belong together (rustls'
/// [`CertifiedKey::from_der`], with the key's signatures timed).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    der: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let inner = provider.key_provider.load_private_key(der)?;
    let key = CertifiedKey::new(
        chain,
        Arc::new(TimedKey {
            inner,
            cpu: metrics::histogram!(crate::metrics::FILE_KEY_SIGN_CPU),
        }),
    );
    match key.keys_match() {
        // As `from_der`: a key that cannot tell its public half is not refused.
        Ok(()) | Err(Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(e) => Err(e),
    }
}

/// A software key whose signers time their signatures.
#[derive(Debug)]
struct TimedKey {
    inner: Arc<dyn SigningKey>,
    cpu: Histogram,
}

impl SigningKey for TimedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let inner = self.inner.choose_scheme(offered)?;
        Some(Box::new(TimedSigner {
            inner,
            cpu: self.cpu.clone(),
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.inner.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
}

#[derive(Debug)]
struct TimedSigner {
    inner: Box<dyn Signer>,
    cpu: Histogram,
}

impl Signer for TimedSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let before = hsmgate_signer::thread_cpu_time();
        let signature = self.inner.sign(message);
        self.cpu.record(
            hsmgate_signer::thread_cpu_time()
                .saturating_sub(before)
                .as_secs_f64(),
        );
        signature
    }

    fn scheme(&self) -> SignatureScheme {
        self.inner.scheme()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &rcgen::KeyPair) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(key)
            .expect("self-signed");
        let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        (vec![cert.der().clone()], der)
    }

    #[test]
    fn signs_as_the_software_key_and_refuses_a_key_of_another_certificate() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let (chain, der) = pair(&key);
        let certified = certified_key(chain.clone(), der, &provider).expect("matching pair");
        let signer = certified
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("a P-256 scheme");
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
        let signature = signer.sign(b"message").expect("signs");
        assert!(hsmgate_signer::verify(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            SignatureScheme::ECDSA_NISTP256_SHA256,
            b"message",
            &signature
        ));
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let (_, other_der) = pair(&other);
        assert!(matches!(
            certified_key(chain, other_der, &provider),
            Err(Error::InconsistentKeys(
                rustls::InconsistentKeys::KeyMismatch
            ))
        ));
    }
}
