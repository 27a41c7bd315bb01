//! nginx's `limit_req` and `limit_conn`, run where nginx runs them (the pre-access phase:
//! after `rewrite` and `return`, before `allow`/`deny` and `auth_basic`), with nginx's
//! arithmetic (checked against Debian's nginx 1.22):
//!
//! - `limit_req`: a leaky bucket per key, in thousandths of a request. A request adds
//!   1000 to its key's excess after the rate has drained it since the key's last one; an
//!   excess above `burst` is refused with `limit_req_status` (not counted); one above
//!   `delay` (0; `nodelay`: never) waits until the rate would have let it through.
//!   Several `limit_req`s: all must pass, and only then are all counted.
//! - `limit_conn`: requests of one key in progress at once, released when the answer
//!   has been sent (or the client went away).
//!
//! A zone holds as many keys as nginx's of that size would (64 bytes per `limit_req`
//! state, 32 per `limit_conn` one). A full `limit_req` zone drops the keys the rate has
//! drained, then the least recently seen eighth; a full `limit_conn` zone refuses a new
//! key, as nginx does. Zones live across reloads when a reload keeps their name, key,
//! size and rate, as nginx's shared memory zones do. An empty key is not limited. A
//! request is checked once, not again after an `error_page` sent it elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hsmgate_config::nginx::{
    LimitConnZone, LimitLogLevel, LimitReqZone, LimitZones, Limits, Template,
};
use http::{HeaderMap, StatusCode};

use crate::body::ProxyBody;
use crate::reqlog::LogCtx;

/// nginx's `limit_req` state size: 1 MB holds about 16,000 keys.
const REQ_STATE_BYTES: u64 = 64;
/// nginx's `limit_conn` state size: 1 MB holds about 32,000 keys.
const CONN_STATE_BYTES: u64 = 32;

/// The zones of one configuration, by name.
#[derive(Default)]
pub(crate) struct Zones {
    req: HashMap<String, Arc<ReqZone>>,
    conn: HashMap<String, Arc<ConnZone>>,
}

impl std::fmt::Debug for Zones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zones")
            .field("req", &self.req.keys().collect::<Vec<_>>())
            .field("conn", &self.conn.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One `limit_req_zone`.
struct ReqZone {
    name: String,
    key: Template,
    /// Thousandths of a request per second.
    rate_milli: u64,
    capacity: usize,
    states: DashMap<String, ReqState>,
    /// What it was built from (reused by a reload that keeps it).
    spec: String,
}

#[derive(Clone, Copy)]
struct ReqState {
    /// Thousandths of a request above the rate.
    excess: u64,
    last: Instant,
}

/// One `limit_conn_zone`.
struct ConnZone {
    name: String,
    key: Template,
    capacity: usize,
    counts: DashMap<String, u32>,
    spec: String,
}

/// A request in progress counted by a `limit_conn`: released when dropped.
pub(crate) struct ConnSlot {
    zone: Arc<ConnZone>,
    key: String,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let gone = match self.zone.counts.get_mut(&self.key) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.zone.counts.remove_if(&self.key, |_, n| *n == 0);
        }
    }
}

/// Zones alive in some configuration, for a reload to take over.
#[derive(Default)]
struct Live {
    req: Vec<Weak<ReqZone>>,
    conn: Vec<Weak<ConnZone>>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    req: Vec::new(),
    conn: Vec::new(),
});

impl Zones {
    /// The zones `config` defines, taking over those of the running configuration that
    /// a reload keeps.
    pub(crate) fn build(config: &LimitZones) -> Zones {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.req.retain(|w| w.strong_count() > 0);
        live.conn.retain(|w| w.strong_count() > 0);
        let mut zones = Zones::default();
        for (name, z) in &config.req {
            let spec = req_spec(name, z);
            let zone = (live.req.iter().filter_map(Weak::upgrade))
                .find(|old| old.spec == spec)
                .unwrap_or_else(|| {
                    let zone = Arc::new(ReqZone {
                        name: name.clone(),
                        key: z.key.clone(),
                        rate_milli: z.rate_milli.max(1),
                        capacity: (z.size / REQ_STATE_BYTES).max(1) as usize,
                        states: DashMap::new(),
                        spec,
                    });
                    live.req.push(Arc::downgrade(&zone));
                    zone
                });
            zones.req.insert(name.clone(), zone);
        }
        for (name, z) in &config.conn {
            let spec = conn_spec(name, z);
            let zone = (live.conn.iter().filter_map(Weak::upgrade))
                .find(|old| old.spec == spec)
                .unwrap_or_else(|| {
                    let zone = Arc::new(ConnZone {
                        name: name.clone(),
                        key: z.key.clone(),
                        capacity: (z.size / CONN_STATE_BYTES).max(1) as usize,
                        counts: DashMap::new(),
                        spec,
                    });
                    live.conn.push(Arc::downgrade(&zone));
                    zone
                });
            zones.conn.insert(name.clone(), zone);
        }
        zones
    }
}

