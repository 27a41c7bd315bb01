//! The validation rules: raw TOML mirror → [`Config`], failing on the first
//! broken rule with the location of the offending value and its key name.
//! The `[pkcs11]` rules (module, PIN, pool) are in [`mod@pkcs11`].

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use self::pkcs11::pkcs11;
use crate::defaults as d;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::load::Source;
use crate::model::{Admission, Config, KeyRef, Listener, TlsConfig, TlsPair, Upstream};
use crate::nginx::{CipherSuite, VerifyClient};
use crate::pkcs11_uri::{ObjectType, Pkcs11Uri, parse_key_string};
use crate::raw::{RawAdmission, RawConfig, RawListener, RawPair, RawTls, RawUpstream};

pub(crate) mod hsm;
pub(crate) mod pkcs11;

pub(crate) fn validate(raw: RawConfig, src: &Source<'_>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let listeners = listeners(&raw.listener, src)?;
    let grouped = raw.hsm.is_some();
    let (mut tls, key_offset) = tls(&raw.tls, grouped, src)?;
    let (pkcs11, hsm) = match (&raw.pkcs11, &raw.hsm) {
        (Some(_), Some(h)) => {
            let reason = "use either [pkcs11] (one token) or [[hsm.group]] (HA group), not both";
            let at = h.group.first().map_or(0, |g| g.span().start);
            return Err(src.invalid(at, "pkcs11", reason));
        }
        (_, Some(h)) => {
            let groups = hsm::groups(h, src)?;
            hsm::assign(&raw.tls, &mut tls, &groups, h, src)?;
            (None, groups)
        }
        (p, None) => {
            let empty = crate::raw::RawPkcs11::default();
            let p = p.as_ref().unwrap_or(&empty);
            (
                Some(pkcs11(p, &tls.key, key_offset, src, &mut warnings)?),
                Vec::new(),
            )
        }
    };
    if let Some(list) = raw.tls.ciphers.as_ref()
        && listeners.iter().any(|l| l.tls12)
        && !tls.ciphers.iter().any(|c| !c.is_tls13())
    {
        return Err(src.invalid(
            list.span().start,
            "tls.ciphers",
            "lists no TLS 1.2 suite, but a listener offers TLS 1.2 (list one, e.g. \"ECDHE-RSA-AES128-GCM-SHA256\", or set that listener's tls_versions = [\"1.3\"])",
        ));
    }
    let upstream = upstream(&raw.upstream, src)?;
    let grace = int(
        raw.shutdown.grace_ms.as_ref(),
        "shutdown.grace_ms",
        0..=600_000,
        d::ms(d::SHUTDOWN_GRACE),
        src,
    )?;
    let admin = match &raw.admin {
        None => None,
        Some(a) => {
            let (text, at) = (a.address.get_ref(), a.address.span().start);
            let addr: SocketAddr = text.parse().map_err(|e| {
                src.invalid(
                    at,
                    "admin.address",
                    format!("\"{text}\" is not a socket address ({e})"),
                )
            })?;
            if addr.port() != 0 && listeners.iter().any(|l| l.address == addr) {
                return Err(src.invalid(
                    at,
                    "admin.address",
                    format!("{addr} is also a TLS listener"),
                ));
            }
            Some(addr)
        }
    };
    let admission = admission(&raw.admission, src)?;
    let limits = limits(&raw.limits, src)?;
    // 0 (as absent): one thread per CPU the process may use.
    let threads = int(
        raw.runtime.threads.as_ref(),
        "runtime.threads",
        0..=1024,
        0,
        src,
    )?;
    Ok(Config {
        runtime_threads: u32::try_from(threads).ok().filter(|&n| n > 0),
        limits,
        source: src.file.to_path_buf(),
        admission,
        admin,
        listeners,
        tls,
        pkcs11,
        hsm,
        upstream,
        shutdown_grace: Duration::from_millis(grace),
        warnings,
    })
}

