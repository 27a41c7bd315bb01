//! The validated configuration model: what the signer and the proxy use.
//!
//! Values here have passed every rule of [`crate::load()`]; relative paths are
//! already resolved against the config file's directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pkcs11_uri::{Pkcs11Uri, Secret};

/// A validated hsmgate configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration was loaded from.
    pub source: PathBuf,
    /// TLS listeners (at least one, addresses distinct).
    pub listeners: Vec<Listener>,
    /// Certificate chain and private key.
    pub tls: TlsConfig,
    /// One token: PKCS#11 module, PIN and signing pool (`[pkcs11]`). `None` when the
    /// keys live in HA groups of HSMs (`[[hsm.group]]`).
    pub pkcs11: Option<Pkcs11Config>,
    /// The HA groups of HSM members that hold the keys (`[[hsm.group]]`), in file
    /// order; empty with `[pkcs11]`. Each key names its group in its URI's
    /// [`group`](Pkcs11Uri::group); every group holds at least one key.
    pub hsm: Vec<HsmGroup>,
    /// The plain-HTTP backend.
    pub upstream: Upstream,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), plain HTTP, if any.
    pub admin: Option<SocketAddr>,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// What a client may take (`[limits]`).
    pub limits: Limits,
    /// Admission control of full TLS handshakes (`[admission]`).
    pub admission: Admission,
    /// The async runtime's threads (`[runtime] threads`, nginx's `worker_processes N`);
    /// `None`: one per CPU the process may use, at least
    /// [`MIN_RUNTIME_THREADS`](crate::defaults::MIN_RUNTIME_THREADS).
    pub runtime_threads: Option<u32>,
    /// Accepted but discouraged settings; the caller should log them.
    pub warnings: Vec<ConfigWarning>,
}

/// `[limits]`: timeouts and sizes for clients, nginx's defaults where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Head and body timeouts, header buffers, HTTP/2 streams, handshake timeout.
    pub client: crate::nginx::ClientLimits,
    /// How long an idle keep-alive connection is kept (nginx's 75 s).
    pub keepalive_timeout: Duration,
    /// The largest request body (`None`: no limit, as before `[limits]`).
    pub max_body_size: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            client: crate::nginx::ClientLimits::default(),
            keepalive_timeout: Duration::from_secs(75),
            max_body_size: None,
        }
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Socket address to bind.
    pub address: SocketAddr,
    /// Offer TLS 1.2.
    pub tls12: bool,
    /// Offer TLS 1.3.
    pub tls13: bool,
    /// Offer ALPN `h2` besides `http/1.1`.
    pub http2: bool,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain, resolved relative to the config file's directory
    /// (existence is not checked here).
    pub certificate_chain: PathBuf,
    /// Where `certificate` is written (or the flag or variable that gave it).
    pub certificate_location: Location,
    /// The private key in the token.
    pub key: KeyRef,
    /// `session_tickets` (default true): TLS 1.2 and 1.3 session tickets.
    pub session_tickets: bool,
    /// `session_ticket_key_files` (resolved against the file's directory): the first
    /// encrypts, all decrypt; none: a random key per configuration.
    pub session_ticket_keys: Vec<PathBuf>,
    /// Where `session_ticket_key_files` is set.
    pub session_ticket_keys_at: Option<Location>,
    /// `session_timeout_ms` (default 300000, nginx's `ssl_session_timeout`): tickets'
    /// and cached sessions' lifetime.
    pub session_timeout: Duration,
    /// `ciphers`: the cipher suites offered, in the server's order of preference; empty:
    /// rustls' suites and order. With no TLS 1.3 suite listed, rustls' three follow the
    /// listed ones (as nginx, whose `ssl_ciphers` does not govern TLS 1.3).
    pub ciphers: Vec<crate::nginx::CipherSuite>,
    /// `client_certificate` (resolved against the file's directory): the PEM CAs whose
    /// client certificates are accepted, as nginx's `ssl_client_certificate`.
    pub client_certificate: Option<PathBuf>,
    /// Where `client_certificate` is set.
    pub client_certificate_at: Option<Location>,
    /// `verify_client` (`on`, `optional`, `off`; default `on` when
    /// `client_certificate` is set, else `off`), as nginx's `ssl_verify_client`.
    pub verify_client: crate::nginx::VerifyClient,
    /// `verify_depth` (default 1, nginx's `ssl_verify_depth`): intermediate CAs allowed
    /// in a client's chain.
    pub verify_depth: u32,
    /// `ocsp_stapling = true` (default false): each certificate's OCSP response fetched
    /// from its responder and stapled, as nginx's `ssl_stapling on` without a file;
    /// `ocsp_responder` (an `http://` URL) and `ocsp_verify` are nginx's
    /// `ssl_stapling_responder` and `ssl_stapling_verify`.
    pub ocsp: Option<crate::nginx::OcspFetch>,
    /// `[[tls.pair]]`: more certificate/key pairs, in file order.
    pub pairs: Vec<TlsPair>,
}

