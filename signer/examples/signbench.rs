//! Signatures/s through the signer pool, for comparison with a raw PKCS#11 loop
//! (`p11bench` of the HSM lab) on the same HSMs.
//!
//! `cargo run --release -p hsmgate-signer --example signbench -- CONFIG THREADS SECONDS`
//!
//! CONFIG is an hsmgate TOML file (`[pkcs11]` or `[[hsm.group]]`); THREADS callers sign
//! RSA PKCS#1 v1.5 SHA-256 (the lab's `p11bench -M rsa` mechanism; PSS for EC keys is
//! ECDSA) back to back for SECONDS. Prints one line: rate, p50, p99, errors.

use std::time::{Duration, Instant};

use hsmgate_signer::{GroupSettings, SignerPool};
use rustls::SignatureScheme;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, threads, seconds] = args.as_slice() else {
        return Err("usage: signbench CONFIG THREADS SECONDS".into());
    };
    let config = hsmgate_config::load(config.as_ref())?;
    let threads: usize = threads.parse()?;
    let run = Duration::from_secs_f64(seconds.parse()?);
    let pool = SignerPool::start_group(GroupSettings::from_config(&config, None)?)?;
    let scheme = [
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ]
    .into_iter()
    .find(|s| pool.schemes().contains(s))
    .unwrap_or(pool.schemes()[0]);
    // Warm up every session once.
    for _ in 0..threads {
        pool.sign(scheme, b"warm-up")?;
    }
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let pool = pool.clone();
                s.spawn(move || {
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    let msg = format!("signbench message {i}");
                    while start.elapsed() < run {
                        let t = Instant::now();
                        match pool.sign(scheme, msg.as_bytes()) {
                            Ok(_) => lat.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let errors: usize = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.0).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "scheme={scheme:?} threads={threads} ops={} secs={secs:.2} ops_per_s={:.1} p50_ms={:.3} p99_ms={:.3} errors={errors} members={}",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        pool.describe_members()
    );
    Ok(())
}