/// `[limits]`: every value optional, defaults from [`Limits::default`] (nginx's).
fn limits(
    raw: &crate::raw::RawLimits,
    src: &Source<'_>,
) -> Result<crate::model::Limits, ConfigError> {
    let d = crate::model::Limits::default();
    let ms = |v: Option<&Spanned<i64>>, key, default: Duration| {
        int(v, key, 1..=3_600_000, default.as_millis() as i64, src).map(Duration::from_millis)
    };
    let size = raw.header_buffer_size.as_ref();
    let client = crate::nginx::ClientLimits {
        proxy_protocol_timeout: d.client.proxy_protocol_timeout,
        handshake_timeout: ms(
            raw.handshake_timeout_ms.as_ref(),
            "limits.handshake_timeout_ms",
            d.client.handshake_timeout,
        )?,
        header_timeout: ms(
            raw.header_timeout_ms.as_ref(),
            "limits.header_timeout_ms",
            d.client.header_timeout,
        )?,
        body_timeout: ms(
            raw.body_timeout_ms.as_ref(),
            "limits.body_timeout_ms",
            d.client.body_timeout,
        )?,
        send_timeout: ms(
            raw.send_timeout_ms.as_ref(),
            "limits.send_timeout_ms",
            d.client.send_timeout,
        )?,
        large_header_buffers: (
            int(
                raw.header_buffers.as_ref(),
                "limits.header_buffers",
                1..=1024,
                i64::from(d.client.large_header_buffers.0),
                src,
            )? as u32,
            int(
                size,
                "limits.header_buffer_size",
                1024..=1 << 20,
                d.client.large_header_buffers.1 as i64,
                src,
            )?,
        ),
        http2_max_concurrent_streams: int(
            raw.http2_max_concurrent_streams.as_ref(),
            "limits.http2_max_concurrent_streams",
            1..=65_536,
            i64::from(d.client.http2_max_concurrent_streams),
            src,
        )? as u32,
        keepalive_requests: int(
            raw.keepalive_requests.as_ref(),
            "limits.keepalive_requests",
            1..=i64::MAX,
            d.client.keepalive_requests as i64,
            src,
        )?,
        // Up to a week (nginx takes any time; its default is an hour).
        keepalive_time: int(
            raw.keepalive_time_ms.as_ref(),
            "limits.keepalive_time_ms",
            1..=604_800_000,
            d.client.keepalive_time.as_millis() as i64,
            src,
        )
        .map(Duration::from_millis)?,
        ..d.client
    };
    let keepalive_timeout = match &raw.keepalive_timeout_ms {
        // 0 turns keep-alive off, as nginx's `keepalive_timeout 0`.
        Some(v) => Duration::from_millis(int(
            Some(v),
            "limits.keepalive_timeout_ms",
            0..=3_600_000,
            0,
            src,
        )?),
        None => d.keepalive_timeout,
    };
    let max_body_size = match &raw.max_body_size {
        Some(v) => {
            Some(int(Some(v), "limits.max_body_size", 0..=i64::MAX, 0, src)?).filter(|&n| n > 0)
        }
        None => d.max_body_size,
    };
    Ok(crate::model::Limits {
        client,
        keepalive_timeout,
        max_body_size,
    })
}

/// `[admission]`: every value optional, defaults from [`Admission::default`].
fn admission(raw: &RawAdmission, src: &Source<'_>) -> Result<Admission, ConfigError> {
    let d = Admission::default();
    let ms = |v: Option<&Spanned<i64>>, key, range, default: Duration| {
        int(v, key, range, default.as_millis() as i64, src).map(Duration::from_millis)
    };
    let target_wait = ms(
        raw.target_wait_ms.as_ref(),
        "admission.target_wait_ms",
        0..=10_000,
        d.target_wait,
    )?;
    let max_wait = ms(
        raw.max_wait_ms.as_ref(),
        "admission.max_wait_ms",
        0..=60_000,
        d.max_wait,
    )?;
    if max_wait < target_wait {
        let at = raw.max_wait_ms.as_ref().map_or(0, |v| v.span().start);
        return Err(src.invalid(
            at,
            "admission.max_wait_ms",
            format!(
                "must not be less than target_wait_ms ({} ms)",
                target_wait.as_millis()
            ),
        ));
    }
    let max_waiting = int(
        raw.max_waiting.as_ref(),
        "admission.max_waiting",
        0..=1_000_000,
        d.max_waiting as i64,
        src,
    )? as usize;
    let signer_nice = int(
        raw.signer_nice.as_ref(),
        "admission.signer_nice",
        0..=19,
        i64::from(d.signer_nice),
        src,
    )? as u8;
    Ok(Admission {
        enabled: raw.enabled.unwrap_or(d.enabled),
        target_wait,
        max_wait,
        max_waiting,
        signer_nice,
        inline_signing: raw.inline_signing.unwrap_or(d.inline_signing),
    })
}

fn listeners(raw: &[Spanned<RawListener>], src: &Source<'_>) -> Result<Vec<Listener>, ConfigError> {
    if raw.is_empty() {
        return Err(src.invalid(
            0,
            "listener",
            "at least one [[listener]] section is required",
        ));
    }
    let mut out: Vec<Listener> = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().map(Spanned::get_ref).enumerate() {
        let key = |k: &str| format!("listener[{i}].{k}");
        let (text, at) = (l.address.get_ref(), l.address.span().start);
        let address: SocketAddr = text.parse().map_err(|e| {
            src.invalid(
                at,
                key("address"),
                format!("\"{text}\" is not a socket address ({e})"),
            )
        })?;
        if let Some(first) = out
            .iter()
            .position(|o| address.port() != 0 && o.address == address)
        {
            return Err(src.invalid(
                at,
                key("address"),
                format!("{address} is already used by listener[{first}]"),
            ));
        }
        let (mut tls12, mut tls13) = (true, true);
        if let Some(versions) = &l.tls_versions {
            if versions.get_ref().is_empty() {
                let reason = "must list at least one of \"1.2\", \"1.3\"";
                return Err(src.invalid(versions.span().start, key("tls_versions"), reason));
            }
            (tls12, tls13) = (false, false);
            for (j, v) in versions.get_ref().iter().enumerate() {
                match v.get_ref().as_str() {
                    "1.2" => tls12 = true,
                    "1.3" => tls13 = true,
                    other => {
                        let reason = format!(
                            "unknown TLS version \"{other}\" (expected \"1.2\" or \"1.3\")"
                        );
                        return Err(src.invalid(
                            v.span().start,
                            key(&format!("tls_versions[{j}]")),
                            reason,
                        ));
                    }
                }
            }
        }
        out.push(Listener {
            address,
            tls12,
            tls13,
            http2: l.http2.unwrap_or(true),
        });
    }
    Ok(out)
}

