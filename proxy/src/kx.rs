//! Key exchange groups beyond rustls' aws-lc-rs provider: secp521r1 (P-521), which
//! OpenSSL (and so nginx's default `ssl_ecdh_curve auto`) accepts and rustls' provider
//! does not offer. A client that offers only P-521 would otherwise fail with
//! `handshake_failure`. It is last in the server's preference: any client that also
//! offers X25519, P-256 or P-384 gets one of those.

use aws_lc_rs::agreement;
use aws_lc_rs::rand::SystemRandom;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};

/// The TLS name of a group `ssl_ecdh_curve` names.
pub(crate) fn named(group: hsmgate_config::nginx::KxGroup) -> NamedGroup {
    use hsmgate_config::nginx::KxGroup;
    match group {
        KxGroup::X25519 => NamedGroup::X25519,
        KxGroup::P256 => NamedGroup::secp256r1,
        KxGroup::P384 => NamedGroup::secp384r1,
        KxGroup::P521 => NamedGroup::secp521r1,
        KxGroup::X25519MlKem768 => NamedGroup::X25519MLKEM768,
    }
}

/// Ephemeral ECDH on secp521r1.
pub(crate) static SECP521R1: &dyn SupportedKxGroup = &P521;

#[derive(Debug)]
struct P521;

impl SupportedKxGroup for P521 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let rng = SystemRandom::new();
        let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P521, &rng)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let public = private
            .compute_public_key()
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        Ok(Box::new(P521Exchange { private, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp521r1
    }
}

struct P521Exchange {
    private: agreement::EphemeralPrivateKey,
    public: agreement::PublicKey,
}

impl ActiveKeyExchange for P521Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        // TLS uses the uncompressed point form only (RFC 8446 §4.2.8.2); aws-lc-rs would
        // accept others, and checks that the point is on the curve.
        if peer.first() != Some(&0x04) {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P521, peer);
        agreement::agree_ephemeral(self.private, peer, (), |secret| {
            Ok(SharedSecret::from(secret))
        })
        .map_err(|()| PeerMisbehaved::InvalidKeyShare.into())
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::secp521r1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_a_bad_point_is_refused() {
        let a = SECP521R1.start().expect("start");
        let b = SECP521R1.start().expect("start");
        let b_pub = b.pub_key().to_vec();
        let a_secret = a.complete(b.pub_key()).expect("a");
        let again = SECP521R1.start().expect("start");
        assert!(
            again.complete(&b_pub[1..]).is_err(),
            "compressed/garbage point"
        );
        assert_eq!(a_secret.secret_bytes().len(), 66);
        let mut off_curve = b_pub.clone();
        off_curve[10] ^= 1;
        assert!(
            SECP521R1
                .start()
                .expect("start")
                .complete(&off_curve)
                .is_err()
        );
    }
}