/// One `[[tls.pair]]`: a certificate chain and its key, served beside `[tls]`'s pair
/// (no `server_names`: the client's signature schemes choose, e.g. ECDSA beside RSA)
/// or to the SNI names it lists.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPair {
    /// PEM certificate chain, resolved relative to the config file's directory.
    pub certificate_chain: PathBuf,
    /// Where `certificate` is written.
    pub certificate_location: Location,
    /// The private key (in `[pkcs11]`'s token, or in the HA group its URI names).
    pub key: KeyRef,
    /// `server_names` (lower case; exact, or wildcards `*.example.com`,
    /// `.example.com`, `www.example.*`); empty: the default server's.
    pub server_names: Vec<String>,
}

/// A private key named by a PKCS#11 URI, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRef {
    /// The parsed URI (`pin-value`, if any, is a [`Secret`]).
    pub uri: Pkcs11Uri,
    /// Location of the key string in the config file.
    pub location: Location,
}

/// A position in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line; 0 for a value from a flag or environment variable, which
    /// `file` then names.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Location {
    /// No position: a whole file, or the flag or variable `file` names (line 0; shown as
    /// `file` alone).
    pub fn whole(file: impl Into<PathBuf>) -> Location {
        Location {
            file: file.into(),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            // A value from a flag or the environment: `file` names it.
            0 => write!(f, "{}", self.file.display()),
            _ => write!(f, "{}:{}:{}", self.file.display(), self.line, self.col),
        }
    }
}

/// `[pkcs11]`, merged with the module and PIN settings of the key URI.
#[derive(Debug, Clone, PartialEq)]
pub struct Pkcs11Config {
    /// The module (shared library) to load, as written (a bare file name is
    /// left to the dynamic loader's search path).
    pub module: PathBuf,
    /// Where the module is set (`[pkcs11].module`, or the key's `module-path`).
    pub module_at: Location,
    /// Environment applied while the module is loaded and initialised.
    pub env: BTreeMap<String, String>,
    /// Where the PIN comes from (authoritative over the URI's PIN attributes).
    pub pin: PinSource,
    /// Where that is set (`pin_file`, `pin_env`, or the key's PIN attribute).
    pub pin_at: Location,
    /// Number of token sessions (signing workers).
    pub sessions: usize,
    /// Maximum number of queued signing requests.
    pub queue_depth: usize,
    /// Time limit for one signature.
    pub sign_timeout: Duration,
    /// Rated capacity, signatures/s (`None`: measured by a calibration burst at start).
    pub capacity: Option<f64>,
}

/// An HA group of HSMs holding the same key: regions of members.
#[derive(Debug, Clone, PartialEq)]
pub struct HsmGroup {
    /// The group's name.
    pub name: String,
    /// Deadline for one signature, retries on other members included.
    pub sign_timeout: Duration,
    /// Deadline for one attempt on one member; a call running longer fences the member.
    pub op_timeout: Duration,
    /// Queue capacity per member.
    pub queue_depth: usize,
    /// Use the standby region when every primary member is saturated.
    pub standby_when_saturated: bool,
    /// How often an up member gets a test signature.
    pub probe_interval: Duration,
    /// How long a recovery attempt may take before it is abandoned.
    pub recovery_timeout: Duration,
    /// Threads that may be abandoned in one member's hung calls before recovery waits.
    pub max_abandoned_threads: usize,
    /// The regions, in file order.
    pub regions: Vec<HsmRegion>,
}

/// A region of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct HsmRegion {
    /// Its name.
    pub name: String,
    /// `role = "primary"` (else standby).
    pub primary: bool,
    /// Its members.
    pub members: Vec<HsmMember>,
}

/// One HSM: one PKCS#11 module instance (or several, `connections`) and its token.
#[derive(Debug, Clone, PartialEq)]
pub struct HsmMember {
    /// Its name (logs, metrics).
    pub name: String,
    /// The module to load.
    pub module: PathBuf,
    /// Environment applied while its function list is loaded and initialised.
    pub env: BTreeMap<String, String>,
    /// Token label.
    pub token: Option<String>,
    /// Token serial.
    pub serial: Option<String>,
    /// Where its PIN comes from.
    pub pin: PinSource,
    /// Sessions (threads) per connection.
    pub sessions: usize,
    /// Module instances to open.
    pub connections: usize,
    /// Rated capacity, signatures/s.
    pub capacity: Option<f64>,
    /// Where the member is written.
    pub location: Location,
}

