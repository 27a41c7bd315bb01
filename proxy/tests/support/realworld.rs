//! Real-world nginx configurations (`proxy/tests/corpus/`) written out per test.
//!
//! Each fixture is a tree of absolute paths as installed (`etc/nginx/…`,
//! `etc/letsencrypt/…`). [`RealWorld::write`] lays Debian's files
//! (`corpus/debian`) down first, then the named corpus over them, enables the chosen
//! sites (links in `sites-enabled/`, as `a2ensite`-style tools make them), and
//! rewrites every file: absolute paths into the temp dir, `listen 443`/`80` (and
//! `[::]:…`) to loopback test ports, the fixtures' upstreams (`127.0.0.1:8080`…`8084`)
//! to the test's echo upstreams, and the key paths to a token key (hsmgate) or a
//! file key (nginx). Certificates are the [`Corpus`] ones, written where the fixture
//! expects them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::corpus::{Corpus, Keys};

/// The fixtures' root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Where the fixtures expect certificates (all get the test leaf) and keys.
const CERTS: &[&str] = &[
    "/etc/ssl/certs/ssl-cert-snakeoil.pem",
    "/etc/ssl/certs/example.test.fullchain.pem",
    "/etc/letsencrypt/live/example.test/fullchain.pem",
];
const CHAINS: &[&str] = &["/etc/ssl/certs/example.test.chain.pem"];
const KEYS: &[&str] = &[
    "/etc/ssl/private/ssl-cert-snakeoil.key",
    "/etc/ssl/private/example.test.key",
    "/etc/letsencrypt/live/example.test/privkey.pem",
];
/// Absolute path prefixes moved into the temp dir.
const ROOTS: &[&str] = &[
    "/etc/nginx",
    "/etc/ssl",
    "/etc/letsencrypt",
    "/var/log/nginx",
    "/var/www",
    "/run/nginx.pid",
];

/// Test ports and the echo upstreams standing in for the fixtures' backends.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub https: u16,
    pub https6: u16,
    pub http: u16,
    pub http6: u16,
    /// `127.0.0.1:8080` and `:8081`.
    pub app_a: SocketAddr,
    /// `127.0.0.1:8082`.
    pub app_b: SocketAddr,
    /// `127.0.0.1:8083`.
    pub api: SocketAddr,
    /// `127.0.0.1:8084`.
    pub statics: SocketAddr,
}

impl Ports {
    /// Fresh ports; the upstreams are `upstreams`' (shared by nginx and hsmgate).
    pub fn new(upstreams: [SocketAddr; 4]) -> Ports {
        let [app_a, app_b, api, statics] = upstreams;
        Ports {
            https: super::free_port(),
            https6: super::free_port6(),
            http: super::free_port(),
            http6: super::free_port6(),
            app_a,
            app_b,
            api,
            statics,
        }
    }

    /// Four named echo upstreams: app-a, app-b, api, static.
    pub fn upstreams() -> [SocketAddr; 4] {
        [
            super::start_upstream("app-a"),
            super::start_upstream("app-b"),
            super::start_upstream("api"),
            super::start_upstream("static"),
        ]
    }
}

/// One written configuration.
pub struct RealWorld {
    /// The temp root standing for `/`.
    pub root: PathBuf,
    /// `ROOT/etc/nginx/nginx.conf`.
    pub conf: PathBuf,
}

impl RealWorld {
    /// Writes corpus `name` with `sites` enabled under a fresh root.
    pub fn write(corpus: &Corpus, name: &str, sites: &[&str], keys: Keys, p: &Ports) -> Self {
        let tag = match keys {
            Keys::Token => "token",
            Keys::File => "file",
        };
        let root = corpus.prefix(&format!("{name}-{tag}"));
        copy_tree(&fixtures().join("debian"), &root);
        if name != "debian" {
            copy_tree(&fixtures().join(name), &root);
        }
        for dir in [
            "etc/nginx/conf.d",
            "etc/nginx/modules-enabled",
            "etc/nginx/sites-enabled",
            "var/log/nginx",
            "var/www/html",
            "run",
        ] {
            std::fs::create_dir_all(root.join(dir)).expect("dir");
        }
        for site in sites {
            let target = root.join("etc/nginx/sites-available").join(site);
            assert!(target.exists(), "no site {site} in corpus {name}");
            std::os::unix::fs::symlink(&target, root.join("etc/nginx/sites-enabled").join(site))
                .expect("enable site");
        }
        // Certificates and keys where the fixtures expect them.
        let (cert, file_key) = match keys {
            Keys::Token => (&corpus.certs[0], None),
            Keys::File => (&corpus.certs[2], Some(&corpus.file_keys[0])),
        };
        let place = |path: &str, from: &Path| {
            let to = root.join(&path[1..]);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
            std::fs::copy(from, &to).expect("copy");
        };
        CERTS.iter().for_each(|c| place(c, cert));
        CHAINS.iter().for_each(|c| place(c, &corpus.ca_pem));
        if let Some(k) = file_key {
            KEYS.iter().for_each(|c| place(c, k));
        }
        // The rewrites, in order: keys, then listen addresses, upstreams, paths.
        let mut rewrites: Vec<(String, String)> = Vec::new();
        if keys == Keys::Token {
            let uri = format!(
                "\"engine:pkcs11:pkcs11:token={};object=tls;type=private?pin-source=file:{}\"",
                corpus.token.label,
                corpus.token.pin_file.display()
            );
            rewrites.extend(KEYS.iter().map(|k| (k.to_string(), uri.clone())));
        }
        for (port, v4, v6) in [(443, p.https, p.https6), (80, p.http, p.http6)] {
            for end in [" ", ";"] {
                rewrites.push((
                    format!("listen {port}{end}"),
                    format!("listen 127.0.0.1:{v4}{end}"),
                ));
                rewrites.push((
                    format!("listen [::]:{port}{end}"),
                    format!("listen [::1]:{v6}{end}"),
                ));
            }
        }
        for (port, to) in [
            (8080, p.app_a),
            (8081, p.app_a),
            (8082, p.app_b),
            (8083, p.api),
            (8084, p.statics),
        ] {
            rewrites.push((format!("127.0.0.1:{port}"), to.to_string()));
        }
        for r in ROOTS {
            rewrites.push((r.to_string(), format!("{}{r}", root.display())));
        }
        rewrite_tree(&root.join("etc"), &rewrites);
        let conf = root.join("etc/nginx/nginx.conf");
        RealWorld { root, conf }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("dir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture");
        }
    }
}

/// Applies `rewrites` to every regular file (not link) under `dir`.
fn rewrite_tree(dir: &Path, rewrites: &[(String, String)]) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            rewrite_tree(&entry.path(), rewrites);
        } else if kind.is_file() {
            let Ok(mut text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for (from, to) in rewrites {
                text = text.replace(from, to);
            }
            std::fs::write(entry.path(), text).expect("rewrite");
        }
    }
}
