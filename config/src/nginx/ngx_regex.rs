//! A location's regex as nginx (PCRE) reads it: the `regex` crate's linear-time engine
//! where the pattern allows, else `fancy-regex`'s backtracking one for what only PCRE
//! has: look-around (h5bp's `location ~ /\.(?!well-known)`, the common "deny dotfiles
//! but the ACME challenge" rule) and back-references. A backtracking match that exceeds
//! its step limit (a hostile path against a pathological pattern) counts as no match.

use super::cond::Captures;

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
            NgxRegex::Linear(re) => super::cond::captures_of(re, subject),
            NgxRegex::Backtracking(re) => {
                let caps = re.captures(subject).ok()??;
                let numbered = (caps.iter().take(10))
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_owned()))
                    .collect();
                let named = (re.capture_names().flatten())
                    .filter_map(|n| {
                        Some((n.to_ascii_lowercase(), caps.name(n)?.as_str().to_owned()))
                    })
                    .collect();
                Some(Captures { numbered, named })
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
