//! RFC 7512 `pkcs11:` URIs, parsed by hand.
//!
//! The parser is hand-written rather than taken from a crate for two reasons:
//! every error must name the offending attribute (and its byte offset, which the
//! loader turns into a column of the config file), and keys are also written
//! nginx/OpenSSL-engine style as `engine:pkcs11:pkcs11:...`, which
//! [`parse_key_string`] accepts. The PIN (`pin-value`) is held in a [`Secret`]
//! and is never printed, neither by `Debug` nor by [`Pkcs11Uri`]'s `Display`.

use std::fmt;
use std::str::FromStr;

pub use self::error::{UriError, UriErrorReason};
pub(crate) use crate::secret::Secret;

mod display;
mod error;

/// The object class named by the `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// `type=private`: a private key.
    Private,
    /// `type=public`: a public key.
    Public,
    /// `type=cert`: a certificate.
    Cert,
    /// `type=secret-key`: a symmetric key.
    SecretKey,
    /// `type=data`: a data object.
    Data,
}

impl ObjectType {
    const EXPECTED: &'static str = "private, public, cert, secret-key, data";

    /// The attribute value as written in a URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
            Self::Cert => "cert",
            Self::SecretKey => "secret-key",
            Self::Data => "data",
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed RFC 7512 PKCS#11 URI. Absent attributes are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: token label.
    pub token: Option<String>,
    /// `manufacturer`: token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: token serial number.
    pub serial: Option<String>,
    /// `model`: token model.
    pub model: Option<String>,
    /// `library-manufacturer`: module manufacturer.
    pub library_manufacturer: Option<String>,
    /// `library-description`: module description.
    pub library_description: Option<String>,
    /// `library-version`: module version, `MAJOR[.MINOR]`.
    pub library_version: Option<String>,
    /// `slot-description`: slot description.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`: slot manufacturer.
    pub slot_manufacturer: Option<String>,
    /// `slot-id`: numeric slot identifier.
    pub slot_id: Option<u64>,
    /// `object`: object label.
    pub object: Option<String>,
    /// `id`: object identifier (`CKA_ID`), raw bytes after percent-decoding.
    pub id: Option<Vec<u8>>,
    /// `type`: object class.
    pub object_type: Option<ObjectType>,
    /// `pin-source` (query): where to read the PIN from, e.g. `file:/etc/pin`.
    pub pin_source: Option<String>,
    /// `pin-value` (query): the PIN itself.
    pub pin_value: Option<Secret>,
    /// `module-name` (query): module name without path or suffix.
    pub module_name: Option<String>,
    /// `module-path` (query): module file path.
    pub module_path: Option<String>,
    /// `x-hsmgate-group` (vendor attribute, path or query): the key is held by this HA
    /// group of HSMs (nginx configurations; the group names the tokens).
    pub group: Option<String>,
}

