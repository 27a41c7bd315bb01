//! Loading: read the file, parse the TOML into the raw mirror, turn byte spans
//! into 1-based `line:col`, then validate once into the [`Config`] model.

use std::path::Path;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::model::{Config, Location};
use crate::raw::RawConfig;
use crate::validate::validate;

/// Reads and validates the config file at `path`. Relative paths inside it are
/// resolved against `path`'s directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let config = load_str(&text, path)?;
    tracing::debug!(file = %path.display(), listeners = config.listeners.len(), "configuration loaded");
    Ok(config)
}

/// The text of the config file at `path`.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    crate::nginx::parse::read_text(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        kind: ConfigErrorKind::Read(e),
    })
}

/// Validates config `text` as if read from `source` (used in messages and to
/// resolve relative paths); `source` itself is not read.
pub fn load_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let src = Source {
        text,
        file: source,
        dir: source.parent().unwrap_or(Path::new("")),
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let mut message = plain_types(e.message().lines().next().unwrap_or("invalid TOML"));
        if message.starts_with("invalid ")
            && src.line_of(offset).to_ascii_lowercase().contains("pin")
        {
            // A PIN setting's value (`pin_file = 1234`, the PIN itself by mistake) is
            // not repeated.
            message = hide_quoted(&message);
        }
        src.error(
            offset,
            ConfigErrorKind::Syntax(src.name_key(offset, &message)),
        )
    })?;
    validate(raw, &src)
}

/// The text being loaded and where it came from.
pub(crate) struct Source<'a> {
    pub(crate) text: &'a str,
    pub(crate) file: &'a Path,
    /// Directory that relative paths are resolved against.
    pub(crate) dir: &'a Path,
}

/// `message` with every backquoted value replaced by `***`.
fn hide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('`');
        out.push_str(if i % 2 == 0 { "***" } else { part });
    }
    out
}

impl Source<'_> {
    /// `offset` within the text, moved back to a character's start.
    fn at_char(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// The line of the text that holds byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> &str {
        let offset = self.at_char(offset);
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        &self.text[start..end]
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = self.at_char(offset);
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.to_path_buf(),
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }

    /// Adds the dotted key (or the section of an unknown key) to a TOML parser
    /// message, found from the text before `offset`. An unknown field in a table
    /// header (`[upstreams]`) is an unknown section, named as such.
    fn name_key(&self, offset: usize, message: &str) -> String {
        let before = self.text.get(..offset).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or_default();
        if let (Some(header), Some(rest)) = (
            line.trim_start().strip_prefix('['),
            message.strip_prefix("unknown field `"),
        ) {
            let header = header.trim_start_matches('[');
            let header = header.split(']').next().unwrap_or(header).trim();
            let expected = rest.split_once('`').map_or("", |(_, tail)| tail);
            return match header.rsplit_once('.') {
                Some((parent, _)) => {
                    format!("unknown section `[{header}]`{expected} (in [{parent}])")
                }
                None => format!("unknown section `[{header}]`{expected}"),
            };
        }
        let section = before[..line_start]
            .lines()
            .rev()
            .find_map(|l| l.trim_start().strip_prefix('['))
            .and_then(|h| h.trim_start_matches('[').split(']').next())
            .map(str::trim);
        let is_key = |k: &&str| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.\"".contains(&b))
        };
        let key = before[line_start..]
            .trim_end()
            .strip_suffix('=')
            .map(str::trim)
            .filter(is_key);
        match (section, key) {
            (Some(s), Some(k)) => format!("`{s}.{k}`: {message}"),
            (None, Some(k)) => format!("`{k}`: {message}"),
            (Some(s), None) if message.starts_with("unknown field") => {
                format!("{message} (in [{s}])")
            }
            _ => message.to_owned(),
        }
    }

    pub(crate) fn error(&self, offset: usize, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::at(self.location(offset), kind)
    }

    pub(crate) fn invalid(
        &self,
        offset: usize,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        self.error(
            offset,
            ConfigErrorKind::Invalid {
                key: key.into(),
                reason: reason.into(),
            },
        )
    }
}

