//! Settings alone and laid over a file, compared with the file reader's results.

use std::path::{Path, PathBuf};

use super::ENVIRONMENT;
use crate::env::{Overrides, Setting};
use crate::model::PinSource;
use crate::{ConfigError, load_str};

const PIN: &str = "4711-secret";

/// A file with every single-token setting, line numbers as in the comments.
const FILE: &str = r#"[[listener]]
address = "127.0.0.1:8443"
tls_versions = ["1.3"]

[tls]
certificate = "cert.pem"
key = "pkcs11:token=demo;object=tls?pin-source=file:pin.txt&module-path=/lib/p11.so"

[pkcs11]
sessions = 2

[upstream]
address = "127.0.0.1:8080"
connect_timeout_ms = 5
"#;

fn overrides(env: &[(&str, &str)], flags: &[(Setting, &str)]) -> Overrides {
    let mut o = Overrides::from_env(env).expect("valid");
    for (setting, value) in flags {
        o.flag(*setting, Some((*value).into())).expect("non-empty");
    }
    o
}

fn sidecar_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HSMGATE_LISTEN", "0.0.0.0:8443,[::1]:8443"),
        ("HSMGATE_UPSTREAM", "app:8080"),
        ("HSMGATE_CERT", "/tls/chain.pem"),
        ("HSMGATE_KEY", "pkcs11:token=web;object=tls;type=private"),
        ("HSMGATE_PIN_FILE", "/run/secrets/pin"),
        ("HSMGATE_PKCS11_MODULE", "/hsm/libsofthsm2.so"),
        ("HSMGATE_ADMIN", "127.0.0.1:9901"),
    ]
}

fn file_in_tempdir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hsmgate.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

fn err(o: &Overrides, file: Option<&Path>) -> String {
    let e: ConfigError = o.load(file).expect_err("should fail");
    let text = e.to_string();
    assert!(!text.contains(PIN), "the PIN leaked: {text}");
    text
}

#[test]
fn environment_alone_gives_what_the_same_file_gives() {
    let config = overrides(&sidecar_env(), &[]).load(None).unwrap();
    let same_file = r#"
[[listener]]
address = "0.0.0.0:8443"
[[listener]]
address = "[::1]:8443"
[tls]
certificate = "/tls/chain.pem"
key = "pkcs11:token=web;object=tls;type=private"
[pkcs11]
module = "/hsm/libsofthsm2.so"
pin_file = "/run/secrets/pin"
[upstream]
address = "app:8080"
[admin]
address = "127.0.0.1:9901"
"#;
    let mut expected = load_str(same_file, Path::new(ENVIRONMENT)).unwrap();
    // The key pair's errors name every variable that made it up.
    let from =
        "environment variables HSMGATE_CERT, HSMGATE_KEY, HSMGATE_PIN_FILE, HSMGATE_PKCS11_MODULE";
    expected.tls.key.location = crate::model::Location {
        file: from.into(),
        line: 0,
        col: 0,
    };
    expected.tls.certificate_location = crate::model::Location {
        file: "environment variable HSMGATE_CERT".into(),
        line: 0,
        col: 0,
    };
    let p = expected.pkcs11.as_mut().expect("one token");
    p.module_at = crate::model::Location::whole("environment variable HSMGATE_PKCS11_MODULE");
    p.pin_at = crate::model::Location::whole("environment variable HSMGATE_PIN_FILE");
    assert_eq!(config, expected);
    assert_eq!(config.tls.key.location.to_string(), from);
    assert_eq!(config.source, Path::new(ENVIRONMENT));
}

#[test]
fn flags_win_and_relative_paths_follow_the_working_directory() {
    let env = sidecar_env();
    let o = overrides(
        &env,
        &[
            (Setting::Cert, "chain.pem"),
            (Setting::Upstream, "[::1]:81"),
        ],
    );
    let config = o.load(None).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.tls.certificate_chain, cwd.join("chain.pem"));
    assert_eq!(config.upstream.address, "[::1]:81");
}

