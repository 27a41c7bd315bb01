//! OCSP stapling from the certificate's responder: `ssl_stapling on` without
//! `ssl_stapling_file`.
//!
//! For each certificate of such a server, [`Staple::new`] finds the issuer (in the
//! `ssl_certificate` chain, else in `ssl_trusted_certificate`) and the responder (the
//! certificate's Authority Information Access URL, or `ssl_stapling_responder`), and
//! makes the DER request (RFC 6960 §4.1: one `CertID`, SHA-1 as nginx and OpenSSL send
//! it). A task per certificate ([`run`]) fetches the response over HTTP/1.0 (`POST`,
//! only `http://` responders, as nginx), checks it (a `successful` answer with a
//! `good` status for this certificate's `CertID`, within its validity with nginx's five
//! minutes of leeway; with `ssl_stapling_verify on`, signed by the issuer or by a
//! responder certificate the issuer signed for OCSP) and hands it to the handshakes
//! through [`Staple::current`]. As nginx: the response is fetched again an hour later,
//! or five minutes before its `nextUpdate` if that is sooner; a failed fetch keeps the
//! last response until its `nextUpdate` and is tried again (after 5 s, doubling up to
//! 5 min, where nginx waits 5 min at once). Unlike nginx, the first fetch starts with
//! the configuration, not with the first handshake, so the first clients get the
//! response too. Names are resolved with the system resolver (`resolver` is ignored).
//! The task ends when its configuration is replaced (a reload) or dropped.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use yasna::Tag;

use hsmgate_config::nginx::OcspFetch;

/// How long one fetch (resolve, connect, send, read) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response read.
const MAX_RESPONSE: u64 = 256 * 1024;
/// A good response is fetched again after at most this long (nginx: 1 h).
const REFRESH: Duration = Duration::from_secs(3600);
/// ... and this long before its `nextUpdate` (nginx: 5 min), but not sooner than this
/// after the fetch.
const BEFORE_NEXT_UPDATE: Duration = Duration::from_secs(300);
/// The clock skew allowed on `thisUpdate` and `nextUpdate` (nginx: 5 min).
const LEEWAY: Duration = Duration::from_secs(300);
/// The first retry after a failure; doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// id-pkix-ocsp-basic.
const OID_BASIC: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 1];
const OID_SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
/// id-ad-ocsp (an Authority Information Access method).
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// Why a certificate's response could not be fetched or was not stapled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OcspError {
    #[error("no OCSP responder URL in the certificate (set \"ssl_stapling_responder\")")]
    NoResponder,
    #[error("invalid OCSP responder URL \"{0}\" (only http:// is supported)")]
    BadUrl(String),
    #[error(
        "the issuer certificate was not found in \"ssl_certificate\" or \"ssl_trusted_certificate\""
    )]
    NoIssuer,
    /// `ssl_trusted_certificate` could not be read as PEM certificates.
    #[error(transparent)]
    Trusted(Box<crate::error::ProxyError>),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout(String),
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{0}: invalid HTTP answer")]
    Http(String),
    #[error("invalid OCSP response: {0}")]
    Invalid(&'static str),
    #[error("OCSP response status {0} (not successful)")]
    NotSuccessful(i64),
    #[error("certificate status \"{0}\" in the OCSP response")]
    NotGood(&'static str),
    #[error("the OCSP response is not valid now (thisUpdate {this}, nextUpdate {next})")]
    OutOfDate { this: String, next: String },
    #[error("the OCSP response's signature does not verify: {0}")]
    Signature(String),
}

/// One certificate's stapled response, for the handshakes.
#[derive(Debug)]
pub(crate) struct Staple {
    /// The certified key as configured (no response).
    base: Arc<CertifiedKey>,
    /// What handshakes get: `base`, or a copy of it with the response.
    current: RwLock<Arc<CertifiedKey>>,
    target: Target,
}

/// What is asked, of whom, and how the answer is checked.
#[derive(Debug)]
struct Target {
    url: Url,
    /// The DER `OCSPRequest`.
    request: Vec<u8>,
    /// The `CertID` the answer must be about (SHA-1 and SHA-256 hashes).
    id: CertId,
    /// The issuer's certificate (DER), which signs the response or its responder's.
    issuer: CertificateDer<'static>,
    verify: bool,
    /// The certificate's subject, for the log.
    subject: String,
    /// Where `ssl_stapling on` is written.
    at: String,
}

#[derive(Debug)]
struct CertId {
    /// The serial number's DER `INTEGER` (tag, length, value).
    serial: Vec<u8>,
    name_sha1: Vec<u8>,
    key_sha1: Vec<u8>,
    name_sha256: Vec<u8>,
    key_sha256: Vec<u8>,
}

/// `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    text: String,
    host: String,
    port: u16,
    /// `host[:port]` as written, for `Host`.
    authority: String,
    path: String,
}

