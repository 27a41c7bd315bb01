//! Verifying a signature against a SubjectPublicKeyInfo with rustls' own provider:
//! used for the start-up self-test, so a key whose public half does not match its
//! private half (or a token that signs wrongly) is caught before serving.

use rustls::SignatureScheme;
use rustls::crypto::aws_lc_rs::default_provider;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Whether `signature` over `message` verifies with `spki` under `scheme`.
pub fn verify(spki: &[u8], scheme: SignatureScheme, message: &[u8], signature: &[u8]) -> bool {
    let Ok((_, parsed)) = SubjectPublicKeyInfo::from_der(spki) else {
        return false;
    };
    let provider = default_provider();
    let Some((_, algs)) = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
    else {
        return false;
    };
    let key = parsed.subject_public_key.data.as_ref();
    algs.iter()
        .any(|alg| alg.verify_signature(key, message, signature).is_ok())
}