const QUERY_ATTRS: [&str; 4] = ["pin-source", "pin-value", "module-name", "module-path"];

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Path,
    Query,
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI (the scheme is matched case-insensitively).
    pub fn parse(s: &str) -> Result<Self, UriError> {
        parse_at(s, 0)
    }

    fn text_field(&mut self, part: Part, name: &str) -> Option<&mut Option<String>> {
        Some(match (part, name) {
            (Part::Path, "token") => &mut self.token,
            (Part::Path, "manufacturer") => &mut self.manufacturer,
            (Part::Path, "serial") => &mut self.serial,
            (Part::Path, "model") => &mut self.model,
            (Part::Path, "library-manufacturer") => &mut self.library_manufacturer,
            (Part::Path, "library-description") => &mut self.library_description,
            (Part::Path, "library-version") => &mut self.library_version,
            (Part::Path, "slot-description") => &mut self.slot_description,
            (Part::Path, "slot-manufacturer") => &mut self.slot_manufacturer,
            (Part::Path, "object") => &mut self.object,
            (Part::Query, "pin-source") => &mut self.pin_source,
            (Part::Query, "module-name") => &mut self.module_name,
            (Part::Query, "module-path") => &mut self.module_path,
            _ => return None,
        })
    }

    /// Sets one `name=value` attribute found at byte `pos`.
    fn set(&mut self, part: Part, attr: &str, pos: usize) -> Result<(), UriError> {
        let Some((name, raw)) = attr.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            // Not echoed where it may be (part of) a PIN: anything in the query (a PIN
            // with an unescaped `&` leaves its tail there), or a `pin-value` missing
            // its `=`. The byte offset says where.
            let secret = part == Part::Query || attr.to_ascii_lowercase().starts_with("pin");
            let (attribute, reason) = match attr.is_empty() || attr.starts_with('=') {
                true => (None, UriErrorReason::EmptyAttribute),
                false if secret => (None, UriErrorReason::MissingEquals),
                false => (Some(attr.to_owned()), UriErrorReason::MissingEquals),
            };
            return Err(UriError {
                attribute,
                offset: pos,
                reason,
            });
        };
        let err = |offset, reason| UriError {
            attribute: Some(name.to_owned()),
            offset,
            reason,
        };
        if name.starts_with("x-") && name != "x-hsmgate-group" {
            return Ok(());
        }
        let vpos = pos + name.len() + 1;
        let bytes = decode(raw).map_err(|(i, bad)| {
            // Part of a PIN is never echoed.
            let bad = if name == "pin-value" {
                "%..".into()
            } else {
                bad
            };
            err(vpos + i, UriErrorReason::BadEscape(bad))
        })?;
        let text =
            || String::from_utf8(bytes.clone()).map_err(|_| err(vpos, UriErrorReason::NotUtf8));
        let duplicate = || err(pos, UriErrorReason::Duplicate);
        match (part, name) {
            (Part::Path, "id") if self.id.is_some() => return Err(duplicate()),
            (Part::Path, "id") => self.id = Some(bytes),
            (Part::Path, "type") if self.object_type.is_some() => return Err(duplicate()),
            (Part::Path, "type") => {
                let value = text()?;
                let found = [ObjectType::Private, ObjectType::Public, ObjectType::Cert]
                    .into_iter()
                    .chain([ObjectType::SecretKey, ObjectType::Data])
                    .find(|t| t.as_str() == value);
                let expected = ObjectType::EXPECTED;
                let unknown = UriErrorReason::UnknownValue { value, expected };
                self.object_type = Some(found.ok_or_else(|| err(vpos, unknown))?);
            }
            (Part::Path, "slot-id") if self.slot_id.is_some() => return Err(duplicate()),
            (Part::Path, "slot-id") => {
                let value = text()?;
                let n = value
                    .parse()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                self.slot_id = Some(n.ok_or_else(|| err(vpos, UriErrorReason::NotANumber(value)))?);
            }
            // RFC 7512 puts pin-value in the query; libp11 (and the guides written for
            // it) also take it in the path, so both are accepted.
            (_, "x-hsmgate-group") if self.group.is_some() => return Err(duplicate()),
            (_, "x-hsmgate-group") => self.group = Some(text()?),
            (_, "pin-value") if self.pin_value.is_some() => return Err(duplicate()),
            (_, "pin-value") => self.pin_value = Some(Secret::new(text()?)),
            _ => {
                let Some(field) = self.text_field(part, name) else {
                    let reason = match part {
                        Part::Path if QUERY_ATTRS.contains(&name) => {
                            UriErrorReason::WrongPart("query (after \"?\")")
                        }
                        Part::Query if is_path_attr(name) => {
                            UriErrorReason::WrongPart("path (before \"?\")")
                        }
                        _ => UriErrorReason::UnknownAttribute,
                    };
                    return Err(err(pos, reason));
                };
                if field.is_some() {
                    return Err(duplicate());
                }
                let value = text()?;
                if name == "library-version" && !is_version(&value) {
                    return Err(err(vpos, UriErrorReason::BadVersion(value)));
                }
                *field = Some(value);
            }
        }
        Ok(())
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse(s)
    }
}

/// Parses a key string: an RFC 7512 URI, or the nginx/OpenSSL-engine form
/// `engine:pkcs11:pkcs11:...`. Any other `engine:NAME:` is an error naming
/// the engine. Error offsets count from the start of `s`.
pub fn parse_key_string(s: &str) -> Result<Pkcs11Uri, UriError> {
    let Some(rest) = s.strip_prefix("engine:") else {
        return parse_at(s, 0);
    };
    match rest.split_once(':') {
        Some(("pkcs11", uri)) => match libp11_key_id(uri) {
            Some(legacy) => Ok(legacy),
            None => parse_at(uri, "engine:pkcs11:".len()),
        },
        other => {
            let engine = other.map_or(rest, |(name, _)| name).to_owned();
            let reason = UriErrorReason::UnsupportedEngine(engine);
            Err(UriError {
                attribute: None,
                offset: "engine:".len(),
                reason,
            })
        }
    }
}

