//! `ssl_*` directives: protocols, ciphers (OpenSSL names mapped to the suites
//! rustls implements), session cache/timeout/tickets, certificates and keys, client
//! certificates (`ssl_client_certificate`, `ssl_verify_client on|optional|off`,
//! `ssl_verify_depth`; `optional_no_ca` is refused: rustls verifies every certificate it
//! accepts, and accepting unverified ones would be a silent change of meaning).

use std::path::PathBuf;
use std::time::Duration;

use super::build::Ctx;
use super::parse::{Arg, Directive};
use super::scope::set;
use super::values::{parse_flag, parse_size, parse_time};
use crate::error::ConfigError;

/// TLS settings of a server (merged with `http`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl_protocols`, less what rustls lacks (default TLS 1.2 and 1.3).
    pub protocols: Vec<TlsVersion>,
    /// `ssl_ciphers` mapped to rustls suites, in order; empty: rustls' defaults
    /// (nginx's default `HIGH:!aNULL:!MD5` maps to nothing more specific).
    pub ciphers: Vec<CipherSuite>,
    /// The TLS 1.3 suites, in order, from `ssl_conf_command Ciphersuites`; empty: all
    /// three (OpenSSL's default; `ssl_ciphers` does not govern TLS 1.3).
    pub tls13_suites: Vec<CipherSuite>,
    /// `ssl_prefer_server_ciphers` (default off).
    pub prefer_server_ciphers: bool,
    /// `ssl_ecdh_curve`: the key exchange groups offered, in the server's order; empty:
    /// `auto` (nginx's default), every group hsmgate has.
    pub ecdh_curves: Vec<KxGroup>,
    /// `ssl_session_cache` (default `none`).
    pub session_cache: SessionCache,
    /// `ssl_session_timeout` (default 5m).
    pub session_timeout: Duration,
    /// `ssl_session_tickets` (default on).
    pub session_tickets: bool,
    /// `ssl_session_ticket_key` files (first encrypts), resolved against the conf prefix.
    pub session_ticket_keys: Vec<PathBuf>,
    /// `ssl_client_certificate`: the CA bundle client certificates are verified against
    /// (also the CA names sent in the CertificateRequest).
    pub client_certificate: Option<PathBuf>,
    /// `ssl_verify_client` (default off).
    pub verify_client: VerifyClient,
    /// `ssl_verify_depth` (default 1): intermediate certificates a client chain may have.
    pub verify_depth: u32,
    /// `ssl_crl`: certificate revocation lists (PEM) client chains are checked against:
    /// every certificate of a chain needs its issuer's list, as nginx checks them.
    pub crl: Option<PathBuf>,
    /// Where `ssl_client_certificate` and `ssl_crl` are set (`file:line`), for errors
    /// about the files they name.
    pub files_at: TlsFilesAt,
    /// `ssl_stapling on` with `ssl_stapling_file`: the DER OCSP response stapled to
    /// each of the server's certificates, as it is.
    pub stapling_file: Option<PathBuf>,
    /// `ssl_stapling on` without `ssl_stapling_file`: each certificate's OCSP response
    /// fetched from its responder, kept fresh, and stapled.
    pub stapling_fetch: Option<OcspFetch>,
    /// `ssl_reject_handshake on`: a handshake that selects this server (by SNI, or as
    /// the default server of its address) is refused with an `unrecognized_name` alert;
    /// such a server needs no certificate.
    pub reject_handshake: bool,
}

/// Where the files of [`TlsSettings`] are named (`file:line`), for errors about their
/// content, which is read when the configuration is served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFilesAt {
    /// `ssl_client_certificate` (TOML: `client_certificate`).
    pub client_certificate: Option<String>,
    /// `ssl_crl`.
    pub crl: Option<String>,
    /// `ssl_stapling_file`.
    pub stapling_file: Option<String>,
    /// Each `ssl_session_ticket_key`, in the order of `session_ticket_keys`.
    pub ticket_keys: Vec<String>,
}

impl TlsFilesAt {
    /// Where the directive `directive` names `path`, if known.
    pub fn of(
        &self,
        directive: &str,
        path: &std::path::Path,
        settings: &TlsSettings,
    ) -> Option<&str> {
        match directive {
            "ssl_client_certificate" => self.client_certificate.as_deref(),
            "ssl_crl" => self.crl.as_deref(),
            "ssl_stapling_file" => self.stapling_file.as_deref(),
            "ssl_session_ticket_key" => (settings.session_ticket_keys.iter())
                .position(|k| k == path)
                .and_then(|i| self.ticket_keys.get(i))
                .map(String::as_str),
            _ => None,
        }
    }
}

/// `ssl_stapling on` without a file: where and how OCSP responses are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspFetch {
    /// `ssl_stapling_responder`: the `http://` URL asked instead of the certificate's
    /// Authority Information Access one.
    pub responder: Option<String>,
    /// `ssl_stapling_verify` (default off): the response's signature is checked against
    /// the certificate's issuer (or a responder certificate the issuer signed for OCSP).
    pub verify: bool,
    /// `ssl_trusted_certificate`: where the issuer is looked for when the
    /// `ssl_certificate` chain does not hold it.
    pub trusted: Option<PathBuf>,
    /// Where `ssl_stapling on` is written (`file:line`), for the log.
    pub at: String,
}

