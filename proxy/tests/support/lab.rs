//! An HSM lab in the tests: N SoftHSM tokens holding the *same* RSA-2048 key (imported
//! from one PEM file), each behind its own `p11-kit server` in its own process group,
//! so members can be killed (SIGKILL), frozen (SIGSTOP), continued and restarted.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::hsm::{
    P11KitServer, PIN, init_softhsm_token, issue_certificate_for, p11kit_client_module, run,
    softhsm_module,
};

pub struct LabMember {
    pub name: String,
    conf: PathBuf,
    socket: PathBuf,
    server: Option<P11KitServer>,
}

pub struct HaLab {
    pub dir: tempfile::TempDir,
    pub members: Vec<LabMember>,
    pub ca_pem: PathBuf,
    pub chain_pem: PathBuf,
    pub pin_file: PathBuf,
}

impl HaLab {
    pub fn new(names: &[&str]) -> HaLab {
        let dir = tempfile::Builder::new()
            .prefix("hsmgate-lab-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        let key = root.join("key.pem");
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key));
        let spki = root.join("pub.der");
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&spki));
        let module = softhsm_module();
        let mut members = Vec::new();
        for name in names {
            let d = root.join(name);
            let conf = init_softhsm_token(&d, name);
            run(Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .arg("--import")
                .arg(&key)
                .args([
                    "--token", name, "--label", "tls", "--id", "01", "--pin", PIN,
                ]));
            let socket = d.join("sock");
            let server = P11KitServer::start_at(&conf, &module, name, &socket);
            members.push(LabMember {
                name: name.to_string(),
                conf,
                socket,
                server: Some(server),
            });
        }
        std::fs::remove_file(&key).expect("remove the key file");
        let (ca_pem, chain_pem) = issue_certificate_for(root, &std::fs::read(&spki).expect("spki"));
        let pin_file = root.join("pin");
        std::fs::write(&pin_file, PIN).expect("pin");
        HaLab {
            dir,
            members,
            ca_pem,
            chain_pem,
            pin_file,
        }
    }

    fn member(&mut self, name: &str) -> &mut LabMember {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("lab member")
    }

    pub fn signal(&mut self, name: &str, signal: &str) {
        self.member(name)
            .server
            .as_ref()
            .expect("running")
            .signal(signal);
    }

    /// `P11_KIT_SERVER_ADDRESS` of a member (for p11-kit-client.so).
    pub fn address(&self, name: &str) -> String {
        let m = self
            .members
            .iter()
            .find(|m| m.name == name)
            .expect("lab member");
        format!("unix:path={}", m.socket.display())
    }

    /// SIGKILL the member's whole process group.
    pub fn kill(&mut self, name: &str) {
        let m = self.member(name);
        if let Some(server) = m.server.take() {
            server.signal("KILL");
            drop(server);
        }
    }

    /// Start the member again on the same socket.
    pub fn restart(&mut self, name: &str) {
        self.kill(name);
        let module = softhsm_module();
        let m = self.member(name);
        m.server = Some(P11KitServer::start_at(&m.conf, &module, &m.name, &m.socket));
    }

    /// A configuration with `[[hsm.group]]`: `regions` are (name, primary, member names);
    /// `member_extra` is added to every member's table (e.g. `sessions = 2\n`).
    pub fn config(
        &self,
        upstream: std::net::SocketAddr,
        group_extra: &str,
        regions: &[(&str, bool, &[&str])],
        member_extra: &str,
    ) -> String {
        let client = p11kit_client_module();
        let mut out = format!(
            r#"[[listener]]
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[tls]
certificate = "{chain}"
key = "pkcs11:object=tls;type=private"

[upstream]
address = "{upstream}"

[[hsm.group]]
name = "lab"
{group_extra}
"#,
            chain = self.chain_pem.display()
        );
        for (region, primary, names) in regions {
            out.push_str(&format!(
                "\n[[hsm.group.region]]\nname = \"{region}\"\nrole = \"{}\"\n",
                if *primary { "primary" } else { "standby" }
            ));
            for name in *names {
                let m = self
                    .members
                    .iter()
                    .find(|m| m.name == *name)
                    .expect("lab member");
                out.push_str(&format!(
                    "\n[[hsm.group.region.member]]\nname = \"{name}\"\nmodule = \"{}\"\nenv = {{ P11_KIT_SERVER_ADDRESS = \"unix:path={}\" }}\ntoken = \"{name}\"\npin_file = \"{}\"\n{member_extra}",
                    client.display(),
                    m.socket.display(),
                    self.pin_file.display()
                ));
            }
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