/// libp11's key identifiers before RFC 7512 URIs (its engine still reads them, and older
/// nginx guides write them): `id_HEX`, `label_TEXT`, `slot_N-id_HEX`, `slot_N-label_TEXT`,
/// `N:HEX`, or a bare `HEX` id; the slot as `slot-id` (decimal). None for anything else
/// (a URI, or an error the URI parser then names).
fn libp11_key_id(s: &str) -> Option<Pkcs11Uri> {
    let hex = |h: &str| -> Option<Vec<u8>> {
        if h.is_empty() || !h.len().is_multiple_of(2) {
            return None;
        }
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect()
    };
    let slot = |n: &str| n.parse::<u64>().ok();
    let mut uri = Pkcs11Uri::default();
    let (slot_id, object) = match s.strip_prefix("slot_") {
        Some(rest) => {
            let (n, object) = rest.split_once('-')?;
            (Some(slot(n)?), object)
        }
        None => match s.split_once(':') {
            Some((n, id)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                uri.slot_id = Some(slot(n)?);
                uri.id = Some(hex(id)?);
                return Some(uri);
            }
            _ => (None, s),
        },
    };
    uri.slot_id = slot_id;
    if let Some(id) = object.strip_prefix("id_") {
        uri.id = Some(hex(id)?);
    } else if let Some(label) = object.strip_prefix("label_") {
        (!label.is_empty()).then_some(())?;
        uri.object = Some(label.to_owned());
    } else if slot_id.is_none() && !object.contains(':') {
        uri.id = Some(hex(object)?);
    } else {
        return None;
    }
    Some(uri)
}

fn parse_at(s: &str, base: usize) -> Result<Pkcs11Uri, UriError> {
    const SCHEME: &str = "pkcs11:";
    let rest = s
        .get(..SCHEME.len())
        .filter(|p| p.eq_ignore_ascii_case(SCHEME))
        .map(|_| &s[SCHEME.len()..])
        .ok_or(UriError {
            attribute: None,
            offset: base,
            reason: UriErrorReason::NotPkcs11,
        })?;
    let (path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(p, q)| (p, Some(q)));
    let mut uri = Pkcs11Uri::default();
    let mut pos = base + SCHEME.len();
    for (part, text, sep) in [(Part::Path, Some(path), ';'), (Part::Query, query, '&')] {
        let Some(text) = text else { continue };
        if !text.is_empty() {
            for attr in text.split(sep) {
                uri.set(part, attr, pos)?;
                pos += attr.len() + 1;
            }
        } else {
            pos += 1;
        }
    }
    Ok(uri)
}

fn is_path_attr(name: &str) -> bool {
    matches!(name, "id" | "type" | "slot-id")
        || Pkcs11Uri::default().text_field(Part::Path, name).is_some()
}

fn is_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    v.split_once('.')
        .map_or(digits(v), |(a, b)| digits(a) && digits(b))
}