/// Returns the TLS settings and the byte offset of the key string.
fn tls(raw: &RawTls, grouped: bool, src: &Source<'_>) -> Result<(TlsConfig, usize), ConfigError> {
    certificate(&raw.certificate, "tls.certificate", src)?;
    let (uri, at) = key(&raw.key, "tls.key", grouped, src)?;
    let files = raw.session_ticket_key_files.as_ref();
    if let Some(f) = files.filter(|f| f.get_ref().iter().any(|p| p.trim().is_empty())) {
        return Err(src.invalid(
            f.span().start,
            "tls.session_ticket_key_files",
            "a file name must not be empty",
        ));
    }
    let tls = TlsConfig {
        certificate_chain: src.dir.join(raw.certificate.get_ref()),
        certificate_location: src.location(raw.certificate.span().start),
        key: KeyRef {
            uri,
            location: src.location(at),
        },
        session_tickets: raw.session_tickets.as_ref().is_none_or(|t| *t.get_ref()),
        session_ticket_keys: files
            .map(|f| f.get_ref().iter().map(|p| src.dir.join(p)).collect())
            .unwrap_or_default(),
        session_ticket_keys_at: files.map(|f| src.location(f.span().start)),
        session_timeout: Duration::from_millis(int(
            raw.session_timeout_ms.as_ref(),
            "tls.session_timeout_ms",
            1000..=86_400_000,
            d::ms(d::SESSION_TIMEOUT),
            src,
        )?),
        ciphers: ciphers(raw.ciphers.as_ref(), src)?,
        client_certificate: raw
            .client_certificate
            .as_ref()
            .map(|p| src.dir.join(p.get_ref())),
        client_certificate_at: (raw.client_certificate.as_ref())
            .map(|p| src.location(p.span().start)),
        verify_client: verify_client(raw, src)?,
        verify_depth: int(
            raw.verify_depth.as_ref(),
            "tls.verify_depth",
            0..=100,
            1,
            src,
        )? as u32,
        ocsp: ocsp(raw, src)?,
        pairs: pairs(&raw.pair, grouped, src)?,
    };
    Ok((tls, at))
}

/// `tls.ocsp_stapling`, `tls.ocsp_responder` (`http://` only, as nginx) and
/// `tls.ocsp_verify`; the last two need the first.
fn ocsp(raw: &RawTls, src: &Source<'_>) -> Result<Option<crate::nginx::OcspFetch>, ConfigError> {
    let on = raw.ocsp_stapling.as_ref().filter(|o| *o.get_ref());
    if on.is_none() {
        if let Some(r) = &raw.ocsp_responder {
            return Err(src.invalid(
                r.span().start,
                "tls.ocsp_responder",
                "needs tls.ocsp_stapling = true",
            ));
        }
        if let Some(v) = &raw.ocsp_verify {
            return Err(src.invalid(
                v.span().start,
                "tls.ocsp_verify",
                "needs tls.ocsp_stapling = true",
            ));
        }
        return Ok(None);
    }
    let responder = match &raw.ocsp_responder {
        Some(r) if !r.get_ref().starts_with("http://") => {
            return Err(src.invalid(
                r.span().start,
                "tls.ocsp_responder",
                "only http:// OCSP responders are supported (as in nginx)",
            ));
        }
        r => r.as_ref().map(|r| r.get_ref().clone()),
    };
    Ok(Some(crate::nginx::OcspFetch {
        responder,
        verify: raw.ocsp_verify.as_ref().is_some_and(|v| *v.get_ref()),
        trusted: None,
        at: on
            .map(|o| src.location(o.span().start).to_string())
            .unwrap_or_default(),
    }))
}

/// `tls.verify_client`: `on` (the default with a `client_certificate`), `optional` or
/// `off` (the default without); `on` and `optional` need the CAs.
fn verify_client(raw: &RawTls, src: &Source<'_>) -> Result<VerifyClient, ConfigError> {
    if let Some(cas) = &raw.client_certificate {
        certificate(cas, "tls.client_certificate", src)?;
    }
    let has_cas = raw.client_certificate.is_some();
    let Some(v) = raw.verify_client.as_ref() else {
        return Ok(if has_cas {
            VerifyClient::On
        } else {
            VerifyClient::Off
        });
    };
    let Some(mode) = VerifyClient::from_name(v.get_ref()) else {
        return Err(src.invalid(
            v.span().start,
            "tls.verify_client",
            format!("\"{}\" is not one of on, optional, off", v.get_ref()),
        ));
    };
    if mode != VerifyClient::Off && !has_cas {
        return Err(src.invalid(
            v.span().start,
            "tls.verify_client",
            "needs tls.client_certificate (the CAs that issue the clients' certificates)",
        ));
    }
    Ok(mode)
}

