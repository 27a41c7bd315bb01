//! `proxy_ssl_*`: TLS to upstreams (`proxy_pass https://…`), with nginx's defaults:
//! no verification, no SNI, the name `$proxy_host`, TLSv1.2 and TLSv1.3, sessions
//! reused, a verify depth of 1 (one intermediate CA) and no client certificate.
//!
//! As nginx, `proxy_ssl_verify on` needs `proxy_ssl_trusted_certificate` (checked where a
//! location passes to `https://`), and the client key of `proxy_ssl_certificate_key`
//! is a PEM file (hsmgate keeps no upstream client keys in tokens).

use std::path::PathBuf;

use super::build::Ctx;
use super::parse::Directive;
use super::scope::set;
use super::template::Template;
use super::tls::{CipherSuite, TlsVersion};
use super::values::parse_flag;
use crate::error::ConfigError;
use crate::model::Location;

/// TLS settings towards upstreams of one level, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySsl {
    /// `proxy_ssl_verify` (default off: any certificate is accepted; the handshake
    /// signature is still checked).
    pub verify: bool,
    /// `proxy_ssl_trusted_certificate`: PEM CA file (resolved against the conf prefix)
    /// and where the directive is.
    pub trusted_certificate: Option<(PathBuf, Location)>,
    /// `proxy_ssl_verify_depth` (default 1): how many intermediate CAs may stand between
    /// the upstream's certificate and a trusted CA, as OpenSSL counts.
    pub verify_depth: u32,
    /// `proxy_ssl_server_name` (default off: no SNI is sent).
    pub server_name: bool,
    /// `proxy_ssl_name` (`None`: `$proxy_host`); a port in the value is left out.
    pub name: Option<Template>,
    /// `proxy_ssl_protocols` (default TLSv1.2 TLSv1.3).
    pub protocols: Vec<TlsVersion>,
    /// `proxy_ssl_ciphers` mapped to rustls suites, in order (unknown names are warned
    /// about and left out); empty: rustls' defaults. As in OpenSSL, TLS 1.3 suites stay
    /// on unless the list names some.
    pub ciphers: Vec<CipherSuite>,
    /// `proxy_ssl_session_reuse` (default on).
    pub session_reuse: bool,
    /// `proxy_ssl_certificate` and `proxy_ssl_certificate_key` (PEM files) and where the
    /// key directive is.
    pub certificate: Option<ClientCert>,
}

/// A client certificate sent to upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The PEM chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// The `proxy_ssl_certificate` directive.
    pub at: Location,
}

impl Default for ProxySsl {
    fn default() -> Self {
        ProxySsl {
            verify: false,
            trusted_certificate: None,
            verify_depth: 1,
            server_name: false,
            name: None,
            protocols: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            ciphers: Vec::new(),
            session_reuse: true,
            certificate: None,
        }
    }
}

/// `proxy_ssl_*` values of one level, before merging.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxySslScope {
    verify: Option<bool>,
    trusted: Option<(PathBuf, Location)>,
    depth: Option<u32>,
    server_name: Option<bool>,
    name: Option<Template>,
    protocols: Option<Vec<TlsVersion>>,
    ciphers: Option<Vec<CipherSuite>>,
    reuse: Option<bool>,
    cert: Option<(PathBuf, Location)>,
    key: Option<(PathBuf, Location)>,
}

impl ProxySslScope {
    /// Fills what this level leaves unset from `outer`.
    pub(crate) fn inherit(&mut self, outer: &ProxySslScope) {
        macro_rules! fill { ($($f:ident),*) => { $(if self.$f.is_none() { self.$f = outer.$f.clone(); })* } }
        fill!(
            verify,
            trusted,
            depth,
            server_name,
            name,
            protocols,
            ciphers,
            reuse,
            cert,
            key
        );
    }

