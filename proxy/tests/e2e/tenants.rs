//! Tenants on their own HSMs (issue 14): two servers of one nginx configuration, each key
//! on its own HA group (tenant A on lab HSM `hsm-a`, tenant B on `hsm-b`). Freezing
//! tenant A's HSM (SIGSTOP, a hung network HSM) while clients of both keep handshaking
//! must not slow tenant B: its handshakes all succeed and their latency stays where it
//! was. The figures are printed; the assertions are the failures and a loose bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::{admin_get, client_config, connect, metric};
use crate::support::hsm::p11kit_client_module;
use crate::support::lab::HaLab;
use crate::support::net::free_port;
use crate::support::nginx::Server;
use crate::support::start_upstream;

/// `n` sequential full handshakes from each of `workers` tasks: (latencies of the
/// successful ones, failures).
async fn handshakes(
    addr: SocketAddr,
    ca: &std::path::Path,
    workers: usize,
    n: usize,
) -> (Vec<Duration>, usize) {
    let config = client_config(ca, &[b"http/1.1"]);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let mut out = (Vec::new(), 0);
                for _ in 0..n {
                    let t = Instant::now();
                    match tokio::time::timeout(
                        Duration::from_secs(5),
                        connect(addr, Arc::clone(&config)),
                    )
                    .await
                    {
                        Ok(Ok(_)) => out.0.push(t.elapsed()),
                        _ => out.1 += 1,
                    }
                }
                out
            })
        })
        .collect();
    let mut all = (Vec::new(), 0);
    for t in tasks {
        let (mut l, f) = t.await.expect("task");
        all.0.append(&mut l);
        all.1 += f;
    }
    all
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_tenant_hsm_does_not_slow_another_tenant() {
    let mut lab = HaLab::new(&["hsm-a", "hsm-b"]);
    let upstream = start_upstream("echo");
    let (port_a, port_b, admin) = (free_port(), free_port(), free_port());
    let d = lab.path().to_path_buf();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let client = p11kit_client_module();
    let group = |tenant: &str, member: &str| {
        format!(
            "    map $host $hsmgate_group_{tenant} {{\n        default \"sign_timeout_ms=1000 op_timeout_ms=500\";\n        \
             \"r1 primary {member}\" \"module={} token={member} pin_file={} sessions=2 env.P11_KIT_SERVER_ADDRESS={}\";\n    }}\n",
            client.display(),
            lab.pin_file.display(),
            lab.address(member)
        )
    };
    let server = |tenant: &str, port: u16| {
        format!(
            "    server {{\n        listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        \
             ssl_certificate_key \"pkcs11:object=tls;type=private?x-hsmgate-group={tenant}\";\n        \
             location / {{ proxy_pass http://{upstream}; }}\n    }}\n",
            lab.chain_pem.display()
        )
    };
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "env HSMGATE_ADMIN=127.0.0.1:{admin};\npid {}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n{}{}{}{}}}\n",
            d.display(),
            group("tenant_a", "hsm-a"),
            group("tenant_b", "hsm-b"),
            server("tenant_a", port_a),
            server("tenant_b", port_b),
        ),
    )
    .expect("conf");
    let proxy = Server::hsmgate(&d, &conf, &[port_a, port_b, admin]);
    let a: SocketAddr = ([127, 0, 0, 1], port_a).into();
    let b: SocketAddr = ([127, 0, 0, 1], port_b).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();

    // Before: tenant B alone, then both tenants at once.
    let (_, failed) = handshakes(a, &lab.ca_pem, 1, 5).await;
    assert_eq!(
        failed,
        0,
        "tenant A before the freeze\n{}",
        proxy.log_text()
    );
    let (before, failed) = handshakes(b, &lab.ca_pem, 2, 25).await;
    assert_eq!(failed, 0, "tenant B before\n{}", proxy.log_text());

    // Tenant A's HSM hangs; its clients keep trying while B is measured.
    lab.signal("hsm-a", "STOP");
    let ca = lab.ca_pem.clone();
    let a_load = tokio::spawn(async move { handshakes(a, &ca, 4, 6).await });
    let (during, failed) = handshakes(b, &lab.ca_pem, 2, 25).await;
    let (a_ok, a_failed) = a_load.await.expect("tenant A load");
    lab.signal("hsm-a", "CONT");
    let (before_p99, during_p99) = (p99(before), p99(during));
    eprintln!(
        "tenant B handshake p99: {before_p99:?} before, {during_p99:?} while tenant A's HSM is frozen \
         ({:.2}x); tenant A meanwhile: {} ok, {a_failed} failed",
        during_p99.as_secs_f64() / before_p99.as_secs_f64().max(1e-6),
        a_ok.len()
    );
    assert_eq!(
        failed,
        0,
        "tenant B failed while A was frozen\n{}",
        proxy.log_text()
    );
    assert!(a_failed > 0, "tenant A's frozen HSM failed no handshake");
    // Loose: B's handshakes never wait on A's deadline (1 s).
    assert!(
        during_p99 < Duration::from_millis(900),
        "tenant B p99 {during_p99:?}"
    );

    // Metrics are per tenant (the group label).
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metric(
            &metrics,
            "hsmgate_admission_admitted_total",
            &["group=\"tenant_b\""]
        ) >= 50.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "hsmgate_admission_admitted_total",
            &["group=\"tenant_a\""]
        ) >= 5.0,
        "{metrics}"
    );
}
