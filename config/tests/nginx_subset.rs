//! The nginx reader against real nginx: every fixture under
//! `tests/fixtures/nginx/` must pass `nginx -t` (valid configs) or fail it
//! (error cases), and load into the expected model / fail with the expected
//! message at the expected `file:line:col`.
//!
//! nginx is skipped, with a note, when it is not installed — except under CI
//! (`CI` set), where that is a failure.
//!
//! For `nginx -t`, two rewrites are made, because plain nginx would need the
//! OpenSSL pkcs11 engine and a token: `ssl_engine pkcs11;` is dropped, and each
//! key `"engine:pkcs11:…object=NAME…"` becomes the PEM file `certs/NAME.key`.
//! hsmgate parses the engine form as written. Certificates (`certs/NAME.crt`,
//! RSA unless NAME contains `ecdsa`) are made by `openssl req -x509` in a
//! temporary prefix, which also holds `logs/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hsmgate_config::nginx::{
    self, Action, KeySource, LocationModifier, NginxOptions, ServerName, UpstreamRef,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

/// Copies `tests/fixtures/nginx/NAME` into a fresh prefix with `logs/` and the
/// certificates its files name.
fn prefix_with(name: &str) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    copy_dir(&fixture(name), dir.path())?;
    std::fs::create_dir_all(dir.path().join("logs"))?;
    std::fs::create_dir_all(dir.path().join("certs"))?;
    let mut names = Vec::new();
    for f in walk(dir.path())? {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for part in text.split("certs/").skip(1) {
            if let Some(n) = part
                .split(".crt")
                .next()
                .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    for n in names {
        let key_alg = if n.contains("ecdsa") {
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        } else {
            vec!["-newkey", "rsa:2048"]
        };
        let certs = dir.path().join("certs");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={n}"))
            .args(key_alg)
            .arg("-keyout")
            .arg(certs.join(format!("{n}.key")))
            .arg("-out")
            .arg(certs.join(format!("{n}.crt")))
            .output()?;
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?)
        } else {
            out.push(p)
        }
    }
    Ok(out)
}

/// A copy of the prefix in which the engine keys are PEM files (see the module docs).
fn for_nginx(prefix: &Path) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    copy_dir(prefix, dir.path())?;
    let engine = regex::Regex::new(r#""engine:pkcs11:pkcs11:[^"]*object=([^;"?]+)[^"]*""#)?;
    for f in walk(dir.path())? {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let text = engine
            .replace_all(&text, "certs/$1.key")
            .replace("ssl_engine pkcs11;", "");
        std::fs::write(&f, text)?;
    }
    Ok(dir)
}

