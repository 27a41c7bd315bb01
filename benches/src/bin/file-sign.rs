//! `file-sign KEY.pem SCHEME SECONDS`: the CPU of one TLS handshake signature made in
//! software with a PEM file key, through the same rustls provider (aws-lc-rs) that
//! hsmgate uses for a file key. SCHEME is `rsa-pss` (rsa_pss_rsae_sha256) or `ecdsa`
//! (ecdsa_secp256r1_sha256); the message is the size of a TLS 1.3 CertificateVerify input.
//! After a 0.5 s warm-up it signs for SECONDS on one thread and prints
//! `scheme signatures seconds signatures_per_s cpu_us_per_signature`, the CPU being the
//! thread's own run time from `/proc/thread-self/schedstat` (nanoseconds).
//!
//! `benches/compare/compare.sh` adds this figure back when it decomposes a token-key
//! handshake's CPU: (token key) − (file key) − (raw `C_Sign`) leaves the offload's cost
//! minus the software signature the file-key handshake made, so the offload's own cost is
//! that plus this.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustls::SignatureScheme;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// This thread's CPU time so far, in nanoseconds (`/proc/thread-self/schedstat`'s first field).
fn thread_cpu_ns() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self/schedstat: unexpected {text:?}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let [path, scheme, secs] = args else {
        return Err("usage: file-sign KEY.pem rsa-pss|ecdsa SECONDS".into());
    };
    let scheme = match scheme.as_str() {
        "rsa-pss" => SignatureScheme::RSA_PSS_SHA256,
        "ecdsa" => SignatureScheme::ECDSA_NISTP256_SHA256,
        other => return Err(format!("unknown scheme {other} (rsa-pss or ecdsa)")),
    };
    let secs: f64 = secs
        .parse()
        .map_err(|_| format!("SECONDS: not a number: {secs}"))?;
    let der = PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{path}: {e}"))?;
    let key = any_supported_type(&der).map_err(|e| format!("{path}: {e}"))?;
    let signer = key
        .choose_scheme(&[scheme])
        .ok_or_else(|| format!("{path}: the key cannot sign with {scheme:?}"))?;
    // 64 spaces, the context string, a zero byte and a SHA-256 transcript hash.
    let mut msg = vec![0x20u8; 64];
    msg.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    msg.extend_from_slice(&[0xa5; 32]);

    let sign = || signer.sign(&msg).map_err(|e| format!("sign: {e}"));
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        sign()?;
    }
    let (t0, c0) = (Instant::now(), thread_cpu_ns()?);
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        sign()?;
        n += 1;
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu_ns()? - c0);
    Ok(format!(
        "{}\t{n}\t{wall:.3}\t{:.1}\t{:.1}",
        args[1],
        n as f64 / wall,
        cpu as f64 / 1e3 / n.max(1) as f64
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("file-sign: {e}");
            ExitCode::FAILURE
        }
    }
}
