//! The nginx SSL-offload corpus written per test.
//!
//! [`Corpus`] holds one SoftHSM token with two keys (RSA `tls`, ECDSA `tls-ec`), PEM
//! file twins of both, and certificates for all four issued by one test CA for
//! `www.example.test`, `example.test`, `api.example.test`, `*.example.test`,
//! `localhost` and 127.0.0.1. [`Corpus::write`] writes the configuration (main file,
//! `conf.d/*.conf` includes, `mime.types`) with token keys (for hsmgate) or file keys
//! (for nginx), so both read the same layout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::hsm::{KeyType, PIN, TestToken, run};

/// Token and file keys with certificates from one CA.
pub struct Corpus {
    pub token: TestToken,
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    /// (token RSA, token ECDSA, file RSA, file ECDSA) certificate files.
    pub certs: [PathBuf; 4],
    /// File keys (RSA, ECDSA).
    pub file_keys: [PathBuf; 2],
    pub openssl_conf: PathBuf,
}

/// Which keys the configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    Token,
    File,
}

/// Ports and upstreams of one written configuration.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub https: u16,
    /// The www server also listens on [::1]:https6.
    pub https6: u16,
    pub http: u16,
    pub app_a: SocketAddr,
    pub app_b: SocketAddr,
    pub statics: SocketAddr,
    pub api: SocketAddr,
}

impl Corpus {
    pub fn new() -> Corpus {
        let token = TestToken::new(KeyType::Rsa2048);
        let dir = tempfile::Builder::new()
            .prefix("hsmgate-corpus-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        // Second key on the token: ECDSA P-256, generated there.
        let p11 = |args: &[&str]| {
            let mut cmd = Command::new("pkcs11-tool");
            cmd.env("SOFTHSM2_CONF", &token.conf)
                .arg("--module")
                .arg(&token.module)
                .args(["--token-label", &token.label])
                .args(args);
            run(&mut cmd)
        };
        p11(&[
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "tls-ec",
            "--id",
            "02",
            "--usage-sign",
        ]);
        let ec_der = root.join("token-ec.der");
        p11(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "02",
            "-o",
            ec_der.to_str().expect("utf-8"),
        ]);
        let rsa_spki = std::fs::read(token.path().join("pub.der")).expect("token RSA public key");
        let ec_spki = std::fs::read(&ec_der).expect("token EC public key");
        // File twins.
        let mut file_keys = Vec::new();
        let mut file_spkis = Vec::new();
        for (name, opts) in [
            (
                "file-rsa",
                vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            (
                "file-ec",
                vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
        ] {
            let key = root.join(format!("{name}.key"));
            run(Command::new("openssl")
                .arg("genpkey")
                .args(&opts)
                .arg("-out")
                .arg(&key));
            let der = root.join(format!("{name}.der"));
            run(Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&der));
            file_spkis.push(std::fs::read(&der).expect("spki"));
            file_keys.push(key);
        }
        // One CA for all four certificates.
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hsmgate corpus CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        // Kept for tests that sign as the CA (an OCSP responder's answers).
        std::fs::write(root.join("ca.key"), ca_key.serialize_pem()).expect("ca.key");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let ca_pem = root.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("ca.pem");
        let names = [
            "www.example.test",
            "example.test",
            "api.example.test",
            "*.example.test",
            "localhost",
        ];
        let issue = |spki: &[u8], file: &str| {
            let key = rcgen::SubjectPublicKeyInfo::from_der(spki).expect("spki");
            let mut leaf = rcgen::CertificateParams::new(names.map(String::from).to_vec())
                .expect("leaf params");
            leaf.subject_alt_names
                .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
            leaf.distinguished_name
                .push(rcgen::DnType::CommonName, "www.example.test");
            leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let cert = leaf.signed_by(&key, &issuer).expect("leaf");
            let path = root.join(file);
            std::fs::write(&path, cert.pem()).expect("cert");
            path
        };
        let certs = [
            issue(&rsa_spki, "token-rsa.crt"),
            issue(&ec_spki, "token-ec.crt"),
            issue(&file_spkis[0], "file-rsa.crt"),
            issue(&file_spkis[1], "file-ec.crt"),
        ];
        // The OpenSSL configuration an nginx + libp11 user already has: hsmgate takes
        // the module path from its pkcs11 section.
        let openssl_conf = root.join("openssl.cnf");
        std::fs::write(
            &openssl_conf,
            format!(
                "# libp11 engine section (not loaded by OpenSSL: no openssl_conf line)\n[pkcs11_section]\nengine_id = pkcs11\nMODULE_PATH = {}\ninit = 0\n",
                token.module.display()
            ),
        )
        .expect("openssl.cnf");
        Corpus {
            token,
            dir,
            ca_pem,
            certs,
            file_keys: [file_keys[0].clone(), file_keys[1].clone()],
            openssl_conf,
        }
    }

    /// A fresh prefix directory with `logs/`.
    pub fn prefix(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.join("logs")).expect("logs dir");
        std::fs::create_dir_all(p.join("conf.d")).expect("conf.d");
        p
    }