/// A checked response: its DER and until when it may be stapled.
#[derive(Debug)]
struct Checked {
    der: Vec<u8>,
    /// `nextUpdate` (None: none given).
    next_update: Option<SystemTime>,
}

impl Staple {
    /// The staple of `certified` (whose chain starts with the certificate) as `fetch`
    /// says. An error (no responder URL, no issuer) is nginx's warning: the server
    /// serves without stapling.
    pub(crate) fn new(
        certified: Arc<CertifiedKey>,
        fetch: &OcspFetch,
    ) -> Result<Staple, OcspError> {
        let target = Target::new(&certified.cert, fetch)?;
        Ok(Staple {
            current: RwLock::new(Arc::clone(&certified)),
            base: certified,
            target,
        })
    }

    /// What a handshake serves now.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, der: Option<Vec<u8>>, next_update: Option<SystemTime>) {
        let secs = match (&der, next_update) {
            (None, _) => 0.0,
            (Some(_), Some(t)) => t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            // No nextUpdate: good until replaced (far in the future).
            (Some(_), None) => f64::from(u32::MAX),
        };
        metrics::gauge!(crate::metrics::OCSP_NEXT_UPDATE, "certificate" => self.target.subject.clone())
            .set(secs);
        let next = match der {
            Some(der) => {
                let mut c = CertifiedKey::clone(&self.base);
                c.ocsp = Some(der);
                Arc::new(c)
            }
            None => Arc::clone(&self.base),
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    fn stapled(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ocsp
            .is_some()
    }
}

/// Keeps `staple` fresh until it is dropped or `retired` says its configuration was
/// replaced.
pub(crate) async fn run(staple: Weak<Staple>, retired: impl Fn() -> bool) {
    let mut retry = RETRY_MIN;
    // Until when the response stapled now may be served.
    let mut valid_until: Option<SystemTime> = None;
    loop {
        if retired() {
            return;
        }
        let Some(s) = staple.upgrade() else { return };
        let t = &s.target;
        let wait = match fetch_and_check(t, SystemTime::now()).await {
            Ok(checked) => {
                let now = SystemTime::now();
                if !s.stapled() {
                    tracing::info!(certificate = %t.subject, responder = %t.url.text, at = %t.at, next_update = ?checked.next_update.map(rfc3339), "OCSP response stapled");
                }
                valid_until = checked.next_update;
                s.set(Some(checked.der), checked.next_update);
                fetched(t, "stapled");
                retry = RETRY_MIN;
                refresh_after(now, checked.next_update)
            }
            Err(e) => {
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                fetched(t, "error");
                tracing::warn!(certificate = %t.subject, responder = %t.url.text, at = %t.at, retry_in = ?wait, stapled = s.stapled(), "OCSP stapling: {e}");
                wait
            }
        };
        drop(s);
        // Sleep until the refresh, but drop a response whose nextUpdate comes first.
        let mut wake = SystemTime::now() + wait;
        if let Some(v) = valid_until
            && v < wake
        {
            tokio::time::sleep(v.duration_since(SystemTime::now()).unwrap_or_default()).await;
            if let Some(s) = staple.upgrade()
                && s.stapled()
            {
                tracing::warn!(certificate = %s.target.subject, at = %s.target.at, "OCSP response expired (nextUpdate passed): nothing is stapled until a new one is fetched");
                s.set(None, None);
            }
            valid_until = None;
        }
        let now = SystemTime::now();
        if wake < now {
            wake = now;
        }
        tokio::time::sleep(wake.duration_since(now).unwrap_or_default()).await;
    }
}

fn fetched(t: &Target, result: &'static str) {
    metrics::counter!(crate::metrics::OCSP_FETCHES, "certificate" => t.subject.clone(), "result" => result)
        .increment(1);
}

/// nginx's refresh: an hour after the fetch or five minutes before `nextUpdate`,
/// whichever is sooner, but at least five minutes after the fetch.
fn refresh_after(now: SystemTime, next_update: Option<SystemTime>) -> Duration {
    let by_next = next_update.map_or(REFRESH, |n| {
        n.duration_since(now)
            .unwrap_or_default()
            .saturating_sub(BEFORE_NEXT_UPDATE)
    });
    by_next.min(REFRESH).max(BEFORE_NEXT_UPDATE)
}

async fn fetch_and_check(t: &Target, now: SystemTime) -> Result<Checked, OcspError> {
    let der = fetch(&t.url, &t.request).await?;
    check(t, der, now)
}

/// POSTs `request` to `url` over HTTP/1.0 and returns the body of a 200 answer.
async fn fetch(url: &Url, request: &[u8]) -> Result<Vec<u8>, OcspError> {
    let io = |source| OcspError::Io {
        url: url.text.clone(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(io)?;
        let mut out = format!(
            "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
            url.path,
            url.authority,
            request.len()
        )
        .into_bytes();
        out.extend_from_slice(request);
        stream.write_all(&out).await.map_err(io)?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        if answer.len() as u64 > MAX_RESPONSE {
            return Err(OcspError::Http(url.text.clone()));
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| OcspError::Timeout(url.text.clone()))??;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(OcspError::Http(url.text.clone())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 200 {
        return Err(OcspError::Status {
            url: url.text.clone(),
            status,
        });
    }
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| OcspError::Http(url.text.clone()))
        })
        .transpose()?;
    let body = &answer[head..];
    match length {
        Some(n) if n > body.len() => Err(OcspError::Http(url.text.clone())),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

/// The parts of a `BasicOCSPResponse` the check needs.
struct Basic {
    /// `tbsResponseData` as signed.
    tbs: Vec<u8>,
    alg: yasna::models::ObjectIdentifier,
    signature: Vec<u8>,
    certs: Vec<Vec<u8>>,
    /// `responderID`: `[1]` by name (the Name's DER) or `[2]` by key (SHA-1 of the key).
    responder: (u64, Vec<u8>),
    single: Vec<Single>,
}

struct Single {
    hash: yasna::models::ObjectIdentifier,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    serial: Vec<u8>,
    /// 0 good, 1 revoked, 2 unknown.
    status: u64,
    this_update: SystemTime,
    next_update: Option<SystemTime>,
}

/// Checks `der` as the answer about `t`'s certificate at `now`.
fn check(t: &Target, der: Vec<u8>, now: SystemTime) -> Result<Checked, OcspError> {
    let basic = parse(&der)?;
    let single = basic
        .single
        .iter()
        .find(|s| t.id.matches(s))
        .ok_or(OcspError::Invalid("no answer about this certificate"))?;
    match single.status {
        0 => {}
        1 => return Err(OcspError::NotGood("revoked")),
        _ => return Err(OcspError::NotGood("unknown")),
    }
    let late = single.next_update.is_some_and(|n| n + LEEWAY < now);
    if single.this_update > now + LEEWAY || late {
        return Err(OcspError::OutOfDate {
            this: rfc3339(single.this_update),
            next: single.next_update.map_or_else(|| "none".into(), rfc3339),
        });
    }
    if t.verify {
        verify(t, &basic, now)?;
    }
    Ok(Checked {
        next_update: single.next_update,
        der,
    })
}

impl Target {
    /// The target of `chain`'s first certificate.
    fn new(chain: &[CertificateDer<'static>], fetch: &OcspFetch) -> Result<Target, OcspError> {
        let leaf_der = chain.first().ok_or(OcspError::Cert("empty chain".into()))?;
        let (_, leaf) =
            X509Certificate::from_der(leaf_der).map_err(|e| OcspError::Cert(e.to_string()))?;
        let url = match &fetch.responder {
            Some(u) => Url::parse(u)?,
            None => Url::parse(&responder_of(&leaf)?)?,
        };
        let issuer = find_issuer(&leaf, &chain[1..], fetch.trusted.as_deref())?;
        let (_, issuer_cert) =
            X509Certificate::from_der(&issuer).map_err(|e| OcspError::Cert(e.to_string()))?;
        let name = leaf.tbs_certificate.issuer.as_raw();
        let key: &[u8] = &issuer_cert.public_key().subject_public_key.data;
        let id = CertId {
            serial: der_integer(leaf.raw_serial()),
            name_sha1: sha1(name),
            key_sha1: sha1(key),
            name_sha256: sha256(name),
            key_sha256: sha256(key),
        };
        Ok(Target {
            url,
            request: request_der(&id),
            id,
            issuer,
            verify: fetch.verify,
            subject: leaf.subject().to_string(),
            at: fetch.at.clone(),
        })
    }
}

impl CertId {
    fn matches(&self, s: &Single) -> bool {
        let (name, key) = if s.hash.components().as_slice() == OID_SHA1 {
            (&self.name_sha1, &self.key_sha1)
        } else if s.hash.components().as_slice() == OID_SHA256 {
            (&self.name_sha256, &self.key_sha256)
        } else {
            return false;
        };
        *name == s.name_hash && *key == s.key_hash && self.serial == s.serial
    }
}

fn parse(der: &[u8]) -> Result<Basic, OcspError> {
    let bad = |_| OcspError::Invalid("not a DER OCSPResponse");
    let (status, bytes) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let status = r.next().read_enum()?;
            let bytes = r.read_optional(|r| {
                r.read_tagged(Tag::context(0), |r| {
                    r.read_sequence(|r| {
                        let oid = r.next().read_oid()?;
                        let resp = r.next().read_bytes()?;
                        Ok((oid, resp))
                    })
                })
            })?;
            Ok((status, bytes))
        })
    })
    .map_err(bad)?;
    if status != 0 {
        return Err(OcspError::NotSuccessful(status));
    }
    let (oid, basic) = bytes.ok_or(OcspError::Invalid("no responseBytes"))?;
    if oid.components().as_slice() != OID_BASIC {
        return Err(OcspError::Invalid("not a basic OCSP response"));
    }
    let bad = |_| OcspError::Invalid("not a DER BasicOCSPResponse");
    let (tbs, alg, signature, certs) = yasna::parse_der(&basic, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            let alg = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_der())?;
                Ok(oid)
            })?;
            let (signature, _) = r.next().read_bitvec_bytes()?;
            let certs = r
                .read_optional(|r| {
                    r.read_tagged(Tag::context(0), |r| r.collect_sequence_of(|r| r.read_der()))
                })?
                .unwrap_or_default();
            Ok((tbs, alg, signature, certs))
        })
    })
    .map_err(bad)?;
    let bad = |_| OcspError::Invalid("not a DER ResponseData");
    let (responder, single) = yasna::parse_der(&tbs, |r| {
        r.read_sequence(|r| {
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_i64()))?;
            let responder = r.next().read_tagged_der()?;
            r.next().read_generalized_time()?;
            let single = r.next().collect_sequence_of(|r| {
                r.read_sequence(|r| {
                    let (hash, name_hash, key_hash, serial) = r.next().read_sequence(|r| {
                        let hash = r.next().read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            r.read_optional(|r| r.read_der())?;
                            Ok(oid)
                        })?;
                        let name_hash = r.next().read_bytes()?;
                        let key_hash = r.next().read_bytes()?;
                        let serial = r.next().read_der()?;
                        Ok((hash, name_hash, key_hash, serial))
                    })?;
                    let status = r.next().read_tagged_der()?.tag().tag_number;
                    let this_update = time(&r.next().read_generalized_time()?);
                    let next_update = r.read_optional(|r| {
                        r.read_tagged(Tag::context(0), |r| r.read_generalized_time())
                    })?;
                    r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
                    Ok(Single {
                        hash,
                        name_hash,
                        key_hash,
                        serial,
                        status,
                        this_update,
                        next_update: next_update.as_ref().map(time),
                    })
                })
            })?;
            r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
            Ok((responder, single))
        })
    })
    .map_err(bad)?;
    // The responder ID's value: [1] EXPLICIT Name, [2] EXPLICIT OCTET STRING.
    let by = responder.tag().tag_number;
    let value = match by {
        1 => responder.value().to_vec(),
        2 => yasna::parse_der(responder.value(), |r| r.read_bytes())
            .map_err(|_| OcspError::Invalid("bad responderID"))?,
        _ => return Err(OcspError::Invalid("bad responderID")),
    };
    Ok(Basic {
        tbs,
        alg,
        signature,
        certs,
        responder: (by, value),
        single,
    })
}

