//! The rustls side: certificate chains from PEM files, the token key behind a
//! certificate (checked to be the certificate's key), the choice of certificate per
//! handshake ([`SniResolver`]: the server by SNI, then ECDSA or RSA by what the client
//! offers) and the rustls configuration of one server on one listening address
//! ([`server_config`]: TLS versions, cipher suites, session cache and tickets, ALPN
//! `h2`/`http/1.1`), chosen per ClientHello by the same SNI rule.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hsmgate_config::Location;

use hsmgate_signer::{ExpectedKey, HsmSigningKey, SignerPool, describe_key, same_public_key};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{KeyMismatch, ProxyError};

/// The most sessions a TLS session cache holds (`ssl_session_cache`), whatever size it
/// is given.
const MAX_SESSIONS: usize = 1 << 20;

/// Read a PEM certificate chain (leaf first).
pub(crate) fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let bad = |reason: String| ProxyError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE block in the file".into()));
    }
    X509Certificate::from_der(&chain[0])
        .map_err(|e| bad(format!("leaf certificate does not parse: {e}")))?;
    Ok(chain)
}

/// The leaf certificate's public key, which every HSM member's key must match.
pub(crate) fn expected_key(
    chain: &[CertificateDer<'static>],
    chain_path: &Path,
) -> Result<ExpectedKey, ProxyError> {
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| ProxyError::Certificate {
        path: chain_path.to_path_buf(),
        reason: format!("leaf certificate does not parse: {e}"),
    })?;
    Ok(ExpectedKey {
        spki: leaf.public_key().raw.to_vec(),
        from: format!(
            "certificate {} (subject {})",
            chain_path.display(),
            leaf.subject()
        ),
    })
}

/// The certificate chain with the token key, after checking that they belong together.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    chain_path: &Path,
    pool: &SignerPool,
    key_uri: &str,
) -> Result<Arc<CertifiedKey>, ProxyError> {
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| ProxyError::Certificate {
        path: chain_path.to_path_buf(),
        reason: format!("leaf certificate does not parse: {e}"),
    })?;
    let cert_spki = leaf.public_key().raw;
    if !same_public_key(cert_spki, pool.spki()) {
        return Err(ProxyError::KeyMismatch(Box::new(KeyMismatch {
            cert: chain_path.to_path_buf(),
            subject: leaf.subject().to_string(),
            key: key_uri.to_string(),
            token: pool.token_label().to_string(),
            cert_key: describe_key(cert_spki),
            token_key: describe_key(pool.spki()),
        })));
    }
    Ok(Arc::new(CertifiedKey::new(
        chain,
        HsmSigningKey::new(pool.clone()),
    )))
}

/// The DER OCSP response of `ssl_stapling_file`, stapled as it is (as nginx does):
/// only checked to be an OCSPResponse (a DER SEQUENCE).
pub(crate) fn read_ocsp(path: &Path) -> Result<Vec<u8>, ProxyError> {
    let bad = |reason: String| ProxyError::TlsFile {
        directive: "ssl_stapling_file",
        path: path.to_path_buf(),
        reason,
    };
    let der = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if der.first() != Some(&0x30) {
        return Err(bad(
            "not a DER OCSP response (ssl_stapling_file takes `openssl ocsp -respout` output)"
                .into(),
        ));
    }
    Ok(der)
}

/// A certificate with its key, and the signer pool that holds the key (None for a key
/// in a file): its limiter admits the full handshakes the key signs, and it may run a
/// full handshake's signing step on its own threads.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The key's signer pool (None for a key in a file).
    pub pool: Option<SignerPool>,
    /// The OCSP response fetched for it (`ssl_stapling on` without a file): what
    /// handshakes get is the staple's current certified key.
    pub(crate) staple: Option<Arc<crate::ocsp::Staple>>,
}

/// The server a handshake gets and what it serves: its certificate/key pairs, with the
/// server named by where it is written (its `server` block's `file:line:col`, or the
/// native format's key).
#[derive(Debug, Clone)]
pub struct ServerKeys {
    /// Which server: the key of its rustls settings in [`TlsListener`](crate::generation::TlsListener).
    pub server: Location,
    /// Its pairs (ECDSA and RSA, chosen by what the client offers); empty for a server
    /// without a certificate.
    pub pairs: Vec<KeyEntry>,
}

