//! The rustls server configuration: the certificate chain from its PEM file, the token
//! key behind it (checked to be the certificate's key), the listener's TLS versions,
//! and ALPN `h2` and `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use hsmgate_config::Listener;
use hsmgate_signer::{ExpectedKey, HsmSigningKey, SignerPool, verify};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{KeyMismatch, ProxyError};

/// Read a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let bad = |reason: String| ProxyError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE block in the file".into()));
    }
    X509Certificate::from_der(&chain[0])
        .map_err(|e| bad(format!("leaf certificate does not parse: {e}")))?;
    Ok(chain)
}

/// The leaf certificate's public key, which every HSM member's key must match.
pub fn expected_key(
    chain: &[CertificateDer<'static>],
    chain_path: &Path,
) -> Result<ExpectedKey, ProxyError> {
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| ProxyError::Certificate {
        path: chain_path.to_path_buf(),
        reason: format!("leaf certificate does not parse: {e}"),
    })?;
    Ok(ExpectedKey {
        spki: leaf.public_key().raw.to_vec(),
        from: format!(
            "certificate {} (subject {})",
            chain_path.display(),
            leaf.subject()
        ),
    })
}

/// The certificate chain with the token key, after checking that they belong together.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    chain_path: &Path,
    pool: &SignerPool,
    key_uri: &str,
) -> Result<Arc<CertifiedKey>, ProxyError> {
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| ProxyError::Certificate {
        path: chain_path.to_path_buf(),
        reason: format!("leaf certificate does not parse: {e}"),
    })?;
    let cert_spki = leaf.public_key().raw;
    if !verify::same_public_key(cert_spki, pool.spki()) {
        return Err(ProxyError::KeyMismatch(Box::new(KeyMismatch {
            cert: chain_path.to_path_buf(),
            subject: leaf.subject().to_string(),
            key: key_uri.to_string(),
            token: pool.token_label().to_string(),
            cert_key: verify::describe_key(cert_spki),
            token_key: verify::describe_key(pool.spki()),
        })));
    }
    Ok(Arc::new(CertifiedKey::new(
        chain,
        HsmSigningKey::new(pool.clone()),
    )))
}

/// One certified key for every connection (SNI-based choice comes with virtual hosts).
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The rustls configuration of one listener.
pub fn server_config(
    listener: &Listener,
    key: &Arc<CertifiedKey>,
) -> Result<Arc<ServerConfig>, ProxyError> {
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if listener.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if listener.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCert(Arc::clone(key))));
    config.alpn_protocols = if listener.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
