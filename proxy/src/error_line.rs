//! nginx's error log line, for nginx configurations: `2026/12/04 08:40:00 [error]
//! 4242#4243: *7 limiting requests, excess: 1.000 by zone "one", client: 127.0.0.1,
//! server: a.test, request: "GET / HTTP/1.1", host: "a.test"`, so that what reads
//! nginx's error log (fail2ban's `nginx-limit-req` and `nginx-http-auth` filters,
//! logwatch, an operator's grep) reads hsmgate's.
//!
//! The time is local, as nginx's; the level is nginx's word (tracing's `INFO` is nginx's
//! `notice`, the level of its start-up lines); `PID#TID` is the process and the thread;
//! `*N` is the client connection's number where the event names one (a `conn` field).
//! The message follows, then every other field as `, name: value`, the values nginx
//! quotes (`request`, `host`, `upstream`, `referrer`) in double quotes.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The fields nginx writes in double quotes.
const QUOTED: [&str; 4] = ["request", "host", "upstream", "referrer"];

/// The event format of nginx's error log (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct NginxLine;

impl<S, N> FormatEvent<S, N> for NginxLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        w.write_str(&line(
            &crate::vars::time_error_log(std::time::SystemTime::now()),
            *event.metadata().level(),
            std::process::id(),
            nix::unistd::gettid().as_raw(),
            &fields,
        ))
    }
}

/// An event's fields: its message, its connection number, the others in order.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    conn: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "conn" => self.conn = Some(value),
            name => self.rest.push((name, value)),
        }
    }
}

/// nginx's word for a level.
fn level_word(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "notice",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// One line, newline included.
fn line(time: &str, level: Level, pid: u32, tid: i32, fields: &Fields) -> String {
    let mut out = format!("{time} [{}] {pid}#{tid}: ", level_word(level));
    if let Some(conn) = &fields.conn {
        let _ = write!(out, "*{conn} ");
    }
    out.push_str(&fields.message);
    for (name, value) in &fields.rest {
        match QUOTED.contains(name) {
            true => {
                let _ = write!(out, ", {name}: \"{value}\"");
            }
            false => {
                let _ = write!(out, ", {name}: {value}");
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines fail2ban's stock nginx filters are written for (their regular
    /// expressions, `<HOST>` made a group), from what hsmgate logs.
    #[test]
    fn lines_read_as_nginx_error_log_lines() {
        let fields = Fields {
            message: "limiting requests, excess: 1.000 by zone \"one\"".into(),
            conn: Some("7".into()),
            rest: vec![
                ("client", "192.0.2.1".into()),
                ("server", "a.test".into()),
                ("request", "GET / HTTP/1.1".into()),
                ("host", "a.test".into()),
            ],
        };
        let text = line("2026/12/04 08:40:00", Level::ERROR, 4242, 4243, &fields);
        assert_eq!(
            text,
            "2026/12/04 08:40:00 [error] 4242#4243: *7 limiting requests, excess: 1.000 by \
             zone \"one\", client: 192.0.2.1, server: a.test, request: \"GET / HTTP/1.1\", \
             host: \"a.test\"\n"
        );
        // fail2ban's nginx-limit-req.conf failregex.
        let limit_req = regex::Regex::new(
            r#"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[[a-z]+\] \d+#\d+: \*\d+ limiting requests, excess: [\d\.]+ by zone "(?:one)", client: (?P<host>\S+),"#,
        )
        .expect("regex");
        let m = limit_req.captures(&text).expect("nginx-limit-req matches");
        assert_eq!(&m["host"], "192.0.2.1");
        // fail2ban's nginx-http-auth.conf failregex.
        let auth = Fields {
            message: "user \"bob\": password mismatch".into(),
            conn: Some("9".into()),
            rest: vec![
                ("client", "192.0.2.2".into()),
                ("server", "a.test".into()),
                ("request", "GET /private HTTP/1.1".into()),
                ("host", "a.test".into()),
            ],
        };
        let text = line("2026/12/04 08:40:01", Level::ERROR, 1, 2, &auth);
        let http_auth = regex::Regex::new(
            r#"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#\d+: \*\d+ user "(?:[^"]+|.*?)":? (?:password mismatch|was not found in "[^\"]*"), client: (?P<host>\S+), server: \S*, request: "\S+ \S+ HTTP/\d+\.\d+", host: "\S+"(?:, referrer: "\S+")?\s*$"#,
        )
        .expect("regex");
        let m = http_auth.captures(&text).expect("nginx-http-auth matches");
        assert_eq!(&m["host"], "192.0.2.2");
        // No connection: no `*N`; INFO is nginx's notice.
        let start = Fields {
            message: "listening".into(),
            conn: None,
            rest: vec![("address", "127.0.0.1:443".into())],
        };
        assert_eq!(
            line("2026/12/04 08:40:02", Level::INFO, 1, 1, &start),
            "2026/12/04 08:40:02 [notice] 1#1: listening, address: 127.0.0.1:443\n"
        );
    }
}