#[test]
fn without_a_file_the_four_are_required() {
    for missing in [
        "HSMGATE_LISTEN",
        "HSMGATE_UPSTREAM",
        "HSMGATE_CERT",
        "HSMGATE_KEY",
    ] {
        let env: Vec<_> = sidecar_env()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let e = err(&overrides(&env, &[]), None);
        assert!(
            e.starts_with(&format!("{missing} (or --"))
                && e.contains("is required without a configuration file"),
            "{e}"
        );
    }
    // Several missing: named together.
    let env: Vec<_> = sidecar_env()
        .into_iter()
        .filter(|(k, _)| *k != "HSMGATE_CERT" && *k != "HSMGATE_KEY")
        .collect();
    assert_eq!(
        err(&overrides(&env, &[]), None),
        "HSMGATE_CERT (or --cert), HSMGATE_KEY (or --key) are required without a configuration file (-c)"
    );
    let env: Vec<_> = sidecar_env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("HSMGATE_PKCS11") && !k.starts_with("HSMGATE_PIN"))
        .collect();
    let e = err(&overrides(&env, &[]), None);
    assert_eq!(
        e,
        "HSMGATE_PKCS11_MODULE (or --pkcs11-module) is required without a configuration file (-c), unless HSMGATE_KEY has module-path"
    );
    let e = err(&overrides(&env, &[(Setting::Module, "/m.so")]), None);
    assert!(
        e.starts_with("HSMGATE_PIN_FILE (or --pin-file) is required"),
        "{e}"
    );
}

#[test]
fn a_bad_value_names_its_variable_or_flag_and_the_value() {
    let cases = [
        (
            "HSMGATE_LISTEN",
            "localhost:x",
            "environment variable HSMGATE_LISTEN=\"localhost:x\": `listener[0].address`: \"localhost:x\" is not a socket address",
        ),
        (
            "HSMGATE_LISTEN",
            "127.0.0.1:1,127.0.0.1:1",
            "`listener[1].address`: 127.0.0.1:1 is already used by listener[0]",
        ),
        (
            "HSMGATE_UPSTREAM",
            "app",
            "environment variable HSMGATE_UPSTREAM=\"app\": `upstream.address`: \"app\" has no port",
        ),
        (
            "HSMGATE_ADMIN",
            "0.0.0.0:8443",
            "environment variable HSMGATE_ADMIN=\"0.0.0.0:8443\": `admin.address`: 0.0.0.0:8443 is also a TLS listener",
        ),
        (
            "HSMGATE_KEY",
            "pkcs11:object=tls",
            "environment variable HSMGATE_KEY=\"pkcs11:object=tls\": `tls.key`: the URI must name a token",
        ),
        (
            "HSMGATE_KEY",
            "pkcs11:token=a;object=b;colour=red",
            "`tls.key`: invalid PKCS#11 URI: attribute \"colour\": unknown attribute",
        ),
    ];
    for (var, value, needle) in cases {
        let mut env = sidecar_env();
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let e = err(&overrides(&env, &[]), None);
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    }
    let e = err(
        &overrides(&sidecar_env(), &[(Setting::Listen, "[::1]")]),
        None,
    );
    assert!(
        e.starts_with("flag --listen=\"[::1]\": `listener[0].address`"),
        "{e}"
    );
}

#[test]
fn the_pin_never_shows() {
    let mut env = sidecar_env();
    env.retain(|(k, _)| *k != "HSMGATE_KEY" && *k != "HSMGATE_PIN_FILE");
    // A bad escape inside the PIN, a PIN with a second PIN source, a PIN in a bad URI.
    for key in [
        format!("pkcs11:token=web;object=tls?pin-value={PIN}%zz"),
        format!("pkcs11:token=web;object=tls?pin-value={PIN}&pin-source=file:/p"),
        format!("pkcs11:token=web;colour=red?pin-value={PIN}"),
    ] {
        let mut env = env.clone();
        env.push(("HSMGATE_KEY", &key));
        let e = err(&overrides(&env, &[]), None);
        assert!(e.contains("pin-value=***"), "{e}");
    }
    // Accepted with a warning located on the variable; the PIN is in the model only.
    let key = format!("pkcs11:token=web;object=tls?pin-value={PIN}");
    env.push(("HSMGATE_KEY", &key));
    let config = overrides(&env, &[]).load(None).unwrap();
    let w = config
        .warnings
        .first()
        .expect("pin-value warning")
        .to_string();
    assert!(
        w.starts_with("environment variable HSMGATE_KEY: the PIN is written"),
        "{w}"
    );
    assert!(!format!("{config:?}").contains(PIN));
    assert!(matches!(&config.pkcs11.unwrap().pin, PinSource::Value(s) if s.expose() == PIN));
}

