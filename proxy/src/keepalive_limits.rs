//! nginx's `keepalive_requests` (default 1000) and `keepalive_time` (default 1 h) for
//! one client connection: the answer to its last request, or the first answer after
//! its time, closes it. So does the first answer after a drain began (`drain`: the
//! process's, on SIGQUIT/SIGTERM, or its configuration's, replaced by a reload).
//!
//! As nginx: HTTP/1.x answers that last request with `Connection: close` (hyper then
//! closes after it, and a client never sends a request the server will not read);
//! HTTP/2 sends GOAWAY and completes the streams already open (the connection's
//! driver in `conn` calls hyper's graceful shutdown when [`ConnLimits::spent`]
//! resolves). Long-lived connections are thereby spread again across the instances
//! behind a load balancer, and a connection's memory is given back now and then.
//! The limits are the address's default server's, as for the connection's other
//! client limits (nginx applies a location's).
//!
//! `keepalive_timeout` for HTTP/2 too (hyper's HTTP/1.1 has its own): a connection
//! with no stream open for that long gets GOAWAY and closes, as from nginx since 1.19.7
//! ([`ConnLimits::idle`]; each stream is counted open until its answer's body is done,
//! [`ConnLimits::stream`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, Version, header};
use tokio::sync::Notify;

use crate::drain::Watcher;

/// How long a connection finishing late must have had no request in progress, and how
/// often that is looked at ([`ConnLimits::finished_late`]).
const QUIET: Duration = Duration::from_millis(100);
const QUIET_POLL: Duration = Duration::from_millis(50);

/// One connection's count of requests, its start, and its limits.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    requests: AtomicU64,
    started: Instant,
    max_requests: u64,
    max_time: Duration,
    spent: Notify,
    /// The process's drain and the connection's configuration's.
    drains: [Watcher; 2],
    /// Requests open, HTTP/2 streams or HTTP/1.x requests (from the request to its
    /// answer's end).
    streams: AtomicUsize,
    /// When the last of them ended (milliseconds after `started`).
    last_stream_end: AtomicU64,
    /// An HTTP/1.x request head is part-way read (set by the connection's `H1Guard`).
    head_begun: Arc<AtomicBool>,
    /// Told to close to make room for a new connection (`reusable`).
    for_room: Notify,
    /// Woken when the last open request ends ([`ConnLimits::served_and_idle`]).
    quiet: Notify,
}

impl ConnLimits {
    pub(crate) fn new(
        started: Instant,
        max_requests: u64,
        max_time: Duration,
        drains: [Watcher; 2],
    ) -> ConnLimits {
        ConnLimits {
            requests: AtomicU64::new(0),
            started,
            max_requests,
            max_time,
            spent: Notify::new(),
            drains,
            streams: AtomicUsize::new(0),
            last_stream_end: AtomicU64::new(0),
            head_begun: Arc::default(),
            for_room: Notify::new(),
            quiet: Notify::new(),
        }
    }

    /// Resolves once the connection has served a request and waits for the next (none
    /// in progress, no head part-way read): the moment a drain or a reload may close
    /// it without losing a request that is on its way. A new connection is left to send
    /// its first request (which is answered, and its answer closes the connection);
    /// one with a request in progress finishes it first.
    pub(crate) async fn served_and_idle(&self) {
        loop {
            let quiet = self.quiet.notified();
            tokio::pin!(quiet);
            quiet.as_mut().enable();
            if self.requests.load(Ordering::Acquire) > 0 && self.waiting_for_request() {
                return;
            }
            quiet.await;
        }
    }

    /// The flag the connection's request-head reader sets while a head is part-way read.
    pub(crate) fn head_begun(&self) -> &Arc<AtomicBool> {
        &self.head_begun
    }

    /// Whether the connection waits for a request: none in progress (no answer being
    /// sent, no HTTP/2 stream open, no head part-way read).
    pub(crate) fn waiting_for_request(&self) -> bool {
        self.streams.load(Ordering::Acquire) == 0 && !self.head_begun.load(Ordering::Acquire)
    }

