//! The few DER encodings the signer needs: public keys read from a token as
//! SubjectPublicKeyInfo, and ECDSA signatures turned from PKCS#11's raw `r || s` into
//! the `Ecdsa-Sig-Value` SEQUENCE that TLS carries.

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// rsaEncryption, 1.2.840.113549.1.1.1
pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 / secp256r1, 1.2.840.10045.3.1.7
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    push_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = match magnitude.iter().position(|b| *b != 0) {
        Some(i) => &magnitude[i..],
        None => &[0u8][..],
    };
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(TAG_INTEGER, &body)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0); // no unused bits
    body.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &body)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
pub(crate) fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    sequence(&[&unsigned_integer(modulus), &unsigned_integer(exponent)])
}

/// SubjectPublicKeyInfo for an RSA key.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let alg = sequence(&[&tlv(TAG_OID, OID_RSA_ENCRYPTION), &[TAG_NULL, 0]]);
    sequence(&[&alg, &bit_string(&rsa_public_key(modulus, exponent))])
}

/// SubjectPublicKeyInfo for an EC key on a named curve (`curve_oid` is the OID's body).
pub(crate) fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let alg = sequence(&[&tlv(TAG_OID, OID_EC_PUBLIC_KEY), &tlv(TAG_OID, curve_oid)]);
    sequence(&[&alg, &bit_string(point)])
}

/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from PKCS#11's `r || s`.
pub(crate) fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(sequence(&[&unsigned_integer(r), &unsigned_integer(s)]))
}

/// The body of an OID from `CKA_EC_PARAMS`, which holds a DER `ECParameters`
/// (a namedCurve OID; explicit parameters are not supported).
pub(crate) fn named_curve(ec_params: &[u8]) -> Option<&[u8]> {
    match ec_params {
        [TAG_OID, len, body @ ..] if usize::from(*len) == body.len() => Some(body),
        _ => None,
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point (PKCS#11 2.40); a few modules
/// return the bare point. Accept both.
pub(crate) fn ec_point(attr: &[u8]) -> &[u8] {
    if let [TAG_OCTET_STRING, rest @ ..] = attr {
        let (len, hdr) = match rest {
            [l, ..] if *l < 0x80 => (usize::from(*l), 1),
            [0x81, l, ..] => (usize::from(*l), 2),
            [0x82, hi, lo, ..] => ((usize::from(*hi) << 8) | usize::from(*lo), 3),
            _ => return attr,
        };
        if rest.len() == hdr + len {
            return &rest[hdr..];
        }
    }
    attr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 0x7f]), vec![2, 1, 0x7f]);
        assert_eq!(unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), vec![2, 1, 0]);
    }

    #[test]
    fn long_lengths() {
        let body = vec![0x11; 300];
        let enc = tlv(TAG_OCTET_STRING, &body);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(ec_point(&enc), &body[..]);
    }

    #[test]
    fn ecdsa_signature_from_raw() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r has the high bit set: needs a leading zero
        raw[63] = 1; // s is 1
        let der = ecdsa_signature(&raw).expect("even length");
        assert_eq!(der[0], TAG_SEQUENCE);
        assert_eq!(&der[2..5], &[2, 33, 0]);
        assert_eq!(&der[der.len() - 3..], &[2, 1, 1]);
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
    }

    #[test]
    fn spki_parses_with_x509_parser() {
        use x509_parser::prelude::FromDer;
        let spki = rsa_spki(&[0xc3; 256], &[1, 0, 1]);
        let (rest, parsed) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).expect("valid DER");
        assert!(rest.is_empty());
        assert_eq!(
            parsed.algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.1"
        );
        let ec = ec_spki(OID_P256, &[4; 65]);
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&ec).expect("valid");
        assert_eq!(parsed.subject_public_key.data.len(), 65);
    }

    #[test]
    fn named_curve_and_point_forms() {
        let params = tlv(TAG_OID, OID_P384);
        assert_eq!(named_curve(&params), Some(OID_P384));
        assert_eq!(named_curve(&[0x30, 0]), None);
        let point = [4u8; 97];
        assert_eq!(ec_point(&tlv(TAG_OCTET_STRING, &point)), &point[..]);
        assert_eq!(ec_point(&point), &point[..]);
    }
}
