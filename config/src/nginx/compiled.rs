//! The paths nginx was compiled with, for the settings a configuration may leave unset:
//! where the access log goes when no level sets `access_log`.
//!
//! hsmgate replaces an nginx, so it follows that nginx: when an `nginx` binary is on
//! `PATH`, its `nginx -V` output is read once per process (`--http-log-path=`,
//! `--error-log-path=`, relative ones against `--prefix=`). Without one (a container, or
//! hsmgate installed in nginx's place), Debian's and Ubuntu's compiled-in paths are used
//! (`--http-log-path=/var/log/nginx/access.log`, `--error-log-path=stderr`: their
//! packaged `nginx.conf` names `/var/log/nginx/error.log` itself), since those are the
//! packages hsmgate stands in for. An nginx built from source with the defaults
//! (`--prefix=/usr/local/nginx`) is followed the same way, through `nginx -V`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Debian's and Ubuntu's `--http-log-path`.
pub(crate) const DEBIAN_HTTP_LOG: &str = "/var/log/nginx/access.log";

/// Compiled-in defaults of the nginx being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPaths {
    /// Where the access log goes when no `access_log` is set.
    pub http_log: PathBuf,
    /// Where the error log goes when no `error_log` is set (`None`: stderr).
    pub error_log: Option<PathBuf>,
    /// Where they came from, for messages: `nginx -V` or Debian's defaults.
    pub origin: &'static str,
}

impl Default for CompiledPaths {
    fn default() -> Self {
        CompiledPaths {
            http_log: PathBuf::from(DEBIAN_HTTP_LOG),
            error_log: None,
            origin: "Debian's nginx default",
        }
    }
}

/// The installed nginx's paths (read once), or Debian's.
pub fn compiled_paths() -> &'static CompiledPaths {
    static PATHS: OnceLock<CompiledPaths> = OnceLock::new();
    PATHS.get_or_init(|| {
        let output = Command::new("nginx")
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output();
        match output {
            Ok(out) => {
                // nginx prints -V to stderr.
                let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stdout));
                from_version_output(&text)
            }
            Err(_) => CompiledPaths::default(),
        }
    })
}

/// Parse `nginx -V`'s `configure arguments:` line; what it lacks keeps Debian's value
/// (an output without any configure arguments, e.g. not nginx at all, is Debian's).
pub(crate) fn from_version_output(text: &str) -> CompiledPaths {
    let Some(args) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("configure arguments:"))
    else {
        return CompiledPaths::default();
    };
    let arg = |name: &str| {
        args.split_whitespace()
            .find_map(|a| a.strip_prefix(name))
            .map(|v| v.trim_matches(['\'', '"']).to_owned())
    };
    // nginx's own defaults when configure was given no path: PREFIX/logs/...
    let prefix = arg("--prefix=").unwrap_or_else(|| "/usr/local/nginx".into());
    let resolve = |v: Option<String>, default: &str| {
        let p = PathBuf::from(v.unwrap_or_else(|| default.into()));
        if p == Path::new("stderr") {
            return None;
        }
        Some(match p.is_absolute() {
            true => p,
            false => Path::new(&prefix).join(p),
        })
    };
    CompiledPaths {
        http_log: resolve(arg("--http-log-path="), "logs/access.log")
            .unwrap_or_else(|| PathBuf::from(DEBIAN_HTTP_LOG)),
        error_log: resolve(arg("--error-log-path="), "logs/error.log"),
        origin: "the default of the installed nginx (nginx -V)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_nginx_v_gives_var_log_nginx() {
        let v = "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.9\nTLS SNI support enabled\n\
                 configure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx \
                 --conf-path=/etc/nginx/nginx.conf --http-log-path=/var/log/nginx/access.log \
                 --error-log-path=stderr --lock-path=/var/lock/nginx.lock\n";
        let p = from_version_output(v);
        assert_eq!(p.http_log, Path::new("/var/log/nginx/access.log"));
        assert_eq!(p.error_log, None);
    }

    #[test]
    fn a_source_build_uses_its_prefix() {
        let p = from_version_output("configure arguments: --with-http_ssl_module\n");
        assert_eq!(p.http_log, Path::new("/usr/local/nginx/logs/access.log"));
        let p =
            from_version_output("configure arguments: --prefix=/opt/ng --http-log-path=l/a.log\n");
        assert_eq!(p.http_log, Path::new("/opt/ng/l/a.log"));
        assert_eq!(
            p.error_log.as_deref(),
            Some(Path::new("/opt/ng/logs/error.log"))
        );
    }

    #[test]
    fn anything_else_is_debians() {
        assert_eq!(
            from_version_output("hsmgate 0.1.0\n"),
            CompiledPaths::default()
        );
        assert_eq!(from_version_output(""), CompiledPaths::default());
    }
}
