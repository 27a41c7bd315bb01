//! `split_clients STRING $NAME { PERCENT% VALUE; … * VALUE; }` (nginx's
//! `ngx_http_split_clients_module`): a variable whose value is chosen by where the
//! MurmurHash2 of a string falls, for A/B tests and canaries. As nginx: each percentage
//! (up to two decimals) takes the next share of the 32-bit hash space, in file order,
//! `*` takes the rest, and a hash past every share gives an empty value. Values are
//! text. The same string gets the same value in hsmgate and nginx.

use super::build::Ctx;
use super::map::VarMap;
use super::parse::Directive;
use super::template::{Template, TemplatePart};
use crate::error::ConfigError;

/// The shares of a `split_clients` block.
#[derive(Debug, Clone, Default)]
pub struct SplitTable {
    /// Each share's end in the hash space (exclusive; 0: `*`, the rest), in file order.
    pub parts: Vec<(u32, Template)>,
}

impl SplitTable {
    /// The value for `value`, if a share holds its hash.
    pub fn lookup(&self, value: &str) -> Option<&Template> {
        let hash = murmur_hash2(value.as_bytes());
        (self.parts.iter())
            .find(|(end, _)| hash < *end || *end == 0)
            .map(|(_, t)| t)
    }
}

/// nginx's `ngx_murmur_hash2` (MurmurHash2, seed 0).
pub fn murmur_hash2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// `PERCENT%` in hundredths of a percent, as nginx's `ngx_atofp(…, 2)` reads it (digits
/// past the second decimal are dropped); `None` for anything else or zero.
fn hundredths(text: &str) -> Option<u32> {
    let number = text.strip_suffix('%')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u32 = match whole {
        "" => 0,
        w => w.parse().ok().filter(|&w: &u32| w <= 100)?,
    };
    let mut cents = 0;
    for (i, b) in fraction.bytes().take(2).enumerate() {
        cents += u32::from(b - b'0') * if i == 0 { 10 } else { 1 };
    }
    Some(whole * 100 + cents).filter(|&n| n > 0)
}

/// A `split_clients` block into the [`VarMap`] that looks it up.
pub(crate) fn split_map(ctx: &mut Ctx<'_>, d: &Directive) -> Result<(String, VarMap), ConfigError> {
    let body = ctx.block(d, 2, 2)?;
    let source = ctx.template(d, &d.args[0])?;
    let var = &d.args[1];
    let name = super::map::variable_name(ctx, d, var)?;
    let mut table = SplitTable::default();
    let (mut sum, mut last) = (0u32, 0u64);
    for e in body {
        if e.block.is_some() {
            return Err(ctx.arguments(e, "unexpected \"{\""));
        }
        let [value] = e.args.as_slice() else {
            return Err(ctx.arguments(e, "invalid number of arguments"));
        };
        let end = match e.name.as_str() {
            "*" => {
                sum = 10_000;
                0
            }
            p => {
                let n = hundredths(p).ok_or_else(|| {
                    ctx.invalid(e, e.at, format!("invalid percent value \"{p}\""))
                })?;
                sum += n;
                if sum > 10_000 {
                    return Err(ctx.invalid(e, e.at, "percent total is greater than 100%"));
                }
                last += u64::from(n) * u64::from(u32::MAX) / 10_000;
                last as u32
            }
        };
        let text = Template {
            parts: vec![TemplatePart::Literal(value.value.clone())],
        };
        table.parts.push((end, text));
    }
    let map = VarMap {
        source,
        exact: Default::default(),
        wildcards: Default::default(),
        regexes: Vec::new(),
        default: Template::default(),
        geo: None,
        split: Some(table),
        location: ctx.loc(d.at),
    };
    Ok((name, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_hash2_as_nginx_computes_it() {
        // nginx's algorithm written out in Python (the tail, the four-byte blocks).
        assert_eq!(murmur_hash2(b""), 0);
        assert_eq!(murmur_hash2(b"a"), 0x9268_5f5e);
        assert_eq!(murmur_hash2(b"abcd"), 0x2687_3021);
        assert_eq!(murmur_hash2(b"hello, world"), 0x4b4c_9d80);
        assert_eq!(murmur_hash2(b"127.0.0.1"), 0xb613_1d91);
    }

    #[test]
    fn percentages_as_ngx_atofp_reads_them() {
        assert_eq!(hundredths("10%"), Some(1000));
        assert_eq!(hundredths("0.5%"), Some(50));
        assert_eq!(hundredths("33.333%"), Some(3333));
        assert_eq!(hundredths(".25%"), Some(25));
        assert_eq!(hundredths("100%"), Some(10_000));
        for bad in ["0%", "10", "1.2.3%", "-1%", "%", "x%", "101%"] {
            assert_eq!(hundredths(bad), None, "{bad}");
        }
    }

    #[test]
    fn shares_in_file_order_and_the_rest() {
        let t = |s: &str| Template {
            parts: vec![TemplatePart::Literal(s.into())],
        };
        let half = u32::MAX / 2;
        let table = SplitTable {
            parts: vec![(half, t("a")), (0, t("b"))],
        };
        let mut seen = [0, 0];
        for i in 0..2000 {
            let v = table.lookup(&format!("client-{i}")).expect("a share");
            let hash = murmur_hash2(format!("client-{i}").as_bytes());
            let expect = if hash < half { "a" } else { "b" };
            assert_eq!(*v, t(expect));
            seen[usize::from(expect == "b")] += 1;
        }
        assert!(seen[0] > 900 && seen[1] > 900, "{seen:?}");
        let none = SplitTable {
            parts: vec![(1, t("a"))],
        };
        assert!(none.lookup("x").is_none(), "past every share: empty");
    }
}
