//! Several keys in a TOML configuration, each on its own HA group (`[[tls.pair]]` with
//! `server_names`, several `[[hsm.group]]`s): two lab HSMs, `hsm-a` in group `ga` and
//! `hsm-b` in group `gb`. `a.test` gets its certificate signed by `ga`, `b.test` its own
//! signed by `gb`, other names `[tls]`'s; each group's admission counts only its names'
//! handshakes, and freezing `hsm-a` (SIGSTOP) fails `a.test` but not `b.test`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::client::{admin_get, client_config, metric};
use crate::support::hsm::p11kit_client_module;
use crate::support::lab::HaLab;
use crate::support::{ProxyProcess, start_upstream};

/// A CA of its own and a leaf certificate for `name` over the lab's key: (CA, chain).
fn certificate_for(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let spki = std::fs::read(dir.join("pub.der")).expect("the lab's public key");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::SubjectPublicKeyInfo::from_der(&spki).expect("public key");
    let mut leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let leaf = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let (ca_pem, chain) = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).expect("CA file");
    std::fs::write(&chain, leaf.pem()).expect("chain file");
    (ca_pem, chain)
}

/// A full handshake to `addr` with SNI `name`, trusting only `ca`.
async fn handshake(addr: SocketAddr, ca: &Path, name: &str) -> Result<(), String> {
    let config: Arc<rustls::ClientConfig> = client_config(ca, &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_owned()).expect("name");
    match tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_names_each_signed_by_its_own_ha_group() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let (ca_a, chain_a) = certificate_for(lab.path(), "a.test");
    let (ca_b, chain_b) = certificate_for(lab.path(), "b.test");
    let client = p11kit_client_module();
    let group = |name: &str, member: &str| {
        format!(
            "[[hsm.group]]\nname = \"{name}\"\nsign_timeout_ms = 1000\nop_timeout_ms = 500\n\
             [[hsm.group.region]]\nname = \"r1\"\nrole = \"primary\"\n\
             [[hsm.group.region.member]]\nname = \"{member}\"\nmodule = \"{}\"\n\
             env = {{ P11_KIT_SERVER_ADDRESS = \"{}\" }}\ntoken = \"{member}\"\npin_file = \"{}\"\nsessions = 2\n",
            client.display(),
            lab.address(member),
            lab.pin_file.display()
        )
    };
    let config = format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[tls]
certificate = "{default}"
key = "pkcs11:object=tls;type=private"
group = "ga"

[[tls.pair]]
certificate = "{a}"
key = "pkcs11:object=tls;type=private"
group = "ga"
server_names = ["a.test"]

[[tls.pair]]
certificate = "{b}"
key = "pkcs11:object=tls;type=private"
group = "gb"
server_names = ["b.test"]

[upstream]
address = "{upstream}"

{ga}
{gb}"#,
        default = lab.chain_pem.display(),
        a = chain_a.display(),
        b = chain_b.display(),
        ga = group("ga", "hsm-a"),
        gb = group("gb", "hsm-b"),
    );
    let proxy = ProxyProcess::start(lab.path(), &config).expect("hsmgate starts");
    let (addr, admin) = (proxy.addr, proxy.admin_addr());
    let log = || proxy.log_text();

    // Each name gets its own certificate (a client trusting only its CA completes the
    // handshake), other names the default one.
    for _ in 0..3 {
        handshake(addr, &ca_a, "a.test")
            .await
            .unwrap_or_else(|e| panic!("a.test: {e}\n{}", log()));
        handshake(addr, &ca_b, "b.test")
            .await
            .unwrap_or_else(|e| panic!("b.test: {e}\n{}", log()));
    }
    handshake(addr, &lab.ca_pem, "localhost")
        .await
        .unwrap_or_else(|e| panic!("default: {e}\n{}", log()));
    assert!(
        handshake(addr, &ca_a, "b.test").await.is_err(),
        "b.test got a.test's certificate"
    );

    // Each group signed its names' handshakes: ga the three of a.test and the default one.
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let admitted = |g: &str| {
        metric(
            &metrics,
            "hsmgate_admission_admitted_total",
            &[&format!("group=\"{g}\"")],
        )
    };
    assert_eq!((admitted("ga"), admitted("gb")), (4.0, 4.0), "{metrics}");

    // hsm-a hangs: a.test fails, b.test (on hsm-b) does not.
    lab.signal("hsm-a", "STOP");
    assert!(
        handshake(addr, &ca_a, "a.test").await.is_err(),
        "a.test signed while hsm-a is frozen"
    );
    for _ in 0..3 {
        handshake(addr, &ca_b, "b.test")
            .await
            .unwrap_or_else(|e| panic!("b.test while hsm-a is frozen: {e}\n{}", log()));
    }
    lab.signal("hsm-a", "CONT");
}

/// `-t` on an HA group: a member that refuses its configuration (here a wrong PIN) fails
/// the test, naming it, though the group could start on the other; a member that is
/// only unreachable now is a warning.
#[test]
fn t_fails_on_a_refused_member_and_warns_of_an_unreachable_one() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let config = lab.config(
        upstream,
        "",
        &[("eu-1", true, &["hsm-a", "hsm-b"])],
        "sessions = 1\n",
    );
    let wrong = lab.path().join("wrong-pin");
    std::fs::write(&wrong, "not-the-pin").expect("pin");
    let pin = lab.pin_file.display().to_string();
    let at = config.rfind(&pin).expect("hsm-b's pin_file");
    let bad = format!(
        "{}{}{}",
        &config[..at],
        wrong.display(),
        &config[at + pin.len()..]
    );
    let out = crate::support::proxy::run_hsmgate(lab.path(), &bad, &["-t"]);
    let t = crate::support::output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("HSM member hsm-b") && t.contains("CKR_PIN_INCORRECT"),
        "{t}"
    );
    assert!(t.contains("test failed"), "{t}");

    lab.kill("hsm-b");
    let out = crate::support::proxy::run_hsmgate(lab.path(), &config, &["-t"]);
    let t = crate::support::output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("[warn] HSM member hsm-b"), "{t}");
}