/// `ssl_verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyClient {
    /// `off`: no certificate is requested.
    #[default]
    Off,
    /// `on`: a certificate is requested; a request without a valid one is answered 400.
    On,
    /// `optional`: a certificate is requested; an invalid one is answered 400.
    Optional,
}

impl VerifyClient {
    /// The mode a value names (`on`, `optional`, `off`: nginx's `ssl_verify_client` and
    /// the native `tls.verify_client`); None for any other.
    pub fn from_name(name: &str) -> Option<VerifyClient> {
        match name {
            "on" => Some(VerifyClient::On),
            "optional" => Some(VerifyClient::Optional),
            "off" => Some(VerifyClient::Off),
            _ => None,
        }
    }
}

/// A TLS version rustls offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLSv1.2`
    Tls12,
    /// `TLSv1.3`
    Tls13,
}

/// `ssl_session_cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCache {
    /// `off`: clients are told sessions are not reused.
    Off,
    /// `none` (nginx's default): no server-side cache.
    None,
    /// `builtin[:N]` and/or `shared:NAME:SIZE`: an in-memory cache.
    Cache {
        /// `builtin[:N]`: N sessions (nginx's default 20480).
        builtin: Option<u64>,
        /// `shared:NAME:SIZE`: the zone name and size in bytes (about 4000
        /// sessions per megabyte).
        shared: Option<(String, u64)>,
    },
}

macro_rules! suites {
    ($($v:ident = $openssl:literal, $rustls:literal;)*) => {
        /// A cipher suite rustls implements.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum CipherSuite {
            $(#[doc = concat!("`", $openssl, "`: rustls `", $rustls, "`.")] $v,)*
        }
        impl CipherSuite {
            pub(crate) const ALL: &[(CipherSuite, &'static str)] = &[$((CipherSuite::$v, $openssl),)*];
            /// The rustls (IANA) name, as in `rustls::CipherSuite`'s `Debug`.
            pub fn rustls_name(self) -> &'static str {
                match self { $(Self::$v => $rustls,)* }
            }
            /// The OpenSSL name (nginx's `ssl_ciphers` and `$ssl_cipher`).
            pub fn openssl_name(self) -> &'static str {
                match self { $(Self::$v => $openssl,)* }
            }
            /// The suite named by its OpenSSL name or its rustls (IANA) name.
            pub fn from_name(name: &str) -> Option<CipherSuite> {
                match name { $($openssl | $rustls => Some(Self::$v),)* _ => None }
            }
            /// A TLS 1.3 suite (the others are TLS 1.2's).
            pub fn is_tls13(self) -> bool {
                self.rustls_name().starts_with("TLS13_")
            }
        }
    };
}

suites! {
    EcdheEcdsaAes128Gcm = "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    EcdheRsaAes128Gcm = "ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256";
    EcdheEcdsaAes256Gcm = "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";
    EcdheRsaAes256Gcm = "ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384";
    EcdheEcdsaChacha20 = "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";
    EcdheRsaChacha20 = "ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";
    Tls13Aes128Gcm = "TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256";
    Tls13Aes256Gcm = "TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384";
    Tls13Chacha20 = "TLS_CHACHA20_POLY1305_SHA256", "TLS13_CHACHA20_POLY1305_SHA256";
}

/// A key exchange group `ssl_ecdh_curve` may name (OpenSSL's names and aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KxGroup {
    /// `X25519`.
    X25519,
    /// `prime256v1`, `secp256r1`, `P-256`.
    P256,
    /// `secp384r1`, `P-384`.
    P384,
    /// `secp521r1`, `P-521`.
    P521,
    /// `X25519MLKEM768` (the hybrid post-quantum group).
    X25519MlKem768,
}

impl KxGroup {
    /// The group an OpenSSL curve name names, if hsmgate has it.
    pub fn from_openssl(name: &str) -> Option<KxGroup> {
        Some(match name.to_ascii_lowercase().as_str() {
            "x25519" => KxGroup::X25519,
            "prime256v1" | "secp256r1" | "p-256" => KxGroup::P256,
            "secp384r1" | "p-384" => KxGroup::P384,
            "secp521r1" | "p-521" => KxGroup::P521,
            "x25519mlkem768" => KxGroup::X25519MlKem768,
            _ => return None,
        })
    }
}

/// Whether `name` is a curve or group OpenSSL 3.0 knows (`openssl ecparam -list_curves`,
/// X448, the FFDHE groups) that hsmgate lacks.
fn openssl_curve(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secp",
        "prime",
        "sect",
        "brainpool",
        "ffdhe",
        "c2pnb",
        "c2tnb",
        "wap-wsg",
        "sm2",
        "p-",
        "x448",
    ]
    .iter()
    .any(|family| name.starts_with(family))
}

