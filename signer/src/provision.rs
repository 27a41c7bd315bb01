//! Making a token and a key pair on it, through PKCS#11 itself: `C_InitToken`,
//! `C_InitPIN` and `C_GenerateKeyPair`, then a certificate or a CSR that the token
//! signs. Used by `hsmgate demo` and `hsmgate token`; the private key is generated on
//! the token as sensitive and non-extractable.
//!
//! Parts: this file (token, key pair, the one-session pool that signs certificates),
//! `cert` (rcgen builds the certificate or CSR, the token signs it), `slots` (what a
//! module's slots hold, for `hsmgate token list`), `error`.

mod cert;
mod error;
mod slots;

pub use cert::{self_signed, signing_request, valid_for_days};
pub use error::ProvisionError;
pub use slots::{PublicKeySummary, SlotSummary, TokenSummary, list_slots};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmgate_config::{Admission, Pkcs11Uri, Secret};

use crate::der;
use crate::error::{Function, SignerError};
use crate::module::Module;
use crate::pool::{PoolSettings, SignerPool};
use crate::token::KeyKind;

/// Initialise the first uninitialised slot's token as `label` and set its user PIN.
pub fn init_token(
    module: &Arc<Module>,
    label: &str,
    so_pin: &Secret,
    pin: &Secret,
) -> Result<(), SignerError> {
    let ctx = module.ctx();
    let name = module.path().display().to_string();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| SignerError::pkcs11(&name, Function::GetSlotList, e))?;
    let mut free = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| SignerError::pkcs11(&name, Function::GetTokenInfo, e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| SignerError::NoFreeSlot {
        module: module.path().to_path_buf(),
    })?;
    let so = AuthPin::from(so_pin.expose().to_string());
    ctx.init_token(slot, &so, label)
        .map_err(|e| SignerError::pkcs11(label, Function::InitToken, e))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| SignerError::pkcs11(label, Function::OpenSession, e))?;
    session
        .login(UserType::So, Some(&so))
        .map_err(|e| SignerError::pkcs11(label, Function::Login, e))?;
    session
        .init_pin(&AuthPin::from(pin.expose().to_string()))
        .map_err(|e| SignerError::pkcs11(label, Function::InitPIN, e))?;
    session
        .logout()
        .map_err(|e| SignerError::pkcs11(label, Function::Logout, e))?;
    Ok(())
}

/// Generate a key pair on `token` (already initialised), labelled `label` with `id`.
/// Refuses when the token already holds a private key with that label or id (a second
/// one would make the key's URI ambiguous).
pub fn generate_key_pair(
    token: &crate::Token,
    pin: &Secret,
    kind: KeyKind,
    label: &str,
    id: &[u8],
) -> Result<(), ProvisionError> {
    let session = token.open_rw_session()?;
    token.login(&session, pin)?;
    for (existing, what, flag) in [
        (
            Attribute::Label(label.as_bytes().to_vec()),
            format!("label {label:?}"),
            "--label",
        ),
        (
            Attribute::Id(id.to_vec()),
            format!("id {}", crate::token::hex(id)),
            "--id",
        ),
    ] {
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), existing])
            .map_err(|e| SignerError::pkcs11(token.label(), Function::FindObjects, e))?;
        if !found.is_empty() {
            return Err(ProvisionError::KeyExists {
                token: token.label().to_string(),
                what,
                flag,
            });
        }
    }
    let common = |private: bool| {
        let mut attrs = vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        if private {
            attrs.extend([
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
            ]);
        } else {
            // Readable without a PIN, so `hsmgate token list` can show it.
            attrs.extend([Attribute::Private(false), Attribute::Verify(true)]);
        }
        attrs
    };
    let mut public = common(false);
    let mechanism = match kind {
        KeyKind::Rsa(bits) => {
            public.push(Attribute::ModulusBits((bits as u64).into()));
            public.push(Attribute::PublicExponent(vec![1, 0, 1]));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let oid = if kind == KeyKind::EcP256 {
                der::OID_P256
            } else {
                der::OID_P384
            };
            let mut params = vec![0x06, oid.len() as u8];
            params.extend_from_slice(oid);
            public.push(Attribute::EcParams(params));
            Mechanism::EccKeyPairGen
        }
    };
    session
        .generate_key_pair(&mechanism, &public, &common(true))
        .map_err(|e| SignerError::pkcs11(token.label(), Function::GenerateKeyPair, e))?;
    Ok(())
}

/// A one-session pool on the key `uri` names, only to sign a certificate or a CSR: no
/// calibration burst, no admission control. It makes and checks a test signature at
/// start, like the proxy's pools.
pub fn signing_pool(
    module: &Path,
    env: &BTreeMap<String, String>,
    uri: Pkcs11Uri,
    pin: Secret,
) -> Result<SignerPool, SignerError> {
    SignerPool::start(&PoolSettings {
        module: module.to_path_buf(),
        env: env.clone(),
        uri,
        pin,
        sessions: 1,
        queue_depth: 4,
        sign_timeout: Duration::from_secs(10),
        batch_max: 1,
        capacity: Some(1.0),
        admission: Admission {
            enabled: false,
            ..Admission::default()
        },
    })
}
