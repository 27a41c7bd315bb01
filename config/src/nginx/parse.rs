//! nginx syntax into a tree of [`Directive`]s, with `include` expanded where it
//! stands (nginx does the same: an included file's directives belong to the
//! block that includes it).
//!
//! `include` paths are resolved like nginx's: relative ones against the
//! directory of the main config file (nginx's `conf_prefix`). A pattern with
//! `*`, `?` or `[` is a glob: matches are read in sorted order, names starting
//! with `.` are not matched by wildcards (glob(3)), and no match is fine. A
//! plain path that cannot be read is an error, and so is a file that includes
//! itself, directly or not (nginx itself crashes on that).

use std::path::{Path, PathBuf};

use super::lexer::{Tok, tokenize};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::model::Location;

/// A file read while loading an nginx configuration, for `hsmgate -T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as resolved (or `command line` for `-g` directives).
    pub path: PathBuf,
    /// The full text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            path,
            text,
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub(crate) fn location(&self, offset: usize) -> Location {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let end = offset.min(self.text.len()).max(start);
        let col = self
            .text
            .get(start..end)
            .map_or(end - start, |t| t.chars().count());
        Location {
            file: self.path.clone(),
            line,
            col: col + 1,
        }
    }
}

/// A position: file index into [`Sources::files`] and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) file: usize,
    pub(crate) offset: usize,
}

/// One argument of a directive.
#[derive(Debug, Clone)]
pub(crate) struct Arg {
    pub(crate) value: String,
    pub(crate) at: Pos,
    /// Written in quotes (its text then starts one byte after `at`).
    pub(crate) quoted: bool,
}

impl Arg {
    /// The argument from byte `skip` of its value on (what follows `http://` in a
    /// `proxy_pass`, `if=` in an `access_log`), placed where it is written, so that an
    /// error in it points there.
    pub(crate) fn tail(&self, skip: usize) -> Arg {
        Arg {
            value: self.value[skip..].to_owned(),
            at: Pos {
                offset: self.at.offset + skip,
                ..self.at
            },
            quoted: self.quoted,
        }
    }
}

/// `name arg…;` or `name arg… { … }`.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub(crate) name: String,
    pub(crate) at: Pos,
    pub(crate) args: Vec<Arg>,
    pub(crate) block: Option<Vec<Directive>>,
}

/// Every file read, in order.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub(crate) files: Vec<SourceFile>,
}

impl Sources {
    pub(crate) fn location(&self, pos: Pos) -> Location {
        self.files[pos.file].location(pos.offset)
    }

    pub(crate) fn error(&self, pos: Pos, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::at(self.location(pos), kind)
    }
}

/// Reads files and expands includes.
pub(crate) struct Parser<'a> {
    pub(crate) sources: Sources,
    conf_prefix: &'a Path,
    stack: Vec<PathBuf>,
    /// Blocks open around the tokens being read (across includes).
    depth: usize,
}

/// The deepest blocks may nest (`http { server { location { location { … } } } }`):
/// far more than any configuration needs, and few enough that reading and building
/// them (both recursive) stay well within a thread's stack, also on a reload's.
pub(crate) const MAX_DEPTH: usize = 32;

impl<'a> Parser<'a> {
    pub(crate) fn new(conf_prefix: &'a Path) -> Self {
        Self {
            sources: Sources::default(),
            conf_prefix,
            stack: Vec::new(),
            depth: 0,
        }
    }

    /// Parses `text` as the file `path` (already read).
    pub(crate) fn parse_text(
        &mut self,
        path: PathBuf,
        text: String,
    ) -> Result<Vec<Directive>, ConfigError> {
        let file = self.sources.files.len();
        self.sources.files.push(SourceFile::new(path.clone(), text));
        let toks = tokenize(&self.sources.files[file].text).map_err(|e| {
            let kind = ConfigErrorKind::Unexpected {
                directive: None,
                found: e.found,
                expecting: e.expecting,
            };
            self.sources.error(
                Pos {
                    file,
                    offset: e.offset,
                },
                kind,
            )
        })?;
        self.stack.push(path);
        let mut i = 0;
        let list = self.list(file, &toks, &mut i, false);
        self.stack.pop();
        list
    }

