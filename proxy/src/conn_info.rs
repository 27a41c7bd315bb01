//! [`ConnInfo`]: what is known about the connection a request came on (addresses, TLS
//! version, cipher, group and resumption, SNI, client certificate, connection number),
//! filled in by [`crate::conn`] and read by routing, `$variables` and the access log.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client_cert::ClientCert;

/// What is known about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The configured listen address the connection was accepted on.
    pub listen: SocketAddr,
    /// The port the client connected to.
    pub local_port: u16,
    /// The address the client connected to (`$server_addr`): the listen address's, or
    /// for a wildcard one (`listen 443`) the connection's own.
    pub local_ip: std::net::IpAddr,
    /// The TLS session, when TLS.
    pub tls: Option<TlsInfo>,
    /// The server name the client sent in its ClientHello (SNI).
    pub sni: Option<String>,
    /// The client certificate's verification (`ssl_verify_client on|optional`).
    pub client_cert: Option<Arc<ClientCert>>,
    /// A connection number (nginx's `$connection`).
    pub id: u64,
    /// The addresses of its PROXY protocol header (`listen … proxy_protocol`).
    pub proxy_protocol: Option<crate::proxy_protocol::ProxyHeader>,
    /// Plain HTTP on a TLS address: every request is nginx's 497 (see
    /// [`crate::route`]).
    pub plain_on_tls: bool,
}

/// What the handshake agreed, as nginx's `$ssl_*` variables give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsInfo {
    /// `$ssl_protocol`: `TLSv1.3`, `TLSv1.2`.
    pub protocol: &'static str,
    /// `$ssl_cipher`: the suite's OpenSSL name (`TLS_AES_128_GCM_SHA256`,
    /// `ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: &'static str,
    /// `$ssl_curve`: the key exchange group's OpenSSL name (`X25519`, `prime256v1`).
    pub curve: &'static str,
    /// `$ssl_session_reused`: the handshake resumed a session.
    pub resumed: bool,
}

/// OpenSSL's name of a key exchange group, as nginx's `$ssl_curve` gives it.
pub(crate) fn curve_name(group: rustls::NamedGroup) -> &'static str {
    use rustls::NamedGroup as G;
    match group {
        G::X25519 => "X25519",
        G::X448 => "X448",
        G::secp256r1 => "prime256v1",
        G::secp384r1 => "secp384r1",
        G::secp521r1 => "secp521r1",
        G::X25519MLKEM768 => "X25519MLKEM768",
        G::secp256r1MLKEM768 => "SecP256r1MLKEM768",
        G::MLKEM768 => "MLKEM768",
        G::FFDHE2048 => "ffdhe2048",
        G::FFDHE3072 => "ffdhe3072",
        G::FFDHE4096 => "ffdhe4096",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_have_openssls_names() {
        assert_eq!(curve_name(rustls::NamedGroup::X25519), "X25519");
        assert_eq!(curve_name(rustls::NamedGroup::secp256r1), "prime256v1");
        assert_eq!(curve_name(rustls::NamedGroup::secp384r1), "secp384r1");
    }
}