/// `tls.ciphers`: OpenSSL's or IANA's suite names, each known to rustls and listed once.
fn ciphers(
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    src: &Source<'_>,
) -> Result<Vec<CipherSuite>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.get_ref().is_empty() {
        return Err(src.invalid(
            raw.span().start,
            "tls.ciphers",
            "must not be empty (leave it out for rustls' suites)",
        ));
    }
    let mut out = Vec::new();
    for name in raw.get_ref() {
        let at = name.span().start;
        let Some(suite) = CipherSuite::from_name(name.get_ref()) else {
            let known: Vec<&str> = CipherSuite::ALL.iter().map(|(_, n)| *n).collect();
            return Err(src.invalid(
                at,
                "tls.ciphers",
                format!(
                    "\"{}\" is not a cipher suite hsmgate offers (one of: {})",
                    name.get_ref(),
                    known.join(", ")
                ),
            ));
        };
        if out.contains(&suite) {
            return Err(src.invalid(
                at,
                "tls.ciphers",
                format!("\"{}\" is listed twice", name.get_ref()),
            ));
        }
        out.push(suite);
    }
    Ok(out)
}

/// A certificate file's name (a chain, or `tls.client_certificate`'s CAs): not empty.
fn certificate(cert: &Spanned<String>, name: &str, src: &Source<'_>) -> Result<(), ConfigError> {
    if cert.get_ref().trim().is_empty() {
        return Err(src.invalid(cert.span().start, name, "must not be empty"));
    }
    Ok(())
}

/// A key string (`tls.key`, `tls.pair[i].key`): the URI and the byte offset of the
/// string. With HA groups it names no token and no PIN; without, it names a token.
fn key(
    key: &Spanned<String>,
    name: &str,
    grouped: bool,
    src: &Source<'_>,
) -> Result<(Pkcs11Uri, usize), ConfigError> {
    let at = key.span().start;
    let uri = parse_key_string(key.get_ref()).map_err(|e| {
        // Point into the string when its source text is the value verbatim (no escapes).
        let inner = src.text.get(at + 1..key.span().end.saturating_sub(1));
        let offset = if inner == Some(key.get_ref().as_str()) {
            at + 1 + e.offset
        } else {
            at
        };
        src.error(
            offset,
            ConfigErrorKind::Uri {
                key: name.into(),
                source: Box::new(e),
            },
        )
    })?;
    let reason = if grouped && (uri.token.is_some() || uri.serial.is_some()) {
        Some("with [[hsm.group]] the key URI names no token: each member names its own".to_owned())
    } else if grouped && (uri.pin_source.is_some() || uri.pin_value.is_some()) {
        Some("with [[hsm.group]] each member has its own PIN (pin_file or pin_env)".to_owned())
    } else if !grouped && uri.token.is_none() && uri.serial.is_none() {
        Some("the URI must name a token (token= or serial=)".to_owned())
    } else if uri.object.is_none() && uri.id.is_none() {
        Some("the URI must name the key object (object= or id=)".to_owned())
    } else {
        uri.object_type
            .filter(|t| *t != ObjectType::Private)
            .map(|t| format!("attribute \"type\" is \"{t}\"; the TLS key must be type=private"))
    };
    if let Some(reason) = reason {
        return Err(src.invalid(at, name, reason));
    }
    Ok((uri, at))
}

/// `[[tls.pair]]`: each pair's certificate and key (by the rules of `[tls]`'s; with
/// `[pkcs11]`, module and PIN come from there alone) and its `server_names`: not
/// empty, no regexes, and a name belongs to one list (pairs with the same list serve
/// the same names, e.g. RSA and ECDSA).
fn pairs(
    raw: &[Spanned<RawPair>],
    grouped: bool,
    src: &Source<'_>,
) -> Result<Vec<TlsPair>, ConfigError> {
    let mut out: Vec<TlsPair> = Vec::new();
    for (i, p) in raw.iter().map(Spanned::get_ref).enumerate() {
        let name = |k: &str| format!("tls.pair[{i}].{k}");
        certificate(&p.certificate, &name("certificate"), src)?;
        let (uri, at) = key(&p.key, &name("key"), grouped, src)?;
        if !grouped
            && (uri.module_path.is_some() || uri.pin_source.is_some() || uri.pin_value.is_some())
        {
            let reason =
                "the module and PIN of a [[tls.pair]] key come from [pkcs11]; set them there";
            return Err(src.invalid(at, name("key"), reason));
        }
        if let (false, Some(g)) = (grouped, &p.group) {
            let reason = "no [[hsm.group]] is configured (the key is in [pkcs11]'s token)";
            return Err(src.invalid(g.span().start, name("group"), reason));
        }
        let mut server_names: Vec<String> = Vec::new();
        for (j, n) in p.server_names.iter().enumerate() {
            let lower = n.get_ref().trim().to_ascii_lowercase();
            let reason = if lower.is_empty() {
                Some("must not be empty".to_owned())
            } else if lower.starts_with('~') {
                Some("regular expressions are for nginx configurations; list the names".to_owned())
            } else if server_names.contains(&lower) {
                Some(format!("\"{lower}\" is listed twice"))
            } else {
                None
            };
            if let Some(reason) = reason {
                let key = name(&format!("server_names[{j}]"));
                return Err(src.invalid(n.span().start, key, reason));
            }
            server_names.push(lower);
        }
        // A name belongs to one server: an earlier pair sharing a name must list the
        // same names (then both serve them, e.g. RSA and ECDSA).
        let mut sorted = server_names.clone();
        sorted.sort();
        for (k, o) in out.iter().enumerate() {
            let mut theirs = o.server_names.clone();
            theirs.sort();
            let shared = server_names.iter().position(|n| theirs.contains(n));
            if let Some(j) = shared
                && theirs != sorted
            {
                let reason = format!(
                    "\"{}\" is a server name of tls.pair[{k}], which lists other names (pairs \
                     serving the same names list the same names)",
                    server_names[j]
                );
                let key = name(&format!("server_names[{j}]"));
                return Err(src.invalid(p.server_names[j].span().start, key, reason));
            }
        }
        out.push(TlsPair {
            certificate_chain: src.dir.join(p.certificate.get_ref()),
            certificate_location: src.location(p.certificate.span().start),
            key: KeyRef {
                uri,
                location: src.location(at),
            },
            server_names,
        });
    }
    Ok(out)
}