/// serde's Rust type names in a message, in words: `expected i64` → `expected an integer`.
fn plain_types(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("i64", "an integer"),
        ("u64", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u16", "a non-negative integer"),
        ("f64", "a number"),
    ] {
        out = out.replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PinSource;

    /// The example in the crate documentation.
    fn doc_example() -> String {
        let doc: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .collect();
        let start = doc
            .iter()
            .position(|l| l.trim() == "```toml")
            .expect("toml example")
            + 1;
        let len = doc[start..]
            .iter()
            .position(|l| l.trim() == "```")
            .expect("end of example");
        doc[start..start + len]
            .iter()
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect()
    }

    fn syntax_error(text: &str) -> ConfigError {
        let e = load_str(text, Path::new("/etc/hsmgate/hsmgate.toml")).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Syntax(_)), "{e}");
        e
    }

    #[test]
    fn documented_example_loads_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hsmgate.toml");
        std::fs::write(&path, doc_example()).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.source, path);
        assert_eq!(config.tls.certificate_chain, dir.path().join("cert.pem"));
        assert_eq!(
            config.pkcs11.as_ref().expect("single token").pin,
            PinSource::File(dir.path().join("pin.txt"))
        );
        assert_eq!(
            config.tls.key.location.line,
            config.tls.key.location.line.max(1)
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.admission, crate::Admission::default());
        let text = doc_example().replace("inline_signing = true", "inline_signing = false");
        std::fs::write(&path, text).unwrap();
        assert!(!load(&path).unwrap().admission.inline_signing);
    }

    #[test]
    fn a_pin_settings_wrong_value_is_not_repeated() {
        let with = |line: &str| doc_example().replace("[pkcs11]\n", &format!("[pkcs11]\n{line}\n"));
        assert_ne!(with("x"), doc_example());
        let e = syntax_error(&with("pin_env = 4711")).to_string();
        assert!(e.contains("invalid type") && !e.contains("4711"), "{e}");
        // Names are still given.
        let e = syntax_error(&with("pin_fil = \"pin.txt\"")).to_string();
        assert!(e.contains("unknown field `pin_fil`"), "{e}");
    }

    #[test]
    fn read_error_names_the_file_only() {
        let e = load(Path::new("/nonexistent/hsmgate.toml")).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Read(_)));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/hsmgate.toml: cannot read the config file: "),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_located_and_named() {
        let text = doc_example().replace("http2 = true", "http2 = true\nhttp3 = true");
        let line = text.lines().position(|l| l.starts_with("http3")).unwrap() + 1;
        let e = syntax_error(&text);
        assert_eq!((e.line, e.col), (line, 1), "{e}");
        assert!(e.to_string().contains("unknown field `http3`"), "{e}");
        assert!(e.to_string().contains("(in [listener])"), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_are_one_line() {
        let e = syntax_error("[[listener]]\naddress = \"127.0.0.1:1\"\nhttp2 = yes\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = syntax_error("[[listener]]\naddress = \"127.0.0.1:1\"\nhttp2 = 1\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.to_string().contains("`listener.http2`: invalid type")
                && e.to_string().contains("bool"),
            "{e}"
        );
        let e = syntax_error("[[listener]]\naddress = \"127.0.0.1:1\"\n");
        assert!(e.to_string().contains("missing field `tls`"), "{e}");
    }

    #[test]
    fn misspelled_top_level_section_is_an_unknown_section() {
        let text = doc_example().replace("[upstream]", "[upstreams]");
        let line = text.lines().position(|l| l == "[upstreams]").unwrap() + 1;
        let e = syntax_error(&text);
        assert_eq!(e.line, line, "{e}");
        let message = e.to_string();
        assert!(
            message.contains("unknown section `[upstreams]`, expected one of"),
            "{message}"
        );
        assert!(message.contains("`upstream`"), "{message}");
        assert!(!message.contains("(in ["), "{message}");
        let text = doc_example().replace("[admission]", "[admisson]");
        if text != doc_example() {
            let e = syntax_error(&text);
            assert!(
                e.to_string().contains("unknown section `[admisson]`"),
                "{e}"
            );
        }
    }

    #[test]
    fn wrong_value_types_are_named_in_words() {
        let text = doc_example().replace("sessions = 4", "sessions = \"four\"");
        assert_ne!(text, doc_example(), "the example sets sessions = 4");
        let e = syntax_error(&text);
        let message = e.to_string();
        assert!(message.contains("expected an integer"), "{message}");
        assert!(!message.contains("i64"), "{message}");
    }

    #[test]
    fn columns_count_characters() {
        let src = Source {
            text: "a = \"é\"\nbé = 1",
            file: Path::new("f"),
            dir: Path::new(""),
        };
        assert_eq!(src.location(12).to_string(), "f:2:3");
        assert_eq!(src.location(0).to_string(), "f:1:1");
    }
}
