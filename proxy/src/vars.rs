//! nginx variables (`$host`, `$remote_addr`, `$proxy_add_x_forwarded_for`, …)
//! evaluated for one request, and [`Template`]s expanded with them.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use std::collections::BTreeMap;

use hsmgate_config::nginx::{Template, TemplatePart, VarMap};
use http::HeaderMap;

use crate::conn_info::ConnInfo;

/// The values of one request's variables.
#[derive(Debug)]
pub(crate) struct Vars<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// Request headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// `GET`…
    pub method: &'a str,
    /// Path and query as received.
    pub request_uri: &'a str,
    /// The normalised path (`$uri`).
    pub uri: &'a str,
    /// `HTTP/1.1`…
    pub protocol: &'a str,
    /// The `Host` (or `:authority`) as sent, with port.
    pub http_host: Option<&'a str>,
    /// The first `server_name` of the chosen server.
    pub server_name: &'a str,
    /// `$proxy_host` (the upstream name or address).
    pub proxy_host: &'a str,
    /// `$upstream_addr`.
    pub upstream_addr: &'a str,
    /// The response status (0 before there is one).
    pub status: u16,
    /// Body bytes sent to the client.
    pub body_bytes_sent: u64,
    /// When the request started.
    pub started: SystemTime,
    /// How long it took so far.
    pub elapsed: Duration,
    /// `map` variables.
    pub maps: &'a BTreeMap<String, VarMap>,
}

/// How deep `map` values may refer to other maps (a loop ends as an empty value).
const MAP_DEPTH: u8 = 8;

impl Vars<'_> {
    /// `$host`: `Host` without the port, lower-cased, else the server name.
    pub(crate) fn host(&self) -> String {
        match self.http_host {
            Some(h) if !h.is_empty() => strip_port(h).to_ascii_lowercase(),
            _ => self.server_name.to_owned(),
        }
    }

    /// The value of variable `name` (without `$`); unknown ones are empty.
    pub(crate) fn get(&self, name: &str) -> Cow<'_, str> {
        self.get_at(name, 0)
    }

    fn get_at(&self, name: &str, depth: u8) -> Cow<'_, str> {
        if let Some(map) = self.maps.get(name) {
            if depth >= MAP_DEPTH {
                return "".into();
            }
            let source = self.expand_at(&map.source, depth + 1);
            return self.expand_at(map.lookup(&source), depth + 1).into();
        }
        match name {
            "host" => self.host().into(),
            "http_host" => self.http_host.unwrap_or("").into(),
            "remote_addr" => self.conn.peer.ip().to_canonical().to_string().into(),
            "remote_port" => self.conn.peer.port().to_string().into(),
            "proxy_add_x_forwarded_for" => {
                let ip = self.conn.peer.ip().to_canonical().to_string();
                let existing: Vec<&str> = self
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if existing.is_empty() {
                    ip.into()
                } else {
                    format!("{}, {ip}", existing.join(", ")).into()
                }
            }
            "scheme" => if self.conn.tls.is_some() {
                "https"
            } else {
                "http"
            }
            .into(),
            "https" => if self.conn.tls.is_some() { "on" } else { "" }.into(),
            "request_uri" => self.request_uri.into(),
            "uri" => self.uri.into(),
            "args" | "query_string" => self
                .request_uri
                .split_once('?')
                .map_or("", |(_, q)| q)
                .into(),
            "is_args" => if self.request_uri.contains('?') {
                "?"
            } else {
                ""
            }
            .into(),
            "server_name" => self.server_name.into(),
            "server_port" => self.conn.local_port.to_string().into(),
            "server_addr" => self.conn.listen.ip().to_string().into(),
            "request_method" => self.method.into(),
            "server_protocol" => self.protocol.into(),
            "proxy_host" => self.proxy_host.into(),
            "ssl_protocol" => self
                .conn
                .tls
                .as_ref()
                .map_or("", |(p, _)| p.as_str())
                .into(),
            "ssl_cipher" => self
                .conn
                .tls
                .as_ref()
                .map_or("", |(_, c)| c.as_str())
                .into(),
            "ssl_client_verify" => match (&self.conn.tls, &self.conn.client_cert) {
                (None, _) => "".into(),
                (Some(_), None) => "NONE".into(),
                (Some(_), Some(c)) => c.verify.to_string().into(),
            },
            "ssl_client_s_dn" => self
                .conn
                .client_cert
                .as_ref()
                .map_or("", |c| c.s_dn.as_str())
                .into(),
            "ssl_client_escaped_cert" => self
                .conn
                .client_cert
                .as_ref()
                .map_or("", |c| c.escaped_cert.as_str())
                .into(),
            "status" => format!("{:03}", self.status).into(),
            "body_bytes_sent" => self.body_bytes_sent.to_string().into(),
            "request" => format!("{} {} {}", self.method, self.request_uri, self.protocol).into(),
            "time_local" => time_local(self.started).into(),
            "request_time" => format!("{:.3}", self.elapsed.as_secs_f64()).into(),
            "upstream_addr" => self.upstream_addr.into(),
            "connection" => self.conn.id.to_string().into(),
            "remote_user" => "".into(),
            other => match other.strip_prefix("http_") {
                Some(h) => {
                    let name = h.replace('_', "-");
                    let values: Vec<&str> = self
                        .headers
                        .get_all(name.as_str())
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    values.join(", ").into()
                }
                None => "".into(),
            },
        }
    }

    /// `template` with its variables replaced.
    pub(crate) fn expand(&self, template: &Template) -> String {
        self.expand_at(template, 0)
    }

    fn expand_at(&self, template: &Template, depth: u8) -> String {
        let mut out = String::new();
        for p in &template.parts {
            match p {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Var(v) => out.push_str(&self.get_at(v, depth)),
            }
        }
        out
    }
}

