//! [`ConnInfo`]: what is known about the connection a request came on (addresses, TLS
//! version and cipher, SNI, client certificate, connection number), filled in by
//! [`crate::conn`] and read by routing, `$variables` and the access log.

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
    /// TLS version and cipher suite (IANA names), when TLS.
    pub tls: Option<(String, String)>,
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
