//! The public face of the signer: settings for a group of HSM members (or a single
//! token), and [`SignerPool`], which signs through the group.
//!
//! ```text
//!  rustls handshake ──sign()──▶ group: pick member ──▶ [member queue] ──▶ hsm-<member>-0 (session) ──C_Sign──▶ HSM
//!      (waits with a deadline,        ▲   retry on another member  ├─▶ hsm-<member>-1 (session)
//!       off the async workers) ◀──────┴── one-shot answer ─────────┘   …
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hsmgate_config::{Admission, Pkcs11Uri, Secret};
use rustls::SignatureScheme;

use crate::admission::Limiter;
use crate::capacity::CapacitySource;
use crate::error::SignerError;
use crate::group::Group;
use crate::member::MemberState;
use crate::token::KeyKind;

/// One token of one HSM member.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// Name in logs and metrics (e.g. `hsm-a`).
    pub name: String,
    /// Region name.
    pub region: String,
    /// Whether the region is primary (else standby).
    pub primary: bool,
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Environment applied while the module instance is loaded and initialised.
    pub env: BTreeMap<String, String>,
    /// The token (token/serial attributes) and key (object/id) to use on it.
    pub uri: Pkcs11Uri,
    /// The user PIN.
    pub pin: Secret,
    /// Sessions (threads) per module instance.
    pub sessions: usize,
    /// Module instances (connections) to open; more than one when a single module
    /// connection caps throughput (p11-kit serves one connection on one core).
    pub connections: usize,
    /// Rated capacity in signatures/s (`None`: measured by a calibration burst).
    pub capacity: Option<f64>,
}

/// The public key every member's key must have.
#[derive(Debug, Clone)]
pub struct ExpectedKey {
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// Where it comes from, for errors: e.g. "certificate /etc/x.pem (subject CN=a)".
    pub from: String,
}

/// A group of HSM members holding the same key.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Group name.
    pub name: String,
    /// The members, primary and standby.
    pub members: Vec<MemberSettings>,
    /// The key the certificate names; `None` takes the first member's key as reference.
    pub expected: Option<ExpectedKey>,
    /// Deadline for one signature, retries included.
    pub sign_timeout: Duration,
    /// Deadline for one attempt on one member; a call running longer fences the member.
    pub op_timeout: Duration,
    /// Queue capacity per member.
    pub queue_depth: usize,
    /// How many queued requests a thread takes per wake-up.
    pub batch_max: usize,
    /// Use the standby region when every primary member's queue is full.
    pub standby_when_saturated: bool,
    /// How often an up member gets a test signature.
    pub probe_interval: Duration,
    /// How long a recovery attempt (or start-up) may take before it is abandoned.
    pub recovery_timeout: Duration,
    /// How many threads may be abandoned in one member's hung calls before recovery waits.
    pub max_abandoned: usize,
    /// Admission control of full handshakes signed by this group.
    pub admission: Admission,
}

