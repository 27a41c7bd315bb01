//! Serde mirror of the native TOML file, used only while loading.
//!
//! Fields whose validation needs a location are [`toml::Spanned`]. These types
//! deliberately do not implement `Debug`: the key string may hold a PIN.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) listener: Vec<Spanned<RawListener>>,
    pub(crate) tls: RawTls,
    pub(crate) pkcs11: Option<RawPkcs11>,
    pub(crate) upstream: RawUpstream,
    #[serde(default)]
    pub(crate) shutdown: RawShutdown,
    pub(crate) hsm: Option<RawHsm>,
    pub(crate) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(crate) admission: RawAdmission,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) runtime: RawRuntime,
}

/// `[runtime]`: the async runtime.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub(crate) threads: Option<Spanned<i64>>,
}

/// `[limits]`: what a client may take (nginx's `client_*` and kin).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) handshake_timeout_ms: Option<Spanned<i64>>,
    pub(crate) header_timeout_ms: Option<Spanned<i64>>,
    pub(crate) body_timeout_ms: Option<Spanned<i64>>,
    pub(crate) send_timeout_ms: Option<Spanned<i64>>,
    pub(crate) keepalive_timeout_ms: Option<Spanned<i64>>,
    pub(crate) keepalive_requests: Option<Spanned<i64>>,
    pub(crate) keepalive_time_ms: Option<Spanned<i64>>,
    pub(crate) header_buffers: Option<Spanned<i64>>,
    pub(crate) header_buffer_size: Option<Spanned<i64>>,
    pub(crate) http2_max_concurrent_streams: Option<Spanned<i64>>,
    pub(crate) max_body_size: Option<Spanned<i64>>,
}

/// `[admission]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmission {
    pub(crate) enabled: Option<bool>,
    pub(crate) target_wait_ms: Option<Spanned<i64>>,
    pub(crate) max_wait_ms: Option<Spanned<i64>>,
    pub(crate) max_waiting: Option<Spanned<i64>>,
    pub(crate) signer_nice: Option<Spanned<i64>>,
    pub(crate) inline_signing: Option<bool>,
}

/// `[admin]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) address: Spanned<String>,
}

/// `[hsm]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHsm {
    #[serde(default)]
    pub(crate) group: Vec<Spanned<RawGroup>>,
}

/// `[[hsm.group]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub(crate) name: Spanned<String>,
    pub(crate) sign_timeout_ms: Option<Spanned<i64>>,
    pub(crate) op_timeout_ms: Option<Spanned<i64>>,
    pub(crate) queue_depth: Option<Spanned<i64>>,
    pub(crate) standby_when_saturated: Option<bool>,
    pub(crate) probe_interval_ms: Option<Spanned<i64>>,
    pub(crate) recovery_timeout_ms: Option<Spanned<i64>>,
    pub(crate) max_abandoned_threads: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) region: Vec<Spanned<RawRegion>>,
}

/// `[[hsm.group.region]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub(crate) name: Spanned<String>,
    pub(crate) role: Spanned<String>,
    #[serde(default)]
    pub(crate) member: Vec<Spanned<RawMember>>,
}

/// `[[hsm.group.region.member]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    pub(crate) name: Spanned<String>,
    pub(crate) module: Spanned<String>,
    pub(crate) env: Option<Spanned<BTreeMap<String, String>>>,
    pub(crate) token: Option<Spanned<String>>,
    pub(crate) serial: Option<Spanned<String>>,
    pub(crate) pin_file: Option<Spanned<String>>,
    pub(crate) pin_env: Option<Spanned<String>>,
    pub(crate) sessions: Option<Spanned<i64>>,
    pub(crate) connections: Option<Spanned<i64>>,
    pub(crate) capacity: Option<Spanned<f64>>,
}

/// `[[listener]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub(crate) address: Spanned<String>,
    pub(crate) tls_versions: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) http2: Option<bool>,
}

/// `[tls]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) certificate: Spanned<String>,
    pub(crate) key: Spanned<String>,
    pub(crate) group: Option<Spanned<String>>,
    pub(crate) session_tickets: Option<Spanned<bool>>,
    pub(crate) session_ticket_key_files: Option<Spanned<Vec<String>>>,
    pub(crate) session_timeout_ms: Option<Spanned<i64>>,
    pub(crate) ciphers: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) client_certificate: Option<Spanned<String>>,
    pub(crate) verify_client: Option<Spanned<String>>,
    pub(crate) verify_depth: Option<Spanned<i64>>,
    pub(crate) ocsp_stapling: Option<Spanned<bool>>,
    pub(crate) ocsp_responder: Option<Spanned<String>>,
    pub(crate) ocsp_verify: Option<Spanned<bool>>,
    #[serde(default)]
    pub(crate) pair: Vec<Spanned<RawPair>>,
}

/// `[[tls.pair]]`: one more certificate/key pair.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPair {
    pub(crate) certificate: Spanned<String>,
    pub(crate) key: Spanned<String>,
    pub(crate) group: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) server_names: Vec<Spanned<String>>,
}

/// `[pkcs11]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPkcs11 {
    pub(crate) module: Option<Spanned<String>>,
    pub(crate) pin_file: Option<Spanned<String>>,
    pub(crate) pin_env: Option<Spanned<String>>,
    pub(crate) sessions: Option<Spanned<i64>>,
    pub(crate) queue_depth: Option<Spanned<i64>>,
    pub(crate) sign_timeout_ms: Option<Spanned<i64>>,
    pub(crate) env: Option<Spanned<BTreeMap<String, String>>>,
    pub(crate) capacity: Option<Spanned<f64>>,
}

/// `[upstream]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) address: Spanned<String>,
    pub(crate) connect_timeout_ms: Option<Spanned<i64>>,
    pub(crate) request_timeout_ms: Option<Spanned<i64>>,
}

/// `[shutdown]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub(crate) grace_ms: Option<Spanned<i64>>,
}
