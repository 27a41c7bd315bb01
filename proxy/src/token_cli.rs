//! `hsmgate token`: put a key and a certificate on your own token with hsmgate itself,
//! no `libengine-pkcs11-openssl` needed. `list` shows the module's slots, `init` makes a
//! token in the first free slot, `keygen` generates a key pair on a token (private half
//! sensitive and non-extractable, `CKA_ID` set), and `csr` writes a certificate signing
//! request, or with `--self-signed` a certificate, that the token key signs. The work
//! is in [`hsmgate_signer::provision`], shared with `hsmgate demo`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use hsmgate_config::{PinSource, Pkcs11Uri, Secret, UriError};
use hsmgate_signer::provision::{self, ProvisionError, SlotSummary};
use hsmgate_signer::{KeyKind, Module, SignerError, Token};
use rcgen::{CertificateParams, DnType, SanType};

use crate::error::ProxyError;

/// `hsmgate token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List the module's slots: each token's label, or that a slot's token is not
    /// initialised, and the public keys readable without a PIN (with their URIs).
    List {
        /// PKCS#11 module [default: SoftHSM's, found in the usual places].
        #[arg(long)]
        module: Option<PathBuf>,
    },
    /// Initialise the first uninitialised token as LABEL and set its user PIN
    /// (C_InitToken, C_InitPIN).
    Init {
        /// PKCS#11 module [default: SoftHSM's].
        #[arg(long)]
        module: Option<PathBuf>,
        /// The new token's label.
        #[arg(long)]
        label: String,
        /// File holding the user PIN to set.
        #[arg(long)]
        pin_file: PathBuf,
        /// File holding the security officer PIN to set.
        #[arg(long)]
        so_pin_file: PathBuf,
    },
    /// Generate a key pair on a token (C_GenerateKeyPair): the private key is sensitive
    /// and non-extractable. Prints the key's pkcs11: URI.
    Keygen {
        /// PKCS#11 module [default: SoftHSM's].
        #[arg(long)]
        module: Option<PathBuf>,
        /// The token's label.
        #[arg(long)]
        token: String,
        /// The key's label (CKA_LABEL, `object=` in the URI).
        #[arg(long)]
        label: String,
        /// The key's CKA_ID in hex [default: 8 random bytes].
        #[arg(long)]
        id: Option<String>,
        /// Key type and size.
        #[arg(long = "key", value_enum, default_value = "rsa2048")]
        kind: KeyAlg,
        /// File holding the user PIN.
        #[arg(long)]
        pin_file: PathBuf,
    },
    /// Write a certificate signing request (PKCS#10), or with --self-signed a
    /// certificate, for a token key; the token signs it.
    Csr {
        /// The key's pkcs11: URI (as `hsmgate token keygen` printed it).
        #[arg(long)]
        key: String,
        /// PKCS#11 module [default: the URI's module-path, else SoftHSM's].
        #[arg(long)]
        module: Option<PathBuf>,
        /// File holding the user PIN [default: the URI's pin-source].
        #[arg(long)]
        pin_file: Option<PathBuf>,
        /// Subject, e.g. 'CN=www.example.com,O=Example' (CN, O, OU, C, ST, L; `/CN=…/O=…` works too).
        #[arg(long)]
        subject: String,
        /// Subject alternative name, `DNS:name` or `IP:address`; repeat for more
        /// [default: the CN].
        #[arg(long = "san", value_name = "DNS:NAME|IP:ADDR")]
        sans: Vec<String>,
        /// Write a self-signed certificate instead of a CSR.
        #[arg(long)]
        self_signed: bool,
        /// Validity of the self-signed certificate, from today.
        #[arg(long, default_value_t = 365, requires = "self_signed")]
        days: u32,
        /// Output file (PEM).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Log in to a token with a PIN (C_Login) to check it: exit status 0 when the token
    /// accepts it; otherwise the error names the CKR code. hsmgate runs this itself to
    /// check a changed PIN on reload, which its own process, already logged in to the
    /// token, cannot.
    CheckPin(CheckPin),
}