impl GroupSettings {
    /// What makes two settings the same pool on reload: everything but the expected
    /// key (the certificate is checked against the pool's key anyway) and admission's
    /// limiter settings (a kept pool takes those in place: `Limiter::update`), with each
    /// member's PIN as a digest (so a changed PIN starts a new pool, whose login checks
    /// it). Admission's `signer_nice` and `inline_signing` are part of it: they shape
    /// the pool's threads and sessions. Kept in memory only.
    pub fn identity(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let pin = crate::pin_check::digest(&m.pin);
                let pin: String = pin.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("{m:?}|pin {pin}")
            })
            .collect();
        format!(
            "{}|{members:?}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{}|nice {}|inline {}",
            self.name,
            self.sign_timeout,
            self.op_timeout,
            self.queue_depth,
            self.batch_max,
            self.standby_when_saturated,
            self.probe_interval,
            self.recovery_timeout,
            self.max_abandoned,
            self.admission.signer_nice,
            self.admission.inline_signing,
        )
    }

    /// The key as its members' URI names it (object label, else `id=` in hex): the `key`
    /// label of the group's metrics.
    pub fn key_label(&self) -> String {
        let uri = self.members.first().map(|m| &m.uri);
        match (
            uri.and_then(|u| u.object.as_ref()),
            uri.and_then(|u| u.id.as_ref()),
        ) {
            (Some(object), _) => object.clone(),
            (None, Some(id)) => format!("id={}", crate::token::hex(id)),
            (None, None) => "key".into(),
        }
    }

    /// Settings of a validated configuration's `[tls]` key: the `[[hsm.group]]` holding
    /// it, or its single `[pkcs11]` token as a one-member group. Reads every member's PIN.
    pub fn from_config(
        config: &hsmgate_config::Config,
        expected: Option<ExpectedKey>,
    ) -> Result<Self, SignerError> {
        let group = config.tls.key.uri.group.as_deref();
        let Some(g) = config.hsm.iter().find(|g| Some(g.name.as_str()) == group) else {
            return Ok(PoolSettings::from_config(config)?.into_group(expected));
        };
        Self::from_group(g, &config.tls.key.uri, config.admission, expected)
    }

    /// Settings of HA group `g` holding the key `key` names (its object and id; each
    /// member names its own token). Reads every member's PIN. Both configuration
    /// formats come here: TOML's `[[hsm.group]]` and nginx's `$hsmgate_group_` maps.
    pub fn from_group(
        g: &hsmgate_config::HsmGroup,
        key: &Pkcs11Uri,
        admission: Admission,
        expected: Option<ExpectedKey>,
    ) -> Result<Self, SignerError> {
        let mut members = Vec::new();
        for region in &g.regions {
            for m in &region.members {
                let mut uri = key.clone();
                uri.token = m.token.clone();
                uri.serial = m.serial.clone();
                uri.group = None;
                members.push(MemberSettings {
                    name: m.name.clone(),
                    region: region.name.clone(),
                    primary: region.primary,
                    module: m.module.clone(),
                    env: m.env.clone(),
                    uri,
                    pin: crate::pin::read_pin(&m.pin)?,
                    sessions: m.sessions,
                    connections: m.connections,
                    capacity: m.capacity,
                });
            }
        }
        Ok(GroupSettings {
            name: g.name.clone(),
            members,
            expected,
            sign_timeout: g.sign_timeout,
            op_timeout: g.op_timeout,
            queue_depth: g.queue_depth,
            batch_max: hsmgate_config::defaults::BATCH_MAX,
            standby_when_saturated: g.standby_when_saturated,
            probe_interval: g.probe_interval,
            recovery_timeout: g.recovery_timeout,
            max_abandoned: g.max_abandoned_threads,
            admission,
        })
    }
}

/// A single token: the walking-skeleton form, turned into a one-member group.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Environment applied while the module is loaded and initialised.
    pub env: BTreeMap<String, String>,
    /// The key's URI (token and object attributes).
    pub uri: Pkcs11Uri,
    /// The user PIN.
    pub pin: Secret,
    /// Number of sessions, each on its own thread.
    pub sessions: usize,
    /// Capacity of the request queue.
    pub queue_depth: usize,
    /// How long a signature may take, queueing included.
    pub sign_timeout: Duration,
    /// How many queued requests a thread takes per wake-up.
    pub batch_max: usize,
    /// Rated capacity, signatures/s (`None`: measured by a calibration burst).
    pub capacity: Option<f64>,
    /// Admission control of full handshakes signed by this token.
    pub admission: Admission,
}

impl PoolSettings {
    /// Settings from a validated configuration (reads the PIN from its source).
    pub fn from_config(config: &hsmgate_config::Config) -> Result<Self, SignerError> {
        let p = config.pkcs11.as_ref().ok_or(SignerError::NoToken)?;
        Ok(PoolSettings {
            module: p.module.clone(),
            env: p.env.clone(),
            uri: config.tls.key.uri.clone(),
            pin: crate::pin::read_pin(&p.pin)?,
            sessions: p.sessions,
            queue_depth: p.queue_depth,
            sign_timeout: p.sign_timeout,
            batch_max: hsmgate_config::defaults::BATCH_MAX,
            capacity: p.capacity,
            admission: config.admission,
        })
    }

    /// The one-member group: the member is named after the token, and a hung call
    /// fences it once the signature deadline passes, so later handshakes fail at once
    /// until it is back instead of each waiting out the deadline.
    pub fn into_group(self, expected: Option<ExpectedKey>) -> GroupSettings {
        let name = self
            .uri
            .token
            .clone()
            .or_else(|| self.uri.serial.clone())
            .unwrap_or_else(|| "token".into());
        GroupSettings {
            name: name.clone(),
            members: vec![MemberSettings {
                name,
                region: "local".into(),
                primary: true,
                module: self.module,
                env: self.env,
                uri: self.uri,
                pin: self.pin,
                sessions: self.sessions,
                connections: 1,
                capacity: self.capacity,
            }],
            expected,
            sign_timeout: self.sign_timeout,
            op_timeout: self.sign_timeout,
            queue_depth: self.queue_depth,
            batch_max: self.batch_max,
            standby_when_saturated: false,
            probe_interval: hsmgate_config::defaults::PROBE_INTERVAL,
            recovery_timeout: self.sign_timeout.max(Duration::from_secs(3)),
            max_abandoned: 4 * self.sessions.max(1) + 4,
            admission: self.admission,
        }
    }
}