/// `ssl_ecdh_curve auto | NAME[:NAME…]`: `auto` (empty) or the groups named, in order.
/// A name OpenSSL knows but hsmgate lacks (X448, the Brainpool curves, FFDHE groups) is
/// left out with a warning; a name nobody knows fails, as nginx's `SSL_CTX_set1_curves_list`
/// does, and so does a list of which hsmgate has nothing.
fn ecdh_curves(ctx: &mut Ctx<'_>, d: &Directive) -> Result<Vec<KxGroup>, ConfigError> {
    let arg = ctx.one(d)?.clone();
    if arg.value == "auto" {
        return Ok(Vec::new());
    }
    let mut groups = Vec::new();
    for name in arg.value.split(':') {
        match KxGroup::from_openssl(name) {
            Some(g) if !groups.contains(&g) => groups.push(g),
            Some(_) => {}
            None if openssl_curve(name) => ctx.warn(
                d.at,
                format!("\"ssl_ecdh_curve\": \"{name}\" is not offered (rustls lacks it)"),
            ),
            None => {
                return Err(ctx.invalid(
                    d,
                    arg.at,
                    format!(
                        "unknown curve \"{name}\" (known: X25519, prime256v1, secp384r1, \
                         secp521r1, X25519MLKEM768, or auto)"
                    ),
                ));
            }
        }
    }
    if groups.is_empty() {
        return Err(ctx.invalid(d, arg.at, "none of these curves is one hsmgate has"));
    }
    Ok(groups)
}

/// What a level's `ssl_conf_command`s set that rustls can do.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfCommands {
    /// `Ciphersuites`.
    tls13: Option<Vec<CipherSuite>>,
    /// `Options [-]SessionTicket`.
    tickets: Option<bool>,
    /// `Options [-]ServerPreference`.
    prefer: Option<bool>,
}

/// `ssl_conf_command NAME VALUE`, OpenSSL's `SSL_CONF_cmd` as nginx applies it (names in
/// any case): `Ciphersuites` (the TLS 1.3 suites, in order) and the `SessionTicket` and
/// `ServerPreference` flags of `Options` are applied; other commands and options have no
/// rustls counterpart and are warned about and left out.
fn conf_command(
    ctx: &mut Ctx<'_>,
    d: &Directive,
    conf: &mut ConfCommands,
) -> Result<(), ConfigError> {
    let args = ctx.args(d, 2, 2)?;
    let (name, value) = (&args[0], &args[1]);
    if name.value.eq_ignore_ascii_case("Ciphersuites") {
        let mut suites = Vec::new();
        let mut unknown = Vec::new();
        for n in value
            .value
            .split(':')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            match CipherSuite::from_name(n).filter(|c| c.is_tls13()) {
                Some(c) if !suites.contains(&c) => suites.push(c),
                Some(_) => {}
                None => unknown.push(n),
            }
        }
        if !unknown.is_empty() {
            let msg = format!(
                "ssl_conf_command Ciphersuites: not TLS 1.3 suites rustls has, left out: {}",
                unknown.join(":")
            );
            ctx.warn(value.at, msg);
        }
        if suites.is_empty() {
            return Err(ctx.invalid(
                d,
                value.at,
                format!(
                    "\"{}\" selects no TLS 1.3 suite rustls has (TLS_AES_128_GCM_SHA256, \
                     TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256); to turn TLS 1.3 \
                     off, leave TLSv1.3 out of ssl_protocols",
                    value.value
                ),
            ));
        }
        conf.tls13 = Some(suites);
    } else if name.value.eq_ignore_ascii_case("Options") {
        for option in value
            .value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let (on, flag) = match option.strip_prefix('-') {
                Some(flag) => (false, flag),
                None => (true, option),
            };
            if flag.eq_ignore_ascii_case("SessionTicket") {
                conf.tickets = Some(on);
            } else if flag.eq_ignore_ascii_case("ServerPreference") {
                conf.prefer = Some(on);
            } else {
                let msg = format!(
                    "ssl_conf_command Options {option}: no rustls counterpart, left out \
                     (SessionTicket and ServerPreference are applied)"
                );
                ctx.warn(value.at, msg);
            }
        }
    } else {
        let msg = format!(
            "ssl_conf_command {}: an OpenSSL configuration command without a rustls \
             counterpart, left out (Ciphersuites and Options SessionTicket / \
             ServerPreference are applied; ssl_protocols, ssl_ciphers and ssl_ecdh_curve set \
             the rest)",
            name.value
        );
        ctx.warn(name.at, msg);
    }
    Ok(())
}

/// `ssl_*` values of one level, before merging.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsScope {
    protocols: Option<Vec<TlsVersion>>,
    ciphers: Option<Vec<CipherSuite>>,
    prefer: Option<bool>,
    curves: Option<Vec<KxGroup>>,
    cache: Option<SessionCache>,
    timeout: Option<Duration>,
    tickets: Option<bool>,
    ticket_keys: Option<Vec<PathBuf>>,
    client_certificate: Option<PathBuf>,
    client_certificate_at: Option<String>,
    crl_at: Option<String>,
    stapling_file_at: Option<String>,
    ticket_keys_at: Option<Vec<String>>,
    /// The value and where it was written.
    verify_client: Option<(VerifyClient, super::parse::Pos)>,
    verify_depth: Option<u32>,
    crl: Option<PathBuf>,
    /// `ssl_stapling` and where it was written.
    stapling: Option<(bool, super::parse::Pos)>,
    stapling_file: Option<PathBuf>,
    stapling_responder: Option<String>,
    stapling_verify: Option<bool>,
    trusted_certificate: Option<PathBuf>,
    /// `ssl_stapling on`'s place as `file:line` (set with `stapling`).
    stapling_at: Option<String>,
    reject_handshake: Option<bool>,
    /// `ssl_conf_command`s of one level (inherited whole, as nginx: only by a level
    /// with none).
    conf: Option<ConfCommands>,
    pub(crate) certs: Option<Vec<Arg>>,
    pub(crate) keys: Option<Vec<Arg>>,
}

