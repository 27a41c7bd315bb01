//! Real-world nginx configurations (`proxy/tests/corpus/`, issue 14): Debian 12's
//! default `nginx.conf` with its `sites-available/default` as an SSL-offload site, the
//! Mozilla SSL Configuration Generator's intermediate and modern outputs, a site
//! `certbot --nginx` manages (its `options-ssl-nginx.conf`, its `if ($host = …)`
//! redirect server), and a multi-site reverse proxy. Each passes Debian's `nginx -t`
//! (file keys) and `hsmgate -t` (token keys), and both servers answer the same
//! requests the same way against the same upstreams; bad input for each directive
//! the corpus brought in is an error at its file:line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::corpus::{Corpus, Keys};
use crate::support::nginx::{Seen, Server, fetch_at, nginx_t};
use crate::support::realworld::{Ports, RealWorld};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `hsmgate ARGS` with the token's module and SoftHSM configuration in the environment.
fn hsmgate_token(corpus: &Corpus, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hsmgate"))
        .args(args)
        .env("SOFTHSM2_CONF", &corpus.token.conf)
        .env("HSMGATE_PKCS11_MODULE", &corpus.token.module)
        .output()
        .expect("run hsmgate")
}

/// One request: host, scheme (`https`/`http`), IPv6 or not, path, extra curl args.
struct Req {
    host: &'static str,
    https: bool,
    v6: bool,
    path: &'static str,
    extra: &'static [&'static str],
    /// The TLS handshake or connection must fail on both.
    refused: bool,
}

const fn get(host: &'static str, path: &'static str) -> Req {
    Req {
        host,
        https: true,
        v6: false,
        path,
        extra: &[],
        refused: false,
    }
}

/// Forwarded headers compared between the two (ports normalised).
const FORWARDED: &[&str] = &[
    "host",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-request-id",
    "connection",
    "upgrade",
];

/// Response headers compared between the two.
const ANSWERED: &[&str] = &[
    "strict-transport-security",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
];

/// What the checks found, for the test to assert on beyond equality.
struct Answers {
    seen: Vec<(String, Seen)>,
    corpus: Corpus,
    /// hsmgate's tree (token keys).
    hsmgate: RealWorld,
    /// nginx's tree (file keys).
    nginx: RealWorld,
}