/// `ssl_stapling_verify on`: the response is signed by the issuer, or by a certificate
/// the issuer signed for OCSP (id-kp-OCSPSigning) that is valid now.
fn verify(t: &Target, basic: &Basic, now: SystemTime) -> Result<(), OcspError> {
    let (_, issuer) =
        X509Certificate::from_der(&t.issuer).map_err(|e| OcspError::Cert(e.to_string()))?;
    let is_responder = |c: &X509Certificate<'_>| match &basic.responder {
        (1, name) => c.subject().as_raw() == name.as_slice(),
        (_, hash) => sha1(&c.public_key().subject_public_key.data) == *hash,
    };
    if is_responder(&issuer) {
        return verify_signed(&t.issuer, &basic.alg, &basic.tbs, &basic.signature);
    }
    let delegated = basic
        .certs
        .iter()
        .find(|der| X509Certificate::from_der(der).is_ok_and(|(_, c)| is_responder(&c)))
        .ok_or_else(|| {
            OcspError::Signature("the responder's certificate is not in the response".into())
        })?;
    let (_, cert) =
        X509Certificate::from_der(delegated).map_err(|e| OcspError::Cert(e.to_string()))?;
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(OcspError::Signature(
            "the responder's certificate is not issued by the certificate's issuer".into(),
        ));
    }
    let alg = yasna::models::ObjectIdentifier::from_slice(
        &cert
            .signature_algorithm
            .algorithm
            .iter()
            .ok_or_else(|| OcspError::Signature("unknown signature algorithm".into()))?
            .collect::<Vec<u64>>(),
    );
    verify_signed(
        &t.issuer,
        &alg,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )?;
    let for_ocsp = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.ocsp_signing);
    if !for_ocsp {
        return Err(OcspError::Signature(
            "the responder's certificate is not for OCSP signing".into(),
        ));
    }
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let valid = x509_parser::time::ASN1Time::from_timestamp(secs)
        .is_ok_and(|t| cert.validity().is_valid_at(t));
    if !valid {
        return Err(OcspError::Signature(
            "the responder's certificate is not valid now".into(),
        ));
    }
    verify_signed(
        &delegated.clone().into(),
        &basic.alg,
        &basic.tbs,
        &basic.signature,
    )
}

