//! Not run by default: the same corpus served by Debian's nginx (file keys, one
//! process), hsmgate with the file keys and hsmgate with the SoftHSM keys, measured with
//! `hsmgate-load` (keep-alive requests and full handshakes). Run:
//!
//! ```sh
//! cargo build --release -p hsmgate-proxy -p hsmgate-benches
//! HSMGATE_BIN=target/release/hsmgate HSMGATE_LOAD=target/release/hsmgate-load \
//!   cargo test -p hsmgate-proxy --test e2e measure -- --ignored --nocapture
//! ```

use std::process::Command;

use crate::support::corpus::{Corpus, Keys, layout};
use crate::support::nginx::Server;

#[test]
#[ignore = "a measurement, not a check: needs HSMGATE_LOAD (and a release HSMGATE_BIN)"]
fn measure_nginx_and_hsmgate_on_the_corpus() {
    let load = std::env::var("HSMGATE_LOAD").expect("HSMGATE_LOAD=path/to/hsmgate-load");
    let corpus = Corpus::new();
    let l = layout();
    for (name, keys) in [
        ("nginx (file keys)", Keys::File),
        ("hsmgate (file keys)", Keys::File),
        ("hsmgate (SoftHSM keys)", Keys::Token),
    ] {
        let prefix = corpus.prefix(&name.replace([' ', '(', ')'], "-"));
        let conf = corpus.write(&prefix, keys, &l, "");
        let server = if name.starts_with("nginx") {
            Server::nginx(&prefix, &conf, &[l.https, l.http])
        } else {
            Server::hsmgate(&prefix, &conf, &[l.https, l.http])
        };
        for (mode, conns) in [("keepalive", "16"), ("handshake", "8")] {
            let out = Command::new(&load)
                .args([
                    "--mode", mode, "-c", conns, "-d", "3s", "--json", "--cacert",
                ])
                .arg(&corpus.ca_pem)
                .arg(format!("https://127.0.0.1:{}/", l.https))
                .output()
                .expect("run hsmgate-load");
            println!(
                "{name} {mode} -c {conns}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        drop(server);
    }
}
