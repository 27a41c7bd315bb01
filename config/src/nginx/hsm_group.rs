//! HA groups of HSMs in an nginx configuration, spelled so that nginx itself accepts the
//! file: a `map` block whose variable is `$hsmgate_group_NAME` (nginx builds the map and
//! never uses it). Its `default` value holds the group's settings, and every other entry
//! is one member: the key is `"REGION ROLE MEMBER"` (ROLE `primary` or `standby`), the
//! value its settings. Settings are `key=value` words with the names of the TOML format's
//! `[[hsm.group]]` and `[[hsm.group.region.member]]` keys (`env.NAME=VALUE` for `env`),
//! and they are checked by the same validator, with errors at the entry's `file:line`.
//!
//! ```nginx
//! map $host $hsmgate_group_web {
//!     default              "sign_timeout_ms=2000 op_timeout_ms=500";
//!     "eu-1 primary hsm-a" "module=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so token=hsm-a pin_file=/etc/hsmgate/pin env.P11_KIT_SERVER_ADDRESS=unix:path=/run/hsm-a.sock";
//!     "eu-1 primary hsm-b" "module=… token=hsm-b pin_file=/etc/hsmgate/pin env.P11_KIT_SERVER_ADDRESS=unix:path=/run/hsm-b.sock";
//!     "us-1 standby hsm-c" "module=… token=hsm-c pin_file=/etc/hsmgate/pin env.P11_KIT_SERVER_ADDRESS=…";
//! }
//! server {
//!     ssl_certificate_key "pkcs11:object=tls;type=private?x-hsmgate-group=web";
//! }
//! ```
//!
//! A key that names a group names no token and no PIN (each member has its own). Values
//! are words: a path with a space cannot be written here (use the TOML format).

use serde::Deserialize;

use super::build::Ctx;
use super::parse::Directive;
use crate::error::ConfigError;
use crate::load::Source;
use crate::model::HsmGroup;
use crate::raw::RawHsm;

/// The variable-name prefix of a group's `map`.
pub(crate) const PREFIX: &str = "hsmgate_group_";

#[derive(Deserialize)]
struct Doc {
    hsm: RawHsm,
}

