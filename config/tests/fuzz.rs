//! Property tests (issue 10) of the three readers of operator input: the nginx lexer,
//! parser and builder (through [`nginx::load`], includes included), the TOML loader
//! ([`load_str`]) and the RFC 7512 URI parser. Inputs are both arbitrary text and text
//! built from each format's own words, so that the deep paths are reached. No panic, no
//! hang (each case runs under a deadline), and every error names its file, and a line
//! within it where it has one. `PROPTEST_CASES` sets the number of cases (256 by
//! default; `scripts/fuzz.sh` runs more).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use hsmgate_config::nginx::{self, NginxOptions};
use hsmgate_config::{ConfigError, Pkcs11Uri, load_str, parse_key_string};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Longest a single case may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(10);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Run `f` on another thread; panic if it takes longer than [`DEADLINE`].
fn within_deadline<T: Send + 'static>(what: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang (> {DEADLINE:?}) on:\n{what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("panic on:\n{what}"),
    }
}

/// The error names a file; when it names a line, the line exists in that file's text.
fn check_location(e: &ConfigError, texts: &[(PathBuf, &str)]) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!e.file.as_os_str().is_empty(), "no file: {shown}");
    prop_assert!(
        shown.starts_with(&e.file.display().to_string()),
        "message does not start with the file: {shown}"
    );
    if let Some((_, text)) = texts.iter().find(|(p, _)| *p == e.file) {
        let lines = text.split('\n').count();
        prop_assert!(e.line <= lines, "line {} of {lines}: {shown}", e.line);
        if e.line > 0 {
            prop_assert!(
                shown.contains(&format!(":{}:", e.line)),
                "no line in: {shown}"
            );
        }
    }
    Ok(())
}

// === nginx ===

const NGINX_WORDS: &[&str] = &[
    "http",
    "server",
    "events",
    "upstream",
    "location",
    "listen",
    "server_name",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "proxy_pass",
    "proxy_set_header",
    "return",
    "root",
    "include",
    "worker_processes",
    "worker_connections",
    "error_log",
    "access_log",
    "log_format",
    "keepalive_timeout",
    "client_max_body_size",
    "large_client_header_buffers",
    "http2_max_concurrent_streams",
    "map",
    "set",
    "if",
    "env",
    "pid",
    "daemon",
    "default_server",
    "ssl",
    "http2",
    "on",
    "off",
    "127.0.0.1:8443",
    "[::1]:443",
    "443",
    "http://app",
    "http://127.0.0.1:8080/x",
    "pkcs11:token=t;object=k",
    "engine:pkcs11:pkcs11:token=t;object=k?pin-source=file:pin",
    "~^(?<name>.+)$",
    "~*",
    "=",
    "^~",
    "/",
    "*.example.com",
    "$host",
    "${host}x",
    "$1",
    "10m",
    "1k",
    "shared:SSL:10m",
    "TLSv1.2",
    "TLSv1.3",
    "HIGH:!aNULL",
    "max_fails=1",
    "fail_timeout=10s",
    "weight=0",
    "backup",
    "inc.conf",
    "main.conf",
    "*.conf",
    "{",
    "}",
    ";",
    "#",
    "\n",
    "\"",
    "'",
    "\\",
    "$",
    "é",
    "\u{0}",
    "",
];

