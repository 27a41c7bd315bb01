//! The signer against a real SoftHSM token, in process: a token made through PKCS#11
//! (C_InitToken, C_InitPIN, C_GenerateKeyPair), pools for RSA-2048 and ECDSA P-256 keys,
//! every offered scheme signed and verified, key lookup errors, and a full queue.
//!
//! A PKCS#11 module is initialised once per process and SoftHSM reads its configuration
//! then, so every test here shares one token directory. Each test ends by waiting for
//! the signer threads of the pools it dropped ([`settle`]): a thread still closing its
//! session while the process exits races SoftHSM's own exit-time cleanup (a SIGSEGV
//! after every test passed, seen once in CI), as `hsmgate` itself waits before exiting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hsmgate_config::{Pkcs11Uri, Secret};
use hsmgate_signer::{
    KeyKind, Module, PoolSettings, SignerError, SignerPool, Token, provision, verify,
};

struct Fixture {
    _dir: tempfile::TempDir,
    module: PathBuf,
    env: BTreeMap<String, String>,
    pin: Secret,
    _loaded: Arc<Module>,
}

fn softhsm() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM is installed (scripts/deps.sh)")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("tokens");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .expect("conf");
        let env = BTreeMap::from([("SOFTHSM2_CONF".to_string(), conf.display().to_string())]);
        let module = softhsm();
        let loaded = Module::load(&module, &env).expect("load SoftHSM");
        let pin = Secret::new("signer-test-pin");
        provision::init_token(&loaded, "signer-test", &Secret::new("so-pin-1234"), &pin)
            .expect("init token");
        let token = Token::find(&loaded, &uri("object=any")).expect("token");
        provision::generate_key_pair(&token, &pin, KeyKind::Rsa(2048), "rsa", &[1])
            .expect("RSA key");
        provision::generate_key_pair(&token, &pin, KeyKind::EcP256, "ec", &[2]).expect("EC key");
        Fixture {
            _dir: dir,
            module,
            env,
            pin,
            _loaded: loaded,
        }
    })
}

/// Wait until every signer thread of the pools dropped so far has closed its session.
fn settle() {
    hsmgate_signer::wait_for_workers(Duration::from_secs(10));
}

fn uri(object: &str) -> Pkcs11Uri {
    format!("pkcs11:token=signer-test;{object};type=private")
        .parse()
        .expect("uri")
}

fn settings(object: &str, sessions: usize, queue_depth: usize) -> PoolSettings {
    let f = fixture();
    PoolSettings {
        module: f.module.clone(),
        env: f.env.clone(),
        uri: uri(object),
        pin: f.pin.clone(),
        sessions,
        queue_depth,
        sign_timeout: Duration::from_secs(10),
        batch_max: 8,
        capacity: None,
        admission: hsmgate_config::Admission::default(),
    }
}

#[test]
fn rsa_pool_signs_every_offered_scheme_verifiably() {
    let pool = SignerPool::start(&settings("object=rsa", 2, 16)).expect("pool");
    assert_eq!(pool.key_kind(), KeyKind::Rsa(2048));
    assert_eq!(pool.schemes().len(), 6, "{:?}", pool.schemes());
    for &scheme in pool.schemes() {
        let message = format!("message for {scheme:?}");
        let sig = pool.sign(scheme, message.as_bytes()).expect("sign");
        assert!(
            verify(pool.spki(), scheme, message.as_bytes(), &sig),
            "{scheme:?}"
        );
        assert!(
            !verify(pool.spki(), scheme, b"another message", &sig),
            "{scheme:?}"
        );
    }
    assert_eq!(pool.in_flight(), 0);
    drop(pool);
    settle();
}

