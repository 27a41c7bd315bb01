//! Client certificates (`ssl_verify_client on|optional` with `ssl_client_certificate`,
//! `ssl_verify_depth`), nginx's way: the handshake asks for a certificate but does not
//! fail without one or with one that does not verify ([`Lenient`]: only the client's
//! proof of its key is checked then); the chain is verified after the handshake
//! ([`ClientAuth::check`]) and the request is answered 400 by the router ("No required
//! SSL certificate was sent" for `on` without one, "The SSL certificate error" for a
//! failed one), as nginx does. The result gives `$ssl_client_verify` (`SUCCESS`,
//! `NONE`, `FAILED:reason` with OpenSSL's reason strings where they map),
//! `$ssl_client_s_dn` and `$ssl_client_i_dn` (RFC 2253, as nginx ≥ 1.11.6),
//! `$ssl_client_serial`, `$ssl_client_fingerprint`, `$ssl_client_raw_cert`,
//! `$ssl_client_escaped_cert` and the validity (`$ssl_client_v_start`, `_v_end`,
//! `_v_remain`).

use std::path::Path;
use std::sync::Arc;

use hsmgate_config::nginx::{TlsSettings, VerifyClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::ProxyError;

/// The client-certificate rules of one server.
#[derive(Debug)]
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    depth: usize,
}

/// What a connection's client certificate came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// `$ssl_client_verify`.
    pub verify: Verify,
    /// `$ssl_client_s_dn` (empty without a certificate).
    pub s_dn: String,
    /// `$ssl_client_escaped_cert` (empty without a certificate).
    pub escaped_cert: String,
    /// What else nginx's `$ssl_client_*` variables read from the certificate (`None`
    /// without one, or one that does not parse).
    pub details: Option<CertDetails>,
}

/// A client certificate's fields as nginx's variables print them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDetails {
    /// `$ssl_client_i_dn`: the issuer, RFC 2253 as `s_dn`.
    pub i_dn: String,
    /// `$ssl_client_serial`: upper-case hex, as OpenSSL's `i2a_ASN1_INTEGER`.
    pub serial: String,
    /// `$ssl_client_fingerprint`: the SHA-1 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// `$ssl_client_raw_cert`: the PEM certificate.
    pub raw_cert: String,
    /// notBefore and notAfter, seconds since the epoch.
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
}

/// `$ssl_client_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// `NONE`: no certificate.
    None,
    /// `SUCCESS`.
    Success,
    /// `FAILED:reason`.
    Failed(String),
}

impl std::fmt::Display for Verify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verify::None => f.write_str("NONE"),
            Verify::Success => f.write_str("SUCCESS"),
            Verify::Failed(why) => write!(f, "FAILED:{why}"),
        }
    }
}

// === impl ClientAuth ===

impl ClientAuth {
    /// The rules of `settings` (None with `ssl_verify_client off`).
    pub fn load(settings: &TlsSettings) -> Result<Option<ClientAuth>, ProxyError> {
        if settings.verify_client == VerifyClient::Off {
            return Ok(None);
        }
        let path = settings
            .client_certificate
            .as_deref()
            .ok_or_else(|| ProxyError::Invalid("no ssl_client_certificate".into()))?;
        let bad = |reason: String| ProxyError::TlsFile {
            directive: "ssl_client_certificate",
            path: path.to_path_buf(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_pem(path)? {
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated();
        if let Some(crl) = &settings.crl {
            // As nginx (OpenSSL's CRL_CHECK_ALL): every certificate of the chain is
            // checked, one whose issuer has no list fails, and so does an expired list.
            builder = builder
                .with_crls(read_crls(crl)?)
                .enforce_revocation_expiration();
        }
        let verifier = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Some(ClientAuth {
            verifier,
            depth: settings.verify_depth as usize,
        }))
    }

    /// What the handshake uses: asks for a certificate, verifies the client's
    /// signature, leaves the chain to [`check`](Self::check).
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Lenient(Arc::clone(&self.verifier)))
    }

