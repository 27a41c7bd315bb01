//! The `/status` page for browsers: one self-contained HTML file (inline CSS and
//! JavaScript, no external assets) that fetches `status?format=json` every two seconds
//! and draws each key, its admission state and its members.

/// The page, served as is.
pub(crate) const PAGE: &str = include_str!("status_page.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in ["<link", "src=", "http://", "https://", "@import"] {
            assert!(!PAGE.contains(external), "the page has {external:?}");
        }
        assert!(PAGE.contains("status?format=json"));
    }
}