impl Answers {
    fn of(&self, what: &str) -> &Seen {
        &self
            .seen
            .iter()
            .find(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no answer for {what}"))
            .1
    }
}

/// Both `-t`s, both servers, every request to each; asserts that they agree.
/// `expect_warnings`: words hsmgate -t must warn about.
fn differential(name: &str, sites: &[&str], requests: &[Req], expect_warnings: &[&str]) -> Answers {
    let corpus = Corpus::new();
    let upstreams = Ports::upstreams();
    let (np, hp) = (Ports::new(upstreams), Ports::new(upstreams));
    let n = RealWorld::write(&corpus, name, sites, Keys::File, &np);
    let h = RealWorld::write(&corpus, name, sites, Keys::Token, &hp);

    let (ok, err) = nginx_t(&n.root, &n.conf);
    assert!(ok, "{name}: nginx -t: {err}");
    let out = hsmgate_token(&corpus, &["-t", "-c", s(&h.conf), "-p", s(&h.root)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: hsmgate -t: {err}");
    assert!(err.contains("test is successful"), "{name}: {err}");
    eprintln!("{name}: hsmgate -t:\n{err}");
    for w in expect_warnings {
        assert!(err.contains(w), "{name}: no warning about {w}: {err}");
    }
    // The file-key twin passes hsmgate -t too.
    let out = hsmgate_token(&corpus, &["-t", "-c", s(&n.conf), "-p", s(&n.root)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: hsmgate -t (file keys): {err}"
    );

    let ports = |p: &Ports| [p.https, p.http, p.https6, p.http6];
    let _nginx = Server::nginx(&n.root, &n.conf, &ports(&np)[..2]);
    let env = [
        ("SOFTHSM2_CONF", corpus.token.conf.as_path()),
        ("HSMGATE_PKCS11_MODULE", corpus.token.module.as_path()),
    ];
    let hsm = Server::hsmgate_with_env(&h.root, &h.conf, &ports(&hp)[..2], &env);

    let mut seen = Vec::new();
    let ca = &corpus.ca_pem;
    for r in requests {
        let one = |p: &Ports| {
            let port = match (r.https, r.v6) {
                (true, false) => p.https,
                (false, false) => p.http,
                (true, true) => p.https6,
                (false, true) => p.http6,
            };
            let ip = if r.v6 { "[::1]" } else { "127.0.0.1" };
            let scheme = if r.https { "https" } else { "http" };
            let url = format!("{scheme}://{}:{port}{}", r.host, r.path);
            if r.refused {
                let resolve = format!("{}:{port}:{ip}", r.host);
                let mut args = vec!["--cacert", s(ca), "--resolve", &resolve];
                args.extend(r.extra);
                args.push(&url);
                let out = crate::support::curl(&args);
                assert!(
                    !out.status.success(),
                    "{name}: {url} {:?} answered",
                    r.extra
                );
                return None;
            }
            let mut seen = fetch_at(ca, r.host, port, ip, &url, r.extra);
            // Ports differ between the two servers: compare them as PORT (a whole
            // number only: port 31536 is not in HSTS's `max-age=31536000`).
            let norm = |v: &str| {
                ports(p)
                    .iter()
                    .fold(v.to_owned(), |v, port| replace_number(&v, *port, "PORT"))
            };
            for (_, v) in &mut seen.headers {
                *v = norm(v);
            }
            seen.body = norm(&seen.body);
            Some(seen)
        };
        let (Some(nr), Some(hr)) = (one(&np), one(&hp)) else {
            continue;
        };
        let what = format!(
            "{name}: {} {}{}{} {:?}\nnginx:   {nr:?}\nhsmgate: {hr:?}\n{}",
            if r.https { "https" } else { "http" },
            r.host,
            if r.v6 { " [v6] " } else { " " },
            r.path,
            r.extra,
            hsm.log_text()
        );
        assert_eq!(nr.status, hr.status, "status of {what}");
        assert_eq!(nr.header("location"), hr.header("location"), "{what}");
        for header in ANSWERED {
            assert_eq!(nr.header(header), hr.header(header), "{header} of {what}");
        }
        match (nr.upstream(), hr.upstream()) {
            (Some((nn, npath, nh)), Some((hn, hpath, hh))) => {
                assert_eq!(nn, hn, "upstream of {what}");
                assert_eq!(npath, hpath, "upstream path of {what}");
                for c in FORWARDED {
                    let get = |hs: &Vec<(String, String)>| {
                        hs.iter().find(|(n, _)| n == c).map(|(_, v)| v.clone())
                    };
                    assert_eq!(get(&nh), get(&hh), "forwarded {c} of {what}");
                }
            }
            (None, None) if nr.status == 200 => assert_eq!(nr.body, hr.body, "body of {what}"),
            (None, None) => {}
            _ => panic!("one answered from an upstream, the other not: {what}"),
        }
        let key = format!("{}{}{}", if r.https { "" } else { "http:" }, r.host, r.path);
        seen.push((key, hr));
    }
    drop(hsm);
    Answers {
        seen,
        corpus,
        hsmgate: h,
        nginx: n,
    }
}

/// Debian 12's nginx.conf, mime.types, proxy_params and snippets as shipped; the
/// default site with its SSL lines enabled (snakeoil snippet) and `location /` proxied.
#[test]
fn debian_default_site_as_ssl_offload() {
    let upstream = |r: &Seen| r.upstream().map(|(n, p, _)| (n, p));
    let a = differential(
        "debian",
        &["default"],
        &[
            get("www.example.test", "/"),
            get("localhost", "/index.html?x=1"),
            // curl then offers ALPN "http/1.0" alone: both must accept it.
            Req {
                extra: &["--http1.0"],
                ..get("localhost", "/http10")
            },
            get("example.test", "/a/b"),
            Req {
                v6: true,
                ..get("www.example.test", "/v6")
            },
            Req {
                https: false,
                ..get("www.example.test", "/plain")
            },
            Req {
                https: false,
                v6: true,
                ..get("www.example.test", "/plain6")
            },
            Req {
                extra: &["-H", "X-Forwarded-For: 198.51.100.7"],
                ..get("www.example.test", "/xff")
            },
        ],
        &[
            "\"root\" is used only for the pages",
            "\"index\" ignored",
            "\"gzip\" ignored",
            "TLSv1 is not supported",
        ],
    );
    let r = a.of("www.example.test/");
    assert_eq!(upstream(r), Some(("app-a".into(), "/".into())));
    let (_, _, headers) = a
        .of("http:www.example.test/plain")
        .upstream()
        .expect("proxied");
    assert!(headers.contains(&("x-forwarded-proto".into(), "http".into())));
    // With a dynamic module package installed, Debian's modules-enabled/ holds
    // load_module lines (none is installed here, so nginx -t cannot read this one).
    let h = &a.hsmgate;
    std::fs::write(
        h.root
            .join("etc/nginx/modules-enabled/50-mod-http-image-filter.conf"),
        "load_module modules/ngx_http_image_filter_module.so;\n",
    )
    .expect("module conf");
    let out = hsmgate_token(&a.corpus, &["-t", "-c", s(&h.conf), "-p", s(&h.root)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("50-mod-http-image-filter.conf:1:1: \"load_module\" ignored"),
        "{err}"
    );
}

/// The Mozilla generator's intermediate output (nginx 1.22, OpenSSL 3) with a proxied
/// location: HSTS on every answer, the port-80 redirect, OCSP stapling and
/// `ssl_dhparam` accepted.
#[test]
fn mozilla_intermediate() {
    mozilla("intermediate");
}

/// The modern output: TLS 1.3 only (a TLS 1.2 client is refused by both).
#[test]
fn mozilla_modern() {
    mozilla("modern");
}

fn mozilla(site: &str) {
    let tls12: &'static [&'static str] = &["--tls-max", "1.2"];
    let requests = [
        get("www.example.test", "/"),
        Req {
            extra: &["--http2"],
            ..get("example.test", "/h2?q=1")
        },
        Req {
            v6: true,
            ..get("www.example.test", "/v6")
        },
        Req {
            https: false,
            ..get("www.example.test", "/to/tls?x=y")
        },
        Req {
            https: false,
            v6: true,
            ..get("example.test", "/v6")
        },
    ];
    // The intermediate profile keeps TLS 1.2, the modern one refuses it.
    let requests: Vec<Req> = requests
        .into_iter()
        .chain([Req {
            extra: tls12,
            refused: site == "modern",
            ..get("www.example.test", "/tls12")
        }])
        .collect();
    let a = differential(
        "mozilla",
        &[site],
        &requests,
        &[
            "\"ssl_stapling\" ignored, no OCSP responder URL",
            "\"resolver\" ignored",
        ],
    );
    let r = a.of("www.example.test/");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    let redirect = a.of("http:www.example.test/to/tls?x=y");
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://www.example.test/to/tls?x=y")
    );
}

/// A site `certbot --nginx` manages: `include options-ssl-nginx.conf`,
/// `ssl_dhparam`, and the port-80 server of `if ($host = …) { return 301 …; }` lines
/// ending in `return 404`.
#[test]
fn certbot_managed_site() {
    let a = differential(
        "certbot",
        &["example.test"],
        &[
            get("example.test", "/"),
            get("www.example.test", "/page?a=1"),
            Req {
                v6: true,
                ..get("example.test", "/v6")
            },
            Req {
                https: false,
                ..get("example.test", "/p?q=1")
            },
            Req {
                https: false,
                ..get("www.example.test", "/w")
            },
            Req {
                https: false,
                v6: true,
                ..get("www.example.test", "/w6")
            },
            // A name the server does not redirect: certbot's `return 404`.
            Req {
                https: false,
                ..get("other.example.test", "/o")
            },
        ],
        &[
            "\"ssl_dhparam\" ignored",
            "\"root\" is used only for the pages",
        ],
    );
    for (what, want) in [
        ("http:example.test/p?q=1", "https://example.test/p?q=1"),
        ("http:www.example.test/w", "https://www.example.test/w"),
    ] {
        let r = a.of(what);
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some(want)),
            "{what}"
        );
    }
    assert_eq!(a.of("http:other.example.test/o").status, 404);
}

/// Several vhosts, upstream blocks, a `map`, snippets of `proxy_set_header`s and
/// security headers, `proxy_redirect off` (implemented), `client_max_body_size` per site and per
/// location, `location ~* \.(js|css)$`, redirect servers and a `return 444` default.
#[test]
fn multi_site_reverse_proxy() {
    let a = differential(
        "multisite",
        &["default", "www.example.test", "api.example.test"],
        &[
            get("www.example.test", "/"),
            get("www.example.test", "/account?id=3"),
            get("www.example.test", "/"),
            get("www.example.test", "/assets/app.JS"),
            get("www.example.test", "/assets/site.css?v=2"),
            get("www.example.test", "/robots.txt"),
            Req {
                extra: &["-H", "Upgrade: websocket"],
                ..get("www.example.test", "/socket")
            },
            Req {
                extra: &["--data-binary", "0123456789"],
                ..get("www.example.test", "/uploads/small")
            },
            Req {
                extra: &[
                    "-H",
                    "Content-Type: text/plain",
                    "--data-binary",
                    concat!(
                        "@",
                        env!("CARGO_MANIFEST_DIR"),
                        "/tests/corpus/debian/etc/nginx/mime.types"
                    ),
                ],
                ..get("www.example.test", "/uploads/big")
            },
            Req {
                extra: &["-H", "X-Request-Id: r-9"],
                ..get("api.example.test", "/items")
            },
            get("api.example.test", "/v1/users?page=2"),
            get("api.example.test", "/health"),
            Req {
                extra: &["--http2"],
                ..get("api.example.test", "/h2")
            },
            Req {
                v6: true,
                ..get("api.example.test", "/v6")
            },
            get("example.test", "/old?x=1"),
            Req {
                https: false,
                ..get("shop.example.test", "/cart")
            },
        ],
        &[
            "\"proxy_buffering\" ignored",
            "\"server_tokens\" ignored",
            "\"log_not_found\" ignored",
        ],
    );
    let www = a.of("www.example.test/");
    assert_eq!(
        www.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        a.of("www.example.test/assets/app.JS")
            .upstream()
            .map(|u| u.0)
            .as_deref(),
        Some("static")
    );
    assert_eq!(a.of("www.example.test/uploads/big").status, 413);
    assert_eq!(
        a.of("api.example.test/v1/users?page=2")
            .upstream()
            .map(|u| u.1)
            .as_deref(),
        Some("/api/v1/users?page=2")
    );
    let r = a.of("http:shop.example.test/cart");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://www.example.test/cart"))
    );
    // The api site's JSON access log (Grafana's format): the same fields from both,
    // line by line (one request per connection, in the same order).
    let json_log = |w: &RealWorld| -> Vec<serde_json::Value> {
        let path = w.root.join("var/log/nginx/api.json.log");
        let text = crate::support::poll(
            Duration::from_secs(10),
            || format!("four lines in {}", path.display()),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                (text.lines().count() >= 4).then_some(text)
            },
        );
        (text.lines())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let (nginx, hsmgate) = (json_log(&a.nginx), json_log(&a.hsmgate));
    assert_eq!(nginx.len(), hsmgate.len(), "{nginx:?}\n{hsmgate:?}");
    for (n, h) in nginx.iter().zip(&hsmgate) {
        for key in [
            "connection_requests",
            "remote_user",
            "request",
            "request_uri",
            "args",
            "status",
            "http_x_forwarded_for",
            "server_name",
            "upstream_cache_status",
            "ssl_protocol",
            "ssl_cipher",
            "scheme",
            "request_method",
            "server_protocol",
            "pipe",
            "gzip_ratio",
            "http_cf_ray",
        ] {
            assert_eq!(n[key], h[key], "{key}: nginx {n}\nhsmgate {h}");
        }
        // Proxied requests: a head time no later than the response time.
        let secs = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
        if n["upstream"] != "" {
            let (head, all) = (
                secs(&h["upstream_header_time"]),
                secs(&h["upstream_response_time"]),
            );
            assert!(matches!((head, all), (Some(x), Some(y)) if x <= y), "{h}");
            assert!(
                secs(&h["upstream_response_length"]).is_some_and(|l| l > 0.0),
                "{h}"
            );
        }
    }
}

