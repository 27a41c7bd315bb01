//! Finding things on a token: the slot whose token matches an RFC 7512 URI, logging in
//! once for the application, the private key the URI names, its public key (as a
//! SubjectPublicKeyInfo, to compare with the certificate), and the mechanisms the token
//! offers for it.

use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsmgate_config::{Pkcs11Uri, Secret};

use crate::der;
use crate::error::{Function, KeyProblem, SignerError};
use crate::module::Module;
use crate::pin_check::{self, PinCheck};

/// A token found in a module's slot list.
#[derive(Debug, Clone)]
pub struct Token {
    pub(crate) module: Arc<Module>,
    pub(crate) slot: Slot,
    pub(crate) label: String,
    pub(crate) mechanisms: Vec<MechanismType>,
    /// The URI's token attributes (to find it again elsewhere; no PIN, no object).
    pub(crate) selector: Pkcs11Uri,
}

/// The kind and size of a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyKind::EcP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcP384 => f.write_str("ECDSA P-384"),
        }
    }
}

/// A private key on the token, with its public half.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub(crate) handle: ObjectHandle,
    /// The object's label (or its id in hex when it has none).
    pub name: String,
    /// Its type and size.
    pub kind: KeyKind,
    /// Its public key as a DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

/// What the URI asks for, for error messages (never includes the PIN).
pub(crate) fn describe_token(uri: &Pkcs11Uri) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("token", &uri.token),
        ("serial", &uri.serial),
        ("manufacturer", &uri.manufacturer),
        ("model", &uri.model),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(";")
}

