//! nginx's reusable connections: when the connection limit (`worker_connections` ×
//! `worker_processes`) is reached, idle client connections are closed to make room for
//! new ones, the oldest first, instead of new clients waiting in the kernel's backlog
//! for as long as idle ones choose to stay (up to `keepalive_timeout`).
//!
//! As nginx (`ngx_drain_connections`): a connection is idle when it is waiting for a
//! request (after its TLS handshake, or between keep-alive requests: no request head
//! part-way read, no answer in progress; HTTP/2: no stream open); each time the accept
//! loop finds the limit reached it closes up to an eighth of the idle connections (at
//! least one, at most 32), and warns at most once a second. A closed HTTP/1.1 connection
//! is closed at once; an HTTP/2 one gets GOAWAY. Connections in their TLS handshake,
//! with a request in progress or a tunnel open are never closed for room.
//!
//! Unlike nginx, established connections are not closed for room while at least half
//! of the connections are still in their TLS handshake: that is a flood of new
//! connections (most of which admission control sheds a moment later), and clients
//! that already paid for a signature keep their connections (issue 9's priority of
//! established connections). New connections then wait in the kernel's backlog until
//! handshakes end (shed, done, or at `ssl_handshake_timeout`).
//!
//! Connections are registered only while a limit is set ([`enable`]); the register is
//! one lock taken at a connection's HTTP start and end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::keepalive_limits::ConnLimits;

/// The most connections closed for room at once (nginx's 32).
const MOST_AT_ONCE: usize = 32;

static ON: AtomicBool = AtomicBool::new(false);
/// The connection limit (connections of every state).
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// The connections serving HTTP, by connection id (the order of their accept).
static CONNS: Mutex<BTreeMap<u64, Weak<ConnLimits>>> = Mutex::new(BTreeMap::new());

/// A connection limit of `limit` is set: connections register from now on.
pub(crate) fn enable(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
}

/// A connection in the register, until dropped.
#[derive(Debug)]
pub(crate) struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        conns().remove(&self.0);
    }
}

fn conns() -> std::sync::MutexGuard<'static, BTreeMap<u64, Weak<ConnLimits>>> {
    CONNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers connection `id` (while a limit is set).
pub(crate) fn register(id: u64, limits: &Arc<ConnLimits>) -> Option<Registered> {
    if !ON.load(Ordering::Relaxed) {
        return None;
    }
    conns().insert(id, Arc::downgrade(limits));
    Some(Registered(id))
}

/// The limit is reached with `free` slots left (none, or a few freed meanwhile): tells
/// the oldest idle connections to close, unless most connections are still in their
/// handshake (see the module documentation). Returns how many were told.
pub(crate) fn reclaim(free: usize) -> usize {
    let idle: Vec<Arc<ConnLimits>> = {
        let conns = conns();
        let in_use = LIMIT.load(Ordering::Relaxed).saturating_sub(free);
        if in_use.saturating_sub(conns.len()) * 2 >= in_use {
            return 0;
        }
        let idle: Vec<_> = conns
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| c.waiting_for_request())
            .collect();
        let n = (idle.len() / 8).clamp(1, MOST_AT_ONCE);
        idle.into_iter().take(n).collect()
    };
    for conn in &idle {
        conn.close_for_room();
    }
    idle.len()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::drain::Drain;

    fn conn() -> Arc<ConnLimits> {
        let drain = Drain::new();
        Arc::new(ConnLimits::new(
            Instant::now(),
            1000,
            Duration::from_secs(3600),
            [drain.watcher(), drain.watcher()],
        ))
    }

    /// The register is the process's: one test covers it (ids of its own).
    #[tokio::test]
    async fn the_oldest_idle_connections_are_told_to_close_busy_ones_never() {
        enable(1);
        let base = u64::MAX - 100;
        let conns: Vec<_> = (0..20).map(|_| conn()).collect();
        let registered: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| register(base + i as u64, c).expect("registered"))
            .collect();
        // The oldest is busy (an answer in progress), the next part-way through a head.
        let _busy = conns[0].stream();
        conns[1].head_begun().store(true, Ordering::Relaxed);
        // Other tests' connections may be registered too: only ours are looked at.
        let told = |c: &Arc<ConnLimits>| {
            let mut closed = std::pin::pin!(c.closed_for_room());
            let waker = std::task::Waker::noop();
            closed
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_ready()
        };
        // A flood of new connections: two in three slots held by handshakes (not
        // registered), so no established connection is closed for them.
        let registered_now = super::conns().len();
        enable(registered_now * 3);
        assert_eq!(reclaim(0), 0);
        assert!(conns.iter().all(|c| !told(c)));
        // Every slot held by an established connection: the oldest idle ones go.
        enable(registered_now);
        assert!(reclaim(0) >= 1);
        assert!(!told(&conns[0]) && !told(&conns[1]));
        assert!(told(&conns[2]), "the oldest idle connection");
        drop(registered);
        assert!(super::conns().range(base..).next().is_none());
    }
}
