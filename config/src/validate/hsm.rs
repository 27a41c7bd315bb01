//! The `[[hsm.group]]` rules: one group (more come with several keys), regions with a
//! primary or standby role, members with a module, a token (label or serial), exactly
//! one PIN source, and sizes in range; names unique. The key URI names no token (each
//! member names its own) and must be found on every member.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::int;
use crate::defaults as d;
use crate::error::ConfigError;
use crate::load::Source;
use crate::model::{HsmGroup, HsmMember, HsmRegion, KeyRef, PinSource};
use crate::raw::{RawGroup, RawHsm, RawMember, RawTls};

pub(crate) fn group(
    raw: &RawHsm,
    tls: &RawTls,
    _key: &KeyRef,
    src: &Source<'_>,
) -> Result<HsmGroup, ConfigError> {
    let g = match raw.group.as_slice() {
        [] => return Err(src.invalid(0, "hsm.group", "at least one [[hsm.group]] is required")),
        [one] => one,
        [_, second, ..] => {
            let reason = "only one [[hsm.group]] is supported for now (one TLS key)";
            return Err(src.invalid(second.span().start, "hsm.group", reason));
        }
    };
    let gr = g.get_ref();
    if let Some(wanted) = &tls.group
        && wanted.get_ref() != gr.name.get_ref()
    {
        let reason = format!("no [[hsm.group]] named \"{}\"", wanted.get_ref());
        return Err(src.invalid(wanted.span().start, "tls.group", reason));
    }
    one_group(gr, src)
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
        let g = c.hsm.expect("group");
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
}
