//! hsmgate configuration: the native TOML file is parsed, then validated once
//! into a typed [`Config`]. Every error is a [`ConfigError`] naming
//! `file:line:col` and the offending key (or PKCS#11 URI attribute).
//!
//! The private key is named by an RFC 7512 PKCS#11 URI ([`Pkcs11Uri`]); the
//! nginx/OpenSSL-engine form `engine:pkcs11:pkcs11:...` is accepted too. PINs
//! are held in [`Secret`], which never prints its value.
//!
//! # File format
//!
//! ```toml
//! # hsmgate.toml
//! [[listener]]                     # one or more; addresses must be distinct
//! address = "127.0.0.1:8443"       # required, socket address (IPv6 "[::1]:8443" ok)
//! tls_versions = ["1.2", "1.3"]    # optional, default both; non-empty, values "1.2", "1.3"
//! http2 = true                     # optional, default true (offer ALPN h2 besides http/1.1)
//!
//! [tls]
//! certificate = "cert.pem"         # required; PEM chain, relative to the config file's directory
//! # RFC 7512 URI or "engine:pkcs11:pkcs11:..."; must name a token (token= or serial=) and
//! # an object (object= or id=); type, if given, must be private
//! key = "pkcs11:token=demo;object=tls-rsa;type=private?pin-source=file:pin.txt"
//! # Optional: the cipher suites offered, in the server's order (it always wins over the
//! # client's); OpenSSL or IANA names, each once. Default: rustls' (AES-256-GCM first).
//! # No TLS 1.3 suite listed: rustls' three follow; TLS 1.2 listeners need a TLS 1.2 one.
//! # ciphers = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]
//! # Optional: client certificates (mTLS), as nginx's ssl_client_certificate,
//! # ssl_verify_client and ssl_verify_depth. With client_certificate (PEM CAs, relative to
//! # the config file's directory) verify_client defaults to "on": a request without a valid
//! # certificate is answered 400, as nginx answers; "optional": a missing one passes, an
//! # invalid one is a 400; "off": none asked for. verify_depth (default 1, 0..=100):
//! # intermediate CAs allowed in a client's chain.
//! # client_certificate = "clients-ca.pem"
//! # verify_client = "on"
//! # verify_depth = 1
//!
//! [pkcs11]
//! # required unless the key URI has module-path; if both are given they must be equal.
//! # Passed to the dynamic loader as written.
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! # Exactly one PIN source: pin-source=file:PATH or pin-value=PIN in the key URI (pin-value
//! # is accepted with a warning), or one of these (relative paths: config file's directory):
//! # pin_file = "pin.txt"
//! # pin_env = "HSMGATE_PIN"
//! sessions = 4                     # optional, default 4, 1..=256
//! queue_depth = 1024               # optional, default 1024, 1..=1_000_000
//! sign_timeout_ms = 2000           # optional, default 2000, 1..=60000
//! capacity = 2000                  # optional, signatures/s; default: measured at start
//! # optional: environment applied while the module is loaded and initialised
//! env = { SOFTHSM2_CONF = "/tmp/x/softhsm2.conf" }
//!
//! [upstream]
//! address = "127.0.0.1:8080"       # required, host:port (host may be a name; port 1..=65535)
//! connect_timeout_ms = 3000        # optional, default 3000, 1..=600000
//! request_timeout_ms = 60000       # optional, default 60000, 1..=86400000
//!
//! [admin]                          # optional: /metrics, /healthz, /readyz over plain HTTP
//! address = "127.0.0.1:9901"
//!
//! [shutdown]                       # optional section
//! grace_ms = 10000                 # optional, default 10000, 0..=600000
//!
//! [runtime]                        # optional section
//! threads = 0                      # optional, default 0: one per CPU the process may use, at least 2;
//!                                  # 1..=1024 (nginx's `worker_processes N`)
//!
//! [admission]                      # optional: admission control of full TLS handshakes
//! enabled = true                   # optional, default true
//! target_wait_ms = 5               # optional, default 5, 0..=10000: shed at arrival beyond it
//! max_wait_ms = 250                # optional, default 250, 0..=60000, >= target_wait_ms
//! max_waiting = 1024               # optional, default 1024: waiting handshakes per key group
//! signer_nice = 5                  # optional, default 5, 0..=19: CPU priority (nice) of the
//!                                  # signer threads, below the threads serving connections
//! inline_signing = true            # optional, default true: a token that signs in this
//!                                  # process and fast (a software token's ECDSA) signs on
//!                                  # the connection's thread, without a signer thread; one
//!                                  # that signs in this process slowly (a software token's
//!                                  # RSA) runs each full handshake's signing step on a
//!                                  # signer thread, and no runtime thread waits for it
//! ```
//!
//! Instead of `[pkcs11]` (one token), the key may live in an HA group of HSMs; the key
//! URI then names no token and no PIN, and each member names its own:
//!
//! ```toml
//! [[hsm.group]]
//! name = "main"
//! sign_timeout_ms = 2000           # one signature, retries on other members included
//! op_timeout_ms = 500              # one attempt; a call running longer fences the member
//! queue_depth = 1024               # per member
//! standby_when_saturated = false   # standby region also when every primary member is full
//! probe_interval_ms = 5000         # test signature on healthy members
//! recovery_timeout_ms = 3000       # a recovery attempt running longer is abandoned
//! max_abandoned_threads = 64       # per member, threads left in hung calls
//! [[hsm.group.region]]
//! name = "eu-west"
//! role = "primary"                 # or "standby"
//! [[hsm.group.region.member]]
//! name = "hsm-a"
//! module = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
//! env = { P11_KIT_SERVER_ADDRESS = "unix:path=/run/hsm-a.sock" }
//! token = "hsm-a"                  # or serial = "..."
//! pin_file = "pin-a"               # or pin_env = "..."
//! sessions = 8                     # per connection, default 4
//! connections = 1                  # module instances, default 1
//! capacity = 10000                 # rated signatures/s (default: measured at start)
//! ```
//!
//! More certificate/key pairs, each in `[pkcs11]`'s token or in an HA group of its own
//! (several `[[hsm.group]]`s: every key then names its group, `[tls]`'s with
//! `group = "..."` under `[tls]`, and every group holds a key):
//!
//! ```toml
//! [[tls.pair]]
//! certificate = "api.pem"          # required, as [tls] certificate
//! key = "pkcs11:object=api;type=private"  # required, as [tls] key (with [pkcs11]: module
//!                                  # and PIN come from there, not from the URI)
//! group = "api-hsms"               # the [[hsm.group]] holding it (optional with one group)
//! server_names = ["api.example.com", "*.api.example.com"]  # optional: served to these
//! # SNI names (exact or wildcard); pairs listing the same names serve them together.
//! # Without server_names the pair joins [tls]'s (e.g. ECDSA beside RSA: chosen by the
//! # signature schemes the client offers). Other names get [tls]'s pair.
//! ```
//!
//! Unknown keys are errors. Existence of files (certificate, PIN file, module)
//! is not checked here; the components that open them report their errors.
//!
//! # Modules
//!
//! Private but for `defaults`, `nginx` and `site`; the public surface is the `pub use`
//! list at the end.
//!
//! - [`load()`] / [`load_str`]: entry points (`load`), with the rules in
//!   `validate` and the serde mirror of the file in `raw`.
//! - `model`: the validated types ([`Config`] and its parts); [`defaults`]: every
//!   default, in one place.
//! - `error`: [`ConfigError`] and [`ConfigErrorKind`].
//! - `env`: settings from flags and `HSMGATE_*` variables ([`Overrides`], read
//!   through [`Strings`]), laid over a file or standing alone (`overlay`:
//!   [`Overrides::load`]), validated by the same rules.
//! - `pkcs11_uri`: the RFC 7512 parser, [`Pkcs11Uri`], [`Secret`].
//! - [`nginx`]: the nginx-configuration reader ([`nginx::load`] into an
//!   [`NginxConfig`]), for hsmgate as a drop-in replacement for nginx.
//! - [`site`]: the runtime model both formats become ([`site::Site::from_native`],
//!   [`site::Site::from_nginx`]): listeners → servers → locations, keys, HA groups.
//!
//! ```
//! let text = r#"
//! [[listener]]
//! address = "127.0.0.1:8443"
//! [tls]
//! certificate = "cert.pem"
//! key = "engine:pkcs11:pkcs11:token=demo;id=%01?module-path=/usr/lib/p11.so"
//! [pkcs11]
//! pin_env = "HSMGATE_PIN"
//! [upstream]
//! address = "localhost:8080"
//! "#;
//! let config = hsmgate_config::load_str(text, "/etc/hsmgate/hsmgate.toml".as_ref())?;
//! assert_eq!(config.tls.certificate_chain, std::path::Path::new("/etc/hsmgate/cert.pem"));
//! # Ok::<(), hsmgate_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]

// Private modules, the public surface the `pub use` list below; `defaults`, `nginx` and
// `site` stay public as namespaces (their names would collide at the root: nginx's
// `LogFormat`, `Location`-like types, `load`).
pub mod defaults;
mod env;
mod error;
mod load;
mod model;
pub mod nginx;
mod overlay;
mod pkcs11_uri;
mod raw;
mod secret;
pub mod site;
mod validate;

pub use env::{
    LogFormat, Origin, Overrides, ProcessEnv, Setting, Strings, mask_pin_value, unread_variables,
};
pub use error::{ConfigError, ConfigErrorKind};
pub use load::{load, load_str};
pub use model::{
    Admission, Config, ConfigWarning, EnvSettingError, HsmGroup, HsmMember, HsmRegion, KeyRef,
    Listener, Location, PinSource, Pkcs11Config, TlsConfig, TlsPair, UNIX_PATH_MAX, Upstream,
    unix_socket_path,
};
pub use nginx::{NginxConfig, NginxOptions};
pub use overlay::ENVIRONMENT;
pub use pkcs11_uri::{ObjectType, Pkcs11Uri, UriError, UriErrorReason, parse_key_string};
pub use secret::{Secret, may_be_a_pin};
