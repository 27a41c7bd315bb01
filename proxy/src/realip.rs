//! nginx's realip module: when the connection comes from a trusted address
//! (`set_real_ip_from`: a load balancer), the client is the address it names, in a
//! request header (`real_ip_header`, `X-Real-IP` by default, or `X-Forwarded-For`) or in
//! the connection's PROXY protocol header (`real_ip_header proxy_protocol`). That address
//! is then `$remote_addr` (and what `allow`/`deny` test and `$proxy_add_x_forwarded_for`
//! appends); `$realip_remote_addr` keeps the connection's.
//!
//! A header is read as nginx reads it, as a list from its end: its last address, or with
//! `real_ip_recursive on` the last one that is not itself trusted. An entry that is not
//! an address ends the walk (keeping what was found before it).

use std::net::{IpAddr, SocketAddr};

use hsmgate_config::nginx::{AccessMatch, RealIp, RealIpHeader};
use http::HeaderMap;

use crate::conn_info::ConnInfo;

/// The client `real_ip` names for a request on `conn`, if it names one (port 0 when
/// read from a request header, as nginx has it).
pub(crate) fn client(real_ip: &RealIp, conn: &ConnInfo, headers: &HeaderMap) -> Option<SocketAddr> {
    if !trusted(real_ip, conn.peer.ip()) {
        return None;
    }
    match &real_ip.header {
        RealIpHeader::ProxyProtocol => conn.proxy_protocol.map(|h| h.source),
        RealIpHeader::Header(name) => {
            let values: Vec<&str> = headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            forwarded(real_ip, &values.join(",")).map(|ip| SocketAddr::new(ip, 0))
        }
    }
}

/// The address a header's list names, from its end.
fn forwarded(real_ip: &RealIp, list: &str) -> Option<IpAddr> {
    let mut found = None;
    for entry in list.rsplit(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_ip(entry) else { break };
        found = Some(ip);
        if !(real_ip.recursive && trusted(real_ip, ip)) {
            break;
        }
    }
    found
}

/// An address as a header writes it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse()
        .ok()
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

fn trusted(real_ip: &RealIp, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    real_ip.from.iter().any(|m| match m {
        AccessMatch::Net(net) => net.contains(&ip),
        AccessMatch::All => true,
        AccessMatch::Unix => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_ip(header: &str, recursive: bool) -> RealIp {
        RealIp {
            from: vec![
                AccessMatch::Net("10.0.0.0/8".parse().unwrap()),
                AccessMatch::Net("192.0.2.7/32".parse().unwrap()),
            ],
            header: match header {
                "proxy_protocol" => RealIpHeader::ProxyProtocol,
                h => RealIpHeader::Header(h.into()),
            },
            recursive,
        }
    }

    fn conn(peer: &str) -> ConnInfo {
        ConnInfo {
            peer: peer.parse().unwrap(),
            listen: "127.0.0.1:443".parse().unwrap(),
            local_port: 443,
            local_ip: [127, 0, 0, 1].into(),
            tls: None,
            sni: None,
            client_cert: None,
            id: 1,
            proxy_protocol: Some(crate::proxy_protocol::ProxyHeader {
                source: "203.0.113.5:40000".parse().unwrap(),
                destination: "198.51.100.1:443".parse().unwrap(),
            }),
            plain_on_tls: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_trusted_peer_names_the_client_as_nginx_reads_it() {
        let xff = headers(&[("x-forwarded-for", "203.0.113.1, 10.1.1.1, 192.0.2.7")]);
        let ip = |r: &RealIp, peer: &str, h: &HeaderMap| {
            client(r, &conn(peer), h).map(|a| a.ip().to_string())
        };
        // The last address; recursive: the last untrusted one.
        let r = real_ip("x-forwarded-for", false);
        assert_eq!(ip(&r, "10.0.0.1:5000", &xff).as_deref(), Some("192.0.2.7"));
        let r = real_ip("x-forwarded-for", true);
        assert_eq!(
            ip(&r, "10.0.0.1:5000", &xff).as_deref(),
            Some("203.0.113.1")
        );
        // An untrusted peer names nobody.
        assert_eq!(ip(&r, "198.51.100.9:5000", &xff), None);
        // Two header lines are one list; an entry that is no address ends the walk.
        let two = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "junk, 10.2.2.2"),
        ]);
        assert_eq!(ip(&r, "10.0.0.1:5000", &two).as_deref(), Some("10.2.2.2"));
        // X-Real-IP (the default), bracketed IPv6.
        let r = real_ip("x-real-ip", false);
        let h = headers(&[("x-real-ip", "[2001:db8::5]")]);
        assert_eq!(ip(&r, "10.0.0.1:5000", &h).as_deref(), Some("2001:db8::5"));
        assert_eq!(ip(&r, "10.0.0.1:5000", &HeaderMap::new()), None);
        // The PROXY protocol's source, with its port.
        let r = real_ip("proxy_protocol", false);
        let got = client(&r, &conn("[::ffff:10.0.0.1]:5000"), &HeaderMap::new());
        assert_eq!(got, Some("203.0.113.5:40000".parse().unwrap()));
    }
}