/// `[admission]`: how full TLS handshakes (those that need a private-key operation) are
/// admitted to the signer. Every default is here, and only here.
///
/// A handshake is admitted while the signer's adaptive concurrency limit has room;
/// otherwise it waits in a bounded queue when its expected wait is within
/// `target_wait`, and is shed at once (a TLS alert, before any key exchange) when it
/// is not. A waiter not admitted within `max_wait` is shed too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Admission control on (the default) or off.
    pub enabled: bool,
    /// The queueing delay a waiting handshake may expect before it is shed at arrival.
    pub target_wait: Duration,
    /// The longest a handshake waits for admission.
    pub max_wait: Duration,
    /// At most this many handshakes wait (per key group).
    pub max_waiting: usize,
    /// The nice value (0–19) of the signer threads: when the HSM's client library uses
    /// this machine's CPU (a software token in the process, a network HSM's client
    /// doing its own TLS), the threads serving established connections come first, and
    /// full handshakes, already limited by admission, take what is left. Only ever
    /// raised (an unprivileged process cannot lower it again).
    pub signer_nice: u8,
    /// Sign on the thread of the connection whose handshake needs the signature, instead
    /// of handing it to a signer thread, when the token computes in this process and
    /// fast (a software token's ECDSA: the probe at start decides; HSMs elsewhere, and
    /// slow operations such as a software token's RSA, keep the signer threads). A
    /// token that computes in this process slowly gets each full handshake's signing
    /// step (rustls processing the ClientHello) run on a signer thread instead of the
    /// signature alone, so that no runtime thread waits. Off: every signature is handed
    /// to a signer thread and waited for.
    pub inline_signing: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            enabled: true,
            target_wait: Duration::from_millis(5),
            max_wait: Duration::from_millis(250),
            max_waiting: 1024,
            signer_nice: 5,
            inline_signing: true,
        }
    }
}

/// A bad admission setting in the environment (`HSMGATE_ADMISSION*`), for
/// configurations without an `[admission]` section (nginx's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}={value:?}: {reason}")]
pub struct EnvSettingError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl Admission {
    /// The variable that turns admission control on or off (`on`/`off`).
    pub const ENV_ENABLED: &'static str = "HSMGATE_ADMISSION";
    /// Every admission variable.
    pub const ENV_ALL: [&'static str; 6] = [
        Self::ENV_ENABLED,
        Self::ENV_TARGET_WAIT,
        Self::ENV_MAX_WAIT,
        Self::ENV_MAX_WAITING,
        Self::ENV_SIGNER_NICE,
        Self::ENV_INLINE_SIGNING,
    ];
    /// The variable for [`target_wait`](Self::target_wait), milliseconds.
    pub const ENV_TARGET_WAIT: &'static str = "HSMGATE_ADMISSION_TARGET_WAIT_MS";
    /// The variable for [`max_wait`](Self::max_wait), milliseconds.
    pub const ENV_MAX_WAIT: &'static str = "HSMGATE_ADMISSION_MAX_WAIT_MS";
    /// The variable for [`max_waiting`](Self::max_waiting).
    pub const ENV_MAX_WAITING: &'static str = "HSMGATE_ADMISSION_MAX_WAITING";
    /// The variable for [`signer_nice`](Self::signer_nice).
    pub const ENV_SIGNER_NICE: &'static str = "HSMGATE_ADMISSION_SIGNER_NICE";
    /// The variable for [`inline_signing`](Self::inline_signing) (`on`/`off`).
    pub const ENV_INLINE_SIGNING: &'static str = "HSMGATE_ADMISSION_INLINE_SIGNING";

