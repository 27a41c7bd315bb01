//! nginx value syntaxes: times (`1m 30s`, `500ms`), sizes (`10k`, `1m`),
//! `on`/`off`, `host[:port]` and `listen` addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// nginx time: parts `N[unit]` with units `ms s m h d w M y`, optionally
/// separated by spaces; a bare number means seconds.
pub(crate) fn parse_time(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = match rest.as_bytes() {
            [b'm', b's', ..] => (1, 2),
            [b'y', ..] => (365 * 86_400_000, 1),
            [b'M', ..] => (30 * 86_400_000, 1),
            [b'w', ..] => (7 * 86_400_000, 1),
            [b'd', ..] => (86_400_000, 1),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1000, 1),
            [] | [b' ', ..] => (1000, 0),
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        rest = rest[len..].trim_start();
    }
    Some(Duration::from_millis(total_ms))
}

/// nginx size: `N`, `Nk`, `Nm`, `Ng` (either case), in bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A number written with digits only (nginx's `ngx_atoi`: no sign, no spaces).
pub(crate) fn parse_number(s: &str) -> Option<u32> {
    match !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        true => s.parse().ok(),
        false => None,
    }
}

/// `on` / `off`.
pub(crate) fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// Whether `host_port` (`host:port`, as [`host_port_or`] gives it) is an IP address or a
/// name the system resolver knows: nginx resolves `proxy_pass` and upstream `server`
/// hosts when it loads the configuration and refuses one it cannot resolve.
pub(crate) fn resolves(host_port: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok((host, port)) = split_host_port(host_port) else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return true;
    }
    (bare, port.unwrap_or(80))
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
}

/// An upstream server's address: `unix:PATH` (a Unix domain socket, kept as written, as
/// `$upstream_addr` shows it) or `host[:port]` as [`host_port_or`] gives it. With
/// `uri_part` (`proxy_pass`), a Unix socket's path ends at the first `:` and what follows
/// it is the URI: `http://unix:/run/app.sock:/api/` → (`unix:/run/app.sock`, `/api/`).
pub(crate) fn upstream_addr(s: &str, default: u16) -> Result<String, String> {
    match unix_socket(s, false)? {
        Some((addr, _)) => Ok(addr),
        None => host_port_or(s, default),
    }
}

/// `unix:PATH[:URI]` → (`unix:PATH`, the URI when `uri_part` and one is written); `None`
/// when `s` is not a Unix socket's address (`unix:` as nginx reads it, in any case).
pub(crate) fn unix_socket(
    s: &str,
    uri_part: bool,
) -> Result<Option<(String, Option<String>)>, String> {
    if !s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("unix:")) {
        return Ok(None);
    }
    let rest = &s[5..];
    let (path, uri) = match rest.split_once(':') {
        Some((path, uri)) if uri_part => (path, Some(uri).filter(|u| !u.is_empty())),
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err(format!("no path in the unix domain socket \"{s}\""));
    }
    if path.len() > crate::UNIX_PATH_MAX {
        return Err(format!("too long path in the unix domain socket \"{s}\""));
    }
    Ok(Some((format!("unix:{path}"), uri.map(str::to_owned))))
}

/// `host[:port]` → `host:port`, with `default` when no port is written.
pub(crate) fn host_port_or(s: &str, default: u16) -> Result<String, String> {
    let (host, port) = split_host_port(s)?;
    if host.is_empty() || host.contains(['/', '$', ' ']) {
        return Err(format!("invalid host in \"{s}\""));
    }
    Ok(format!("{host}:{}", port.unwrap_or(default)))
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = || format!("invalid port in \"{s}\"");
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(bad_port)
    };
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid IPv6 address in \"{s}\""))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((&s[..host.len() + 2], Some(port(p)?))),
            None if after.is_empty() => Ok((&s[..host.len() + 2], None)),
            None => Err(format!("invalid IPv6 address in \"{s}\"")),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h, Some(port(p)?))),
        None => Ok((s, None)),
    }
}

/// A `listen` address: `PORT`, `*:PORT`, `IP[:PORT]`, `[IPv6][:PORT]` or
/// `localhost[:PORT]` (taken as 127.0.0.1). Other host names are refused:
/// only literal addresses are used, nothing is resolved.
pub(crate) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if s.starts_with("unix:") {
        return Err("unix sockets are not supported".into());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port = s.parse::<u16>().ok().filter(|&p| p != 0);
        let port = port.ok_or_else(|| format!("invalid port in \"{s}\""))?;
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    }
    let (host, port) = split_host_port(s)?;
    let port = port.unwrap_or(80);
    let ip: IpAddr = match host {
        "*" => Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!("host \"{h}\" is not a literal IP address (names are not resolved)")
            })?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        let t = |s| parse_time(s).map(|d| d.as_millis());
        assert_eq!(t("60"), Some(60_000));
        assert_eq!(t("60s"), Some(60_000));
        assert_eq!(t("1m"), Some(60_000));
        assert_eq!(t("500ms"), Some(500));
        assert_eq!(t("1h 30m"), Some(5_400_000));
        assert_eq!(t("1d"), Some(86_400_000));
        assert_eq!(t("1x"), None);
        assert_eq!(t(""), None);
        assert_eq!(parse_size("10k"), Some(10 * 1024));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1q"), None);
        assert_eq!(parse_size("k"), None);
    }

    #[test]
    fn addresses() {
        let a = |s| listen_addr(s).map(|a| a.to_string());
        assert_eq!(a("8443").unwrap(), "0.0.0.0:8443");
        assert_eq!(a("*:443").unwrap(), "0.0.0.0:443");
        assert_eq!(a("[::]:443").unwrap(), "[::]:443");
        assert_eq!(a("[::1]").unwrap(), "[::1]:80");
        assert_eq!(a("localhost:443").unwrap(), "127.0.0.1:443");
        assert_eq!(a("127.0.0.1").unwrap(), "127.0.0.1:80");
        assert!(
            a("example.com:443")
                .unwrap_err()
                .contains("not a literal IP")
        );
        assert!(a("1.2.3.4:0").is_err() && a("unix:/x").is_err());
        assert_eq!(upstream_addr("backend", 80).unwrap(), "backend:80");
        assert_eq!(upstream_addr("10.0.0.1:8080", 80).unwrap(), "10.0.0.1:8080");
        assert_eq!(upstream_addr("[::1]:81", 80).unwrap(), "[::1]:81");
        assert!(upstream_addr("a:x", 80).is_err());
        assert_eq!(
            upstream_addr("unix:/run/a.sock", 80).unwrap(),
            "unix:/run/a.sock"
        );
        assert_eq!(
            upstream_addr("UNIX:/run/a.sock", 80).unwrap(),
            "unix:/run/a.sock"
        );
        assert_eq!(upstream_addr("app", 443).unwrap(), "app:443");
        assert!(upstream_addr("unix:", 80).unwrap_err().contains("no path"));
        let long = format!("unix:/{}", "a".repeat(107));
        assert!(upstream_addr(&long, 80).unwrap_err().contains("too long"));
        let u = |s| unix_socket(s, true).unwrap();
        assert_eq!(
            u("unix:/a.sock:/api/"),
            Some(("unix:/a.sock".into(), Some("/api/".into())))
        );
        assert_eq!(u("unix:/a.sock:"), Some(("unix:/a.sock".into(), None)));
        assert_eq!(u("unix:/a.sock"), Some(("unix:/a.sock".into(), None)));
        assert_eq!(u("app:80"), None);
    }
}