/// The group a `map $… $hsmgate_group_NAME { … }` block defines.
pub(crate) fn group(ctx: &Ctx<'_>, d: &Directive, name: &str) -> Result<HsmGroup, ConfigError> {
    let body = ctx.block(d, 2, 2)?;
    let mut defaults: Option<&str> = None;
    // (region, primary, [(member, settings, entry index)])
    type Members = Vec<(String, String, usize)>;
    let mut regions: Vec<(String, bool, Members)> = Vec::new();
    for (i, e) in body.iter().enumerate() {
        if e.block.is_some() || e.args.len() != 1 {
            return Err(ctx.arguments(e, "invalid number of the map parameters"));
        }
        let value = e.args[0].value.as_str();
        if e.name == "default" {
            defaults = Some(value);
            continue;
        }
        let words: Vec<&str> = e.name.split_whitespace().collect();
        let [region, role, member] = words[..] else {
            return Err(ctx.invalid(
                e,
                e.at,
                format!(
                    "a member is written \"REGION primary|standby NAME\", not \"{}\"",
                    e.name
                ),
            ));
        };
        let primary = match role {
            "primary" => true,
            "standby" => false,
            other => {
                let reason = format!("role \"{other}\": expected primary or standby");
                return Err(ctx.invalid(e, e.at, reason));
            }
        };
        let members = match regions.iter_mut().find(|(r, _, _)| r == region) {
            Some((_, p, m)) if *p == primary => m,
            Some(_) => {
                let reason = format!("region \"{region}\" is given both roles");
                return Err(ctx.invalid(e, e.at, reason));
            }
            None => {
                regions.push((region.to_owned(), primary, Vec::new()));
                &mut regions.last_mut().expect("just pushed").2
            }
        };
        members.push((member.to_owned(), value.to_owned(), i));
    }
    // The TOML the entries stand for; each line remembers its entry, so the validator's
    // errors are put back on the map's lines.
    let mut toml = String::new();
    let mut lines: Vec<Option<usize>> = Vec::new();
    let mut push = |text: String, entry: Option<usize>, toml: &mut String| {
        for l in text.lines() {
            toml.push_str(l);
            toml.push('\n');
            lines.push(entry);
        }
    };
    push(
        format!("[[hsm.group]]\nname = {}", quoted(name)),
        None,
        &mut toml,
    );
    let default_entry = body.iter().position(|e| e.name == "default");
    if let (Some(text), Some(i)) = (defaults, default_entry) {
        let text = settings(text, false)
            .map_err(|reason| ctx.invalid(&body[i], body[i].args[0].at, reason))?;
        push(text, default_entry, &mut toml);
    }
    for (region, primary, members) in &regions {
        let role = if *primary { "primary" } else { "standby" };
        push(
            format!(
                "[[hsm.group.region]]\nname = {}\nrole = \"{role}\"",
                quoted(region)
            ),
            members.first().map(|m| m.2),
            &mut toml,
        );
        for (member, value, entry) in members {
            let text = settings(value, true)
                .map_err(|reason| ctx.invalid(&body[*entry], body[*entry].args[0].at, reason))?;
            push(
                format!(
                    "[[hsm.group.region.member]]\nname = {}\n{text}",
                    quoted(member)
                ),
                Some(*entry),
                &mut toml,
            );
        }
    }
    let relocate = |e: ConfigError| {
        let entry = lines.get(e.line.saturating_sub(1)).copied().flatten();
        let at = entry.map_or(d.at, |i| body[i].at);
        ConfigError::at(ctx.loc(at), e.kind)
    };
    let doc: Doc = toml::from_str(&toml).map_err(|e| {
        let line = e
            .span()
            .map(|s| toml[..s.start.min(toml.len())].lines().count().max(1));
        let entry = line.and_then(|l| lines.get(l - 1).copied().flatten());
        let at = entry.map_or(d.at, |i| body[i].at);
        ctx.invalid(d, at, e.message().to_owned())
    })?;
    let src = Source {
        text: &toml,
        file: &ctx.loc(d.at).file,
        dir: ctx.conf_prefix,
    };
    let [raw] = &doc.hsm.group[..] else {
        unreachable!("the text has one [[hsm.group]]")
    };
    crate::validate::hsm::one_group(raw.get_ref(), &src).map_err(relocate)
}

