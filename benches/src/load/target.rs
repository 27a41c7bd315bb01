//! The target: parsing the URL (https only), the TLS server name and resolving the address.

use std::net::SocketAddr;

use http::Uri;
use rustls_pki_types::ServerName;

use super::error::LoadError;

/// A parsed target URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Host without IPv6 brackets.
    pub(crate) host: String,
    /// TCP port (443 if absent).
    pub(crate) port: u16,
    /// Value of the Host header / :authority (host, plus port when given).
    pub(crate) authority: String,
    /// Path and query (at least "/").
    pub(crate) path: String,
    /// SNI and certificate name.
    pub(crate) server_name: ServerName<'static>,
}

impl Target {
    /// Parses `url`; `server_name` overrides the name taken from the URL host.
    pub(crate) fn parse(url: &str, server_name: Option<&str>) -> Result<Self, LoadError> {
        let bad = |reason: &str| LoadError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            _ => return Err(LoadError::NotHttps(url.to_owned())),
        }
        let raw_host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = raw_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let authority = match uri.port_u16() {
            Some(p) => format!("{raw_host}:{p}"),
            None => raw_host.to_owned(),
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => "/".to_owned(),
        };
        let name = server_name.unwrap_or(&host).to_owned();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| LoadError::BadServerName(name))?;
        Ok(Target {
            host,
            port,
            authority,
            path,
            server_name,
        })
    }

    /// Resolves the host to one socket address (the first one).
    pub(crate) async fn resolve(&self) -> Result<SocketAddr, LoadError> {
        let err = |reason: String| LoadError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| err(e.to_string()))?;
        addrs.next().ok_or_else(|| err("no address".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_https_urls() {
        let t = Target::parse("https://127.0.0.1:8443/a/b?c=d", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8443));
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert_eq!(t.path, "/a/b?c=d");
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));

        let t = Target::parse("https://example.test", Some("other.test")).unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (443, "/", "example.test")
        );
        assert_eq!(t.server_name.to_str(), "other.test");

        let t = Target::parse("https://[::1]:9000/", None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:9000")
        );
    }

    #[test]
    fn rejects_non_https() {
        for url in ["http://127.0.0.1/", "127.0.0.1:8443", "ftp://x/"] {
            let e = Target::parse(url, None).unwrap_err();
            assert!(matches!(e, LoadError::NotHttps(_)), "{url}: {e}");
            assert!(e.to_string().contains("not https"));
        }
        assert!(matches!(
            Target::parse("https://", None),
            Err(LoadError::BadUrl { .. })
        ));
        assert!(matches!(
            Target::parse("https://x/", Some("bad name!")),
            Err(LoadError::BadServerName(_))
        ));
    }
}