fn nginx_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        8 => prop::sample::select(NGINX_WORDS).prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ];
    let sep = prop::sample::select(&[" ", " ", "\t", "\n", ";\n", " { ", " }\n", "\"", "'"][..]);
    let word_sep = (word.clone(), sep);
    // Well-formed blocks with words from the vocabulary in every slot: these get past the
    // lexer and parser into the builder's checks.
    let directive = (
        prop::sample::select(NGINX_WORDS),
        prop::collection::vec(word, 0..4),
    )
        .prop_map(|(name, args)| format!("{name} {};", args.join(" ")));
    let directives = prop_oneof![
        Just(String::new()),
        prop::collection::vec(directive, 1..6).prop_map(|d| d.join("\n")),
    ];
    let skeleton = (
        directives.clone(),
        directives.clone(),
        directives.clone(),
        directives,
        any::<bool>(),
    )
        .prop_map(|(main, http, server, location, inc)| {
            let include = if inc { "include inc.conf;" } else { "" };
            format!(
                "{main}\nevents {{ }}\nhttp {{ {http}\n upstream app {{ server 127.0.0.1:8080; }}\n \
                 server {{ listen 127.0.0.1:8443; {server}\n {include}\n \
                 location / {{ proxy_pass http://app; {location} }} }} }}\n"
            )
        });
    prop_oneof![
        4 => prop::collection::vec(word_sep, 0..80).prop_map(|parts| {
            parts.into_iter().map(|(w, s)| format!("{w}{s}")).collect()
        }),
        4 => skeleton,
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn nginx_never_panics_or_hangs_and_errors_carry_file_and_line(
        main in nginx_text(),
        inc in nginx_text(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = dir.path().join("conf");
        std::fs::create_dir_all(&conf_dir).expect("conf dir");
        let main_path = conf_dir.join("main.conf");
        let inc_path = conf_dir.join("inc.conf");
        std::fs::write(&main_path, &main).expect("write");
        std::fs::write(&inc_path, &inc).expect("write");
        let what = format!("main.conf:\n{main}\n--- inc.conf:\n{inc}");
        let path = main_path.clone();
        let result = within_deadline(what, move || {
            nginx::load(&path, &NginxOptions::default()).map(|_| ())
        });
        if let Err(e) = result {
            check_location(&e, &[(main_path, &main), (inc_path, &inc)])?;
        }
    }
}

// === TOML ===

const TOML_LINES: &[&str] = &[
    "[[listener]]",
    "[tls]",
    "[pkcs11]",
    "[upstream]",
    "[shutdown]",
    "[admin]",
    "[limits]",
    "[log]",
    "address = \"127.0.0.1:8443\"",
    "address = \"[::1]:8443\"",
    "address = \"nowhere\"",
    "address = \"127.0.0.1:0\"",
    "tls_versions = [\"1.2\", \"1.3\"]",
    "tls_versions = []",
    "tls_versions = [\"1.1\"]",
    "http2 = true",
    "certificate = \"cert.pem\"",
    "key = \"pkcs11:token=demo;object=tls;type=private?pin-source=file:pin.txt\"",
    "key = \"engine:pkcs11:pkcs11:token=demo;object=tls\"",
    "key = \"pkcs11:\"",
    "key = \"pkcs11:token=%zz\"",
    "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
    "pin_file = \"pin.txt\"",
    "pin_env = \"HSMGATE_PIN\"",
    "sessions = 4",
    "sessions = 0",
    "sessions = 99999999999999999999",
    "queue_depth = -1",
    "sign_timeout_ms = 2000",
    "capacity = 1e3",
    "env = { SOFTHSM2_CONF = \"/tmp/x\" }",
    "connect_timeout_ms = 1000",
    "grace_ms = 2000",
    "unknown = 1",
    "a.b.c = 1",
    "\"quoted key\" = \"é\"",
    "x = '''\nmulti\n'''",
    "x = \"\"\"\nmulti\n\"\"\"",
    "= 1",
    "[",
    "]",
    "# comment",
    "",
];

fn toml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(
            prop_oneof![
                9 => prop::sample::select(TOML_LINES).prop_map(str::to_owned),
                1 => "[ -~]{0,20}",
            ],
            0..30,
        )
        .prop_map(|lines| lines.join("\n")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn toml_never_panics_and_errors_carry_file_and_line(text in toml_text()) {
        let source = PathBuf::from("/nonexistent/hsmgate.toml");
        let t = text.clone();
        let s = source.clone();
        let result = within_deadline(text.clone(), move || load_str(&t, &s).map(|_| ()));
        if let Err(e) = result {
            check_location(&e, &[(source, &text)])?;
        }
    }
}

// === RFC 7512 ===

fn uri_text() -> impl Strategy<Value = String> {
    let attr = prop::sample::select(
        &[
            "token",
            "object",
            "id",
            "type",
            "serial",
            "model",
            "manufacturer",
            "slot-id",
            "slot-description",
            "library-version",
            "pin-source",
            "pin-value",
            "module-name",
            "module-path",
            "x-vendor",
            "",
            "TOKEN",
        ][..],
    );
    let value = prop_oneof![
        "[A-Za-z0-9 ._~-]{0,10}",
        "(%[0-9A-Fa-f]{2}){0,4}",
        "%[0-9A-Za-z]?",
        "[;?&=%/:]{0,3}",
        prop::sample::select(
            &[
                "private",
                "public",
                "cert",
                "1.2",
                "0",
                "18446744073709551616",
                "file:/pin"
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    let pair = (attr, value).prop_map(|(a, v)| format!("{a}={v}"));
    prop_oneof![
        6 => (
            prop::sample::select(&["pkcs11:", "PKCS11:", "engine:pkcs11:pkcs11:", "engine:pkcs11:", "", "pkcs11"][..]),
            prop::collection::vec(pair.clone(), 0..6),
            prop::collection::vec(pair, 0..4),
        )
            .prop_map(|(scheme, path, query)| {
                let mut s = format!("{scheme}{}", path.join(";"));
                if !query.is_empty() {
                    s.push('?');
                    s.push_str(&query.join("&"));
                }
                s
            }),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pkcs11_uris_never_panic_and_errors_point_into_the_string(s in uri_text()) {
        for result in [Pkcs11Uri::parse(&s), parse_key_string(&s)] {
            match result {
                Ok(uri) => {
                    // An attribute that parsed was in the string.
                    if uri.token.is_some() {
                        prop_assert!(s.to_ascii_lowercase().contains("token="), "{s}");
                    }
                }
                Err(e) => {
                    prop_assert!(e.offset <= s.len(), "offset {} of {}: {e}", e.offset, s.len());
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}

/// The strategies themselves make text of the intended shapes (a check on the fuzzer,
/// so that a change in them cannot silently turn every case into trivial input).
#[test]
fn the_generators_reach_the_formats_words() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut saw_server = false;
    let mut saw_listener = false;
    for _ in 0..64 {
        let n = nginx_text().new_tree(&mut runner).expect("tree").current();
        saw_server |= n.contains("server");
        let t = toml_text().new_tree(&mut runner).expect("tree").current();
        saw_listener |= t.contains("[[listener]]");
    }
    assert!(saw_server && saw_listener);
    // Some nginx texts are whole, valid configurations: the builder's end is reached.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("main.conf");
    std::fs::write(dir.path().join("inc.conf"), "").expect("inc");
    let loaded = (0..200)
        .filter(|_| {
            let text = nginx_text().new_tree(&mut runner).expect("tree").current();
            std::fs::write(&path, text).expect("write");
            nginx::load(&path, &NginxOptions::default()).is_ok()
        })
        .count();
    assert!(loaded > 0, "no generated nginx configuration loads");
}
