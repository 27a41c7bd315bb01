//! One signature on a SoftHSM token: through hsmgate's [`SignerPool`] (queue, signer
//! thread, one-shot reply) against raw calls through cryptoki on a session of the same
//! token in the same process, one signature in flight. Two raw lines:
//! - `raw C_Sign`: cryptoki's `Session::sign` (C_SignInit, C_Sign for the length, C_Sign);
//! - `raw sign_into`: C_SignInit + one C_Sign into a buffer, the calls the pool makes.
//!
//! `pool` − `raw sign_into` is the pool's dispatch (queue, wake-up of the signer thread,
//! answer, wake-up of the caller) per operation.
//!
//! Groups (each prints `pool` and the raw lines side by side):
//! - `sign/rsa2048-pss-sha256`: `CKM_SHA256_RSA_PKCS_PSS` (the token hashes), salt 32;
//! - `sign/ecdsa-p256-sha256`: SHA-256 on the host, then `CKM_ECDSA` (the pool also
//!   DER-encodes `r || s`, as TLS needs).
//!
//! Run: `cargo bench -p hsmgate-benches --bench sign`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsmgate_signer::Token;
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

fn bench_sign(c: &mut Criterion) {
    let hsm = SoftHsm::new();

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
    let (session, key) = raw_session(&hsm, "rsa");
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
    let (session, key) = raw_session(&hsm, "ec");
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_sign(&mut c);
    c.final_summary();
}
