//! HTTP/1.1 upgrades (WebSocket and the like) passed through to the upstream, as nginx
//! does with `proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection
//! $connection_upgrade;`: the client's upgrade request is forwarded with the `Upgrade`
//! the configuration sets, and when the upstream answers `101 Switching Protocols` both
//! connections are handed over and their bytes copied both ways until either side closes
//! or neither sends anything for `proxy_read_timeout` (nginx's idle limit on a tunnel).
//!
//! [`crate::h1guard`] stops checking a connection after an upgrade request, so any other
//! answer to one closes the connection ([`close_unless_switched`]).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hop_by_hop::connection_has;
use crate::upstream_h1::Io;

/// An HTTP/1.1 request asking to switch protocols, without a body: `Upgrade` with the
/// `upgrade` token in `Connection` (the same test as [`crate::h1guard`]'s).
pub(crate) fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    // A length of zero however written (`0`, `00`): the guard reads the number, and the
    // two must agree on what an upgrade is, or the guard stops checking a connection
    // this side does not close.
    let body = headers.contains_key(header::TRANSFER_ENCODING)
        || (headers.contains_key(header::CONTENT_LENGTH)
            && crate::upstream_h1::content_length(headers) != Some(0));
    version == Version::HTTP_11
        && !body
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
}

/// After an upgrade request: any answer but `101` ends the connection (the guard no
/// longer checks what follows).
pub(crate) fn close_unless_switched<B>(resp: &mut Response<B>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The `101` for the client: the upstream's, with its `Upgrade` and `Connection: upgrade`
/// (hop-by-hop headers, kept for this one answer).
pub(crate) fn switching_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    if let Some(u) = upstream.get(header::UPGRADE) {
        out.insert(header::UPGRADE, u.clone());
    }
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Copy bytes both ways between the two upgraded connections (a task of its own): the
/// upstream's as [`crate::upstream_h1`] left it, with what its server sent after the
/// `101` first.
///
/// `drain`, the client connection's watcher of the process's drain, is held until the
/// tunnel ends: a graceful stop waits for open tunnels as for requests (as nginx's
/// does), within its grace period.
pub(crate) async fn run(
    client: OnUpgrade,
    (upstream, early): (Io, Bytes),
    idle: Duration,
    upstream_addr: String,
    drain: Option<crate::drain::Watcher>,
) {
    let _drain = drain;
    let client = match client.await {
        Ok(c) => TokioIo::new(c),
        Err(e) => {
            tracing::info!(upstream = %upstream_addr, error = %e, "upgrade failed");
            return;
        }
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let (mut from_client, mut from_upstream) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut client_open, mut upstream_open) = (true, true);
    if !early.is_empty() && cw.write_all(&early).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    while client_open || upstream_open {
        tokio::select! {
            r = cr.read(&mut from_client), if client_open => match r {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = uw.shutdown().await;
                }
                Ok(n) => {
                    if uw.write_all(&from_client[..n]).await.is_err() {
                        break;
                    }
                }
            },
            r = ur.read(&mut from_upstream), if upstream_open => match r {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if cw.write_all(&from_upstream[..n]).await.is_err() {
                        break;
                    }
                }
            },
            () = &mut deadline => {
                tracing::info!(upstream = %upstream_addr, ?idle, "upgraded connection idle: closed");
                break;
            }
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn upgrade_requests_are_told_apart() {
        let ws = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert!(wants_upgrade(Version::HTTP_11, &headers(&ws)));
        assert!(!wants_upgrade(Version::HTTP_10, &headers(&ws)));
        assert!(!wants_upgrade(Version::HTTP_2, &headers(&ws)));
        assert!(!wants_upgrade(Version::HTTP_11, &headers(&ws[..1])));
        let with_body = [ws[0], ws[1], ("content-length", "3")];
        assert!(!wants_upgrade(Version::HTTP_11, &headers(&with_body)));
        // A zero length however written is no body (the guard reads it as a number).
        for zero in ["0", "00", "000"] {
            let empty = [ws[0], ws[1], ("content-length", zero)];
            assert!(wants_upgrade(Version::HTTP_11, &headers(&empty)), "{zero}");
        }
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        close_unless_switched(&mut resp);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        close_unless_switched(&mut resp);
        assert!(!resp.headers().contains_key(header::CONNECTION));
    }
}
