//! `hsmgate -v` and `-V`, in nginx's shape: `hsmgate version: hsmgate/VERSION` (nginx
//! prints `nginx version: nginx/1.22.1`), and for `-V` the build: the TLS library and
//! the crates that speak HTTP and PKCS#11 (versions from the workspace's `Cargo.lock`,
//! read at compile time), the target and the profile.

/// The workspace's lock file, for the versions of the crates hsmgate is built with.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

/// The crates `-V` names, in the order it names them.
const BUILT_WITH: [&str; 5] = ["rustls", "aws-lc-rs", "hyper", "h2", "cryptoki"];

/// `-v`: one line, as nginx's `nginx version: nginx/1.22.1`.
pub fn version_line() -> String {
    format!("hsmgate version: hsmgate/{}", env!("CARGO_PKG_VERSION"))
}

/// `-V`: [`version_line`], then what hsmgate is built with (nginx prints the OpenSSL it
/// was built with and its configure arguments).
pub fn build_info() -> String {
    let crates: Vec<String> = BUILT_WITH
        .iter()
        .map(|name| match locked_version(CARGO_LOCK, name) {
            Some(v) => format!("{name} {v}"),
            None => (*name).to_owned(),
        })
        .collect();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "{}\nbuilt with {}\nTLS SNI support enabled\ntarget: {}-{} ({profile}); configuration formats: nginx, TOML; PKCS#11 keys, PEM file keys; HTTP/1.1, HTTP/2",
        version_line(),
        crates.join(", "),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// The version of package `name` in a `Cargo.lock` text (the first one listed).
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = lock.lines();
    let want = format!("name = \"{name}\"");
    lines.find(|l| *l == want)?;
    lines
        .next()?
        .strip_prefix("version = \"")?
        .strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_nginx_shape() {
        assert_eq!(
            version_line(),
            format!("hsmgate version: hsmgate/{}", env!("CARGO_PKG_VERSION"))
        );
        let info = build_info();
        assert!(info.starts_with(&version_line()), "{info}");
        assert!(info.contains("built with rustls 0."), "{info}");
        let lock = "[[package]]\nname = \"h2\"\nversion = \"0.4.20\"\n\n[[package]]\nname = \"h2x\"\nversion = \"9\"\n";
        assert_eq!(locked_version(lock, "h2"), Some("0.4.20"));
        assert_eq!(locked_version(lock, "h2x"), Some("9"));
        assert_eq!(locked_version(lock, "h3"), None);
    }
}