/// Picks the certificate for a handshake on one listening address: the server by SNI,
/// then among its pairs the ECDSA one if the client offers an ECDSA signature scheme,
/// else the first (usually RSA). The server: an exact `server_name` of this address from
/// a map keyed by name (as rustls' `ResolvesServerCertUsingSni`; the first server that
/// names it wins, as in nginx), else nginx's wildcard and regex rules (whose server is
/// looked up by where it is written), else the fallback. Servers without a certificate
/// are never chosen (the fallback is).
#[derive(Debug)]
pub struct SniResolver {
    /// Exact names of the servers on this address (lower case) → that server's keys.
    by_name: HashMap<String, Arc<ServerKeys>>,
    /// The servers on this address by where they are written, for names the map does
    /// not hold (wildcards, regexes).
    by_place: HashMap<Location, Arc<ServerKeys>>,
    /// The configuration's servers, for nginx's wildcard and regex rules.
    servers: Arc<Vec<hsmgate_config::nginx::Server>>,
    listen: std::net::SocketAddr,
    /// What a ClientHello that selects no server with a certificate gets.
    fallback: Arc<ServerKeys>,
    /// Some server of this address has `ssl_reject_handshake on`.
    rejects: bool,
    /// The admission limiters of the address's token keys (each once).
    limiters: Vec<Arc<hsmgate_signer::Limiter>>,
}

impl SniResolver {
    /// For connections to `listen`: `keys` are the servers on it (in file order) with
    /// their pairs, `fallback` what a ClientHello selecting none of them gets.
    pub fn new(
        servers: Arc<Vec<hsmgate_config::nginx::Server>>,
        keys: impl IntoIterator<Item = (Arc<ServerKeys>, Vec<String>)>,
        listen: std::net::SocketAddr,
        fallback: Arc<ServerKeys>,
    ) -> SniResolver {
        let mut by_name = HashMap::new();
        let mut by_place = HashMap::new();
        for (k, names) in keys {
            for name in names {
                by_name
                    .entry(name.to_ascii_lowercase())
                    .or_insert_with(|| Arc::clone(&k));
            }
            by_place.insert(k.server.clone(), k);
        }
        let rejects = servers
            .iter()
            .any(|s| s.tls.reject_handshake && s.listens.iter().any(|l| l.addr == listen));
        let mut limiters: Vec<Arc<hsmgate_signer::Limiter>> = Vec::new();
        let pools = (by_place.values().chain([&fallback]))
            .flat_map(|k| k.pairs.iter())
            .filter_map(|pair| pair.pool.as_ref());
        for pool in pools {
            if !limiters.iter().any(|l| Arc::ptr_eq(l, pool.limiter())) {
                limiters.push(Arc::clone(pool.limiter()));
            }
        }
        SniResolver {
            by_name,
            by_place,
            servers,
            listen,
            fallback,
            rejects,
            limiters,
        }
    }

    /// Whether admission control of some token key of this address would not admit a
    /// full handshake at once now ([`hsmgate_signer::Limiter::saturated`]): only then
    /// does the accept loop read ClientHellos itself, to shed where it can.
    pub fn saturated(&self) -> bool {
        self.limiters.iter().any(|l| l.saturated())
    }

    /// Whether the server this ClientHello selects by nginx's rules (its SNI, else the
    /// address's default server) has `ssl_reject_handshake on`: the handshake is then
    /// refused with an `unrecognized_name` alert, as nginx does.
    pub fn rejects(&self, hello: &rustls::server::ClientHello<'_>) -> bool {
        self.rejects
            && hsmgate_config::nginx::select_server(&self.servers, self.listen, hello.server_name())
                .is_some_and(|s| s.tls.reject_handshake)
    }

