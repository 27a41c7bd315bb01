//! The rustls client configuration: trust anchors from `--cacert` (or no check with
//! `--insecure`), protocol versions, session resumption per mode, and ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cli::{Mode, TlsVersion};
use super::error::LoadError;

/// Builds the client configuration for `mode`.
///
/// `handshake` mode disables resumption; the other modes keep rustls' default in-memory
/// session store (that is what `resume` measures). ALPN is `h2` for h2, else `http/1.1`.
pub(crate) fn client_config(
    mode: Mode,
    version: TlsVersion,
    cacert: Option<&Path>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, LoadError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match version {
        TlsVersion::V12 => &[&rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
        TlsVersion::Any => rustls::ALL_VERSIONS,
    };
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth()
    } else {
        let path = cacert.ok_or(LoadError::NoTrust)?;
        builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth()
    };
    if mode == Mode::Handshake {
        config.resumption = Resumption::disabled();
    }
    config.alpn_protocols = match mode {
        Mode::H2 => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// Reads the PEM CA file into a root store.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, LoadError> {
    let pem_err = |e: pem::Error| match e {
        pem::Error::Io(source) => LoadError::CaRead {
            path: path.to_owned(),
            source,
        },
        other => LoadError::CaParse {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(LoadError::CaEmpty {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| LoadError::CaBad {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate, but still verifies the handshake signatures
/// (so the client does the same cryptographic work as a checking one, minus the chain).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("hsmgate-load-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.pem");
        let e = load_roots(&missing).unwrap_err();
        assert!(matches!(e, LoadError::CaRead { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = load_roots(&empty).unwrap_err();
        assert!(matches!(e, LoadError::CaEmpty { .. }), "{e}");
        assert!(e.to_string().contains("empty.pem"), "{e}");

        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_roots(&garbage).unwrap_err();
        assert!(e.to_string().contains("garbage.pem"), "{e}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn needs_trust_or_insecure() {
        let e = client_config(Mode::Handshake, TlsVersion::Any, None, false).unwrap_err();
        assert!(matches!(e, LoadError::NoTrust));
        let c = client_config(Mode::H2, TlsVersion::V13, None, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
