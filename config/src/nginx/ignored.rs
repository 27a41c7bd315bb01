//! Directives accepted and ignored with a [`ConfigWarning`](crate::ConfigWarning),
//! each with the reason it is safe (the table is repeated in the module docs of
//! [`crate::nginx`]).

/// Exact names, and why ignoring each is safe.
const IGNORED: &[(&str, &str)] = &[
    ("sendfile", "hsmgate serves no files"),
    (
        "master_process",
        "hsmgate is one multi-threaded process (no master and workers)",
    ),
    (
        "daemon",
        "hsmgate stays in the foreground (run it under systemd, Type=notify)",
    ),
    (
        "tcp_nopush",
        "socket tuning for sendfile; hsmgate sets its own socket options",
    ),
    ("tcp_nodelay", "hsmgate always sets TCP_NODELAY"),
    (
        "rewrite_log",
        "each rewrite is logged at debug level (RUST_LOG=hsmgate_proxy=debug)",
    ),
    ("types_hash_max_size", "nginx hash-table sizing"),
    ("proxy_headers_hash_max_size", "nginx hash-table sizing"),
    ("proxy_headers_hash_bucket_size", "nginx hash-table sizing"),
    ("variables_hash_max_size", "nginx hash-table sizing"),
    ("variables_hash_bucket_size", "nginx hash-table sizing"),
    ("map_hash_max_size", "nginx hash-table sizing"),
    ("map_hash_bucket_size", "nginx hash-table sizing"),
    (
        "ssl_buffer_size",
        "TLS record sizing; rustls sizes its own records",
    ),
    (
        "ssl_early_data",
        "0-RTT data is not accepted (as nginx's default `off`): clients send their request \
         after the handshake",
    ),
    (
        "reset_timedout_connection",
        "connection teardown tuning; hsmgate closes timed-out connections itself",
    ),
    ("lingering_close", "connection teardown tuning"),
    ("lingering_time", "connection teardown tuning"),
    ("lingering_timeout", "connection teardown tuning"),
    (
        "msie_padding",
        "a workaround for old Internet Explorer error pages",
    ),
    (
        "msie_refresh",
        "a workaround for old Internet Explorer redirects",
    ),
    (
        "keepalive_disable",
        "a workaround for old browsers' keep-alive (MSIE 6, Safari); keep-alive stays on",
    ),
    (
        "proxy_max_temp_file_size",
        "responses are streamed to the client, never buffered to a file",
    ),
    (
        "proxy_temp_file_write_size",
        "responses are streamed to the client, never buffered to a file",
    ),
    ("output_buffers", "response buffering; hsmgate streams"),
    ("postpone_output", "response buffering; hsmgate streams"),
    (
        "http2_push_preload",
        "HTTP/2 server push is not sent (browsers have dropped it)",
    ),
    (
        "http2_push",
        "HTTP/2 server push is not sent (browsers have dropped it)",
    ),
    ("log_subrequest", "hsmgate makes no subrequests"),
    (
        "proxy_socket_keepalive",
        "TCP keep-alive probes on upstream sockets are not set",
    ),
    (
        "proxy_ignore_headers",
        "hsmgate neither caches nor acts on X-Accel-* headers (they are hidden from \
         clients, as nginx's defaults hide them)",
    ),
    (
        "etag",
        "ETags are for static files, which hsmgate does not serve",
    ),
    (
        "if_modified_since",
        "conditional requests are for static files; the upstream answers them",
    ),
    ("types_hash_bucket_size", "nginx hash-table sizing"),
    ("server_names_hash_bucket_size", "nginx hash-table sizing"),
    ("server_names_hash_max_size", "nginx hash-table sizing"),
    (
        "server_tokens",
        "hsmgate does not add a version to responses",
    ),
    (
        "charset",
        "responses are passed as the upstream sent them (no charset added or converted)",
    ),
    (
        "charset_types",
        "responses are passed as the upstream sent them (no charset added or converted)",
    ),
    (
        "source_charset",
        "responses are passed as the upstream sent them (no charset added or converted)",
    ),
    (
        "proxy_no_cache",
        "NOT CACHED: hsmgate has no response cache; every request goes to the upstream",
    ),
    (
        "alias",
        "hsmgate serves no files: a location that would serve them answers 404 (it is warned \
         about)",
    ),
    (
        "autoindex",
        "hsmgate serves no files, nor lists directories",
    ),
    (
        "autoindex_exact_size",
        "hsmgate serves no files, nor lists directories",
    ),
    (
        "autoindex_format",
        "hsmgate serves no files, nor lists directories",
    ),
    (
        "autoindex_localtime",
        "hsmgate serves no files, nor lists directories",
    ),
    (
        "proxy_force_ranges",
        "range requests are passed to the upstream, which answers them (or not) itself",
    ),
    (
        "client_body_in_file_only",
        "request bodies are spooled to a temporary file only when large, and never kept",
    ),
    ("ssl_dhparam", "rustls has no DHE suites"),
    (
        "resolver",
        "upstream and OCSP responder names are resolved with the system resolver",
    ),
    (
        "resolver_timeout",
        "upstream names are resolved with the system resolver",
    ),
    (
        "proxy_buffering",
        "hsmgate streams responses without disk buffering",
    ),
    (
        "proxy_buffers",
        "hsmgate streams responses without disk buffering",
    ),
    (
        "proxy_buffer_size",
        "hsmgate streams responses without disk buffering",
    ),
    (
        "proxy_busy_buffers_size",
        "hsmgate streams responses without disk buffering",
    ),
    (
        "multi_accept",
        "event-loop tuning; tokio accepts in its own way",
    ),
    ("use", "event-loop tuning; tokio chooses epoll"),
    ("accept_mutex", "event-loop tuning; hsmgate is one process"),
    (
        "worker_rlimit_nofile",
        "raise the file limit with systemd/ulimit instead",
    ),
    // In an `upstream` block (the client side's are settings, in scope.rs).
    (
        "keepalive_requests",
        "a kept upstream connection is not closed after a request count",
    ),
    // Process tuning of nginx's master and workers (main context).
    (
        "pcre_jit",
        "regexes are Rust's regex crate, compiled once at load",
    ),
    (
        "worker_cpu_affinity",
        "hsmgate is one process; pin it with systemd's CPUAffinity= or taskset",
    ),
    (
        "worker_priority",
        "hsmgate is one process; set its priority with systemd's Nice= or nice",
    ),
    (
        "worker_rlimit_core",
        "set the core size limit with systemd's LimitCORE= or ulimit",
    ),
    (
        "working_directory",
        "hsmgate is one process; systemd's WorkingDirectory= sets its directory",
    ),
    (
        "timer_resolution",
        "event-loop tuning; tokio keeps its own timers",
    ),
    ("thread_pool", "hsmgate does no file I/O on thread pools"),
    ("lock_file", "hsmgate is one process (no accept mutex)"),
    (
        "accept_mutex_delay",
        "event-loop tuning; hsmgate is one process",
    ),
    ("debug_points", "a debugging aid of nginx's"),
    (
        "debug_connection",
        "raise the log level with RUST_LOG instead",
    ),
    // File serving and its I/O: hsmgate serves no files.
    ("sendfile_max_chunk", "hsmgate serves no files"),
    ("aio", "hsmgate serves no files"),
    ("aio_write", "hsmgate serves no files"),
    ("directio", "hsmgate serves no files"),
    ("directio_alignment", "hsmgate serves no files"),
    ("read_ahead", "hsmgate serves no files"),
    ("disable_symlinks", "hsmgate serves no files"),
    (
        "open_log_file_cache",
        "access log files are opened once, at load and on reopen",
    ),
    (
        "send_lowat",
        "socket tuning (SO_SNDLOWAT, which Linux does not support anyway)",
    ),
    (
        "client_body_in_single_buffer",
        "request bodies are kept as read (in memory up to client_body_buffer_size)",
    ),
    (
        "subrequest_output_buffer_size",
        "hsmgate makes no subrequests",
    ),
    (
        "uninitialized_variable_warn",
        "variables hsmgate does not know are refused at load, and those it knows are \
         always set (empty when they have no value)",
    ),
    (
        "chunked_transfer_encoding",
        "HTTP/1.1 responses of unknown length are sent chunked, as nginx's default `on`",
    ),
    (
        "max_ranges",
        "range requests are passed to the upstream, which answers them",
    ),
    (
        "proxy_ignore_client_abort",
        "the upstream request is given up when the client goes away, as nginx's default \
         `off`",
    ),
    (
        "proxy_ssl_conf_command",
        "OpenSSL configuration commands do not apply to rustls; proxy_ssl_protocols and \
         proxy_ssl_ciphers set what rustls negotiates",
    ),
    // Directives nginx 1.19.7 made obsolete (nginx warns about them too).
    (
        "http2_idle_timeout",
        "obsolete since nginx 1.19.7: keepalive_timeout applies",
    ),
    (
        "http2_max_requests",
        "obsolete since nginx 1.19.7: keepalive_requests applies",
    ),
    (
        "http2_recv_timeout",
        "obsolete since nginx 1.19.7: client_header_timeout applies",
    ),
    (
        "http2_max_field_size",
        "obsolete since nginx 1.19.7: large_client_header_buffers applies",
    ),
    (
        "http2_max_header_size",
        "obsolete since nginx 1.19.7: large_client_header_buffers applies",
    ),
    (
        "http2_chunk_size",
        "HTTP/2 frames are sized by the h2 crate",
    ),
    (
        "http2_body_preread_size",
        "HTTP/2 flow control is the h2 crate's",
    ),
    (
        "http2_recv_buffer_size",
        "HTTP/2 buffers are the h2 crate's",
    ),
    ("http2_pool_size", "obsolete since nginx 1.19.7"),
    ("http2_streams_index_size", "obsolete since nginx 1.19.7"),
    (
        "load_module",
        "modules are built into hsmgate (the ones it implements need no loading)",
    ),
    (
        "index",
        "hsmgate serves no files: it matters only where nginx would serve them, and such \
         locations are warned about",
    ),
    ("log_not_found", "hsmgate serves no files"),
    (
        "server_name_in_redirect",
        "redirects hsmgate makes use the Host the client sent",
    ),
    ("open_file_cache", "hsmgate serves no files"),
    ("open_file_cache_valid", "hsmgate serves no files"),
    ("open_file_cache_min_uses", "hsmgate serves no files"),
    ("open_file_cache_errors", "hsmgate serves no files"),
    (
        "client_body_temp_path",
        "a request body over client_body_buffer_size goes to an unlinked file in $TMPDIR",
    ),
    (
        "proxy_temp_path",
        "hsmgate writes no temporary files: request and response bodies are streamed",
    ),
    (
        "fastcgi_temp_path",
        "hsmgate writes no temporary files: request and response bodies are streamed",
    ),
    (
        "uwsgi_temp_path",
        "hsmgate writes no temporary files: request and response bodies are streamed",
    ),
    (
        "scgi_temp_path",
        "hsmgate writes no temporary files: request and response bodies are streamed",
    ),
    (
        "proxy_limit_rate",
        "NOT ENFORCED: the upstream's answer is read as fast as the client takes it \
         (`limit_rate` limits that)",
    ),
];

