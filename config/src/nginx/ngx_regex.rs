//! A location's or an `if`'s regex as nginx (PCRE) reads it, and what a regex
//! captured ([`Captures`], nginx's `$1`… and named groups): the `regex` crate's linear-time engine
//! where the pattern allows, else `fancy-regex`'s backtracking one for what only PCRE
//! has: look-around (h5bp's `location ~ /\.(?!well-known)`, the common "deny dotfiles
//! but the ACME challenge" rule) and back-references. A backtracking match that exceeds
//! its step limit (a hostile path against a pathological pattern) counts as no match.

/// What a regex captured: `$0`…`$9` (`$0` the whole match; a group that took no part
/// is empty) and its named groups (`(?<name>…)`, nginx's `$name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// `$0`, `$1`, … (at most ten).
    pub numbered: Vec<String>,
    /// Named groups that took part, by name (lower case, as variables are).
    pub named: Vec<(String, String)>,
}

impl Captures {
    /// The value of variable `name` if it is one of these captures.
    pub fn get(&self, name: &str) -> Option<&str> {
        match super::rewrite::capture_index(name) {
            Some(n) => Some(self.numbered.get(n).map_or("", String::as_str)),
            None => (self.named.iter())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// From a match's groups in order (`$0` first) and its named groups, whichever
    /// engine made it.
    fn collect<'t>(
        groups: impl Iterator<Item = Option<&'t str>>,
        named: impl Iterator<Item = (&'t str, Option<&'t str>)>,
    ) -> Captures {
        Captures {
            numbered: (groups.take(10))
                .map(|g| g.unwrap_or_default().to_owned())
                .collect(),
            named: named
                .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), v?.to_owned())))
                .collect(),
        }
    }
}

/// What `regex` captures in `subject`; None when it does not match.
pub(crate) fn captures_of(regex: &regex::Regex, subject: &str) -> Option<Captures> {
    if regex.captures_len() == 1 {
        return regex.find(subject).map(|m| Captures {
            numbered: vec![m.as_str().to_owned()],
            named: Vec::new(),
        });
    }
    let caps = regex.captures(subject)?;
    Some(Captures::collect(
        caps.iter().map(|m| m.map(|m| m.as_str())),
        (regex.capture_names().flatten()).map(|n| (n, caps.name(n).map(|m| m.as_str()))),
    ))
}

/// A compiled location regex.
#[derive(Debug, Clone)]
pub enum NgxRegex {
    /// What the `regex` crate compiles (nearly every pattern).
    Linear(regex::Regex),
    /// Look-around or back-references.
    Backtracking(Box<fancy_regex::Regex>),
}

impl NgxRegex {
    /// `source` compiled, by `regex` if it can, else by `fancy-regex`; the error is the
    /// `regex` crate's when neither can (it names the problem better).
    pub fn new(source: &str) -> Result<NgxRegex, regex::Error> {
        match regex::Regex::new(source) {
            Ok(re) => Ok(NgxRegex::Linear(re)),
            Err(e) => match fancy_regex::Regex::new(source) {
                Ok(re) => Ok(NgxRegex::Backtracking(Box::new(re))),
                Err(_) => Err(e),
            },
        }
    }

    /// Whether it matches `subject` anywhere.
    pub fn is_match(&self, subject: &str) -> bool {
        match self {
            NgxRegex::Linear(re) => re.is_match(subject),
            NgxRegex::Backtracking(re) => re.is_match(subject).unwrap_or(false),
        }
    }

    /// What it captures in `subject` (see [`Captures`]); None when it does not match.
    pub fn captures(&self, subject: &str) -> Option<Captures> {
        match self {
            NgxRegex::Linear(re) => captures_of(re, subject),
            NgxRegex::Backtracking(re) => {
                let caps = re.captures(subject).ok()??;
                Some(Captures::collect(
                    caps.iter().map(|m| m.map(|m| m.as_str())),
                    (re.capture_names().flatten()).map(|n| (n, caps.name(n).map(|m| m.as_str()))),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// h5bp's dotfile rule needs a negative look-ahead: compiled by fancy-regex, matched
    /// as PCRE matches it; a plain pattern stays on the linear engine.
    #[test]
    fn look_ahead_patterns_compile_and_match_as_pcre() {
        let dotfiles = NgxRegex::new(r"(?i)/\.(?!well-known)").expect("compiles");
        assert!(matches!(dotfiles, NgxRegex::Backtracking(_)));
        assert!(dotfiles.is_match("/.git/config"));
        assert!(dotfiles.is_match("/a/.env"));
        assert!(!dotfiles.is_match("/.well-known/acme-challenge/x"));
        assert!(!dotfiles.is_match("/index.html"));
        let plain = NgxRegex::new(r"\.(php|cgi)$").expect("compiles");
        assert!(matches!(plain, NgxRegex::Linear(_)));
        let back = NgxRegex::new(r"^/(\w+)/\1$").expect("a back-reference");
        assert_eq!(
            back.captures("/ab/ab")
                .and_then(|c| c.numbered.get(1).cloned())
                .as_deref(),
            Some("ab")
        );
        assert!(back.captures("/ab/cd").is_none());
        assert!(NgxRegex::new(r"(unclosed").is_err());
    }
}