impl TlsScope {
    /// Fills what this level leaves unset from `outer`.
    pub(crate) fn inherit(&mut self, outer: &TlsScope) {
        macro_rules! fill { ($($f:ident),*) => { $(if self.$f.is_none() { self.$f = outer.$f.clone(); })* } }
        fill!(
            protocols,
            ciphers,
            prefer,
            curves,
            cache,
            timeout,
            tickets,
            ticket_keys,
            client_certificate,
            client_certificate_at,
            crl_at,
            stapling_file_at,
            ticket_keys_at,
            verify_client,
            verify_depth,
            crl,
            stapling,
            stapling_file,
            stapling_responder,
            stapling_verify,
            trusted_certificate,
            stapling_at,
            reject_handshake,
            conf,
            certs,
            keys
        );
    }

    /// The merged settings, with nginx's defaults.
    pub(crate) fn settings(&self) -> TlsSettings {
        TlsSettings {
            protocols: self
                .protocols
                .clone()
                .unwrap_or(vec![TlsVersion::Tls12, TlsVersion::Tls13]),
            ciphers: self.ciphers.clone().unwrap_or_default(),
            tls13_suites: (self.conf.as_ref())
                .and_then(|c| c.tls13.clone())
                .unwrap_or_default(),
            // OpenSSL applies the configuration commands after nginx's own settings.
            prefer_server_ciphers: (self.conf.as_ref().and_then(|c| c.prefer))
                .or(self.prefer)
                .unwrap_or(false),
            ecdh_curves: self.curves.clone().unwrap_or_default(),
            session_cache: self.cache.clone().unwrap_or(SessionCache::None),
            session_timeout: self.timeout.unwrap_or(Duration::from_secs(300)),
            session_tickets: (self.conf.as_ref().and_then(|c| c.tickets))
                .or(self.tickets)
                .unwrap_or(true),
            session_ticket_keys: self.ticket_keys.clone().unwrap_or_default(),
            client_certificate: self.client_certificate.clone(),
            verify_client: self.verify_client.map_or(VerifyClient::Off, |(v, _)| v),
            verify_depth: self.verify_depth.unwrap_or(1),
            crl: self.crl.clone(),
            files_at: TlsFilesAt {
                client_certificate: self.client_certificate_at.clone(),
                crl: self.crl_at.clone(),
                stapling_file: self.stapling_file_at.clone(),
                ticket_keys: self.ticket_keys_at.clone().unwrap_or_default(),
            },
            stapling_file: match self.stapling {
                Some((true, _)) => self.stapling_file.clone(),
                _ => None,
            },
            stapling_fetch: match (self.stapling, &self.stapling_file) {
                (Some((true, _)), None) => Some(OcspFetch {
                    responder: self.stapling_responder.clone(),
                    verify: self.stapling_verify.unwrap_or(false),
                    trusted: self.trusted_certificate.clone(),
                    at: self.stapling_at.clone().unwrap_or_default(),
                }),
                _ => None,
            },
            reject_handshake: self.reject_handshake.unwrap_or(false),
        }
    }

    /// nginx's check of a merged server: verifying clients needs a CA bundle.
    pub(crate) fn check(&self, ctx: &mut Ctx<'_>) -> Result<(), ConfigError> {
        match self.verify_client {
            Some((VerifyClient::On | VerifyClient::Optional, at))
                if self.client_certificate.is_none() =>
            {
                Err(ctx.err(
                    at,
                    crate::error::ConfigErrorKind::Invalid {
                        key: "ssl_verify_client".into(),
                        reason: "no ssl_client_certificate for ssl_verify_client".into(),
                    },
                ))
            }
            _ => Ok(()),
        }
    }

