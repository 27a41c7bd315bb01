//! The `[[hsm.group]]` rules: groups with unique names, each holding at least one key
//! (`[tls]`'s and each `[[tls.pair]]`'s key is in the group its `group` names, or the
//! only one), regions with a primary or standby role, members with a module, a token
//! (label or serial), exactly one PIN source, and sizes in range; names unique. The key
//! URI names no token (each member names its own) and must be found on every member.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::int;
use crate::defaults as d;
use crate::error::ConfigError;
use crate::load::Source;
use crate::model::{HsmGroup, HsmMember, HsmRegion, KeyRef, PinSource, TlsConfig};
use crate::raw::{RawGroup, RawHsm, RawMember, RawTls};

/// Every `[[hsm.group]]`, names unique.
pub(crate) fn groups(raw: &RawHsm, src: &Source<'_>) -> Result<Vec<HsmGroup>, ConfigError> {
    if raw.group.is_empty() {
        return Err(src.invalid(0, "hsm.group", "at least one [[hsm.group]] is required"));
    }
    let mut out: Vec<HsmGroup> = Vec::new();
    for g in &raw.group {
        let group = one_group(g.get_ref(), src)?;
        if out.iter().any(|o| o.name == group.name) {
            let at = g.get_ref().name.span().start;
            let reason = format!("[[hsm.group]] \"{}\" is defined twice", group.name);
            return Err(src.invalid(at, "hsm.group.name", reason));
        }
        out.push(group);
    }
    Ok(out)
}

/// Puts each key in its group (written in its URI's `group`): the one its table's
/// `group` names (or its URI's `x-hsmgate-group`), or the only group. Every group must
/// hold a key.
pub(crate) fn assign(
    raw: &RawTls,
    tls: &mut TlsConfig,
    groups: &[HsmGroup],
    raw_groups: &RawHsm,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let mut used = vec![false; groups.len()];
    let mut place = |named: Option<&Spanned<String>>,
                     key: &mut KeyRef,
                     key_at: usize,
                     name: &str|
     -> Result<(), ConfigError> {
        let (wanted, at) = match (named, &key.uri.group) {
            (Some(n), _) => (n.get_ref().clone(), n.span().start),
            (None, Some(g)) => (g.clone(), key_at),
            (None, None) if groups.len() == 1 => (groups[0].name.clone(), key_at),
            (None, None) => {
                let reason =
                    "with several [[hsm.group]]s each key names its group (group = \"...\")";
                return Err(src.invalid(key_at, name, reason));
            }
        };
        let Some(i) = groups.iter().position(|g| g.name == wanted) else {
            let reason = format!("no [[hsm.group]] named \"{wanted}\"");
            return Err(src.invalid(at, name, reason));
        };
        used[i] = true;
        key.uri.group = Some(wanted);
        Ok(())
    };
    place(
        raw.group.as_ref(),
        &mut tls.key,
        raw.key.span().start,
        "tls.group",
    )?;
    for (i, (pair, r)) in tls.pairs.iter_mut().zip(&raw.pair).enumerate() {
        let r = r.get_ref();
        let name = format!("tls.pair[{i}].group");
        place(r.group.as_ref(), &mut pair.key, r.key.span().start, &name)?;
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let at = raw_groups.group[i].get_ref().name.span().start;
        let reason = format!(
            "no key is in [[hsm.group]] \"{}\" (name it in [tls] group or a [[tls.pair]]'s group)",
            groups[i].name
        );
        return Err(src.invalid(at, "hsm.group.name", reason));
    }
    Ok(())
}

/// One `[[hsm.group]]` table (also built from an nginx `map $hsmgate_group_NAME` block).
pub(crate) fn one_group(gr: &RawGroup, src: &Source<'_>) -> Result<HsmGroup, ConfigError> {
    let name = non_empty(&gr.name, "hsm.group.name", src)?;
    let ms = |v: Option<&Spanned<i64>>, key: &str, range, default| {
        int(v, &format!("hsm.group.{key}"), range, default, src).map(Duration::from_millis)
    };
    let sign_timeout = ms(
        gr.sign_timeout_ms.as_ref(),
        "sign_timeout_ms",
        1..=60_000,
        d::ms(d::SIGN_TIMEOUT),
    )?;
    let op_timeout = ms(
        gr.op_timeout_ms.as_ref(),
        "op_timeout_ms",
        1..=60_000,
        d::ms(d::OP_TIMEOUT),
    )?;
    if op_timeout > sign_timeout
        && let Some(op) = &gr.op_timeout_ms
    {
        let reason = "must not exceed sign_timeout_ms (a retry on another member must fit in the signature's deadline)";
        return Err(src.invalid(op.span().start, "hsm.group.op_timeout_ms", reason));
    }
    let regions = regions(gr, src)?;
    Ok(HsmGroup {
        name,
        sign_timeout,
        op_timeout,
        queue_depth: int(
            gr.queue_depth.as_ref(),
            "hsm.group.queue_depth",
            1..=1_000_000,
            d::QUEUE_DEPTH as i64,
            src,
        )? as usize,
        standby_when_saturated: gr.standby_when_saturated.unwrap_or(false),
        probe_interval: ms(
            gr.probe_interval_ms.as_ref(),
            "probe_interval_ms",
            100..=3_600_000,
            d::ms(d::PROBE_INTERVAL),
        )?,
        recovery_timeout: ms(
            gr.recovery_timeout_ms.as_ref(),
            "recovery_timeout_ms",
            100..=600_000,
            d::ms(d::RECOVERY_TIMEOUT),
        )?,
        max_abandoned_threads: int(
            gr.max_abandoned_threads.as_ref(),
            "hsm.group.max_abandoned_threads",
            1..=10_000,
            d::MAX_ABANDONED_THREADS as i64,
            src,
        )? as usize,
        regions,
    })
}

