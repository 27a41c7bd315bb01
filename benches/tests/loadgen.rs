//! End-to-end test of the `hsmgate-load` binary against a tiny in-process TLS server
//! (rustls + hyper, HTTP/1.1 and h2, certificate from a test CA made with rcgen).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hsmgate-load");

/// Starts the server on its own thread; returns its address and the CA certificate (PEM).
fn start_server() -> (SocketAddr, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hsmgate-load test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"hello from the test server\n",
                        ))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    (addr, ca.pem())
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run hsmgate-load")
}

fn run_json(args: &[&str]) -> Value {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn assert_clean_run(v: &Value, mode: &str) {
    assert_eq!(v["mode"], mode, "{v}");
    assert!(v["ok"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert!(v["rate"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["max_ms"].as_f64().unwrap() >= v["p99_ms"].as_f64().unwrap(),
        "{v}"
    );
}

fn write_ca(dir: &Path, pem: &str) -> PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

fn stderr_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn load_generator_end_to_end() {
    let (addr, ca_pem) = start_server();
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), &ca_pem);
    let ca = ca.to_str().unwrap();
    let url = format!("https://{addr}/");
    let common = ["--cacert", ca, "--warmup", "200ms", "--json"];

    // Full handshake per request, closed loop.
    let mut args = vec!["--mode", "handshake", "-c", "4", "-d", "1s", &url];
    args.extend(common);
    let v = run_json(&args);
    assert_clean_run(&v, "handshake");
    assert_eq!(v["handshakes"], v["ok"], "{v}");
    assert_eq!(v["offered_rate"], Value::Null);
    assert_eq!(v["connections"], 4);

    // Persistent HTTP/1.1 connections.
    let mut args = vec!["--mode", "keepalive", "-c", "2", "-d", "1s", &url];
    args.extend(common);
    let v = run_json(&args);
    assert_clean_run(&v, "keepalive");

    // Resumption (by name, through --server-name), open loop.
    let mut args = vec![
        "--mode",
        "resume",
        "--rate",
        "300",
        "-d",
        "700ms",
        "--server-name",
        "localhost",
        &url,
    ];
    args.extend(common);
    let v = run_json(&args);
    assert_clean_run(&v, "resume");
    assert_eq!(v["offered_rate"], 300.0);
    assert!(v["resumed"].as_u64().unwrap() > 0, "{v}");

    // HTTP/2, open loop.
    let mut args = vec![
        "--mode",
        "h2",
        "-c",
        "2",
        "--streams",
        "4",
        "--rate",
        "500",
        "-d",
        "700ms",
        &url,
    ];
    args.extend(common);
    let v = run_json(&args);
    assert_clean_run(&v, "h2");
    assert_eq!(v["streams"], 4);

    // Human output.
    let out = run(&[
        "--mode",
        "handshake",
        "-d",
        "200ms",
        "--warmup",
        "0s",
        "--cacert",
        ca,
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("latency ms"),
        "{text}"
    );

    // Bad input.
    let e = stderr_of(&["--cacert", ca, "-d", "1s", "https://127.0.0.1:1/"]);
    assert!(
        e.contains("cannot connect to 127.0.0.1:1") && e.contains("refused"),
        "{e}"
    );
    let missing = dir.path().join("nope.pem");
    let e = stderr_of(&["--cacert", missing.to_str().unwrap(), &url]);
    assert!(e.contains("nope.pem"), "{e}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let e = stderr_of(&["--cacert", empty.to_str().unwrap(), &url]);
    assert!(
        e.contains("empty.pem") && e.contains("no PEM certificates"),
        "{e}"
    );
    let e = stderr_of(&["--cacert", ca, "--rate", "0", &url]);
    assert!(e.contains("rate") && e.contains("'0'"), "{e}");
    let e = stderr_of(&["--cacert", ca, "--duration", "ten", &url]);
    assert!(e.contains("invalid duration 'ten'"), "{e}");
    let e = stderr_of(&["--cacert", ca, &format!("http://{addr}/")]);
    assert!(e.contains("not https"), "{e}");
    // Certificate name mismatch is reported at start.
    let e = stderr_of(&["--cacert", ca, "--server-name", "wrong.example", &url]);
    assert!(
        e.contains("TLS handshake") && e.contains("wrong.example"),
        "{e}"
    );
}
