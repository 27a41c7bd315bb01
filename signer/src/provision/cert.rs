//! Certificates and CSRs for a token key: rcgen builds them, and the token signs them
//! through a [`SignerPool`] (rcgen's "remote key"), so the private key never leaves it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, SerialNumber};
use rustls::SignatureScheme;

use super::ProvisionError;
use crate::error::SignerError;
use crate::pool::SignerPool;
use crate::token::KeyKind;

/// A self-signed certificate for the pool's key, signed by the token (PEM).
pub fn self_signed(
    pool: &SignerPool,
    params: &CertificateParams,
) -> Result<String, ProvisionError> {
    let key = TokenCertKey::new(pool)?;
    let mut params = params.clone();
    if params.serial_number.is_none() {
        params.serial_number = Some(random_serial());
    }
    let built = params.self_signed(&key);
    key.result(built, "certificate").map(|c| c.pem())
}

/// A PKCS#10 certificate signing request for the pool's key, signed by the token (PEM).
pub fn signing_request(
    pool: &SignerPool,
    params: &CertificateParams,
) -> Result<String, ProvisionError> {
    const WHAT: &str = "certificate signing request";
    let key = TokenCertKey::new(pool)?;
    let built = params.serialize_request(&key);
    key.result(built, WHAT)?
        .pem()
        .map_err(|source| ProvisionError::Build { what: WHAT, source })
}

/// Set the validity to `days` days from today (00:00 UTC).
pub fn valid_for_days(params: &mut CertificateParams, days: u32) {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, d) = civil_from_days((since_epoch.as_secs() / 86_400) as i64);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = params.not_before + Duration::from_secs(u64::from(days) * 86_400);
}

/// Year, month and day of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system RNG works");
    // A positive INTEGER of at most 20 octets (RFC 5280 4.1.2.2).
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The rcgen view of a token key. rcgen's own error for a failed remote signature
/// carries no detail, so the signer's error is kept here and returned instead.
struct TokenCertKey<'a> {
    pool: &'a SignerPool,
    public: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    scheme: SignatureScheme,
    failure: Mutex<Option<SignerError>>,
}

impl<'a> TokenCertKey<'a> {
    fn new(pool: &'a SignerPool) -> Result<TokenCertKey<'a>, ProvisionError> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(pool.spki()).map_err(|source| {
            ProvisionError::Build {
                what: "public key",
                source,
            }
        })?;
        let (alg, scheme) = match pool.key_kind() {
            KeyKind::Rsa(_) => (&rcgen::PKCS_RSA_SHA256, SignatureScheme::RSA_PKCS1_SHA256),
            KeyKind::EcP256 => (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                SignatureScheme::ECDSA_NISTP256_SHA256,
            ),
            KeyKind::EcP384 => (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                SignatureScheme::ECDSA_NISTP384_SHA384,
            ),
        };
        Ok(TokenCertKey {
            pool,
            public: rcgen::PublicKeyData::der_bytes(&spki).to_vec(),
            alg,
            scheme,
            failure: Mutex::new(None),
        })
    }

    /// rcgen's result, with the token's own error in place of `RemoteKeyError`.
    fn result<T>(
        &self,
        built: Result<T, rcgen::Error>,
        what: &'static str,
    ) -> Result<T, ProvisionError> {
        built.map_err(|source| {
            match self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                Some(e) => ProvisionError::Signer(e),
                None => ProvisionError::Build { what, source },
            }
        })
    }
}

impl rcgen::PublicKeyData for TokenCertKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for TokenCertKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pool.sign(self.scheme, msg).map_err(|e| {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }
}