fn req_spec(name: &str, z: &LimitReqZone) -> String {
    format!("{name} {} {} {}", z.key, z.size, z.rate_milli)
}

fn conn_spec(name: &str, z: &LimitConnZone) -> String {
    format!("{name} {} {}", z.key, z.size)
}

/// Milliseconds from `last` to `now` (0 when `now` is earlier).
fn millis(now: Instant, last: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(last).as_millis()).unwrap_or(u64::MAX)
}

impl ReqZone {
    /// The excess `key` would have with one more request at `now`.
    fn excess(&self, key: &str, now: Instant) -> u64 {
        match self.states.get(key) {
            Some(s) => self.next(*s, now),
            None => 0,
        }
    }

    /// The excess after one more request at `now` than `s` counts: nginx drains after
    /// adding the request, so a request exactly on the rate has excess 0.
    fn next(&self, s: ReqState, now: Instant) -> u64 {
        let drained = self.rate_milli.saturating_mul(millis(now, s.last)) / 1000;
        (s.excess + 1000).saturating_sub(drained)
    }

    /// `s`'s excess once the rate has drained it until `now`.
    fn drained(&self, s: ReqState, now: Instant) -> u64 {
        let drained = self.rate_milli.saturating_mul(millis(now, s.last)) / 1000;
        s.excess.saturating_sub(drained)
    }

    /// One request of `key` at `now`, counted unless its excess is above `burst`
    /// (thousandths), checked and counted under the key's lock: its excess, `Err` when
    /// refused.
    fn account(&self, key: &str, now: Instant, burst: u64) -> Result<u64, u64> {
        if !self.states.contains_key(key) && self.states.len() >= self.capacity {
            self.make_room(now);
        }
        match self.states.entry(key.to_owned()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(ReqState {
                    excess: 0,
                    last: now,
                });
                Ok(0)
            }
            dashmap::Entry::Occupied(mut o) => {
                let excess = self.next(*o.get(), now);
                if excess > burst {
                    return Err(excess);
                }
                *o.get_mut() = ReqState { excess, last: now };
                Ok(excess)
            }
        }
    }

    /// Drops the keys the rate has drained; if that is not enough, the least recently
    /// seen eighth.
    fn make_room(&self, now: Instant) {
        self.states.retain(|_, s| self.drained(*s, now) > 0);
        if self.states.len() < self.capacity {
            return;
        }
        let mut lasts: Vec<Instant> = self.states.iter().map(|s| s.last).collect();
        let nth = lasts.len() / 8;
        let (_, cut, _) = lasts.select_nth_unstable(nth);
        let cut = *cut;
        self.states.retain(|_, s| s.last > cut);
    }
}

/// `$limit_req_status` / `$limit_conn_status` values.
const PASSED: &str = "PASSED";
const DELAYED: &str = "DELAYED";
const REJECTED: &str = "REJECTED";
const DELAYED_DRY_RUN: &str = "DELAYED_DRY_RUN";
const REJECTED_DRY_RUN: &str = "REJECTED_DRY_RUN";

/// nginx's pre-access phase for `limits`: `limit_req` (which may wait), then
/// `limit_conn`. `Some`: the refusal to answer with.
pub(crate) async fn preaccess(
    zones: &Zones,
    limits: &Limits,
    log: &mut LogCtx,
    headers: &HeaderMap,
) -> Option<http::Response<ProxyBody>> {
    if !limits.req.is_empty()
        && log.limit_status.0.is_empty()
        && let Some(refusal) = limit_req(zones, limits, log, headers).await
    {
        return Some(refusal);
    }
    if !limits.conn.is_empty() && log.limit_status.1.is_empty() {
        return limit_conn(zones, limits, log, headers);
    }
    None
}