/// Prefixes: every directive starting with one is ignored.
const IGNORED_PREFIXES: &[(&str, &str)] = &[
    (
        "gzip",
        "responses are passed uncompressed-as-received (no gzip added)",
    ),
    (
        "proxy_cache",
        "NOT CACHED: hsmgate has no response cache; every request goes to the upstream \
         (no stale answers when it is down)",
    ),
];

/// Directives refused with a reason: ignoring them would change which answer a
/// request gets.
const REFUSED: &[(&str, &str)] = &[
    (
        "try_files",
        "\"try_files\" is not supported: hsmgate serves no files, and the file checks decide \
         where nginx sends a request; replace it with \"proxy_pass\" (which forwards every \
         request) or \"return\"",
    ),
    (
        "if",
        "\"if\" is supported in \"server\" blocks (`if (…) { return …; }`) and \"location\" \
         blocks only",
    ),
    (
        "ssl_ocsp",
        "\"ssl_ocsp\" is not supported: client certificates are not checked with OCSP, and \
         ignoring it would accept revoked ones",
    ),
    (
        "ssl_password_file",
        "\"ssl_password_file\" is not supported: keep the key in the HSM (an \
         engine:pkcs11: or pkcs11: URI), or give an unencrypted PEM file readable by \
         hsmgate only",
    ),
    (
        "grpc_pass",
        "\"grpc_pass\" is not supported: hsmgate proxies HTTP/1.1 to upstreams \
         (proxy_pass)",
    ),
    (
        "fastcgi_pass",
        "\"fastcgi_pass\" is not supported: hsmgate proxies HTTP/1.1 to upstreams \
         (proxy_pass)",
    ),
    (
        "uwsgi_pass",
        "\"uwsgi_pass\" is not supported: hsmgate proxies HTTP/1.1 to upstreams \
         (proxy_pass)",
    ),
    (
        "scgi_pass",
        "\"scgi_pass\" is not supported: hsmgate proxies HTTP/1.1 to upstreams \
         (proxy_pass)",
    ),
    (
        "memcached_pass",
        "\"memcached_pass\" is not supported: hsmgate proxies HTTP/1.1 to upstreams \
         (proxy_pass)",
    ),
    (
        "proxy_bind",
        "\"proxy_bind\" is not supported: upstream connections come from the address the \
         system chooses, and an upstream that allows only the bound address would refuse them",
    ),
    (
        "proxy_ssl_crl",
        "\"proxy_ssl_crl\" is not supported: upstream certificates are not checked against \
         a revocation list, and ignoring it would accept revoked ones",
    ),
    (
        "proxy_ssl_password_file",
        "\"proxy_ssl_password_file\" is not supported: give proxy_ssl_certificate_key an \
         unencrypted key (readable by hsmgate only)",
    ),
    (
        "sub_filter",
        "\"sub_filter\" is not supported: hsmgate passes response bodies as the upstream \
         sent them",
    ),
    (
        "mirror",
        "\"mirror\" is not supported: hsmgate makes no subrequests",
    ),
    (
        "add_trailer",
        "\"add_trailer\" is not supported: hsmgate adds no response trailers",
    ),
];

