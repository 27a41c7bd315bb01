//! nginx's tokenizer (`ngx_conf_read_token`), byte for byte: words, quoted
//! strings, `;`, `{`, `}` and `#` comments, each with its byte offset.
//!
//! Rules copied from nginx: a `#` starts a comment only at the start of a token;
//! an unquoted word ends at whitespace, `;` or `{` (not at `}`; `${` does not
//! end it); after a closing quote only whitespace, `;`, `{` or `)` may follow;
//! in every token `\"`, `\'` and `\\` stand for the character and `\t`, `\r`,
//! `\n` for the control character, while any other `\x` is kept as written.

/// One token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A word or a quoted string, unescaped.
    Word {
        /// The text, without quotes.
        text: String,
        /// Written in quotes.
        quoted: bool,
    },
    /// `;`
    Semi,
    /// `{`
    Open,
    /// `}`
    Close,
    /// The end of the text.
    Eof,
}

/// A tokenizer error: at byte `offset`, nginx's `unexpected {found}[, expecting …]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) offset: usize,
    pub(crate) found: String,
    pub(crate) expecting: Option<&'static str>,
}

/// Splits `src` into tokens, each with its byte offset; the last is [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let tok = match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b';' => Tok::Semi,
            b'{' => Tok::Open,
            b'}' => Tok::Close,
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Err(LexError {
                        offset: b.len(),
                        found: "end of file".into(),
                        expecting: Some("\";\" or \"}\""),
                    });
                }
                let text = unescape(&src[start + 1..i]);
                i += 1;
                let bad_follower = src[i..]
                    .chars()
                    .next()
                    .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n' | ';' | '{' | ')'));
                if let Some(c) = bad_follower {
                    // A quote inside a PIN ends the quoted string early: the character
                    // after it is the PIN's, so it is not shown then.
                    let found = match text.to_ascii_lowercase().contains("pin") {
                        true => "character after a quoted value that holds a PIN".into(),
                        false => format!("\"{c}\""),
                    };
                    return Err(LexError {
                        offset: i,
                        found,
                        expecting: None,
                    });
                }
                out.push((Tok::Word { text, quoted: true }, start));
                continue;
            }
            _ => {
                let mut dollar = false;
                while i < b.len() {
                    let c = b[i];
                    if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b';') || (c == b'{' && !dollar) {
                        break;
                    }
                    if c == b'\\' {
                        i += 1;
                    }
                    dollar = c == b'$';
                    i += 1;
                }
                i = i.min(b.len());
                let text = unescape(&src[start..i]);
                out.push((
                    Tok::Word {
                        text,
                        quoted: false,
                    },
                    start,
                ));
                continue;
            }
        };
        out.push((tok, start));
        i += 1;
    }
    out.push((Tok::Eof, b.len()));
    Ok(out)
}

/// nginx's unescaping of a token's raw text (see the module docs).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(e @ ('"' | '\'' | '\\')) => (out.push(e), chars.next()).1,
            Some('t') => (out.push('\t'), chars.next()).1,
            Some('r') => (out.push('\r'), chars.next()).1,
            Some('n') => (out.push('\n'), chars.next()).1,
            _ => (out.push('\\'), None).1,
        };
    }
    out
}

/// The byte offset in `raw` (a word as written, without its quotes) of the character at
/// byte `offset` of its [`unescape`]d text: an error about a variable after a `\n` points
/// at the variable as written.
pub(crate) fn raw_offset(raw: &str, offset: usize) -> usize {
    let (mut out, mut chars) = (0, raw.char_indices().peekable());
    while let Some((at, c)) = chars.next() {
        if out >= offset {
            return at;
        }
        let escaped = c == '\\'
            && chars
                .peek()
                .is_some_and(|(_, e)| matches!(e, '"' | '\'' | '\\' | 't' | 'r' | 'n'));
        if escaped {
            chars.next();
            out += 1;
        } else {
            out += c.len_utf8();
        }
    }
    raw.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_in_the_unescaped_text_map_back_to_the_text_as_written() {
        let raw = r#"a\nb\"c $x"#;
        let text = unescape(raw);
        let at = text.find('$').expect("$");
        assert_eq!(&raw[raw_offset(raw, at)..], "$x");
        assert_eq!(raw_offset("é$y", 2), 2);
        assert_eq!(raw_offset("ab", 0), 0);
    }

    fn words(s: &str) -> Vec<String> {
        tokenize(s)
            .unwrap()
            .into_iter()
            .map(|(t, _)| match t {
                Tok::Word { text, .. } => text,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn words_quotes_comments_and_escapes() {
        assert_eq!(
            words("a b;# c\n d{e}#x\n'f g' \"h\\\"i\\n\"{}"),
            [
                "a", "b", "Semi", "d", "Open", "e}#x", "f g", "h\"i\n", "Open", "Close", "Eof"
            ]
        );
        assert_eq!(words("a${b}c;"), ["a${b}c", "Semi", "Eof"]);
        assert_eq!(words(r"a\x\;b;"), [r"a\x\;b", "Semi", "Eof"]);
        let t = tokenize("ab  'c';").unwrap();
        assert_eq!(t.iter().map(|(_, o)| *o).collect::<Vec<_>>(), [0, 4, 7, 8]);
    }

    #[test]
    fn errors() {
        let e = tokenize("a \"b").unwrap_err();
        assert_eq!((e.offset, e.found.as_str()), (4, "end of file"));
        let e = tokenize("a \"b\"c;").unwrap_err();
        assert_eq!((e.offset, e.found.as_str()), (5, "\"c\""));
        let e = tokenize("k \"pkcs11:t?pin-value=12\"34\";").unwrap_err();
        assert_eq!(e.offset, 25);
        assert!(!e.found.contains('3'), "{}", e.found);
    }
}