fn describe_object(uri: &Pkcs11Uri) -> String {
    let mut parts = Vec::new();
    if let Some(o) = &uri.object {
        parts.push(format!("object={o}"));
    }
    if let Some(id) = &uri.id {
        parts.push(format!("id={}", hex(id)));
    }
    parts.join(";")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Token {
    /// Find the one token in `module` that matches the URI's token attributes.
    pub fn find(module: &Arc<Module>, uri: &Pkcs11Uri) -> Result<Token, SignerError> {
        let mod_name = module.path().display().to_string();
        let ctx = module.ctx();
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| SignerError::pkcs11(&mod_name, Function::GetSlotList, e))?;
        let mut present = Vec::new();
        for slot in slots {
            if uri.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| SignerError::pkcs11(&mod_name, Function::GetTokenInfo, e))?;
            let label = info.label().trim_end().to_string();
            let matches = uri.token.as_deref().is_none_or(|t| t == label)
                && uri
                    .serial
                    .as_deref()
                    .is_none_or(|s| s == info.serial_number().trim_end())
                && uri
                    .manufacturer
                    .as_deref()
                    .is_none_or(|m| m == info.manufacturer_id().trim_end())
                && uri
                    .model
                    .as_deref()
                    .is_none_or(|m| m == info.model().trim_end());
            if matches {
                // Ask for the mechanisms we use one by one: C_GetMechanismList returns
                // vendor and legacy mechanisms that cryptoki logs as errors.
                let mechanisms = crate::scheme::MECHANISMS
                    .iter()
                    .copied()
                    .filter(|m| ctx.get_mechanism_info(slot, *m).is_ok())
                    .collect();
                let selector = Pkcs11Uri {
                    token: uri.token.clone(),
                    manufacturer: uri.manufacturer.clone(),
                    serial: uri.serial.clone(),
                    model: uri.model.clone(),
                    slot_id: uri.slot_id,
                    ..Pkcs11Uri::default()
                };
                return Ok(Token {
                    module: Arc::clone(module),
                    slot,
                    label,
                    mechanisms,
                    selector,
                });
            }
            present.push(match info.token_initialized() {
                true => format!("{label:?}"),
                false => format!("an uninitialised token in slot {}", slot.id()),
            });
        }
        Err(SignerError::TokenNotFound {
            wanted: describe_token(uri),
            module: module.path().to_path_buf(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Open a read-only session. It is not closed on drop: its owner closes it (see
    /// `worker`); sessions left open are closed when the module instance is finalised.
    pub fn open_session(&self) -> Result<Session, SignerError> {
        self.module
            .ctx()
            .open_ro_session_no_drop(self.slot)
            .map_err(|e| SignerError::pkcs11(&self.label, Function::OpenSession, e))
    }

    /// Open a read-write session (for provisioning).
    pub fn open_rw_session(&self) -> Result<Session, SignerError> {
        self.module
            .ctx()
            .open_rw_session(self.slot)
            .map_err(|e| SignerError::pkcs11(&self.label, Function::OpenSession, e))
    }

    /// Log the application in. Login is per application, not per session: a second
    /// login answers CKR_USER_ALREADY_LOGGED_IN whatever the PIN, which is success
    /// when the PIN is the one this process logged in with, and otherwise is checked
    /// elsewhere (see `pin_check`).
    pub fn login(&self, session: &Session, pin: &Secret) -> Result<(), SignerError> {
        let auth = AuthPin::from(pin.expose().to_string());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) => {
                pin_check::logged_in(self.module.path(), self.slot.id(), &self.label, pin);
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                let check = PinCheck {
                    module: self.module.path(),
                    env: self.module.env(),
                    token: &self.selector,
                    label: &self.label,
                    pin,
                };
                pin_check::already_logged_in(&check, self.slot.id())
            }
            Err(e) => Err(SignerError::pkcs11(&self.label, Function::Login, e)),
        }
    }

    /// Whether the token offers `mechanism`.
    pub(crate) fn has(&self, mechanism: MechanismType) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    /// Find the private key the URI names and read its public key.
    pub fn find_key(&self, session: &Session, uri: &Pkcs11Uri) -> Result<KeyInfo, SignerError> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| SignerError::pkcs11(&self.label, Function::FindObjects, e))?;
        let handle = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(SignerError::KeyNotFound {
                    token: self.label.clone(),
                    wanted: describe_object(uri),
                });
            }
            many => {
                return Err(SignerError::KeyAmbiguous {
                    token: self.label.clone(),
                    wanted: describe_object(uri),
                    count: many.len(),
                });
            }
        };
        let attrs = self.attributes(
            session,
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Label,
                AttributeType::Id,
            ],
        )?;
        let (mut key_type, mut label, mut id) = (None, None, Vec::new());
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        let name = label
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| format!("id={}", hex(&id)));
        let unsupported = |reason: KeyProblem| SignerError::UnsupportedKey {
            token: self.label.clone(),
            key: name.clone(),
            reason,
        };
        let (kind, spki) = match key_type {
            Some(KeyType::RSA) => self.rsa_public(session, handle, &id, &unsupported)?,
            Some(KeyType::EC) => self.ec_public(session, handle, &id, &unsupported)?,
            other => return Err(unsupported(KeyProblem::KeyType(other))),
        };
        Ok(KeyInfo {
            handle,
            name,
            kind,
            spki,
        })
    }

    fn attributes(
        &self,
        session: &Session,
        handle: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>, SignerError> {
        session
            .get_attributes(handle, types)
            .map_err(|e| SignerError::pkcs11(&self.label, Function::GetAttributeValue, e))
    }

    /// The public key object with the same CKA_ID, if there is one.
    fn public_twin(
        &self,
        session: &Session,
        id: &[u8],
    ) -> Result<Option<ObjectHandle>, SignerError> {
        if id.is_empty() {
            return Ok(None);
        }
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(|e| SignerError::pkcs11(&self.label, Function::FindObjects, e))?;
        Ok(found.first().copied())
    }

    fn rsa_public(
        &self,
        session: &Session,
        handle: ObjectHandle,
        id: &[u8],
        unsupported: &dyn Fn(KeyProblem) -> SignerError,
    ) -> Result<(KeyKind, Vec<u8>), SignerError> {
        let wanted = [AttributeType::Modulus, AttributeType::PublicExponent];
        type Parts = (Option<Vec<u8>>, Option<Vec<u8>>);
        let read = |h| -> Result<Parts, SignerError> {
            let (mut n, mut e) = (None, None);
            for a in self.attributes(session, h, &wanted)? {
                match a {
                    Attribute::Modulus(v) if !v.is_empty() => n = Some(v),
                    Attribute::PublicExponent(v) if !v.is_empty() => e = Some(v),
                    _ => {}
                }
            }
            Ok((n, e))
        };
        let (mut n, mut e) = read(handle)?;
        if (n.is_none() || e.is_none())
            && let Some(public) = self.public_twin(session, id)?
        {
            (n, e) = read(public)?;
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(unsupported(KeyProblem::NoRsaPublicKey));
        };
        let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
        if !(2048..=8192).contains(&bits) {
            return Err(unsupported(KeyProblem::RsaSize(bits)));
        }
        Ok((KeyKind::Rsa(bits), der::rsa_spki(&n, &e)))
    }

    fn ec_public(
        &self,
        session: &Session,
        handle: ObjectHandle,
        id: &[u8],
        unsupported: &dyn Fn(KeyProblem) -> SignerError,
    ) -> Result<(KeyKind, Vec<u8>), SignerError> {
        let params = self
            .attributes(session, handle, &[AttributeType::EcParams])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcParams(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| unsupported(KeyProblem::NoEcParams))?;
        let (kind, curve) = match der::named_curve(&params) {
            Some(oid) if oid == der::OID_P256 => (KeyKind::EcP256, der::OID_P256),
            Some(oid) if oid == der::OID_P384 => (KeyKind::EcP384, der::OID_P384),
            _ => return Err(unsupported(KeyProblem::Curve)),
        };
        // The private key object has no CKA_EC_POINT: read it from the public key.
        let point = match self.public_twin(session, id)? {
            Some(public) => self
                .attributes(session, public, &[AttributeType::EcPoint])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                }),
            None => None,
        }
        .ok_or_else(|| unsupported(KeyProblem::NoEcPoint))?;
        Ok((kind, der::ec_spki(curve, der::ec_point(&point))))
    }
}
