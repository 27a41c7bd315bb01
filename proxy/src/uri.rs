//! What nginx does to a request's `Host` and path before routing: the `Host` check
//! (400) and the path normalisation location matching works on.

/// nginx's `Host` check (`ngx_http_validate_host`): no `/`, `\\`, NUL, `..`, no
/// leading dot.
pub(crate) fn valid_host(host: &str) -> bool {
    // nginx's `ngx_http_validate_host`: no separators, no control bytes or spaces, and
    // not empty (RFC 9112 §3.2: an invalid Host is a 400).
    let bad_char = host
        .bytes()
        .any(|b| matches!(b, b'/' | b'\\' | 0..=b' ' | 0x7f));
    !(host.is_empty() || bad_char || host.contains("..") || host.starts_with('.'))
}

/// nginx's URI normalisation for matching: `%XX` decoded, `//` merged (unless
/// `merge_slashes off`: `merge` false), `.` and `..` resolved. None (400, as nginx) when
/// `..` climbs above the root, a `%` is not followed by two hex digits, or a byte decodes
/// to NUL.
pub(crate) fn normalize(path: &str, merge: bool) -> Option<String> {
    // Most paths are normal already (one copy, where the full walk makes six).
    if already_normal(path) {
        return Some(path.to_owned());
    }
    normalize_walk(path, merge)
}

/// A path [`normalize`] would give back unchanged: from the root, with no `%`, no empty
/// segment but a trailing slash's, no `.` or `..` segment.
fn already_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

fn normalize_walk(path: &str, merge: bool) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            match u8::from_str_radix(hex, 16).ok()? {
                0 => return None,
                b => decoded.push(b),
            }
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    // A path whose bytes are not UTF-8 (a Latin-1 `%E9`) is served, as nginx serves it:
    // `$uri` holds `�` for such bytes, and a `proxy_pass` without a URI part sends the
    // request target as it came.
    let decoded = match String::from_utf8(decoded) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            // An empty segment between two slashes is kept unmerged; the last one is
            // the trailing slash.
            "" if !merge && i + 1 < parts.len() => segments.push(""),
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = format!("/{}", segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_nginx_rejects() {
        assert!(valid_host("www.example.test:443"));
        assert!(valid_host("[::1]:443"));
        for bad in [
            "a/b", "a..b", ".a", "a\\b", "", "a b", "a\tb", "a,\x7fb", "a\nb",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// The shortcut for paths already normal gives what the full walk gives.
        #[test]
        fn the_shortcut_agrees_with_the_walk(
            path in proptest::collection::vec(proptest::sample::select(vec!["/", "a", ".", "..", "%41", "%", "b/"]), 0..8),
            merge in proptest::bool::ANY,
        ) {
            let path = path.concat();
            if already_normal(&path) {
                proptest::prop_assert_eq!(Some(path.clone()), normalize_walk(&path, merge));
            }
        }
    }

    #[test]
    fn normalizes_like_nginx() {
        assert_eq!(normalize("/a//b/./c/../d", true).as_deref(), Some("/a/b/d"));
        assert_eq!(normalize("/%61pi/", true).as_deref(), Some("/api/"));
        assert_eq!(normalize("/", true).as_deref(), Some("/"));
        assert_eq!(normalize("/a/..", true), Some("/".into()));
        assert_eq!(normalize("/..", true), None);
        // nginx: 400 for a `%` without two hex digits, and for an encoded NUL.
        assert_eq!(normalize("/%zz", true), None);
        assert_eq!(normalize("/a%2", true), None);
        assert_eq!(normalize("/a%00b", true), None);
        // Bytes that are not UTF-8 are not a 400 (nginx passes them on).
        assert_eq!(normalize("/caf%E9", true).as_deref(), Some("/caf\u{FFFD}"));
        // `merge_slashes off`, as Debian's nginx 1.22 gave `$uri`.
        for (path, uri) in [
            ("/a//b", "/a//b"),
            ("//x/y", "//x/y"),
            ("/a//../b", "/a/b"),
            ("/a///./c", "/a///c"),
            ("/a//b/", "/a//b/"),
            ("/a/b//", "/a/b//"),
            ("//", "//"),
            ("/", "/"),
            ("/a/..", "/"),
        ] {
            assert_eq!(normalize(path, false).as_deref(), Some(uri), "{path}");
        }
    }
}