    /// Since when no request has been in progress (the last answer's end, or the
    /// connection's start); None while one is.
    pub(crate) fn quiet_since(&self) -> Option<Instant> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ended = self.last_stream_end.load(Ordering::Acquire);
        Some(self.started + Duration::from_millis(ended))
    }

    /// Tells the connection to close to make room (`reusable`).
    pub(crate) fn close_for_room(&self) {
        self.for_room.notify_one();
    }

    /// Resolves once the connection has been told to close to make room.
    pub(crate) async fn closed_for_room(&self) {
        self.for_room.notified().await;
    }

    /// A request begun (an HTTP/2 stream, or an HTTP/1.x request): counted open until
    /// the guard is dropped (when its answer has been sent: `reqlog::LoggedBody`).
    pub(crate) fn stream(self: &Arc<Self>) -> StreamOpen {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamOpen(Arc::clone(self))
    }

    /// Resolves when a connection told to finish at `since` (HTTP/2: a GOAWAY and a PING
    /// whose acknowledgement lets the final GOAWAY go) has taken `grace` without
    /// finishing, and then either has no request in progress (for [`QUIET`]) or has
    /// begun more than `overstay` requests since the grace ended. h2 waits for the PING's
    /// acknowledgement without a limit, so a client that never sends it would keep the
    /// connection, its slot, and its old configuration, open for good; nginx closes an
    /// idle HTTP/2 connection at once.
    pub(crate) async fn finished_late(&self, since: Instant, grace: Duration, overstay: u64) {
        tokio::time::sleep_until((since + grace).into()).await;
        let base = self.requests.load(Ordering::Relaxed);
        let mut quiet_polls = 0;
        loop {
            quiet_polls = match self.waiting_for_request() {
                true => quiet_polls + 1,
                false => 0,
            };
            if quiet_polls * QUIET_POLL >= QUIET
                || self.requests.load(Ordering::Relaxed).saturating_sub(base) > overstay
            {
                return;
            }
            tokio::time::sleep(QUIET_POLL).await;
        }
    }

    /// Resolves once the connection has had no stream open for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.quiet_since().unwrap_or_else(Instant::now) + timeout;
            if Instant::now() >= deadline && self.quiet_since().is_some() {
                return;
            }
            tokio::time::sleep_until(deadline.max(Instant::now()).into()).await;
        }
    }

    /// Counts one request: its number on the connection (the first is 1; nginx's
    /// `$connection_requests`), and whether the connection may serve no more after it.
    pub(crate) fn count(&self) -> (u64, bool) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        (
            n,
            n >= self.max_requests || self.started.elapsed() >= self.max_time,
        )
    }

    /// Whether a drain has begun: the answer in progress is the connection's last.
    pub(crate) fn draining(&self) -> bool {
        self.drains.iter().any(Watcher::is_draining)
    }

    /// Whether a reload has retired the connection's configuration.
    pub(crate) fn retired(&self) -> bool {
        self.drains[1].is_draining()
    }

    /// Makes the answer to a connection's last request close it: `Connection: close`
    /// on HTTP/1.x (not on a `101`, whose connection becomes the tunnel), GOAWAY on
    /// HTTP/2.
    pub(crate) fn close_after<B>(&self, version: Version, response: &mut Response<B>) {
        if version == Version::HTTP_2 {
            self.spent.notify_one();
        } else if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// Whether an HTTP/1.0 client's answer is delimited by the close: a body of no
    /// known length (an upstream's chunked answer) cannot be framed for HTTP/1.0 any
    /// other way. The answer then says `Connection: close` (as nginx's does), not the
    /// `keep-alive` the client asked for, which hyper would send before closing.
    pub(crate) fn close_delimited<B: hyper::body::Body>(
        version: Version,
        response: &Response<B>,
    ) -> bool {
        version == Version::HTTP_10
            && !crate::body::bodyless(response.status())
            && !response.headers().contains_key(header::CONTENT_LENGTH)
            && response.body().size_hint().exact().is_none()
    }

    /// Resolves once an HTTP/2 connection has served its last request.
    pub(crate) async fn spent(&self) {
        self.spent.notified().await;
    }
}

/// One HTTP/2 stream counted open ([`ConnLimits::stream`]).
#[derive(Debug)]
pub(crate) struct StreamOpen(Arc<ConnLimits>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        let limits = &self.0;
        let now = u64::try_from(limits.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        limits.last_stream_end.fetch_max(now, Ordering::Release);
        if limits.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            limits.quiet.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;

    fn limits(started: Instant, max_requests: u64, max_time: Duration) -> ConnLimits {
        let drain = Drain::new();
        ConnLimits::new(
            started,
            max_requests,
            max_time,
            [drain.watcher(), drain.watcher()],
        )
    }

    #[test]
    fn the_last_request_is_the_nth_or_the_first_after_the_time() {
        let l = limits(Instant::now(), 3, Duration::from_secs(3600));
        assert_eq!(
            [l.count(), l.count(), l.count()],
            [(1, false), (2, false), (3, true)]
        );
        let old = Instant::now() - Duration::from_secs(2);
        let l = limits(old, 1000, Duration::from_secs(1));
        assert!(l.count().1);
    }

    #[test]
    fn http1_answers_say_close_but_a_101_does_not() {
        let l = limits(Instant::now(), 1, Duration::from_secs(1));
        let mut ok = Response::new(());
        l.close_after(Version::HTTP_11, &mut ok);
        assert_eq!(ok.headers()[header::CONNECTION], "close");
        let mut upgrade = Response::new(());
        *upgrade.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        l.close_after(Version::HTTP_11, &mut upgrade);
        assert!(upgrade.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn http2_is_told_to_go_away() {
        let l = limits(Instant::now(), 1, Duration::from_secs(1));
        let mut ok = Response::new(());
        l.close_after(Version::HTTP_2, &mut ok);
        assert!(ok.headers().get(header::CONNECTION).is_none());
        // The notification is kept until the connection's driver looks.
        tokio::time::timeout(Duration::from_secs(1), l.spent())
            .await
            .unwrap();
    }

    #[test]
    fn either_drain_makes_the_answer_the_last() {
        let (process, generation) = (Drain::new(), Drain::new());
        let l = ConnLimits::new(
            Instant::now(),
            1000,
            Duration::from_secs(3600),
            [process.watcher(), generation.watcher()],
        );
        assert!(!l.draining());
        generation.signal();
        assert!(l.draining());
    }
}
