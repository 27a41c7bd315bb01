//! nginx's `expires`: on a successful answer (200, 201, 204, 206, 301, 302, 303, 304,
//! 307, 308) the `Expires` and `Cache-Control` headers, the upstream's included, are
//! replaced by one of each, as nginx 1.22 writes them: `max-age=N` for a time ahead,
//! `no-cache` for one past (and for `epoch`), nginx's fixed dates for `epoch` and `max`,
//! and a value read from a variable when the answer comes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hsmgate_config::nginx::Expires;
use http::Response;
use http::header::{CACHE_CONTROL, EXPIRES, HeaderValue, LAST_MODIFIED};

use crate::body::ProxyBody;
use crate::reqlog::LogCtx;
use crate::vars::Vars;

/// Sets `resp`'s `Expires` and `Cache-Control` by `expires`; a variable is read with
/// `resp`'s headers as `$sent_http_NAME` (the usual `map $sent_http_content_type
/// $expires`).
pub(crate) fn apply(expires: &Expires, resp: &mut Response<ProxyBody>, log: &LogCtx) {
    let parsed;
    let e = match expires {
        Expires::Off => return,
        Expires::Var(t) => match Expires::parse(&read(t, resp, log), false) {
            Some(e) => {
                parsed = e;
                &parsed
            }
            None => return,
        },
        e => e,
    };
    let ok = matches!(
        resp.status().as_u16(),
        200 | 201 | 204 | 206 | 301..=304 | 307 | 308
    );
    let Some((expires_at, cache_control)) = ok.then(|| headers(e, resp)).flatten() else {
        return;
    };
    let h = resp.headers_mut();
    h.remove(CACHE_CONTROL);
    h.remove(EXPIRES);
    if let (Ok(e), Ok(c)) = (
        HeaderValue::from_str(&expires_at),
        HeaderValue::from_str(&cache_control),
    ) {
        h.insert(EXPIRES, e);
        h.insert(CACHE_CONTROL, c);
    }
}

/// `t` with `resp`'s headers as the sent ones.
fn read(t: &hsmgate_config::nginx::Template, resp: &Response<ProxyBody>, log: &LogCtx) -> String {
    let sent = resp.headers().clone();
    let mut vars: Vars<'_> = log.vars(&log.headers);
    vars.sent_headers = &sent;
    vars.status = resp.status().as_u16();
    vars.expand(t)
}

/// The `Expires` and `Cache-Control` values of `e` for `resp`, now.
fn headers(e: &Expires, resp: &Response<ProxyBody>) -> Option<(String, String)> {
    let now = unix(SystemTime::now());
    let (at, max_age) = match e {
        Expires::Off | Expires::Var(_) => return None,
        Expires::Epoch => return Some(("Thu, 01 Jan 1970 00:00:01 GMT".into(), "no-cache".into())),
        Expires::Max => {
            return Some((
                "Thu, 31 Dec 2037 23:55:55 GMT".into(),
                "max-age=315360000".into(),
            ));
        }
        Expires::After { secs, modified } => {
            let last_modified = (resp.headers().get(LAST_MODIFIED))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .map(unix);
            let base = last_modified.filter(|_| *modified).unwrap_or(now);
            let at = base.saturating_add(*secs);
            (at, at.saturating_sub(now))
        }
        Expires::DayTime(secs) => {
            let zone = crate::vars::local_zone();
            let today = jiff::Timestamp::now().to_zoned(zone.clone()).date();
            let midnight = today.to_zoned(zone.clone()).ok()?.timestamp().as_second();
            let mut at = midnight + i64::from(*secs);
            if at <= now {
                at += 24 * 60 * 60;
            }
            (at, at - now)
        }
    };
    let cache_control = match max_age {
        n if n < 0 => "no-cache".to_owned(),
        n => format!("max-age={n}"),
    };
    // The latest date an HTTP date can say (`expires 10000y`, or an upstream's
    // `Last-Modified` in 9999 plus the time given, would be past it).
    const LAST: i64 = 253_402_300_799; // Fri, 31 Dec 9999 23:59:59 GMT
    let when = UNIX_EPOCH + Duration::from_secs(u64::try_from(at.clamp(0, LAST)).unwrap_or(0));
    Some((httpdate::fmt_http_date(when), cache_control))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn response(last_modified: Option<&'static str>) -> Response<ProxyBody> {
        let mut resp = Response::new(Empty::new().map_err(|n| match n {}).boxed());
        if let Some(v) = last_modified {
            resp.headers_mut()
                .insert(LAST_MODIFIED, HeaderValue::from_static(v));
        }
        resp
    }

    /// A date past what an HTTP date can say is the last one it can (httpdate panics
    /// past year 9999): from the configuration, or from an upstream's `Last-Modified`.
    #[test]
    fn dates_past_year_9999_are_the_last_one() {
        let last = "Fri, 31 Dec 9999 23:59:59 GMT";
        let far = Expires::After {
            secs: 10_000 * 365 * 24 * 3600,
            modified: false,
        };
        let (at, cache) = headers(&far, &response(None)).expect("headers");
        assert_eq!(at, last);
        assert!(cache.starts_with("max-age="), "{cache}");
        let modified = Expires::After {
            secs: 24 * 3600,
            modified: true,
        };
        let (at, _) = headers(&modified, &response(Some(last))).expect("headers");
        assert_eq!(at, last);
        let huge = Expires::After {
            secs: i64::MAX,
            modified: true,
        };
        assert_eq!(
            headers(&huge, &response(Some(last))).expect("headers").0,
            last
        );
    }
}
