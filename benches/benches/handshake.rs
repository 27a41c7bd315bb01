//! One full TLS 1.3 handshake in memory: a rustls client and server pump records through
//! byte buffers (no sockets, no runtime), with an RSA-2048 server key that is either
//! - `token`: the SoftHSM key through hsmgate's [`HsmSigningKey`] (pool of one session), or
//! - `file`: an RSA-2048 key rcgen made, written as PEM and loaded by rustls' aws-lc-rs
//!   provider, the way a file-key server would.
//!
//! Everything else is the same: one certificate chain per key, signed by one test CA,
//! X25519, TLS_AES_128_GCM_SHA256 (rustls' first choice), RSA-PSS-SHA256, no session
//! cache, no tickets, no resumption. So the difference between the two lines is the
//! token's signature plus the pool hand-off. The time covers both sides' CPU (the client
//! verifies the chain and the CertificateVerify).
//!
//! Run: `cargo bench -p hsmgate-benches --bench handshake`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use hsmgate_signer::HsmSigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SubjectPublicKeyInfo,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig, ServerConnection,
};
use support::SoftHsm;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A test CA that signs a leaf certificate (CN/SAN localhost) for any public key.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "hsmgate bench CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, public_key: &impl rcgen::PublicKeyData) -> CertificateDer<'static> {
        let params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        params
            .signed_by(public_key, &self.issuer)
            .expect("leaf certificate")
            .der()
            .clone()
    }
}

/// A TLS 1.3 server config with `key` and no session resumption of any kind.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
) -> Arc<ServerConfig> {
    let certified = CertifiedKey::new(chain, key);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

fn client_config(ca: &Ca) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).expect("CA root");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Moves every pending TLS record from `from` to `to`; returns whether anything moved.
fn transfer<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    buf: &mut Vec<u8>,
) -> bool {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls to a Vec");
    }
    let mut bytes = buf.as_slice();
    let moved = !bytes.is_empty();
    while !bytes.is_empty() {
        to.read_tls(&mut bytes).expect("read_tls from a slice");
        to.process_new_packets().expect("handshake");
    }
    moved
}

/// One complete handshake between fresh connections.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, buf: &mut Vec<u8>) {
    let name = ServerName::try_from("localhost").expect("server name");
    let mut c = ClientConnection::new(Arc::clone(client), name).expect("client connection");
    let mut s = ServerConnection::new(Arc::clone(server)).expect("server connection");
    loop {
        let to_server = transfer(&mut c, &mut s, buf);
        let to_client = transfer(&mut s, &mut c, buf);
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        assert!(to_server || to_client, "handshake stalled");
    }
}

fn bench_handshake(c: &mut Criterion) {
    let hsm = SoftHsm::new();
    let ca = Ca::new();
    let client = client_config(&ca);

    // Token key: the certificate carries the token's public key.
    let pool = hsm.pool("rsa", 1);
    let spki = SubjectPublicKeyInfo::from_der(pool.spki()).expect("token SPKI");
    let token_chain = vec![ca.leaf(&spki), ca.der.clone()];
    let token_server = server_config(token_chain, HsmSigningKey::new(pool));

    // File key: RSA-2048 as PKCS#8 PEM on disk, loaded back as a server would.
    let dir = tempfile::tempdir().expect("tempdir");
    let file_key = KeyPair::generate_for(&PKCS_RSA_SHA256).expect("RSA-2048 key");
    let pem_path = dir.path().join("server.key");
    std::fs::write(&pem_path, file_key.serialize_pem()).expect("write PEM");
    let der = PrivateKeyDer::from_pem_file(&pem_path).expect("read PEM");
    let signing_key = provider()
        .key_provider
        .load_private_key(der)
        .expect("RSA key for rustls");
    let file_chain = vec![ca.leaf(&file_key), ca.der.clone()];
    let file_server = server_config(file_chain, signing_key);

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut g = c.benchmark_group("handshake/tls13-rsa2048");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    g.bench_function("file key", |b| {
        b.iter(|| handshake(&client, &file_server, &mut buf))
    });
    g.bench_function("token key (HsmSigningKey)", |b| {
        b.iter(|| handshake(&client, &token_server, &mut buf))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_handshake(&mut c);
    c.final_summary();
}
