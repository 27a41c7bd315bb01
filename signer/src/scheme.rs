//! TLS signature schemes and the PKCS#11 mechanisms that make them.
//!
//! rustls hands `sign()` the unhashed message. RSA uses the hashing mechanisms
//! (`CKM_SHA256_RSA_PKCS_PSS` with MGF1 and a salt as long as the hash, or
//! `CKM_SHA256_RSA_PKCS`) when the token offers them, else hashes on the host and uses
//! `CKM_RSA_PKCS_PSS` / `CKM_RSA_PKCS` over a DigestInfo (p11-kit's RPC, for one, does
//! not carry the hashing PSS mechanisms). ECDSA hashes on the host and uses `CKM_ECDSA`,
//! because SoftHSM 2.6 has no `CKM_ECDSA_SHA256`; the raw `r || s` is then DER-encoded.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use rustls::SignatureScheme;
use sha2::Digest;

use crate::token::{KeyKind, Token};

/// Every mechanism a scheme may need; the token is asked which of them it offers.
pub(crate) const MECHANISMS: [MechanismType; 9] = [
    MechanismType::SHA256_RSA_PKCS_PSS,
    MechanismType::SHA384_RSA_PKCS_PSS,
    MechanismType::SHA512_RSA_PKCS_PSS,
    MechanismType::SHA256_RSA_PKCS,
    MechanismType::SHA384_RSA_PKCS,
    MechanismType::SHA512_RSA_PKCS,
    MechanismType::RSA_PKCS_PSS,
    MechanismType::RSA_PKCS,
    MechanismType::ECDSA,
];

/// How one scheme is signed on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignOp {
    /// `CKM_SHA*_RSA_PKCS_PSS`: the token hashes.
    RsaPss(Hash),
    /// `CKM_RSA_PKCS_PSS` over a hash made here.
    RsaPssPrehashed(Hash),
    /// `CKM_SHA*_RSA_PKCS`: the token hashes.
    RsaPkcs1(Hash),
    /// `CKM_RSA_PKCS` over a DigestInfo made here.
    RsaPkcs1Prehashed(Hash),
    /// `CKM_ECDSA` over a hash made here.
    Ecdsa(Hash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn len(self) -> u64 {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn mechanism(self) -> MechanismType {
        match self {
            Hash::Sha256 => MechanismType::SHA256,
            Hash::Sha384 => MechanismType::SHA384,
            Hash::Sha512 => MechanismType::SHA512,
        }
    }

    /// DER of `DigestInfo` up to the digest (RFC 8017 §9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn mgf(self) -> PkcsMgfType {
        match self {
            Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
            Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
            Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }
}

impl SignOp {
    /// The host-hashing alternative of an operation whose mechanism hashes.
    fn prehashed(self) -> Option<SignOp> {
        match self {
            SignOp::RsaPss(h) => Some(SignOp::RsaPssPrehashed(h)),
            SignOp::RsaPkcs1(h) => Some(SignOp::RsaPkcs1Prehashed(h)),
            _ => None,
        }
    }

    /// The operation for a TLS scheme (preferring mechanisms that hash), if we know one.
    pub(crate) fn for_scheme(scheme: SignatureScheme) -> Option<SignOp> {
        Some(match scheme {
            SignatureScheme::RSA_PSS_SHA256 => SignOp::RsaPss(Hash::Sha256),
            SignatureScheme::RSA_PSS_SHA384 => SignOp::RsaPss(Hash::Sha384),
            SignatureScheme::RSA_PSS_SHA512 => SignOp::RsaPss(Hash::Sha512),
            SignatureScheme::RSA_PKCS1_SHA256 => SignOp::RsaPkcs1(Hash::Sha256),
            SignatureScheme::RSA_PKCS1_SHA384 => SignOp::RsaPkcs1(Hash::Sha384),
            SignatureScheme::RSA_PKCS1_SHA512 => SignOp::RsaPkcs1(Hash::Sha512),
            SignatureScheme::ECDSA_NISTP256_SHA256 => SignOp::Ecdsa(Hash::Sha256),
            SignatureScheme::ECDSA_NISTP384_SHA384 => SignOp::Ecdsa(Hash::Sha384),
            _ => return None,
        })
    }

    /// The PKCS#11 mechanism type that carries it out.
    pub(crate) fn mechanism_type(self) -> MechanismType {
        match self {
            SignOp::RsaPss(Hash::Sha256) => MechanismType::SHA256_RSA_PKCS_PSS,
            SignOp::RsaPss(Hash::Sha384) => MechanismType::SHA384_RSA_PKCS_PSS,
            SignOp::RsaPss(Hash::Sha512) => MechanismType::SHA512_RSA_PKCS_PSS,
            SignOp::RsaPkcs1(Hash::Sha256) => MechanismType::SHA256_RSA_PKCS,
            SignOp::RsaPkcs1(Hash::Sha384) => MechanismType::SHA384_RSA_PKCS,
            SignOp::RsaPkcs1(Hash::Sha512) => MechanismType::SHA512_RSA_PKCS,
            SignOp::RsaPssPrehashed(_) => MechanismType::RSA_PKCS_PSS,
            SignOp::RsaPkcs1Prehashed(_) => MechanismType::RSA_PKCS,
            SignOp::Ecdsa(_) => MechanismType::ECDSA,
        }
    }

    /// The mechanism with its parameters.
    pub(crate) fn mechanism(self) -> Mechanism<'static> {
        let pss = |h: Hash| PkcsPssParams {
            hash_alg: h.mechanism(),
            mgf: h.mgf(),
            s_len: h.len().into(),
        };
        match self {
            SignOp::RsaPss(Hash::Sha256) => Mechanism::Sha256RsaPkcsPss(pss(Hash::Sha256)),
            SignOp::RsaPss(Hash::Sha384) => Mechanism::Sha384RsaPkcsPss(pss(Hash::Sha384)),
            SignOp::RsaPss(Hash::Sha512) => Mechanism::Sha512RsaPkcsPss(pss(Hash::Sha512)),
            SignOp::RsaPkcs1(Hash::Sha256) => Mechanism::Sha256RsaPkcs,
            SignOp::RsaPkcs1(Hash::Sha384) => Mechanism::Sha384RsaPkcs,
            SignOp::RsaPkcs1(Hash::Sha512) => Mechanism::Sha512RsaPkcs,
            SignOp::RsaPssPrehashed(h) => Mechanism::RsaPkcsPss(pss(h)),
            SignOp::RsaPkcs1Prehashed(_) => Mechanism::RsaPkcs,
            SignOp::Ecdsa(_) => Mechanism::Ecdsa,
        }
    }

    /// The bytes handed to C_Sign: the message itself, or its hash for ECDSA.
    pub(crate) fn input(self, message: &[u8]) -> Vec<u8> {
        match self {
            SignOp::Ecdsa(h) | SignOp::RsaPssPrehashed(h) => h.digest(message),
            SignOp::RsaPkcs1Prehashed(h) => [h.digest_info_prefix(), &h.digest(message)].concat(),
            SignOp::RsaPss(_) | SignOp::RsaPkcs1(_) => message.to_vec(),
        }
    }

    /// Whether C_Sign's output must be turned from `r || s` into DER.
    pub(crate) fn needs_der(self) -> bool {
        matches!(self, SignOp::Ecdsa(_))
    }
}