    /// Write the configuration into `prefix`; `extra` goes into the www server.
    /// Returns the main file.
    pub fn write(&self, prefix: &Path, keys: Keys, layout: &Layout, extra: &str) -> PathBuf {
        let (rsa_cert, ec_cert, rsa_key, ec_key) = match keys {
            Keys::Token => {
                let pin = format!("?pin-source=file:{}", self.token.pin_file.display());
                let t = &self.token.label;
                (
                    &self.certs[0],
                    &self.certs[1],
                    format!("\"engine:pkcs11:pkcs11:token={t};object=tls;type=private{pin}\""),
                    format!("\"engine:pkcs11:pkcs11:token={t};object=tls-ec;type=private{pin}\""),
                )
            }
            Keys::File => (
                &self.certs[2],
                &self.certs[3],
                self.file_keys[0].display().to_string(),
                self.file_keys[1].display().to_string(),
            ),
        };
        let engine = match keys {
            Keys::Token => format!(
                "ssl_engine pkcs11;\nenv OPENSSL_CONF={};\nenv SOFTHSM2_CONF={};\n",
                self.openssl_conf.display(),
                self.token.conf.display()
            ),
            Keys::File => String::new(),
        };
        let Layout {
            https,
            https6,
            http,
            app_a,
            app_b,
            statics,
            api,
        } = *layout;
        let main = format!(
            r#"# SSL-offload front (hsmgate test corpus): vhosts with RSA + ECDSA pairs,
# an upstream with keepalive, an HTTP -> HTTPS redirect server, includes.
user root;
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log info;
{engine}
events {{
    worker_connections 256;
}}

http {{
    include mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server_tokens off;

    log_format offload '$remote_addr - $remote_user [$time_local] "$request" '
                       '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
                       'host=$host up=$upstream_addr';
    access_log logs/access.log offload;

    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384;
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:1m;
    ssl_session_timeout 10m;

    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Connection "";
    proxy_connect_timeout 2s;
    proxy_read_timeout 30s;
    proxy_send_timeout 30s;
    client_max_body_size 1m;
    keepalive_timeout 30;

    upstream app {{
        server {app_a} weight=2;
        server {app_b};
        keepalive 16;
    }}

    # Plain HTTP: everything to HTTPS.
    server {{
        listen 127.0.0.1:{http} default_server;
        server_name _;
        return 301 https://$host$request_uri;
    }}

    include conf.d/*.conf;
}}
"#
        );
        let www = format!(
            r#"server {{
    listen 127.0.0.1:{https} ssl http2 default_server;
    listen [::1]:{https6} ssl http2;
    server_name www.example.test example.test;

    ssl_certificate {rsa_cert};
    ssl_certificate_key {rsa_key};
    ssl_certificate {ec_cert};
    ssl_certificate_key {ec_key};

    add_header X-Frame-Options DENY always;

    location = /healthz {{
        access_log off;
        return 200 "ok\n";
    }}

    location / {{
        proxy_pass http://app;
    }}

    location ^~ /static/ {{
        proxy_pass http://{statics};
    }}

    location ~* \.(png|jpe?g)$ {{
        proxy_pass http://{statics};
    }}

    location /api/ {{
        proxy_pass http://app/v2/;
    }}

    location /upload/ {{
        client_max_body_size 1k;
        proxy_pass http://app;
    }}

    location /old/ {{
        return 302 https://$host/new$request_uri;
    }}

    location = /rel {{
        return 302 /elsewhere?from=rel;
    }}
{extra}
}}
"#,
            rsa_cert = rsa_cert.display(),
            ec_cert = ec_cert.display(),
        );
        let api = format!(
            r#"# API vhost and a wildcard catch-all on the same address.
server {{
    listen 127.0.0.1:{https} ssl http2;
    server_name api.example.test;

    ssl_certificate {rsa_cert};
    ssl_certificate_key {rsa_key};
    ssl_certificate {ec_cert};
    ssl_certificate_key {ec_key};

    proxy_set_header Host $host;
    proxy_set_header X-Request-Id $http_x_request_id;

    # nginx's default format (combined).
    access_log logs/api.log;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;

    location / {{
        proxy_pass http://{api};
    }}

    location ~ ^/v[0-9]+/ {{
        proxy_read_timeout 60s;
        proxy_pass http://{api};
    }}

    location = /v1/status {{
        return 200 '{{"status":"ok"}}';
    }}
}}

server {{
    listen 127.0.0.1:{https} ssl http2;
    server_name *.example.test ~^(?<sub>[a-z]+)\.regex\.test$;

    ssl_certificate {rsa_cert};
    ssl_certificate_key {rsa_key};

    location / {{
        add_header X-Vhost wildcard;
        proxy_pass http://{statics};
    }}
}}
"#,
            rsa_cert = rsa_cert.display(),
            ec_cert = ec_cert.display(),
        );
        std::fs::write(prefix.join("nginx.conf"), main).expect("nginx.conf");
        std::fs::write(prefix.join("conf.d/10-www.conf"), www).expect("www");
        std::fs::write(prefix.join("conf.d/20-api.conf"), api).expect("api");
        std::fs::write(
            prefix.join("mime.types"),
            "types {\n    text/html html;\n    image/png png;\n}\n",
        )
        .expect("mime.types");
        prefix.join("nginx.conf")
    }
}

/// Fresh ports and four named echo upstreams.
pub fn layout() -> Layout {
    Layout {
        https: super::free_port(),
        https6: super::free_port6(),
        http: super::free_port(),
        app_a: super::start_upstream("app-a"),
        app_b: super::start_upstream("app-b"),
        statics: super::start_upstream("static"),
        api: super::start_upstream("api"),
    }
}
