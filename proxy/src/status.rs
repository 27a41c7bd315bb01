//! The `/status` document: every signing key of the current generation, its HA group,
//! admission state and members (state, capacity, rate, utilisation, latency, errors).
//! Built from the signer pools at request time; serialised as JSON for `/status?format=json`
//! (or `Accept: application/json`), read back by `hsmgate top`, and drawn by the page in
//! [`status_page`](crate::status_page).
//!
//! It carries names, figures and error texts only: no PIN, no key material.

use std::time::Duration;

use hsmgate_signer::{CapacitySource, MemberStatus, SignerPool};
use serde::{Deserialize, Serialize};

use crate::generation::Generation;

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// hsmgate's version.
    pub version: String,
    /// Seconds since the admin listener started.
    pub uptime_seconds: u64,
    /// What `/readyz` answers: every key can sign and the proxy is not draining.
    pub ready: bool,
    /// The proxy is stopping.
    pub draining: bool,
    /// The configuration file (empty: flags and environment).
    pub config: String,
    /// One entry per token key (signer pool), sorted by group then key.
    pub keys: Vec<KeyStatus>,
}

/// One key: a signer pool over an HA group (or a single token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyStatus {
    /// The key's label (or id).
    pub key: String,
    /// Kind and size, e.g. `RSA-2048`.
    pub kind: String,
    /// The group's name (the token's label for a single token).
    pub group: String,
    /// At least one member can sign.
    pub ready: bool,
    /// Signatures/s the serving members can make.
    pub capacity_ops_per_second: f64,
    /// Admission control of full handshakes.
    pub admission: AdmissionView,
    /// Primary members first, in configuration order.
    pub members: Vec<MemberView>,
}

/// A limiter's state and decisions since start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdmissionView {
    /// Admission control is on.
    pub enabled: bool,
    /// Current concurrency limit of full handshakes.
    pub limit: f64,
    /// Admitted, not yet signed.
    pub in_flight: usize,
    /// Waiting for a slot.
    pub waiting: usize,
    /// Full handshakes admitted since start.
    pub admitted: u64,
    /// Resumption attempts let through since start.
    pub resumed: u64,
    /// Full handshakes shed since start.
    pub shed: u64,
}

/// One HSM member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// The region is primary (else standby).
    pub primary: bool,
    /// `up`, `fenced`, `down`, `recovering` or `refused`.
    pub state: String,
    /// Counts toward the group's capacity now.
    pub serving: bool,
    /// Signer threads (sessions × connections).
    pub sessions: usize,
    /// Signatures queued or being signed.
    pub in_flight: usize,
    /// Signatures/s it can make (0: not known).
    pub capacity_ops_per_second: f64,
    /// `configured`, `measured` or `unknown`.
    pub capacity_source: String,
    /// Signatures/s over the last second.
    pub rate_ops_per_second: f64,
    /// Share of its sessions' time in C_Sign over the last second (0..1).
    pub utilisation: f64,
    /// Moving average of queue + signing time, milliseconds.
    pub latency_ms: f64,
    /// Moving average of the CPU time one signature's PKCS#11 calls take in this process,
    /// microseconds (what the HSM's client library costs this machine).
    #[serde(default)]
    pub cpu_us_per_signature: f64,
    /// Signatures attempted since start.
    pub operations: u64,
    /// Of those, errors.
    pub errors: u64,
    /// Why it is out of rotation (empty while up).
    pub last_error: String,
    /// Threads abandoned in hung calls.
    pub abandoned_threads: usize,
    /// Signs on the connections' threads (a token that computes in the process and
    /// fast) rather than on signer threads.
    #[serde(default)]
    pub signs_inline: bool,
    /// Full handshakes' signing steps run with its sessions, on its signer threads or a
    /// spare runtime thread (a token that computes in the process, slowly).
    #[serde(default)]
    pub handshake_jobs: bool,
}

/// Build the document from `generation`.
pub(crate) fn build(generation: &Generation, draining: bool, uptime: Duration) -> Status {
    let mut keys: Vec<KeyStatus> = generation.pools.pools().map(key_status).collect();
    keys.sort_by(|a, b| (&a.group, &a.key).cmp(&(&b.group, &b.key)));
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: uptime.as_secs(),
        ready: !draining && keys.iter().all(|k| k.ready),
        draining,
        config: generation.site.source.display().to_string(),
        keys,
    }
}

fn key_status(pool: &SignerPool) -> KeyStatus {
    let a = pool.limiter().status();
    KeyStatus {
        key: pool.key_name().to_owned(),
        kind: pool.key_kind().to_string(),
        group: pool.group_name().to_owned(),
        ready: pool.ready(),
        capacity_ops_per_second: round(pool.capacity().0, 1),
        admission: AdmissionView {
            enabled: a.enabled,
            limit: round(a.limit, 2),
            in_flight: a.in_flight,
            waiting: a.waiting,
            admitted: a.admitted,
            resumed: a.resumed,
            shed: a.shed,
        },
        members: pool.members().into_iter().map(member_view).collect(),
    }
}

fn member_view(m: MemberStatus) -> MemberView {
    MemberView {
        state: m.state.as_str().to_owned(),
        capacity_source: match m.capacity_source {
            CapacitySource::Configured => "configured",
            CapacitySource::Measured => "measured",
            CapacitySource::Unknown => "unknown",
        }
        .to_owned(),
        capacity_ops_per_second: round(m.capacity, 1),
        rate_ops_per_second: round(m.rate, 1),
        utilisation: round(m.utilisation, 3),
        latency_ms: round(m.latency.as_secs_f64() * 1e3, 3),
        cpu_us_per_signature: round(m.cpu_per_signature.as_secs_f64() * 1e6, 1),
        serving: m.serving,
        sessions: m.sessions,
        in_flight: m.in_flight,
        operations: m.operations,
        errors: m.errors,
        last_error: m.last_error,
        abandoned_threads: m.abandoned,
        signs_inline: m.signs_inline,
        handshake_jobs: m.handshake_jobs,
        name: m.name,
        region: m.region,
        primary: m.primary,
    }
}

fn round(v: f64, digits: i32) -> f64 {
    if !v.is_finite() {
        return 0.0;
    }
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_json_finite() {
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(f64::INFINITY, 2), 0.0);
        assert_eq!(round(f64::NAN, 2), 0.0);
    }

    #[test]
    fn the_document_round_trips_through_json() {
        let status = Status {
            version: "0.1.0".into(),
            uptime_seconds: 3,
            ready: false,
            draining: false,
            config: "/etc/hsmgate.toml".into(),
            keys: vec![KeyStatus {
                key: "tls".into(),
                kind: "RSA-2048".into(),
                group: "lab".into(),
                ready: false,
                capacity_ops_per_second: 0.0,
                admission: AdmissionView {
                    enabled: true,
                    limit: 1.0,
                    in_flight: 0,
                    waiting: 0,
                    admitted: 1,
                    resumed: 2,
                    shed: 3,
                },
                members: vec![],
            }],
        };
        let text = serde_json::to_string(&status).expect("serialise");
        let back: Status = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, status);
    }
}