/// Unknown names on the multi-site front: `return 444` closes the connection on both.
#[test]
fn multi_site_default_server_closes() {
    let corpus = Corpus::new();
    let upstreams = Ports::upstreams();
    let (np, hp) = (Ports::new(upstreams), Ports::new(upstreams));
    let sites = ["default", "www.example.test", "api.example.test"];
    let n = RealWorld::write(&corpus, "multisite", &sites, Keys::File, &np);
    let h = RealWorld::write(&corpus, "multisite", &sites, Keys::Token, &hp);
    let _nginx = Server::nginx(&n.root, &n.conf, &[np.https, np.http]);
    let env = [
        ("SOFTHSM2_CONF", corpus.token.conf.as_path()),
        ("HSMGATE_PKCS11_MODULE", corpus.token.module.as_path()),
    ];
    let _hsm = Server::hsmgate_with_env(&h.root, &h.conf, &[hp.https, hp.http], &env);
    // The same curl failure from both (HTTP/1.1 and HTTP/2 over TLS, plain HTTP).
    let code = |url: String, extra: &[&str]| {
        let mut args = vec!["--cacert", s(&corpus.ca_pem)];
        args.extend(extra);
        args.push(&url);
        let out = crate::support::curl(&args);
        (out.status.code(), url)
    };
    for (extra, tls) in [
        (&["--http1.1"][..], true),
        (&["--http2"], true),
        (&[], false),
    ] {
        let [n, h] = [(np.https, np.http), (hp.https, hp.http)].map(|(https, http)| match tls {
            true => code(format!("https://localhost:{https}/"), extra),
            false => code(format!("http://127.0.0.1:{http}/"), extra),
        });
        assert_eq!(n.0, h.0, "{extra:?}: nginx {n:?}, hsmgate {h:?}");
        assert_ne!(n.0, Some(0), "{extra:?}: {n:?} answered");
    }
}

