//! Configuration loading costs: RFC 7512 PKCS#11 URI parsing, a native TOML config through
//! parse + validation (`hsmgate_config::load_str`), and the nginx reader on the `offload`
//! fixture of `config/tests/fixtures/nginx/` (main file, two includes, `mime.types`).
//!
//! These run at start-up and on reload only; the bench guards against accidental
//! quadratic behaviour rather than chasing nanoseconds.
//!
//! Run: `cargo bench -p hsmgate-benches --bench config`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;
use hsmgate_config::nginx::{self, NginxOptions};
use hsmgate_config::{Pkcs11Uri, parse_key_string};

const URI_SHORT: &str = "pkcs11:token=proxy;object=proxy-rsa;type=private";
const URI_LONG: &str = "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;\
    serial=8a7d1b2c3e4f5061;token=edge%20proxy%20%231;object=tls-rsa-2048;id=%01%02%03%04;\
    type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/hsmgate/pin";
const ENGINE_KEY: &str =
    "engine:pkcs11:pkcs11:token=proxy;object=proxy-rsa;type=private?pin-value=1234";

const NATIVE: &str = r#"
[[listener]]
address = "127.0.0.1:8443"
tls_versions = ["1.2", "1.3"]
[[listener]]
address = "[::1]:8443"
http2 = false
[tls]
certificate = "cert.pem"
key = "pkcs11:token=proxy;object=proxy-rsa;type=private?pin-source=file:pin.txt"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
sessions = 4
queue_depth = 1024
sign_timeout_ms = 2000
env = { SOFTHSM2_CONF = "/tmp/x/softhsm2.conf" }
[upstream]
address = "127.0.0.1:8080"
connect_timeout_ms = 3000
[admin]
address = "127.0.0.1:9901"
[shutdown]
grace_ms = 10000
"#;

fn offload_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures/nginx/offload")
}

fn bench_config(c: &mut Criterion) {
    // Fail with a clear message before measuring anything.
    for uri in [URI_SHORT, URI_LONG] {
        Pkcs11Uri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    }
    parse_key_string(ENGINE_KEY).unwrap_or_else(|e| panic!("{ENGINE_KEY}: {e}"));

    let mut g = c.benchmark_group("config/pkcs11-uri");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("short", |b| {
        b.iter(|| Pkcs11Uri::parse(black_box(URI_SHORT)).expect("uri"))
    });
    g.bench_function("long, percent-encoded, query", |b| {
        b.iter(|| Pkcs11Uri::parse(black_box(URI_LONG)).expect("uri"))
    });
    g.bench_function("engine:pkcs11: form", |b| {
        b.iter(|| parse_key_string(black_box(ENGINE_KEY)).expect("key string"))
    });
    g.finish();

    let mut g = c.benchmark_group("config/load");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let source = Path::new("/etc/hsmgate/hsmgate.toml");
    g.bench_function("native toml", |b| {
        b.iter(|| hsmgate_config::load_str(black_box(NATIVE), source).expect("native config"))
    });
    let prefix = offload_fixture();
    let opts = NginxOptions {
        prefix: Some(prefix.clone()),
        globals: None,
    };
    let main = prefix.join("nginx.conf");
    nginx::load(&main, &opts).expect("the offload fixture loads");
    g.bench_function("nginx offload (3 files + mime.types)", |b| {
        b.iter(|| nginx::load(black_box(&main), &opts).expect("nginx config"))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_config(&mut c);
    c.final_summary();
}