fn regions(g: &RawGroup, src: &Source<'_>) -> Result<Vec<HsmRegion>, ConfigError> {
    if g.region.is_empty() {
        return Err(src.invalid(
            g.name.span().start,
            "hsm.group.region",
            "at least one [[hsm.group.region]] is required",
        ));
    }
    let mut out: Vec<HsmRegion> = Vec::new();
    let mut member_names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in g.region.iter().map(Spanned::get_ref).enumerate() {
        let key = |k: &str| format!("hsm.group.region[{i}].{k}");
        let name = non_empty(&r.name, &key("name"), src)?;
        if out.iter().any(|o| o.name == name) {
            return Err(src.invalid(
                r.name.span().start,
                key("name"),
                format!("region \"{name}\" is defined twice"),
            ));
        }
        let primary = match r.role.get_ref().as_str() {
            "primary" => true,
            "standby" => false,
            other => {
                let reason =
                    format!("unknown role \"{other}\" (expected \"primary\" or \"standby\")");
                return Err(src.invalid(r.role.span().start, key("role"), reason));
            }
        };
        if r.member.is_empty() {
            return Err(src.invalid(
                r.name.span().start,
                key("member"),
                "a region needs at least one [[...member]]",
            ));
        }
        let mut members = Vec::new();
        for (j, m) in r.member.iter().enumerate() {
            let member = member(m, &key(&format!("member[{j}]")), src)?;
            if let Some(at) = member_names.insert(member.name.clone(), m.span().start) {
                let reason = format!(
                    "member \"{}\" is defined twice (first at {})",
                    member.name,
                    src.location(at)
                );
                return Err(src.invalid(
                    m.get_ref().name.span().start,
                    key(&format!("member[{j}].name")),
                    reason,
                ));
            }
            members.push(member);
        }
        out.push(HsmRegion {
            name,
            primary,
            members,
        });
    }
    if !out.iter().any(|r| r.primary) {
        return Err(src.invalid(
            g.name.span().start,
            "hsm.group.region",
            "no region has role = \"primary\"",
        ));
    }
    Ok(out)
}

fn member(
    m: &Spanned<RawMember>,
    prefix: &str,
    src: &Source<'_>,
) -> Result<HsmMember, ConfigError> {
    let raw = m.get_ref();
    let key = |k: &str| format!("{prefix}.{k}");
    let name = non_empty(&raw.name, &key("name"), src)?;
    let module = PathBuf::from(non_empty(&raw.module, &key("module"), src)?);
    let env = match &raw.env {
        None => BTreeMap::new(),
        Some(env) => {
            if let Some((k, _)) = env.get_ref().iter().find(|(k, v)| {
                k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0')
            }) {
                let reason =
                    "not a valid environment variable (empty name, '=' in the name, or NUL)";
                return Err(src.invalid(env.span().start, key(&format!("env.{k}")), reason));
            }
            env.get_ref().clone()
        }
    };
    let token = raw
        .token
        .as_ref()
        .map(|t| non_empty(t, &key("token"), src))
        .transpose()?;
    let serial = raw
        .serial
        .as_ref()
        .map(|t| non_empty(t, &key("serial"), src))
        .transpose()?;
    if token.is_none() && serial.is_none() {
        return Err(src.invalid(
            raw.name.span().start,
            key("token"),
            "a member must name its token (token = LABEL or serial = SERIAL)",
        ));
    }
    let pin = match (&raw.pin_file, &raw.pin_env) {
        (Some(f), None) => PinSource::File(src.dir.join(non_empty(f, &key("pin_file"), src)?)),
        (None, Some(e)) => {
            let name = non_empty(e, &key("pin_env"), src)?;
            if name.contains('=') {
                return Err(src.invalid(
                    e.span().start,
                    key("pin_env"),
                    "not a valid variable name",
                ));
            }
            PinSource::Env(name)
        }
        (Some(_), Some(e)) => {
            return Err(src.invalid(
                e.span().start,
                key("pin_env"),
                "give either pin_file or pin_env, not both",
            ));
        }
        (None, None) => {
            return Err(src.invalid(
                raw.name.span().start,
                key("pin_file"),
                "no PIN source: set pin_file or pin_env",
            ));
        }
    };
    let capacity = super::pkcs11::capacity(raw.capacity.as_ref(), &key("capacity"), src)?;
    Ok(HsmMember {
        name,
        module,
        env,
        token,
        serial,
        pin,
        sessions: int(
            raw.sessions.as_ref(),
            &key("sessions"),
            1..=256,
            d::SESSIONS as i64,
            src,
        )? as usize,
        connections: int(
            raw.connections.as_ref(),
            &key("connections"),
            1..=64,
            d::CONNECTIONS as i64,
            src,
        )? as usize,
        capacity,
        location: src.location(m.span().start),
    })
}