fn upstream(raw: &RawUpstream, src: &Source<'_>) -> Result<Upstream, ConfigError> {
    let (address, at) = (raw.address.get_ref(), raw.address.span().start);
    check_host_port(address).map_err(|reason| src.invalid(at, "upstream.address", reason))?;
    let ms = |v, key, range, default| int(v, key, range, default, src).map(Duration::from_millis);
    Ok(Upstream {
        address: address.clone(),
        connect_timeout: ms(
            raw.connect_timeout_ms.as_ref(),
            "upstream.connect_timeout_ms",
            1..=600_000,
            d::ms(d::UPSTREAM_CONNECT_TIMEOUT),
        )?,
        request_timeout: ms(
            raw.request_timeout_ms.as_ref(),
            "upstream.request_timeout_ms",
            1..=86_400_000,
            d::ms(d::UPSTREAM_REQUEST_TIMEOUT),
        )?,
    })
}

/// Checks `host:port`; the reason is wrapped with a location by the caller.
fn check_host_port(s: &str) -> Result<(), String> {
    if let Some(path) = crate::unix_socket_path(s) {
        return match path.len() {
            0 => Err(format!("\"{s}\" has no socket path (expected unix:/path)")),
            n if n > crate::UNIX_PATH_MAX => Err(format!(
                "\"{s}\": the socket path is over {} bytes",
                crate::UNIX_PATH_MAX
            )),
            _ => Ok(()),
        };
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "\"{s}\" is a URL: give the address alone (host:port, without \"{scheme}://\")"
        ));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{s}\" has no port (expected host:port)"))?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{v6}\" is not an IPv6 address"))?;
    } else if host.contains(':') {
        return Err(format!(
            "\"{s}\": an IPv6 host must be in brackets, e.g. \"[::1]:8080\""
        ));
    } else if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("\"{host}\" is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(format!("port \"{port}\" is not in 1..=65535")),
    }
}

/// An optional integer with a default, checked against `range`.
pub(crate) fn int(
    value: Option<&Spanned<i64>>,
    key: &str,
    range: RangeInclusive<i64>,
    default: i64,
    src: &Source<'_>,
) -> Result<u64, ConfigError> {
    let Some(value) = value else {
        return Ok(default.unsigned_abs());
    };
    let n = *value.get_ref();
    if !range.contains(&n) {
        let reason = format!(
            "must be between {} and {} (got {n})",
            range.start(),
            range.end()
        );
        return Err(src.invalid(value.span().start, key, reason));
    }
    Ok(n.unsigned_abs())
}

#[cfg(test)]
mod fixture {
    //! A small valid config and helpers to break it.

    use std::path::Path;

    use crate::{Config, ConfigError, load_str};

