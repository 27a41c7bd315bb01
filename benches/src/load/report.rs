//! The run summary: a [`Report`] printed for humans or as one JSON object (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::Outcome;
use super::cli::{Args, Mode};
use super::stats::Stats;

/// The result of a run. Serialized as the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `handshake`, `resume`, `keepalive` or `h2`.
    pub mode: &'static str,
    /// Target URL.
    pub url: String,
    /// Offered TLS versions: `1.2`, `1.3` or `any`.
    pub tls: &'static str,
    /// `closed` or `open`.
    #[serde(rename = "loop")]
    pub loop_kind: &'static str,
    /// Measured wall time in seconds: from the end of the warm-up until the last measured
    /// request finished.
    pub duration_s: f64,
    /// Warm-up in seconds (not measured).
    pub warmup_s: f64,
    /// Successful requests (2xx/3xx, complete response).
    pub ok: u64,
    /// Failed requests by kind (`connect_refused`, `reset`, `tls_alert`, `http_503`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Successful requests (in handshake/resume: handshakes) per second of `duration_s`.
    pub rate: f64,
    /// Open loop: the requested rate; `null` in closed loop.
    pub offered_rate: Option<f64>,
    /// Latency percentiles of successful requests in ms (`null` without any).
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// Median time to a TLS alert (shed handshakes), ms.
    pub alert_p50_ms: Option<f64>,
    /// 99th percentile of the time to a TLS alert, ms.
    pub alert_p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Mean.
    pub mean_ms: Option<f64>,
    /// TLS handshakes completed in the measured period.
    pub handshakes: u64,
    /// resume mode: how many of `handshakes` resumed a session; `null` in other modes.
    pub resumed: Option<u64>,
    /// Connections (closed-loop workers, or keepalive/h2 connections); open-loop
    /// handshake/resume: the peak of concurrent connections.
    pub connections: u64,
    /// h2: streams per connection; `null` in other modes.
    pub streams: Option<u64>,
    /// Worker threads of the runtime.
    pub threads: u64,
}

impl Report {
    pub(crate) fn new(args: &Args, outcome: &Outcome) -> Self {
        Self::from_stats(args, &outcome.stats, outcome.measured, outcome.connections)
    }