#[test]
fn ecdsa_pool_hashes_on_the_host_and_returns_der() {
    let pool = SignerPool::start(&settings("id=%02", 1, 16)).expect("pool");
    assert_eq!(pool.key_kind(), KeyKind::EcP256);
    assert_eq!(
        pool.schemes(),
        &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256]
    );
    let sig = pool
        .sign(rustls::SignatureScheme::ECDSA_NISTP256_SHA256, b"hello")
        .expect("sign");
    assert_eq!(sig[0], 0x30, "DER SEQUENCE");
    assert!(verify(
        pool.spki(),
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
        b"hello",
        &sig
    ));
    // A scheme the key cannot make is refused before reaching the token.
    let err = pool
        .sign(rustls::SignatureScheme::RSA_PSS_SHA256, b"x")
        .expect_err("wrong scheme");
    assert!(
        matches!(err, SignerError::UnsupportedScheme { .. }),
        "{err}"
    );
    drop(pool);
    settle();
}

#[test]
fn lookup_errors_name_what_was_asked_for() {
    let err = SignerPool::start(&settings("object=missing", 1, 4)).expect_err("no such key");
    assert_eq!(
        err.to_string(),
        "token signer-test: no private key object matching object=missing"
    );
    let mut s = settings("object=rsa", 1, 4);
    s.uri.token = Some("nope".into());
    let err = SignerPool::start(&s)
        .expect_err("no such token")
        .to_string();
    assert!(
        err.starts_with("no token matching token=nope in module "),
        "{err}"
    );
    assert!(err.contains("\"signer-test\""), "{err}");
    // Two keys match when only the type is given.
    let mut s = settings("object=rsa", 1, 4);
    s.uri.object = None;
    let err = SignerPool::start(&s).expect_err("ambiguous").to_string();
    assert!(err.contains("2 private key objects match"), "{err}");
    settle();
}

