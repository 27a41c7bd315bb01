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

/// Whether two SubjectPublicKeyInfos hold the same key: algorithm, parameters and key
/// bits compared, so equivalent encodings (RSA parameters NULL or absent) are equal.
pub fn same_public_key(a: &[u8], b: &[u8]) -> bool {
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

/// "RSA-2048 (modulus 00c3a1…)" or "EC (point 04ab12…)", for error messages.
pub fn describe_key(spki: &[u8]) -> String {
    use x509_parser::public_key::PublicKey;
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
            let n: Vec<u8> = rsa
                .modulus
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect();
            format!("RSA-{} (modulus {}…)", n.len() * 8, head(&n))
        }
        Ok(PublicKey::EC(point)) => format!("EC (point {}…)", head(point.data())),
        Ok(_) => "a key of another type".into(),
        Err(_) => "unparsable".into(),
    }
}