    /// Verify the chain the client sent (leaf first). At most `ssl_verify_depth`
    /// intermediates are used, as OpenSSL's verify depth.
    pub fn check(&self, chain: Option<&[CertificateDer<'_>]>) -> ClientCert {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return ClientCert {
                verify: Verify::None,
                s_dn: String::new(),
                escaped_cert: String::new(),
                details: None,
            };
        };
        let now = UnixTime::now();
        let used = &intermediates[..intermediates.len().min(self.depth)];
        // OpenSSL stops building the chain at the depth: what lies beyond is an
        // unknown issuer ("unable to get local issuer certificate"), as here.
        let verify = match self.verifier.verify_client_cert(leaf, used, now) {
            Ok(_) => Verify::Success,
            Err(e) => Verify::Failed(reason(&e, intermediates.is_empty())),
        };
        let raw_cert = pem(leaf);
        ClientCert {
            verify,
            s_dn: subject_dn(leaf),
            escaped_cert: escape_uri_component(&raw_cert),
            details: details(leaf, raw_cert),
        }
    }
}

/// OpenSSL's `X509_verify_cert_error_string` for what rustls reports, where one maps
/// (`alone`: the client sent no intermediate, and OpenSSL then names the leaf).
fn reason(e: &rustls::Error, alone: bool) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer if alone => {
                "unable to verify the first certificate".into()
            }
            CertificateError::UnknownIssuer => "unable to get local issuer certificate".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not yet valid".into()
            }
            CertificateError::BadSignature => "certificate signature failure".into(),
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::UnknownRevocationStatus => "unable to get certificate CRL".into(),
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "CRL has expired".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose".into()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// Asks for a client certificate and checks the client's signature with it, but lets
/// any chain through: the chain is judged after the handshake, so that the answer is
/// nginx's 400 rather than an alert.
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        unreadable_is_unverified(self.0.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        unreadable_is_unverified(self.0.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client certificate webpki cannot read (an X.509 v1 certificate, which OpenSSL still
/// makes; bad DER) fails the handshake's signature check before the certificate is
/// judged: the handshake goes on, and the certificate is judged as any other
/// ([`ClientAuth::check`], which reads it with the same parser and so finds it
/// unverified: nginx's 400 "The SSL certificate error" with `ssl_verify_client on` or
/// `optional`, `$ssl_client_verify` `FAILED:…`), instead of a fatal alert that leaves
/// the client with no answer. A signature that does not verify is still an error.
fn unreadable_is_unverified(
    checked: Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    use rustls::{CertificateError, Error};
    match checked {
        Err(Error::InvalidCertificate(CertificateError::BadEncoding)) => {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        Err(Error::InvalidCertificate(CertificateError::Other(other)))
            if other
                .0
                .downcast_ref::<webpki::Error>()
                .is_some_and(|e| matches!(e, webpki::Error::UnsupportedCertVersion)) =>
        {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        other => other,
    }
}

/// The revocation lists of an `ssl_crl` file (PEM `X509 CRL` blocks).
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ProxyError> {
    read_pem_blocks(path, "ssl_crl", "CRL file", "X509 CRL")
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    read_pem_blocks(
        path,
        "ssl_client_certificate",
        "certificate bundle",
        "CERTIFICATE",
    )
}

/// The `label` blocks of the PEM file `path`, which `directive` names (at least one).
fn read_pem_blocks<T: PemObject>(
    path: &Path,
    directive: &'static str,
    what: &str,
    label: &str,
) -> Result<Vec<T>, ProxyError> {
    let bad = |reason: String| ProxyError::TlsFile {
        directive,
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let blocks = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM {what}: {e}")))?;
    if blocks.is_empty() {
        return Err(bad(format!("no {label} block in the file")));
    }
    Ok(blocks)
}

/// The subject as OpenSSL's `X509_NAME_print_ex(.., XN_FLAG_RFC2253)` prints it (what
/// nginx ≥ 1.11.6 gives for `$ssl_client_s_dn`): last RDN first, `,` between RDNs,
/// `+` inside one, RFC 2253 escapes; values that are not strings as `#` and hex DER.
pub(crate) fn subject_dn(leaf: &CertificateDer<'_>) -> String {
    match X509Certificate::from_der(leaf) {
        Ok((_, cert)) => rfc2253(cert.subject()),
        Err(_) => String::new(),
    }
}

/// The certificate's issuer, serial, fingerprint and validity (None if it does not
/// parse); `raw_cert` is its PEM.
fn details(leaf: &CertificateDer<'_>, raw_cert: String) -> Option<CertDetails> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    // The integer's content octets without DER's sign padding (OpenSSL keeps the
    // magnitude): at least one octet.
    let raw = cert.raw_serial();
    let skip = raw
        .iter()
        .take_while(|&&b| b == 0)
        .count()
        .min(raw.len().saturating_sub(1));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let validity = cert.validity();
    Some(CertDetails {
        i_dn: rfc2253(cert.issuer()),
        serial: hex(&raw[skip..]),
        fingerprint: hex(digest.as_ref()).to_ascii_lowercase(),
        raw_cert,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// A name as OpenSSL's `X509_NAME_print_ex(.., XN_FLAG_RFC2253)` prints it.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let name = short_name(&oid).map_or(oid, str::to_owned);
                    let value = match attr.as_str() {
                        Ok(s) => escape_rfc2253(s),
                        Err(_) => {
                            let raw = attr.attr_value();
                            let mut der = vec![raw.header.tag().0 as u8];
                            let len = raw.data.len();
                            if len < 0x80 {
                                der.push(len as u8);
                            } else {
                                let bytes = len.to_be_bytes();
                                let skip = bytes.iter().take_while(|&&b| b == 0).count();
                                der.push(0x80 | (bytes.len() - skip) as u8);
                                der.extend_from_slice(&bytes[skip..]);
                            }
                            der.extend_from_slice(raw.data);
                            format!("#{}", hex(&der))
                        }
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// OpenSSL's short names of the usual attributes.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.46" => "dnQualifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 §2.4 escapes (as OpenSSL's `ASN1_STRFLGS_ESC_2253`), and OpenSSL's `\XX`
/// for control characters.
fn escape_rfc2253(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The certificate as PEM (64-column base64, as OpenSSL writes it).
fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// nginx's `ngx_escape_uri(.., NGX_ESCAPE_URI_COMPONENT)`: everything but letters,
/// digits and `!'()*-._~` as `%XX`.
fn escape_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!'()*-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    /// A certificate webpki cannot read goes on to be judged (and found unverified); a
    /// bad signature stays an error.
    #[test]
    fn an_unreadable_client_certificate_is_judged_not_refused() {
        use rustls::{CertificateError, Error};
        let unreadable = Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        assert!(unreadable_is_unverified(unreadable).is_ok());
        let v1 = Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::UnsupportedCertVersion,
        ))));
        assert!(unreadable_is_unverified(Err(v1)).is_ok());
        let forged = Err(Error::InvalidCertificate(CertificateError::BadSignature));
        assert!(unreadable_is_unverified(forged).is_err());
        let expired = Err(Error::InvalidCertificate(CertificateError::Expired));
        assert!(unreadable_is_unverified(expired).is_err());
    }
    use super::*;

    #[test]
    fn pem_matches_base64() {
        let p = pem(b"Man");
        assert_eq!(
            p,
            "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n"
        );
        assert!(pem(b"Ma").contains("\nTWE=\n"));
        assert!(pem(b"M").contains("\nTQ==\n"));
        let long = pem(&[0u8; 60]);
        assert!(long.lines().nth(1).is_some_and(|l| l.len() == 64));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape_uri_component("-----BEGIN CERTIFICATE-----\nab+/=\n"),
            "-----BEGIN%20CERTIFICATE-----%0Aab%2B%2F%3D%0A"
        );
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#x "), "\\#x\\ ");
    }

    #[test]
    fn subject_is_printed_last_rdn_first() {
        let mut params = rcgen::CertificateParams::new(vec!["c.test".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client one");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            subject_dn(cert.der()),
            "CN=client one,O=Example\\, Inc.,C=DE"
        );
    }
}
