//! Command-line arguments of `hsmgate-load` and the parsers of their values
//! (durations such as `10s`/`500ms`, rates, `-H 'Name: value'` headers).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use http::{HeaderName, HeaderValue};

/// What one "request" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// New TCP connection and full TLS handshake (no resumption) per request; `Connection: close`.
    Handshake,
    /// New TCP connection per request, resuming the TLS session (shared in-memory session store).
    Resume,
    /// HTTP/1.1 persistent connections, requests back to back on each.
    Keepalive,
    /// HTTP/2 (ALPN h2), `--streams` concurrent streams per connection.
    H2,
}

impl Mode {
    /// The mode's name as given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Handshake => "handshake",
            Mode::Resume => "resume",
            Mode::Keepalive => "keepalive",
            Mode::H2 => "h2",
        }
    }

    /// True for the modes that open a new connection per request.
    pub fn is_one_shot(self) -> bool {
        matches!(self, Mode::Handshake | Mode::Resume)
    }
}

/// Allowed TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V13,
    /// TLS 1.2 or 1.3.
    Any,
}

impl TlsVersion {
    /// The version as given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V12 => "1.2",
            TlsVersion::V13 => "1.3",
            TlsVersion::Any => "any",
        }
    }
}

/// One extra request header from `-H 'Name: value'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: HeaderName,
    /// Header value.
    pub value: HeaderValue,
}

/// Arguments of `hsmgate-load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hsmgate-load",
    version,
    about = "HTTPS load generator for hsmgate (TLS handshakes, resumption, keep-alive, HTTP/2)",
    after_help = "Without --rate: closed loop (--connections workers, requests back to back).\n\
                  With --rate R: open loop (R requests/s in total at fixed intervals; latency is \
                  measured from the scheduled send time).\n\
                  Example: taskset -c 1 hsmgate-load --mode handshake -c 64 -d 10s \
                  --cacert ca.pem https://127.0.0.1:8443/"
)]
pub struct Args {
    /// Target URL, https only, e.g. https://127.0.0.1:8443/path
    pub url: String,

    /// What one request is
    #[arg(long, value_enum, default_value_t = Mode::Handshake)]
    pub mode: Mode,

    /// Closed loop: concurrent workers (connections). Open loop, keepalive/h2: connections used
    #[arg(short = 'c', long, default_value_t = 10, value_parser = parse_count)]
    pub connections: usize,

    /// h2: concurrent streams per connection
    #[arg(long, default_value_t = 10, value_parser = parse_count)]
    pub streams: usize,

    /// Open loop: requests (handshakes) per second in total, at fixed intervals
    #[arg(short = 'r', long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Open loop: most requests in flight; a request that cannot start counts as `overflow`
    #[arg(long, default_value_t = 10_000, value_parser = parse_count)]
    pub max_inflight: usize,

    /// Measured duration, e.g. 10s, 500ms, 2m
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Warm-up before the measured period (its results are discarded)
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Per-request timeout
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// TLS versions to offer
    #[arg(long, value_enum, default_value_t = TlsVersion::Any)]
    pub tls: TlsVersion,

    /// SNI and certificate name (default: the URL's host)
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// PEM file with the CA certificate(s) to trust
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,

    /// Do not check the server certificate (handshake signatures are still verified)
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// Take a TLS alert from the start-up handshake as a reachable server (one that
    /// sheds every new handshake, e.g. with no HSM capacity left), not as an error
    #[arg(long)]
    pub alert_ok_at_start: bool,

    /// Worker threads of the tokio runtime (1: single-threaded, for pinning with taskset)
    #[arg(short = 't', long, default_value_t = 1, value_parser = parse_count)]
    pub threads: usize,

    /// Extra request header 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub headers: Vec<Header>,

    /// Print exactly one JSON object on stdout instead of the human summary
    #[arg(long)]
    pub json: bool,
}

/// Parses a duration: a non-negative number with a unit `us`, `ms`, `s`, `m` or `h`
/// (a bare number means seconds), e.g. `10s`, `500ms`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration '{s}': expected a number with a unit (us, ms, s, m, h), e.g. 10s or 500ms"
        )
    };
    if num.is_empty() {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// Like [`parse_duration`], but zero is refused.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration '{s}': must be greater than zero"));
    }
    Ok(d)
}

/// Parses a rate in requests per second: a finite number greater than zero.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid rate '{s}': must be a positive number of requests per second");
    let r: f64 = s.trim().parse().map_err(|_| bad())?;
    if !r.is_finite() || r <= 0.0 {
        return Err(bad());
    }
    Ok(r)
}

/// Parses a count that must be at least 1.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid count '{s}': must be a whole number of at least 1"
        )),
    }
}

/// Parses `Name: value` into a header.
pub fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid header '{s}': expected 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name in '{s}'"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("invalid header value in '{s}'"))?;
    Ok(Header { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "s", "ten", "10x", "-1s", "1..2s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_positive_duration("0ms").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("10x"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000").unwrap(), 1000.0);
        assert_eq!(parse_rate("2.5").unwrap(), 2.5);
        for bad in ["0", "-5", "abc", "", "inf", "NaN", "0.0"] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains("invalid rate"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn headers_and_counts() {
        let h = parse_header("X-Test:  a b ").unwrap();
        assert_eq!(h.name.as_str(), "x-test");
        assert_eq!(h.value, "a b");
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert_eq!(parse_count("4").unwrap(), 4);
        assert!(parse_count("0").is_err());
    }

    #[test]
    fn cli_parses() {
        let a = Args::try_parse_from([
            "hsmgate-load",
            "--mode",
            "h2",
            "--streams",
            "4",
            "--tls",
            "1.3",
            "-H",
            "X-A: 1",
            "-H",
            "X-B: 2",
            "--rate",
            "100",
            "https://127.0.0.1:8443/",
        ])
        .unwrap();
        assert_eq!(a.mode, Mode::H2);
        assert_eq!(a.tls, TlsVersion::V13);
        assert_eq!(a.headers.len(), 2);
        assert_eq!(a.rate, Some(100.0));
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert!(Args::try_parse_from(["hsmgate-load", "--rate", "0", "https://x/"]).is_err());
        assert!(
            Args::try_parse_from(["hsmgate-load", "--insecure", "--cacert", "a", "https://x/"])
                .is_err()
        );
    }
}
