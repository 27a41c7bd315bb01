//! TLS to upstreams (`proxy_pass https://…`): the rustls client settings of one
//! location's `proxy_ssl_*`, built once per configuration.
//!
//! - `proxy_ssl_verify off` (nginx's default) accepts any certificate, as nginx does, but
//!   the handshake signature is still checked against the certificate's key
//!   ([`AnyCertificate`]), so the session is at least bound to that key.
//! - `proxy_ssl_verify on` checks the chain against `proxy_ssl_trusted_certificate` and
//!   the name (`proxy_ssl_name`) with webpki, then the path length against
//!   `proxy_ssl_verify_depth` as OpenSSL 3 counts it (checked against Debian's nginx):
//!   depth N allows N intermediate CAs between the certificate and the trusted CA (the
//!   default 1: one intermediate; 0: issued directly by a trusted CA).
//! - `proxy_ssl_server_name off` sends no SNI; the name is still what is verified.
//! - `proxy_ssl_session_reuse off` disables resumption.
//! - `proxy_ssl_ciphers`: the rustls suites it maps to (TLS 1.3 suites stay, as OpenSSL).

use std::path::Path;
use std::sync::Arc;

use hsmgate_config::nginx::{ProxySsl, TlsVersion};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ProxyError;

/// The rustls client settings for `ssl`.
pub(crate) fn client_config(ssl: &ProxySsl) -> Result<Arc<ClientConfig>, ProxyError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !ssl.ciphers.is_empty() {
        let named = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
        let wanted: Vec<&str> = ssl.ciphers.iter().map(|c| c.rustls_name()).collect();
        let mut suites: Vec<rustls::SupportedCipherSuite> = (wanted.iter())
            .filter_map(|w| provider.cipher_suites.iter().find(|s| named(s) == *w))
            .copied()
            .collect();
        // As OpenSSL: a cipher list does not govern TLS 1.3 suites unless it names some.
        if !wanted.iter().any(|w| w.starts_with("TLS13_")) {
            let tls13 = provider.cipher_suites.iter();
            suites.extend(tls13.filter(|s| s.version() == &rustls::version::TLS13));
        }
        provider.cipher_suites = suites;
    }
    let provider = Arc::new(provider);
    let algs = provider.signature_verification_algorithms;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = ssl
        .protocols
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let verifier: Arc<dyn ServerCertVerifier> = match (&ssl.verify, &ssl.trusted_certificate) {
        (true, Some((path, at))) => {
            let roots = Arc::new(roots(path).map_err(|e| ProxyError::At {
                at: at.to_string(),
                source: Box::new(e),
            })?);
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| ProxyError::At {
                at: at.to_string(),
                source: Box::new(ProxyError::Invalid(format!(
                    "proxy_ssl_trusted_certificate {}: {e}",
                    path.display()
                ))),
            })?;
            Arc::new(Verified {
                webpki,
                roots,
                depth: ssl.verify_depth,
                algs,
            })
        }
        (true, None) => {
            return Err(ProxyError::Invalid(
                "no proxy_ssl_trusted_certificate for proxy_ssl_verify".into(),
            ));
        }
        (false, _) => Arc::new(AnyCertificate { algs }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &ssl.certificate {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let at = |e: ProxyError| ProxyError::At {
                at: c.at.to_string(),
                source: Box::new(e),
            };
            let chain = certs(&c.cert).map_err(at)?;
            let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| {
                at(ProxyError::Key {
                    path: c.key.clone(),
                    reason: e.to_string(),
                })
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| at(e.into()))?
        }
    };
    config.enable_sni = ssl.server_name;
    if !ssl.session_reuse {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The name for SNI and verification: `proxy_ssl_name` (or `$proxy_host`) without a port
/// and without IPv6 brackets, as nginx strips them.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let host = match name.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => name.rsplit_once(':').map_or(name, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                name
            }
        }),
    };
    ServerName::try_from(host.to_owned())
        .map_err(|_| format!("proxy_ssl_name \"{name}\" is not a valid server name"))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let bad = |reason: String| ProxyError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let list = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if list.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(list)
}

fn roots(path: &Path) -> Result<RootCertStore, ProxyError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| ProxyError::Certificate {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// `proxy_ssl_verify off`: any certificate, but a valid handshake signature by its key.
#[derive(Debug)]
struct AnyCertificate {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `proxy_ssl_verify on`: webpki's checks, then `proxy_ssl_verify_depth`.
#[derive(Debug)]
struct Verified {
    webpki: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    depth: u32,
    algs: WebPkiSupportedAlgorithms,
}

/// A chain longer than `proxy_ssl_verify_depth` allows.
#[derive(Debug, thiserror::Error)]
#[error("certificate chain too long for proxy_ssl_verify_depth {0}")]
struct ChainTooLong(u32);

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        // OpenSSL: levels 0 (the certificate) to depth + 1 (the trusted CA).
        let allowed = self.depth as usize;
        let too_long =
            || rustls::Error::Other(rustls::OtherError(Arc::new(ChainTooLong(self.depth))));
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| too_long())?;
        let check = |path: &webpki::VerifiedPath<'_>| match path.intermediate_certificates().count()
        {
            n if n > allowed => Err(webpki::Error::MaximumPathDepthExceeded),
            _ => Ok(()),
        };
        ee.verify_for_usage(
            self.algs.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&check),
        )
        .map_err(|_| too_long())?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_port() {
        let name = |s: &str| server_name(s).map(|n| n.to_str().into_owned());
        assert_eq!(name("backend.example:8443").unwrap(), "backend.example");
        assert_eq!(name("backend").unwrap(), "backend");
        assert_eq!(name("backend_app").unwrap(), "backend_app");
        assert_eq!(name("127.0.0.1:443").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:443").unwrap(), "::1");
        assert!(name("bad name").is_err());
    }
}