/// Checks `signature` over `msg` by `signer`'s key with the algorithm `alg` names.
fn verify_signed(
    signer: &CertificateDer<'_>,
    alg: &yasna::models::ObjectIdentifier,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), OcspError> {
    use webpki::aws_lc_rs as a;
    let ee = webpki::EndEntityCert::try_from(signer)
        .map_err(|e| OcspError::Signature(format!("{e:?}")))?;
    let candidates: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] =
        match alg.components().as_slice() {
            [1, 2, 840, 113549, 1, 1, 11] => &[a::RSA_PKCS1_2048_8192_SHA256],
            [1, 2, 840, 113549, 1, 1, 12] => &[a::RSA_PKCS1_2048_8192_SHA384],
            [1, 2, 840, 113549, 1, 1, 13] => &[a::RSA_PKCS1_2048_8192_SHA512],
            [1, 2, 840, 10045, 4, 3, 2] => &[a::ECDSA_P256_SHA256, a::ECDSA_P384_SHA256],
            [1, 2, 840, 10045, 4, 3, 3] => &[a::ECDSA_P256_SHA384, a::ECDSA_P384_SHA384],
            [1, 3, 101, 112] => &[a::ED25519],
            other => {
                return Err(OcspError::Signature(format!(
                    "signature algorithm {} is not supported",
                    other
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(".")
                )));
            }
        };
    let mut last = None;
    for alg in candidates {
        match ee.verify_signature(*alg, msg, signature) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(OcspError::Signature(format!(
        "{:?}",
        last.expect("a candidate")
    )))
}

