//! nginx's `limit_rate` and `limit_rate_after`: an answer's body sent to the client no
//! faster than a rate, after a first part sent at once.
//!
//! nginx's write filter lets a request have sent, by second `t` of its answer,
//! `rate × (t + 1) + after` bytes: the first second's worth goes at once, then the body
//! follows at the rate. [`LimitRate`] does the same on the body's frames: a data frame
//! larger than what may go now is split, and the rest waits on a timer until it may.
//! The limit is per request (two requests, or two HTTP/2 streams, get twice the rate),
//! as in nginx. Only the body counts (nginx counts the head's bytes too, a few hundred).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::ProxyBody;

/// What `limit_rate` and `limit_rate_after` set for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Bytes per second; 0 is no limit.
    pub per_second: u64,
    /// Bytes sent before the limit applies.
    pub after: u64,
}

/// An answer's body, sent at most at [`Rate`] (see the module documentation).
pub(crate) struct LimitRate {
    inner: ProxyBody,
    rate: Rate,
    start: Instant,
    sent: u64,
    /// The part of a data frame that could not go yet.
    held: Option<Bytes>,
    /// Until the held part may go.
    wait: Option<Pin<Box<Sleep>>>,
}

impl LimitRate {
    /// `body`, limited to `rate`; the body itself when there is no limit.
    pub(crate) fn wrap(body: ProxyBody, rate: Rate) -> ProxyBody {
        if rate.per_second == 0 || body.is_end_stream() {
            return body;
        }
        http_body_util::BodyExt::boxed(LimitRate {
            inner: body,
            rate,
            start: Instant::now(),
            sent: 0,
            held: None,
            wait: None,
        })
    }

    /// How many bytes may go at `now`: nginx's `rate × (t + 1) − (sent − after)`.
    fn allowed(&self, now: Instant) -> i128 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64() + 1.0;
        let budget = (self.rate.per_second as f64 * elapsed) as i128 + i128::from(self.rate.after);
        budget - i128::from(self.sent)
    }
}

impl Body for LimitRate {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(wait) = &mut this.wait {
                ready!(wait.as_mut().poll(cx));
                this.wait = None;
            }
            let mut data = match this.held.take() {
                Some(data) => data,
                None => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => data,
                        Ok(empty) => return Poll::Ready(Some(Ok(Frame::data(empty)))),
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    other => return Poll::Ready(other),
                },
            };
            let now = Instant::now();
            let allowed = this.allowed(now);
            if allowed <= 0 {
                // Until a millisecond past the moment the first byte may go, as nginx
                // sets its timer (`delay = -limit × 1000 / rate + 1` ms).
                let secs = (-allowed) as f64 / this.rate.per_second as f64;
                let delay = Duration::from_secs_f64(secs) + Duration::from_millis(1);
                this.held = Some(data);
                this.wait = Some(Box::pin(tokio::time::sleep_until(now + delay)));
                continue;
            }
            if data.len() as i128 > allowed {
                let rest = data.split_off(allowed as usize);
                this.held = Some(rest);
            }
            this.sent += data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |h| h.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn body(len: usize) -> ProxyBody {
        Full::new(Bytes::from(vec![b'x'; len]))
            .map_err(|never| match never {})
            .boxed()
    }

    /// When each byte of the answer arrived, on a paused clock, in whole milliseconds.
    async fn arrivals(mut body: ProxyBody) -> Vec<(u64, usize)> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            seen.push((start.elapsed().as_millis() as u64, data.len()));
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_second_at_once_then_at_the_rate() {
        let rate = Rate {
            per_second: 1000,
            after: 0,
        };
        let seen = arrivals(LimitRate::wrap(body(3500), rate)).await;
        assert_eq!(seen[0], (0, 1000), "{seen:?}");
        let total: usize = seen.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 3500);
        // 2,500 bytes more at 1,000/s: done 2.5 s later (a millisecond per wait more).
        let last = seen.last().unwrap().0;
        assert!((2500..2600).contains(&last), "{seen:?}");
        // Never ahead of nginx's budget.
        let mut sent = 0;
        for (at, n) in &seen {
            sent += n;
            assert!(sent as u64 <= 1000 * (at + 1000) / 1000 + 1, "{seen:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limit_rate_after_goes_first_at_once() {
        let rate = Rate {
            per_second: 1000,
            after: 5000,
        };
        let seen = arrivals(LimitRate::wrap(body(7000), rate)).await;
        assert_eq!(seen[0], (0, 6000), "{seen:?}");
        assert!((1000..1100).contains(&seen.last().unwrap().0), "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_is_the_body_itself() {
        let rate = Rate {
            per_second: 0,
            after: 0,
        };
        let seen = arrivals(LimitRate::wrap(body(1 << 20), rate)).await;
        assert_eq!(seen, [(0, 1 << 20)]);
    }

    #[tokio::test(start_paused = true)]
    async fn size_hint_counts_what_is_held() {
        let rate = Rate {
            per_second: 100,
            after: 0,
        };
        let mut b = LimitRate::wrap(body(250), rate);
        assert_eq!(b.size_hint().exact(), Some(250));
        let first = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(b.size_hint().exact(), Some(150));
        assert!(!b.is_end_stream());
    }
}