#[test]
fn a_pin_file_and_a_pin_in_the_key_conflict() {
    let mut env = sidecar_env();
    env.retain(|(k, _)| *k != "HSMGATE_KEY");
    env.push((
        "HSMGATE_KEY",
        "pkcs11:token=web;object=tls?pin-source=file:/p",
    ));
    let e = err(&overrides(&env, &[]), None);
    assert!(e.contains("several PIN sources"), "{e}");
    assert!(e.starts_with("environment variable HSMGATE_"), "{e}");
}

#[test]
fn without_settings_a_file_loads_as_it_is() {
    let (_dir, path) = file_in_tempdir(FILE);
    let o = overrides(&[("HSMGATE_LOG_FORMAT", "json")], &[]);
    assert_eq!(o.load(Some(&path)).unwrap(), crate::load(&path).unwrap());
}

#[test]
fn settings_replace_file_values_and_keep_the_rest() {
    let (dir, path) = file_in_tempdir(FILE);
    let o = overrides(
        &[
            ("HSMGATE_LISTEN", "127.0.0.1:9443"),
            ("HSMGATE_UPSTREAM", "app:80"),
            ("HSMGATE_PIN_FILE", "/run/secrets/pin"),
            ("HSMGATE_PKCS11_MODULE", "/hsm/p11.so"),
        ],
        &[],
    );
    let config = o.load(Some(&path)).unwrap();
    let l = &config.listeners[0];
    assert_eq!(
        (l.address.port(), l.tls12, l.tls13),
        (9443, false, true),
        "tls_versions kept"
    );
    assert_eq!(config.upstream.address, "app:80");
    assert_eq!(config.upstream.connect_timeout.as_millis(), 5, "kept");
    let p = config.pkcs11.as_ref().unwrap();
    assert_eq!(p.pin, PinSource::File("/run/secrets/pin".into()));
    assert_eq!(
        (p.module.as_path(), p.sessions),
        (Path::new("/hsm/p11.so"), 2)
    );
    assert_eq!(config.tls.certificate_chain, dir.path().join("cert.pem"));
    assert_eq!(
        config.tls.key.uri.pin_source, None,
        "replaced by the PIN file"
    );
    assert_eq!(
        config.tls.key.uri.module_path, None,
        "replaced by the module"
    );
    assert_eq!(
        config.tls.key.location.line, 7,
        "still points into the file"
    );
    assert_eq!(config.source, path);
}

#[test]
fn a_file_error_keeps_its_position_and_a_setting_error_names_the_setting() {
    let broken = FILE.replace("sessions = 2", "sessions = 0");
    let (_dir, path) = file_in_tempdir(&broken);
    let o = overrides(&[("HSMGATE_UPSTREAM", "app:80")], &[]);
    let e = err(&o, Some(&path));
    assert!(e.starts_with(&format!("{}:10:", path.display())), "{e}");
    let (_dir, path) = file_in_tempdir(FILE);
    let o = overrides(&[("HSMGATE_UPSTREAM", "app:0")], &[]);
    let e = err(&o, Some(&path));
    assert!(
        e.starts_with("environment variable HSMGATE_UPSTREAM=\"app:0\""),
        "{e}"
    );
    let o = overrides(&[], &[(Setting::Key, "pkcs11:token=a;object=b;type=cert")]);
    let e = err(&o, Some(&path));
    assert!(
        e.starts_with("flag --key=\"pkcs11:token=a;object=b;type=cert\": `tls.key`"),
        "{e}"
    );
}