/// How many arguments an ignored directive takes (checked as nginx would).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Exactly one.
    One,
    /// One or more.
    Some,
    /// `on` or `off`.
    Flag,
    /// One file that must be readable (nginx reads it at `-t`).
    File,
}

/// The shapes of the ignored directives the corpus uses; others are not checked.
const SHAPES: &[(&str, Shape)] = &[
    ("load_module", Shape::One),
    ("master_process", Shape::Flag),
    ("daemon", Shape::Flag),
    ("index", Shape::Some),
    ("log_not_found", Shape::Flag),
    ("server_name_in_redirect", Shape::Flag),
    ("sendfile", Shape::Flag),
    ("pcre_jit", Shape::Flag),
    ("worker_cpu_affinity", Shape::Some),
    ("worker_priority", Shape::One),
    ("worker_rlimit_core", Shape::One),
    ("working_directory", Shape::One),
    ("timer_resolution", Shape::One),
    ("thread_pool", Shape::Some),
    ("lock_file", Shape::One),
    ("accept_mutex_delay", Shape::One),
    ("debug_points", Shape::One),
    ("debug_connection", Shape::One),
    ("sendfile_max_chunk", Shape::One),
    ("aio", Shape::One),
    ("aio_write", Shape::Flag),
    ("directio", Shape::One),
    ("directio_alignment", Shape::One),
    ("read_ahead", Shape::One),
    ("disable_symlinks", Shape::Some),
    ("open_log_file_cache", Shape::Some),
    ("send_lowat", Shape::One),
    ("client_body_in_single_buffer", Shape::Flag),
    ("subrequest_output_buffer_size", Shape::One),
    ("uninitialized_variable_warn", Shape::Flag),
    ("chunked_transfer_encoding", Shape::Flag),
    ("max_ranges", Shape::One),
    ("proxy_ignore_client_abort", Shape::Flag),
    ("proxy_ssl_conf_command", Shape::Some),
    ("http2_idle_timeout", Shape::One),
    ("http2_max_requests", Shape::One),
    ("http2_recv_timeout", Shape::One),
    ("http2_max_field_size", Shape::One),
    ("http2_max_header_size", Shape::One),
    ("http2_chunk_size", Shape::One),
    ("http2_body_preread_size", Shape::One),
    ("http2_recv_buffer_size", Shape::One),
    ("http2_pool_size", Shape::One),
    ("http2_streams_index_size", Shape::One),
    ("tcp_nopush", Shape::Flag),
    ("tcp_nodelay", Shape::Flag),
    ("rewrite_log", Shape::Flag),
    ("types_hash_max_size", Shape::One),
    ("server_tokens", Shape::One),
    ("gzip", Shape::Flag),
    ("gzip_vary", Shape::Flag),
    ("gzip_types", Shape::Some),
    ("ssl_dhparam", Shape::File),
    ("resolver", Shape::Some),
    ("resolver_timeout", Shape::One),
    ("proxy_buffering", Shape::Flag),
    ("charset", Shape::One),
    ("multi_accept", Shape::Flag),
    ("ssl_buffer_size", Shape::One),
    ("ssl_early_data", Shape::Flag),
    ("reset_timedout_connection", Shape::Flag),
    ("log_subrequest", Shape::Flag),
    ("proxy_socket_keepalive", Shape::Flag),
    ("etag", Shape::Flag),
    ("http2_push_preload", Shape::Flag),
];

