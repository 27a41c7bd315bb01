//! One signature on a SoftHSM token: through hsmgate's [`SignerPool`] (queue, signer
//! thread, one-shot reply) against raw calls through cryptoki on a session of the same
//! token in the same process, one signature in flight. Two raw lines:
//! - `raw C_Sign`: cryptoki's `Session::sign` (C_SignInit, C_Sign for the length, C_Sign);
//! - `raw sign_into`: C_SignInit + one C_Sign into a buffer, the calls the pool makes.
//!
//! `pool` − `raw sign_into` is the pool's dispatch per operation: for RSA-2048 the queue,
//! the wake-up of the signer thread, the answer and the wake-up of the caller; for P-256,
//! which SoftHSM in the process signs fast, the default pool signs on the caller's thread
//! (`inline`), so `dispatch/ecdsa-p256-sha256-signer-thread` measures the same key with
//! `inline_signing = false`.
//!
//! Groups (each prints `pool` and the raw lines side by side):
//! - `sign/rsa2048-pss-sha256`: `CKM_SHA256_RSA_PKCS_PSS` (the token hashes), salt 32;
//! - `sign/ecdsa-p256-sha256`: SHA-256 on the host, then `CKM_ECDSA` (the pool also
//!   DER-encodes `r || s`, as TLS needs).
//!
//! Then `dispatch/…` lines (printed, not criterion's): pool and `raw sign_into`
//! alternated in blocks of [`BLOCK`] signatures, so that both see the same load on a busy
//! machine, with the wall time and the CPU time of the whole process (every thread) per
//! signature, and their differences: the dispatch's latency and its CPU cost.
//!
//! Run: `cargo bench -p hsmgate-benches --bench sign`.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsmgate_signer::{SignerPool, Token};
use rustls::SignatureScheme;
use sha2::Digest;
use support::SoftHsm;

/// What a TLS 1.3 server signs is ~130 bytes (64 spaces, a context string, a hash).
const MESSAGE: &[u8] = &[0x20; 130];

/// A logged-in session of our own and the handle of the private key labelled `label`.
fn raw_session(hsm: &SoftHsm, label: &str) -> (Session, ObjectHandle) {
    let token = Token::find(&hsm.module, &support::uri(&format!("object={label}"))).expect("token");
    let session = token.open_session().expect("C_OpenSession");
    token.login(&session, &hsm.pin).expect("C_Login");
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("C_FindObjects");
    let [key] = found.as_slice() else {
        panic!(
            "expected one private key labelled {label}, found {}",
            found.len()
        );
    };
    (session, *key)
}

fn bench_sign(c: &mut Criterion, hsm: &SoftHsm) {
    let mut g = c.benchmark_group("sign/rsa2048-pss-sha256");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    let pool = hsm.pool("rsa", 1);
    g.bench_function("pool", |b| {
        b.iter(|| {
            pool.sign(SignatureScheme::RSA_PSS_SHA256, black_box(MESSAGE))
                .expect("pool sign")
        })
    });
    let (session, key) = raw_session(hsm, "rsa");
    let pss = Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    });
    g.bench_function("raw C_Sign", |b| {
        b.iter(|| session.sign(&pss, key, black_box(MESSAGE)).expect("C_Sign"))
    });
    g.bench_function("raw sign_into", |b| {
        b.iter(|| {
            let mut sig = [0u8; 256];
            let len = session
                .sign_into(&pss, key, black_box(MESSAGE), &mut sig)
                .expect("C_Sign");
            sig[..len].to_vec()
        })
    });
    g.finish();
    drop(pool);

    let mut g = c.benchmark_group("sign/ecdsa-p256-sha256");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let pool = hsm.pool("ec", 1);
    g.bench_function("pool", |b| {
        b.iter(|| {
            pool.sign(SignatureScheme::ECDSA_NISTP256_SHA256, black_box(MESSAGE))
                .expect("pool sign")
        })
    });
    let (session, key) = raw_session(hsm, "ec");
    g.bench_function("raw C_Sign", |b| {
        b.iter(|| {
            let digest = sha2::Sha256::digest(black_box(MESSAGE));
            session
                .sign(&Mechanism::Ecdsa, key, &digest)
                .expect("C_Sign")
        })
    });
    g.bench_function("raw sign_into", |b| {
        b.iter(|| {
            let digest = sha2::Sha256::digest(black_box(MESSAGE));
            let mut sig = [0u8; 64];
            let len = session
                .sign_into(&Mechanism::Ecdsa, key, &digest, &mut sig)
                .expect("C_Sign");
            sig[..len].to_vec()
        })
    });
    g.finish();
}

/// Signatures per block of the paired measurement.
const BLOCK: u32 = 50;
/// Blocks of each kind.
const BLOCKS: usize = 40;