    /// Builds the report of a run with arguments `args` from its statistics.
    pub fn from_stats(args: &Args, stats: &Stats, measured: Duration, connections: u64) -> Self {
        let secs = measured.as_secs_f64();
        let rate = if secs > 0.0 {
            stats.ok() as f64 / secs
        } else {
            0.0
        };
        let ms = |v: Option<f64>| v.map(|v| round(v, 1000.0));
        Report {
            mode: args.mode.as_str(),
            url: args.url.clone(),
            tls: args.tls.as_str(),
            loop_kind: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            duration_s: round(secs, 1000.0),
            warmup_s: round(args.warmup.as_secs_f64(), 1000.0),
            ok: stats.ok(),
            errors: stats.errors(),
            error_total: stats.error_total(),
            rate: round(rate, 100.0),
            offered_rate: args.rate,
            p50_ms: ms(stats.quantile_ms(0.5)),
            p90_ms: ms(stats.quantile_ms(0.9)),
            p99_ms: ms(stats.quantile_ms(0.99)),
            p999_ms: ms(stats.quantile_ms(0.999)),
            alert_p50_ms: ms(stats.alert_quantile_ms(0.5)),
            alert_p99_ms: ms(stats.alert_quantile_ms(0.99)),
            max_ms: ms(stats.max_ms()),
            mean_ms: ms(stats.mean_ms()),
            handshakes: stats.handshakes(),
            resumed: (args.mode == Mode::Resume).then_some(stats.resumed()),
            connections,
            streams: (args.mode == Mode::H2).then_some(args.streams as u64),
            threads: args.threads as u64,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human summary (several lines).
    pub fn human(&self) -> String {
        let mut out = String::new();
        let conns = match self.streams {
            Some(s) => format!("{} connections x {s} streams", self.connections),
            None if self.loop_kind == "open" && matches!(self.mode, "handshake" | "resume") => {
                format!("peak {} concurrent connections", self.connections)
            }
            None => format!("{} connections", self.connections),
        };
        let _ = writeln!(
            out,
            "hsmgate-load {} {} (TLS {}, {} loop, {}, {} thread{})",
            self.mode,
            self.url,
            self.tls,
            self.loop_kind,
            conns,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "  measured    {:.2} s (after {:.2} s warm-up)",
            self.duration_s, self.warmup_s
        );
        let what = if matches!(self.mode, "handshake" | "resume") {
            "handshakes/s"
        } else {
            "requests/s"
        };
        let _ = writeln!(
            out,
            "  requests    {} ok, {} errors: {:.1} {what}",
            self.ok, self.error_total, self.rate
        );
        if let Some(offered) = self.offered_rate {
            let _ = writeln!(out, "  offered     {offered:.1} requests/s");
        }
        match self.resumed {
            Some(resumed) => {
                let pct = if self.handshakes > 0 {
                    100.0 * resumed as f64 / self.handshakes as f64
                } else {
                    0.0
                };
                let _ = writeln!(
                    out,
                    "  handshakes  {}, resumed {resumed} ({pct:.1}%)",
                    self.handshakes
                );
            }
            None => {
                let _ = writeln!(out, "  handshakes  {}", self.handshakes);
            }
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors      {}", list.join(", "));
        }
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "  latency ms  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            f(self.p50_ms),
            f(self.p90_ms),
            f(self.p99_ms),
            f(self.p999_ms),
            f(self.max_ms),
            f(self.mean_ms)
        );
        out
    }
}

fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::load::error::ErrorKind;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["hsmgate-load"];
        v.extend_from_slice(extra);
        v.push("https://127.0.0.1:8443/");
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut stats = Stats::new();
        for _ in 0..1000 {
            stats.record_ok(Duration::from_millis(2));
            stats.record_handshake(true);
        }
        stats.record_handshake(false);
        stats.record_error(ErrorKind::Reset);
        stats.record_error(ErrorKind::Http(503));
        let a = args(&["--mode", "resume", "--rate", "500"]);
        let r = Report::from_stats(&a, &stats, Duration::from_secs(2), 7);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for key in [
            "mode",
            "duration_s",
            "ok",
            "errors",
            "rate",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "resumed",
            "offered_rate",
            "connections",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["mode"], "resume");
        assert_eq!(v["loop"], "open");
        assert_eq!(v["ok"], 1000);
        assert_eq!(v["rate"], 500.0);
        assert_eq!(v["offered_rate"], 500.0);
        assert_eq!(v["resumed"], 1000);
        assert_eq!(v["handshakes"], 1001);
        assert_eq!(v["errors"]["reset"], 1);
        assert_eq!(v["errors"]["http_503"], 1);
        assert_eq!(v["error_total"], 2);
        assert_eq!(v["connections"], 7);
        assert_eq!(v["streams"], serde_json::Value::Null);
        let p50 = v["p50_ms"].as_f64().unwrap();
        assert!((p50 - 2.0).abs() < 0.01, "{p50}");
        assert!(r.human().contains("resumed 1000 (99.9%)"), "{}", r.human());
    }

    #[test]
    fn closed_loop_without_successes() {
        let a = args(&["--mode", "h2", "--streams", "3"]);
        let r = Report::from_stats(&a, &Stats::new(), Duration::from_secs(1), 2);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["offered_rate"], serde_json::Value::Null);
        assert_eq!(v["resumed"], serde_json::Value::Null);
        assert_eq!(v["p99_ms"], serde_json::Value::Null);
        assert_eq!(v["streams"], 3);
        assert_eq!(v["rate"], 0.0);
        assert_eq!(v["errors"], serde_json::json!({}));
        assert!(r.human().contains("p50 -"));
    }
}
