//! nginx's `auth_basic`: a request to a protected location needs `Authorization: Basic`
//! credentials of a user in the `auth_basic_user_file`, which is read at each request as
//! nginx reads it (a changed file applies without a reload). Its lines are
//! `user:hash[:comment]`; `#` starts a comment line. The hashes nginx accepts on Debian
//! that are made by `htpasswd`, `openssl passwd` and `mkpasswd` are checked here:
//! `$apr1$` and `$1$` (MD5-crypt), `$5$` and `$6$` (SHA-crypt), `$2y$`/`$2b$`/`$2a$`
//! (bcrypt), `{PLAIN}`, `{SHA}` and `{SSHA}`. Others (DES crypt, yescrypt) never match,
//! and the error log says which user's hash is not supported.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hsmgate_config::nginx::AuthBasic;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use md5::{Digest, Md5};

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// No `Authorization: Basic` (or one that does not decode): 401.
    #[error("no user/password was provided for basic authentication")]
    NoCredentials,
    /// The user is not in the file: 401.
    #[error("user \"{user}\" was not found in \"{file}\"")]
    UnknownUser { user: String, file: String },
    /// The password does not match: 401.
    #[error("user \"{user}\": password mismatch")]
    Mismatch { user: String },
    /// The user's hash is of a kind hsmgate does not check: 401.
    #[error(
        "user \"{user}\": unsupported password hash in \"{file}\" (use $apr1$, $5$, $6$ or bcrypt)"
    )]
    Unsupported { user: String, file: String },
    /// The file cannot be read: 403 when it does not exist (as nginx), else 500.
    #[error("open() \"{file}\" failed: {source}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl AuthError {
    /// The answer's status: 401, or for a file that cannot be read nginx's 403 (it does
    /// not exist) or 500.
    pub(crate) fn status(&self) -> u16 {
        match self {
            AuthError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 403,
            AuthError::File { .. } => 500,
            _ => 401,
        }
    }
}

/// The user and password of an `Authorization: Basic` header, if it has one that decodes.
pub(crate) fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let rest = rest.trim_ascii();
    let decoded = STANDARD.decode(rest).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Check the request's credentials against `auth`'s file. The file is read and the
/// hash computed on a blocking thread, off the async workers: bcrypt and SHA-crypt
/// take milliseconds of CPU by design.
pub(crate) async fn check(auth: &AuthBasic, headers: &HeaderMap) -> Result<(), AuthError> {
    let (user, password) = credentials(headers).ok_or(AuthError::NoCredentials)?;
    let file = auth.user_file.clone();
    let display = file.display().to_string();
    tokio::task::spawn_blocking(move || check_user(&file, user, &password))
        .await
        .unwrap_or_else(|e| {
            Err(AuthError::File {
                file: display,
                source: std::io::Error::other(e.to_string()),
            })
        })
}

/// `user` with `password` against the file `path`.
fn check_user(path: &Path, user: String, password: &[u8]) -> Result<(), AuthError> {
    let file_name = || path.display().to_string();
    let text = read(path).map_err(|source| AuthError::File {
        file: file_name(),
        source,
    })?;
    let hash = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name == user).then(|| rest.split(':').next().unwrap_or(rest).trim_end())
        })
        .ok_or_else(|| AuthError::UnknownUser {
            user: user.clone(),
            file: file_name(),
        })?;
    match verify(hash, password) {
        Some(true) => Ok(()),
        Some(false) => Err(AuthError::Mismatch { user }),
        None => Err(AuthError::Unsupported {
            user,
            file: file_name(),
        }),
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `password` matches `hash`; `None` for a kind of hash not checked here.
fn verify(hash: &str, password: &[u8]) -> Option<bool> {
    if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        return Some(same(plain.as_bytes(), password));
    }
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let want = STANDARD.decode(b64).ok()?;
        return Some(same(&sha1(&[password]), &want));
    }
    if let Some(b64) = hash.strip_prefix("{SSHA}") {
        let decoded = STANDARD.decode(b64).ok()?;
        if decoded.len() < 20 {
            return Some(false);
        }
        let (want, salt) = decoded.split_at(20);
        return Some(same(&sha1(&[password, salt]), want));
    }
    for magic in ["$apr1$", "$1$"] {
        if let Some(rest) = hash.strip_prefix(magic) {
            let salt = rest.split('$').next().unwrap_or_default();
            return Some(same(
                md5_crypt(password, salt, magic).as_bytes(),
                hash.as_bytes(),
            ));
        }
    }
    let text = std::str::from_utf8(password).ok();
    if hash.starts_with("$5$") {
        return Some(text.is_some_and(|p| sha_crypt::sha256_check(p, hash).is_ok()));
    }
    if hash.starts_with("$6$") {
        return Some(text.is_some_and(|p| sha_crypt::sha512_check(p, hash).is_ok()));
    }
    if ["$2y$", "$2b$", "$2a$"].iter().any(|m| hash.starts_with(m)) {
        return Some(bcrypt::verify(password, hash).unwrap_or(false));
    }
    None
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha1(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish().as_ref().to_vec()
}