/// The state of one member, for `/readyz` and logs.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Whether the region is primary.
    pub primary: bool,
    /// Its state.
    pub state: MemberState,
    /// Signatures queued or being signed on it.
    pub in_flight: usize,
    /// Threads abandoned in its hung calls.
    pub abandoned: usize,
    /// Its last error (empty when none).
    pub last_error: String,
    /// Signatures/s it can make (0: not known yet).
    pub capacity: f64,
    /// Where that figure comes from.
    pub capacity_source: CapacitySource,
    /// Signatures/s it made over the last second.
    pub rate: f64,
    /// Share of its sessions' time in C_Sign over the last second.
    pub utilisation: f64,
    /// Whether it counts toward the group's capacity now (up, and primary or needed).
    pub serving: bool,
    /// Its signer threads (sessions × connections).
    pub sessions: usize,
    /// Moving average (EWMA) of the time from queueing a signature to its answer.
    pub latency: Duration,
    /// Moving average (EWMA) of the CPU time one signature's PKCS#11 calls take on the
    /// thread that makes them: what the HSM's client library costs this machine per
    /// signature (a software token's whole signature; a network HSM's client, little).
    pub cpu_per_signature: Duration,
    /// Signatures attempted on it since start (all its generations).
    pub operations: u64,
    /// Of those, answers that were errors.
    pub errors: u64,
    /// Whether it signs on the connections' threads (a token that computes in the
    /// process and fast) rather than on its signer threads.
    pub signs_inline: bool,
    /// Whether full handshakes' signing steps run with its sessions, on its signer
    /// threads or a spare runtime thread (a token that computes in the process, slowly).
    pub handshake_jobs: bool,
}

/// A group of signer threads over one or more HSM members holding one key. Cheap to clone.
#[derive(Clone)]
pub struct SignerPool {
    group: Arc<Group>,
}

impl std::fmt::Debug for SignerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerPool")
            .field("group", &self.group.settings.name)
            .field("members", &self.group.describe_members())
            .finish()
    }
}

impl SignerPool {
    /// A pool over one token (see [`PoolSettings::into_group`]).
    pub fn start(settings: &PoolSettings) -> Result<SignerPool, SignerError> {
        Self::start_group(settings.clone().into_group(None))
    }

    /// Bring up the group's members (each checked against the expected key with one
    /// verified test signature) and start its supervisor. Fails only when no member
    /// could be brought up.
    pub fn start_group(settings: GroupSettings) -> Result<SignerPool, SignerError> {
        let group = Group::start(settings)?;
        let (capacity, sessions) = group.serving_capacity();
        tracing::info!(
            group = %group.settings.name,
            key = %group.key_name,
            kind = %group.kind,
            schemes = ?group.schemes,
            members = %group.describe_members(),
            capacity_ops = capacity.round(),
            sessions,
            admission = if group.settings.admission.enabled { "on" } else { "off" },
            "signer pool started"
        );
        Ok(SignerPool { group })
    }