    /// The defaults, changed by whichever of the `HSMGATE_ADMISSION*` variables `get`
    /// finds (the process environment, or nginx's `env NAME=VALUE` directives).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Admission, EnvSettingError> {
        let mut a = Admission::default();
        let bad = |var: &str, value: &str, reason: &str| EnvSettingError {
            var: var.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let switch = |var: &str| -> Result<Option<bool>, EnvSettingError> {
            let Some(v) = get(var) else { return Ok(None) };
            match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => Ok(Some(true)),
                "off" | "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(bad(var, &v, "expected on or off")),
            }
        };
        if let Some(on) = switch(Self::ENV_ENABLED)? {
            a.enabled = on;
        }
        if let Some(on) = switch(Self::ENV_INLINE_SIGNING)? {
            a.inline_signing = on;
        }
        let number = |var: &str,
                      range: std::ops::RangeInclusive<u64>|
         -> Result<Option<u64>, EnvSettingError> {
            let Some(v) = get(var) else { return Ok(None) };
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad(var, &v, "expected a whole number"))?;
            if !range.contains(&n) {
                let reason = format!("must be between {} and {}", range.start(), range.end());
                return Err(bad(var, &v, &reason));
            }
            Ok(Some(n))
        };
        if let Some(ms) = number(Self::ENV_TARGET_WAIT, 0..=10_000)? {
            a.target_wait = Duration::from_millis(ms);
        }
        if let Some(ms) = number(Self::ENV_MAX_WAIT, 0..=60_000)? {
            a.max_wait = Duration::from_millis(ms);
        }
        if let Some(n) = number(Self::ENV_MAX_WAITING, 0..=1_000_000)? {
            a.max_waiting = n as usize;
        }
        if let Some(n) = number(Self::ENV_SIGNER_NICE, 0..=19)? {
            a.signer_nice = n as u8;
        }
        if a.max_wait < a.target_wait {
            let v = a.max_wait.as_millis().to_string();
            return Err(bad(
                Self::ENV_MAX_WAIT,
                &v,
                "must not be less than the target wait",
            ));
        }
        Ok(a)
    }
}

/// Where the token PIN comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PinSource {
    /// Read from this file (trailing newline to be stripped by the reader).
    File(PathBuf),
    /// Read from this environment variable.
    Env(String),
    /// Written in the config (`pin-value`); prints as `***`.
    Value(Secret),
}

/// The socket's path when an upstream address (TOML's `[upstream] address`, an nginx
/// `server` or `proxy_pass` address as the configuration keeps it) names a Unix domain
/// socket: `unix:/run/app.sock` → `/run/app.sock`.
pub fn unix_socket_path(addr: &str) -> Option<&str> {
    addr.strip_prefix("unix:")
}

/// The longest path of a Unix socket (`sun_path` holds 108 bytes with its NUL).
pub const UNIX_PATH_MAX: usize = 107;

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`; the host may be a name, an IPv4 or a bracketed IPv6 address; or
    /// `unix:/path`, a Unix domain socket.
    pub address: String,
    /// Time limit for connecting to the upstream.
    pub connect_timeout: Duration,
    /// Time limit for one proxied request.
    pub request_timeout: Duration,
}

/// A setting that is accepted but discouraged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where the setting is.
    pub location: Location,
    /// What to change (never contains secrets).
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_from_vars() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        assert_eq!(Admission::from_vars(vars(&[])), Ok(Admission::default()));
        let a = Admission::from_vars(vars(&[
            ("HSMGATE_ADMISSION", "off"),
            ("HSMGATE_ADMISSION_TARGET_WAIT_MS", "10"),
            ("HSMGATE_ADMISSION_MAX_WAIT_MS", "200"),
            ("HSMGATE_ADMISSION_MAX_WAITING", "64"),
            ("HSMGATE_ADMISSION_SIGNER_NICE", "0"),
            ("HSMGATE_ADMISSION_INLINE_SIGNING", "off"),
        ]))
        .expect("valid");
        assert!(!a.inline_signing);
        assert!(!a.enabled);
        assert_eq!(a.target_wait, Duration::from_millis(10));
        assert_eq!(a.max_wait, Duration::from_millis(200));
        assert_eq!(a.max_waiting, 64);
        assert_eq!(a.signer_nice, 0);
        let e = Admission::from_vars(vars(&[("HSMGATE_ADMISSION_SIGNER_NICE", "20")])).unwrap_err();
        assert!(e.to_string().contains("between 0 and 19"), "{e}");
        let e = Admission::from_vars(vars(&[("HSMGATE_ADMISSION", "maybe")])).unwrap_err();
        assert_eq!(e.var, "HSMGATE_ADMISSION");
        assert!(e.to_string().contains("expected on or off"), "{e}");
        let e = Admission::from_vars(vars(&[("HSMGATE_ADMISSION_MAX_WAIT_MS", "1")])).unwrap_err();
        assert!(e.to_string().contains("less than the target wait"), "{e}");
        let e = Admission::from_vars(vars(&[("HSMGATE_ADMISSION_MAX_WAITING", "-3")])).unwrap_err();
        assert!(
            e.to_string().contains("HSMGATE_ADMISSION_MAX_WAITING"),
            "{e}"
        );
    }

    #[test]
    fn location_and_warning_display() {
        let location = Location {
            file: "a/h.toml".into(),
            line: 2,
            col: 7,
        };
        assert_eq!(location.to_string(), "a/h.toml:2:7");
        let w = ConfigWarning {
            location,
            message: "careful".into(),
        };
        assert_eq!(w.to_string(), "a/h.toml:2:7: careful");
        assert_eq!(
            format!("{:?}", PinSource::Value(Secret::new("1234"))),
            "Value(***)"
        );
    }
}