/// MD5-crypt (Poul-Henning Kamp's, as glibc's `$1$` and Apache's `$apr1$`, which differ
/// only in the magic): `MAGICsalt$hash`.
fn md5_crypt(password: &[u8], salt: &str, magic: &str) -> String {
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        n >>= 1;
    }
    let mut last = ctx.finalize();
    for i in 0..1000 {
        let mut round = Md5::new();
        if i & 1 == 1 {
            round.update(password);
        } else {
            round.update(last);
        }
        if i % 3 != 0 {
            round.update(salt);
        }
        if i % 7 != 0 {
            round.update(password);
        }
        if i & 1 == 1 {
            round.update(last);
        } else {
            round.update(password);
        }
        last = round.finalize();
    }
    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = format!("{magic}{}$", String::from_utf8_lossy(salt));
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(last[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(f(a) << 16 | f(b) << 8 | f(c), 4);
    }
    push(f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_of_htpasswd_openssl_and_mkpasswd_verify() {
        // `openssl passwd -apr1 -salt abcdefgh secret`, `-1 -salt saltsalt secret`,
        // `-5 -salt saltsalt secret`, `-6 -salt saltsalt secret` (OpenSSL 3.0).
        for hash in [
            "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/",
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "{PLAIN}secret",
            // base64(sha1("secret")).
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        ] {
            assert_eq!(verify(hash, b"secret"), Some(true), "{hash}");
            assert_eq!(verify(hash, b"Secret"), Some(false), "{hash}");
        }
        let bcrypt = bcrypt::hash_with_salt("secret", 4, [7u8; 16]).unwrap();
        let hash = bcrypt.format_for_version(bcrypt::Version::TwoY);
        assert_eq!(verify(&hash, b"secret"), Some(true));
        assert_eq!(verify(&hash, b"nope"), Some(false));
        // {SSHA}: sha1(password + salt) + salt.
        let ssha = format!(
            "{{SSHA}}{}",
            STANDARD.encode([sha1(&[b"secret", b"NaCl"]), b"NaCl".to_vec()].concat())
        );
        assert_eq!(verify(&ssha, b"secret"), Some(true));
        assert_eq!(verify(&ssha, b"other"), Some(false));
        // DES crypt and yescrypt are not checked.
        assert_eq!(verify("abJnggxhB/yWI", b"secret"), None);
        assert_eq!(verify("$y$j9T$salt$hash", b"secret"), None);
    }

    #[test]
    fn credentials_decode_basic_only() {
        let mut h = HeaderMap::new();
        assert!(credentials(&h).is_none());
        // "ann:pa:ss"
        h.insert(AUTHORIZATION, "Basic YW5uOnBhOnNz".parse().unwrap());
        assert_eq!(credentials(&h), Some(("ann".into(), b"pa:ss".to_vec())));
        h.insert(AUTHORIZATION, "basic   YW5uOnBhOnNz ".parse().unwrap());
        assert!(credentials(&h).is_some());
        h.insert(AUTHORIZATION, "Bearer YW5uOnBhOnNz".parse().unwrap());
        assert!(credentials(&h).is_none());
        h.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(credentials(&h).is_none());
    }
}
