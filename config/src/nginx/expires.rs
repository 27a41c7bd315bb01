//! nginx's `expires [modified] TIME | epoch | max | off | @TIME-OF-DAY`, also from a
//! variable (`expires $expires;` with a `map`), read as nginx 1.22 reads it.

use super::build::Ctx;
use super::parse::Directive;
use super::template::Template;
use crate::error::ConfigError;

/// What `expires` does to a successful answer's `Expires` and `Cache-Control`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expires {
    /// `off` (the default): the headers pass as they are.
    #[default]
    Off,
    /// `epoch`: `Expires: Thu, 01 Jan 1970 00:00:01 GMT`, `Cache-Control: no-cache`.
    Epoch,
    /// `max`: `Expires: Thu, 31 Dec 2037 23:55:55 GMT`, `max-age=315360000`.
    Max,
    /// `[modified] [+|-]TIME`: that many seconds after the answer (or after its
    /// `Last-Modified`); a time in the past is `no-cache`.
    After {
        /// Seconds (negative: in the past).
        secs: i64,
        /// `modified`.
        modified: bool,
    },
    /// `@TIME`: the next such time of day (seconds after midnight, local time).
    DayTime(u32),
    /// A value with variables, read as one of the above when the answer comes (an
    /// invalid one does nothing).
    Var(Template),
}

impl Expires {
    /// `value` (the directive's argument, `modified` given apart) as nginx reads it.
    pub fn parse(value: &str, modified: bool) -> Option<Expires> {
        match value {
            "off" if !modified => return Some(Expires::Off),
            "epoch" if !modified => return Some(Expires::Epoch),
            "max" if !modified => return Some(Expires::Max),
            _ => {}
        }
        if let Some(day) = value.strip_prefix('@') {
            let secs = super::values::parse_time(day)?.as_secs();
            return (secs < 24 * 60 * 60 && !modified).then_some(Expires::DayTime(secs as u32));
        }
        let (sign, rest) = match value.as_bytes().first()? {
            b'-' => (-1, &value[1..]),
            b'+' => (1, &value[1..]),
            _ => (1, value),
        };
        let secs = i64::try_from(super::values::parse_time(rest)?.as_secs()).ok()?;
        Some(Expires::After {
            secs: sign * secs,
            modified,
        })
    }
}

/// `expires [modified] VALUE`.
pub(crate) fn expires(ctx: &Ctx<'_>, d: &Directive) -> Result<Expires, ConfigError> {
    let args = ctx.args(d, 1, 2)?;
    let (modified, value) = match args {
        [m, v] if m.value == "modified" => (true, v),
        [v] => (false, v),
        [m, _] => {
            return Err(ctx.invalid(d, m.at, format!("invalid value \"{}\"", m.value)));
        }
        _ => unreachable!("one or two arguments"),
    };
    if value.value.contains('$') && !modified {
        return Ok(Expires::Var(ctx.template(d, value)?));
    }
    Expires::parse(&value.value, modified)
        .ok_or_else(|| ctx.invalid(d, value.at, format!("invalid value \"{}\"", value.value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_nginx_reads_them() {
        let p = |v: &str, m: bool| Expires::parse(v, m);
        assert_eq!(
            p("1h", false),
            Some(Expires::After {
                secs: 3600,
                modified: false
            })
        );
        assert_eq!(
            p("-1", false),
            Some(Expires::After {
                secs: -1,
                modified: false
            })
        );
        assert_eq!(
            p("+30d", true),
            Some(Expires::After {
                secs: 30 * 86400,
                modified: true
            })
        );
        assert_eq!(
            p("1h 30m", false),
            Some(Expires::After {
                secs: 5400,
                modified: false
            })
        );
        assert_eq!(
            p("@15h30m", false),
            Some(Expires::DayTime(15 * 3600 + 1800))
        );
        assert_eq!(p("epoch", false), Some(Expires::Epoch));
        assert_eq!(p("max", false), Some(Expires::Max));
        assert_eq!(p("off", false), Some(Expires::Off));
        assert_eq!(p("soon", false), None);
        assert_eq!(p("@25h", false), None);
        assert_eq!(p("epoch", true), None);
    }
}