/// `host[:port]` → `host` (`[v6]:port` → `[v6]`).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// nginx's `$time_local`: `27/Nov/2026:07:42:44 +0100`, in the system's time zone (`TZ`,
/// else `/etc/localtime`; UTC when neither is readable), read once per process.
pub(crate) fn time_local(t: SystemTime) -> String {
    time_in(t, local_zone())
}

fn local_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC))
}

fn time_in(t: SystemTime, zone: &jiff::tz::TimeZone) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(zone.clone())
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_local_is_nginx_format_in_the_zone() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_761_764);
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(time_in(t, &utc), "27/Nov/2026:06:42:44 +0000");
        assert_eq!(
            time_in(SystemTime::UNIX_EPOCH, &utc),
            "01/Jan/1970:00:00:00 +0000"
        );
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin");
        if let Ok(berlin) = berlin {
            assert_eq!(time_in(t, &berlin), "27/Nov/2026:07:42:44 +0100");
        }
        let fixed = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(time_in(t, &fixed), "27/Nov/2026:01:42:44 -0500");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("Example.com:8443"), "Example.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }

    #[test]
    fn variables() {
        let conn = ConnInfo {
            peer: "10.0.0.7:5000".parse().expect("addr"),
            listen: "127.0.0.1:443".parse().expect("addr"),
            local_port: 443,
            tls: Some(("TLSv1.3".into(), "TLS13_AES_128_GCM_SHA256".into())),
            sni: None,
            client_cert: None,
            id: 9,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4".parse().expect("value"));
        headers.insert("user-agent", "curl/8".parse().expect("value"));
        let v = Vars {
            conn: &conn,
            headers: &headers,
            method: "GET",
            request_uri: "/a/b?x=1",
            uri: "/a/b",
            protocol: "HTTP/1.1",
            http_host: Some("WWW.Example.test:443"),
            server_name: "www.example.test",
            proxy_host: "app",
            upstream_addr: "",
            status: 200,
            body_bytes_sent: 0,
            started: SystemTime::now(),
            elapsed: Duration::ZERO,
            maps: &BTreeMap::new(),
        };
        assert_eq!(v.get("host"), "www.example.test");
        assert_eq!(v.get("proxy_add_x_forwarded_for"), "1.2.3.4, 10.0.0.7");
        assert_eq!(v.get("scheme"), "https");
        assert_eq!(v.get("args"), "x=1");
        assert_eq!(v.get("http_user_agent"), "curl/8");
        assert_eq!(v.get("request"), "GET /a/b?x=1 HTTP/1.1");
    }
}