    /// The merged settings, with nginx's defaults.
    pub(crate) fn settings(&self) -> ProxySsl {
        let d = ProxySsl::default();
        let certificate = match (&self.cert, &self.key) {
            (Some((cert, at)), Some((key, _))) => Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
                at: at.clone(),
            }),
            _ => None,
        };
        ProxySsl {
            verify: self.verify.unwrap_or(d.verify),
            trusted_certificate: self.trusted.clone(),
            verify_depth: self.depth.unwrap_or(d.verify_depth),
            server_name: self.server_name.unwrap_or(d.server_name),
            name: self.name.clone(),
            protocols: self.protocols.clone().unwrap_or(d.protocols),
            ciphers: self.ciphers.clone().unwrap_or(d.ciphers),
            session_reuse: self.reuse.unwrap_or(d.session_reuse),
            certificate,
        }
    }

    /// A certificate without its key (or a key without its certificate), as nginx
    /// reports it where a location passes to `https://`.
    pub(crate) fn unpaired(&self) -> Option<&'static str> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Some("no \"proxy_ssl_certificate_key\" is defined"),
            (None, Some(_)) => Some("no \"proxy_ssl_certificate\" is defined"),
            _ => None,
        }
    }

    /// Handles `d` if it is a `proxy_ssl_*` directive.
    pub(crate) fn directive(
        &mut self,
        ctx: &mut Ctx<'_>,
        d: &Directive,
    ) -> Result<bool, ConfigError> {
        match d.name.as_str() {
            "proxy_ssl_verify" => flag(ctx, d, &mut self.verify)?,
            "proxy_ssl_server_name" => flag(ctx, d, &mut self.server_name)?,
            "proxy_ssl_session_reuse" => flag(ctx, d, &mut self.reuse)?,
            "proxy_ssl_verify_depth" => {
                let arg = ctx.one(d)?;
                let n = arg
                    .value
                    .parse::<u32>()
                    .map_err(|_| ctx.invalid(d, arg.at, "invalid number"))?;
                set(ctx, d, &mut self.depth, n)?;
            }
            "proxy_ssl_name" => {
                let arg = ctx.one(d)?;
                let t = ctx.template(d, arg)?;
                set(ctx, d, &mut self.name, t)?;
            }
            "proxy_ssl_trusted_certificate" | "proxy_ssl_certificate" => {
                let arg = ctx.one(d)?;
                if arg.value.contains('$') || arg.value.starts_with("data:") {
                    return Err(ctx.invalid(d, arg.at, "only a PEM file path is supported"));
                }
                let v = (ctx.conf_path(&arg.value), ctx.loc(d.at));
                match d.name.as_str() {
                    "proxy_ssl_certificate" => set(ctx, d, &mut self.cert, v)?,
                    _ => set(ctx, d, &mut self.trusted, v)?,
                }
            }
            "proxy_ssl_certificate_key" => {
                let arg = ctx.one(d)?;
                let v = arg.value.as_str();
                if v.starts_with("engine:") || v.starts_with("pkcs11:") || v.starts_with("store:") {
                    return Err(ctx.invalid(
                        d,
                        arg.at,
                        "only a PEM key file is supported (keys for upstreams are not read from tokens)",
                    ));
                }
                if v.contains('$') || v.starts_with("data:") {
                    return Err(ctx.invalid(d, arg.at, "only a PEM key file path is supported"));
                }
                let v = (ctx.conf_path(v), ctx.loc(d.at));
                set(ctx, d, &mut self.key, v)?;
            }
            "proxy_ssl_ciphers" => {
                let out = super::tls::ciphers(ctx, d)?;
                set(ctx, d, &mut self.ciphers, out)?;
            }
            "proxy_ssl_protocols" => {
                let out = super::tls::protocols(ctx, d)?;
                set(ctx, d, &mut self.protocols, out)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn flag(ctx: &Ctx<'_>, d: &Directive, slot: &mut Option<bool>) -> Result<(), ConfigError> {
    let arg = ctx.one(d)?;
    let v = parse_flag(&arg.value).ok_or_else(|| {
        let reason = format!(
            "invalid value \"{}\", it must be \"on\" or \"off\"",
            arg.value
        );
        ctx.invalid(d, arg.at, reason)
    })?;
    set(ctx, d, slot, v)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::nginx::{Action, NginxOptions, UpstreamRef, load_text};

    fn location(http: &str, loc: &str) -> crate::nginx::LocationBlock {
        let text = format!(
            "events {{}}\nhttp {{\n{http}\nserver {{ listen 127.0.0.1:8080;\nlocation / {{ {loc} }}\n}}\n}}\n"
        );
        let config = load_text(
            Path::new("/x/conf/nginx.conf"),
            text,
            &NginxOptions::default(),
        )
        .expect("valid");
        config.servers[0].locations[0].clone()
    }

    #[test]
    fn defaults_and_inheritance_as_nginx() {
        let l = location("", "proxy_pass https://localhost;");
        let Some(Action::ProxyPass(p)) = &l.action else {
            panic!("proxy_pass")
        };
        assert!(p.https);
        assert_eq!(p.target, UpstreamRef::Addr("localhost:443".into()));
        assert_eq!(l.settings.proxy_ssl, super::ProxySsl::default());
        assert!(l.settings.proxy_request_buffering);
        assert_eq!(l.settings.client_body_buffer_size, 16 << 10);

        let http = "proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem;\n\
                    proxy_ssl_protocols TLSv1.2; proxy_request_buffering off;\n\
                    client_body_buffer_size 1m;";
        let l = location(
            http,
            "proxy_pass https://localhost:8443; proxy_ssl_name $host; proxy_ssl_verify_depth 3;",
        );
        let ssl = &l.settings.proxy_ssl;
        assert!(ssl.verify);
        let ca = ssl.trusted_certificate.as_ref().map(|(p, _)| p.clone());
        assert_eq!(ca, Some("/x/conf/ca.pem".into()));
        assert_eq!(ssl.protocols, [super::TlsVersion::Tls12]);
        assert_eq!(ssl.verify_depth, 3);
        assert!(ssl.name.as_ref().is_some_and(|t| t.as_literal().is_none()));
        assert!(!l.settings.proxy_request_buffering);
        assert_eq!(l.settings.client_body_buffer_size, 1 << 20);
    }
}
