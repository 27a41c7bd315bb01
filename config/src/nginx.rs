//! The nginx configuration reader: hsmgate as a drop-in for nginx used as an
//! SSL-offload front. [`load`] reads `nginx.conf` (with its `include`s) and
//! validates the subset below into an [`NginxConfig`]; anything outside it is
//! an error naming `file:line:col` and the directive, so a config is never
//! half-understood.
//!
//! # Paths
//!
//! As in nginx: `include`, `ssl_certificate`, `ssl_certificate_key` and
//! `ssl_session_ticket_key`, `ssl_client_certificate` are relative to the main file's directory
//! (nginx's conf prefix); `pid`, `error_log` and `access_log` to the prefix
//! ([`NginxOptions::prefix`], nginx's `-p`; by default the parent of the main
//! file's directory, as in nginx's own layout `PREFIX/conf/nginx.conf`). A
//! relative main file is taken relative to the prefix when one is given.
//!
//! # Directives
//!
//! - main: `user`, `worker_processes` (recorded; hsmgate is one
//!   multi-threaded process), `pid` (where `-s` finds the process),
//!   `error_log`, `env`, `ssl_engine pkcs11` (any other engine is an error),
//!   `events { worker_connections }`, `http`.
//! - `http`: `server`, `upstream NAME { server ADDR [weight=N] [max_fails=N]
//!   [fail_timeout=T] [backup] [down]; keepalive N; least_conn | ip_hash | hash KEY
//!   [consistent] | random [two [least_conn]]; zone NAME [SIZE]; }`, `log_format`,
//!   `geo` (a [`VarMap`] looked up by address: [`GeoTable`]), `split_clients` (one
//!   looked up by a string's MurmurHash2: [`SplitTable`]),
//!   `limit_req_zone`, `limit_conn_zone`, and the
//!   settings below.
//! - `server`: `listen` (`ssl`, `http2`, `default_server`, `reuseport`,
//!   `ipv6only=`, `backlog=`, `bind`, `proxy_protocol`, and the socket options
//!   `deferred`, `so_keepalive=`, `fastopen=`, `rcvbuf=`, `sndbuf=`),
//!   `proxy_protocol_timeout`, `server_name`, `location`, `return`, settings,
//!   `http2 on|off` (nginx 1.25.1+; also in `http`: as `listen … http2` on each of
//!   the server's addresses), `if (CONDITION) { return …; }` (certbot's redirect
//!   form, module `cond`): `($var)`, `=`, `!=`, `~`, `~*`, `!~`, `!~*`, and `rewrite`
//!   (module `rewrite`), run in order before the server's `return`; file tests, other
//!   directives inside `if`, and `if` outside a `server` are refused.
//! - `location [=|^~|~|~*] PATTERN`: `proxy_pass http[s]://HOST[:PORT][URI]`
//!   (a named upstream or an address; `https` per `proxy_ssl_*`; a host that is neither
//!   an upstream name nor an IP address must resolve, as nginx resolves it at load:
//!   `host not found in upstream "HOST"`, also for an upstream's `server`), `return`,
//!   `rewrite REGEX REPLACEMENT [last|break|redirect|permanent]` (before the `return`),
//!   nested `location`, settings; `internal`; `if (CONDITION) { … }` (`rewrite`,
//!   `set`, `return`, `proxy_pass` without a URI part, settings); `set $NAME VALUE`
//!   (also in a `server`); `location @name` (server level, for `error_page`).
//! - `error_page CODE… [=[RESPONSE]] URI|@name|URL`, `proxy_intercept_errors`,
//!   `recursive_error_pages` (settings), and `root`, read only for the pages
//!   `error_page` names.
//! - settings (inherited `http` → `server` → `location`; a level with its own
//!   `proxy_set_header`, `add_header` or `access_log` inherits none of the
//!   outer ones, as in nginx; one with `proxy_hide_header` or `proxy_pass_header`
//!   inherits neither list): `proxy_set_header`, `add_header`, `proxy_hide_header`,
//!   `proxy_pass_header` (upstream response headers hidden besides nginx's defaults,
//!   [`HIDDEN_BY_DEFAULT`], and those of the defaults passed),
//!   `proxy_http_version`, `proxy_{connect,read,send}_timeout`,
//!   `client_max_body_size`, `keepalive_timeout` (`keepalive_requests`, `keepalive_time`: server level), `access_log`, `error_log`,
//!   `proxy_request_buffering` (default on: bodies read whole before an upstream is
//!   chosen), `allow`/`deny` (addresses, CIDR blocks, `all`, `unix:`; a level with
//!   rules inherits none), `auth_basic REALM|off` and `auth_basic_user_file FILE` (each
//!   inherited on its own; the file is read by the proxy at each request), `satisfy
//!   all|any`, `set_real_ip_from` (a level with its own inherits none),
//!   `real_ip_header`, `real_ip_recursive`, `stub_status` (a location's content),
//!   `expires`, `auth_request` with
//!   `auth_request_set`,
//!   `proxy_method`, `proxy_set_body`, `proxy_pass_request_headers`,
//!   `proxy_pass_request_body`, `limit_req` and `limit_conn` (arrays,
//!   with `_status`, `_dry_run`, `_log_level`; their `_zone`s in `http`),
//!   `limit_rate` and `limit_rate_after` (sizes; a variable is warned about and not
//!   enforced), `limit_except METHOD… { … }` in a location (`allow`, `deny`,
//!   `auth_basic`, `auth_basic_user_file`, `access_log` inside),
//!   `proxy_redirect` (`default` from the
//!   location's `proxy_pass` when none is written), `proxy_cookie_path` and
//!   `proxy_cookie_domain`, `proxy_cookie_flags` (arrays: a level with its own
//!   inherits none; `off`),
//!   `proxy_next_upstream` with `proxy_next_upstream_tries` and
//!   `proxy_next_upstream_timeout` (each inherited on its own),
//!   `client_body_buffer_size` (in memory up to it, then an unlinked temporary
//!   file), `proxy_ssl_verify`, `proxy_ssl_trusted_certificate`,
//!   `proxy_ssl_verify_depth`, `proxy_ssl_server_name`, `proxy_ssl_name`,
//!   `proxy_ssl_protocols`, `proxy_ssl_ciphers`, `proxy_ssl_session_reuse`,
//!   `proxy_ssl_certificate` and
//!   `proxy_ssl_certificate_key` (PEM files);
//!   in `http` and `server` also `ssl_certificate`, `ssl_certificate_key`
//!   (a file, `engine:pkcs11:pkcs11:…` or `pkcs11:…`), `ssl_protocols`
//!   (TLSv1/TLSv1.1 dropped with a warning), `ssl_ciphers` (mapped to rustls
//!   suites; others dropped with a warning), `ssl_prefer_server_ciphers`,
//!   `ssl_session_cache`, `ssl_session_timeout`, `ssl_session_tickets`,
//!   `ssl_session_ticket_key`, `ssl_client_certificate`, `ssl_verify_client
//!   on|optional|off` (`optional_no_ca` is refused: rustls accepts only certificates
//!   it verifies; `on`/`optional` without `ssl_client_certificate` is nginx's error),
//!   `ssl_verify_depth`, `ssl_reject_handshake` (such a server needs no certificate;
//!   a handshake that selects it gets an `unrecognized_name` alert),
//!   `ssl_stapling on|off` with `ssl_stapling_file` (the DER
//!   response stapled to the server's certificates) or without it (each certificate's
//!   response fetched from its responder, `ssl_stapling_responder`,
//!   `ssl_stapling_verify`, `ssl_trusted_certificate` for the issuer; the proxy's
//!   `ocsp` module). Each server on a shared address keeps its own `ssl_*`
//!   settings (the ClientHello's SNI selects the server).
//!
//! Variables in `proxy_set_header`, `add_header`, `return` and `log_format`
//! must be in [`SUPPORTED_VARIABLES`] or of a family of [`SUPPORTED_PREFIXES`]
//! (`$http_NAME`, `$sent_http_NAME`, `$arg_NAME`, `$cookie_NAME`).
//!
//! # Directives ignored with a warning
//!
//! | directive | why ignoring it is safe |
//! |---|---|
//! | `sendfile`, `open_file_cache*`, `types {}`, `default_type` | hsmgate serves no files |
//! | `tcp_nopush`, `tcp_nodelay` | socket tuning; hsmgate sets its own options (TCP_NODELAY on) |
//! | `rewrite_log` | each rewrite is logged at debug level |
//! | `types_hash_*`, `server_names_hash_*`, `proxy_headers_hash_*`, `variables_hash_*`, `map_hash_*` | nginx hash-table sizing |
//! | `ssl_buffer_size` | TLS record sizing; rustls sizes its own records |
//! | `ssl_early_data` | 0-RTT data is not accepted (nginx's default `off`) |
//! | `reset_timedout_connection`, `lingering_*`, `keepalive_disable`, `msie_padding`, `msie_refresh` | connection teardown tuning and old-browser workarounds |
//! | `proxy_max_temp_file_size`, `proxy_temp_file_write_size`, `output_buffers`, `postpone_output` | responses are streamed |
//! | `http2_push`, `http2_push_preload` | no HTTP/2 server push |
//! | `log_subrequest`, `proxy_socket_keepalive`, `proxy_ignore_headers`, `etag`, `if_modified_since` | no subrequests, no upstream TCP keep-alive probes, no cache or `X-Accel-*` handling, no static files |
//! | `proxy_cache*` | **not cached**: the warning says so; every request goes to the upstream (`$upstream_cache_status` is empty) |
//! | `server_tokens` | hsmgate adds no version to responses |
//! | `charset` | responses pass as the upstream sent them |
//! | `gzip*` | responses pass as the upstream sent them (not compressed) |
//! | `ssl_dhparam` | rustls has no DHE suites |
//! | `resolver`, `resolver_timeout` | the system resolver is used (upstreams, OCSP responders) |
//! | `proxy_buffering`, `proxy_buffers`, `proxy_buffer_size`, `proxy_busy_buffers_size` | hsmgate streams |
//! | `multi_accept`, `use`, `accept_mutex`, `worker_rlimit_nofile` | event-loop and process tuning |
//! | `master_process`, `daemon` | hsmgate is one process and stays in the foreground (systemd `Type=notify`) |
//! | `keepalive_requests` | connections are not closed after a request count |
//! | `proxy_limit_rate` | **not enforced**: the upstream's answer is read as fast as the client takes it (`limit_rate`, which is enforced, limits that) |
//! | `load_module` | modules are built in: the ones hsmgate implements need no loading (Debian's `modules-enabled/*.conf`) |
//! | `index`, `log_not_found` | hsmgate serves no files (`root` is read only for the pages `error_page` names). In an SSL-offload site every location proxies or returns, so nginx never reads them either; a location with neither (or a server with no location and no `return`), where nginx *would* serve files, is warned about on its own: hsmgate answers 404 there |
//! | `server_name_in_redirect` | the redirects hsmgate makes use the client's `Host` |
//! | `client_body_temp_path`, `proxy_temp_path`, `fastcgi_`/`uwsgi_`/`scgi_temp_path` | responses are streamed; a buffered request body goes to an unlinked file in `$TMPDIR` |
//! | `pcre_jit`, `worker_cpu_affinity`, `worker_priority`, `worker_rlimit_core`, `working_directory`, `timer_resolution`, `thread_pool`, `lock_file`, `accept_mutex_delay`, `debug_points`, `debug_connection` | process and event-loop tuning of nginx's workers (systemd settings do it for hsmgate) |
//! | `sendfile_max_chunk`, `aio`, `aio_write`, `directio`, `directio_alignment`, `read_ahead`, `disable_symlinks`, `open_log_file_cache`, `send_lowat`, `client_body_in_single_buffer`, `subrequest_output_buffer_size`, `uninitialized_variable_warn` | file serving and I/O tuning hsmgate does not do |
//! | `chunked_transfer_encoding`, `max_ranges`, `proxy_ignore_client_abort` | hsmgate does what nginx's default does (chunked responses, ranges answered by the upstream, the upstream request given up with the client) |
//! | `ssl_conf_command`, `proxy_ssl_conf_command` | OpenSSL commands; rustls is set by `ssl_protocols`/`ssl_ciphers` |
//! | `http2_idle_timeout`, `http2_max_requests`, `http2_recv_timeout`, `http2_max_field_size`, `http2_max_header_size`, `http2_chunk_size`, `http2_body_preread_size`, `http2_recv_buffer_size`, `http2_pool_size`, `http2_streams_index_size` | obsolete since nginx 1.19.7, or HTTP/2 tuning of the h2 crate's |
//!
//! Refused with a reason (ignoring them would change answers or security): `try_files`,
//! `proxy_bind`, `proxy_ssl_crl`, `proxy_ssl_password_file`,
//! `ssl_ocsp`, `ssl_password_file`, `grpc_pass`, `fastcgi_pass`, `uwsgi_pass`,
//! `scgi_pass`, `memcached_pass`, `sub_filter`, `mirror`, `add_trailer`.
//!
//! The arguments of the ignored directives real configurations use (`load_module`,
//! `root`, `index`, `types {}`, `gzip*`, `resolver`,
//! `proxy_buffering`, …) are still checked as nginx's `-t` checks them (count, `on`/`off`,
//! block), and the file of `ssl_dhparam` must be readable (as that of
//! `ssl_trusted_certificate`, which is used): bad input is an error at its `file:line` (`ignored::SHAPES`).
//!
//! # Directives refused with a reason
//!
//! | directive | why it cannot be ignored |
//! |---|---|
//! | `try_files` | its file checks decide where nginx sends a request (a file, another URI, a code); hsmgate has no files, so ignoring it would change answers. An SSL-offload site replaces it with `proxy_pass` |
//! | `if` inside an `if`, or in a server with more than `return` inside | nginx refuses the first; the second is not implemented |
//!
//! # Paths left unset
//!
//! Without `access_log` at any level, requests are logged where the replaced nginx
//! would log them: its compiled-in `--http-log-path` read from `nginx -V`, or Debian's
//! `/var/log/nginx/access.log` when no nginx is installed ([`compiled_paths`]). Without
//! `error_log`, its `--error-log-path` (Debian's: stderr). A file that cannot be opened
//! is an error naming the `access_log` line, or the `http` block that sets none.
//!
//! # Known differences from nginx
//!
//! - `pkcs11:…` keys are accepted directly (nginx would read a file of that name).
//! - `listen` takes literal addresses and `localhost` (as 127.0.0.1); other
//!   names are not resolved.
//! - `proxy_pass` and upstream `server` host names are resolved at load only to refuse
//!   those that do not resolve; connections resolve them again.
//! - Regexes use the `regex` crate, not PCRE: no look-around or backreferences.
//! - nginx's automatic `301` for `/prefix` → `/prefix/` on `proxy_pass`
//!   locations is not modelled by [`location_match`].

