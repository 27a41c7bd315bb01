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
    #[serde(default)]
    pub(crate) pkcs11: RawPkcs11,
    pub(crate) upstream: RawUpstream,
    #[serde(default)]
    pub(crate) shutdown: RawShutdown,
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
