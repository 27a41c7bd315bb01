//! Strings with `$variables` (`proxy_set_header`, `add_header`, `return`,
//! `log_format`), parsed once into a [`Template`] whose variables are all ones
//! hsmgate provides.

use std::fmt;

/// Variables hsmgate provides, besides those of [`SUPPORTED_PREFIXES`]. `$bytes_sent`
/// is the body's bytes plus the response head's size as hyper writes it on HTTP/1.x
/// (`reqlog::head_bytes` in the proxy: a chunked body's framing and HTTP/2's frames are
/// not counted).
pub const SUPPORTED_VARIABLES: &[&str] = &[
    "bytes_sent",
    "is_args",
    "server_addr",
    "https",
    "server_protocol",
    "request_id",
    "msec",
    "time_iso8601",
    "upstream_status",
    "upstream_response_time",
    "upstream_connect_time",
    "request_length",
    "ssl_server_name",
    "hostname",
    "host",
    "http_host",
    "remote_addr",
    "binary_remote_addr",
    "limit_req_status",
    "limit_conn_status",
    "remote_port",
    "proxy_add_x_forwarded_for",
    "scheme",
    "request_uri",
    "uri",
    "args",
    "query_string",
    "server_name",
    "server_port",
    "request_method",
    "proxy_host",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_client_verify",
    "ssl_client_s_dn",
    "ssl_client_escaped_cert",
    "status",
    "body_bytes_sent",
    "request",
    "time_local",
    "http_referer",
    "http_user_agent",
    "request_time",
    "upstream_addr",
    "connection",
    "remote_user",
    "upstream_cache_status",
    "realip_remote_addr",
    "realip_remote_port",
    "proxy_protocol_addr",
    "proxy_protocol_port",
    "proxy_protocol_server_addr",
    "proxy_protocol_server_port",
    "connection_requests",
    "pipe",
    "gzip_ratio",
    "request_completion",
    "document_uri",
    "content_type",
    "content_length",
    "pid",
    "http2",
    "ssl_session_reused",
    "ssl_curve",
    "ssl_early_data",
    "ssl_client_i_dn",
    "ssl_client_serial",
    "ssl_client_fingerprint",
    "ssl_client_raw_cert",
    "ssl_client_v_start",
    "ssl_client_v_end",
    "ssl_client_v_remain",
    "upstream_header_time",
    "upstream_response_length",
];

/// Families of variables hsmgate provides: `$http_NAME` (a request header),
/// `$sent_http_NAME` (a response header; in `log_format`), `$upstream_http_NAME` (the
/// upstream's response header), `$arg_NAME` (a query argument), `$cookie_NAME` (a
/// cookie), `$upstream_cookie_NAME` (a cookie the upstream set).
pub const SUPPORTED_PREFIXES: &[&str] = &[
    "http_",
    "sent_http_",
    "upstream_http_",
    "arg_",
    "cookie_",
    "upstream_cookie_",
];

/// A parsed string: literal text and variables, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// The pieces.
    pub parts: Vec<TemplatePart>,
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text as written.
    Literal(String),
    /// A variable name without `$` (e.g. `host`, `http_x_request_id`).
    Var(String),
}

/// Why a string is not a valid template, at byte `offset` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// `$` not followed by a name, or `${` without `}`.
    InvalidName(usize),
    /// A variable hsmgate does not provide.
    Unknown(usize, String),
}

impl Template {
    /// Parses `text`, checking every variable against [`SUPPORTED_VARIABLES`].
    pub(crate) fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, &|_| false)
    }

    /// [`Template::parse`], also accepting the (lower-case) names `extra` knows (the
    /// variables `map` blocks define).
    pub(crate) fn parse_with(
        text: &str,
        extra: &dyn Fn(&str) -> bool,
    ) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let offset = text.len() - rest.len() + i;
            let after = &rest[i + 1..];
            let (name, used) = match after.strip_prefix('{') {
                Some(inner) => {
                    let end = inner.find('}').ok_or(TemplateError::InvalidName(offset))?;
                    (&inner[..end], end + 2)
                }
                // `$1`: a regex capture is one digit (`$10` is `$1` then `0`), as nginx
                // reads it.
                None if after.starts_with(|c: char| c.is_ascii_digit()) => (&after[..1], 1),
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], end)
                }
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(TemplateError::InvalidName(offset));
            }
            let lower = name.to_ascii_lowercase();
            let known = SUPPORTED_VARIABLES.contains(&lower.as_str())
                || SUPPORTED_PREFIXES
                    .iter()
                    .any(|p| lower.strip_prefix(p).is_some_and(|n| !n.is_empty()))
                || extra(&lower);
            if !known {
                return Err(TemplateError::Unknown(offset, name.to_owned()));
            }
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Var(lower));
            rest = &after[used..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// The template as text with no variables, if it has none.
    pub fn as_literal(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|p| match p {
                TemplatePart::Literal(s) => Some(s.as_str()),
                TemplatePart::Var(_) => None,
            })
            .collect()
    }
}

impl fmt::Display for Template {
    /// Writes the template back in nginx syntax (`${name}` form for variables).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                TemplatePart::Literal(s) => f.write_str(s)?,
                TemplatePart::Var(v) => write!(f, "${{{v}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variables() {
        let t = Template::parse("https://$host${request_uri}x $http_x_id").unwrap();
        assert_eq!(
            t.parts,
            [
                TemplatePart::Literal("https://".into()),
                TemplatePart::Var("host".into()),
                TemplatePart::Var("request_uri".into()),
                TemplatePart::Literal("x ".into()),
                TemplatePart::Var("http_x_id".into()),
            ]
        );
        assert_eq!(t.to_string(), "https://${host}${request_uri}x ${http_x_id}");
        assert_eq!(
            Template::parse("max-age=1")
                .unwrap()
                .as_literal()
                .as_deref(),
            Some("max-age=1")
        );
        assert_eq!(Template::parse("").unwrap().parts, []);
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        assert_eq!(
            Template::parse("a $foo_bar"),
            Err(TemplateError::Unknown(2, "foo_bar".into()))
        );
        assert_eq!(Template::parse("a $"), Err(TemplateError::InvalidName(2)));
        assert_eq!(
            Template::parse("${host"),
            Err(TemplateError::InvalidName(0))
        );
        assert!(matches!(
            Template::parse("$http_"),
            Err(TemplateError::Unknown(..))
        ));
        for unsupported in ["$arg_", "$cookie_"] {
            assert!(
                matches!(
                    Template::parse(unsupported),
                    Err(TemplateError::Unknown(..))
                ),
                "{unsupported}"
            );
        }
        for supported in [
            "$is_args$server_addr$https$server_protocol",
            "$request_id $msec $time_iso8601 $request_length $hostname $bytes_sent",
            "$upstream_status $upstream_response_time $upstream_connect_time",
            "$ssl_server_name",
            "$arg_page $cookie_session $http_x_y $sent_http_content_type",
        ] {
            assert!(Template::parse(supported).is_ok(), "{supported}");
        }
    }
}