mod build;
mod compiled;
mod cond;
mod expires;
mod geo;
mod hsm_group;
mod ignored;
mod lexer;
mod limits;
mod location;
mod map;
mod model;
mod ngx_regex;
pub(crate) mod parse;
mod proxy_ssl;
mod rewrite;
mod scope;
mod select;
mod server;
mod split_clients;
mod template;
mod tls;
mod values;

use std::path::{Path, PathBuf};

pub use self::compiled::{CompiledPaths, compiled_paths};
pub use self::cond::{Condition, LocationIf, ServerIf};
pub use self::expires::Expires;
pub use self::geo::GeoTable;
pub use self::limits::{
    LimitConn, LimitConnZone, LimitLogLevel, LimitReq, LimitReqZone, LimitZones, Limits,
};
pub use self::location::url_scheme;
pub use self::map::{MapKey, VarMap};
pub use self::model::{
    AccessLog, AccessMatch, AccessRule, Action, AddHeader, AuthBasic, BalanceMethod, CertPair,
    ClientLimits, CookieFlags, ErrorLog, ErrorPage, ErrorPageStatus, ErrorPageTarget,
    HIDDEN_BY_DEFAULT, HttpVersion, KeySource, Listen, LocationBlock, LocationModifier, LogEscape,
    LogFormat, Matcher, MimeTypes, NextUpstream, NginxConfig, ProxyPass, ProxySettings, RealIp,
    RealIpHeader, Return, Server, ServerName, SoKeepalive, SocketOptions, TokenKey, UpstreamGroup,
    UpstreamRef, UpstreamServer, ValueMatch, ValueRewrite,
};
pub use self::ngx_regex::{Captures, NgxRegex};
pub use self::parse::SourceFile;
pub use self::proxy_ssl::{ClientCert, ProxySsl};
pub use self::rewrite::{
    LocationStep, MAX_URI_CHANGES, Rewrite, RewriteFlag, Rewritten, ServerStep, SetVar,
    capture_index,
};
pub use self::select::{
    listening_on, location_match, normalize_host, proxy_pass_uri, request_target, select_server,
    select_server_index,
};
pub use self::split_clients::{SplitTable, murmur_hash2};
pub use self::template::{SUPPORTED_PREFIXES, SUPPORTED_VARIABLES, Template, TemplatePart};
pub use self::tls::{
    CipherSuite, KxGroup, OcspFetch, SessionCache, TlsFilesAt, TlsSettings, TlsVersion,
    VerifyClient,
};

