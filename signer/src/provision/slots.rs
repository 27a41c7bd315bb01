//! What a module's slots hold, for `hsmgate token list`: each slot, its token (or that
//! it has none, or an uninitialised one), and the public keys readable without a PIN.

use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use crate::error::{Function, SignerError};
use crate::module::Module;
use crate::token::hex;

/// One slot of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSummary {
    /// The slot id (`slot-id=` in a URI).
    pub id: u64,
    /// The slot's description.
    pub description: String,
    /// Its token; `None` when no token is present.
    pub token: Option<TokenSummary>,
}

/// A token present in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSummary {
    /// Its label; `None` when the token is not initialised yet (no label, no PIN).
    pub label: Option<String>,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Whether the user PIN is set.
    pub user_pin_initialized: bool,
    /// Public key objects readable without logging in.
    pub public_keys: Vec<PublicKeySummary>,
}

/// A public key object on a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeySummary {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`, in hex.
    pub id: String,
    /// `CKA_KEY_TYPE`, e.g. `CKK_RSA`.
    pub key_type: String,
}

/// Every slot of the module, with or without a token.
pub fn list_slots(module: &Arc<Module>) -> Result<Vec<SlotSummary>, SignerError> {
    let ctx = module.ctx();
    let name = module.path().display().to_string();
    let slots = ctx
        .get_all_slots()
        .map_err(|e| SignerError::pkcs11(&name, Function::GetSlotList, e))?;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        let info = ctx
            .get_slot_info(slot)
            .map_err(|e| SignerError::pkcs11(&name, Function::GetSlotInfo, e))?;
        let token = match info.token_present() {
            false => None,
            true => {
                let t = ctx
                    .get_token_info(slot)
                    .map_err(|e| SignerError::pkcs11(&name, Function::GetTokenInfo, e))?;
                let label = t
                    .token_initialized()
                    .then(|| t.label().trim_end().to_string());
                let public_keys = match &label {
                    Some(label) => public_keys(module, slot, label)?,
                    None => Vec::new(),
                };
                Some(TokenSummary {
                    label,
                    manufacturer: t.manufacturer_id().trim_end().to_string(),
                    model: t.model().trim_end().to_string(),
                    serial: t.serial_number().trim_end().to_string(),
                    user_pin_initialized: t.user_pin_initialized(),
                    public_keys,
                })
            }
        };
        out.push(SlotSummary {
            id: slot.id(),
            description: info.slot_description().trim_end().to_string(),
            token,
        });
    }
    Ok(out)
}

fn public_keys(
    module: &Arc<Module>,
    slot: cryptoki::slot::Slot,
    label: &str,
) -> Result<Vec<PublicKeySummary>, SignerError> {
    let session = module
        .ctx()
        .open_ro_session(slot)
        .map_err(|e| SignerError::pkcs11(label, Function::OpenSession, e))?;
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
        .map_err(|e| SignerError::pkcs11(label, Function::FindObjects, e))?;
    let mut keys = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Id,
                    AttributeType::KeyType,
                ],
            )
            .map_err(|e| SignerError::pkcs11(label, Function::GetAttributeValue, e))?;
        let mut key = PublicKeySummary {
            label: String::new(),
            id: String::new(),
            key_type: String::new(),
        };
        for a in attrs {
            match a {
                Attribute::Label(l) => key.label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(i) => key.id = hex(&i),
                Attribute::KeyType(t) => key.key_type = t.to_string(),
                _ => {}
            }
        }
        keys.push(key);
    }
    Ok(keys)
}
