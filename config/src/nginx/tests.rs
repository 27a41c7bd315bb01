//! Unit tests of the nginx reader on in-memory configs (fixtures checked
//! against real nginx are in `config/tests/nginx_subset.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

pub(super) const FILE: &str = "/x/conf/nginx.conf";

pub(super) fn load_str(text: &str) -> Result<NginxConfig, ConfigError> {
    load_text(Path::new(FILE), text.to_owned(), &NginxOptions::default())
}

pub(super) fn http(body: &str) -> String {
    format!("events {{}}\nhttp {{\n{body}\n}}\n")
}

fn err(text: &str) -> String {
    load_str(text).expect_err(text).to_string()
}

const ROUTES: &str = "
  server {
    listen 127.0.0.1:20443 ssl;
    ssl_certificate a.crt; ssl_certificate_key a.key;
    location = / { return 200 root; }
    location / { return 200 prefix; }
    location /api/ { proxy_pass http://localhost/v1/;
      location /api/admin/ { return 403; }
      location ~ \\.json$ { return 200 nested-json; }
    }
    location ^~ /static/ { return 200 static; }
    location ~* \\.(png|jpg)$ { return 200 image; }
    location ~ ^/api/v2 { proxy_pass http://localhost; }
    location /exact { proxy_pass http://localhost/e; }
  }";

fn text_of(l: Option<&LocationBlock>) -> String {
    match l.and_then(|l| l.action.as_ref()) {
        Some(Action::Return(r)) => r
            .text_or_url
            .as_ref()
            .map_or(r.code.to_string(), |t| t.to_string()),
        Some(Action::ProxyPass(p)) => {
            format!(
                "proxy {}",
                l.map(|l| l.matcher.pattern()).unwrap_or_default()
            ) + &p.uri.clone().unwrap_or_default()
        }
        Some(Action::StubStatus) => "stub_status".into(),
        None => "none".into(),
    }
}

#[test]
fn location_matching_follows_nginx() {
    let c = load_str(&http(ROUTES)).unwrap();
    let locs = &c.servers[0].locations;
    let m = |p: &str| text_of(location_match(locs, p));
    assert_eq!(m("/"), "root");
    assert_eq!(m("/index.html"), "prefix");
    assert_eq!(m("/static/a.png"), "static", "^~ stops regexes");
    assert_eq!(m("/img/a.PNG"), "image", "~* is case-insensitive");
    assert_eq!(m("/api/x"), "proxy /api//v1/");
    assert_eq!(m("/api/v2/x"), "proxy ^/api/v2", "regex beats plain prefix");
    assert_eq!(m("/api/admin/x"), "403", "nested prefix");
    assert_eq!(m("/api/a.json"), "nested-json", "nested regex first");
    assert_eq!(m("/exactly"), "proxy /exact/e");
    let modifiers: Vec<LocationModifier> = locs.iter().map(|l| l.matcher.modifier()).collect();
    assert_eq!(
        modifiers[..4],
        [
            LocationModifier::Exact,
            LocationModifier::Prefix,
            LocationModifier::Prefix,
            LocationModifier::PrefixNoRegex
        ]
    );
    assert!(location_match(&[], "/").is_none());
}

#[test]
fn proxy_pass_uri_replacement() {
    let c = load_str(&http(ROUTES)).unwrap();
    let locs = &c.servers[0].locations;
    let api = location_match(locs, "/api/x").unwrap();
    let pass = |l: &LocationBlock, target: Option<&str>, raw: &str| {
        let path = raw.split('?').next().unwrap_or(raw);
        proxy_pass_uri(l, target, raw, &normalized(path))
    };
    assert_eq!(pass(api, Some("/v1/"), "/api/users?id=1"), "/v1/users?id=1");
    assert_eq!(pass(api, None, "/api/users?id=1"), "/api/users?id=1");
    // The normalised, decoded `$uri` is rewritten (as location matching saw it), then
    // escaped again; the query is passed as received. Without a URI part, the raw one.
    assert_eq!(pass(api, Some("/v1/"), "//api/a"), "/v1/a");
    assert_eq!(pass(api, Some("/v1/"), "/api//a"), "/v1/a");
    assert_eq!(pass(api, Some("/v1/"), "/api/a%2Fb"), "/v1/a/b");
    assert_eq!(pass(api, Some("/v1/"), "/api/%7e%41"), "/v1/~A");
    assert_eq!(
        pass(api, Some("/v1/"), "/api/./x/../a%20b%3F?q=%20"),
        "/v1/a%20b%3F?q=%20"
    );
    assert_eq!(pass(api, Some("/v1/"), "/api/%C3%A9%25"), "/v1/%C3%A9%25");
    assert_eq!(pass(api, None, "//api/a%2Fb?x"), "//api/a%2Fb?x");
    let exact = location_match(locs, "/exact").unwrap();
    assert_eq!(pass(exact, Some("/e"), "/exact/more"), "/e/more");
    assert_eq!(pass(exact, Some("/"), "/exact"), "/");
    let regex = location_match(locs, "/api/v2").unwrap();
    assert_eq!(pass(regex, None, "/api/v2?a"), "/api/v2?a");
}

/// `path` as the proxy normalises it before matching (`%XX` decoded, `//`, `.` and
/// `..` resolved), for tests.
fn normalized(path: &str) -> String {
    let mut decoded = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            path.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(v)) => {
                decoded.push(v);
                i += 3;
            }
            (c, _) => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8(decoded).unwrap();
    let mut segs: Vec<&str> = Vec::new();
    for s in decoded.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = format!("/{}", segs.join("/"));
    if decoded.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

#[test]
fn server_selection() {
    let c = load_str(&http(
        "server { listen 20080; server_name first.test; }
         server { listen 20080 default_server; server_name www.example.com; }
         server { listen 20080; server_name *.example.com .example.org; }
         server { listen 20080; server_name *.a.example.com www.example.*; }
         server { listen 20080; server_name ~^api\\d+\\.example\\.net$; }
         server { listen 127.0.0.1:20080; server_name local.test; }",
    ))
    .unwrap();
    let any: SocketAddr = "10.0.0.1:20080".parse().unwrap();
    let pick = |addr, host| {
        select_server(&c.servers, addr, host)
            .map(|s| c.servers.iter().position(|x| std::ptr::eq(x, s)).unwrap())
    };
    assert_eq!(pick(any, Some("WWW.example.com:443")), Some(1));
    assert_eq!(pick(any, Some("x.example.com")), Some(2));
    assert_eq!(
        pick(any, Some("x.a.example.com")),
        Some(3),
        "longest leading wildcard"
    );
    assert_eq!(
        pick(any, Some("example.org")),
        Some(2),
        ".example.org matches itself"
    );
    assert_eq!(pick(any, Some("www.example.de")), Some(3));
    assert_eq!(pick(any, Some("api7.example.net")), Some(4));
    assert_eq!(pick(any, Some("unknown")), Some(1), "default_server");
    assert_eq!(pick(any, None), Some(1));
    let local: SocketAddr = "127.0.0.1:20080".parse().unwrap();
    assert_eq!(
        pick(local, Some("www.example.com")),
        Some(5),
        "specific address wins"
    );
    assert_eq!(pick("10.0.0.1:9".parse().unwrap(), None), None);

    // One server on an address (named or through its port's wildcard) answers every Host.
    let c = load_str(&http(
        "server { listen 20080; server_name only.test; }
         server { listen 127.0.0.1:20081; server_name a.test; }
         server { listen 20081; server_name b.test; }",
    ))
    .unwrap();
    let pick = |addr: &str, host| {
        select_server(&c.servers, addr.parse().unwrap(), host)
            .map(|s| c.servers.iter().position(|x| std::ptr::eq(x, s)).unwrap())
    };
    assert_eq!(pick("10.0.0.1:20080", Some("other.test")), Some(0));
    assert_eq!(pick("10.0.0.1:20080", Some("[::1")), Some(0));
    assert_eq!(pick("10.0.0.1:20080", None), Some(0));
    assert_eq!(
        pick("127.0.0.1:20081", Some("b.test")),
        Some(1),
        "the address's own server"
    );
    assert_eq!(
        pick("10.0.0.2:20081", Some("a.test")),
        Some(2),
        "the wildcard's only one"
    );
    assert_eq!(pick("10.0.0.2:20082", None), None);
}

#[test]
fn hidden_upstream_headers_inherit_like_nginx_arrays() {
    let c = load_str(&http(
        "proxy_hide_header X-Powered-By;
         server { listen 20080;
           location / { proxy_pass http://127.0.0.1:9000; }
           location /p { proxy_pass_header Server; proxy_pass http://127.0.0.1:9000; }
           location /h { proxy_hide_header X-Secret; proxy_hide_header X-Other;
                         proxy_pass http://127.0.0.1:9000; }
         }
         server { listen 20081; proxy_pass_header X-Accel-Buffering;
           location / { proxy_pass http://127.0.0.1:9000; } }",
    ))
    .unwrap();
    let l = &c.servers[0].locations;
    let (a, p, h) = (&l[0].settings, &l[1].settings, &l[2].settings);
    assert!(a.hides("x-powered-by") && a.hides("server") && a.hides("date"));
    assert!(!a.hides("x-secret") && !a.hides("content-type"));
    // A level with its own proxy_pass_header or proxy_hide_header inherits neither.
    assert!(!p.hides("server") && !p.hides("x-powered-by") && p.hides("x-pad"));
    assert!(h.hides("x-secret") && h.hides("x-other") && !h.hides("x-powered-by"));
    assert!(h.hides("x-accel-redirect"));
    let s2 = &c.servers[1].locations[0].settings;
    assert!(!s2.hides("x-accel-buffering") && s2.hides("x-accel-expires"));
    assert!(!s2.hides("x-powered-by"));
    for name in HIDDEN_BY_DEFAULT {
        assert!(a.hides(name), "{name}");
    }
}

#[test]
fn settings_inherit_like_nginx() {
    let c = load_str(&http(
        "proxy_set_header Host $host; proxy_set_header X-A a;
         add_header X-H h; proxy_read_timeout 5m; client_max_body_size 0;
         server { listen 20080;
           proxy_http_version 1.1;
           location / { proxy_pass http://127.0.0.1:9000; }
           location /b { proxy_set_header X-B b; add_header X-L l always; client_max_body_size 10k;
                         proxy_pass http://127.0.0.1:9000; keepalive_timeout 500ms; }
         }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let (a, b) = (&s.locations[0].settings, &s.locations[1].settings);
    let names = |h: &[(String, Template)]| h.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a.proxy_set_header), ["Host", "X-A"]);
    assert_eq!(
        names(&b.proxy_set_header),
        ["X-B"],
        "own list replaces the outer one"
    );
    assert_eq!(a.add_header[0].name, "X-H");
    assert!(b.add_header.len() == 1 && b.add_header[0].always);
    assert_eq!(a.proxy_read_timeout, Duration::from_secs(300));
    assert_eq!(a.proxy_connect_timeout, Duration::from_secs(60));
    assert_eq!(
        (a.client_max_body_size, b.client_max_body_size),
        (None, Some(10240))
    );
    assert_eq!(b.proxy_http_version, HttpVersion::Http11);
    assert_eq!(b.keepalive_timeout, Duration::from_millis(500));
    assert_eq!(s.listens[0].addr, "0.0.0.0:20080".parse().unwrap());
    assert_eq!(
        s.locations[0].action,
        Some(Action::ProxyPass(ProxyPass {
            https: false,
            target: UpstreamRef::Addr("127.0.0.1:9000".into()),
            uri: None,
            url: "http://127.0.0.1:9000".into(),
        }))
    );
}

#[test]
fn tls_keys_and_warnings() {
    let c = load_str(&http(
        "ssl_protocols TLSv1 TLSv1.2 TLSv1.3; ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-SHA:HIGH;
         ssl_session_cache shared:SSL:10m; ssl_session_timeout 1h; sendfile on;
         server { listen 20443 ssl http2;
           ssl_certificate rsa.crt; ssl_certificate_key \"engine:pkcs11:pkcs11:token=t;object=k\";
           ssl_certificate ec.crt; ssl_certificate_key /k/ec.pem; ssl_session_tickets off;
         }",
    ))
    .unwrap();
    let s = &c.servers[0];
    assert!(s.listens[0].ssl && s.listens[0].http2);
    assert_eq!(s.certs.len(), 2);
    assert_eq!(s.certs[0].cert, Path::new("/x/conf/rsa.crt"));
    assert!(matches!(&s.certs[0].key, KeySource::Pkcs11(u) if u.object.as_deref() == Some("k")));
    assert_eq!(s.certs[1].key, KeySource::File("/k/ec.pem".into()));
    assert_eq!(s.tls.protocols, [TlsVersion::Tls12, TlsVersion::Tls13]);
    // OpenSSL's syntax: the named suite first, then what HIGH adds, in OpenSSL's order.
    assert_eq!(
        s.tls.ciphers,
        [
            CipherSuite::EcdheRsaAes128Gcm,
            CipherSuite::EcdheEcdsaAes256Gcm,
            CipherSuite::EcdheRsaAes256Gcm,
            CipherSuite::EcdheEcdsaChacha20,
            CipherSuite::EcdheRsaChacha20,
            CipherSuite::EcdheEcdsaAes128Gcm,
        ]
    );
    assert_eq!(
        s.tls.session_cache,
        SessionCache::Cache {
            builtin: None,
            shared: Some(("SSL".into(), 10 << 20))
        }
    );
    assert_eq!(s.tls.session_timeout, Duration::from_secs(3600));
    assert!(!s.tls.session_tickets);
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(w[3].contains("no \"location\" and no \"return\""), "{w:?}");
    assert!(
        w[0].starts_with("/x/conf/nginx.conf:3:15: ssl_protocols: TLSv1 "),
        "{w:?}"
    );
    assert!(
        w[1].contains("not available in rustls, left out: DHE-RSA-AES128-SHA"),
        "{w:?}"
    );
    // A list that selects nothing fails (nginx: "no cipher match"), and so does one of
    // suites rustls lacks only, naming them.
    for bad in [
        "BOGUS",
        "ECDHE-RSA-AES128-GCM-SHA265",
        "ALL:!HIGH",
        "TLS_AES_128_GCM_SHA256",
    ] {
        let e = err(&http(&format!(
            "ssl_ciphers {bad}; server {{ listen 1; return 200; }}"
        )));
        assert!(
            e.contains("no cipher match") || e.contains("selects no TLS 1.2 suite"),
            "{bad}: {e}"
        );
    }
    let e = err(&http(
        "ssl_ciphers AES128-SHA:DHE-RSA-AES256-SHA; server { listen 1; return 200; }",
    ));
    assert!(
        e.contains("selects no TLS 1.2 suite rustls has (only AES128-SHA:DHE-RSA-AES256-SHA)"),
        "{e}"
    );
    assert!(w[2].contains("\"sendfile\" ignored"), "{w:?}");
    assert_eq!(
        c.prefix,
        Path::new("/x"),
        "default prefix: parent of the conf dir"
    );
}

#[test]
fn main_context_and_globals() {
    let opts = NginxOptions {
        prefix: Some("/p".into()),
        globals: Some("pid run/g.pid;".into()),
    };
    let text = "user www-data adm; worker_processes auto; env TZ; env A=b; ssl_engine pkcs11;
                error_log logs/e.log warn; events { worker_connections 1024; }";
    let c = load_text(Path::new(FILE), text.into(), &opts).unwrap();
    assert_eq!(c.pid.as_deref(), Some(Path::new("/p/run/g.pid")));
    assert_eq!(c.user, Some(("www-data".into(), Some("adm".into()))));
    assert_eq!(
        (c.worker_processes, c.worker_connections),
        (None, Some(1024))
    );
    assert_eq!(c.env, [("TZ".into(), None), ("A".into(), Some("b".into()))]);
    assert!(c.ssl_engine_pkcs11);
    assert_eq!(
        c.error_logs[0].path.as_deref(),
        Some(Path::new("/p/logs/e.log"))
    );
    assert_eq!(c.files().len(), 2);
    assert!(
        c.dump()
            .starts_with("# configuration file /x/conf/nginx.conf:\nuser www-data")
    );
    let e = load_text(Path::new(FILE), "pid a; events {}".into(), &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/x/conf/nginx.conf:1:1: `pid`: directive is duplicate"
    );
}

/// A PIN in a key that is not accepted is not repeated by the error: a URI scheme in
/// another case (read as a URI, not a file path), a typo for `pin-value=`, an unquoted
/// URI whose `;` splits it into directives.
#[test]
fn a_refused_keys_pin_is_not_repeated() {
    let server = |key: &str| {
        http(&format!(
            "server {{ listen 20443 ssl; ssl_certificate a.crt; ssl_certificate_key {key}; }}"
        ))
    };
    for key in [
        "\"PKCS11:token=t;object=k;type=private;pin-value=Zq7PIN;bad\"",
        "\"Engine:pkcs11:pkcs11:token=t;object=k;pin-value=Zq7PIN;x=1\"",
        "\" engine:pkcs11:pkcs11:token=t;object=k;pin-value=Zq7PIN;x=1\"",
        "\"pkcs11:token=t;object=k;pin-valueZq7PIN\"",
        "\"pkcs11:token=t;object=k?pin-value=Zq7&PIN\"",
        "engine:pkcs11:pkcs11:token=t;pin-value=Zq7PIN;object=k",
    ] {
        let e = err(&server(key));
        assert!(!e.contains("Zq7") && !e.contains("PIN"), "{key}: {e}");
    }
    // As certificate, a token's URI is refused as such, not looked for as a file.
    let e = err(&http(
        "server { listen 20443 ssl; ssl_certificate \"PKCS11:token=t;pin-value=Zq7PIN\"; ssl_certificate_key k.pem; }",
    ));
    assert!(
        e.contains("only a PEM file path") && !e.contains("Zq7"),
        "{e}"
    );
}

/// Blocks nested past [`parse::MAX_DEPTH`] are refused where the first too many opens
/// (reading and building them recurse: a few hundred levels overflowed a reload
/// thread's stack and ended the process), also across an `include`.
#[test]
fn blocks_nested_too_deep_are_refused_at_their_line() {
    let nested = |n: usize| {
        let open: String = (0..n).map(|_| "location /a {\n").collect();
        http(&format!(
            "server {{ listen 20080;\n{open}return 200;\n{}}}",
            "}\n".repeat(n)
        ))
    };
    let deep = parse::MAX_DEPTH + 5;
    let e = err(&nested(deep));
    // `http` and `server` are two of the levels; location k opens on line 3 + k, and
    // the first too many is the (MAX_DEPTH - 1)th.
    let line = 3 + parse::MAX_DEPTH - 1;
    assert!(
        e.starts_with(&format!("/x/conf/nginx.conf:{line}:")) && e.contains("nested more than"),
        "{e}"
    );
    assert!(load_str(&nested(parse::MAX_DEPTH - 3)).is_ok());
}

#[test]
fn errors_are_located() {
    let e = err(&http("server { listen 20080; foo on; }"));
    assert_eq!(e, "/x/conf/nginx.conf:3:24: unknown directive \"foo\"");
    assert_eq!(
        err(&http("listen 80;")),
        "/x/conf/nginx.conf:3:1: \"listen\" directive is not allowed here"
    );
    assert_eq!(
        err(&http("server { return 301 https://$host$reqest_uri; }")),
        "/x/conf/nginx.conf:3:34: unknown \"reqest_uri\" variable in \"return\" directive"
    );
    // Escapes before the variable: its column as written.
    assert_eq!(
        err(&http(r#"server { return 200 "a\n\"b\" $nope"; }"#)),
        "/x/conf/nginx.conf:3:31: unknown \"nope\" variable in \"return\" directive"
    );
    assert_eq!(
        err("events {}\nssl_engine foo;\n"),
        "/x/conf/nginx.conf:2:12: `ssl_engine`: engine \"foo\" is not supported: only \"pkcs11\" (keys named by PKCS#11 URIs)"
    );
    assert_eq!(
        err(&http(
            "server { location ~ ^/a { proxy_pass http://b/x; } }"
        )),
        "/x/conf/nginx.conf:3:38: `proxy_pass`: \"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location"
    );
    let e = err(&http(
        "server { ssl_certificate a; ssl_certificate_key \"engine:pkcs11:pkcs11:token=t;colour=red\"; }",
    ));
    assert!(e.starts_with("/x/conf/nginx.conf:3:79: `ssl_certificate_key`: invalid PKCS#11 URI: attribute \"colour\""), "{e}");
    assert!(
        err(&http("server { listen 20443 ssl; }")).contains("no \"ssl_certificate\" is defined")
    );
    assert!(
        err(&http(
            "server { listen 1 default_server; } server { listen 1 default; }"
        ))
        .contains("duplicate default server")
    );
    assert!(
        err(&http("server { location /a { location /b { } } }")).contains("is outside location")
    );
    assert!(
        err(&http("server { location /a { } location /a { } }"))
            .contains("duplicate location \"/a\"")
    );
    assert!(
        err(&http("server { access_log x.log nope; }")).contains("unknown log format \"nope\"")
    );
    assert!(err(&http("upstream u { keepalive 2; }")).contains("no servers are inside upstream"));
    assert!(err("http {}").contains("no \"events\" section"));
    assert_eq!(
        err("events {} server;"),
        "/x/conf/nginx.conf:1:11: \"server\" directive is not allowed here"
    );
    assert_eq!(
        err("events;"),
        "/x/conf/nginx.conf:1:1: no opening \"{\" in \"events\" directive"
    );
}

#[test]
fn hosts_that_do_not_resolve_are_refused_like_nginx() {
    // A typo'd upstream name: nginx's `[emerg] host not found in upstream "…"`.
    let e = err(&http(
        "server { location / { proxy_pass http://nosuchgroup.invalid; } }",
    ));
    assert_eq!(
        e,
        "/x/conf/nginx.conf:3:34: host not found in upstream \"nosuchgroup.invalid\""
    );
    let e = err(&http(
        "server { location / { proxy_pass https://nosuchgroup.invalid:8443/x/; } }",
    ));
    assert!(
        e.ends_with("host not found in upstream \"nosuchgroup.invalid:8443\""),
        "{e}"
    );
    let e = err(&http(
        "upstream app { server nosuch.invalid:81; }\nserver { location / { proxy_pass http://app; } }",
    ));
    assert!(
        e.ends_with("host not found in upstream \"nosuch.invalid:81\""),
        "{e}"
    );
    // Upstream names, addresses and names that resolve are fine.
    for ok in [
        "upstream app { server localhost:81; } server { location / { proxy_pass http://app; } }",
        "server { location / { proxy_pass http://localhost:8080; } }",
        "server { location / { proxy_pass http://127.0.0.1; } }",
        "server { location / { proxy_pass http://[::1]:81/; } }",
    ] {
        load_str(&http(ok)).expect(ok);
    }
}

#[test]
fn upstreams() {
    let c = load_str(&http(
        "upstream app { server 10.0.0.1:8080 weight=3 max_fails=2 fail_timeout=30s; server localhost backup; server localhost:81 down; keepalive 16; }
         server { location / { proxy_pass http://app; } }",
    ))
    .unwrap();
    let u = &c.upstreams["app"];
    assert_eq!(u.keepalive, Some(16));
    assert_eq!(
        u.servers
            .iter()
            .map(|s| (s.addr.as_str(), s.weight, s.max_fails, s.backup, s.down))
            .collect::<Vec<_>>(),
        [
            ("10.0.0.1:8080", 3, 2, false, false),
            ("localhost:80", 1, 1, true, false),
            ("localhost:81", 1, 1, false, true)
        ]
    );
    assert_eq!(u.servers[0].fail_timeout, Duration::from_secs(30));
    assert!(
        matches!(&c.servers[0].locations[0].action, Some(Action::ProxyPass(p)) if p.target == UpstreamRef::Named("app".into()))
    );
}

#[test]
fn client_limits_inherit_and_default_to_nginx() {
    let c = load_str(&http(
        "large_client_header_buffers 2 4k; client_header_timeout 5s;
         server { listen 20080; http2_max_concurrent_streams 16;
           location / { proxy_pass http://127.0.0.1:9000; } }
         server { listen 20081; client_header_buffer_size 2k;
           location / { proxy_pass http://127.0.0.1:9000; } }",
    ))
    .unwrap();
    let (a, b) = (&c.servers[0].settings.client, &c.servers[1].settings.client);
    assert_eq!(a.large_header_buffers, (2, 4096));
    assert_eq!(a.header_timeout, Duration::from_secs(5));
    assert_eq!(a.http2_max_concurrent_streams, 16);
    assert_eq!(b.http2_max_concurrent_streams, 128, "nginx's default");
    assert_eq!(b.header_buffer_size, 2048);
    assert_eq!(
        c.servers[0].locations[0].settings.client, *a,
        "locations carry their server's"
    );
    assert!(err(&http("large_client_header_buffers 4 100;")).contains("at least 1k"));
    assert!(err(&http("large_client_header_buffers 0 8k;")).contains("invalid value"));
    assert!(
        err(&http(
            "server { listen 1; location / { client_header_timeout 1s; } }"
        ))
        .contains("client_header_timeout")
    );
}

/// certbot's port-80 server: `if ($host = …) { return 301 …; }` in order, then the
/// server's `return 404`; an `if` after a `return` is never used (warned).
#[test]
fn server_if_and_the_corpus_directives() {
    let c = load_str(&http(
        "http2 on;
  server {
    if ($host = www.example.com) { return 301 https://$host$request_uri; }
    if ($scheme != \"https\") { return 302 https://x/; }
    if ($request_method !~* ^(get|head)$) { return 405; }
    if ($http_x_flag) { return 403; }
    listen 127.0.0.1:80;
    root /var/www/html;
    index index.html index.htm;
    return 404;
    if ($host = late) { return 410; }
  }
  server {
    listen 127.0.0.1:81;
    location / { root /srv; }
    location /app/ { proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let s = &c.servers[0];
    assert!(s.listens[0].http2, "http2 on in http applies to the server");
    let ifs: Vec<&ServerIf> = (s.server_steps.iter())
        .filter_map(|step| match step {
            ServerStep::If(i) => Some(i),
            ServerStep::Rewrite(_) | ServerStep::Set(_) | ServerStep::Break => None,
        })
        .collect();
    assert_eq!(ifs.len(), 4);
    let holds = |i: usize, vars: &[(&str, &str)]| {
        let get = |n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map_or(String::new(), |(_, v)| (*v).to_owned())
        };
        ifs[i]
            .condition
            .holds(&get, &|t| t.as_literal().unwrap_or_default())
    };
    assert!(holds(0, &[("host", "www.example.com")]));
    assert!(!holds(0, &[("host", "example.com")]));
    assert!(holds(1, &[("scheme", "http")]));
    assert!(!holds(1, &[("scheme", "https")]));
    assert!(holds(2, &[("request_method", "POST")]));
    assert!(!holds(2, &[("request_method", "GET")]));
    assert!(holds(3, &[("http_x_flag", "1")]));
    assert!(!holds(3, &[("http_x_flag", "0")]));
    assert_eq!(ifs[0].ret.as_ref().map(|r| r.code), Some(301));
    assert_eq!(s.server_return.as_ref().map(|r| r.code), Some(404));
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    let has = |needle: &str| w.iter().any(|w| w.contains(needle));
    assert!(has("\"if\" is never used"), "{w:?}");
    assert!(
        has("\"root\" is used only for the pages") && has("\"index\" ignored"),
        "{w:?}"
    );
    assert!(has("location \"/\" has no \"proxy_pass\""), "{w:?}");
    assert!(!has("location \"/app/\""), "{w:?}");

    let e = err(&http(
        "server { listen 127.0.0.1:1;\n location / { try_files $uri =404; } }",
    ));
    assert!(e.starts_with("/x/conf/nginx.conf:4:15: "), "{e}");
    assert!(e.contains("try_files") && e.contains("proxy_pass"), "{e}");
    let e = err(&format!("load_module a b;\n{}", http("")));
    assert!(e.starts_with("/x/conf/nginx.conf:1:1: "), "{e}");
}

#[test]
fn rewrites_in_servers_and_locations() {
    let c = load_str(&http(
        "server {
    listen 127.0.0.1:80;
    rewrite ^/old/(.*)$ /new/$1 last;
    if ($host = a) { return 301 https://a/; }
    rewrite ^(.*)$ https://$host$1 permanent;
    return 404;
    rewrite ^ /never;
    location /api/ { rewrite ^/api/(.*)$ /$1 break; proxy_pass http://127.0.0.1:9/x/; }
    location /v2/ { rewrite ^/v2/(.*)$ /api/$1?v=2? last; }
    location /r/ { return 410; rewrite ^ /never; }
    rewrite_log on;
  }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let kinds: Vec<String> = (s.server_steps.iter())
        .map(|step| match step {
            ServerStep::If(_) => "if".to_owned(),
            ServerStep::Rewrite(r) => format!("{}:{:?}", r.pattern, r.redirect),
            ServerStep::Set(v) => format!("set:{}", v.name),
            ServerStep::Break => "break".to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["^/old/(.*)$:None", "if", "^(.*)$:Some(301)"]);
    let api = location_match(&s.locations, "/api/a").unwrap();
    let rewrite = |l: &LocationBlock| match &l.steps[..] {
        [LocationStep::Rewrite(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(rewrite(api).flag, RewriteFlag::Break);
    assert!(api.pass.is_some());
    let v2 = location_match(&s.locations, "/v2/a").unwrap();
    assert!(!rewrite(v2).keep_args);
    assert_eq!(
        rewrite(v2)
            .apply("/v2/a", "x=1", &|_| String::new())
            .map(|(d, _)| d),
        Some(Rewritten::Uri {
            uri: "/api/a".into(),
            args: "v=2".into()
        })
    );
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    let has = |needle: &str| w.iter().any(|w| w.contains(needle));
    assert!(has("\"rewrite\" is never used"), "{w:?}");
    assert_eq!(
        w.iter().filter(|w| w.contains("never used")).count(),
        2,
        "{w:?}"
    );
    assert!(
        !has("location \"/v2/\""),
        "a location that rewrites is not a file location: {w:?}"
    );
    assert!(has("\"rewrite_log\" ignored"), "{w:?}");

    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, at, needle) in [
        ("rewrite ^/a( /b;", "4:9", "invalid regex"),
        ("rewrite ^ /b bogus;", "4:14", "invalid parameter \"bogus\""),
        ("rewrite ^ b last;", "4:11", "neither a path"),
        ("rewrite ^ /$nope;", "4:12", "unknown \"nope\" variable"),
        ("rewrite ^;", "4:1", "invalid number of arguments"),
    ] {
        let e = err(&server(line));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
    let e = err(&http("rewrite ^ /a;"));
    assert!(e.contains("not allowed here"), "{e}");
}

#[test]
fn auth_basic_realm_and_file_are_inherited_apart() {
    let c = load_str(&http(
        "auth_basic \"Staff $host\";
  server {
    listen 127.0.0.1:80;
    auth_basic_user_file htpasswd;
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { auth_basic off; proxy_pass http://127.0.0.1:9; }
    location /c/ { auth_basic_user_file /etc/other; proxy_pass http://127.0.0.1:9; }
  }
  server { listen 127.0.0.1:81; location / { proxy_pass http://127.0.0.1:9; } }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let auth = |path: &str| {
        let l = location_match(&s.locations, path).unwrap();
        l.settings
            .auth_basic
            .as_ref()
            .map(|a| (a.realm.to_string(), a.user_file.clone()))
    };
    assert_eq!(
        auth("/a/"),
        Some(("Staff ${host}".into(), PathBuf::from("/x/conf/htpasswd")))
    );
    assert_eq!(auth("/b/"), None, "auth_basic off");
    assert_eq!(auth("/c/").map(|a| a.1), Some(PathBuf::from("/etc/other")));
    let other = &c.servers[1].locations[0];
    assert_eq!(other.settings.auth_basic, None, "a realm without a file");
    let e = err(&http(
        "server { listen 127.0.0.1:1; auth_basic_user_file /a/$host; }",
    ));
    assert!(e.contains("variables in the file name"), "{e}");
}

#[test]
fn error_pages_and_named_locations() {
    let c = load_str(&http(
        "error_page 500 502 503 504 /50x.html;
  server {
    listen 127.0.0.1:80;
    root html;
    location = /50x.html { root /usr/share/nginx/html; }
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { error_page 404 = @fallback; error_page 403 =200 /x?y=1;
        proxy_intercept_errors on; recursive_error_pages on; proxy_pass http://127.0.0.1:9; }
    location /c/ { error_page 404 =301 https://$host/nf; return 404; }
    location @fallback { proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let settings = |path: &str| &location_match(&s.locations, path).unwrap().settings;
    let a = settings("/a/");
    assert_eq!(a.error_pages.len(), 1, "inherited from http");
    assert_eq!(a.error_pages[0].codes, [500, 502, 503, 504]);
    assert_eq!(a.error_pages[0].status, ErrorPageStatus::Original);
    assert!(
        matches!(&a.error_pages[0].target, ErrorPageTarget::Uri(t) if t.to_string() == "/50x.html")
    );
    assert_eq!(
        a.root,
        Some(PathBuf::from("/x/html")),
        "root from the prefix"
    );
    assert!(!a.proxy_intercept_errors && !a.recursive_error_pages);
    assert_eq!(
        settings("/50x.html").root,
        Some(PathBuf::from("/usr/share/nginx/html"))
    );
    let b = settings("/b/");
    assert_eq!(b.error_pages.len(), 2, "a level with its own inherits none");
    assert_eq!(b.error_pages[0].status, ErrorPageStatus::FromTarget);
    assert_eq!(
        b.error_pages[0].target,
        ErrorPageTarget::Named("@fallback".into())
    );
    assert_eq!(b.error_pages[1].status, ErrorPageStatus::Set(200));
    assert!(b.proxy_intercept_errors && b.recursive_error_pages);
    let c301 = &settings("/c/").error_pages[0];
    assert_eq!(c301.status, ErrorPageStatus::Set(301));
    assert!(matches!(&c301.target, ErrorPageTarget::Redirect(_)));
    let named = s
        .locations
        .iter()
        .find(|l| l.matcher.pattern() == "@fallback")
        .unwrap();
    assert!(named.action.is_some());
    // No request path (they all start with `/`) selects a named location.
    let found = location_match(&s.locations, "/@fallback");
    assert!(found.is_none_or(|l| l.matcher.pattern() != "@fallback"));
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("\"root\" is used only for the pages")),
        "{w:?}"
    );

    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, at, needle) in [
        ("error_page 200 /x;", "4:12", "must be between 300 and 599"),
        ("error_page 499 /x;", "4:12", "must be between 300 and 599"),
        ("error_page 404 =abc /x;", "4:16", "invalid value \"=abc\""),
        ("error_page =200 /x;", "4:1", "invalid number of arguments"),
        ("error_page 404;", "4:1", "invalid number of arguments"),
        ("error_page 404 @;", "4:16", "empty location name"),
        (
            "location /a/ { location @n { return 200; } }",
            "4:16",
            "named location is at the server level only",
        ),
        (
            "location @n { proxy_pass http://127.0.0.1:9/x; }",
            "4:26",
            "inside named location",
        ),
        ("root /a/$host;", "4:6", "variables in the path"),
        ("satisfy some;", "4:9", "it must be \"all\" or \"any\""),
        (
            "location /a/ { if ($arg_x) { if ($arg_y) { return 403; } } }",
            "4:30",
            "\"if\" directive is not allowed here",
        ),
        (
            "location /a/ { if ($arg_x) { proxy_pass http://127.0.0.1:9/u; } }",
            "4:41",
            "cannot have URI part inside \"if\"",
        ),
        (
            "location /a/ { if ($arg_x) { bogus 1; } }",
            "4:30",
            "unknown directive",
        ),
        (
            "location /a/ { if (-f $uri) { return 403; } }",
            "4:19",
            "file test",
        ),
        (
            "location /a/ { internal x; }",
            "4:16",
            "invalid number of arguments",
        ),
        ("location /a/ { internal; internal; }", "4:26", "duplicate"),
    ] {
        let e = err(&server(line));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn directives_that_cannot_change_an_answer_are_warned_about() {
    for (line, warning) in [
        ("proxy_headers_hash_max_size 1024;", "hash-table sizing"),
        ("variables_hash_bucket_size 128;", "hash-table sizing"),
        ("ssl_buffer_size 4k;", "TLS record sizing"),
        ("ssl_early_data on;", "0-RTT data is not accepted"),
        ("reset_timedout_connection on;", "teardown"),
        ("lingering_close always;", "teardown"),
        ("keepalive_disable msie6;", "old browsers"),
        ("proxy_max_temp_file_size 0;", "streamed"),
        ("output_buffers 2 32k;", "response buffering"),
        ("http2_push_preload on;", "server push"),
        ("proxy_socket_keepalive on;", "keep-alive probes"),
        ("proxy_ignore_headers X-Accel-Expires Expires;", "X-Accel"),
        ("etag off;", "static files"),
        (
            "proxy_cache_path /tmp/c levels=1:2 keys_zone=c:10m;",
            "NOT CACHED",
        ),
        ("proxy_cache c;", "NOT CACHED"),
        ("proxy_cache_valid 200 1m;", "NOT CACHED"),
    ] {
        let c = load_str(&http(&format!(
            "{line}\n  server {{ listen 127.0.0.1:80; location / {{ proxy_pass http://127.0.0.1:9;
            add_header X-Cache $upstream_cache_status; }} }}"
        )))
        .unwrap_or_else(|e| panic!("{line}: {e}"));
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter()
                .any(|w| w.contains(warning) && w.contains("ignored")),
            "{line}: {w:?}"
        );
    }
    // Their arguments are still checked where nginx's -t checks them.
    let e = err(&http("ssl_early_data maybe;"));
    assert!(e.contains("ssl_early_data"), "{e}");
}

#[test]
fn proxy_protocol_and_real_ip() {
    let c = load_str(&http(
        "set_real_ip_from 10.0.0.0/8; set_real_ip_from 192.0.2.1; real_ip_header X-Forwarded-For;
  server {
    listen 127.0.0.1:80 proxy_protocol; proxy_protocol_timeout 5s;
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { set_real_ip_from unix:; real_ip_header proxy_protocol; real_ip_recursive on;
        proxy_pass http://127.0.0.1:9; }
  }
  server { listen 127.0.0.1:81; location / { proxy_pass http://127.0.0.1:9; } }",
    ))
    .unwrap();
    let s = &c.servers[0];
    assert!(s.listens[0].proxy_protocol);
    assert!(!c.servers[1].listens[0].proxy_protocol);
    assert_eq!(
        s.settings.client.proxy_protocol_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        c.servers[1].settings.client.proxy_protocol_timeout,
        Duration::from_secs(30)
    );
    let real_ip = |path: &str| {
        location_match(&s.locations, path)
            .unwrap()
            .settings
            .real_ip
            .clone()
            .unwrap()
    };
    let a = real_ip("/a/");
    assert_eq!(a.from.len(), 2, "inherited from http");
    assert_eq!(a.header, RealIpHeader::Header("x-forwarded-for".into()));
    assert!(!a.recursive);
    let b = real_ip("/b/");
    assert_eq!(
        b.from,
        [AccessMatch::Unix],
        "a level with its own inherits none"
    );
    assert_eq!(b.header, RealIpHeader::ProxyProtocol);
    assert!(b.recursive);
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, at, needle) in [
        ("set_real_ip_from 10.0.0.0/33;", "4:18", "invalid address"),
        ("set_real_ip_from localhost;", "4:18", "invalid address"),
        ("real_ip_header \"X Bad\";", "4:16", "invalid header name"),
        (
            "real_ip_recursive maybe;",
            "4:19",
            "must be \"on\" or \"off\"",
        ),
        (
            "location / { proxy_protocol_timeout 5s; }",
            "4:14",
            "not allowed here",
        ),
    ] {
        let e = err(&server(line));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn ssl_reject_handshake_needs_no_certificate() {
    let c = load_str(&http(
        "server { listen 127.0.0.1:443 ssl default_server; ssl_reject_handshake on; }
  server { listen 127.0.0.1:443 ssl; server_name a.test;
    ssl_certificate a.crt; ssl_certificate_key a.key; location / { return 200; } }",
    ))
    .unwrap();
    assert!(c.servers[0].tls.reject_handshake && c.servers[0].certs.is_empty());
    assert!(!c.servers[1].tls.reject_handshake);
    let e = err(&http(
        "server { listen 127.0.0.1:443 ssl; ssl_reject_handshake off; }",
    ));
    assert!(e.contains("no \"ssl_certificate\" is defined"), "{e}");
    let e = err(&http(
        "server { listen 127.0.0.1:443 ssl; ssl_reject_handshake maybe; }",
    ));
    assert!(e.contains("it must be \"on\" or \"off\""), "{e}");
}

#[test]
fn set_declares_variables_usable_anywhere() {
    let c = load_str(&http(
        "server { listen 127.0.0.1:80;
    location /a/ { return 200 \"$later\"; }
    location /b/ { set $later \"$host-$Mixed\"; if ($arg_x) { set $Mixed 1; } return 200; }
  }",
    ))
    .unwrap();
    let b = location_match(&c.servers[0].locations, "/b/").unwrap();
    let names: Vec<String> = (b.steps.iter())
        .map(|s| match s {
            LocationStep::Set(v) => v.name.clone(),
            LocationStep::If(i) => match &i.steps[..] {
                [LocationStep::Set(v)] => format!("if:{}", v.name),
                other => panic!("{other:?}"),
            },
            LocationStep::Rewrite(_) => "rewrite".into(),
            LocationStep::Break => "break".into(),
        })
        .collect();
    assert_eq!(names, ["later", "if:mixed"]);
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, at, needle) in [
        ("set $host x;", "4:5", "cannot be set"),
        ("set $http_x x;", "4:5", "cannot be set"),
        ("set $1 x;", "4:5", "cannot be set"),
        ("set x y;", "4:5", "invalid variable name"),
        ("set $x $nope;", "4:8", "unknown \"nope\" variable"),
        ("set $x;", "4:1", "invalid number of arguments"),
    ] {
        let e = err(&server(line));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn client_certificate_settings() {
    let server = |extra: &str| {
        http(&format!(
            "ssl_verify_depth 2;\n  server {{\n    listen 127.0.0.1:20443 ssl;\n    ssl_certificate a.crt; ssl_certificate_key a.key;\n{extra}\n    location / {{ return 200; }}\n  }}"
        ))
    };
    let c = load_str(&server(
        "    ssl_client_certificate ca.pem;\n    ssl_verify_client optional;",
    ))
    .unwrap();
    let tls = &c.servers[0].tls;
    assert_eq!(tls.verify_client, VerifyClient::Optional);
    assert_eq!(
        tls.client_certificate.as_deref(),
        Some(Path::new("/x/conf/ca.pem"))
    );
    assert_eq!(tls.verify_depth, 2);
    // Where the file is named, for errors about its content (read when served).
    let at = tls
        .files_at
        .client_certificate
        .as_deref()
        .unwrap_or_default();
    assert!(at.ends_with("nginx.conf:7:5"), "{at}");
    let files = load_str(&server(
        "    ssl_session_ticket_key a.key;\n    ssl_session_ticket_key b.key;\n    \
         ssl_stapling on;\n    ssl_stapling_file r.der;",
    ))
    .unwrap();
    let tls = &files.servers[0].tls;
    let of = |d: &str, p: &str| tls.files_at.of(d, Path::new(p), tls).unwrap_or_default();
    assert!(of("ssl_session_ticket_key", "/x/conf/b.key").ends_with(":8:5"));
    assert!(of("ssl_session_ticket_key", "/x/conf/a.key").ends_with(":7:5"));
    assert!(of("ssl_stapling_file", "/x/conf/r.der").ends_with(":10:5"));
    let off = load_str(&server("")).unwrap();
    assert_eq!(off.servers[0].tls.verify_client, VerifyClient::Off);
    // nginx -t: "no ssl_client_certificate for ssl_verify_client".
    let e = err(&server("    ssl_verify_client on;"));
    assert!(e.contains("nginx.conf:7"), "{e}");
    assert!(e.contains("no ssl_client_certificate"), "{e}");
    let e = err(&server(
        "    ssl_client_certificate ca.pem;\n    ssl_verify_client optional_no_ca;",
    ));
    assert!(
        e.contains("nginx.conf:8") && e.contains("optional_no_ca"),
        "{e}"
    );
    let e = err(&server("    ssl_verify_client maybe;"));
    assert!(e.contains("invalid value \"maybe\""), "{e}");
    let e = err(&server("    ssl_verify_depth x;"));
    assert!(e.contains("invalid number"), "{e}");
}

#[test]
fn ssl_stapling_without_a_file_fetches_from_the_responder() {
    let server = |name: &str| {
        format!(
            "  server {{\n    listen 127.0.0.1:20443 ssl;\n    server_name {name};\n    ssl_certificate a.crt; ssl_certificate_key a.key;\n    location / {{ return 200; }}\n  }}\n"
        )
    };
    let text = http(&format!("ssl_stapling on;\n{}{}", server("a"), server("b")));
    let c = load_str(&text).unwrap();
    assert!(c.warnings.iter().all(|w| !w.to_string().contains("stapl")));
    for s in &c.servers {
        assert!(s.tls.stapling_file.is_none());
        let fetch = s.tls.stapling_fetch.as_ref().expect("fetched");
        assert_eq!(fetch.responder, None);
        assert!(!fetch.verify);
        assert_eq!(fetch.trusted, None);
        assert!(fetch.at.ends_with("nginx.conf:3:1"), "{}", fetch.at);
    }
    // The server's own settings over http's.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    let text = http(&format!(
        "ssl_stapling on; ssl_stapling_verify on; ssl_trusted_certificate {};\n{}",
        ca.display(),
        server("a").replace(
            "location",
            "ssl_stapling_responder http://ocsp.example.test:8080/ocsp;\n    location"
        )
    ));
    let c = load_str(&text).unwrap();
    let fetch = c.servers[0].tls.stapling_fetch.as_ref().expect("fetched");
    assert_eq!(
        fetch.responder.as_deref(),
        Some("http://ocsp.example.test:8080/ocsp")
    );
    assert!(fetch.verify);
    assert_eq!(fetch.trusted.as_deref(), Some(ca.as_path()));
    // As nginx -t: the file must be readable.
    let e = err(&http("ssl_trusted_certificate missing.pem;"));
    assert!(e.contains("cannot read \"/x/conf/missing.pem\""), "{e}");
    let e = err(&http("ssl_stapling_responder https://ocsp.example.test/;"));
    assert!(
        e.contains("ssl_stapling_responder") && e.contains("only http://"),
        "{e}"
    );
    assert!(err(&http("ssl_stapling_verify maybe;")).contains("must be \"on\" or \"off\""));
    let off = http(&format!("ssl_stapling off;\n{}", server("a")));
    assert!(
        load_str(&off).unwrap().servers[0]
            .tls
            .stapling_fetch
            .is_none()
    );
    let with_file = http(&format!(
        "ssl_stapling on; ssl_stapling_file ocsp.der;\n{}",
        server("a")
    ));
    let c = load_str(&with_file).unwrap();
    assert_eq!(
        c.servers[0].tls.stapling_file.as_deref(),
        Some(Path::new("/x/conf/ocsp.der"))
    );
    assert!(c.servers[0].tls.stapling_fetch.is_none());
    let off = http(&format!(
        "ssl_stapling off; ssl_stapling_file ocsp.der;\n{}",
        server("a")
    ));
    assert!(
        load_str(&off).unwrap().servers[0]
            .tls
            .stapling_file
            .is_none()
    );
    assert!(err(&http("ssl_stapling yes;")).contains("must be \"on\" or \"off\""));
}

#[test]
fn admission_env_directives_are_checked_where_they_are() {
    let server = "  server {\n    listen 127.0.0.1:20443 ssl;\n    ssl_certificate a.crt; ssl_certificate_key a.key;\n    location / { return 200; }\n  }\n";
    let bad = format!("env HSMGATE_ADMISSION_TARGET_WAIT_MS=-5;\n{}", http(server));
    let e = err(&bad);
    assert!(e.contains("nginx.conf:1"), "{e}");
    assert!(e.contains("HSMGATE_ADMISSION_TARGET_WAIT_MS"), "{e}");
    let e = err(&format!("env HSMGATE_ADMISSION=maybe;\n{}", http(server)));
    assert!(e.contains("nginx.conf:1") && e.contains("on or off"), "{e}");
    let typo = format!("env HSMGATE_ADMISSION_MAXWAIT_MS=5;\n{}", http(server));
    let c = load_str(&typo).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.to_string().contains("unknown admission setting")),
        "{:?}",
        c.warnings
    );
    let good = format!("env HSMGATE_ADMISSION_MAX_WAITING=64;\n{}", http(server));
    assert!(load_str(&good).unwrap().warnings.is_empty());
    // Lines checked as one set: a target over the default maximum with a maximum above
    // it, in either order, passes; a maximum below the target fails at its own line.
    for pair in [
        "env HSMGATE_ADMISSION_TARGET_WAIT_MS=500;\nenv HSMGATE_ADMISSION_MAX_WAIT_MS=1000;",
        "env HSMGATE_ADMISSION_MAX_WAIT_MS=1000;\nenv HSMGATE_ADMISSION_TARGET_WAIT_MS=500;",
    ] {
        assert!(
            load_str(&format!("{pair}\n{}", http(server))).is_ok(),
            "{pair}"
        );
    }
    let e = err(&format!(
        "env HSMGATE_ADMISSION_TARGET_WAIT_MS=50;\nenv HSMGATE_ADMISSION_MAX_WAIT_MS=20;\n{}",
        http(server)
    ));
    assert!(
        e.contains("nginx.conf:2") && e.contains("HSMGATE_ADMISSION_MAX_WAIT_MS=\"20\""),
        "{e}"
    );
}

#[test]
fn proxy_next_upstream_defaults_to_error_timeout_and_parses_its_values() {
    let c = load_str(&http(
        "server { listen 1; location / { proxy_pass http://127.0.0.1:1; } \
         location /b { proxy_pass http://127.0.0.1:1; proxy_next_upstream http_503 non_idempotent; } \
         location /c { proxy_pass http://127.0.0.1:1; proxy_next_upstream off; } }",
    ))
    .unwrap();
    let l = &c.servers[0].locations;
    let d = &l[0].settings.proxy_next_upstream;
    assert!(d.error && d.timeout && d.statuses.is_empty() && !d.non_idempotent);
    let b = &l[1].settings.proxy_next_upstream;
    assert!(!b.error && !b.timeout && b.statuses == [503] && b.non_idempotent);
    let off = &l[2].settings.proxy_next_upstream;
    assert!(!off.error && !off.timeout && off.statuses.is_empty());
    let e = err(&http(
        "server { listen 1; location / { proxy_pass http://127.0.0.1:1; proxy_next_upstream http_418; } }",
    ));
    assert!(e.contains("http_418") && e.contains("nginx.conf:3"), "{e}");
}

#[test]
fn listen_socket_options_are_read_as_nginx_writes_them() {
    let c = load_str(&http(
        "server { listen 20443 ssl deferred so_keepalive=30m:10:3 fastopen=256 rcvbuf=64k sndbuf=1m;
                  listen 20444 bind so_keepalive=on ipv6only=on;
                  listen 20445 so_keepalive=off;
                  listen 20446 so_keepalive=::5 rcvbuf=0 fastopen=0 accept_filter=dataready;
                  listen 20447 so_keepalive=30m; listen 20448 so_keepalive=0:5:;
                  ssl_certificate a.crt; ssl_certificate_key a.key; }",
    ))
    .unwrap();
    let l = &c.servers[0].listens;
    assert_eq!(
        l[0].socket,
        SocketOptions {
            deferred: true,
            keepalive: Some(SoKeepalive::On {
                idle: Some(1800),
                interval: Some(10),
                count: Some(3)
            }),
            fastopen: Some(256),
            rcvbuf: Some(64 << 10),
            sndbuf: Some(1 << 20),
        }
    );
    let on = SoKeepalive::On {
        idle: None,
        interval: None,
        count: None,
    };
    assert_eq!(l[1].socket.keepalive, Some(on));
    assert_eq!(l[1].ipv6only, Some(true));
    assert_eq!(l[2].socket.keepalive, Some(SoKeepalive::Off));
    let count_only = SoKeepalive::On {
        idle: None,
        interval: None,
        count: Some(5),
    };
    assert_eq!(l[3].socket.keepalive, Some(count_only));
    assert_eq!(
        (l[3].socket.rcvbuf, l[3].socket.fastopen),
        (Some(0), Some(0))
    );
    // Parts left out, or 0, keep the system's default (as nginx reads them).
    let idle_only = SoKeepalive::On {
        idle: Some(1800),
        interval: None,
        count: None,
    };
    assert_eq!(l[4].socket.keepalive, Some(idle_only));
    let interval_only = SoKeepalive::On {
        idle: None,
        interval: Some(5),
        count: None,
    };
    assert_eq!(l[5].socket.keepalive, Some(interval_only));
    assert!(c.warnings.iter().any(|w| w.message
        == "accept filters \"accept_filter=dataready\" are not supported on this platform, ignored"));
    // What nginx refuses, with its words, at the parameter.
    for (param, reason) in [
        ("so_keepalive=::", "invalid so_keepalive value: \"::\""),
        (
            "so_keepalive=0:0:0",
            "invalid so_keepalive value: \"0:0:0\"",
        ),
        (
            "so_keepalive=1:2:3:4",
            "invalid so_keepalive value: \"1:2:3:4\"",
        ),
        ("so_keepalive=x", "invalid so_keepalive value: \"x\""),
        (
            "so_keepalive=1500ms::",
            "invalid so_keepalive value: \"1500ms::\"",
        ),
        ("so_keepalive=::+5", "invalid so_keepalive value: \"::+5\""),
        ("fastopen=+5", "invalid fastopen \"fastopen=+5\""),
        ("rcvbuf=1g", "invalid rcvbuf \"rcvbuf=1g\""),
        ("fastopen=many", "invalid fastopen \"fastopen=many\""),
        ("rcvbuf=-1", "invalid rcvbuf \"rcvbuf=-1\""),
        ("sndbuf=1q", "invalid sndbuf \"sndbuf=1q\""),
        ("ipv6only=maybe", "invalid parameter \"ipv6only=maybe\""),
        ("deferred=1", "invalid parameter \"deferred=1\""),
        ("quic", "the \"quic\" parameter is not supported by hsmgate"),
    ] {
        let e = err(&http(&format!("server {{ listen 20080 {param}; }}")));
        assert_eq!(
            e,
            format!("/x/conf/nginx.conf:3:23: `listen`: {reason}"),
            "{param}"
        );
    }
}

#[test]
fn proxy_next_upstream_tries_and_timeout_inherit_on_their_own() {
    let c = load_str(&http(
        "proxy_next_upstream_tries 3;
         server { listen 1; proxy_next_upstream_timeout 10s;
           location /a { proxy_pass http://127.0.0.1:1; proxy_next_upstream http_502; }
           location /b { proxy_pass http://127.0.0.1:1; proxy_next_upstream_tries 0;
                         proxy_next_upstream_timeout 0; } }",
    ))
    .unwrap();
    let l = &c.servers[0].locations;
    let a = &l[0].settings.proxy_next_upstream;
    assert_eq!((a.tries, a.time_limit), (3, Some(Duration::from_secs(10))));
    assert_eq!(a.statuses, [502]);
    assert!(a.may_try_another(2, Duration::from_secs(9)));
    assert!(!a.may_try_another(3, Duration::ZERO), "three tries made");
    assert!(!a.may_try_another(1, Duration::from_secs(10)), "time is up");
    let b = &l[1].settings.proxy_next_upstream;
    assert_eq!((b.tries, b.time_limit), (0, None));
    assert!(
        b.may_try_another(100, Duration::from_secs(3600)),
        "0: no limit"
    );
    assert_eq!(
        err(&http("server { listen 1; proxy_next_upstream_tries +3; }")),
        "/x/conf/nginx.conf:3:46: `proxy_next_upstream_tries`: invalid number"
    );
}

#[test]
fn allow_and_deny_are_read_in_order_and_inherited_whole() {
    let c = load_str(&http(
        "allow 192.0.2.1; deny 192.0.2.0/24;
         server { listen 1;
           location /a { proxy_pass http://127.0.0.1:1; }
           location /b { proxy_pass http://127.0.0.1:1; allow 10.1.2.3/8; allow 2001:db8::/32;
                         allow unix:; deny all; } }",
    ))
    .unwrap();
    let l = &c.servers[0].locations;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let a = &l[0].settings.access_rules;
    assert_eq!(a.len(), 2, "inherited from http");
    assert!(
        AccessRule::allows(a, ip("192.0.2.1")),
        "the first match decides"
    );
    assert!(!AccessRule::allows(a, ip("192.0.2.7")));
    assert!(
        !AccessRule::allows(a, ip("::ffff:192.0.2.7")),
        "IPv4-mapped as IPv4"
    );
    assert!(
        AccessRule::allows(a, ip("198.51.100.1")),
        "no rule matches: allowed"
    );
    let b = &l[1].settings.access_rules;
    assert_eq!(b.len(), 4, "a level with rules inherits none");
    // `10.1.2.3/8`: the host bits go, as nginx does (with a warning there).
    assert_eq!(
        b[0].matches,
        AccessMatch::Net("10.0.0.0/8".parse().unwrap())
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message == "low address bits of 10.1.2.3/8 are meaningless")
    );
    assert!(AccessRule::allows(b, ip("10.200.0.1")));
    assert!(AccessRule::allows(b, ip("2001:db8::1")));
    assert!(!AccessRule::allows(b, ip("192.0.2.1")), "deny all");
    assert_eq!(b[2].matches, AccessMatch::Unix);
    // A rule where nginx has none is "not allowed here".
    assert_eq!(
        err(&http("upstream u { server 127.0.0.1:1; allow all; }")),
        "/x/conf/nginx.conf:3:34: \"allow\" directive is not allowed here"
    );
    assert_eq!(
        err(&http("server { listen 1; deny 10.0.0.0/33; }")),
        "/x/conf/nginx.conf:3:25: `deny`: invalid parameter \"10.0.0.0/33\""
    );
}

#[test]
fn proxy_cookie_rules_are_arrays_inherited_whole() {
    let c = load_str(&http(
        "proxy_cookie_path /app/ /srv/;
  server { listen 127.0.0.1:80;
    location /a/ { proxy_cookie_path /app/ /; proxy_cookie_path ~*^/user/([^/]+) /u/$1;
        proxy_cookie_domain ~^\\.?backend\\.(\\w+)$ x.$1; proxy_pass http://127.0.0.1:9; }
    location /b/ { proxy_cookie_path off; proxy_pass http://127.0.0.1:9; }
    location /c/ { proxy_cookie_domain backend.local $host; proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let settings = |path: &str| {
        &location_match(&c.servers[0].locations, path)
            .unwrap()
            .settings
    };
    let describe = |rules: &[ValueRewrite]| -> Vec<String> {
        (rules.iter())
            .map(|r| match &r.from {
                ValueMatch::Text(t) => format!("{t} -> {}", r.to),
                ValueMatch::Regex(re) => format!("~{} -> {}", re.as_str(), r.to),
            })
            .collect()
    };
    let a = settings("/a/");
    assert_eq!(
        describe(&a.proxy_cookie_path),
        ["/app/ -> /", "~(?i)^/user/([^/]+) -> /u/${1}"],
        "a level with its own rules inherits none"
    );
    // A domain regex is always case-insensitive, as nginx compiles it.
    assert_eq!(
        describe(&a.proxy_cookie_domain),
        ["~(?i)^\\.?backend\\.(\\w+)$ -> x.${1}"]
    );
    assert!(settings("/b/").proxy_cookie_path.is_empty(), "off");
    let c_ = settings("/c/");
    assert_eq!(describe(&c_.proxy_cookie_path), ["/app/ -> /srv/"]);
    assert_eq!(
        describe(&c_.proxy_cookie_domain),
        ["backend.local -> ${host}"]
    );
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, at, needle) in [
        // nginx reads `~*` of a domain as a regex starting with `*`, which fails.
        ("proxy_cookie_domain ~*^a$ b;", "4:21", "invalid regex"),
        ("proxy_cookie_path ~^/(x /y;", "4:19", "invalid regex"),
        (
            "proxy_cookie_path /a/ /b/$nope;",
            "4:26",
            "unknown \"nope\" variable",
        ),
        ("proxy_cookie_path /a/;", "4:1", "invalid parameter"),
        (
            "proxy_cookie_path /a/ /b/; proxy_cookie_path off;",
            "4:",
            "is duplicate",
        ),
    ] {
        let e = err(&server(line));
        assert!(e.starts_with(&format!("{FILE}:{at}")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn proxy_redirect_default_comes_from_the_proxy_pass() {
    let c = load_str(&http(
        "upstream backend { server 127.0.0.1:9; }
  server { listen 127.0.0.1:80;
    location /one/ { proxy_pass http://127.0.0.1:9/two/; }
    location /raw/ { proxy_pass http://backend; }
    location /both/ { proxy_pass http://backend/u/; proxy_redirect default;
        proxy_redirect ~*^http://([^/]+)/app/ https://$1/; }
    location /off/ { proxy_redirect off; proxy_pass http://127.0.0.1:9; }
    location /ret/ { return 200; }
    location /in/ { proxy_redirect http://$host/ /;
        location /in/x/ { proxy_pass http://127.0.0.1:9/y/; } }
    location /if/ { if ($arg_a) { proxy_pass http://backend; } return 200; }
  }",
    ))
    .unwrap();
    let describe = |rules: &[ValueRewrite]| -> Vec<String> {
        (rules.iter())
            .map(|r| match &r.from {
                ValueMatch::Text(t) => format!("{t} -> {}", r.to),
                ValueMatch::Regex(re) => format!("~{} -> {}", re.as_str(), r.to),
            })
            .collect()
    };
    let redirects = |path: &str| {
        let l = location_match(&c.servers[0].locations, path).unwrap();
        describe(&l.settings.proxy_redirect)
    };
    assert_eq!(redirects("/one/"), ["http://127.0.0.1:9/two/ -> /one/"]);
    assert_eq!(redirects("/raw/"), ["http://backend/ -> /"]);
    assert_eq!(
        redirects("/both/"),
        [
            "http://backend/u/ -> /both/",
            "~(?i)^http://([^/]+)/app/ -> https://${1}/"
        ]
    );
    assert!(redirects("/off/").is_empty());
    assert!(redirects("/ret/").is_empty(), "no proxy_pass, no default");
    assert_eq!(
        redirects("/in/x/"),
        ["http://${host}/ -> /"],
        "inherited whole"
    );
    let l = location_match(&c.servers[0].locations, "/if/").unwrap();
    let LocationStep::If(i) = &l.steps[0] else {
        panic!("{:?}", l.steps)
    };
    assert_eq!(
        describe(&i.settings.proxy_redirect),
        ["http://backend/ -> /"]
    );
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    let pass = "proxy_pass http://127.0.0.1:9;";
    for (line, at, needle) in [
        (
            "proxy_redirect default;".to_owned(),
            "4:1",
            "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive",
        ),
        (
            format!("location / {{ proxy_redirect default; {pass} }}"),
            "4:14",
            "should be placed after",
        ),
        (
            format!("location / {{ proxy_redirect off; proxy_redirect http://a/ /; {pass} }}"),
            "4:34",
            "is duplicate",
        ),
        (
            format!("location / {{ proxy_redirect http://a/ /; proxy_redirect off; {pass} }}"),
            "4:42",
            "is duplicate",
        ),
        (
            format!("location / {{ {pass} proxy_redirect off; proxy_redirect default; }}"),
            "4:65",
            "is duplicate",
        ),
        (
            format!("location / {{ proxy_redirect ~*^(a /; {pass} }}"),
            "4:29",
            "invalid regex",
        ),
        (
            format!("location / {{ proxy_redirect a; {pass} }}"),
            "4:29",
            "invalid parameter",
        ),
    ] {
        let e = err(&server(&line));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{line}: {e}");
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn limit_zones_and_limits_as_nginx_reads_them() {
    let c = load_str(&http(
        "limit_req zone=one burst=5;
  limit_req_zone $binary_remote_addr zone=one:10m rate=30r/m;
  limit_req_zone $server_name zone=srv:1m rate=5r/s;
  limit_conn_zone $binary_remote_addr zone=addr:1m;
  limit_req_status 429;
  server { listen 127.0.0.1:80;
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { limit_req zone=srv nodelay; limit_req zone=one delay=2;
        limit_conn addr 10; limit_conn_dry_run on; limit_req_log_level warn;
        proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let one = &c.limit_zones.req["one"];
    assert_eq!((one.size, one.rate_milli), (10 << 20, 500));
    assert_eq!(one.key.to_string(), "${binary_remote_addr}");
    assert_eq!(c.limit_zones.conn["addr"].size, 1 << 20);
    let limits = |path: &str| {
        location_match(&c.servers[0].locations, path)
            .unwrap()
            .settings
            .limits
            .clone()
    };
    let a = limits("/a/");
    assert_eq!(
        a.req,
        [LimitReq {
            zone: "one".into(),
            burst: 5,
            delay: 0
        }],
        "a zone may be used before its definition, as in nginx"
    );
    assert_eq!((a.req_status, a.conn_status), (429, 503));
    assert!(a.conn.is_empty());
    let b = limits("/b/");
    assert_eq!(
        b.req,
        [
            LimitReq {
                zone: "srv".into(),
                burst: 0,
                delay: u64::MAX
            },
            LimitReq {
                zone: "one".into(),
                burst: 0,
                delay: 2
            }
        ],
        "a level with its own inherits none"
    );
    assert_eq!(
        b.conn,
        [LimitConn {
            zone: "addr".into(),
            max: 10
        }]
    );
    assert!(b.conn_dry_run && !b.req_dry_run);
    assert_eq!(b.req_log_level, LimitLogLevel::Warn);
    let with = |lines: &str| {
        http(&format!(
            "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;\n{lines}\nserver {{ listen 127.0.0.1:1; }}"
        ))
    };
    for (lines, at, needle) in [
        (
            "limit_req zone=nope;",
            "4:11",
            "no \"limit_req_zone\" named \"nope\"",
        ),
        (
            "limit_conn z 1;",
            "4:12",
            "no \"limit_conn_zone\" named \"z\"",
        ),
        (
            "limit_req burst=1;",
            "4:1",
            "\"zone\" parameter is required",
        ),
        ("limit_req zone=z burst=x;", "4:18", "invalid burst value"),
        (
            "limit_req zone=z; limit_req zone=z;",
            "4:19",
            "is duplicate",
        ),
        (
            "limit_req zone=z fast;",
            "4:18",
            "invalid parameter \"fast\"",
        ),
        ("limit_req_status 200;", "4:18", "between 400 and 599"),
        (
            "limit_req_log_level loud;",
            "4:21",
            "invalid value \"loud\"",
        ),
        (
            "limit_req_zone $uri zone=y:1m rate=1r/h;",
            "4:31",
            "invalid rate",
        ),
        (
            "limit_req_zone $uri zone=y:1k rate=1r/s;",
            "4:21",
            "zone \"y\" is too small",
        ),
        (
            "limit_req_zone $uri zone=z:1m rate=1r/s;",
            "4:21",
            "duplicate zone \"z\"",
        ),
        (
            "limit_req_zone $uri rate=1r/s rate=2r/s;",
            "4:1",
            "must have \"zone\" parameter",
        ),
        (
            "limit_req_zone $uri zone=y:1m;",
            "4:1",
            "invalid number of arguments",
        ),
        (
            "limit_conn_zone $uri zone=c:1m rate=1r/s;",
            "4:1",
            "invalid number of arguments",
        ),
    ] {
        let e = err(&with(lines));
        assert!(e.starts_with(&format!("{FILE}:{at}: ")), "{lines}: {e}");
        assert!(e.contains(needle), "{lines}: {e}");
    }
    let e = err(&http(
        "server { listen 127.0.0.1:1; limit_conn_zone $uri zone=y:1m; }",
    ));
    assert!(e.contains("not allowed here"), "{e}");
    // limit_rate and limit_rate_after: sizes, inherited each on its own; a variable
    // is warned about (not enforced).
    let c = load_str(&http(
        "limit_rate 10k; server { listen 127.0.0.1:1; limit_rate_after 1m;
            location /a/ { proxy_pass http://127.0.0.1:9; }
            location /b/ { limit_rate 0; proxy_pass http://127.0.0.1:9; }
            location /c/ { limit_rate $r; proxy_pass http://127.0.0.1:9; } }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let rate = |path: &str| {
        let l = &location_match(&s.locations, path).unwrap().settings;
        (l.limit_rate, l.limit_rate_after)
    };
    assert_eq!(rate("/a/"), (10 << 10, 1 << 20));
    assert_eq!(rate("/b/"), (0, 1 << 20));
    assert_eq!(rate("/c/"), (10 << 10, 1 << 20), "the variable is not read");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].message.contains("NOT ENFORCED"));
    let e = err(&http("server { listen 127.0.0.1:1; limit_rate fast; }"));
    assert!(e.contains("invalid size"), "{e}");
}

#[test]
fn upstream_methods_as_nginx_reads_them() {
    let group = |body: &str| {
        http(&format!(
            "upstream u {{ {body} }}\nserver {{ listen 127.0.0.1:1; location / {{ proxy_pass http://u; }} }}"
        ))
    };
    let method = |body: &str| {
        load_str(&group(body)).unwrap().upstreams["u"]
            .method
            .clone()
    };
    assert_eq!(method("server 127.0.0.1:1;"), BalanceMethod::RoundRobin);
    assert_eq!(
        method("least_conn; zone u 64k; server 127.0.0.1:1; server 127.0.0.1:2 backup;"),
        BalanceMethod::LeastConn
    );
    assert_eq!(
        method("ip_hash; server 127.0.0.1:1 down;"),
        BalanceMethod::IpHash
    );
    assert_eq!(
        method("random two least_conn; server 127.0.0.1:1;"),
        BalanceMethod::Random { two: true }
    );
    assert_eq!(
        method("random; server 127.0.0.1:1;"),
        BalanceMethod::Random { two: false }
    );
    let BalanceMethod::Hash { key, consistent } =
        method("hash $request_uri consistent; server 127.0.0.1:1;")
    else {
        panic!()
    };
    assert_eq!(
        (key.to_string().as_str(), consistent),
        ("${request_uri}", true)
    );
    // As nginx: a method without backups after them is accepted (they are the fallback).
    assert_eq!(
        method("server 127.0.0.1:1; server 127.0.0.1:2 backup; ip_hash;"),
        BalanceMethod::IpHash
    );
    let c = load_str(&group(
        "server 127.0.0.1:1; keepalive 8; keepalive_timeout 30s; keepalive_requests 100;",
    ))
    .unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("\"keepalive_timeout\" ignored")),
        "{:?}",
        c.warnings
    );
    for (body, needle) in [
        (
            "ip_hash; server 127.0.0.1:1; server 127.0.0.1:2 backup;",
            "balancing method does not support parameter \"backup\"",
        ),
        (
            "hash $uri; server 127.0.0.1:2 backup;",
            "does not support parameter \"backup\"",
        ),
        (
            "random; server 127.0.0.1:2 backup;",
            "does not support parameter \"backup\"",
        ),
        (
            "ip_hash; least_conn; server 127.0.0.1:1;",
            "load balancing method redefined",
        ),
        ("hash; server 127.0.0.1:1;", "invalid number of arguments"),
        (
            "hash $uri sticky; server 127.0.0.1:1;",
            "invalid parameter \"sticky\"",
        ),
        (
            "random three; server 127.0.0.1:1;",
            "invalid parameter \"three\"",
        ),
        (
            "random two fastest; server 127.0.0.1:1;",
            "invalid parameter \"fastest\"",
        ),
        (
            "least_conn on; server 127.0.0.1:1;",
            "invalid number of arguments",
        ),
        ("zone u 64q; server 127.0.0.1:1;", "invalid zone size"),
    ] {
        let e = err(&group(body));
        assert!(e.starts_with(&format!("{FILE}:3:")), "{body}: {e}");
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn core_flags_process_tuning_and_obsolete_directives() {
    let c = load_str(
        "pcre_jit on; worker_cpu_affinity auto; worker_priority -5; worker_rlimit_core 500M;
worker_shutdown_timeout 45s; timer_resolution 100ms; thread_pool default threads=4;
events {}
http {
  absolute_redirect off; merge_slashes off; underscores_in_headers on;
  http2_idle_timeout 3m; http2_max_requests 100; http2_recv_timeout 30s;
  http2_max_field_size 8k; http2_max_header_size 16k; http2_chunk_size 8k;
  sendfile_max_chunk 1m; aio threads; directio 4m; open_log_file_cache max=10;
  chunked_transfer_encoding off; proxy_ignore_client_abort on; ssl_conf_command Options x;
  send_timeout 10s;
  server { listen 127.0.0.1:80; ignore_invalid_headers off;
    location /a/ { port_in_redirect off; absolute_redirect on; send_timeout 5s; proxy_pass http://127.0.0.1:9; }
  }
}
",
    )
    .unwrap();
    assert_eq!(c.shutdown_timeout, Some(Duration::from_secs(45)));
    assert_eq!(
        c.servers[0].settings.client.send_timeout,
        Duration::from_secs(10)
    );
    assert!(
        (c.warnings.iter()).any(|w| w
            .message
            .contains("\"send_timeout\" in a location is not used")),
        "{:?}",
        c.warnings
    );
    let s = &c.servers[0].settings;
    assert!(!s.absolute_redirect && s.port_in_redirect && !s.merge_slashes);
    assert!(s.underscores_in_headers && !s.ignore_invalid_headers);
    let a = &location_match(&c.servers[0].locations, "/a/")
        .unwrap()
        .settings;
    assert!(a.absolute_redirect && !a.port_in_redirect && !a.merge_slashes);
    for name in ["pcre_jit", "http2_idle_timeout", "aio"] {
        let warned =
            (c.warnings.iter()).any(|w| w.message.starts_with(&format!("\"{name}\" ignored")));
        assert!(warned, "{name}: {:?}", c.warnings);
    }
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, needle) in [
        (
            "location / { merge_slashes off; }",
            "\"merge_slashes\" directive is not allowed here",
        ),
        (
            "location / { underscores_in_headers on; }",
            "is not allowed here",
        ),
        ("absolute_redirect maybe;", "it must be \"on\" or \"off\""),
        ("proxy_bind 127.0.0.1;", "\"proxy_bind\" is not supported"),
        ("proxy_ssl_crl a.crl;", "would accept revoked ones"),
        (
            "location / { sub_filter a b; }",
            "\"sub_filter\" is not supported",
        ),
        ("http2_chunk_size;", "invalid number of arguments"),
    ] {
        let e = err(&server(line));
        assert!(e.contains(needle), "{line}: {e}");
    }
    let e = err("worker_shutdown_timeout soon; events {} http {}");
    assert!(e.contains("invalid value"), "{e}");
}

#[test]
fn proxy_cookie_flags_as_nginx_reads_them() {
    let c = load_str(&http(
        "proxy_cookie_flags ~ secure httponly samesite=strict;
  server { listen 127.0.0.1:80;
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { proxy_cookie_flags sid samesite=$cookie_mode nosecure; proxy_pass http://127.0.0.1:9; }
    location /c/ { proxy_cookie_flags off; proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let flags = |path: &str| {
        let l = location_match(&c.servers[0].locations, path).unwrap();
        (l.settings.proxy_cookie_flags.iter())
            .map(|f| {
                let cookie = match &f.cookie {
                    ValueMatch::Regex(re) => format!("~{}", re.as_str()),
                    ValueMatch::Text(t) => t.to_string(),
                };
                let flags: Vec<String> = f.flags.iter().map(ToString::to_string).collect();
                format!("{cookie} {}", flags.join(" "))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(flags("/a/"), ["~ secure httponly samesite=strict"]);
    assert_eq!(
        flags("/b/"),
        ["sid samesite=${cookie_mode} nosecure"],
        "its own only"
    );
    assert!(flags("/c/").is_empty());
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, needle) in [
        ("proxy_cookie_flags sid;", "invalid parameter \"sid\""),
        (
            "proxy_cookie_flags off; proxy_cookie_flags a secure;",
            "is duplicate",
        ),
        (
            "proxy_cookie_flags a secure; proxy_cookie_flags off;",
            "is duplicate",
        ),
        ("proxy_cookie_flags ~*x secure;", "invalid regex"),
    ] {
        let e = err(&server(line));
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn auth_request_and_what_it_is_used_with() {
    let c = load_str(&http(
        "auth_request /auth;
  server { listen 127.0.0.1:80;
    location = /auth { internal; proxy_pass http://127.0.0.1:9/verify; proxy_pass_request_body off;
        proxy_pass_request_headers off; proxy_method HEAD; proxy_set_body \"u=$remote_user\"; }
    location /a/ { auth_request_set $user $upstream_http_x_user; proxy_set_header X-User $user;
        proxy_pass http://127.0.0.1:9; }
    location /b/ { auth_request off; proxy_pass http://127.0.0.1:9; }
  }",
    ))
    .unwrap();
    let settings = |path: &str| {
        &location_match(&c.servers[0].locations, path)
            .unwrap()
            .settings
    };
    let auth = settings("/auth");
    assert!(!auth.proxy_pass_request_body && !auth.proxy_pass_request_headers);
    assert_eq!(auth.proxy_method.as_deref(), Some("HEAD"));
    assert_eq!(
        auth.proxy_set_body
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("u=${remote_user}")
    );
    let a = settings("/a/");
    assert_eq!(a.auth_request.as_deref(), Some("/auth"), "inherited");
    assert_eq!(a.auth_request_set.len(), 1);
    assert_eq!(a.auth_request_set[0].name, "user");
    assert_eq!(
        a.auth_request_set[0].value.to_string(),
        "${upstream_http_x_user}"
    );
    assert_eq!(settings("/b/").auth_request, None);
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, needle) in [
        ("auth_request auth;", "invalid URI \"auth\""),
        ("auth_request /a; auth_request /b;", "is duplicate"),
        ("auth_request_set user x;", "invalid variable name"),
        ("auth_request_set $host x;", "cannot be set"),
        ("proxy_method \"GET /\";", "invalid method"),
    ] {
        let e = err(&server(line));
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn expires_forms_and_errors() {
    let c = load_str(&http(
        "expires 1h;
  server { listen 127.0.0.1:80;
    location /a/ { proxy_pass http://127.0.0.1:9; }
    location /b/ { expires modified +30d; proxy_pass http://127.0.0.1:9; }
    location /c/ { expires $exp; proxy_pass http://127.0.0.1:9; }
    location /d/ { expires off; proxy_pass http://127.0.0.1:9; }
  }
  map $status $exp { default off; }",
    ))
    .unwrap();
    let e = |path: &str| {
        location_match(&c.servers[0].locations, path)
            .unwrap()
            .settings
            .expires
            .clone()
    };
    assert_eq!(
        e("/a/"),
        Expires::After {
            secs: 3600,
            modified: false
        }
    );
    assert_eq!(
        e("/b/"),
        Expires::After {
            secs: 30 * 86400,
            modified: true
        }
    );
    assert!(matches!(e("/c/"), Expires::Var(_)));
    assert_eq!(e("/d/"), Expires::Off);
    let server = |line: &str| http(&format!("server {{ listen 127.0.0.1:1;\n{line}\n}}"));
    for (line, needle) in [
        ("expires soon;", "invalid value \"soon\""),
        ("expires later 1h;", "invalid value \"later\""),
        ("expires modified epoch;", "invalid value \"epoch\""),
        ("expires 1h; expires 2h;", "is duplicate"),
    ] {
        let e = err(&server(line));
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn stub_status_is_a_location_s_content() {
    let c = load_str(&http(
        "server { listen 127.0.0.1:80;
    location = /basic_status { stub_status; allow 127.0.0.1; deny all; }
    location = /old { stub_status on; }
  }",
    ))
    .unwrap();
    for path in ["/basic_status", "/old"] {
        let l = location_match(&c.servers[0].locations, path).unwrap();
        assert_eq!(l.action, Some(Action::StubStatus), "{path}");
    }
    assert!(
        !(c.warnings.iter()).any(|w| w.message.contains("has no \"proxy_pass\"")),
        "{:?}",
        c.warnings
    );
    let e = err(&http("server { listen 127.0.0.1:1; stub_status; }"));
    assert!(e.contains("not allowed here"), "{e}");
}

#[test]
fn geo_blocks_as_nginx_reads_them() {
    let c = load_str(&http(
        "geo $g { default 0; 10.0.0.0/8 1; 10.1.2.3/16 2; }
  map $g $key { 0 $remote_addr; default \"\"; }
  server { listen 127.0.0.1:1; return 200 $key; }",
    ))
    .unwrap();
    let g = &c.maps["g"];
    assert_eq!(
        g.lookup("10.1.9.9").to_string(),
        "2",
        "host bits cleared, as nginx"
    );
    assert_eq!(g.lookup("10.2.0.1").to_string(), "1");
    assert_eq!(g.lookup("11.0.0.1").to_string(), "0");
    let c = load_str(&http(
        "geo $g { default d; 10.0.0.0/8 a; 10.1.0.0/16 b; 10.1.2.3 c; 2001:db8::/32 v6;
           2001:db8:1::/48 v6b; 0.0.0.0/0 any4; delete 10.1.0.0/16; }
  geo $r { ranges; default d; 10.0.0.5-10.0.0.9 r1; 10.0.0.10-10.0.0.10 r2;
           ::1-::5 r6; 192.168.0.0-192.168.255.255 lan; }
  server { listen 127.0.0.1:1; return 200 $g$r; }",
    ))
    .unwrap();
    let (g, r) = (&c.maps["g"], &c.maps["r"]);
    for (addr, want) in [
        ("10.1.2.3", "c"),
        ("10.1.2.4", "a"), // the /16 deleted
        ("::ffff:10.1.2.3", "c"),
        ("10.9.9.9", "a"),
        ("11.0.0.1", "any4"),
        ("2001:db8:1::7", "v6b"),
        ("2001:db8:2::7", "v6"),
        ("2002::1", "d"),
        ("not an address", "d"),
    ] {
        assert_eq!(g.lookup(addr).to_string(), want, "{addr}");
    }
    for (addr, want) in [
        ("10.0.0.4", "d"),
        ("10.0.0.5", "r1"),
        ("10.0.0.9", "r1"),
        ("10.0.0.10", "r2"),
        ("10.0.0.11", "d"),
        ("192.168.7.7", "lan"),
        ("::3", "r6"),
        ("::6", "d"),
        ("255.255.255.255", "d"),
    ] {
        assert_eq!(r.lookup(addr).to_string(), want, "{addr}");
    }
    let with = |body: &str| http(&format!("{body}\nserver {{ listen 127.0.0.1:1; }}"));
    for (body, needle) in [
        (
            "geo $g { 10.0.0.0/33 1; }",
            "invalid network \"10.0.0.0/33\"",
        ),
        ("geo $g { ranges; 10.0.0.9-10.0.0.1 1; }", "invalid range"),
        (
            "geo $g { ranges; 10.0.0.0-10.0.0.9 1; 10.0.0.5-10.0.0.20 2; }",
            "overlaps",
        ),
        ("geo $g { proxy 10.0.0.0/8; }", "set_real_ip_from"),
        (
            "geo $g { default; }",
            "invalid number of the geo parameters",
        ),
        ("geo g { default 1; }", "invalid variable name"),
        ("geo $g { } map $x $g { }", "duplicate"),
    ] {
        let e = err(&with(body));
        assert!(e.contains(needle), "{body}: {e}");
    }
}

/// `ssl_conf_command`: `Ciphersuites` and the `SessionTicket` / `ServerPreference`
/// options are applied (after nginx's own settings, as OpenSSL applies them); a level
/// with any `ssl_conf_command` inherits none; the rest is warned about.
#[test]
fn ssl_conf_command_sets_tls13_suites_and_options() {
    let c = load_str(&http(
        "ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_CCM_SHA256;
         ssl_conf_command Options -SessionTicket,ServerPreference,PrioritizeChaCha;
         ssl_conf_command Groups X25519;
         server { listen 20443 ssl; ssl_certificate a.crt; ssl_certificate_key /k/a.pem;
                  ssl_session_tickets on; return 204; }
         server { listen 20444 ssl; ssl_certificate a.crt; ssl_certificate_key /k/a.pem;
                  ssl_conf_command Options SessionTicket; return 204; }",
    ))
    .unwrap();
    let (a, b) = (&c.servers[0].tls, &c.servers[1].tls);
    assert_eq!(
        a.tls13_suites,
        [CipherSuite::Tls13Chacha20, CipherSuite::Tls13Aes256Gcm]
    );
    assert!(!a.session_tickets && a.prefer_server_ciphers);
    assert!(b.tls13_suites.is_empty() && b.session_tickets && !b.prefer_server_ciphers);
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    for needle in ["TLS_AES_128_CCM_SHA256", "PrioritizeChaCha", "Groups"] {
        assert!(w.iter().any(|w| w.contains(needle)), "{needle}: {w:?}");
    }
    let e = load_str(&http(
        "ssl_conf_command Ciphersuites TLS_AES_128_CCM_SHA256; server { listen 1; return 204; }",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("selects no TLS 1.3 suite"), "{e}");
}

#[test]
fn ssl_crl_is_read_beside_the_client_ca() {
    let c = load_str(&http(
        "ssl_crl crl.pem;
  server { listen 127.0.0.1:20443 ssl; ssl_certificate a.crt; ssl_certificate_key a.key;
    ssl_client_certificate ca.pem; ssl_verify_client on; location / { return 200; } }
  server { listen 127.0.0.1:20444 ssl; ssl_certificate a.crt; ssl_certificate_key a.key;
    ssl_crl /etc/other.pem; location / { return 200; } }",
    ))
    .unwrap();
    assert_eq!(c.servers[0].tls.crl, Some(PathBuf::from("/x/conf/crl.pem")));
    assert_eq!(c.servers[1].tls.crl, Some(PathBuf::from("/etc/other.pem")));
}

/// `limit_except`: the methods it lists keep the location's settings (`GET` brings
/// `HEAD`); every other method gets the block's `allow`/`deny` and `auth_basic`, with the
/// rest of the location's settings. nginx's load-time errors: a bad method, a
/// duplicate, a directive the block may not hold, the block outside a location.
#[test]
fn limit_except_is_the_location_for_the_other_methods() {
    let c = load_str(&http(
        "server { listen 127.0.0.1:1; allow 10.0.0.0/8; deny all;
            location / { proxy_set_header X-A a; limit_except GET post { deny all; }
                proxy_pass http://127.0.0.1:9; }
            location /b/ { limit_except GET { auth_basic R; auth_basic_user_file /f; }
                proxy_pass http://127.0.0.1:9; } }",
    ))
    .unwrap();
    let s = &c.servers[0];
    let a = &location_match(&s.locations, "/").unwrap().settings;
    let le = a.limit_except.as_ref().expect("limit_except");
    assert_eq!(le.methods, ["GET", "POST"]);
    for m in ["GET", "HEAD", "POST"] {
        assert!(std::ptr::eq(a.for_method(m), a), "{m}");
    }
    let put = a.for_method("PUT");
    assert_eq!(put.access_rules.len(), 1, "the block's rules only");
    assert_eq!(put.access_rules[0].matches, AccessMatch::All);
    assert_eq!(
        put.proxy_set_header, a.proxy_set_header,
        "the rest is the location's"
    );
    assert!(put.limit_except.is_none());
    let b = &location_match(&s.locations, "/b/").unwrap().settings;
    assert!(b.auth_basic.is_none());
    let post = b.for_method("POST");
    assert!(post.auth_basic.is_some());
    assert_eq!(post.access_rules.len(), 2, "the server's rules, inherited");
    for (text, needle) in [
        (
            "location / { limit_except FETCH { deny all; } }",
            "invalid method \"FETCH\"",
        ),
        (
            "location / { limit_except GET { deny all; } limit_except POST { deny all; } }",
            "duplicate",
        ),
        (
            "location / { limit_except GET { proxy_pass http://127.0.0.1:9; } }",
            "\"proxy_pass\" directive is not allowed here",
        ),
        (
            "limit_except GET { deny all; }",
            "\"limit_except\" directive is not allowed here",
        ),
    ] {
        let e = err(&http(&format!("server {{ listen 1; {text} }}")));
        assert!(e.contains(needle), "{text}: {e}");
    }
}

/// `split_clients`: nginx's load-time errors, each at its `file:line`.
#[test]
fn split_clients_errors_as_nginx() {
    assert!(
        load_str(&http(
            "split_clients $remote_addr $v { 50% a; 50% b; } server { listen 127.0.0.1:1; }"
        ))
        .is_ok()
    );
    for (text, needle) in [
        (
            "split_clients $arg_a $v { 60% a; 50% b; }",
            "percent total is greater than 100%",
        ),
        (
            "split_clients $arg_a $v { 0% a; }",
            "invalid percent value \"0%\"",
        ),
        (
            "split_clients $arg_a $v { ten% a; }",
            "invalid percent value",
        ),
        (
            "split_clients $arg_a v { 10% a; }",
            "invalid variable name \"v\"",
        ),
        (
            "split_clients $arg_a $v { 10% a b; }",
            "invalid number of arguments",
        ),
        (
            "split_clients $arg_a $v { * a; } split_clients $arg_b $v { * b; }",
            "duplicate \"$v\" variable",
        ),
        (
            "server { listen 1; split_clients $arg_a $v { * a; } }",
            "\"split_clients\" directive is not allowed here",
        ),
    ] {
        let e = err(&http(text));
        assert!(e.starts_with("/x/conf/nginx.conf:"), "{text}: {e}");
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn keepalive_requests_and_time_limit_a_client_connection_as_nginx() {
    // nginx's defaults: 1000 requests, an hour.
    let c = load_str(&http("server { listen 127.0.0.1:1; }")).unwrap();
    let client = c.servers[0].settings.client;
    assert_eq!(client.keepalive_requests, 1000);
    assert_eq!(client.keepalive_time, Duration::from_secs(3600));
    // http's values reach the servers that set none; a server's own win.
    let c = load_str(&http(
        "keepalive_requests 50; keepalive_time 10m;
         server { listen 127.0.0.1:1; }
         server { listen 127.0.0.1:2; keepalive_requests 7; keepalive_time 30s;
           location / { keepalive_requests 3; keepalive_time 1s; } }",
    ))
    .unwrap();
    let (a, b) = (c.servers[0].settings.client, c.servers[1].settings.client);
    assert_eq!(
        (a.keepalive_requests, a.keepalive_time.as_secs()),
        (50, 600)
    );
    assert_eq!((b.keepalive_requests, b.keepalive_time.as_secs()), (7, 30));
    for name in ["keepalive_requests", "keepalive_time"] {
        assert!(
            (c.warnings.iter()).any(|w| w
                .message
                .contains(&format!("\"{name}\" in a location is not used"))),
            "{name}: {:?}",
            c.warnings
        );
    }
    // Bad values and duplicates are errors naming the line.
    for (line, needle) in [
        ("keepalive_requests many;", "invalid number"),
        ("keepalive_time forever;", "keepalive_time"),
        ("keepalive_requests 5; keepalive_requests 6;", "duplicate"),
        ("location / { keepalive_requests -1; }", "invalid value"),
    ] {
        let e = load_str(&http(&format!("server {{ listen 127.0.0.1:1; {line} }}")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(needle) && e.contains("nginx.conf:3:"),
            "{line}: {e}"
        );
    }
    // In an upstream block (kept upstream connections) it is still ignored.
    let c = load_str(&http(
        "upstream u { server 127.0.0.1:1; keepalive 8; keepalive_requests 100; }
         server { listen 127.0.0.1:1; location / { proxy_pass http://u; } }",
    ))
    .unwrap();
    assert!(
        (c.warnings.iter()).any(|w| w.message.contains("\"keepalive_requests\" ignored")),
        "{:?}",
        c.warnings
    );
}

/// A file that is not UTF-8 (a Latin-1 comment, as nginx reads bytes) loads, in the
/// main file and in an include.
#[test]
fn a_latin1_comment_loads_as_in_nginx() {
    let dir = tempfile::tempdir().expect("dir");
    let main = dir.path().join("nginx.conf");
    let mut text = b"# caf\xe9\nevents {}\nhttp {\n include extra.conf;\n".to_vec();
    text.extend_from_slice(b" server { listen 20080; location / { return 200 ok; } }\n}\n");
    std::fs::write(&main, text).expect("write");
    std::fs::write(dir.path().join("extra.conf"), b"# r\xe9sum\xe9\n").expect("write");
    let c = load(&main, &NginxOptions::default()).expect("loads");
    assert_eq!(c.servers.len(), 1);
}

/// nginx before 1.25: `ssl on;` in a server makes its listens TLS ones (deprecated,
/// warned with nginx's words); `error_log` in a server, or a second main-level one, is
/// checked and warned as not written.
#[test]
fn ssl_on_and_error_logs_hsmgate_does_not_write() {
    let c = load_str(&http(
        "server { listen 20443; ssl on; ssl_certificate a.crt; ssl_certificate_key a.key;
                  error_log logs/site.log; location / { return 200; } }
         server { listen 20080; ssl off; location / { return 200; } }",
    ))
    .unwrap();
    assert!(c.servers[0].listens[0].ssl);
    assert!(!c.servers[1].listens[0].ssl);
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("\"ssl\" directive is deprecated")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("\"error_log\" in an http, server or location block")),
        "{w:?}"
    );
    assert!(err(&http("server { listen 1; ssl maybe; }")).contains("ssl"));
    // In http, the default of every server (nginx allows it there too).
    let c = load_str(&http(
        "ssl on; ssl_certificate a.crt; ssl_certificate_key a.key;
         server { listen 20443; location / { return 200; } }",
    ))
    .unwrap();
    assert!(c.servers[0].listens[0].ssl);
    let c = load_str(&format!(
        "error_log logs/a.log; error_log logs/b.log; {}",
        http("server { listen 1; location / { return 200; } }")
    ))
    .unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("second main-level \"error_log\"")),
        "{w:?}"
    );
}

/// `ssl_ecdh_curve`: OpenSSL's names in the server's order (aliases folded, duplicates
/// dropped), `auto` for every group; a name hsmgate lacks is warned and left out, an
/// unknown one fails as nginx's `SSL_CTX_set1_curves_list` does.
#[test]
fn ssl_ecdh_curve_names_the_groups() {
    use super::KxGroup;
    let server = |curve: &str| {
        http(&format!(
            "ssl_ecdh_curve {curve}; server {{ listen 1 ssl; ssl_certificate a.crt; \
             ssl_certificate_key a.key; location / {{ return 200; }} }}"
        ))
    };
    let c = load_str(&server("X25519:prime256v1:secp384r1:P-256")).unwrap();
    assert_eq!(
        c.servers[0].tls.ecdh_curves,
        [KxGroup::X25519, KxGroup::P256, KxGroup::P384]
    );
    assert!(
        load_str(&server("auto")).unwrap().servers[0]
            .tls
            .ecdh_curves
            .is_empty()
    );
    let c = load_str(&server("X448:secp521r1")).unwrap();
    assert_eq!(c.servers[0].tls.ecdh_curves, [KxGroup::P521]);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.to_string().contains("\"X448\" is not offered"))
    );
    let e = err(&server("bogus"));
    assert!(
        e.contains("unknown curve \"bogus\"") && e.contains("nginx.conf:"),
        "{e}"
    );
    assert!(err(&server("X448")).contains("none of these curves"));
    // Curves OpenSSL knows and hsmgate lacks are warned, not refused (nginx takes them).
    let c = load_str(&server("secp256k1:prime256v1")).unwrap();
    assert_eq!(c.servers[0].tls.ecdh_curves, [KxGroup::P256]);
}