fn non_empty(v: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<String, ConfigError> {
    if v.get_ref().trim().is_empty() {
        return Err(src.invalid(v.span().start, key, "must not be empty"));
    }
    Ok(v.get_ref().clone())
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const BASE: &str = r#"
[[listener]]
address = "127.0.0.1:8443"
[tls]
certificate = "cert.pem"
key = "pkcs11:object=tls-rsa;type=private"
[upstream]
address = "127.0.0.1:8080"
[[hsm.group]]
name = "main"
op_timeout_ms = 300
[[hsm.group.region]]
name = "eu-1"
role = "primary"
[[hsm.group.region.member]]
name = "hsm-a"
module = "/usr/lib/p11-kit-client.so"
env = { P11_KIT_SERVER_ADDRESS = "unix:path=/run/a.sock" }
token = "hsm-a"
pin_file = "pin"
sessions = 8
capacity = 10000
[[hsm.group.region.member]]
name = "hsm-b"
module = "/usr/lib/p11-kit-client.so"
serial = "1234"
pin_env = "HSM_B_PIN"
[[hsm.group.region]]
name = "eu-2"
role = "standby"
[[hsm.group.region.member]]
name = "hsm-c"
module = "/usr/lib/p11-kit-client.so"
token = "hsm-c"
pin_file = "/etc/pin-c"
connections = 2
"#;

    fn load(text: &str) -> Result<crate::Config, crate::ConfigError> {
        load_str(text, "/etc/hsmgate/ha.toml".as_ref())
    }

    #[test]
    fn a_group_with_two_regions() {
        let c = load(BASE).expect("valid");
        assert!(c.pkcs11.is_none());
        let g = c.hsm.into_iter().next().expect("group");
        assert_eq!(g.name, "main");
        assert_eq!(g.op_timeout.as_millis(), 300);
        assert_eq!(g.sign_timeout.as_millis(), 2000);
        assert_eq!(g.regions.len(), 2);
        assert!(g.regions[0].primary && !g.regions[1].primary);
        let a = &g.regions[0].members[0];
        assert_eq!(
            (a.sessions, a.connections, a.capacity),
            (8, 1, Some(10000.0))
        );
        assert_eq!(a.pin, crate::PinSource::File("/etc/hsmgate/pin".into()));
        assert_eq!(
            a.env.get("P11_KIT_SERVER_ADDRESS").map(String::as_str),
            Some("unix:path=/run/a.sock")
        );
        assert_eq!(g.regions[0].members[1].serial.as_deref(), Some("1234"));
        assert_eq!(g.regions[1].members[0].connections, 2);
        assert_eq!(a.location.line, 15, "the member's table header");
    }

    fn fails(text: &str, line: usize, needles: &[&str]) {
        let e = load(text).expect_err("invalid").to_string();
        assert!(e.contains(&format!("ha.toml:{line}:")), "line {line}: {e}");
        for n in needles {
            assert!(e.contains(n), "{n:?} not in {e}");
        }
    }

    #[test]
    fn rules_name_file_line_and_key() {
        fails(
            &BASE.replace("object=tls-rsa", "token=x;object=tls-rsa"),
            6,
            &["tls.key", "names no token"],
        );
        fails(
            &BASE.replace("role = \"standby\"", "role = \"backup\""),
            30,
            &["role", "backup"],
        );
        fails(
            &BASE.replace("name = \"hsm-b\"", "name = \"hsm-a\""),
            24,
            &["defined twice"],
        );
        fails(
            &BASE.replace("serial = \"1234\"\n", ""),
            24,
            &["token", "must name its token"],
        );
        fails(
            &BASE.replace("pin_env = \"HSM_B_PIN\"\n", ""),
            24,
            &["no PIN source"],
        );
        fails(
            &BASE.replace("op_timeout_ms = 300", "op_timeout_ms = 3000"),
            11,
            &["op_timeout_ms", "sign_timeout_ms"],
        );
        fails(
            &BASE.replace("capacity = 10000", "capacity = -1"),
            22,
            &["capacity"],
        );
        fails(
            &format!("{BASE}[pkcs11]\nsessions = 2\n"),
            9,
            &["either [pkcs11]"],
        );
        fails(
            &BASE.replace("role = \"primary\"", "role = \"standby\""),
            10,
            &["no region has role"],
        );
        fails(
            &BASE.replace(
                "key = \"pkcs11:object=tls-rsa;type=private\"",
                "key = \"pkcs11:object=tls-rsa;type=private\"\ngroup = \"other\"",
            ),
            7,
            &["tls.group", "other"],
        );
    }

    /// BASE with a second group ("ecdsa", one member) holding a `[[tls.pair]]` key served
    /// to `b.example` and `*.b.example` (its `[[tls.pair]]` header is line 47, 48 when `[tls]` names its group).
    fn two_groups(pair: &str) -> String {
        format!(
            r#"{BASE}[[hsm.group]]
name = "ecdsa"
[[hsm.group.region]]
name = "eu-1"
role = "primary"
[[hsm.group.region.member]]
name = "hsm-e"
module = "/usr/lib/p11-kit-client.so"
token = "hsm-e"
pin_file = "pin-e"
[[tls.pair]]
{pair}"#
        )
    }

    const PAIR: &str = "certificate = \"b.pem\"\nkey = \"pkcs11:object=b;type=private\"\ngroup = \"ecdsa\"\nserver_names = [\"B.example\", \"*.b.example\"]\n";

    #[test]
    fn several_keys_each_in_its_own_group() {
        let text = two_groups(PAIR).replace(
            "key = \"pkcs11:object=tls-rsa;type=private\"",
            "key = \"pkcs11:object=tls-rsa;type=private\"\ngroup = \"main\"",
        );
        let c = load(&text).expect("valid");
        let names: Vec<&str> = c.hsm.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["main", "ecdsa"]);
        assert_eq!(c.tls.key.uri.group.as_deref(), Some("main"));
        let pair = &c.tls.pairs[0];
        assert_eq!(pair.key.uri.group.as_deref(), Some("ecdsa"));
        assert_eq!(pair.server_names, ["b.example", "*.b.example"]);
        assert_eq!(
            pair.certificate_chain,
            std::path::Path::new("/etc/hsmgate/b.pem")
        );
        assert_eq!(pair.key.location.line, 50);
        // The model: the [tls] server by default, one more server for the pair's names.
        let site = crate::site::Site::from_native(&c);
        assert_eq!(site.servers.len(), 2);
        assert!(site.servers[1].listens.iter().all(|l| !l.default_server));
        assert_eq!(site.servers[1].certs.len(), 1);
        assert_eq!(site.hsm_groups.len(), 2);
    }

    #[test]
    fn several_keys_rules_name_file_line_and_key() {
        // [tls]'s key names no group while there are two.
        fails(
            &two_groups(PAIR),
            6,
            &["tls.group", "several [[hsm.group]]s"],
        );
        let main = |t: String| {
            t.replace(
                "key = \"pkcs11:object=tls-rsa;type=private\"",
                "key = \"pkcs11:object=tls-rsa;type=private\"\ngroup = \"main\"",
            )
        };
        fails(
            &main(two_groups(
                &PAIR.replace("group = \"ecdsa\"", "group = \"nope\""),
            )),
            51,
            &["tls.pair[0].group", "no [[hsm.group]] named \"nope\""],
        );
        fails(
            &main(two_groups(
                &PAIR.replace("group = \"ecdsa\"", "group = \"main\""),
            )),
            39,
            &["hsm.group.name", "no key is in [[hsm.group]] \"ecdsa\""],
        );
        fails(
            &main(two_groups(PAIR)).replace("name = \"ecdsa\"", "name = \"main\""),
            39,
            &["defined twice"],
        );
        fails(
            &main(two_groups(
                &PAIR.replace("type=private", "token=t;type=private"),
            )),
            50,
            &["tls.pair[0].key", "names no token"],
        );
        fails(
            &main(two_groups(&format!(
                "{PAIR}[[tls.pair]]\ncertificate = \"c.pem\"\nkey = \"pkcs11:object=c\"\ngroup = \"ecdsa\"\nserver_names = [\"b.example\"]\n"
            ))),
            57,
            &["tls.pair[1].server_names[0]", "lists other names"],
        );
        fails(
            &main(two_groups(&PAIR.replace("\"*.b.example\"", "\"~b\""))),
            52,
            &["server_names[1]", "regular expressions"],
        );
    }
}
