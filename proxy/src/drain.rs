//! The graceful drain of client connections: one signal that every connection
//! watches, and a wait until all of them have ended.
//!
//! Each connection holds a [`Watcher`] for its whole life; [`Drain::shutdown`] tells
//! them all to finish (HTTP/1.1: the answer in progress says `Connection: close`, or an
//! idle connection is closed; HTTP/2: GOAWAY, the open streams completed) and resolves
//! once the last watcher is dropped. A configuration's generation has a drain of its
//! own, only signalled ([`Drain::signal`]) when a reload replaces it: its connections
//! finish as nginx's old workers finish theirs, and their clients come back to the
//! new configuration. It is a
//! `tokio::sync::watch` channel: the signal is its value, the count its receivers.
//! hyper-util's `GracefulShutdown` does the same but hides its signal inside a future
//! of its own that takes the connection, so a connection could not also be closed
//! for its own reasons (`keepalive_requests`, see `keepalive_limits`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The sender's side: hands out watchers, then signals and waits.
#[derive(Debug)]
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    /// The same, read with one load per answer (`Watcher::is_draining`).
    begun: Arc<AtomicBool>,
}

/// One connection's view of the drain (a clone counts as one more).
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    signal: watch::Receiver<bool>,
    begun: Arc<AtomicBool>,
}

impl Drain {
    pub(crate) fn new() -> Drain {
        Drain {
            signal: watch::Sender::new(false),
            begun: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A watcher for one more connection: it counts until dropped.
    pub(crate) fn watcher(&self) -> Watcher {
        Watcher {
            signal: self.signal.subscribe(),
            begun: Arc::clone(&self.begun),
        }
    }

    /// Tells every connection to finish.
    pub(crate) fn signal(&self) {
        self.begun.store(true, Ordering::Release);
        self.signal.send_replace(true);
    }

    /// Whether [`Drain::signal`] was called.
    pub(crate) fn is_signalled(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Tells every connection to finish, then waits until all have ended.
    pub(crate) async fn shutdown(self) {
        self.signal();
        self.signal.closed().await;
    }
}

impl Watcher {
    /// Whether the drain has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Resolves once the drain has begun (never, if the drain was dropped without
    /// one: the process is stopping at once then).
    pub(crate) async fn draining(&mut self) {
        if self.signal.wait_for(|&drain| drain).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_signals_every_watcher_and_waits_for_the_last() {
        let drain = Drain::new();
        let mut a = drain.watcher();
        let mut b = drain.watcher();
        // Nothing is signalled before the drain.
        assert!(!a.is_draining());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), a.draining())
                .await
                .is_err()
        );
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            drain.shutdown().await;
            let _ = done_tx.send(());
        });
        a.draining().await;
        b.draining().await;
        assert!(a.is_draining() && b.is_draining());
        drop(a);
        // One connection still open: the drain is not over.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(done_rx.try_recv().is_err());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("drained once the last watcher is dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn a_signal_alone_waits_for_nobody() {
        let drain = Drain::new();
        let mut w = drain.watcher();
        drain.signal();
        w.draining().await;
        // A watcher taken after the signal sees it at once.
        assert!(drain.watcher().is_draining());
    }

    #[tokio::test]
    async fn a_drain_with_no_connections_ends_at_once() {
        tokio::time::timeout(Duration::from_secs(5), Drain::new().shutdown())
            .await
            .unwrap();
    }
}