/// `n` signatures of `b"burst"` asked for at once, each from its own thread.
fn burst(
    pool: &SignerPool,
    scheme: rustls::SignatureScheme,
    n: usize,
) -> Vec<Result<Vec<u8>, SignerError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| pool.sign(scheme, b"burst")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn a_full_queue_refuses_at_once_and_everything_accepted_verifies() {
    let pool = SignerPool::start(&settings("object=rsa", 1, 1)).expect("pool");
    let scheme = rustls::SignatureScheme::RSA_PSS_SHA256;
    let results = burst(&pool, scheme, 32);
    let mut ok = 0;
    for r in results {
        match r {
            Ok(sig) => {
                assert!(verify(pool.spki(), scheme, b"burst", &sig));
                ok += 1;
            }
            Err(SignerError::Overloaded { capacity: 1, .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(pool.in_flight(), 0);
    drop(pool);
    settle();
}

/// A full handshake's signing step on a signer thread (`SignerPool::offload`): SoftHSM's
/// RSA-2048 computes in this process and slowly, so the pool runs such steps on its
/// signer threads, whose own session signs; many at once all verify, a second signature
/// in one step takes the usual path, and nothing is left in flight.
#[test]
fn rsa_in_the_process_runs_handshake_steps_on_its_signer_threads() {
    let pool = SignerPool::start(&settings("object=rsa", 2, 64)).expect("pool");
    assert!(
        pool.offloads(),
        "SoftHSM's RSA computes in the process, slowly"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let scheme = rustls::SignatureScheme::RSA_PSS_SHA256;
    let steps: Vec<_> = (0..16)
        .map(|i| {
            let p = pool.clone();
            let message = format!("handshake {i}");
            pool.offload(move || {
                let thread = std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string();
                let first = p.sign(scheme, message.as_bytes());
                // A second signature in one step (none in TLS) goes the usual way.
                let second = (i == 0).then(|| p.sign(scheme, b"second"));
                (thread, message, first, second)
            })
        })
        .collect();
    for step in steps {
        let Ok((thread, message, first, second)) = rt.block_on(step) else {
            panic!("a step did not run on a signer thread");
        };
        assert!(thread.starts_with("sign-"), "ran on {thread:?}");
        let sig = first.expect("signed");
        assert!(verify(pool.spki(), scheme, message.as_bytes(), &sig));
        if let Some(second) = second {
            assert!(verify(
                pool.spki(),
                scheme,
                b"second",
                &second.expect("second")
            ));
        }
    }
    assert_eq!(pool.in_flight(), 0);
    drop(pool);
    settle();
}

/// Called from a task of a multi-thread runtime, a step runs on that runtime thread with
/// a session of the member's own (`on_runtime`), while at least half the runtime threads
/// stay free: never more steps at once on runtime threads than half the runtime's
/// threads; the rest go to the signer threads; with one runtime thread, all of them do.
#[test]
fn rsa_steps_run_on_a_runtime_thread_that_can_be_spared() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NOW: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    let pool = SignerPool::start(&settings("object=rsa", 2, 64)).expect("pool");
    let scheme = rustls::SignatureScheme::RSA_PSS_SHA256;
    for workers in [1, 2, 4] {
        MOST.store(0, Ordering::SeqCst);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("rt-worker")
            .build()
            .expect("runtime");
        let threads: Vec<String> = rt.block_on(async {
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let p = pool.clone();
                    tokio::spawn(async move {
                        let signer = p.clone();
                        let spki = p.spki().to_vec();
                        let message = format!("handshake {i}");
                        let step = p.offload(move || {
                            let thread = std::thread::current()
                                .name()
                                .unwrap_or_default()
                                .to_string();
                            let here = thread == "rt-worker";
                            if here {
                                let now = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                                MOST.fetch_max(now, Ordering::SeqCst);
                            }
                            let sig = signer.sign(scheme, message.as_bytes());
                            // Long enough for the other tasks to come while it runs.
                            std::thread::sleep(Duration::from_millis(5));
                            if here {
                                NOW.fetch_sub(1, Ordering::SeqCst);
                            }
                            (thread, message, sig)
                        });
                        let Ok((thread, message, sig)) = step.await else {
                            panic!("a step did not run");
                        };
                        assert!(verify(
                            &spki,
                            scheme,
                            message.as_bytes(),
                            &sig.expect("signed")
                        ));
                        thread
                    })
                })
                .collect();
            let mut threads = Vec::new();
            for t in tasks {
                threads.push(t.await.expect("task"));
            }
            threads
        });
        let here = threads.iter().filter(|t| *t == "rt-worker").count();
        assert!(
            threads
                .iter()
                .all(|t| t == "rt-worker" || t.starts_with("sign-")),
            "{threads:?}"
        );
        if workers == 1 {
            assert_eq!(here, 0, "one runtime thread: none to spare");
        } else {
            assert!(here >= 1, "{workers} runtime threads: {threads:?}");
            let most = MOST.load(Ordering::SeqCst);
            assert!(
                most <= workers / 2,
                "{most} steps at once on {workers} runtime threads"
            );
        }
        assert_eq!(pool.in_flight(), 0);
    }
    drop(pool);
    settle();
}

/// Steps a member cannot take (its queue full) come back un-run to their caller, who
/// signs by the usual path: none is lost. A token that signs inline (SoftHSM's P-256)
/// takes none.
#[test]
fn steps_a_member_cannot_take_come_back_unrun() {
    let pool = SignerPool::start(&settings("object=rsa", 1, 1)).expect("pool");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let scheme = rustls::SignatureScheme::RSA_PSS_SHA256;
    // The one signer thread is held by a first step; one more fits the queue (depth 1);
    // the rest come back.
    let (started, is_started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    type Step = Box<dyn FnOnce() -> Result<Vec<u8>, SignerError> + Send>;
    let p = pool.clone();
    let first = pool.offload(Box::new(move || {
        started.send(()).expect("test waits");
        released.recv().expect("test releases");
        p.sign(scheme, b"step")
    }) as Step);
    is_started.recv().expect("the first step runs");
    let mut steps = vec![first];
    steps.extend((0..5).map(|_| {
        let p = pool.clone();
        pool.offload(Box::new(move || p.sign(scheme, b"step")) as Step)
    }));
    release.send(()).expect("the first step waits");
    let (mut ran, mut returned) = (0, 0);
    for step in steps {
        let sig = match rt.block_on(step) {
            Ok(sig) => {
                ran += 1;
                sig
            }
            Err(hsmgate_signer::Offloaded::Returned(step)) => {
                returned += 1;
                rt.block_on(async { tokio::task::spawn(async { step() }).await })
                    .expect("task")
            }
            Err(hsmgate_signer::Offloaded::Lost) => panic!("a step was lost"),
        };
        assert!(verify(pool.spki(), scheme, b"step", &sig.expect("signed")));
    }
    assert_eq!((ran, returned), (2, 4));
    assert_eq!(pool.in_flight(), 0);
    drop(pool);

    let pool = SignerPool::start(&settings("id=%02", 1, 16)).expect("pool");
    assert!(!pool.offloads(), "P-256 signs on the caller's thread");
    let step = pool.offload(|| ());
    assert!(matches!(
        rt.block_on(step),
        Err(hsmgate_signer::Offloaded::Returned(_))
    ));
    drop(pool);
    settle();
}

/// Counters by name and labels, for the tests that read what the pool counted (gauges
/// and histograms are not kept).
#[derive(Default)]
struct Counters(std::sync::Mutex<BTreeMap<String, Arc<std::sync::atomic::AtomicU64>>>);

impl Counters {
    /// The process's recorder (installed on first use).
    fn installed() -> &'static Counters {
        static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();
        COUNTERS.get_or_init(|| {
            let counters: &'static Counters = Box::leak(Box::default());
            metrics::set_global_recorder(counters).expect("no other recorder");
            counters
        })
    }

    /// The sum over every counter named `name` with a label `label`.
    fn sum(&self, name: &str, label: (&str, &str)) -> u64 {
        let all = self.0.lock().expect("counters");
        all.iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| k.contains(&format!("{}=\"{}\"", label.0, label.1)))
            .map(|(_, v)| v.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut all = self.0.lock().expect("counters");
        metrics::Counter::from_arc(Arc::clone(all.entry(name).or_default()))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// A signature whose caller gave up at its deadline while the token was still signing
/// it is counted `late`, not `ok`: its answer went nowhere. One signer session and a
/// deadline of a few signatures' time, then a burst: the last signature to start before
/// its deadline almost always ends after it (the next one found its deadline passed and
/// was not signed, `expired`); "almost": the check after the call and the next one's
/// pick are microseconds apart, so a burst is tried again if none was late.
#[test]
fn a_signature_that_returns_after_its_deadline_is_counted_late() {
    let counters = Counters::installed();
    let mut s = settings("object=rsa", 1, 64);
    s.sign_timeout = Duration::from_millis(3);
    // A call running past the operation timeout fences the member (its answer is then
    // `lost`); a token slowed down by a busy machine must not be fenced here.
    let mut group = s.into_group(None);
    group.op_timeout = Duration::from_secs(10);
    group.recovery_timeout = Duration::from_secs(10);
    let pool = SignerPool::start_group(group).expect("pool");
    let scheme = rustls::SignatureScheme::RSA_PSS_SHA256;
    let ops = "hsmgate_signer_operations_total";
    let late_before = counters.sum(ops, ("result", "late"));
    let mut late = 0;
    for _burst in 0..5 {
        let results = burst(&pool, scheme, 24);
        for r in &results {
            match r {
                Ok(sig) => assert!(verify(pool.spki(), scheme, b"burst", sig)),
                Err(SignerError::Timeout { .. }) => {}
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        // The signer thread ends the burst on its own time.
        let t = std::time::Instant::now();
        while pool.in_flight() > 0 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.in_flight(), 0);
        late = counters.sum(ops, ("result", "late")) - late_before;
        if late > 0 {
            break;
        }
    }
    assert!(late >= 1, "no signature was counted late");
    drop(pool);
    settle();
}
