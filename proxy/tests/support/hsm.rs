//! SoftHSM tokens and p11-kit servers for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PIN: &str = "pin-7391-secret";
const SO_PIN: &str = "12345678";

/// The key a test token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    EcP256,
    EcP384,
}

/// A SoftHSM token in its own directory, with a key pair labelled `tls` (id 01), a CA
/// and a leaf certificate for the key issued by that CA.
pub struct TestToken {
    pub dir: tempfile::TempDir,
    pub label: String,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub pin_file: PathBuf,
    pub ca_pem: PathBuf,
    pub chain_pem: PathBuf,
    pub key: KeyType,
}

pub fn softhsm_module() -> PathBuf {
    hsmgate_proxy::demo::find_softhsm().expect("SoftHSM is installed (scripts/deps.sh)")
}

/// A SoftHSM store in `dir` (its own `softhsm2.conf`) with one token `label`, user PIN
/// [`PIN`]; returns the path of the `softhsm2.conf`.
pub fn init_softhsm_token(dir: &Path, label: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.join("tokens").display()
        ),
    )
    .expect("softhsm2.conf");
    run(Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
    conf
}

pub fn p11kit_client_module() -> PathBuf {
    for p in [
        "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
        "/usr/lib64/pkcs11/p11-kit-client.so",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("p11-kit-client.so is not installed (apt-get install p11-kit-modules)")
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestToken {
    pub fn new(key: KeyType) -> TestToken {
        Self::with_label(key, "hsmgate-test")
    }

    pub fn with_label(key: KeyType, label: &str) -> TestToken {
        let dir = tempfile::Builder::new()
            .prefix("hsmgate-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        let conf = init_softhsm_token(root, label);
        let module = softhsm_module();
        let p11tool = |args: &[&str]| {
            let mut cmd = Command::new("pkcs11-tool");
            cmd.env("SOFTHSM2_CONF", &conf)
                .arg("--module")
                .arg(&module)
                .args(["--token-label", label])
                .args(args);
            run(&mut cmd)
        };
        let pub_der = root.join("pub.der");
        match key {
            // Generated on the token, as an operator would.
            KeyType::Rsa2048 | KeyType::EcP256 => {
                let kt = if key == KeyType::Rsa2048 {
                    "rsa:2048"
                } else {
                    "EC:prime256v1"
                };
                p11tool(&[
                    "--login",
                    "--pin",
                    PIN,
                    "--keypairgen",
                    "--key-type",
                    kt,
                    "--label",
                    "tls",
                    "--id",
                    "01",
                    "--usage-sign",
                ]);
                p11tool(&[
                    "--read-object",
                    "--type",
                    "pubkey",
                    "--id",
                    "01",
                    "-o",
                    pub_der.to_str().expect("utf-8 path"),
                ]);
            }
            // pkcs11-tool 0.23 cannot read back a P-384 public key: import one instead.
            KeyType::EcP384 => {
                let pem = root.join("ec384.pem");
                run(Command::new("openssl")
                    .args([
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-384",
                        "-out",
                    ])
                    .arg(&pem));
                run(Command::new("openssl")
                    .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                    .arg(&pem)
                    .arg("-out")
                    .arg(&pub_der));
                run(Command::new("softhsm2-util")
                    .env("SOFTHSM2_CONF", &conf)
                    .args(["--import"])
                    .arg(&pem)
                    .args([
                        "--token", label, "--label", "tls", "--id", "01", "--pin", PIN,
                    ]));
                std::fs::remove_file(&pem).expect("remove the key file");
            }
        }
        let spki = std::fs::read(&pub_der).expect("public key");
        let (ca_pem, chain_pem) = issue_certificate_for(root, &spki);
        let pin_file = root.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).expect("pin file");
        TestToken {
            dir,
            label: label.to_string(),
            conf,
            module,
            pin_file,
            ca_pem,
            chain_pem,
            key,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The key URI with the PIN from the pin file.
    pub fn key_uri(&self) -> String {
        format!(
            "pkcs11:token={};object=tls;type=private?pin-source=file:{}",
            self.label,
            self.pin_file.display()
        )
    }
}

/// A test CA (file key, made by rcgen) and a leaf certificate for `spki` signed by it.
pub fn issue_certificate_for(dir: &Path, spki: &[u8]) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hsmgate test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    // Kept for tests that sign as the CA (an OCSP responder's answers).
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).expect("ca.key");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::SubjectPublicKeyInfo::from_der(spki).expect("token public key");
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");

    let ca_pem = dir.join("ca.pem");
    let chain_pem = dir.join("chain.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).expect("ca.pem");
    std::fs::write(&chain_pem, leaf_cert.pem()).expect("chain.pem");
    (ca_pem, chain_pem)
}

/// A SoftHSM token served by its own `p11-kit server` (a "network HSM" that can be
/// frozen with SIGSTOP or killed), in its own process group.
pub struct P11KitServer {
    child: Child,
    pub socket: PathBuf,
}

impl P11KitServer {
    pub fn start(token: &TestToken) -> P11KitServer {
        Self::start_at(
            &token.conf,
            &token.module,
            &token.label,
            &token.path().join("p11kit.sock"),
        )
    }

    /// Serve token `label` of the SoftHSM store `conf` on unix socket `socket`.
    pub fn start_at(conf: &Path, module: &Path, label: &str, socket: &Path) -> P11KitServer {
        use std::os::unix::process::CommandExt;
        let socket = socket.to_path_buf();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("p11-kit")
            .env("SOFTHSM2_CONF", conf)
            .args(["server", "-f", "--provider"])
            .arg(module)
            .arg("-n")
            .arg(&socket)
            .arg(format!("pkcs11:token={label}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start p11-kit server (apt-get install p11-kit)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "p11-kit server did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        P11KitServer { child, socket }
    }

    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// Send `signal` (e.g. "STOP", "CONT", "KILL") to the server's whole process group:
    /// it forks one child per client connection.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}
