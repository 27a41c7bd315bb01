//! `ssl_session_timeout` (TOML `[tls] session_timeout_s`) enforced on resumption, for
//! sessions in the cache and in tickets alike, as nginx (OpenSSL) does: a session older
//! than the timeout is not resumed, and the client gets a full handshake.
//!
//! rustls' own ticketer rotates its keys every 6 hours (so its tickets resume for up to
//! 12), and its session cache keeps entries until they are pushed out; neither knows the
//! configured timeout. So both are wrapped: each session is stored, or sealed in its
//! ticket, behind the time it was made (seconds since the Unix epoch, so that instances
//! sharing ticket key files agree), and refused once older than the timeout. The
//! lifetime hint sent with each ticket is the timeout too.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::{ProducesTickets, StoresServerSessions};

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `value` stamped with the time.
fn stamp(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&now().to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The value behind a stamp, if it is at most `lifetime` seconds old.
fn fresh(stamped: Vec<u8>, lifetime: u32) -> Option<Vec<u8>> {
    let made = u64::from_be_bytes(stamped.get(..8)?.try_into().ok()?);
    (now().saturating_sub(made) <= u64::from(lifetime)).then(|| stamped[8..].to_vec())
}

/// Tickets that resume for `lifetime` seconds.
#[derive(Debug)]
pub(crate) struct TimedTickets {
    inner: Arc<dyn ProducesTickets>,
    lifetime: u32,
}

impl TimedTickets {
    pub(crate) fn new(inner: Arc<dyn ProducesTickets>, lifetime: u32) -> Arc<TimedTickets> {
        Arc::new(TimedTickets { inner, lifetime })
    }
}

impl ProducesTickets for TimedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&stamp(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        fresh(self.inner.decrypt(cipher)?, self.lifetime)
    }
}

/// A session cache whose sessions resume for `lifetime` seconds.
#[derive(Debug)]
pub(crate) struct TimedStore {
    inner: Arc<dyn StoresServerSessions>,
    lifetime: u32,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn StoresServerSessions>, lifetime: u32) -> Arc<TimedStore> {
        Arc::new(TimedStore { inner, lifetime })
    }
}

impl StoresServerSessions for TimedStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, stamp(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(self.inner.get(key)?, self.lifetime)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(self.inner.take(key)?, self.lifetime)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_resumes_within_its_lifetime_and_not_after() {
        let store = TimedStore::new(rustls::server::ServerSessionMemoryCache::new(16), 300);
        assert!(store.put(b"id".to_vec(), b"state".to_vec()));
        assert_eq!(store.get(b"id").as_deref(), Some(&b"state"[..]));
        // One made 301 s ago is stale.
        let mut old = (now() - 301).to_be_bytes().to_vec();
        old.extend_from_slice(b"state");
        assert_eq!(fresh(old, 300), None);
        let tickets = TimedTickets::new(
            rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            10,
        );
        assert_eq!(tickets.lifetime(), 10);
        let sealed = tickets.encrypt(b"state").expect("sealed");
        assert_eq!(tickets.decrypt(&sealed).as_deref(), Some(&b"state"[..]));
        assert_eq!(fresh(b"short".to_vec(), 10), None, "no stamp");
    }
}
