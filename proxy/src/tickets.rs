//! TLS session tickets from key files (`ssl_session_ticket_key` in nginx configurations,
//! `[tls] session_ticket_key_files` in TOML), so that tickets survive reloads and are
//! shared by every instance that has the same files (replicas behind one load balancer
//! or Kubernetes Service resume each other's sessions without a signature).
//!
//! As nginx: each file holds 48 or 80 random bytes (`openssl rand 80 > ticket.key`); the
//! first 16 bytes name the key; the first file's key encrypts new tickets and every
//! file's key decrypts, so a key is rotated by putting a new file first and reloading,
//! then dropping the old one a ticket lifetime later. The ticket format is hsmgate's own
//! (it is opaque to clients): `name (16) ‖ nonce (12) ‖ AES-256-GCM(state) ‖ tag (16)`,
//! with the AES key derived from the whole file by HKDF-SHA256. nginx's tickets
//! (AES-CBC + HMAC) are not read, so a mixed nginx/hsmgate fleet does not share sessions.
//!
//! Lifetime: `ssl_session_timeout` (nginx's 5 minutes by default), given to clients as the
//! ticket lifetime hint; rotation of the files bounds how long a stolen key decrypts.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};

use crate::error::ProxyError;

const NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// One key file's key.
struct TicketKey {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

/// The keys of the configured files (first encrypts, all decrypt).
pub(crate) struct FileTicketer {
    keys: Vec<TicketKey>,
    lifetime: u32,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTicketer")
            .field("files", &self.files)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl FileTicketer {
    /// Read `files` (at least one); `lifetime` in seconds.
    pub(crate) fn load(files: &[PathBuf], lifetime: u32) -> Result<FileTicketer, ProxyError> {
        let keys = files
            .iter()
            .map(|f| read_key(f))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(ProxyError::TicketKey {
                file: PathBuf::new(),
                reason: "no ticket key file".into(),
            });
        }
        Ok(FileTicketer {
            keys,
            lifetime,
            files: files.to_vec(),
        })
    }
}

fn read_key(file: &Path) -> Result<TicketKey, ProxyError> {
    let bad = |reason: String| ProxyError::TicketKey {
        file: file.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    if bytes.len() != 48 && bytes.len() != 80 {
        return Err(bad(format!("must be 48 or 80 bytes, not {}", bytes.len())));
    }
    let mut name = [0u8; NAME_LEN];
    name.copy_from_slice(&bytes[..NAME_LEN]);
    let prk = Salt::new(HKDF_SHA256, b"hsmgate session ticket key v1").extract(&bytes);
    let okm = prk
        .expand(&[b"aes-256-gcm"], &AES_256_GCM)
        .map_err(|_| bad("key derivation failed".into()))?;
    Ok(TicketKey {
        name,
        key: LessSafeKey::new(UnboundKey::from(okm)),
    })
}

impl rustls::server::ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let k = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&k.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let k = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = k
            .key
            .open_in_place(nonce, Aad::from(&k.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    fn key_file(dir: &Path, name: &str, len: usize, fill: u8) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![fill; len]).expect("key file");
        p
    }

    #[test]
    fn first_key_encrypts_all_decrypt_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = key_file(dir.path(), "a.key", 80, 1);
        let b = key_file(dir.path(), "b.key", 48, 2);
        let old = FileTicketer::load(std::slice::from_ref(&a), 300).expect("a");
        let rotated = FileTicketer::load(&[b.clone(), a.clone()], 300).expect("b, a");
        let only_b = FileTicketer::load(std::slice::from_ref(&b), 300).expect("b");
        let t = old.encrypt(b"session state").expect("encrypt");
        assert_eq!(rotated.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        assert_eq!(only_b.decrypt(&t), None, "a dropped key no longer decrypts");
        // Same file, another process: same key.
        let again = FileTicketer::load(&[a], 300).expect("a again");
        assert_eq!(again.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        // Tampering, truncation, garbage.
        let mut bad = t.clone();
        *bad.last_mut().expect("byte") ^= 1;
        assert_eq!(old.decrypt(&bad), None);
        assert_eq!(old.decrypt(&t[..20]), None);
        assert_eq!(old.decrypt(&[]), None);
        assert_eq!(old.lifetime(), 300);
    }

    #[test]
    fn files_of_the_wrong_size_or_missing_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = key_file(dir.path(), "short.key", 32, 0);
        let e = FileTicketer::load(&[short], 300)
            .expect_err("32 bytes")
            .to_string();
        assert!(
            e.contains("short.key") && e.contains("48 or 80 bytes"),
            "{e}"
        );
        let e = FileTicketer::load(&[dir.path().join("none.key")], 300)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("none.key"), "{e}");
    }
}