/// The schemes this key can make on this token, best first, each with the operation
/// that makes it (a mechanism that hashes if the token has it, else one over a hash).
pub(crate) fn supported(token: &Token, kind: KeyKind) -> Vec<(SignatureScheme, SignOp)> {
    let candidates: &[SignatureScheme] = match kind {
        KeyKind::Rsa(_) => &[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
        ],
        KeyKind::EcP256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
        KeyKind::EcP384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
    };
    candidates
        .iter()
        .filter_map(|&scheme| {
            let op = SignOp::for_scheme(scheme)?;
            [Some(op), op.prehashed()]
                .into_iter()
                .flatten()
                .find(|op| token.has(op.mechanism_type()))
                .map(|op| (scheme, op))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_scheme_has_an_operation() {
        for s in [
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ECDSA_NISTP384_SHA384,
        ] {
            assert!(SignOp::for_scheme(s).is_some(), "{s:?}");
        }
        assert!(SignOp::for_scheme(SignatureScheme::ED25519).is_none());
    }

    #[test]
    fn ecdsa_hashes_on_the_host() {
        let op = SignOp::Ecdsa(Hash::Sha384);
        assert_eq!(op.input(b"abc").len(), 48);
        assert!(op.needs_der());
        assert_eq!(op.mechanism_type(), MechanismType::ECDSA);
        let rsa = SignOp::RsaPss(Hash::Sha256);
        assert_eq!(rsa.input(b"abc"), b"abc");
        assert!(!rsa.needs_der());
    }

    #[test]
    fn prehashed_rsa_inputs() {
        let pss = SignOp::RsaPss(Hash::Sha384).prehashed().expect("has one");
        assert_eq!(pss.mechanism_type(), MechanismType::RSA_PKCS_PSS);
        assert_eq!(pss.input(b"abc").len(), 48);
        let pkcs1 = SignOp::RsaPkcs1(Hash::Sha256).prehashed().expect("has one");
        let input = pkcs1.input(b"abc");
        assert_eq!(input.len(), 19 + 32);
        // DigestInfo: SEQUENCE of the whole, OCTET STRING of the digest at the end.
        assert_eq!(input[1] as usize, input.len() - 2);
        assert_eq!(&input[17..19], &[0x04, 0x20]);
        assert!(SignOp::Ecdsa(Hash::Sha256).prehashed().is_none());
    }
}
