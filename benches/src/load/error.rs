//! Errors: [`LoadError`] for problems that stop the run before it starts, and [`ErrorKind`]
//! for the classification of failed requests (counted, not fatal).

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A problem that prevents the load test from running.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The URL could not be parsed or has no host.
    #[error("invalid URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is not https.
    #[error("URL '{0}' is not https: hsmgate-load only speaks TLS (use https://host:port/path)")]
    NotHttps(String),
    /// `--server-name` (or the URL host) is not a valid DNS name or IP address.
    #[error("invalid server name '{0}'")]
    BadServerName(String),
    /// The CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    CaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA file is not valid PEM.
    #[error("CA file {} is not valid PEM: {reason}", path.display())]
    CaParse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file holds no certificate.
    #[error("CA file {} contains no PEM certificates", path.display())]
    CaEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file was rejected as trust anchor.
    #[error("CA file {}: certificate rejected: {source}", path.display())]
    CaBad {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// Neither `--cacert` nor `--insecure` was given.
    #[error("no trust anchors: pass --cacert FILE (PEM) or --insecure")]
    NoTrust,
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The start-up TCP connection failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Address tried.
        addr: String,
        /// Why (e.g. "connection refused").
        reason: String,
    },
    /// The start-up TLS handshake failed.
    #[error("TLS handshake with {addr} (server name {name}) failed: {reason}")]
    Handshake {
        /// Address tried.
        addr: String,
        /// SNI / certificate name used.
        name: String,
        /// Why.
        reason: String,
    },
    /// `--mode h2` but the server did not select h2 by ALPN.
    #[error("server at {0} did not negotiate HTTP/2 (ALPN h2); try --mode keepalive")]
    NoH2(String),
    /// The tokio runtime could not be started.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(io::Error),
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// TCP connect refused.
    ConnectRefused,
    /// TCP connect failed otherwise.
    ConnectOther,
    /// Connection reset or closed by the peer before the response was complete.
    Reset,
    /// The server sent a TLS alert.
    TlsAlert,
    /// Any other TLS error (e.g. certificate rejected, decode error).
    TlsOther,
    /// The request did not finish within `--timeout`.
    Timeout,
    /// Malformed or unexpected HTTP response.
    Protocol,
    /// Open loop: the request could not start because `--max-inflight` were in flight.
    Overflow,
    /// Other local I/O error.
    Io,
    /// A response with a status other than 2xx/3xx.
    Http(u16),
}

impl ErrorKind {
    /// The kinds other than [`ErrorKind::Http`], in their counter order.
    pub const FIXED: [ErrorKind; 9] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectOther,
        ErrorKind::Reset,
        ErrorKind::TlsAlert,
        ErrorKind::TlsOther,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
        ErrorKind::Overflow,
        ErrorKind::Io,
    ];

    /// Counter index of a fixed kind; `None` for [`ErrorKind::Http`].
    pub fn index(self) -> Option<usize> {
        Some(match self {
            ErrorKind::ConnectRefused => 0,
            ErrorKind::ConnectOther => 1,
            ErrorKind::Reset => 2,
            ErrorKind::TlsAlert => 3,
            ErrorKind::TlsOther => 4,
            ErrorKind::Timeout => 5,
            ErrorKind::Protocol => 6,
            ErrorKind::Overflow => 7,
            ErrorKind::Io => 8,
            ErrorKind::Http(_) => return None,
        })
    }

    /// Name in the report, e.g. `connect_refused` or `http_503`.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::Reset => "reset",
            ErrorKind::TlsAlert => "tls_alert",
            ErrorKind::TlsOther => "tls_other",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Io => "io",
            ErrorKind::Http(code) => return Cow::Owned(format!("http_{code}")),
        })
    }

    /// Classifies a failed TCP connect.
    pub fn from_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::ConnectOther,
        }
    }

    /// Classifies an I/O error on an established connection (TLS handshake included:
    /// tokio-rustls reports rustls errors as `InvalidData` wrapping a [`rustls::Error`]).
    pub fn from_io(e: &io::Error) -> Self {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Self::from_rustls(tls);
        }
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::InvalidData => ErrorKind::TlsOther,
            _ => ErrorKind::Io,
        }
    }

    /// Classifies a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::AlertReceived(_) => ErrorKind::TlsAlert,
            _ => ErrorKind::TlsOther,
        }
    }

    /// Classifies an error of a hyper client connection (keepalive and h2 modes).
    pub fn from_hyper(e: &hyper::Error) -> Self {
        if e.is_timeout() {
            return ErrorKind::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return Self::from_io(io);
            }
            if let Some(tls) = s.downcast_ref::<rustls::Error>() {
                return Self::from_rustls(tls);
            }
            source = s.source();
        }
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            ErrorKind::Reset
        } else {
            ErrorKind::Protocol
        }
    }

    /// Classifies a final HTTP status: `None` for 2xx/3xx (success).
    pub fn from_status(status: u16) -> Option<Self> {
        if (200..400).contains(&status) {
            None
        } else {
            Some(ErrorKind::Http(status))
        }
    }
}

/// A short human reason for a failed TCP connect ("connection refused", ...).
pub(crate) fn connect_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ErrorKind::ConnectRefused.name(), "connect_refused");
        assert_eq!(ErrorKind::Http(503).name(), "http_503");
        assert_eq!(ErrorKind::Overflow.name(), "overflow");
        for (i, k) in ErrorKind::FIXED.iter().enumerate() {
            assert_eq!(k.index(), Some(i));
        }
        assert_eq!(ErrorKind::Http(404).index(), None);
    }

    #[test]
    fn classify_io() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ErrorKind::from_connect(&e), ErrorKind::ConnectRefused);
        let e = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert_eq!(ErrorKind::from_connect(&e), ErrorKind::ConnectOther);
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::Reset);
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::Reset);
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let e = io::Error::new(io::ErrorKind::InvalidData, alert);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::TlsAlert);
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let e = io::Error::new(io::ErrorKind::InvalidData, bad);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::TlsOther);
        let e = io::Error::other("weird");
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::Io);
    }

    #[test]
    fn classify_status() {
        assert_eq!(ErrorKind::from_status(200), None);
        assert_eq!(ErrorKind::from_status(302), None);
        assert_eq!(ErrorKind::from_status(404), Some(ErrorKind::Http(404)));
        assert_eq!(ErrorKind::from_status(502), Some(ErrorKind::Http(502)));
        assert_eq!(ErrorKind::from_status(101), Some(ErrorKind::Http(101)));
    }

    #[test]
    fn connect_reasons() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_reason(&e), "connection refused");
    }
}
