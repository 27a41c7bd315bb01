//! The PROXY protocol header (v1 text or v2 binary, HAProxy's specification) that a load
//! balancer in front sends first on each connection of a `listen … proxy_protocol`
//! address: the client's and the balancer's addresses, for `$proxy_protocol_addr` and
//! (with `real_ip_header proxy_protocol`) `$remote_addr`. Parsed with the `ppp` crate.
//!
//! The header is peeked, parsed, and only its own bytes are then read: what follows
//! (the TLS ClientHello, an HTTP request) is left for the next reader, whose first
//! read still carries the kernel's receive time (admission's door).

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header read: v1's 107 bytes, v2's 16 plus the addresses and the TLVs a
/// balancer adds (AWS, GCP and Azure send a few, well under this).
const MAX_HEADER: usize = 1024;

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// The client (`$proxy_protocol_addr`, `$proxy_protocol_port`).
    pub source: SocketAddr,
    /// The address the client connected to (`$proxy_protocol_server_addr`, `_port`).
    pub destination: SocketAddr,
}

/// Why a connection's PROXY header was refused (the connection is closed, as nginx does).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokenHeader {
    #[error("broken header: {0}")]
    Parse(String),
    #[error("the header is longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("the connection closed before its PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the header at the start of `stream`: the addresses, or `None` for a header
/// that carries none (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified family: the
/// connection's own addresses stand).
pub(crate) async fn read(stream: &mut TcpStream) -> Result<Option<ProxyHeader>, BrokenHeader> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(BrokenHeader::Closed);
        }
        match parse(&buf[..n]) {
            Parsed::Done(len, addrs) => {
                let mut header = vec![0u8; len];
                stream.read_exact(&mut header).await?;
                return Ok(addrs);
            }
            Parsed::Broken(e) => {
                // Read what was peeked, so that the close is a FIN, not a reset for
                // unread data (nginx reads it as the header it failed to parse).
                let _ = stream.read(&mut buf[..n]).await;
                return Err(BrokenHeader::Parse(e));
            }
            Parsed::Partial if n == MAX_HEADER => return Err(BrokenHeader::TooLong),
            // Balancers send the header in one write; the rest of one sent in pieces
            // is waited for (the caller's timeout bounds it).
            Parsed::Partial => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// What the bytes peeked so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A header of this many bytes, and its addresses.
    Done(usize, Option<ProxyHeader>),
    /// Not a header.
    Broken(String),
    /// The start of one.
    Partial,
}

fn parse(input: &[u8]) -> Parsed {
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        return Parsed::Partial;
    }
    let header = |source: SocketAddr, destination: SocketAddr| {
        Some(ProxyHeader {
            source,
            destination,
        })
    };
    match result {
        HeaderResult::V1(Ok(h)) => {
            let addrs = match h.addresses {
                v1::Addresses::Tcp4(a) => header(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                v1::Addresses::Tcp6(a) => header(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                v1::Addresses::Unknown => None,
            };
            Parsed::Done(h.header.len(), addrs)
        }
        HeaderResult::V2(Ok(h)) => {
            let addrs = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => header(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, v2::Addresses::IPv6(a)) => header(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            };
            Parsed::Done(h.len(), addrs)
        }
        HeaderResult::V1(Err(e)) => Parsed::Broken(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Broken(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_headers_give_their_length_and_addresses() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\n\x16\x03\x01";
        assert_eq!(
            parse(v1),
            Parsed::Done(
                v1.len() - 3,
                Some(ProxyHeader {
                    source: addr("192.0.2.1:51234"),
                    destination: addr("198.51.100.2:443"),
                })
            )
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\nGET";
        let v6_len = v6.len() - 3;
        assert!(
            matches!(parse(v6), Parsed::Done(l, Some(h)) if l == v6_len && h.source == addr("[2001:db8::1]:4000"))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Done(15, None));
        // v2 with IPv4 addresses, built by ppp's builder, then the TLS record.
        let mut v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (addr("192.0.2.9:7000"), addr("198.51.100.2:443")),
        )
        .build()
        .unwrap();
        let len = v2.len();
        v2.extend_from_slice(b"\x16\x03\x01");
        assert!(
            matches!(parse(&v2), Parsed::Done(l, Some(h)) if l == len && h.source == addr("192.0.2.9:7000"))
        );
        // A piece of one waits for the rest.
        assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Partial);
        assert_eq!(parse(&v2[..10]), Parsed::Partial);
    }

    #[test]
    fn a_connection_without_a_header_is_broken() {
        // A TLS ClientHello's first bytes, and a plain HTTP request.
        for input in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse(input), Parsed::Broken(_)), "{input:?}");
        }
    }
}