    pub(crate) const FILE: &str = "/etc/hsmgate/hsmgate.toml";
    /// Lines: 2 address, 6 key, 9 module, 12 upstream address.
    pub(crate) const BASE: &str = r#"[[listener]]
address = "127.0.0.1:8443"

[tls]
certificate = "cert.pem"
key = "pkcs11:token=demo;object=tls-rsa;type=private?pin-source=file:pin.txt"

[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"

[upstream]
address = "127.0.0.1:8080"
"#;

    pub(crate) fn edit(edits: &[(&str, &str)]) -> String {
        edits.iter().fold(BASE.to_owned(), |text, (from, to)| {
            assert!(text.contains(from), "{from:?} not in base");
            text.replacen(from, to, 1)
        })
    }

    pub(crate) fn good(edits: &[(&str, &str)]) -> Config {
        load_str(&edit(edits), Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asserts that the edited base fails at `line` with a message containing `needles`.
    pub(crate) fn bad(edits: &[(&str, &str)], line: usize, needles: &[&str]) -> ConfigError {
        let e = load_str(&edit(edits), Path::new(FILE)).expect_err("should fail");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{FILE}:{line}:")),
            "expected line {line}: {msg}"
        );
        for needle in needles {
            assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::fixture::{bad, good};

    #[test]
    fn base_loads_with_defaults() {
        let c = good(&[]);
        let l = &c.listeners[0];
        assert_eq!(
            (l.address.port(), l.tls12, l.tls13, l.http2),
            (8443, true, true, true)
        );
        assert_eq!(c.tls.certificate_chain, Path::new("/etc/hsmgate/cert.pem"));
        assert_eq!((c.tls.key.location.line, c.tls.key.location.col), (6, 7));
        assert_eq!(
            c.pkcs11.as_ref().expect("single token").pin,
            crate::PinSource::File("/etc/hsmgate/pin.txt".into())
        );
        assert_eq!(
            (
                c.pkcs11.as_ref().expect("single token").sessions,
                c.pkcs11.as_ref().expect("single token").queue_depth
            ),
            (4, 1024)
        );
        assert_eq!(
            c.pkcs11
                .as_ref()
                .expect("single token")
                .sign_timeout
                .as_millis(),
            2000
        );
        assert_eq!(c.upstream.connect_timeout.as_millis(), 3000);
        assert_eq!(c.upstream.request_timeout.as_millis(), 60_000);
        assert_eq!(c.shutdown_grace.as_millis(), 10_000);
        let v6 = good(&[(
            "8443\"",
            "8443\"\ntls_versions = [\"1.3\"]\nhttp2 = false\n\n[[listener]]\naddress = \"[::1]:8443\"",
        )]);
        let (a, b) = (&v6.listeners[0], &v6.listeners[1]);
        assert_eq!(
            (a.tls12, a.tls13, a.http2, b.address.is_ipv6()),
            (false, true, false, true)
        );
    }

    #[test]
    fn tls_ciphers_are_the_servers_order() {
        use crate::nginx::CipherSuite as C;
        assert!(good(&[]).tls.ciphers.is_empty(), "rustls' order by default");
        let key_line = "type=private?pin-source=file:pin.txt\"";
        let listed = format!(
            "{key_line}\nciphers = [\"TLS_AES_128_GCM_SHA256\", \"TLS13_AES_256_GCM_SHA384\",\n  \"ECDHE-RSA-AES128-GCM-SHA256\"]"
        );
        let c = good(&[(key_line, &listed)]);
        assert_eq!(
            c.tls.ciphers,
            [C::Tls13Aes128Gcm, C::Tls13Aes256Gcm, C::EcdheRsaAes128Gcm]
        );
        // Unknown, twice, empty: located at the value.
        let unknown =
            format!("{key_line}\nciphers = [\"TLS_AES_128_GCM_SHA256\",\n  \"AES128-SHA\"]");
        bad(
            &[(key_line, &unknown)],
            8,
            &[
                "`tls.ciphers`",
                "\"AES128-SHA\"",
                "ECDHE-RSA-AES128-GCM-SHA256",
            ],
        );
        let twice = format!(
            "{key_line}\nciphers = [\"ECDHE-RSA-AES128-GCM-SHA256\", \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]"
        );
        bad(&[(key_line, &twice)], 7, &["`tls.ciphers`", "listed twice"]);
        bad(
            &[(key_line, &format!("{key_line}\nciphers = []"))],
            7,
            &["`tls.ciphers`", "must not be empty"],
        );
        // TLS 1.3 suites alone: fine for TLS 1.3-only listeners, an error beside TLS 1.2.
        let only13 = format!("{key_line}\nciphers = [\"TLS_AES_128_GCM_SHA256\"]");
        bad(
            &[(key_line, &only13)],
            7,
            &["`tls.ciphers`", "no TLS 1.2 suite"],
        );
        let c = good(&[
            (key_line, &only13),
            ("8443\"", "8443\"\ntls_versions = [\"1.3\"]"),
        ]);
        assert_eq!(c.tls.ciphers, [C::Tls13Aes128Gcm]);
    }

    #[test]
    fn ocsp_stapling_as_nginx_names_it() {
        assert_eq!(good(&[]).tls.ocsp, None, "off by default");
        let key_line = "type=private?pin-source=file:pin.txt\"";
        let with = |extra: &str| format!("{key_line}\n{extra}");
        let c = good(&[(key_line, &with("ocsp_stapling = true"))]);
        let o = c.tls.ocsp.expect("on");
        assert_eq!((o.responder, o.verify, o.trusted), (None, false, None));
        assert!(o.at.ends_with(":7:17"), "{}", o.at);
        let c = good(&[(
            key_line,
            &with(
                "ocsp_stapling = true\nocsp_responder = \"http://ocsp.test:8080/\"\nocsp_verify = true",
            ),
        )]);
        let o = c.tls.ocsp.expect("on");
        assert_eq!(
            (o.responder.as_deref(), o.verify),
            (Some("http://ocsp.test:8080/"), true)
        );
        assert_eq!(
            good(&[(key_line, &with("ocsp_stapling = false"))]).tls.ocsp,
            None
        );
        bad(
            &[(
                key_line,
                &with("ocsp_stapling = true\nocsp_responder = \"https://ocsp.test/\""),
            )],
            8,
            &["`tls.ocsp_responder`", "only http://"],
        );
        bad(
            &[(key_line, &with("ocsp_verify = true"))],
            7,
            &["`tls.ocsp_verify`", "needs tls.ocsp_stapling = true"],
        );
    }

    #[test]
    fn client_certificates_as_nginx_names_them() {
        use crate::nginx::VerifyClient as V;
        let c = good(&[]);
        assert_eq!(
            (
                c.tls.client_certificate.as_deref(),
                c.tls.verify_client,
                c.tls.verify_depth
            ),
            (None, V::Off, 1),
            "none asked for by default"
        );
        let key_line = "type=private?pin-source=file:pin.txt\"";
        let with = |extra: &str| format!("{key_line}\n{extra}");
        // CAs given: required, unless it says otherwise; the file is relative to the config.
        let c = good(&[(key_line, &with("client_certificate = \"cas.pem\""))]);
        assert_eq!(
            (c.tls.client_certificate.as_deref(), c.tls.verify_client),
            (Some(Path::new("/etc/hsmgate/cas.pem")), V::On)
        );
        let c = good(&[(
            key_line,
            &with(
                "client_certificate = \"cas.pem\"\nverify_client = \"optional\"\nverify_depth = 2",
            ),
        )]);
        assert_eq!((c.tls.verify_client, c.tls.verify_depth), (V::Optional, 2));
        let c = good(&[(
            key_line,
            &with("client_certificate = \"cas.pem\"\nverify_client = \"off\""),
        )]);
        assert_eq!(c.tls.verify_client, V::Off);
        // Located errors: no CAs to verify with, an unknown mode, an empty name, a depth.
        bad(
            &[(key_line, &with("verify_client = \"on\""))],
            7,
            &["`tls.verify_client`", "needs tls.client_certificate"],
        );
        bad(
            &[(
                key_line,
                &with("client_certificate = \"cas.pem\"\nverify_client = \"yes\""),
            )],
            8,
            &["`tls.verify_client`", "\"yes\"", "on, optional, off"],
        );
        bad(
            &[(key_line, &with("client_certificate = \" \""))],
            7,
            &["`tls.client_certificate`", "must not be empty"],
        );
        bad(
            &[(
                key_line,
                &with("client_certificate = \"cas.pem\"\nverify_depth = -1"),
            )],
            8,
            &["`tls.verify_depth`"],
        );
    }

    #[test]
    fn listener_rules() {
        bad(
            &[("[[listener]]\naddress = \"127.0.0.1:8443\"\n", "")],
            1,
            &["`listener`", "at least one"],
        );
        bad(
            &[("127.0.0.1:8443", "localhost:8443")],
            2,
            &["`listener[0].address`", "localhost:8443"],
        );
        let dup = "8443\"\n[[listener]]\nhttp2 = false\naddress = \"127.0.0.1:8443\"";
        bad(
            &[("8443\"", dup)],
            5,
            &["`listener[1].address`", "already used by listener[0]"],
        );
        bad(
            &[("8443\"", "8443\"\ntls_versions = []")],
            3,
            &["`listener[0].tls_versions`", "at least one"],
        );
        let bad_version = "8443\"\ntls_versions = [\"1.3\",\n  \"1.1\"]";
        bad(
            &[("8443\"", bad_version)],
            4,
            &["`listener[0].tls_versions[1]`", "\"1.1\""],
        );
    }

    #[test]
    fn the_certificate_has_its_own_location() {
        let c = good(&[]);
        assert_eq!(c.tls.certificate_location.line, 5);
        assert_eq!(c.tls.key.location.line, 6);
    }

    #[test]
    fn limits_default_to_nginx_and_are_checked() {
        let c = good(&[]);
        assert_eq!(c.limits, crate::model::Limits::default());
        assert_eq!(c.limits.client.handshake_timeout.as_secs(), 10);
        assert_eq!(c.limits.client.body_timeout.as_secs(), 60);
        let set = "8080\"\n\n[limits]\nhandshake_timeout_ms = 2500\nbody_timeout_ms = 3000\nheader_timeout_ms = 4000\nkeepalive_timeout_ms = 0\nheader_buffers = 2\nheader_buffer_size = 4096\nhttp2_max_concurrent_streams = 64\nmax_body_size = 1048576\nkeepalive_requests = 100\nkeepalive_time_ms = 90000";
        let c = good(&[("8080\"", set)]);
        let l = c.limits;
        assert_eq!(l.client.keepalive_requests, 100);
        assert_eq!(l.client.keepalive_time.as_secs(), 90);
        assert_eq!(l.client.handshake_timeout.as_millis(), 2500);
        assert_eq!(l.client.body_timeout.as_millis(), 3000);
        assert_eq!(l.client.header_timeout.as_millis(), 4000);
        assert_eq!(l.keepalive_timeout.as_millis(), 0);
        assert_eq!(l.client.large_header_buffers, (2, 4096));
        assert_eq!(l.client.http2_max_concurrent_streams, 64);
        assert_eq!(l.max_body_size, Some(1 << 20));
        bad(
            &[("8080\"", "8080\"\n\n[limits]\nbody_timeout_ms = 0")],
            15,
            &["`limits.body_timeout_ms`", "between 1 and"],
        );
        bad(
            &[("8080\"", "8080\"\n\n[limits]\nheader_buffer_size = 100")],
            15,
            &["`limits.header_buffer_size`"],
        );
    }

    #[test]
    fn certificate_and_key_rules() {
        bad(
            &[("\"cert.pem\"", "\"\"")],
            5,
            &["`tls.certificate`", "empty"],
        );
        let e = bad(
            &[("object=tls-rsa", "object=tls-rsa;colour=red")],
            6,
            &["`tls.key`", "attribute \"colour\""],
        );
        assert_eq!(
            e.col,
            7 + 1 + "pkcs11:token=demo;object=tls-rsa;".len(),
            "column points at the attribute"
        );
        bad(
            &[("token=demo;", "token=%zz;")],
            6,
            &["`tls.key`", "attribute \"token\"", "\"%zz\""],
        );
        bad(
            &[("\"pkcs11:", "\"engine:tpm2:pkcs11:")],
            6,
            &["`tls.key`", "engine \"tpm2\""],
        );
        bad(
            &[("token=demo;", "")],
            6,
            &["`tls.key`", "token= or serial="],
        );
        bad(
            &[("object=tls-rsa;", "")],
            6,
            &["`tls.key`", "object= or id="],
        );
        bad(
            &[("type=private", "type=cert")],
            6,
            &["`tls.key`", "attribute \"type\" is \"cert\""],
        );
        let c = good(&[(
            "\"pkcs11:token=demo;object=tls-rsa;",
            "\"engine:pkcs11:pkcs11:serial=42;id=%01;",
        )]);
        assert_eq!(c.tls.key.uri.id, Some(vec![1]));
    }

    #[test]
    fn ranges_and_upstream() {
        let m = "libsofthsm2.so\"";
        for (line, needle) in [
            (
                "sessions = 0",
                "`pkcs11.sessions`: must be between 1 and 256 (got 0)",
            ),
            ("sessions = 257", "`pkcs11.sessions`"),
            ("queue_depth = 1000001", "`pkcs11.queue_depth`"),
            ("sign_timeout_ms = 0", "`pkcs11.sign_timeout_ms`"),
            ("sign_timeout_ms = -5", "(got -5)"),
            ("env = { \"A=B\" = \"x\" }", "`pkcs11.env.A=B`"),
        ] {
            bad(&[(m, &format!("{m}\n{line}"))], 10, &[needle]);
        }
        let u = "8080\"";
        for (line, needle) in [
            ("connect_timeout_ms = 0", "`upstream.connect_timeout_ms`"),
            (
                "request_timeout_ms = 86400001",
                "`upstream.request_timeout_ms`",
            ),
        ] {
            bad(&[(u, &format!("{u}\n{line}"))], 13, &[needle]);
        }
        bad(
            &[(u, "8080\"\n\n[runtime]\nthreads = 1025")],
            15,
            &["`runtime.threads`"],
        );
        bad(
            &[(u, "8080\"\n\n[shutdown]\ngrace_ms = 600001")],
            15,
            &["`shutdown.grace_ms`"],
        );
        for (addr, needle) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port \"0\""),
            ("127.0.0.1:70000", "port \"70000\""),
            ("::1:8080", "brackets"),
            ("[::g]:8080", "IPv6"),
            (":8080", "host name"),
            ("unix:", "no socket path"),
        ] {
            bad(
                &[("127.0.0.1:8080", addr)],
                12,
                &["`upstream.address`", needle],
            );
        }
        let c = good(&[(
            "127.0.0.1:8080\"",
            "backend.internal:80\"\nconnect_timeout_ms = 5",
        )]);
        assert_eq!(
            (
                c.upstream.address.as_str(),
                c.upstream.connect_timeout.as_millis()
            ),
            ("backend.internal:80", 5)
        );
        assert_eq!(
            good(&[("127.0.0.1:8080", "unix:/run/app.sock")])
                .upstream
                .address,
            "unix:/run/app.sock"
        );
        assert_eq!(
            good(&[("127.0.0.1:8080", "[::1]:8080")]).upstream.address,
            "[::1]:8080"
        );
        let env = good(&[(m, &format!("{m}\nenv = {{ SOFTHSM2_CONF = \"/x\" }}"))]);
        assert_eq!(
            env.pkcs11
                .as_ref()
                .expect("single token")
                .env
                .get("SOFTHSM2_CONF")
                .map(String::as_str),
            Some("/x")
        );
    }

    #[test]
    fn pairs_on_the_pkcs11_token() {
        let key = "pin-source=file:pin.txt\"\n";
        let pair = |extra: &str| {
            format!(
                "{key}[[tls.pair]]\ncertificate = \"ec.pem\"\nkey = \"pkcs11:token=demo;object=tls-ec\"\n{extra}"
            )
        };
        let c = good(&[(key, &pair(""))]);
        let p = &c.tls.pairs[0];
        assert_eq!(p.certificate_chain, Path::new("/etc/hsmgate/ec.pem"));
        assert_eq!((p.key.location.line, p.key.uri.group.as_deref()), (9, None));
        assert!(p.server_names.is_empty());
        let site = crate::site::Site::from_native(&c);
        assert_eq!((site.servers.len(), site.servers[0].certs.len()), (1, 2));
        bad(
            &[(key, &pair("").replace("tls-ec", "tls-ec?module-path=/x.so"))],
            9,
            &["`tls.pair[0].key`", "from [pkcs11]"],
        );
        bad(
            &[(key, &pair("group = \"g\"\n"))],
            10,
            &["`tls.pair[0].group`", "no [[hsm.group]]"],
        );
        bad(
            &[(key, &pair("").replace("token=demo;", ""))],
            9,
            &["`tls.pair[0].key`", "must name a token"],
        );
        bad(
            &[(key, &pair("server_names = [\"a\", \"a\"]\n"))],
            10,
            &["`tls.pair[0].server_names[1]`", "listed twice"],
        );
    }
}