/// The certificate's OCSP responder from its Authority Information Access extension.
fn responder_of(cert: &X509Certificate<'_>) -> Result<String, OcspError> {
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in aia.iter() {
                if d.access_method.to_id_string() == OID_AD_OCSP
                    && let GeneralName::URI(uri) = &d.access_location
                {
                    return Ok((*uri).to_owned());
                }
            }
        }
    }
    Err(OcspError::NoResponder)
}

/// The issuer of `leaf`: the chain's certificate whose subject is its issuer, else the
/// trusted file's.
fn find_issuer(
    leaf: &X509Certificate<'_>,
    chain: &[CertificateDer<'static>],
    trusted: Option<&Path>,
) -> Result<CertificateDer<'static>, OcspError> {
    let issues = |der: &CertificateDer<'_>| {
        X509Certificate::from_der(der)
            .is_ok_and(|(_, c)| c.subject().as_raw() == leaf.issuer().as_raw())
    };
    if let Some(c) = chain.iter().find(|c| issues(c)) {
        return Ok(c.clone());
    }
    if let Some(path) = trusted {
        let certs = crate::tls::load_chain(path).map_err(|e| OcspError::Trusted(Box::new(e)))?;
        if let Some(c) = certs.into_iter().find(|c| issues(c)) {
            return Ok(c);
        }
    }
    Err(OcspError::NoIssuer)
}