async fn limit_req(
    zones: &Zones,
    limits: &Limits,
    log: &mut LogCtx,
    headers: &HeaderMap,
) -> Option<http::Response<ProxyBody>> {
    let now = Instant::now();
    // As nginx: every limit but the last is checked, the last checked and counted at
    // once, and the others counted only when all passed.
    let mut checked = Vec::with_capacity(limits.req.len());
    for limit in &limits.req {
        let Some(zone) = zones.req.get(&limit.zone) else {
            continue;
        };
        let key = log.vars(headers).expand(&zone.key);
        if !key.is_empty() {
            checked.push((limit, zone, key));
        }
    }
    let mut delay = (Duration::ZERO, 0, "");
    for (i, (limit, zone, key)) in checked.iter().enumerate() {
        let burst = limit.burst.saturating_mul(1000);
        let last = i + 1 == checked.len();
        let excess = match last {
            true => zone.account(key, now, burst),
            false => Ok(zone.excess(key, now)).and_then(|e| if e > burst { Err(e) } else { Ok(e) }),
        };
        let excess = match excess {
            Ok(excess) => excess,
            Err(excess) => {
                let dry = limits.req_dry_run;
                log.limit_status.0 = if dry { REJECTED_DRY_RUN } else { REJECTED };
                let dry_run = if dry { "dry run, " } else { "" };
                let message = format!(
                    "limiting requests, {dry_run}excess: {} by zone \"{}\"",
                    thousandths(excess),
                    zone.name
                );
                emit(limits.req_log_level, false, &message, log);
                return (!dry).then(|| crate::error_page::error_page(status(limits.req_status)));
            }
        };
        let threshold = limit.delay.saturating_mul(1000);
        if excess > threshold {
            let wait = (excess - threshold).saturating_mul(1000) / zone.rate_milli;
            if Duration::from_millis(wait) > delay.0 {
                delay = (Duration::from_millis(wait), excess, zone.name.as_str());
            }
        }
    }
    for (_, zone, key) in &checked[..checked.len().saturating_sub(1)] {
        let _ = zone.account(key, now, u64::MAX);
    }
    let (wait, excess, zone) = delay;
    if wait.is_zero() {
        log.limit_status.0 = PASSED;
        return None;
    }
    if limits.req_dry_run {
        log.limit_status.0 = DELAYED_DRY_RUN;
        return None;
    }
    log.limit_status.0 = DELAYED;
    let message = format!(
        "delaying request, excess: {}, by zone \"{zone}\"",
        thousandths(excess)
    );
    emit(limits.req_log_level, true, &message, log);
    tokio::time::sleep(wait).await;
    None
}

/// `1993` as nginx writes an excess: `1.993`.
fn thousandths(n: u64) -> String {
    format!("{}.{:03}", n / 1000, n % 1000)
}