/// CPU time of this process so far: the sum over its threads (signer threads included)
/// of the time on a CPU, from `/proc/self/task/*/schedstat` (nanoseconds).
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Wall and CPU µs per signature of one block.
fn block(sign: &mut dyn FnMut()) -> (f64, f64) {
    let (cpu, t) = (process_cpu(), Instant::now());
    for _ in 0..BLOCK {
        sign();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(BLOCK);
    (per(t.elapsed()), per(process_cpu() - cpu))
}

/// Pool against raw `sign_into`, alternated block by block; prints medians over blocks.
/// Then the pool alone for two of its capacity windows, to read how long C_Sign takes on
/// the signer thread itself (its sessions' busy share ÷ its rate, as the pool meters it).
fn paired(name: &str, signer: &SignerPool, pool: &mut dyn FnMut(), raw: &mut dyn FnMut()) {
    for _ in 0..BLOCK {
        pool();
        raw();
    }
    let (mut wall, mut cpu) = ((vec![], vec![]), (vec![], vec![]));
    let (mut d_wall, mut d_cpu) = (vec![], vec![]);
    for _ in 0..BLOCKS {
        let (rw, rc) = block(raw);
        let (pw, pc) = block(pool);
        wall.0.push(rw);
        wall.1.push(pw);
        cpu.0.push(rc);
        cpu.1.push(pc);
        d_wall.push(pw - rw);
        d_cpu.push(pc - rc);
    }
    let (rw, pw) = (median(wall.0), median(wall.1));
    let (rc, pc) = (median(cpu.0), median(cpu.1));
    let (t, mut n) = (Instant::now(), 0u32);
    while t.elapsed() < Duration::from_millis(2200) {
        pool();
        n += 1;
    }
    let whole = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let member = &signer.members()[0];
    let on_thread = member.utilisation / member.rate.max(1.0) * 1e6;
    println!(
        "dispatch/{name}: pool alone {whole:.1} µs/signature, of which C_Sign on the signer thread {on_thread:.1}, outside C_Sign {:.1} (pool meter: busy share ÷ rate, last 1 s window)",
        whole - on_thread
    );
    println!(
        "dispatch/{name}: wall µs/signature raw sign_into {rw:.1}, pool {pw:.1}, pool rate ÷ raw {:.2}, dispatch {:.1} (median of per-block differences); CPU µs/signature (all threads) raw {rc:.1}, pool {pc:.1}, dispatch {:.1}; {BLOCKS}+{BLOCKS} alternated blocks of {BLOCK}",
        rw / pw,
        median(d_wall),
        median(d_cpu),
    );
}

fn bench_dispatch(hsm: &SoftHsm) {
    let (session, key) = raw_session(hsm, "ec");
    // P-256 twice: as configured by default (SoftHSM in the process signs it fast, so on
    // the caller's thread), and through a signer thread (`inline_signing = false`).
    for (name, inline) in [
        ("ecdsa-p256-sha256", true),
        ("ecdsa-p256-sha256-signer-thread", false),
    ] {
        let admission = hsmgate_config::Admission {
            inline_signing: inline,
            ..Default::default()
        };
        let pool = hsm.pool_with("ec", 1, admission);
        paired(
            name,
            &pool,
            &mut || {
                black_box(
                    pool.sign(SignatureScheme::ECDSA_NISTP256_SHA256, black_box(MESSAGE))
                        .expect("pool sign"),
                );
            },
            &mut || {
                let digest = sha2::Sha256::digest(black_box(MESSAGE));
                let mut sig = [0u8; 64];
                let len = session
                    .sign_into(&Mechanism::Ecdsa, key, &digest, &mut sig)
                    .expect("C_Sign");
                black_box(sig[..len].to_vec());
            },
        );
    }
    let pool = hsm.pool("rsa", 1);
    let (session, key) = raw_session(hsm, "rsa");
    let pss = Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    });
    paired(
        "rsa2048-pss-sha256",
        &pool,
        &mut || {
            black_box(
                pool.sign(SignatureScheme::RSA_PSS_SHA256, black_box(MESSAGE))
                    .expect("pool sign"),
            );
        },
        &mut || {
            let mut sig = [0u8; 256];
            let len = session
                .sign_into(&pss, key, black_box(MESSAGE), &mut sig)
                .expect("C_Sign");
            black_box(sig[..len].to_vec());
        },
    );
}

fn main() {
    // One token per process: a PKCS#11 module is initialised once.
    let hsm = SoftHsm::new();
    let mut c = Criterion::default().configure_from_args();
    bench_sign(&mut c, &hsm);
    c.final_summary();
    // The paired lines run with the criterion lines unless a filter is given that does
    // not match "dispatch".
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    if filter.is_none_or(|f| "dispatch".contains(&f) || f.contains("dispatch")) {
        bench_dispatch(&hsm);
    }
}