/// Bad input for each directive the corpus brought in: hsmgate -t names file:line and
/// exits 1; where nginx checks the same thing, its -t fails too.
#[test]
fn bad_input_for_the_corpus_directives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let srv = |body: &str| {
        format!(
            "server {{\n listen 127.0.0.1:1;\n server_name a;\n {body}\n location / {{ return 200; }}\n}}"
        )
    };
    let loc = |body: &str| {
        format!("server {{\n listen 127.0.0.1:1;\n location / {{\n {body}\n return 200; }}\n}}")
    };
    // (name, main-context text, http text, expected line, words, nginx also refuses)
    let cases: Vec<(&str, &str, String, usize, &str, bool)> = vec![
        (
            "load_module arguments",
            "load_module a b;",
            String::new(),
            1,
            "invalid number of arguments",
            true,
        ),
        (
            "root without a path",
            "",
            srv("root;"),
            7,
            "invalid number of arguments",
            true,
        ),
        (
            "index without a file",
            "",
            srv("index;"),
            7,
            "invalid number of arguments",
            true,
        ),
        (
            "try_files",
            "",
            loc("try_files $uri =404;"),
            7,
            "try_files",
            false,
        ),
        (
            "if inside an if",
            "",
            loc("if ($host = a) {\n if ($host = b) { return 301 /; } }"),
            8,
            "\"if\" directive is not allowed here",
            true,
        ),
        (
            "if with a file test",
            "",
            srv("if (-f /x) { return 404; }"),
            7,
            "file test",
            false,
        ),
        (
            "if with another directive",
            "",
            srv("if ($host = a) {\n proxy_pass http://127.0.0.1:9; }"),
            8,
            "only \"return\", \"rewrite\", \"set\" and \"break\"",
            true,
        ),
        (
            "if without parentheses",
            "",
            srv("if $host { return 404; }"),
            7,
            "invalid condition",
            true,
        ),
        (
            "if with an unknown variable",
            "",
            srv("if ($nope = a) { return 404; }"),
            7,
            "unknown",
            true,
        ),
        (
            "if with a bad regex",
            "",
            srv("if ($uri ~ ^(x) { return 404; }"),
            7,
            "regex",
            true,
        ),
        (
            "http2 flag",
            "",
            srv("http2 maybe;"),
            7,
            "must be \"on\" or \"off\"",
            false,
        ),
        (
            "gzip flag",
            "",
            "gzip yes;".into(),
            4,
            "must be \"on\" or \"off\"",
            true,
        ),
        (
            "ssl_stapling flag",
            "",
            srv("ssl_stapling 1;"),
            7,
            "must be \"on\" or \"off\"",
            true,
        ),
        (
            "ssl_dhparam missing file",
            "",
            srv("ssl_dhparam /nonexistent/dh.pem;"),
            7,
            "/nonexistent/dh.pem",
            false,
        ),
        (
            "types without a block",
            "",
            "types text/html;".into(),
            4,
            "no opening",
            true,
        ),
        (
            "resolver without an address",
            "",
            "resolver;".into(),
            4,
            "invalid number of arguments",
            true,
        ),
    ];
    for (name, main, http, line, words, nginx_refuses) in cases {
        let conf = d.join("nginx.conf");
        std::fs::write(&conf, format!("{main}\nevents {{}}\nhttp {{\n{http}\n}}\n")).expect("conf");
        let out = Command::new(env!("CARGO_BIN_EXE_hsmgate"))
            .args(["-t", "-c", s(&conf), "-p", s(d)])
            .output()
            .expect("hsmgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("nginx.conf:{line}:")),
            "{name}: line {line}: {err}"
        );
        assert!(err.contains(words), "{name}: expected {words}: {err}");
        if nginx_refuses {
            let (ok, nginx_err) = nginx_t(d, &conf);
            assert!(!ok, "{name}: nginx accepted it");
            // (nginx names no line for an unknown variable.)
            assert!(
                nginx_err.contains(&format!("nginx.conf:{line}")) || nginx_err.contains("unknown"),
                "{name}: {nginx_err}"
            );
        }
    }
}

/// `text` with every `number` that stands alone (no digit on either side) replaced by
/// `with`.
fn replace_number(text: &str, number: u16, with: &str) -> String {
    let needle = number.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        let end = i + needle.len();
        let before = rest[..i].chars().next_back();
        let after = rest[end..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(|c| c.is_ascii_digit()) || after.is_some_and(|c| c.is_ascii_digit()) {
            out.push_str(&needle);
        } else {
            out.push_str(with);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn ports_are_replaced_as_whole_numbers() {
    assert_eq!(
        replace_number("max-age=31536000; a:31536/ 31536", 31536, "PORT"),
        "max-age=31536000; a:PORT/ PORT"
    );
}
