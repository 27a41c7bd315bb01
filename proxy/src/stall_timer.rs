//! A timeout on waits that costs nothing while there is progress: nginx's
//! `send_timeout` (a write that cannot go on) and `proxy_read_timeout` (an upstream that
//! sends nothing) run only while something waits, and start again after each step.
//!
//! A tokio timer costs a registration in the runtime's timer wheel and a removal when it
//! is dropped or moved, which on a keep-alive request through an upstream was about 1 µs of
//! CPU per timer. A [`StallTimer`] notes when a wait began (one clock read, once per wait)
//! and keeps one tokio timer for its owner's life (a client connection, an upstream
//! connection), set at the first wait and not moved on progress: when it fires for an
//! earlier wait it is set again for the current one, so a busy owner moves it at most
//! once per timeout.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When the current wait began, and the timer that ends it; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct StallTimer {
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait began (`None`: no wait since the last progress).
    since: Option<Instant>,
}

impl StallTimer {
    /// Progress: the current wait (if any) is over.
    pub(crate) fn progressed(&mut self) {
        self.since = None;
    }

    /// A wait that began at `at` (an upstream request counts from when it was sent, not
    /// from its first pending poll).
    pub(crate) fn begin(&mut self, at: Instant) {
        self.since = Some(at);
    }

    /// Something waits: `Ready` once the wait has lasted `timeout` (the wait is then
    /// over), `Pending` with `cx`'s waker registered for that moment otherwise.
    pub(crate) fn poll_waited(&mut self, cx: &mut Context<'_>, timeout: Duration) -> Poll<()> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let deadline = since + timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            // Set for a later moment (a longer timeout of an earlier wait): moved sooner.
            timer.as_mut().reset(deadline);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                self.since = None;
                return Poll::Ready(());
            }
            // Set for an earlier wait (or a longer one before): now for this one.
            timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poll `timer` in a task until it reports the wait over; how long that took.
    async fn wait_out(timer: &mut StallTimer, timeout: Duration) -> Duration {
        let t = Instant::now();
        std::future::poll_fn(|cx| timer.poll_waited(cx, timeout)).await;
        t.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_after_the_timeout_and_progress_restarts_the_clock() {
        let mut timer = StallTimer::default();
        let timeout = Duration::from_secs(60);
        assert_eq!(wait_out(&mut timer, timeout).await, timeout);
        // A second wait, after progress, gets the whole timeout again although the
        // tokio timer was set for the first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        timer.progressed();
        assert_eq!(wait_out(&mut timer, timeout).await, timeout);
        // A wait that began earlier ends that much sooner.
        timer.begin(Instant::now() - Duration::from_secs(20));
        assert_eq!(wait_out(&mut timer, timeout).await, Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_shorter_than_the_timeout_never_fire() {
        let mut timer = StallTimer::default();
        let timeout = Duration::from_secs(10);
        for _ in 0..20 {
            // Each wait lasts 9 s of a 10 s timeout, then progress.
            let waited = tokio::time::timeout(
                Duration::from_secs(9),
                std::future::poll_fn(|cx| timer.poll_waited(cx, timeout)),
            )
            .await;
            assert!(waited.is_err(), "a 9 s wait must not time out");
            timer.progressed();
        }
        // A longer timeout after a shorter one is honoured, and a shorter one after a
        // longer one (one upstream connection serves locations with different
        // `proxy_read_timeout`s).
        assert_eq!(
            wait_out(&mut timer, Duration::from_secs(30)).await,
            Duration::from_secs(30)
        );
        let waited = tokio::time::timeout(
            Duration::from_secs(1),
            std::future::poll_fn(|cx| timer.poll_waited(cx, Duration::from_secs(300))),
        )
        .await;
        assert!(waited.is_err());
        timer.progressed();
        assert_eq!(
            wait_out(&mut timer, Duration::from_secs(2)).await,
            Duration::from_secs(2)
        );
    }
}