use crate::error::{ConfigError, ConfigErrorKind};

/// How nginx was invoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NginxOptions {
    /// `-p PREFIX`; default: the parent of the main file's directory.
    pub prefix: Option<PathBuf>,
    /// `-g "directives;"`: main-context directives read before the file.
    pub globals: Option<String>,
}

/// Reads the nginx configuration at `path` (and its includes) and validates it.
pub fn load(path: &Path, opts: &NginxOptions) -> Result<NginxConfig, ConfigError> {
    let path = match &opts.prefix {
        Some(prefix) if path.is_relative() => prefix.join(path),
        _ => path.to_path_buf(),
    };
    let text = parse::read_text(&path).map_err(|e| ConfigError {
        file: path.clone(),
        line: 0,
        col: 0,
        kind: ConfigErrorKind::Read(e),
    })?;
    load_text(&path, text, opts)
}

/// [`load`] with the main file's text already read (includes are still read
/// from disk).
pub(crate) fn load_text(
    path: &Path,
    text: String,
    opts: &NginxOptions,
) -> Result<NginxConfig, ConfigError> {
    let conf_prefix = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let prefix = opts
        .prefix
        .clone()
        .unwrap_or_else(|| match conf_prefix.parent() {
            Some(p) if !conf_prefix.as_os_str().is_empty() => p.to_path_buf(),
            _ => conf_prefix.clone(),
        });
    let mut parser = parse::Parser::new(&conf_prefix);
    let mut main = match &opts.globals {
        Some(g) => parser.parse_text("command line".into(), g.clone())?,
        None => Vec::new(),
    };
    main.extend(parser.parse_text(path.to_path_buf(), text)?);
    let sources = parser.sources;
    let mut ctx = build::Ctx {
        sources: &sources,
        prefix: &prefix,
        conf_prefix: &conf_prefix,
        warnings: Vec::new(),
        log_formats: Default::default(),
        map_names: Default::default(),
        set_names: Default::default(),
        maps: Default::default(),
        hsm_groups: Default::default(),
        http2: None,
        ssl: None,
        limit_zones: Default::default(),
    };
    let mut config = build::build(&mut ctx, &main, path)?;
    config.files = sources.files;
    tracing::debug!(file = %path.display(), servers = config.servers.len(), "nginx configuration loaded");
    Ok(config)
}

#[cfg(test)]
mod tests;