    fn list(
        &mut self,
        file: usize,
        toks: &[(Tok, usize)],
        i: &mut usize,
        nested: bool,
    ) -> Result<Vec<Directive>, ConfigError> {
        let mut out = Vec::new();
        let mut words: Vec<Arg> = Vec::new();
        loop {
            let (tok, offset) = &toks[*i];
            let at = Pos {
                file,
                offset: *offset,
            };
            *i += 1;
            let unexpected = |found: &str, expecting, words: &[Arg]| {
                let kind = ConfigErrorKind::Unexpected {
                    directive: words.first().map(|w| w.value.clone()),
                    found: found.into(),
                    expecting,
                };
                self.sources.error(at, kind)
            };
            match tok {
                Tok::Word { text, quoted } => words.push(Arg {
                    value: text.clone(),
                    at,
                    quoted: *quoted,
                }),
                Tok::Semi if words.is_empty() => return Err(unexpected("\";\"", None, &words)),
                Tok::Open if words.is_empty() => return Err(unexpected("\"{\"", None, &words)),
                Tok::Semi => {
                    let d = directive(std::mem::take(&mut words), None);
                    if d.name == "include" {
                        out.extend(self.include(&d)?);
                    } else {
                        out.push(d);
                    }
                }
                Tok::Open if self.depth >= MAX_DEPTH => {
                    let kind = ConfigErrorKind::Invalid {
                        key: words.first().map_or_else(String::new, |w| w.value.clone()),
                        reason: format!("blocks nested more than {MAX_DEPTH} deep"),
                    };
                    return Err(self.sources.error(at, kind));
                }
                Tok::Open => {
                    self.depth += 1;
                    let block = self.list(file, toks, i, true);
                    self.depth -= 1;
                    out.push(directive(std::mem::take(&mut words), Some(block?)));
                }
                Tok::Close if !words.is_empty() || !nested => {
                    return Err(unexpected("\"}\"", None, &words));
                }
                Tok::Close => return Ok(out),
                Tok::Eof if !words.is_empty() => {
                    return Err(unexpected("end of file", Some("\";\" or \"}\""), &words));
                }
                Tok::Eof if nested => return Err(unexpected("end of file", Some("\"}\""), &words)),
                Tok::Eof => return Ok(out),
            }
        }
    }

    fn include(&mut self, d: &Directive) -> Result<Vec<Directive>, ConfigError> {
        let [arg] = d.args.as_slice() else {
            return Err(self.sources.error(
                d.at,
                ConfigErrorKind::Arguments {
                    directive: d.name.clone(),
                    reason: "invalid number of arguments",
                },
            ));
        };
        let pattern = self.conf_prefix.join(&arg.value);
        let paths = if arg.value.contains(['*', '?', '[']) {
            let options = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..glob::MatchOptions::new()
            };
            let invalid = |reason: String| ConfigErrorKind::Invalid {
                key: d.name.clone(),
                reason,
            };
            let matches = glob::glob_with(&pattern.to_string_lossy(), options)
                .map_err(|e| self.sources.error(arg.at, invalid(e.to_string())))?;
            let mut paths: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
            paths.sort();
            paths
        } else {
            vec![pattern]
        };
        let mut out = Vec::new();
        for path in paths {
            if self.stack.contains(&path) {
                let mut chain = self.stack.clone();
                chain.push(path);
                let kind = ConfigErrorKind::IncludeLoop {
                    directive: d.name.clone(),
                    chain,
                };
                return Err(self.sources.error(d.at, kind));
            }
            let text = read_text(&path).map_err(|source| {
                let kind = ConfigErrorKind::Include {
                    directive: d.name.clone(),
                    path: path.clone(),
                    source,
                };
                self.sources.error(d.at, kind)
            })?;
            out.extend(self.parse_text(path, text)?);
        }
        Ok(out)
    }
}

/// The largest configuration file read (a `geo` table of a million networks is about
/// 30 MB).
pub(crate) const MAX_FILE: u64 = 128 << 20;

/// A configuration file's text. nginx reads bytes: a file in another encoding than
/// UTF-8 (a Latin-1 `# café` comment) loads, each byte that is not UTF-8 read as
/// U+FFFD (`�`), which changes nothing in a comment.
///
/// At most [`MAX_FILE`] bytes are read: a larger file, or an endless one (an `include`
/// of `/dev/zero`), is an error instead of memory taken until the process ends.
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB: not read", MAX_FILE >> 20),
        ));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn directive(mut words: Vec<Arg>, block: Option<Vec<Directive>>) -> Directive {
    let name = words.remove(0);
    Directive {
        name: name.value,
        at: name.at,
        args: words,
        block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_an_error_not_all_memory() {
        let e = read_text(Path::new("/dev/zero")).expect_err("endless");
        assert!(e.to_string().contains("larger than 128 MiB"), "{e}");
    }

    fn parse(text: &str) -> Result<Vec<Directive>, ConfigError> {
        Parser::new(Path::new("/nonexistent")).parse_text("t.conf".into(), text.into())
    }

    #[test]
    fn tree_and_positions() {
        let d = parse("a 1 '2';\nb {\n  c;\n  d { }\n}\n").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].name.as_str(), d[0].args.len()), ("a", 2));
        assert!(d[0].args[1].quoted);
        let inner = d[1].block.as_ref().unwrap();
        assert_eq!(inner[1].name, "d");
    }

    #[test]
    fn nginx_errors() {
        let e = parse("a {\n b 1\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "t.conf:3:1: unexpected \"}\"");
        assert_eq!(e.kind.key(), Some("b"));
        let e = parse("a {\n b;\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:3:1: unexpected end of file, expecting \"}\""
        );
        let e = parse("a;\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "t.conf:2:1: unexpected \"}\"");
        let e = parse("a 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:1:4: unexpected end of file, expecting \";\" or \"}\""
        );
        assert_eq!(
            parse(" ;").unwrap_err().to_string(),
            "t.conf:1:2: unexpected \";\""
        );
        let e = parse("include /nonexistent/x.conf;").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.conf:1:1: open() \"/nonexistent/x.conf\" failed")
        );
        assert!(parse("include /nonexistent/*.conf;").unwrap().is_empty());
    }
}