/// `key=value` words as TOML lines, typed by the key (integers, `capacity` a float,
/// `standby_when_saturated` a boolean), `env.NAME=VALUE` into one `env` table.
fn settings(text: &str, member: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut env = Vec::new();
    for word in text.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("\"{word}\" is not key=value"));
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(format!("\"{key}\" is not a setting name"));
        }
        if let Some(var) = key.strip_prefix("env.").filter(|_| member) {
            env.push(format!("{} = {}", quoted(var), quoted(value)));
            continue;
        }
        const INTEGERS: &[&str] = &[
            "sign_timeout_ms",
            "op_timeout_ms",
            "queue_depth",
            "probe_interval_ms",
            "recovery_timeout_ms",
            "max_abandoned_threads",
            "sessions",
            "connections",
        ];
        // Typed by the key (a token label or serial of digits stays a string); a value
        // of the wrong type is left a string for the validator to name.
        let toml_value = match key {
            "capacity" if value.parse::<f64>().is_ok() => {
                format!("{:?}", value.parse::<f64>().unwrap_or_default())
            }
            k if INTEGERS.contains(&k) && value.parse::<i64>().is_ok() => value.to_owned(),
            "standby_when_saturated" if value == "true" || value == "false" => value.to_owned(),
            _ => quoted(value),
        };
        out.push_str(&format!("{key} = {toml_value}\n"));
    }
    if !env.is_empty() {
        out.push_str(&format!("env = {{ {} }}\n", env.join(", ")));
    }
    Ok(out)
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::nginx::KeySource;
    use crate::nginx::tests::{FILE, http, load_str};

    fn load(body: &str) -> Result<crate::nginx::NginxConfig, String> {
        load_str(&http(body)).map_err(|e| e.to_string())
    }

    const SERVER: &str = "server { listen 127.0.0.1:1 ssl; ssl_certificate c.pem;\n\
        ssl_certificate_key \"pkcs11:object=tls;type=private?x-hsmgate-group=web\"; }";

    #[test]
    fn a_map_defines_a_group_and_a_key_names_it() {
        let c = load(&format!(
            "map $host $hsmgate_group_web {{\n\
             default \"sign_timeout_ms=1500 op_timeout_ms=400\";\n\
             \"eu-1 primary hsm-a\" \"module=/m.so token=hsm-a pin_file=/p sessions=8 capacity=5000 env.P11_KIT_SERVER_ADDRESS=unix:path=/a.sock\";\n\
             \"eu-1 primary hsm-b\" \"module=/m.so token=hsm-b pin_env=PIN_B\";\n\
             \"us-1 standby hsm-c\" \"module=/m.so serial=0042 pin_file=/p\";\n}}\n{SERVER}"
        ))
        .unwrap();
        let g = &c.hsm_groups["web"];
        assert_eq!(g.name, "web");
        assert_eq!(g.sign_timeout, Duration::from_millis(1500));
        assert_eq!(g.op_timeout, Duration::from_millis(400));
        assert_eq!(g.regions.len(), 2);
        assert!(g.regions[0].primary && !g.regions[1].primary);
        let a = &g.regions[0].members[0];
        assert_eq!(
            (a.name.as_str(), a.token.as_deref(), a.sessions),
            ("hsm-a", Some("hsm-a"), 8)
        );
        assert_eq!(a.capacity, Some(5000.0));
        assert_eq!(a.env["P11_KIT_SERVER_ADDRESS"], "unix:path=/a.sock");
        assert_eq!(g.regions[1].members[0].serial.as_deref(), Some("0042"));
        match &c.servers[0].certs[0].key {
            KeySource::Pkcs11(uri) => assert_eq!(uri.group.as_deref(), Some("web")),
            other => panic!("{other:?}"),
        }
        assert!(
            !c.maps.contains_key("hsmgate_group_web"),
            "not a variable map"
        );
    }

    #[test]
    fn bad_groups_are_errors_at_their_line() {
        let member = "\"eu-1 primary hsm-a\" \"module=/m.so token=hsm-a pin_file=/p\";";
        for (http, line, want) in [
            (
                "map $host $hsmgate_group_web {\n\"eu-1 boss hsm-a\" \"module=/m\";\n}".to_owned(),
                4,
                "expected primary or standby",
            ),
            (
                "map $host $hsmgate_group_web {\n\"hsm-a\" \"module=/m\";\n}".to_owned(),
                4,
                "REGION primary|standby NAME",
            ),
            (
                format!(
                    "map $host $hsmgate_group_web {{\n{member}\n\"eu-1 primary hsm-b\" \"module=/m.so token=hsm-b sessions=0 pin_file=/p\";\n}}"
                ),
                5,
                "sessions",
            ),
            (
                format!(
                    "map $host $hsmgate_group_web {{\n{member}\n\"eu-1 primary hsm-b\" \"module=/m.so token=hsm-b\";\n}}"
                ),
                5,
                "PIN",
            ),
            (
                format!(
                    "map $host $hsmgate_group_web {{\n{member}\n\"eu-1 primary hsm-b\" \"module=/m.so token=hsm-b pin_file=/p colour=red\";\n}}"
                ),
                5,
                "colour",
            ),
            (
                format!(
                    "map $host $hsmgate_group_web {{\n{member}\n}}\nserver {{ listen 127.0.0.1:1 ssl; ssl_certificate c.pem;\nssl_certificate_key \"pkcs11:object=tls?x-hsmgate-group=db\"; }}"
                ),
                7,
                "no HA group \"db\"",
            ),
            (
                format!(
                    "map $host $hsmgate_group_web {{\n{member}\n}}\nserver {{ listen 127.0.0.1:1 ssl; ssl_certificate c.pem;\nssl_certificate_key \"pkcs11:token=x;object=tls?x-hsmgate-group=web\"; }}"
                ),
                7,
                "names no token",
            ),
        ] {
            let e = load(&http).expect_err(&http);
            assert!(
                e.contains(&format!("{FILE}:{line}:")) && e.contains(want),
                "{http}\n=> {e}"
            );
        }
    }
}
