//! The rustls server configuration: the certificate chain from its PEM file, the token
//! key behind it (checked to be the certificate's key), the listener's TLS versions,
//! and ALPN `h2` and `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use hsmgate_config::Listener;
use hsmgate_signer::{HsmSigningKey, SignerPool};
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
    if !same_public_key(cert_spki, pool.spki()) {
        return Err(ProxyError::KeyMismatch(Box::new(KeyMismatch {
            cert: chain_path.to_path_buf(),
            subject: leaf.subject().to_string(),
            key: key_uri.to_string(),
            token: pool.token_label().to_string(),
            cert_key: describe_key(cert_spki),
            token_key: describe_key(pool.spki()),
        })));
    }
    Ok(Arc::new(CertifiedKey::new(
        chain,
        HsmSigningKey::new(pool.clone()),
    )))
}

/// Compare two SubjectPublicKeyInfos by algorithm, parameters and key bits, so that
/// equivalent encodings (e.g. RSA parameters NULL vs absent) compare equal.
fn same_public_key(a: &[u8], b: &[u8]) -> bool {
    use x509_parser::x509::SubjectPublicKeyInfo;
    match (
        SubjectPublicKeyInfo::from_der(a),
        SubjectPublicKeyInfo::from_der(b),
    ) {
        (Ok((_, a)), Ok((_, b))) => {
            let params = |s: &SubjectPublicKeyInfo<'_>| {
                s.algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
            };
            a.algorithm.algorithm == b.algorithm.algorithm
                && params(&a) == params(&b)
                && a.subject_public_key.data == b.subject_public_key.data
        }
        _ => false,
    }
}

/// "RSA-2048 (modulus 00c3a1…)" or "EC P-256 (point 04ab12…)", for mismatch errors.
fn describe_key(spki: &[u8]) -> String {
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;
    let Ok((_, parsed)) = SubjectPublicKeyInfo::from_der(spki) else {
        return "unparsable".into();
    };
    let head = |b: &[u8]| {
        b.iter()
            .take(8)
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    match parsed.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let n = rsa
                .modulus
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<_>>();
            format!("RSA-{} (modulus {}…)", n.len() * 8, head(&n))
        }
        Ok(PublicKey::EC(point)) => format!("EC (point {}…)", head(point.data())),
        Ok(other) => format!("{:?}", std::mem::discriminant(&other)),
        Err(_) => "unparsable".into(),
    }
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