    /// The server a handshake with this ClientHello gets, with its keys: by SNI with
    /// nginx's rules, else (or when that server has no certificate) the fallback.
    pub fn server(&self, hello: &rustls::server::ClientHello<'_>) -> &ServerKeys {
        let name = hello.server_name();
        let exact = name.and_then(|n| self.by_name.get(&hsmgate_config::nginx::normalize_host(n)));
        exact
            .or_else(|| {
                hsmgate_config::nginx::select_server(&self.servers, self.listen, name)
                    .and_then(|s| self.by_place.get(&s.location))
            })
            .filter(|k| !k.pairs.is_empty())
            .unwrap_or(&self.fallback)
    }

    /// The pair a handshake with this ClientHello gets (what [`resolve`] returns).
    ///
    /// [`resolve`]: ResolvesServerCert::resolve
    ///
    /// An ECDSA pair when the client could use it (its key signs with a scheme the client
    /// offers, and the client offers a TLS 1.3 suite or an ECDHE-ECDSA one), else an RSA
    /// pair it could use, else the first: a client offering ECDSA signatures only for
    /// another curve than the ECDSA key's (`ecdsa_secp384r1_sha384` beside a P-256 key),
    /// or only ECDHE-RSA suites, gets the RSA certificate, as OpenSSL chooses, rather
    /// than a failed handshake.
    pub fn choose(&self, hello: &rustls::server::ClientHello<'_>) -> Option<&KeyEntry> {
        use rustls::CipherSuite as S;
        let pairs = &self.server(hello).pairs;
        if pairs.len() < 2 {
            return pairs.first();
        }
        let offered = hello.signature_schemes();
        let suites = hello.cipher_suites();
        let tls13 = suites
            .iter()
            .any(|s| (0x1301..=0x1305).contains(&u16::from(*s)));
        let suite_for = |ecdsa: bool| {
            tls13
                || suites.iter().any(|s| match ecdsa {
                    true => matches!(
                        s,
                        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                            | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    ),
                    false => matches!(
                        s,
                        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                    ),
                })
        };
        let is_ecdsa =
            |k: &KeyEntry| k.certified.key.algorithm() == rustls::SignatureAlgorithm::ECDSA;
        let usable = |k: &&KeyEntry, ecdsa: bool| {
            is_ecdsa(k) == ecdsa
                && suite_for(ecdsa)
                && k.certified.key.choose_scheme(offered).is_some()
        };
        (pairs.iter().find(|k| usable(k, true)))
            .or_else(|| pairs.iter().find(|k| usable(k, false)))
            .or(pairs.first())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(&hello).map(|k| match &k.staple {
            Some(s) => s.current(),
            None => Arc::clone(&k.certified),
        })
    }
}

/// Session caches shared by the servers of one generation: nginx's
/// `ssl_session_cache shared:NAME:SIZE` zone is one cache for every server that names
/// it (rustls resumes a session only for the SNI it was made for, as OpenSSL).
#[derive(Default)]
pub(crate) struct SharedCaches(HashMap<String, Arc<dyn rustls::server::StoresServerSessions>>);

