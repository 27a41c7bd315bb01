//! A key from a PEM file (`ssl_certificate_key /path.key`) signs in software on the
//! connection's thread, and each of its signatures' CPU time is counted
//! (`hsmgate_tls_file_key_sign_cpu_seconds`), as a token's are
//! (`hsmgate_signer_call_cpu_seconds`, in `inline_signing`).

use std::sync::Arc;

use crate::support::client::{admin_get_blocking, client_config, connect, metric};
use crate::support::corpus::Corpus;
use crate::support::net::free_port;
use crate::support::nginx::Server;
use crate::support::start_upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_key_signatures_are_made_and_their_cpu_counted() {
    let corpus = Corpus::new();
    let upstream = start_upstream("echo");
    let (https, admin) = (free_port(), free_port());
    let d = corpus.dir.path().join("file-key");
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let conf = d.join("nginx.conf");
    // RSA and ECDSA file keys on one server: the client's offer picks one per handshake.
    std::fs::write(
        &conf,
        format!(
            "env HSMGATE_ADMIN=127.0.0.1:{admin};\npid {}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    \
             access_log off;\n    server {{\n        listen 127.0.0.1:{https} ssl;\n        \
             ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_certificate {};\n        \
             ssl_certificate_key {};\n        location / {{ proxy_pass http://{upstream}; }}\n    }}\n}}\n",
            d.display(),
            corpus.certs[2].display(),
            corpus.file_keys[0].display(),
            corpus.certs[3].display(),
            corpus.file_keys[1].display(),
        ),
    )
    .expect("conf");
    let proxy = Server::hsmgate(&d, &conf, &[https, admin]);
    let addr = ([127, 0, 0, 1], https).into();
    let client = client_config(&corpus.ca_pem, &[b"http/1.1"]);
    for i in 0..6 {
        if let Err(e) = connect(addr, Arc::clone(&client)).await {
            panic!("handshake {i} failed: {e}\n{}", proxy.log_text());
        }
    }
    let admin = ([127, 0, 0, 1], admin).into();
    let body = tokio::task::spawn_blocking(move || admin_get_blocking(admin, "/metrics").1)
        .await
        .expect("metrics");
    let calls = metric(&body, "hsmgate_tls_file_key_sign_cpu_seconds_count", &[]);
    let cpu = metric(&body, "hsmgate_tls_file_key_sign_cpu_seconds_sum", &[]);
    assert!(
        calls >= 6.0,
        "{calls} signatures counted for 6 full handshakes\n{body}"
    );
    assert!(cpu > 0.0, "a software signature takes CPU: {cpu} s\n{body}");
    // No token behind this server: nothing is counted as a token's call.
    assert_eq!(
        metric(&body, "hsmgate_signer_call_cpu_seconds_count", &[]),
        0.0,
        "{body}"
    );
}