    /// Sign `message` with `scheme`, with failover, waiting up to the signature deadline.
    ///
    /// This blocks the calling thread. On a tokio multi-thread worker it waits inside
    /// `block_in_place`, so the runtime moves its other tasks to another thread and
    /// established connections keep being served while an HSM is slow or hung.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.group.sign(scheme, message)
    }

    /// Run `job`, a full handshake's step that signs (rustls processing the ClientHello),
    /// with a session of the member that would sign now: for a token that computes in
    /// this process but slowly (see `offload`), on the calling runtime thread at once if
    /// half the runtime threads stay free to serve the rest (`on_runtime`; the future is
    /// then ready), else on one of the member's signer threads, which spares the
    /// caller's tokio worker the wait. The future gives the
    /// job's result; [`Offloaded::Returned`] gives the job back un-run (no member runs
    /// jobs now, or it could not take this one: the caller runs it, and its signature
    /// takes the usual path); [`Offloaded::Lost`] when it waited past the signature
    /// deadline on an overloaded member, or panicked.
    pub fn offload<F, T>(
        &self,
        job: F,
    ) -> impl Future<Output = Result<T, crate::offload::Offloaded<F>>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (job, outcome) =
            crate::offload::wrap(job, self.group.id, self.group.settings.sign_timeout);
        if let Err(job) = self.group.submit_job(job) {
            job.give_back();
        }
        outcome
    }

    /// Whether [`offload`](Self::offload) would run a job on a signer thread now.
    pub fn offloads(&self) -> bool {
        self.group.runs_jobs()
    }

    /// The schemes the key can make, best first.
    pub fn schemes(&self) -> &[SignatureScheme] {
        &self.group.schemes
    }

    /// The key's kind and size.
    pub fn key_kind(&self) -> KeyKind {
        self.group.kind
    }

    /// The key's public key, DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.group.expected.spki
    }

    /// The token label of the first member that came up.
    pub fn token_label(&self) -> &str {
        &self.group.token_label
    }

    /// The key's name (label, or id).
    pub fn key_name(&self) -> &str {
        &self.group.key_name
    }

    /// The group's name.
    pub fn group_name(&self) -> &str {
        &self.group.settings.name
    }

    /// Signatures queued or being signed now, over all members.
    pub fn in_flight(&self) -> usize {
        self.group.members.iter().map(|m| m.in_flight()).sum()
    }

    /// Whether at least one member can sign.
    pub fn ready(&self) -> bool {
        self.group.ready()
    }

    /// A reload keeps this pool: members refused for anything but a wrong PIN (another
    /// key on the HSM, a locked PIN) are tried again, as nginx's reload would load the
    /// key again. Returns how many.
    pub fn retry_refused(&self) -> usize {
        self.group
            .members
            .iter()
            .filter(|m| m.retry_refused())
            .count()
    }

    /// The admission limiter of full handshakes signed by this pool.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.group.limiter
    }

    /// Signatures/s the serving members can make, and their sessions.
    pub fn capacity(&self) -> (f64, usize) {
        self.group.serving_capacity()
    }

    /// Every member's state.
    pub fn members(&self) -> Vec<MemberStatus> {
        let serving = self.group.serving();
        self.group
            .members
            .iter()
            .zip(serving)
            .map(|(m, serving)| {
                let cap = m.capacity.lock().unwrap_or_else(|e| e.into_inner());
                let (rate, utilisation) = cap.observed();
                let live = m.live();
                MemberStatus {
                    name: m.name().to_string(),
                    region: m.settings.region.clone(),
                    primary: m.primary,
                    state: m.state(),
                    in_flight: m.in_flight(),
                    abandoned: m.abandoned.load(Ordering::Acquire),
                    last_error: if m.state() == MemberState::Up {
                        String::new()
                    } else {
                        m.last_error()
                    },
                    capacity: cap.current(),
                    capacity_source: cap.source(),
                    rate,
                    utilisation,
                    serving,
                    sessions: m.threads(),
                    latency: m.meter.latency(),
                    cpu_per_signature: m.meter.cpu_per_signature(),
                    operations: m.totals_since_start().0,
                    errors: m.totals_since_start().1,
                    signs_inline: live.as_ref().is_some_and(|l| l.signs_inline()),
                    handshake_jobs: live.is_some_and(|l| l.runs_jobs()),
                }
            })
            .collect()
    }

    /// Write every member's state gauge from its state now (called before a `/metrics`
    /// scrape, so that the scrape agrees with `/status`).
    pub fn publish_states(&self) {
        for m in &self.group.members {
            m.publish_state();
        }
    }

    /// "hsm-a up; hsm-b down (…)".
    pub fn describe_members(&self) -> String {
        self.group.describe_members()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pin: &str) -> GroupSettings {
        PoolSettings {
            module: PathBuf::from("/m.so"),
            env: BTreeMap::new(),
            uri: Pkcs11Uri {
                token: Some("web".into()),
                ..Pkcs11Uri::default()
            },
            pin: Secret::new(pin),
            sessions: 4,
            queue_depth: 64,
            sign_timeout: Duration::from_secs(2),
            batch_max: 8,
            capacity: None,
            admission: Admission::default(),
        }
        .into_group(None)
    }

    #[test]
    fn a_changed_pin_is_another_pool_and_the_identity_hides_it() {
        let a = settings("1234").identity();
        assert_eq!(a, settings("1234").identity());
        assert_ne!(a, settings("4321").identity());
        assert!(!a.contains("1234"), "{a}");
        // The limiter's settings are changed in place on a kept pool…
        let mut other = settings("1234");
        other.admission.enabled = false;
        other.admission.max_waiting = 7;
        assert_eq!(
            a,
            other.identity(),
            "the limiter's settings are not the pool's identity"
        );
        // …the signer threads' priority and where signatures are made are not.
        let mut nicer = settings("1234");
        nicer.admission.signer_nice += 1;
        assert_ne!(a, nicer.identity());
        let mut inline = settings("1234");
        inline.admission.inline_signing = !inline.admission.inline_signing;
        assert_ne!(a, inline.identity());
    }
}