    /// Handles `d` if it is an `ssl_*` directive of this scope.
    pub(crate) fn directive(
        &mut self,
        ctx: &mut Ctx<'_>,
        d: &Directive,
    ) -> Result<bool, ConfigError> {
        match d.name.as_str() {
            "ssl_certificate" | "ssl_certificate_key" => {
                let arg = ctx.one(d)?;
                let list = if d.name == "ssl_certificate" {
                    &mut self.certs
                } else {
                    &mut self.keys
                };
                list.get_or_insert_with(Vec::new).push(arg.clone());
            }
            "ssl_protocols" => {
                let out = protocols(ctx, d)?;
                set(ctx, d, &mut self.protocols, out)?;
            }
            "ssl_ciphers" => {
                let out = ciphers(ctx, d)?;
                set(ctx, d, &mut self.ciphers, out)?;
            }
            "ssl_prefer_server_ciphers" => set_flag(ctx, d, &mut self.prefer)?,
            "ssl_ecdh_curve" => {
                let out = ecdh_curves(ctx, d)?;
                set(ctx, d, &mut self.curves, out)?;
            }
            "ssl_session_tickets" => set_flag(ctx, d, &mut self.tickets)?,
            "ssl_session_timeout" => {
                let arg = ctx.one(d)?;
                let t =
                    parse_time(&arg.value).ok_or_else(|| ctx.invalid(d, arg.at, "invalid time"))?;
                set(ctx, d, &mut self.timeout, t)?;
            }
            "ssl_session_ticket_key" => {
                let arg = ctx.one(d)?;
                let path = ctx.conf_path(&arg.value);
                self.ticket_keys.get_or_insert_with(Vec::new).push(path);
                let at = ctx.loc(d.at).to_string();
                self.ticket_keys_at.get_or_insert_with(Vec::new).push(at);
            }
            "ssl_client_certificate" => {
                let arg = ctx.one(d)?;
                let path = ctx.conf_path(&arg.value);
                set(ctx, d, &mut self.client_certificate, path)?;
                self.client_certificate_at = Some(ctx.loc(d.at).to_string());
            }
            "ssl_verify_client" => {
                let arg = ctx.one(d)?;
                let v = match VerifyClient::from_name(&arg.value) {
                    Some(v) => v,
                    None if arg.value == "optional_no_ca" => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            "\"optional_no_ca\" is not supported: rustls accepts only \
                             certificates it verifies (use \"optional\" with \
                             ssl_client_certificate)",
                        ));
                    }
                    None => {
                        return Err(ctx.invalid(
                            d,
                            arg.at,
                            format!(
                                "invalid value \"{}\", it must be \"on\", \"off\" or \"optional\"",
                                arg.value
                            ),
                        ));
                    }
                };
                set(ctx, d, &mut self.verify_client, (v, d.at))?;
            }
            "ssl_stapling" => {
                let mut on = None;
                set_flag(ctx, d, &mut on)?;
                let on = on.expect("set_flag sets it");
                set(ctx, d, &mut self.stapling, (on, d.at))?;
                self.stapling_at = Some(ctx.loc(d.at).to_string());
            }
            "ssl_stapling_verify" => set_flag(ctx, d, &mut self.stapling_verify)?,
            "ssl_stapling_responder" => {
                let arg = ctx.one(d)?;
                if !arg.value.starts_with("http://") {
                    return Err(ctx.invalid(
                        d,
                        arg.at,
                        "invalid URL prefix (only http:// OCSP responders are supported, as in nginx)",
                    ));
                }
                set(ctx, d, &mut self.stapling_responder, arg.value.clone())?;
            }
            "ssl_trusted_certificate" => {
                // As `nginx -t`, which loads it whether or not it is used.
                let path = ctx.readable_file(d)?;
                set(ctx, d, &mut self.trusted_certificate, path)?;
            }
            "ssl_conf_command" => {
                let conf = self.conf.get_or_insert_with(ConfCommands::default);
                conf_command(ctx, d, conf)?;
            }
            "ssl_reject_handshake" => {
                let mut on = None;
                set_flag(ctx, d, &mut on)?;
                let on = on.expect("set_flag sets it");
                set(ctx, d, &mut self.reject_handshake, on)?;
            }
            "ssl_stapling_file" => {
                let arg = ctx.one(d)?;
                let path = ctx.conf_path(&arg.value);
                set(ctx, d, &mut self.stapling_file, path)?;
                self.stapling_file_at = Some(ctx.loc(d.at).to_string());
            }
            "ssl_crl" => {
                let arg = ctx.one(d)?;
                let path = ctx.conf_path(&arg.value);
                set(ctx, d, &mut self.crl, path)?;
                self.crl_at = Some(ctx.loc(d.at).to_string());
            }
            "ssl_verify_depth" => {
                let arg = ctx.one(d)?;
                let n = arg
                    .value
                    .parse::<u32>()
                    .map_err(|_| ctx.invalid(d, arg.at, "invalid number"))?;
                set(ctx, d, &mut self.verify_depth, n)?;
            }
            "ssl_session_cache" => {
                let cache = session_cache(ctx, d)?;
                set(ctx, d, &mut self.cache, cache)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn session_cache(ctx: &Ctx<'_>, d: &Directive) -> Result<SessionCache, ConfigError> {
    let args = ctx.args(d, 1, 2)?;
    match args
        .iter()
        .map(|a| a.value.as_str())
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["off"] => return Ok(SessionCache::Off),
        ["none"] => return Ok(SessionCache::None),
        _ => {}
    }
    let (mut builtin, mut shared) = (None, None);
    for a in args {
        let bad = || ctx.invalid(d, a.at, format!("invalid session cache \"{}\"", a.value));
        match a.value.split(':').collect::<Vec<_>>().as_slice() {
            ["builtin"] => builtin = Some(20480),
            ["builtin", n] => builtin = Some(n.parse().map_err(|_| bad())?),
            ["shared", name, size] if !name.is_empty() => {
                let size = parse_size(size).filter(|&s| s >= 8 << 10).ok_or_else(bad)?;
                shared = Some(((*name).to_owned(), size));
            }
            _ => return Err(bad()),
        }
    }
    Ok(SessionCache::Cache { builtin, shared })
}

fn set_flag(ctx: &Ctx<'_>, d: &Directive, slot: &mut Option<bool>) -> Result<(), ConfigError> {
    let arg = ctx.one(d)?;
    let v = parse_flag(&arg.value).ok_or_else(|| {
        ctx.invalid(
            d,
            arg.at,
            format!(
                "invalid value \"{}\", it must be \"on\" or \"off\"",
                arg.value
            ),
        )
    })?;
    set(ctx, d, slot, v)
}