impl Url {
    fn parse(text: &str) -> Result<Url, OcspError> {
        let bad = || OcspError::BadUrl(text.to_owned());
        let rest = text.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| bad())?),
                None if after.is_empty() => (host, 80),
                None => return Err(bad()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, 80),
            }
        };
        if host.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad());
        }
        Ok(Url {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The `OCSPRequest` for one `CertID` (SHA-1), without a nonce (as nginx).
fn request_der(id: &CertId) -> Vec<u8> {
    let sha1 = yasna::models::ObjectIdentifier::from_slice(OID_SHA1);
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&sha1);
                                w.next().write_null();
                            });
                            w.next().write_bytes(&id.name_sha1);
                            w.next().write_bytes(&id.key_sha1);
                            w.next().write_der(&id.serial);
                        });
                    });
                });
            });
        });
    })
}

/// A DER `INTEGER` of the content bytes `value` (two's complement, as the certificate
/// holds them).
fn der_integer(value: &[u8]) -> Vec<u8> {
    let positive = value.first().is_none_or(|b| b & 0x80 == 0);
    yasna::construct_der(|w| w.write_bigint_bytes(value, positive))
}

fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn time(t: &yasna::models::GeneralizedTime) -> SystemTime {
    let secs = t.datetime().unix_timestamp();
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}