/// Percent-decodes `raw`; on error returns the byte index and the bad escape.
pub(crate) fn decode(raw: &str) -> Result<Vec<u8>, (usize, String)> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1..i + 3) {
            Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap_or_default());
                i += 3;
            }
            _ => return Err((i, raw[i..].chars().take(3).collect())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(s: &str) -> UriError {
        parse_key_string(s).expect_err(s)
    }

    #[test]
    fn rfc7512_examples() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;\
             model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=\
             ?pin-source=file:/etc/token_pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.model.as_deref(), Some("1.0"));
        assert_eq!(u.object.as_deref(), Some("my-certificate"));
        assert_eq!(u.object_type, Some(ObjectType::Cert));
        assert_eq!(
            u.id,
            Some(vec![0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91])
        );
        assert_eq!(u.serial.as_deref(), Some(""));
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/token_pin"));

        let u: Pkcs11Uri = "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11"
            .parse()
            .unwrap();
        assert_eq!(
            (u.object.as_deref(), u.object_type),
            (Some("my-sign-key"), Some(ObjectType::Private))
        );
        assert_eq!(u.module_name.as_deref(), Some("mypkcs11"));

        let u = Pkcs11Uri::parse(
            "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
        )
        .unwrap();
        assert_eq!(u.pin_value.as_ref().map(Secret::expose), Some("the-pin"));
        assert!(!format!("{u:?}").contains("the-pin"));
        assert!(Pkcs11Uri::parse("pkcs11:").unwrap() == Pkcs11Uri::default());
    }

    #[test]
    fn other_attributes_and_vendor_extensions() {
        let u = Pkcs11Uri::parse(
            "PKCS11:slot-id=3;library-version=2.40;x-vendor=%zz?module-path=/usr/lib/p11.so&x-q=1",
        )
        .unwrap();
        assert_eq!(u.slot_id, Some(3));
        assert_eq!(u.library_version.as_deref(), Some("2.40"));
        assert_eq!(u.module_path.as_deref(), Some("/usr/lib/p11.so"));
    }

    #[test]
    fn engine_prefix() {
        let u = parse_key_string("engine:pkcs11:pkcs11:token=demo;id=%01").unwrap();
        assert_eq!((u.token.as_deref(), u.id), (Some("demo"), Some(vec![1])));
        let e = fail("engine:tpm2:pkcs11:token=demo");
        assert_eq!(e.reason, UriErrorReason::UnsupportedEngine("tpm2".into()));
        assert!(e.to_string().contains("engine \"tpm2\""), "{e}");
        // offsets count from the start of the whole string
        for (legacy, slot, id, object) in [
            ("engine:pkcs11:id_45", None, Some(vec![0x45]), None),
            ("engine:pkcs11:label_tls", None, None, Some("tls")),
            (
                "engine:pkcs11:slot_0-id_01ab",
                Some(0),
                Some(vec![0x01, 0xab]),
                None,
            ),
            (
                "engine:pkcs11:slot_2-label_web key",
                Some(2),
                None,
                Some("web key"),
            ),
            ("engine:pkcs11:0:01", Some(0), Some(vec![0x01]), None),
            ("engine:pkcs11:0102", None, Some(vec![0x01, 0x02]), None),
        ] {
            let u = parse_key_string(legacy).unwrap_or_else(|e| panic!("{legacy}: {e}"));
            assert_eq!(
                (u.slot_id, u.id, u.object.as_deref()),
                (slot, id, object),
                "{legacy}"
            );
        }
        for bad in [
            "engine:pkcs11:id_4",
            "engine:pkcs11:slot_x-id_01",
            "engine:pkcs11:label_",
        ] {
            assert!(parse_key_string(bad).is_err(), "{bad}");
        }
        let e = fail("engine:pkcs11:pkcs11:token=%G1");
        assert_eq!((e.offset, e.attribute.as_deref()), (27, Some("token")));
        assert_eq!(fail("/etc/key.pem").reason, UriErrorReason::NotPkcs11);
    }

    #[test]
    fn errors_name_the_attribute() {
        let e = fail("pkcs11:token=a%2");
        assert_eq!((e.attribute.as_deref(), e.offset), (Some("token"), 14));
        assert_eq!(e.reason, UriErrorReason::BadEscape("%2".into()));
        let e = fail("pkcs11:token=a;colour=red");
        assert_eq!(
            (e.attribute.as_deref(), e.offset, &e.reason),
            (Some("colour"), 15, &UriErrorReason::UnknownAttribute)
        );
        assert!(
            e.to_string()
                .starts_with("attribute \"colour\": unknown attribute"),
            "{e}"
        );
        let e = fail("pkcs11:token=a;object=b;token=c");
        assert_eq!(
            (e.attribute.as_deref(), e.offset, e.reason),
            (Some("token"), 24, UriErrorReason::Duplicate)
        );
        assert_eq!(
            fail("pkcs11:id=%01;id=%02").reason,
            UriErrorReason::Duplicate
        );
        assert_eq!(
            fail("pkcs11:type=foo").to_string(),
            "attribute \"type\": unknown value \"foo\" (expected private, public, cert, secret-key, data)"
        );
        assert_eq!(
            fail("pkcs11:slot-id=-1").reason,
            UriErrorReason::NotANumber("-1".into())
        );
        assert_eq!(
            fail("pkcs11:library-version=v2").reason,
            UriErrorReason::BadVersion("v2".into())
        );
        assert_eq!(fail("pkcs11:object=%FF").reason, UriErrorReason::NotUtf8);
        assert_eq!(
            fail("pkcs11:token=a;;object=b").reason,
            UriErrorReason::EmptyAttribute
        );
        assert_eq!(fail("pkcs11:token").reason, UriErrorReason::MissingEquals);
        let e = fail("pkcs11:token=a;pin-source=file:/p");
        assert!(matches!(e.reason, UriErrorReason::WrongPart(_)), "{e}");
        // pin-value in the path, as libp11 takes it; twice (path and query) is an error
        // that does not echo the PIN.
        let u = parse_key_string("pkcs11:token=shop;object=k;type=private;pin-value=1234").unwrap();
        assert_eq!(u.pin_value.as_ref().map(Secret::expose), Some("1234"));
        // An attribute without `=` where it may be a PIN (a typo for `pin-value=`, or
        // the tail of a PIN with an unescaped `&`) is not echoed.
        for uri in [
            "pkcs11:token=a;pin-value1234",
            "pkcs11:token=a?pin-value=12&34",
            "pkcs11:token=a?PIN-VALUE:1234",
        ] {
            let e = fail(uri);
            assert_eq!(e.reason, UriErrorReason::MissingEquals, "{uri}");
            assert!(!e.to_string().contains("34"), "{uri}: {e}");
        }
        let e = fail("pkcs11:token=a;pin-value=1234?pin-value=1234");
        assert!(
            e.reason == UriErrorReason::Duplicate && !e.to_string().contains("1234"),
            "{e}"
        );
    }
}
