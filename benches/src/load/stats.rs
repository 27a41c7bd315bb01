//! Measurement state: the latency histogram (HDR, microseconds) of successful requests,
//! error counters by kind, and TLS handshake / resumption counters.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::error::ErrorKind;

/// Largest latency the histogram tracks exactly (larger values are clamped): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Statistics of one run (or part of it; parts are [merged](Stats::merge)).
#[derive(Debug, Clone)]
pub struct Stats {
    ok: u64,
    latency_us: Histogram<u64>,
    fixed: [u64; ErrorKind::FIXED.len()],
    http: BTreeMap<u16, u64>,
    handshakes: u64,
    resumed: u64,
    /// Time to a TLS alert from the server (a shed handshake), microseconds.
    alert_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Stats {
            ok: 0,
            // 3 significant digits, 1 µs .. 1 h.
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
            fixed: [0; ErrorKind::FIXED.len()],
            http: BTreeMap::new(),
            handshakes: 0,
            resumed: 0,
            alert_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records how long a request took to end in a TLS alert.
    pub fn record_alert(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.alert_us.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// The `q` quantile (0..=1) of the time to a TLS alert, milliseconds.
    pub fn alert_quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.alert_us.is_empty()).then(|| self.alert_us.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Records a successful request and its latency.
    pub fn record_ok(&mut self, latency: Duration) {
        self.ok += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Records a failed request.
    pub fn record_error(&mut self, kind: ErrorKind) {
        match kind.index() {
            Some(i) => self.fixed[i] += 1,
            None => {
                if let ErrorKind::Http(code) = kind {
                    *self.http.entry(code).or_insert(0) += 1;
                }
            }
        }
    }

    /// Records a completed TLS handshake, `resumed` if the session was resumed.
    pub fn record_handshake(&mut self, resumed: bool) {
        self.handshakes += 1;
        self.resumed += u64::from(resumed);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.ok += other.ok;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (a, b) in self.fixed.iter_mut().zip(other.fixed) {
            *a += b;
        }
        for (code, n) in &other.http {
            *self.http.entry(*code).or_insert(0) += n;
        }
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        let _ = self.alert_us.add(&other.alert_us);
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Resumed TLS handshakes.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Failed requests by kind name (kinds that did not occur are absent).
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, n) in ErrorKind::FIXED.iter().zip(self.fixed) {
            if n > 0 {
                out.insert(kind.name().into_owned(), n);
            }
        }
        for (code, n) in &self.http {
            out.insert(ErrorKind::Http(*code).name().into_owned(), *n);
        }
        out
    }

    /// Total failed requests.
    pub fn error_total(&self) -> u64 {
        self.fixed.iter().sum::<u64>() + self.http.values().sum::<u64>()
    }

    /// Latency at quantile `q` (0..=1) in milliseconds; `None` without successful requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Largest latency in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_us.max() as f64 / 1000.0)
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_us.mean() / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge() {
        let mut a = Stats::new();
        assert_eq!(a.quantile_ms(0.5), None);
        for ms in 1..=100u64 {
            a.record_ok(Duration::from_millis(ms));
        }
        let p50 = a.quantile_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        let p99 = a.quantile_ms(0.99).unwrap();
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
        assert!((a.max_ms().unwrap() - 100.0).abs() < 0.1);

        let mut b = Stats::new();
        b.record_ok(Duration::from_secs(2));
        b.record_error(ErrorKind::Timeout);
        b.record_error(ErrorKind::Http(503));
        b.record_error(ErrorKind::Http(503));
        b.record_handshake(true);
        b.record_handshake(false);
        a.merge(&b);
        assert_eq!(a.ok(), 101);
        assert!((a.max_ms().unwrap() - 2000.0).abs() < 2.0);
        assert_eq!(a.error_total(), 3);
        let e = a.errors();
        assert_eq!(e.get("timeout"), Some(&1));
        assert_eq!(e.get("http_503"), Some(&2));
        assert_eq!(e.len(), 2);
        assert_eq!((a.handshakes(), a.resumed()), (2, 1));
    }

    #[test]
    fn extremes_are_clamped() {
        let mut s = Stats::new();
        s.record_ok(Duration::ZERO);
        s.record_ok(Duration::from_secs(100_000));
        assert_eq!(s.ok(), 2);
        assert!(s.quantile_ms(0.0).unwrap() <= 0.002);
    }
}