fn limit_conn(
    zones: &Zones,
    limits: &Limits,
    log: &mut LogCtx,
    headers: &HeaderMap,
) -> Option<http::Response<ProxyBody>> {
    let mut slots = Vec::with_capacity(limits.conn.len());
    for limit in &limits.conn {
        let Some(zone) = zones.conn.get(&limit.zone) else {
            continue;
        };
        let key = log.vars(headers).expand(&zone.key);
        if key.is_empty() {
            continue;
        }
        let full = !zone.counts.contains_key(&key) && zone.counts.len() >= zone.capacity;
        let taken = !full && {
            let mut n = zone.counts.entry(key.clone()).or_insert(0);
            let free = *n < limit.max;
            if free {
                *n += 1;
            }
            free
        };
        if taken {
            let zone = Arc::clone(zone);
            slots.push(ConnSlot { zone, key });
            continue;
        }
        // Refused (dry run: let through uncounted, the rest not checked, as nginx).
        let dry = limits.conn_dry_run;
        log.limit_status.1 = if dry { REJECTED_DRY_RUN } else { REJECTED };
        let message = match (full, dry) {
            (true, _) => format!(
                "could not allocate node in limit_conn zone \"{}\"",
                zone.name
            ),
            (false, true) => format!("limiting connections, dry run, by zone \"{}\"", zone.name),
            (false, false) => format!("limiting connections by zone \"{}\"", zone.name),
        };
        emit(limits.conn_log_level, false, &message, log);
        if dry {
            log.limit_slots.append(&mut slots);
            return None;
        }
        // The slots taken so far go back as `slots` drops.
        return Some(crate::error_page::error_page(status(limits.conn_status)));
    }
    log.limit_status.1 = PASSED;
    log.limit_slots.append(&mut slots);
    None
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Logs `message` at `level` (`lower`: one level below, as nginx logs delays), with the
/// request's client, server, request line and host as nginx's error log names them.
fn emit(level: LimitLogLevel, lower: bool, message: &str, log: &LogCtx) {
    macro_rules! at {
        ($m:ident) => {
            crate::reqlog::request_event!($m, log.error_context(), "{message}")
        };
    }
    match (level, lower) {
        (LimitLogLevel::Error, false) => at!(error),
        (LimitLogLevel::Error, true) | (LimitLogLevel::Warn, false) => at!(warn),
        (LimitLogLevel::Warn, true) | (LimitLogLevel::Notice | LimitLogLevel::Info, false) => {
            at!(info)
        }
        (LimitLogLevel::Notice | LimitLogLevel::Info, true) => at!(debug),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(rate_milli: u64, capacity: usize) -> ReqZone {
        ReqZone {
            name: "one".into(),
            key: Template { parts: Vec::new() },
            rate_milli,
            capacity,
            states: DashMap::new(),
            spec: String::new(),
        }
    }

    #[test]
    fn the_bucket_drains_at_the_rate_as_nginx_counts_it() {
        let z = zone(2000, 100);
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // burst=2: the first request, then two in excess, then refused (not counted).
        assert_eq!(z.account("a", at(0), 2000), Ok(0));
        assert_eq!(z.account("a", at(0), 2000), Ok(1000));
        assert_eq!(z.account("a", at(0), 2000), Ok(2000));
        assert_eq!(z.account("a", at(0), 2000), Err(3000));
        // 2 r/s drains 1000 in 500 ms; 7 ms drain 14 (nginx's "excess: 0.993"-style).
        assert_eq!(z.account("a", at(500), 2000), Ok(2000));
        assert_eq!(z.excess("a", at(507)), 2986);
        assert_eq!(z.account("b", at(0), 0), Ok(0), "keys are apart");
        assert_eq!(z.account("b", at(100), 0), Err(800));
        assert_eq!(z.account("b", at(500), 0), Ok(0), "one on the rate");
        assert_eq!(z.account("b", at(993), 0), Err(14));
        // 30 r/m: 500 thousandths per second.
        let slow = zone(500, 100);
        assert_eq!(slow.account("k", at(0), 0), Ok(0));
        assert_eq!(slow.account("k", at(1999), 0), Err(1));
        assert_eq!(slow.account("k", at(2000), 0), Ok(0));
    }

    #[test]
    fn a_full_zone_forgets_drained_keys_then_the_oldest() {
        let z = zone(1000, 16);
        let t = Instant::now();
        for i in 0..16 {
            z.account(&format!("k{i}"), t + Duration::from_millis(i), 0)
                .ok();
        }
        assert_eq!(z.states.len(), 16);
        // All still hold excess 0 (the first request of each): drained, so dropped.
        z.account("new", t + Duration::from_millis(20), 0).ok();
        assert_eq!(z.states.len(), 1);
        for i in 0..15 {
            let at = t + Duration::from_millis(30);
            z.account(&format!("h{i}"), at, 5000).ok();
            z.account(&format!("h{i}"), at, 5000).ok();
        }
        assert_eq!(z.states.len(), 16);
        // Every key holds excess now: the least recently seen are dropped.
        z.account("newer", t + Duration::from_millis(31), 0).ok();
        assert!(z.states.len() <= 16, "{}", z.states.len());
        assert!(z.states.contains_key("newer"));
    }

    #[test]
    fn a_reload_that_keeps_a_zone_keeps_its_state() {
        let config = |rate_milli: u64| {
            let key = Template {
                parts: vec![hsmgate_config::nginx::TemplatePart::Var(
                    "reload_test".into(),
                )],
            };
            let location = hsmgate_config::Location {
                file: "/x".into(),
                line: 1,
                col: 1,
            };
            let mut zones = LimitZones::default();
            let zone = LimitReqZone {
                key,
                size: 1 << 20,
                rate_milli,
                location,
            };
            zones.req.insert("reload_test".into(), zone);
            zones
        };
        let running = Zones::build(&config(1000));
        let kept = Zones::build(&config(1000));
        assert!(Arc::ptr_eq(
            &running.req["reload_test"],
            &kept.req["reload_test"]
        ));
        let changed = Zones::build(&config(2000));
        assert!(!Arc::ptr_eq(
            &running.req["reload_test"],
            &changed.req["reload_test"]
        ));
        drop((running, kept, changed));
        let fresh = Zones::build(&config(1000));
        assert!(fresh.req["reload_test"].states.is_empty());
    }

    #[test]
    fn a_conn_slot_gives_its_count_back() {
        let zone = Arc::new(ConnZone {
            name: "addr".into(),
            key: Template { parts: Vec::new() },
            capacity: 10,
            counts: DashMap::new(),
            spec: String::new(),
        });
        zone.counts.insert("a".into(), 2);
        let slot = |key: &str| ConnSlot {
            zone: Arc::clone(&zone),
            key: key.into(),
        };
        drop(slot("a"));
        assert_eq!(zone.counts.get("a").map(|n| *n), Some(1));
        drop(slot("a"));
        assert!(zone.counts.is_empty(), "a key at zero is forgotten");
    }
}
