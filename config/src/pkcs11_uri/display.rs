//! Printing a [`Pkcs11Uri`] back in RFC 7512 form, never showing the PIN.

use std::fmt;

use super::Pkcs11Uri;
use crate::secret::hide_pin_name;

const PATH_SAFE: &[u8] = b":[]@!$&'()*+,=";
const QUERY_SAFE: &[u8] = b":[]@!$'()*+,;/?|";

fn encode(bytes: &[u8], safe: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || safe.contains(&b) {
            out.push(char::from(b));
        } else {
            out.extend([
                '%',
                char::from(HEX[usize::from(b >> 4)]),
                char::from(HEX[usize::from(b & 15)]),
            ]);
        }
    }
    out
}

/// Prints the URI back in RFC 7512 form; a PIN is printed as `pin-value=***`, and a
/// `pin-source` file name that may be a PIN as `***`.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |v: &Option<String>| v.as_deref().map(|v| encode(v.as_bytes(), PATH_SAFE));
        let q = |v: &Option<String>| v.as_deref().map(|v| encode(v.as_bytes(), QUERY_SAFE));
        let path = [
            ("token", p(&self.token)),
            ("manufacturer", p(&self.manufacturer)),
            ("serial", p(&self.serial)),
            ("model", p(&self.model)),
            ("library-manufacturer", p(&self.library_manufacturer)),
            ("library-description", p(&self.library_description)),
            ("library-version", p(&self.library_version)),
            ("slot-description", p(&self.slot_description)),
            ("slot-manufacturer", p(&self.slot_manufacturer)),
            ("slot-id", self.slot_id.map(|n| n.to_string())),
            ("object", p(&self.object)),
            ("type", self.object_type.map(|t| t.as_str().to_owned())),
            ("id", self.id.as_deref().map(|id| encode(id, b""))),
        ];
        let query = [
            (
                "pin-source",
                q(&self.pin_source.as_deref().map(hide_pin_name)),
            ),
            (
                "pin-value",
                self.pin_value.as_ref().map(|_| "***".to_owned()),
            ),
            ("module-name", q(&self.module_name)),
            ("module-path", q(&self.module_path)),
            ("x-hsmgate-group", q(&self.group)),
        ];
        f.write_str("pkcs11:")?;
        for (list, sep, lead) in [(&path[..], ";", ""), (&query[..], "&", "?")] {
            let mut first = true;
            for (name, value) in list.iter().filter_map(|(n, v)| Some((n, v.as_ref()?))) {
                f.write_str(if first { lead } else { sep })?;
                write!(f, "{name}={value}")?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_without_pin() {
        for s in [
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;serial=;\
             model=1.0;slot-id=0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91\
             ?pin-source=file:/etc/token_pin&module-path=/usr/lib/x%20y.so",
            "pkcs11:object=a%3Bb%3Fc;library-version=1",
            "pkcs11:",
        ] {
            let u = Pkcs11Uri::parse(s).unwrap();
            assert_eq!(Pkcs11Uri::parse(&u.to_string()).unwrap(), u, "{u}");
        }
        let u =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=s3cr%65t&module-name=m").unwrap();
        assert_eq!(
            u.to_string(),
            "pkcs11:token=t;object=k?pin-value=***&module-name=m"
        );
        let typed = Pkcs11Uri::parse("pkcs11:token=t?pin-source=file:/etc/4711").unwrap();
        assert_eq!(typed.to_string(), "pkcs11:token=t?pin-source=file:/etc/***");
        let typed = Pkcs11Uri::parse("pkcs11:token=t?pin-source=4711").unwrap();
        assert_eq!(typed.to_string(), "pkcs11:token=t?pin-source=***");
        assert_eq!(
            format!("{:?} {}", u.pin_value, u.pin_value.as_ref().unwrap()),
            "Some(***) ***"
        );
    }
}