/// `nginx -t` on `conf` in `prefix`: `None` when nginx is missing (outside
/// CI), else success and stderr.
fn nginx_t(prefix: &Path, conf: &str) -> Option<(bool, String)> {
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-q")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join(conf))
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .output();
    match out {
        Ok(o) => Some((
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but nginx cannot be run: {e}")
        }
        Err(e) => {
            eprintln!("note: nginx not runnable ({e}); skipping the nginx -t oracle");
            None
        }
    }
}

fn opts(prefix: &Path) -> NginxOptions {
    NginxOptions {
        prefix: Some(prefix.to_path_buf()),
        globals: None,
    }
}

#[test]
fn offload_corpus_passes_nginx_and_loads() -> TestResult {
    let prefix = prefix_with("offload")?;
    let p = prefix.path();
    if let Some((ok, stderr)) = nginx_t(for_nginx(p)?.path(), "nginx.conf") {
        assert!(ok, "nginx -t failed: {stderr}");
    }
    let c = nginx::load(&p.join("nginx.conf"), &opts(p))?;

    let files: Vec<_> = c
        .files()
        .iter()
        .map(|f| f.path.strip_prefix(p).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    let names = [
        "nginx.conf",
        "mime.types",
        "conf.d/10-api.conf",
        "conf.d/20-legacy.conf",
    ];
    assert_eq!(files, names.map(PathBuf::from));
    assert!(c.dump().contains(&format!(
        "# configuration file {}:\n",
        p.join("conf.d/10-api.conf").display()
    )));

    assert_eq!(c.pid.as_deref(), Some(p.join("logs/nginx.pid").as_path()));
    assert!(c.ssl_engine_pkcs11);
    assert_eq!(
        (c.worker_processes, c.worker_connections),
        (None, Some(1024))
    );
    assert_eq!(c.user, Some(("nobody".into(), Some("nogroup".into()))));

    let app = &c.upstreams["app"];
    let servers: Vec<_> = app
        .servers
        .iter()
        .map(|s| (s.addr.as_str(), s.weight, s.max_fails, s.backup))
        .collect();
    assert_eq!(
        servers,
        [
            ("127.0.0.1:28080", 5, 3, false),
            ("127.0.0.1:28081", 1, 1, false),
            ("127.0.0.1:28082", 1, 1, true)
        ]
    );
    assert_eq!(app.servers[0].fail_timeout, Duration::from_secs(30));
    assert_eq!(app.keepalive, Some(32));

    assert_eq!(c.servers.len(), 4);
    let names = |i: usize| -> Vec<String> {
        c.servers[i]
            .server_names
            .iter()
            .map(|n| match n {
                ServerName::Exact(s) | ServerName::Wildcard(s) => s.clone(),
                ServerName::Regex(r) => format!("~{r}"),
            })
            .collect()
    };
    assert_eq!(names(0), ["_"]);
    assert_eq!(names(1), ["www.example.test", "example.test"]);
    assert_eq!(names(2), ["api.example.test"]);
    assert_eq!(names(3), ["legacy.example.test", "*.legacy.example.test"]);

    let redirect = &c.servers[0];
    assert!(!redirect.listens[0].ssl && redirect.listens[0].default_server);
    let r = redirect.server_return.as_ref().ok_or("no return")?;
    assert_eq!(
        (r.code, r.text_or_url.as_ref().map(ToString::to_string)),
        (301, Some("https://${host}${request_uri}".into()))
    );

    let www = &c.servers[1];
    let l = &www.listens[0];
    assert_eq!(
        (l.addr, l.ssl, l.http2, l.default_server),
        ("127.0.0.1:20443".parse()?, true, true, true)
    );
    assert_eq!(www.certs.len(), 2);
    assert_eq!(www.certs[0].cert, p.join("certs/www-rsa.crt"));
    let objects: Vec<_> = www
        .certs
        .iter()
        .map(|c| match &c.key {
            KeySource::Pkcs11(u) => u.object.clone().unwrap_or_default(),
            KeySource::File(f) => f.display().to_string(),
            KeySource::Token(t) => panic!("an nginx key with all token settings: {t:?}"),
        })
        .collect();
    assert_eq!(objects, ["www-rsa", "www-ecdsa"]);
    assert_eq!(www.certs[1].location.line, 65);
    assert_eq!(www.tls.ciphers.len(), 6);
    assert!(!www.tls.session_tickets);
    assert_eq!(www.tls.session_timeout, Duration::from_secs(86400));

    let mods: Vec<_> = www
        .locations
        .iter()
        .map(|l| (l.matcher.modifier(), l.matcher.pattern()))
        .collect();
    assert_eq!(
        mods,
        [
            (LocationModifier::Exact, "/healthz"),
            (LocationModifier::Prefix, "/"),
            (LocationModifier::PrefixNoRegex, "/assets/"),
            (
                LocationModifier::Regex {
                    case_insensitive: true
                },
                r"\.(png|jpe?g|gif|ico)$"
            ),
            (
                LocationModifier::Regex {
                    case_insensitive: false
                },
                "^/api/v[0-9]+/"
            ),
            (LocationModifier::Prefix, "/upload/"),
        ]
    );
    let header_names = |s: &nginx::ProxySettings| {
        s.proxy_set_header
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let root = &www.locations[1].settings;
    assert_eq!(
        header_names(root),
        ["Host", "X-Forwarded-For", "X-Forwarded-Proto"]
    );
    assert_eq!(
        root.add_header
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        ["Strict-Transport-Security"]
    );
    assert_eq!(
        www.locations[2]
            .settings
            .add_header
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        ["Cache-Control"]
    );
    assert_eq!(root.client_max_body_size, Some(10 << 20));
    assert_eq!(
        www.locations[5].settings.client_max_body_size,
        Some(100 << 20)
    );
    assert_eq!(
        www.locations[4].settings.proxy_read_timeout,
        Duration::from_secs(300)
    );
    assert_eq!(root.proxy_connect_timeout, Duration::from_secs(5));
    assert_eq!(root.keepalive_timeout, Duration::from_secs(65));
    match &root.access_logs[..] {
        [
            nginx::AccessLog::File {
                path, format, at, ..
            },
        ] => {
            assert_eq!(path, &p.join("logs/access.log"));
            assert_eq!(format, "offload");
            assert!(at.line > 0, "{at}");
        }
        other => panic!("access_logs: {other:?}"),
    }
    assert_eq!(
        www.locations[0].settings.access_logs,
        [nginx::AccessLog::Off]
    );
    assert!(
        c.log_formats["offload"]
            .template
            .to_string()
            .contains("tls=${ssl_protocol}/${ssl_cipher}")
    );
    match &www.locations[5].action {
        Some(Action::ProxyPass(pp)) => {
            assert_eq!(
                (&pp.target, pp.uri.as_deref()),
                (&UpstreamRef::Named("app".into()), Some("/files/"))
            );
            assert_eq!(
                nginx::proxy_pass_uri(
                    &www.locations[5],
                    pp.uri.as_deref(),
                    "/upload/a.bin?x=1",
                    "/upload/a.bin"
                ),
                "/files/a.bin?x=1"
            );
        }
        other => panic!("{other:?}"),
    }
    let pick = |path| nginx::location_match(&www.locations, path).map(|l| l.matcher.pattern());
    assert_eq!(pick("/healthz"), Some("/healthz"));
    assert_eq!(pick("/assets/logo.png"), Some("/assets/"));
    assert_eq!(pick("/img/logo.PNG"), Some(r"\.(png|jpe?g|gif|ico)$"));
    assert_eq!(pick("/api/v2/users"), Some("^/api/v[0-9]+/"));

    let api = &c.servers[2];
    assert_eq!(
        header_names(&api.locations[0].settings),
        ["Host", "X-Request-Id"]
    );
    let legacy = &c.servers[3];
    assert_eq!(
        legacy.certs[0].key,
        KeySource::File(p.join("certs/legacy-rsa.key"))
    );
    assert_eq!(legacy.tls.protocols, [nginx::TlsVersion::Tls12]);
    assert!(
        legacy.listens[0].http2,
        "http2 is a property of the address"
    );

    let sel = |host| {
        nginx::select_server(&c.servers, "127.0.0.1:20443".parse().expect("addr"), host)
            .map(|s| s.location.line)
    };
    assert_eq!(sel(Some("api.example.test")), Some(api.location.line));
    assert_eq!(
        sel(Some("x.legacy.example.test")),
        Some(legacy.location.line)
    );
    assert_eq!(sel(Some("other.test")), Some(www.location.line));

    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("20-legacy.conf:8:") && w.contains("TLSv1.1")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("\"gzip\" ignored")),
        "{warnings:?}"
    );
    Ok(())
}

/// (file, our message after `PATH:`, line:col, nginx also fails, nginx's `in FILE:LINE`)
const ERRORS: &[(&str, &str, &str, bool, Option<&str>)] = &[
    (
        "missing_semicolon.conf",
        "unexpected \"}\"",
        "missing_semicolon.conf:5:5",
        true,
        Some("missing_semicolon.conf:5"),
    ),
    (
        "unclosed_brace.conf",
        "unexpected end of file, expecting \"}\"",
        "unclosed_brace.conf:6:1",
        true,
        Some("unclosed_brace.conf:6"),
    ),
    (
        "stray_brace.conf",
        "unexpected \"}\"",
        "stray_brace.conf:7:1",
        true,
        Some("stray_brace.conf:7"),
    ),
    (
        "unknown_directive.conf",
        "unknown directive \"proxy_magic\"",
        "unknown_directive.conf:5:9",
        true,
        Some("unknown_directive.conf:5"),
    ),
    (
        "missing_include.conf",
        "open() \"",
        "missing_include.conf:3:5",
        true,
        Some("missing_include.conf:3"),
    ),
    (
        "loop_a.conf",
        "include loop: ",
        "loop_b.inc:2:1",
        true,
        None,
    ),
    (
        "bad_uri.conf",
        "`ssl_certificate_key`: invalid PKCS#11 URI: attribute \"colour\": unknown attribute",
        "bad_uri.conf:6:65",
        false,
        None,
    ),
    (
        "unknown_variable.conf",
        "unknown \"reqest_uri\" variable in \"return\" directive",
        "unknown_variable.conf:5:33",
        true,
        None,
    ),
    (
        "ssl_engine.conf",
        "`ssl_engine`: engine \"foo\" is not supported",
        "ssl_engine.conf:1:12",
        true,
        None,
    ),
];

#[test]
fn error_cases_are_located_and_match_nginx() -> TestResult {
    let prefix = prefix_with("errors")?;
    let p = prefix.path();
    for (file, message, at, nginx_fails, nginx_at) in ERRORS {
        let err = nginx::load(&p.join(file), &opts(p)).expect_err(file);
        let text = err.to_string();
        let expected_prefix = format!("{}: {message}", p.join(at).display());
        assert!(
            text.starts_with(&expected_prefix),
            "{file}: got {text}\n  expected {expected_prefix}"
        );
        if *file == "loop_a.conf" {
            assert!(
                text.ends_with(&format!(
                    "loop_a.conf -> {} -> {}",
                    p.join("loop_b.inc").display(),
                    p.join("loop_a.conf").display()
                )),
                "{text}"
            );
            assert_eq!(err.kind.key(), Some("include"));
        }
        if !nginx_fails {
            continue;
        }
        if let Some((ok, stderr)) = nginx_t(p, file) {
            assert!(!ok, "{file}: nginx -t accepted it");
            if let Some(where_) = nginx_at {
                assert!(
                    stderr.contains(&format!(" in {}", p.join(where_).display())),
                    "{file}: nginx said {stderr}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn globals_and_default_prefix() -> TestResult {
    let prefix = prefix_with("offload")?;
    let p = prefix.path();
    let opts = NginxOptions {
        prefix: None,
        globals: Some("env EXTRA=1;".into()),
    };
    let c = nginx::load(&p.join("nginx.conf"), &opts)?;
    assert_eq!(
        c.env,
        [("EXTRA".into(), Some("1".into())), ("TZ".into(), None)]
    );
    assert_eq!(c.files()[0].path, Path::new("command line"));
    assert_eq!(c.prefix, p.parent().ok_or("no parent")?);
    let opts = NginxOptions {
        prefix: Some(p.into()),
        globals: Some("pid x.pid;".into()),
    };
    let e = nginx::load(Path::new("nginx.conf"), &opts).expect_err("duplicate pid");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:5:1: `pid`: directive is duplicate",
            p.join("nginx.conf").display()
        )
    );
    Ok(())
}