/// `check-pin`, a variant of its own so that `TokenCommand` stays small.
#[derive(Debug, clap::Args)]
pub struct CheckPin {
    /// PKCS#11 module [default: the URI's module-path, else SoftHSM's].
    #[arg(long)]
    module: Option<PathBuf>,
    /// The token, as a pkcs11: URI (its token attributes are used).
    #[arg(long)]
    token: String,
    /// File holding the user PIN; `-` reads it from standard input.
    #[arg(long)]
    pin_file: PathBuf,
}

/// Key types `keygen` makes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyAlg {
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
}

impl From<KeyAlg> for KeyKind {
    fn from(k: KeyAlg) -> KeyKind {
        match k {
            KeyAlg::Rsa2048 => KeyKind::Rsa(2048),
            KeyAlg::Rsa3072 => KeyKind::Rsa(3072),
            KeyAlg::Rsa4096 => KeyKind::Rsa(4096),
            KeyAlg::P256 => KeyKind::EcP256,
            KeyAlg::P384 => KeyKind::EcP384,
        }
    }
}

/// Why a `hsmgate token` command failed. PKCS#11 failures name the function and the
/// CKR code; no variant holds a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenCliError {
    /// A PKCS#11 call failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The key pair, certificate or CSR could not be made.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// No module was given and SoftHSM's was not found.
    #[error(transparent)]
    Module(#[from] ProxyError),
    /// The key URI does not parse.
    #[error("--key: {0}")]
    Uri(#[from] UriError),
    /// `check-pin`'s token URI does not parse.
    #[error("--token: {0} (a pkcs11: URI, e.g. \"pkcs11:token=web\")")]
    TokenUri(#[source] UriError),
    /// A flag's value is not usable.
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        /// The flag, e.g. `--subject`.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The key URI names no PIN and no --pin-file was given.
    #[error("no PIN for {uri}: pass --pin-file FILE or add ?pin-source=file:PATH to the URI")]
    NoPin {
        /// The URI (printed without any PIN).
        uri: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Run one `hsmgate token` command, printing its result on stdout.
pub fn run(command: TokenCommand) -> Result<(), TokenCliError> {
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::List { module } => {
            let module = load(module)?;
            let slots = provision::list_slots(&module)?;
            let _ = write!(out, "{}", describe_slots(module.path(), &slots));
        }
        TokenCommand::Init {
            module,
            label,
            pin_file,
            so_pin_file,
        } => {
            let module = load(module)?;
            let pin = read_pin(&pin_file)?;
            let so_pin = read_pin(&so_pin_file)?;
            provision::init_token(&module, &label, &so_pin, &pin)?;
            let _ = writeln!(out, "token {label:?} initialised; user PIN set");
        }
        TokenCommand::Keygen {
            module,
            token,
            label,
            id,
            kind,
            pin_file,
        } => {
            let id = match id {
                Some(hex) => parse_hex(&hex).ok_or(TokenCliError::Flag {
                    flag: "--id",
                    value: hex,
                    reason: "must be hex digits, e.g. 01 or a1b2",
                })?,
                None => random_bytes(8),
            };
            let module = load(module)?;
            let pin = read_pin(&pin_file)?;
            let mut uri = Pkcs11Uri {
                token: Some(token),
                ..Pkcs11Uri::default()
            };
            let found = Token::find(&module, &uri)?;
            let kind = KeyKind::from(kind);
            provision::generate_key_pair(&found, &pin, kind, &label, &id)?;
            uri.object = Some(label);
            let _ = writeln!(
                out,
                "{kind} key pair generated on token {:?} (private key sensitive, not extractable)\n{}",
                found.label(),
                key_uri(uri, &id)
            );
        }
        TokenCommand::Csr {
            key,
            module,
            pin_file,
            subject,
            sans,
            self_signed,
            days,
            out: path,
        } => {
            let mut params = certificate_params(&subject, &sans)?;
            let uri = hsmgate_config::parse_key_string(&key)?;
            let module = match (module, &uri.module_path) {
                (Some(m), _) => m,
                (None, Some(m)) => PathBuf::from(m),
                (None, None) => crate::demo::find_softhsm()?,
            };
            let pin = match (pin_file, &uri.pin_value, &uri.pin_source) {
                (Some(file), _, _) => read_pin(&file)?,
                (None, Some(pin), _) => pin.clone(),
                (None, None, Some(source)) => {
                    read_pin(Path::new(source.strip_prefix("file:").unwrap_or(source)))?
                }
                (None, None, None) => {
                    return Err(TokenCliError::NoPin {
                        uri: uri.to_string(),
                    });
                }
            };
            let pool = provision::signing_pool(&module, &BTreeMap::new(), uri.clone(), pin)?;
            let (pem, what) = if self_signed {
                provision::valid_for_days(&mut params, days);
                (
                    provision::self_signed(&pool, &params)?,
                    format!("self-signed certificate (valid {days} days)"),
                )
            } else {
                (
                    provision::signing_request(&pool, &params)?,
                    "certificate signing request".to_string(),
                )
            };
            drop(pool);
            hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
            std::fs::write(&path, pem).map_err(|source| TokenCliError::Write {
                path: path.clone(),
                source,
            })?;
            let _ = writeln!(out, "{what} for {uri} written to {}", path.display());
        }
        TokenCommand::CheckPin(CheckPin {
            module,
            token,
            pin_file,
        }) => {
            let uri = hsmgate_config::parse_key_string(&token).map_err(TokenCliError::TokenUri)?;
            let module = load(module.or_else(|| uri.module_path.as_ref().map(PathBuf::from)))?;
            let pin = match pin_file.as_os_str() == "-" {
                true => read_pin(Path::new("/dev/stdin"))?,
                false => read_pin(&pin_file)?,
            };
            let found = Token::find(&module, &uri)?;
            let session = found.open_session()?;
            found.login(&session, &pin)?;
            let _ = writeln!(out, "token {:?} accepts the PIN", found.label());
        }
    }
    Ok(())
}

fn load(module: Option<PathBuf>) -> Result<std::sync::Arc<Module>, TokenCliError> {
    let path = match module {
        Some(p) => p,
        None => crate::demo::find_softhsm()?,
    };
    Ok(Module::load(&path, &BTreeMap::new())?)
}

fn read_pin(path: &Path) -> Result<Secret, TokenCliError> {
    Ok(hsmgate_signer::read_pin(&PinSource::File(
        path.to_path_buf(),
    ))?)
}

/// The listing printed by `hsmgate token list`.
pub fn describe_slots(module: &Path, slots: &[SlotSummary]) -> String {
    let mut text = format!("module {}\n", module.display());
    if slots.is_empty() {
        text.push_str("  no slots\n");
    }
    for slot in slots {
        text.push_str(&format!("slot {} ({}): ", slot.id, slot.description));
        let Some(token) = &slot.token else {
            text.push_str("no token present\n");
            continue;
        };
        let Some(label) = &token.label else {
            text.push_str(
                "token not initialised (no label yet; `hsmgate token init --label NAME …` makes one here)\n",
            );
            continue;
        };
        text.push_str(&format!(
            "token {label:?} ({} {}, serial {}){}\n",
            token.manufacturer,
            token.model,
            token.serial,
            if token.user_pin_initialized {
                ""
            } else {
                ", user PIN not set"
            }
        ));
        if token.public_keys.is_empty() {
            text.push_str("  no public keys readable without a PIN\n");
        }
        for key in &token.public_keys {
            let uri = Pkcs11Uri {
                token: Some(label.clone()),
                object: Some(key.label.clone()).filter(|l| !l.is_empty()),
                ..Pkcs11Uri::default()
            };
            let uri = key_uri(uri, &parse_hex(&key.id).unwrap_or_default());
            text.push_str(&format!(
                "  key {:?} id {} {}: {uri}\n",
                key.label, key.id, key.key_type
            ));
        }
    }
    text
}

/// The private key's URI: `uri`'s token and object, `type=private`, and the id with
/// every byte percent-encoded (RFC 7512 allows more, but this form reads as hex).
fn key_uri(mut uri: Pkcs11Uri, id: &[u8]) -> String {
    uri.object_type = Some(hsmgate_config::ObjectType::Private);
    let mut text = uri.to_string();
    if !id.is_empty() {
        text.push_str(";id=");
        text.extend(id.iter().map(|b| format!("%{b:02x}")));
    }
    text
}

/// Subject and alternative names from the flags; without `--san`, the CN is the one name.
fn certificate_params(subject: &str, sans: &[String]) -> Result<CertificateParams, TokenCliError> {
    let bad = |reason| TokenCliError::Flag {
        flag: "--subject",
        value: subject.to_string(),
        reason,
    };
    let mut params = CertificateParams::default();
    let separator = if subject.starts_with('/') { '/' } else { ',' };
    let mut common_name = None;
    for part in subject
        .split(separator)
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (attr, value) = part
            .split_once('=')
            .ok_or_else(|| bad("expected ATTR=value parts, e.g. CN=www.example.com,O=Example"))?;
        let kind = match attr.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            _ => return Err(bad("attributes are CN, O, OU, C, ST and L")),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(bad("an attribute has an empty value"));
        }
        if kind == DnType::CommonName {
            common_name = Some(value.to_string());
        }
        params.distinguished_name.push(kind, value);
    }
    if params.distinguished_name.iter().next().is_none() {
        return Err(bad("is empty"));
    }
    let names: Vec<String> = match (sans.is_empty(), common_name) {
        (false, _) => sans.to_vec(),
        (true, Some(cn)) => vec![cn],
        (true, None) => Vec::new(),
    };
    for name in names {
        params.subject_alt_names.push(san(&name)?);
    }
    Ok(params)
}

fn san(name: &str) -> Result<SanType, TokenCliError> {
    let bad = |reason| TokenCliError::Flag {
        flag: "--san",
        value: name.to_string(),
        reason,
    };
    let (kind, value) = match name.split_once(':') {
        Some((k, v)) if k.eq_ignore_ascii_case("DNS") || k.eq_ignore_ascii_case("IP") => {
            (k.to_ascii_uppercase(), v)
        }
        // An IPv6 address has colons; any other prefix is a type we do not make.
        _ if name.parse::<IpAddr>().is_ok() => ("IP".to_string(), name),
        Some(_) => return Err(bad("is DNS:NAME or IP:ADDRESS (no other name type)")),
        None => ("DNS".to_string(), name),
    };
    match kind.as_str() {
        "IP" => value
            .parse::<IpAddr>()
            .map(SanType::IpAddress)
            .map_err(|_| bad("not an IP address")),
        _ => value
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| bad("not a DNS name (ASCII only)")),
    }
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_start_matches("0x");
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("the system RNG works");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_names_parse() {
        let p = certificate_params("CN=www.example.com, O=Example", &[]).unwrap();
        assert_eq!(p.distinguished_name.iter().count(), 2);
        assert_eq!(
            p.subject_alt_names,
            vec![SanType::DnsName("www.example.com".try_into().unwrap())]
        );
        let p = certificate_params(
            "/CN=x/OU=web",
            &["DNS:a.example".into(), "IP:127.0.0.1".into(), "::1".into()],
        )
        .unwrap();
        assert_eq!(p.subject_alt_names.len(), 3);
        assert!(matches!(p.subject_alt_names[2], SanType::IpAddress(_)));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = certificate_params("CN", &[]).unwrap_err().to_string();
        assert!(e.starts_with("--subject \"CN\":"), "{e}");
        let e = certificate_params("XX=1", &[]).unwrap_err().to_string();
        assert!(e.contains("CN, O, OU"), "{e}");
        let e = certificate_params("CN=a", &["IP:nope".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--san \"IP:nope\": not an IP address"), "{e}");
        let e = certificate_params("CN=a", &["URI:http://x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DNS:NAME or IP:ADDRESS"), "{e}");
        assert!(certificate_params("CN=a", &["::1".into(), "localhost".into()]).is_ok());
        assert_eq!(parse_hex("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn an_uninitialised_token_is_named_as_such() {
        let slots = [
            SlotSummary {
                id: 7,
                description: "SoftHSM slot ID 0x7".into(),
                token: Some(provision::TokenSummary {
                    label: None,
                    manufacturer: "SoftHSM project".into(),
                    model: "SoftHSM v2".into(),
                    serial: String::new(),
                    user_pin_initialized: false,
                    public_keys: Vec::new(),
                }),
            },
            SlotSummary {
                id: 8,
                description: "reader".into(),
                token: None,
            },
        ];
        let text = describe_slots(Path::new("/m.so"), &slots);
        assert!(
            text.contains("slot 7 (SoftHSM slot ID 0x7): token not initialised"),
            "{text}"
        );
        assert!(text.contains("slot 8 (reader): no token present"), "{text}");
        assert!(!text.contains("\"\""), "{text}");
    }
}