/// The versions of `ssl_protocols` / `proxy_ssl_protocols` that rustls has; older ones are
/// left out with a warning, anything else is an error at its argument.
pub(crate) fn protocols(ctx: &mut Ctx<'_>, d: &Directive) -> Result<Vec<TlsVersion>, ConfigError> {
    let mut out = Vec::new();
    for a in ctx.args(d, 1, usize::MAX)? {
        match a.value.as_str() {
            "TLSv1.2" => out.push(TlsVersion::Tls12),
            "TLSv1.3" => out.push(TlsVersion::Tls13),
            old @ ("SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1") => {
                let msg = format!(
                    "{}: {old} is not supported by rustls and is left out",
                    d.name
                );
                ctx.warn(a.at, msg);
            }
            other => {
                return Err(ctx.invalid(d, a.at, format!("invalid value \"{other}\"")));
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(ctx.invalid(
            d,
            d.at,
            "no protocol left that rustls supports (TLSv1.2, TLSv1.3)",
        ));
    }
    Ok(out)
}

/// The suites of `ssl_ciphers` / `proxy_ssl_ciphers` that map to rustls ones, in order;
/// the others are ignored with one warning.
pub(crate) fn ciphers(ctx: &mut Ctx<'_>, d: &Directive) -> Result<Vec<CipherSuite>, ConfigError> {
    let arg = ctx.one(d)?.clone();
    let listed = openssl_cipher_list(&arg.value);
    if !listed.unavailable.is_empty() {
        let msg = format!(
            "{}: not available in rustls, left out: {}",
            d.name,
            listed.unavailable.join(":")
        );
        ctx.warn(arg.at, msg);
    }
    if listed.suites.is_empty() {
        // OpenSSL 3.0's SSL_CTX_set_cipher_list fails when nothing is selected, and so
        // does nginx; hsmgate also when what is selected is only suites rustls lacks.
        let reason = match listed.unavailable.is_empty() {
            true => format!(
                "no cipher match in \"{}\" (OpenSSL's cipher list syntax)",
                arg.value
            ),
            false => format!(
                "\"{}\" selects no TLS 1.2 suite rustls has (only {}); rustls has \
                 ECDHE-ECDSA/ECDHE-RSA with AES-GCM or CHACHA20-POLY1305",
                arg.value,
                listed.unavailable.join(":")
            ),
        };
        return Err(ctx.invalid(d, arg.at, reason));
    }
    Ok(listed.suites)
}

/// What an OpenSSL cipher list string selects among the suites hsmgate has.
#[derive(Debug, Default, PartialEq, Eq)]
struct Listed {
    /// The TLS 1.2 suites selected, in OpenSSL's resulting order (`ssl_ciphers` does not
    /// govern TLS 1.3 in OpenSSL: its suites stay on).
    suites: Vec<CipherSuite>,
    /// Some word is a suite name or an alias OpenSSL knows.
    recognised: bool,
    /// Suite names OpenSSL knows that rustls lacks (CBC, DHE, RSA key exchange…).
    unavailable: Vec<String>,
}

/// A suite's key bits (OpenSSL's `@STRENGTH`).
fn bits(s: CipherSuite) -> u32 {
    match s {
        CipherSuite::EcdheEcdsaAes128Gcm | CipherSuite::EcdheRsaAes128Gcm => 128,
        _ => 256,
    }
}

/// OpenSSL's order of the TLS 1.2 suites hsmgate has (its `DEFAULT` sorted by strength).
const OPENSSL_ORDER: [CipherSuite; 6] = [
    CipherSuite::EcdheEcdsaAes256Gcm,
    CipherSuite::EcdheRsaAes256Gcm,
    CipherSuite::EcdheEcdsaChacha20,
    CipherSuite::EcdheRsaChacha20,
    CipherSuite::EcdheEcdsaAes128Gcm,
    CipherSuite::EcdheRsaAes128Gcm,
];

/// The TLS 1.2 suites (of [`OPENSSL_ORDER`]) an OpenSSL cipher alias selects; `None`: not
/// an alias OpenSSL knows.
fn alias(word: &str) -> Option<Vec<CipherSuite>> {
    use CipherSuite::*;
    let all = OPENSSL_ORDER.to_vec();
    let pick = |f: &dyn Fn(CipherSuite) -> bool| all.iter().copied().filter(|s| f(*s)).collect();
    let ecdsa = |s: CipherSuite| {
        matches!(
            s,
            EcdheEcdsaAes128Gcm | EcdheEcdsaAes256Gcm | EcdheEcdsaChacha20
        )
    };
    let aes128 = |s: CipherSuite| matches!(s, EcdheEcdsaAes128Gcm | EcdheRsaAes128Gcm);
    let aes256 = |s: CipherSuite| matches!(s, EcdheEcdsaAes256Gcm | EcdheRsaAes256Gcm);
    let chacha = |s: CipherSuite| matches!(s, EcdheEcdsaChacha20 | EcdheRsaChacha20);
    Some(match word {
        // As OpenSSL 3.0's `openssl ciphers -v` lists them (`DEFAULT` is the caller's:
        // it is special only as the first word).
        "ALL" | "HIGH" | "TLSv1.2" | "ECDHE" | "EECDH" | "kECDHE" | "kEECDH" | "ECDH" => all,
        "FIPS" => pick(&|s| !chacha(s)),
        "SUITEB128" | "SUITEB128C2" => pick(&|s| ecdsa(s) && !chacha(s)),
        "SUITEB128ONLY" => pick(&|s| ecdsa(s) && aes128(s)),
        "SUITEB192" => pick(&|s| ecdsa(s) && aes256(s)),
        "aRSA" => pick(&|s| !ecdsa(s)),
        "aECDSA" | "ECDSA" => pick(&ecdsa),
        "AESGCM" | "AES" => pick(&|s| !chacha(s)),
        "AES128" => pick(&aes128),
        "AES256" => pick(&aes256),
        "CHACHA20" => pick(&chacha),
        // MACs: these AEAD suites have none (OpenSSL's `Mac=AEAD`).
        "SHA256" | "SHA384" => Vec::new(),
        "COMPLEMENTOFDEFAULT"
        | "COMPLEMENTOFALL"
        | "aNULL"
        | "eNULL"
        | "NULL"
        | "MD5"
        | "SHA1"
        | "SHA"
        | "RC4"
        | "3DES"
        | "DES"
        | "IDEA"
        | "SEED"
        | "CAMELLIA"
        | "CAMELLIA128"
        | "CAMELLIA256"
        | "ARIA"
        | "ARIA128"
        | "ARIA256"
        | "AESCCM"
        | "AESCCM8"
        | "EXP"
        | "EXPORT"
        | "LOW"
        | "MEDIUM"
        | "DH"
        | "DHE"
        | "EDH"
        | "kDHE"
        | "kEDH"
        | "ADH"
        | "AECDH"
        | "kRSA"
        | "RSA"
        | "PSK"
        | "kPSK"
        | "aPSK"
        | "SRP"
        | "kSRP"
        | "DSS"
        | "aDSS"
        | "ECDHEPSK"
        | "DHEPSK"
        | "RSAPSK"
        | "kECDHEPSK"
        | "kDHEPSK"
        | "kRSAPSK"
        | "GOST"
        | "kGOST"
        | "aGOST"
        | "SSLv3"
        | "TLSv1"
        | "TLSv1.0"
        | "CBC" => Vec::new(),
        _ => return None,
    })
}

/// OpenSSL's cipher list syntax (`ciphers(1)`): words separated by `:`, `,` or spaces;
/// `!X` removes X for good, `-X` removes it, `+X` moves it to the end, `X+Y` selects
/// what both select, `@STRENGTH` sorts by key length, `@SECLEVEL=n` is ignored; a suite
/// name or an alias (`HIGH`, `ECDHE`, `aRSA`, `AESGCM`, `CHACHA20`, …). Unknown words
/// are skipped, as OpenSSL skips them.
fn openssl_cipher_list(text: &str) -> Listed {
    let mut listed = Listed::default();
    let mut list: Vec<CipherSuite> = Vec::new();
    let mut killed: Vec<CipherSuite> = Vec::new();
    for (i, word) in text
        .split([':', ',', ' ', ';'])
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if word == "@STRENGTH" {
            // A stable sort by key bits (ChaCha20 and AES-256 alike).
            list.sort_by_key(|s| std::cmp::Reverse(bits(*s)));
            continue;
        }
        if word == "DEFAULT" {
            // Special only as the first word (OpenSSL); elsewhere an unknown one.
            if i == 0 {
                listed.recognised = true;
                list.extend(OPENSSL_ORDER);
            }
            continue;
        }
        if word.starts_with('@') {
            continue;
        }
        let (op, spec) = match word.as_bytes()[0] {
            b'!' | b'-' | b'+' => (word.as_bytes()[0], &word[1..]),
            _ => (b' ', word),
        };
        // `X+Y`: the intersection; a part no one knows makes it select nothing.
        let mut selected: Option<Vec<CipherSuite>> = None;
        for part in spec.split('+') {
            let matched = match CipherSuite::from_name(part) {
                // OpenSSL's cipher list does not govern TLS 1.3 (its suites stay on,
                // whatever the list names): a name of one is skipped, as OpenSSL skips it.
                Some(s) if s.is_tls13() => Vec::new(),
                Some(s) => {
                    listed.recognised = true;
                    vec![s]
                }
                None => match alias(part) {
                    Some(v) => {
                        listed.recognised = true;
                        v
                    }
                    None => {
                        let looks_like_a_suite = part.contains('-')
                            && part
                                .bytes()
                                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
                        listed.recognised |= looks_like_a_suite;
                        if looks_like_a_suite
                            && op == b' '
                            && !listed.unavailable.iter().any(|u| u == part)
                        {
                            listed.unavailable.push(part.to_owned());
                        }
                        Vec::new()
                    }
                },
            };
            selected = Some(match selected {
                None => matched,
                Some(before) => before.into_iter().filter(|s| matched.contains(s)).collect(),
            });
        }
        let selected = selected.unwrap_or_default();
        match op {
            b'!' => {
                list.retain(|s| !selected.contains(s));
                killed.extend(selected);
            }
            b'-' => list.retain(|s| !selected.contains(s)),
            b'+' => {
                let moved: Vec<CipherSuite> = list
                    .iter()
                    .copied()
                    .filter(|s| selected.contains(s))
                    .collect();
                list.retain(|s| !moved.contains(s));
                list.extend(moved);
            }
            _ => {
                for s in selected {
                    if !list.contains(&s) && !killed.contains(&s) {
                        list.push(s);
                    }
                }
            }
        }
    }
    listed.suites = list;
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names() {
        assert_eq!(CipherSuite::ALL.len(), 9);
        for (suite, openssl) in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_name(openssl), Some(*suite));
            assert_eq!(CipherSuite::from_name(suite.rustls_name()), Some(*suite));
        }
        assert_eq!(CipherSuite::from_name("AES128-SHA"), None);
        assert!(CipherSuite::Tls13Aes128Gcm.is_tls13());
        assert!(!CipherSuite::EcdheRsaAes128Gcm.is_tls13());
        assert_eq!(
            CipherSuite::EcdheRsaAes128Gcm.rustls_name(),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        let s = TlsScope::default().settings();
        assert_eq!(s.protocols, [TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(s.session_cache, SessionCache::None);
    }

    /// OpenSSL's cipher list syntax over the suites hsmgate has, as `openssl ciphers`
    /// (3.0) lists them for the same strings.
    #[test]
    fn openssl_cipher_lists() {
        use CipherSuite::*;
        let suites = |t: &str| openssl_cipher_list(t).suites;
        // nginx's default and cipherli.st's: every suite, and the GCM ones only.
        assert_eq!(suites("HIGH:!aNULL:!MD5"), OPENSSL_ORDER);
        assert_eq!(
            suites("EECDH+AESGCM:EDH+AESGCM"),
            [
                EcdheEcdsaAes256Gcm,
                EcdheRsaAes256Gcm,
                EcdheEcdsaAes128Gcm,
                EcdheRsaAes128Gcm
            ]
        );
        // Mozilla intermediate: named suites in order; DHE ones are not in rustls.
        let mozilla = openssl_cipher_list(
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256",
        );
        assert_eq!(
            mozilla.suites,
            [EcdheEcdsaAes128Gcm, EcdheRsaAes128Gcm, EcdheEcdsaChacha20]
        );
        assert_eq!(mozilla.unavailable, ["DHE-RSA-AES128-GCM-SHA256"]);
        // !, -, + and @STRENGTH.
        assert_eq!(
            suites("ECDHE:!CHACHA20:-aECDSA"),
            [EcdheRsaAes256Gcm, EcdheRsaAes128Gcm]
        );
        assert_eq!(
            suites("AES128:AES256:+AES128"),
            [
                EcdheEcdsaAes256Gcm,
                EcdheRsaAes256Gcm,
                EcdheEcdsaAes128Gcm,
                EcdheRsaAes128Gcm
            ]
        );
        assert_eq!(
            suites("!CHACHA20:ALL"),
            [
                EcdheEcdsaAes256Gcm,
                EcdheRsaAes256Gcm,
                EcdheEcdsaAes128Gcm,
                EcdheRsaAes128Gcm
            ]
        );
        assert_eq!(
            suites("AES128:AES256:@STRENGTH"),
            [
                EcdheEcdsaAes256Gcm,
                EcdheRsaAes256Gcm,
                EcdheEcdsaAes128Gcm,
                EcdheRsaAes128Gcm
            ]
        );
        // Nothing hsmgate has: empty (the directive then fails, as nginx's).
        assert!(suites("BOGUS").is_empty());
        assert!(suites("AES128-SHA:DHE-RSA-AES256-SHA").is_empty());
        assert!(suites("aNULL").is_empty());
        // TLS 1.3 names are skipped (OpenSSL's list does not govern TLS 1.3).
        assert!(suites("TLS_AES_128_GCM_SHA256").is_empty());
        assert_eq!(suites("HIGH:TLS_AES_256_GCM_SHA384"), OPENSSL_ORDER);
        // MAC aliases select none of these AEAD suites; DEFAULT counts only first;
        // @STRENGTH is a stable sort by key bits; FIPS and Suite B as OpenSSL 3.0.
        assert_eq!(suites("ECDHE:!SHA256:!SHA384"), OPENSSL_ORDER);
        assert!(suites("SHA256").is_empty());
        assert_eq!(
            suites("ECDHE-RSA-AES128-GCM-SHA256:DEFAULT"),
            [EcdheRsaAes128Gcm]
        );
        assert_eq!(suites("DEFAULT:!CHACHA20").len(), 4);
        assert_eq!(
            suites("CHACHA20:AES256:AES128:@STRENGTH"),
            [
                EcdheEcdsaChacha20,
                EcdheRsaChacha20,
                EcdheEcdsaAes256Gcm,
                EcdheRsaAes256Gcm,
                EcdheEcdsaAes128Gcm,
                EcdheRsaAes128Gcm
            ]
        );
        assert_eq!(suites("FIPS").len(), 4);
        assert_eq!(
            suites("SUITEB128"),
            [EcdheEcdsaAes256Gcm, EcdheEcdsaAes128Gcm]
        );
        assert!(suites("AEAD").is_empty() && suites("kECDH").is_empty());
    }
}