/// `t` as RFC 3339 (UTC), for the log and errors.
fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| format!("{t:?}"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SerialNumber, SigningKey,
    };

    /// A CA (its certificate and key), and a certificate it issued (serial 0x1001).
    struct Pki {
        ca: CertificateDer<'static>,
        ca_key: KeyPair,
        leaf: CertificateDer<'static>,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params("test CA").self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(
            ca_params("test CA"),
            KeyPair::from_pem(&ca_key.serialize_pem()).expect("key"),
        );
        let mut p = CertificateParams::new(vec!["localhost".into()]).expect("params");
        p.serial_number = Some(SerialNumber::from(vec![0x10, 0x01]));
        let leaf = p
            .signed_by(&KeyPair::generate().expect("key"), &issuer)
            .expect("leaf");
        Pki {
            ca: ca.der().clone(),
            ca_key,
            leaf: leaf.der().clone(),
        }
    }

    fn target(pki: &Pki, verify: bool) -> Target {
        let fetch = OcspFetch {
            responder: Some("http://127.0.0.1:9/".into()),
            verify,
            trusted: None,
            at: "nginx.conf:3".into(),
        };
        Target::new(&[pki.leaf.clone(), pki.ca.clone()], &fetch).expect("target")
    }

    fn gt(t: SystemTime) -> String {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        jiff::Timestamp::from_second(secs)
            .unwrap()
            .strftime("%Y%m%d%H%M%SZ")
            .to_string()
    }

    /// What a response says, and who signs it.
    struct Answer<'a> {
        status: u64,
        serial: Vec<u8>,
        this: SystemTime,
        next: Option<SystemTime>,
        /// The responder's certificate (its subject is the responder ID) and key.
        signer: (&'a CertificateDer<'a>, &'a KeyPair),
        certs: Vec<CertificateDer<'static>>,
    }

    fn response(t: &Target, a: &Answer<'_>) -> Vec<u8> {
        let time = |w: yasna::DERWriter<'_>, at: SystemTime| {
            w.write_generalized_time(
                &yasna::models::GeneralizedTime::parse(gt(at).as_bytes()).expect("time"),
            )
        };
        let (_, signer) = X509Certificate::from_der(a.signer.0).expect("signer");
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_tagged(Tag::context(1), |w| w.write_der(signer.subject().as_raw()));
                time(w.next(), a.this);
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_sequence(|w| {
                                w.next()
                                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                                        OID_SHA1,
                                    ));
                                w.next().write_null();
                            });
                            w.next().write_bytes(&t.id.name_sha1);
                            w.next().write_bytes(&t.id.key_sha1);
                            w.next().write_der(&a.serial);
                        });
                        match a.status {
                            1 => w.next().write_tagged_implicit(Tag::context(1), |w| {
                                w.write_sequence(|w| time(w.next(), a.this))
                            }),
                            n => w
                                .next()
                                .write_tagged_implicit(Tag::context(n), |w| w.write_null()),
                        }
                        time(w.next(), a.this);
                        if let Some(next) = a.next {
                            w.next().write_tagged(Tag::context(0), |w| time(w, next));
                        }
                    });
                });
            })
        });
        let signature = a.signer.1.sign(&tbs).expect("sign");
        let basic = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                            1, 2, 840, 10045, 4, 3, 2,
                        ]))
                });
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
                if !a.certs.is_empty() {
                    w.next().write_tagged(Tag::context(0), |w| {
                        w.write_sequence(|w| {
                            for c in &a.certs {
                                w.next().write_der(c);
                            }
                        })
                    });
                }
            })
        });
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0);
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next()
                            .write_oid(&yasna::models::ObjectIdentifier::from_slice(OID_BASIC));
                        w.next().write_bytes(&basic);
                    })
                });
            })
        })
    }

    fn good<'a>(pki: &'a Pki, t: &Target) -> Answer<'a> {
        let now = SystemTime::now();
        Answer {
            status: 0,
            serial: t.id.serial.clone(),
            this: now - Duration::from_secs(60),
            next: Some(now + Duration::from_secs(86400)),
            signer: (&pki.ca, &pki.ca_key),
            certs: Vec::new(),
        }
    }

    #[test]
    fn a_good_answer_about_this_certificate_is_stapled_until_its_next_update() {
        let pki = pki();
        let t = target(&pki, true);
        let a = good(&pki, &t);
        let der = response(&t, &a);
        let checked = check(&t, der.clone(), SystemTime::now()).expect("good");
        assert_eq!(checked.der, der);
        assert_eq!(
            checked.next_update.map(gt),
            a.next.map(gt),
            "nextUpdate read back"
        );
        // The request names the same certificate (SHA-1 CertID, no nonce).
        let (hash, serial) = yasna::parse_der(&t.request, |r| {
            r.read_sequence(|r| {
                r.next().read_sequence(|r| {
                    r.next().read_sequence_of(|r| {
                        r.read_sequence(|r| {
                            r.next().read_sequence(|r| {
                                r.next().read_sequence(|r| {
                                    r.next().read_oid()?;
                                    r.next().read_null()
                                })?;
                                let h = r.next().read_bytes()?;
                                r.next().read_bytes()?;
                                let s = r.next().read_der()?;
                                assert_eq!((h.len(), s.clone()), (20, t.id.serial.clone()));
                                Ok(())
                            })
                        })
                    })
                })
            })?;
            Ok((t.id.name_sha1.clone(), t.id.serial.clone()))
        })
        .expect("request parses");
        assert_eq!(hash.len(), 20);
        assert_eq!(serial, vec![0x02, 0x02, 0x10, 0x01]);
    }

    #[test]
    fn revoked_unknown_other_certificates_and_stale_answers_are_refused() {
        let pki = pki();
        let t = target(&pki, false);
        let now = SystemTime::now();
        let err = |a: &Answer<'_>| check(&t, response(&t, a), now).unwrap_err().to_string();
        let revoked = Answer {
            status: 1,
            ..good(&pki, &t)
        };
        assert!(err(&revoked).contains("\"revoked\""));
        let unknown = Answer {
            status: 2,
            ..good(&pki, &t)
        };
        assert!(err(&unknown).contains("\"unknown\""));
        let other = Answer {
            serial: der_integer(&[0x10, 0x02]),
            ..good(&pki, &t)
        };
        assert!(err(&other).contains("no answer about this certificate"));
        let stale = Answer {
            this: now - Duration::from_secs(7200),
            next: Some(now - Duration::from_secs(600)),
            ..good(&pki, &t)
        };
        assert!(err(&stale).contains("not valid now"));
        // Within nginx's five minutes of leeway, either way.
        let skewed = Answer {
            this: now + Duration::from_secs(120),
            next: Some(now - Duration::from_secs(120)),
            ..good(&pki, &t)
        };
        assert!(check(&t, response(&t, &skewed), now).is_ok());
        let future = Answer {
            this: now + Duration::from_secs(3600),
            ..good(&pki, &t)
        };
        assert!(err(&future).contains("not valid now"));
        // Not an OCSP response at all, or not a successful one.
        assert!(
            check(&t, b"<html>".to_vec(), now)
                .unwrap_err()
                .to_string()
                .contains("not a DER")
        );
        let try_later = yasna::construct_der(|w| w.write_sequence(|w| w.next().write_enum(3)));
        assert!(
            check(&t, try_later, now)
                .unwrap_err()
                .to_string()
                .contains("status 3")
        );
    }

    #[test]
    fn with_verify_the_signer_must_be_the_issuer_or_its_ocsp_responder() {
        let pki = pki();
        let t = target(&pki, true);
        let now = SystemTime::now();
        // Signed by an unrelated CA.
        let other_key = KeyPair::generate().expect("key");
        let other = ca_params("not the issuer")
            .self_signed(&other_key)
            .expect("other");
        let forged = Answer {
            signer: (other.der(), &other_key),
            certs: vec![other.der().clone()],
            ..good(&pki, &t)
        };
        let e = check(&t, response(&t, &forged), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not issued by"), "{e}");
        // Without verify it is stapled as it is (nginx's default; the client checks it).
        assert!(check(&target(&pki, false), response(&t, &forged), now).is_ok());
        // The issuer's name, but another key: the signature fails.
        let impostor = Answer {
            signer: (&pki.ca, &other_key),
            ..good(&pki, &t)
        };
        let e = check(&t, response(&t, &impostor), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify"), "{e}");

        // A responder certificate the issuer signed: for OCSP signing, it is accepted;
        // without that purpose, refused.
        let issuer = Issuer::new(
            ca_params("test CA"),
            KeyPair::from_pem(&pki.ca_key.serialize_pem()).expect("key"),
        );
        for (purpose, ok) in [
            (ExtendedKeyUsagePurpose::OcspSigning, true),
            (ExtendedKeyUsagePurpose::ServerAuth, false),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name
                .push(DnType::CommonName, "test CA OCSP responder");
            p.extended_key_usages = vec![purpose];
            let cert = p.signed_by(&key, &issuer).expect("responder");
            let delegated = Answer {
                signer: (cert.der(), &key),
                certs: vec![cert.der().clone()],
                ..good(&pki, &t)
            };
            let r = check(&t, response(&t, &delegated), now);
            match ok {
                true => assert!(r.is_ok(), "{r:?}"),
                false => assert!(
                    r.unwrap_err().to_string().contains("not for OCSP signing"),
                    "server auth"
                ),
            }
        }
    }

    #[test]
    fn responder_urls_are_http_only_with_host_port_and_path() {
        let u = Url::parse("http://ocsp.example.test/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("ocsp.example.test", 80, "/")
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1:8080", 8080, "/")
        );
        let u = Url::parse("http://[::1]:81/ocsp/a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/ocsp/a")
        );
        for bad in [
            "https://ocsp.example.test/",
            "http://",
            "http://h:port/",
            "http://h/a b",
            "ftp://h/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(OcspError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refresh_is_an_hour_or_five_minutes_before_next_update() {
        let now = SystemTime::now();
        assert_eq!(refresh_after(now, None), REFRESH);
        let day = Some(now + Duration::from_secs(86400));
        assert_eq!(refresh_after(now, day), REFRESH);
        let soon = Some(now + Duration::from_secs(1200));
        assert_eq!(refresh_after(now, soon), Duration::from_secs(900));
        let past = Some(now - Duration::from_secs(10));
        assert_eq!(refresh_after(now, past), BEFORE_NEXT_UPDATE);
    }

    #[test]
    fn der_integers_keep_the_certificates_bytes() {
        assert_eq!(der_integer(&[0x01]), vec![0x02, 0x01, 0x01]);
        assert_eq!(der_integer(&[0x00, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_integer(&[0xff, 0x7f]), vec![0x02, 0x02, 0xff, 0x7f]);
        let long = [&[0x11][..], &[0x22; 199]].concat();
        let der = der_integer(&long);
        assert_eq!(&der[..3], &[0x02, 0x81, 200]);
        assert_eq!(&der[3..], &long[..]);
    }
}