/// The rustls configuration of one server on one TLS listening address, from that
/// server's `ssl_*` settings. A connection gets the configuration of the server its
/// ClientHello selects ([`SniResolver::server`]), so servers sharing an address
/// keep their own protocols, ciphers and session settings.
pub(crate) fn server_config(
    spec: &crate::site::ListenSpec,
    settings: &hsmgate_config::nginx::TlsSettings,
    resolver: Arc<SniResolver>,
    caches: &mut SharedCaches,
    client_auth: Option<&crate::client_cert::ClientAuth>,
) -> Result<Arc<ServerConfig>, ProxyError> {
    use hsmgate_config::nginx::{SessionCache, TlsVersion};
    let protocols = spec.protocols.clone().unwrap_or(settings.protocols.clone());
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if protocols.contains(&TlsVersion::Tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if protocols.contains(&TlsVersion::Tls12) {
        versions.push(&rustls::version::TLS12);
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // P-521 last (nginx's `ssl_ecdh_curve auto` on OpenSSL accepts it; rustls lacks it).
    provider.kx_groups.push(crate::kx::SECP521R1);
    if !settings.ecdh_curves.is_empty() {
        // `ssl_ecdh_curve A:B:…`: those groups only, in that order.
        let all = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = (settings.ecdh_curves.iter())
            .filter_map(|c| {
                all.iter()
                    .find(|g| g.name() == crate::kx::named(*c))
                    .copied()
            })
            .collect();
    }
    // A suite by its rustls name (`CipherSuite::rustls_name`).
    let named = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    if !settings.ciphers.is_empty() {
        let wanted: Vec<&str> = settings.ciphers.iter().map(|c| c.rustls_name()).collect();
        let lists_tls13 = wanted.iter().any(|w| w.starts_with("TLS13_"));
        let mut suites: Vec<rustls::SupportedCipherSuite> = Vec::new();
        for w in &wanted {
            if let Some(s) = provider.cipher_suites.iter().find(|s| named(s) == *w) {
                suites.push(*s);
            }
        }
        // nginx's ssl_ciphers does not govern TLS 1.3 suites (OpenSSL keeps them).
        if !lists_tls13 {
            suites.extend(
                provider
                    .cipher_suites
                    .iter()
                    .filter(|s| s.version() == &rustls::version::TLS13),
            );
        }
        provider.cipher_suites = suites;
    }
    // `ssl_conf_command Ciphersuites`: these TLS 1.3 suites, in this order.
    if !settings.tls13_suites.is_empty() {
        let is13 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS13;
        let all = std::mem::take(&mut provider.cipher_suites);
        for wanted in &settings.tls13_suites {
            let found = all
                .iter()
                .find(|s| is13(s) && named(s) == wanted.rustls_name());
            provider.cipher_suites.extend(found.copied());
        }
        provider
            .cipher_suites
            .extend(all.iter().filter(|s| !is13(s)).copied());
    }
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?;
    let builder = match client_auth {
        Some(auth) => builder.with_client_cert_verifier(auth.handshake_verifier()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.ignore_client_order = settings.prefer_server_ciphers;
    match &settings.session_cache {
        SessionCache::Off | SessionCache::None => {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        SessionCache::Cache { builtin, shared } => {
            let n = shared
                .as_ref()
                .map(|(_, bytes)| (bytes / (1 << 20) * 4000) as usize)
                .or(builtin.map(|n| n as usize))
                .unwrap_or(20480)
                .max(16);
            // rustls' cache takes its whole capacity at once: a size of gigabytes
            // (`shared:SSL:100g`, nginx's 4,000 sessions per megabyte) must not. About a
            // million sessions (nginx's 256m) at most.
            let n = if n > MAX_SESSIONS {
                tracing::warn!(
                    sessions = n,
                    kept = MAX_SESSIONS,
                    "ssl_session_cache: more sessions than hsmgate keeps; the cache holds {MAX_SESSIONS}"
                );
                MAX_SESSIONS
            } else {
                n
            };
            config.session_storage = match shared {
                Some((zone, _)) => Arc::clone(
                    caches
                        .0
                        .entry(zone.clone())
                        .or_insert_with(|| rustls::server::ServerSessionMemoryCache::new(n)),
                ),
                None => rustls::server::ServerSessionMemoryCache::new(n),
            };
        }
    }
    let lifetime = u32::try_from(settings.session_timeout.as_secs()).unwrap_or(u32::MAX);
    if config.session_storage.can_cache() {
        config.session_storage =
            crate::session_lifetime::TimedStore::new(Arc::clone(&config.session_storage), lifetime);
    }
    if settings.session_tickets {
        let tickets: Arc<dyn rustls::server::ProducesTickets> =
            match settings.session_ticket_keys.is_empty() {
                // A random key per configuration (rustls rotates it): tickets do not
                // outlive a reload, as nginx without ticket key files.
                true => rustls::crypto::aws_lc_rs::Ticketer::new()?,
                false => Arc::new(crate::tickets::FileTicketer::load(
                    &settings.session_ticket_keys,
                    lifetime,
                )?),
            };
        config.ticketer = crate::session_lifetime::TimedTickets::new(tickets, lifetime);
    }
    config.alpn_protocols = if spec.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()]
    } else {
        vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()]
    };
    Ok(Arc::new(config))
}