/// The shape of ignored directive `name`, if it is checked.
pub(crate) fn shape(name: &str) -> Option<Shape> {
    SHAPES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Why directive `name` is refused, if it is.
pub(crate) fn refused(name: &str) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// Why ignoring directive `name` is safe, if it is in the list.
pub(crate) fn reason(name: &str) -> Option<&'static str> {
    IGNORED
        .iter()
        .find(|(n, _)| *n == name)
        .or_else(|| IGNORED_PREFIXES.iter().find(|(p, _)| name.starts_with(p)))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert!(reason("sendfile").is_some());
        assert!(reason("gzip_types").is_some());
        assert_eq!(reason("limit_rate_after"), None, "implemented");
        assert!(reason("proxy_limit_rate").unwrap().contains("NOT ENFORCED"));
        assert_eq!(reason("limit_req_zone"), None, "implemented");
        assert!(reason("ssl_dhparam").is_some());
        assert_eq!(reason("ssl_stapling_verify"), None);
        assert_eq!(reason("proxy_pass"), None);
        assert_eq!(reason("sendfile_size"), None);
        assert!(reason("load_module").is_some());
        assert_eq!(reason("try_files"), None);
        assert!(refused("try_files").unwrap().contains("proxy_pass"));
        for (name, _) in SHAPES {
            assert!(
                reason(name).is_some(),
                "{name} has a shape but is not ignored"
            );
        }
        for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            assert!(reason(&format!("{t}_temp_path")).is_some(), "{t}");
        }
    }
}