#[test]
fn an_ha_group_takes_no_single_token_settings() {
    let group = r#"[[listener]]
address = "127.0.0.1:8443"
[tls]
certificate = "cert.pem"
key = "pkcs11:object=tls"
[[hsm.group]]
name = "g"
[[hsm.group.region]]
name = "r"
role = "primary"
[[hsm.group.region.member]]
name = "a"
module = "/m.so"
token = "a"
pin_file = "pin"
[upstream]
address = "127.0.0.1:8080"
"#;
    let (_dir, path) = file_in_tempdir(group);
    let e = err(&overrides(&[("HSMGATE_PIN_FILE", "/p")], &[]), Some(&path));
    assert!(e.contains("applies to a single token"), "{e}");
    let config = overrides(&[("HSMGATE_UPSTREAM", "b:1")], &[])
        .load(Some(&path))
        .unwrap();
    let member = &config.hsm[0].regions[0].members[0];
    assert_eq!(
        (member.location.line, config.upstream.address.as_str()),
        (11, "b:1")
    );
}

#[test]
fn query_attributes_are_dropped_exactly() {
    let f = super::without_query_attributes;
    assert_eq!(
        f(
            "pkcs11:token=a?pin-source=x&module-path=/m",
            &["pin-source"]
        ),
        "pkcs11:token=a?module-path=/m"
    );
    assert_eq!(
        f(
            "engine:pkcs11:pkcs11:token=a?module-path=/m",
            &["module-path"]
        ),
        "engine:pkcs11:pkcs11:token=a"
    );
    assert_eq!(f("pkcs11:token=a", &["module-path"]), "pkcs11:token=a");
}

#[test]
fn pairs_and_several_groups_keep_their_file_positions_under_variables() {
    let member = |g: &str| {
        format!(
            "[[hsm.group]]\nname = \"{g}\"\n[[hsm.group.region]]\nname = \"r\"\nrole = \"primary\"\n\
             [[hsm.group.region.member]]\nname = \"{g}-a\"\nmodule = \"/m.so\"\ntoken = \"{g}\"\npin_file = \"pin\"\n"
        )
    };
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:8443\"\n[tls]\ncertificate = \"cert.pem\"\n\
         key = \"pkcs11:object=tls\"\ngroup = \"g1\"\n[[tls.pair]]\ncertificate = \"b.pem\"\n\
         key = \"pkcs11:object=b\"\ngroup = \"g2\"\nserver_names = [\"b.test\"]\n\
         [upstream]\naddress = \"127.0.0.1:8080\"\n{}{}",
        member("g1"),
        member("g2")
    );
    let (_dir, path) = file_in_tempdir(&text);
    let config = overrides(&[("HSMGATE_UPSTREAM", "b:1")], &[])
        .load(Some(&path))
        .unwrap_or_else(|e| panic!("{e}"));
    let pair = &config.tls.pairs[0];
    assert_eq!(
        (pair.key.location.line, pair.key.uri.group.as_deref()),
        (9, Some("g2"))
    );
    let second = &config.hsm[1].regions[0].members[0];
    assert_eq!((second.name.as_str(), second.location.line), ("g2-a", 29));
    assert_eq!(config.upstream.address, "b:1");
}

/// A base file may leave out what variables give (a ConfigMap without `[upstream]` under
/// HSMGATE_UPSTREAM); its settings are then named by the file, without a line.
#[test]
fn a_file_may_leave_out_what_the_settings_give() {
    let base = FILE.replace(
        "[upstream]\naddress = \"127.0.0.1:8080\"\nconnect_timeout_ms = 5\n",
        "",
    );
    assert!(!base.contains("[upstream]"));
    let (_dir, path) = file_in_tempdir(&base);
    let alone = crate::load(&path).expect_err("incomplete alone");
    assert!(alone.to_string().contains("missing field"), "{alone}");
    let o = overrides(&[("HSMGATE_UPSTREAM", "app:80")], &[]);
    let config = o.load(Some(&path)).unwrap();
    assert_eq!(config.upstream.address, "app:80");
    assert_eq!(
        config.tls.key.location.to_string(),
        path.display().to_string()
    );
    // Without the variable, the file's own error.
    let e = err(&overrides(&[], &[]), Some(&path));
    assert!(e.contains("missing field"), "{e}");
}
