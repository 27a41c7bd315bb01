//! The `hsmgate` command, with nginx's flags (`-c -p -g -t -T -q -s -e`) and the
//! sidecar's (`--listen --upstream --cert --key --pin-file --pkcs11-module --admin
//! --log-format`, or their `HSMGATE_*` variables): flags, logging, configuration,
//! runtime, signals. Thin on purpose; the work is in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};
use hsmgate_config::site::Site;
use hsmgate_config::{ConfigError, LogFormat, Overrides, ProcessEnv, Setting};
use hsmgate_proxy::{
    ConfigSource, KeyDefaults, PidFile, Proxy, ProxyError, ReopenHook, Signals, demo, echo_upstream,
};
use hsmgate_signer::KeyKind;

#[global_allocator]
static ALLOCATOR: hsmgate_proxy::allocator::Allocator = hsmgate_proxy::allocator::Allocator;

/// TLS-terminating reverse proxy whose private keys stay in PKCS#11 tokens.
///
/// The configuration format is chosen by the file name: `*.toml` is hsmgate's native
/// format, any other name is read as nginx syntax (e.g. `-c /etc/nginx/nginx.conf`).
/// The sidecar flags (each also an `HSMGATE_*` variable; a flag wins) replace values of
/// a native file, or, without `-c`, the whole file.
#[derive(Debug, Parser)]
#[command(name = "hsmgate", about, disable_version_flag = true)]
struct Cli {
    /// Print the version to stderr, as nginx (`hsmgate version: hsmgate/VERSION`), and exit.
    #[arg(short = 'v')]
    version: bool,
    /// Print `hsmgate VERSION` to stdout and exit.
    #[arg(long = "version")]
    long_version: bool,
    /// Print the version and what hsmgate is built with, and exit.
    #[arg(short = 'V')]
    build_info: bool,
    /// Configuration file: `*.toml` native, anything else nginx syntax [default:
    /// /etc/hsmgate/hsmgate.toml, unless sidecar flags or variables configure hsmgate].
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// nginx's prefix path (base of relative `pid`, log paths and the main file).
    #[arg(short = 'p', long = "prefix")]
    prefix: Option<PathBuf>,
    /// Global directives read before the file, e.g. `-g 'pid /run/x.pid;'`.
    #[arg(short = 'g', long = "globals")]
    globals: Option<String>,
    /// Test the configuration (including tokens, keys and certificates) and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Test the configuration and print it (all included files).
    #[arg(short = 'T', long = "test-dump")]
    dump: bool,
    /// With -t: print errors only.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Send a signal to the running hsmgate (via the pid file): reload, stop, quit, reopen.
    #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
    signal: Option<String>,
    /// Error log: `stderr` or a file, instead of the configuration's `error_log`.
    #[arg(short = 'e', long = "error-log")]
    error_log: Option<PathBuf>,
    /// PKCS#11 module [env: HSMGATE_PKCS11_MODULE]. Native format: replaces
    /// `[pkcs11] module` (and the key URI's module-path); nginx: for token keys whose
    /// URI and OpenSSL configuration name none.
    #[arg(long)]
    pkcs11_module: Option<String>,
    /// TLS listen address(es), comma-separated [env: HSMGATE_LISTEN].
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    listen: Option<String>,
    /// Upstream `host:port`, or `unix:/path` (a Unix socket) [env: HSMGATE_UPSTREAM].
    #[arg(long, value_name = "HOST:PORT")]
    upstream: Option<String>,
    /// PEM certificate chain, leaf first [env: HSMGATE_CERT].
    #[arg(long, value_name = "PATH")]
    cert: Option<String>,
    /// The private key's RFC 7512 `pkcs11:` URI [env: HSMGATE_KEY].
    #[arg(long, value_name = "URI")]
    key: Option<String>,
    /// File holding the token PIN [env: HSMGATE_PIN_FILE].
    #[arg(long, value_name = "PATH")]
    pin_file: Option<String>,
    /// Admin listener (/healthz, /readyz, /metrics, /status) [env: HSMGATE_ADMIN].
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Log format: text or json [env: HSMGATE_LOG_FORMAT; default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// PEM CAs whose client certificates are required (mTLS) [env: HSMGATE_CLIENT_CA].
    #[arg(long, value_name = "PATH")]
    client_ca: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a proxy on a fresh SoftHSM token in front of a built-in upstream.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Key to generate on the token.
        #[arg(long, value_enum, default_value = "rsa2048")]
        key: DemoKey,
        /// SoftHSM's PKCS#11 module (found in the usual places when not given).
        #[arg(long)]
        module: Option<PathBuf>,
        /// Admin listener (/healthz, /readyz, /metrics, /status), plain HTTP
        /// [default: 127.0.0.1:9901, or a free port when that one is taken].
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Watch a running hsmgate's HSMs: polls the admin `/status` and redraws like top
    /// (q or Ctrl-C quits).
    Top {
        /// Admin address [default: HSMGATE_ADMIN, else 127.0.0.1:9901].
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one frame, without escapes, and exit.
        #[arg(long)]
        once: bool,
    },
    /// Your own token: list, init, keygen (a key pair), csr (a CSR or self-signed
    /// certificate the token key signs; the certificate stays a file), check-pin.
    Token {
        #[command(subcommand)]
        command: hsmgate_proxy::token_cli::TokenCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoKey {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    P256,
    P384,
}

impl From<DemoKey> for KeyKind {
    fn from(k: DemoKey) -> KeyKind {
        match k {
            DemoKey::Rsa2048 => KeyKind::Rsa(2048),
            DemoKey::Rsa3072 => KeyKind::Rsa(3072),
            DemoKey::Rsa4096 => KeyKind::Rsa(4096),
            DemoKey::P256 => KeyKind::EcP256,
            DemoKey::P384 => KeyKind::EcP384,
        }
    }
}

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help goes where clap puts it; a bad command line exits 1 as nginx's does
        // (clap's own code is 2), with clap's message naming the option.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    if cli.long_version {
        println!("hsmgate {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if cli.version || cli.build_info {
        eprintln!(
            "{}",
            match cli.build_info {
                true => hsmgate_proxy::version::build_info(),
                false => hsmgate_proxy::version::version_line(),
            }
        );
        return ExitCode::SUCCESS;
    }
    if matches!(cli.command, Some(Command::Token { .. }))
        && let Some(Command::Token { command }) = cli.command.take()
    {
        init_logging(None, "warn", LogFormat::Text);
        return match hsmgate_proxy::token_cli::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hsmgate token: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Serving processes check a changed PIN in a child (`token check-pin`), never
    // the child itself.
    hsmgate_proxy::pin_check::install();
    // Before the configuration is read, its log format as the flag or variable asks,
    // for an error in the configuration itself.
    let json = cli
        .log_format
        .clone()
        .or_else(|| std::env::var("HSMGATE_LOG_FORMAT").ok())
        .is_some_and(|f| f.eq_ignore_ascii_case("json"));
    JSON_ERRORS.store(json, std::sync::atomic::Ordering::Relaxed);
    let (source, format) = match config_source(&mut cli) {
        Ok(s) => s,
        Err(e) => {
            emerg(&e);
            return ExitCode::FAILURE;
        }
    };
    JSON_ERRORS.store(
        matches!(format, LogFormat::Json),
        std::sync::atomic::Ordering::Relaxed,
    );
    match cli.command {
        Some(Command::Demo {
            listen,
            key,
            module,
            admin,
        }) => {
            init_logging(None, "info", format);
            return exit(run_demo(listen, key.into(), module, admin));
        }
        Some(Command::Top {
            admin,
            interval,
            once,
        }) => {
            let admin = admin
                .or_else(|| source.overrides.get(Setting::Admin).map(|g| g.text.clone()))
                .unwrap_or_else(|| "127.0.0.1:9901".to_owned());
            // `http://HOST:PORT/` is taken as HOST:PORT.
            let admin = admin
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let opts = hsmgate_proxy::top::TopOptions {
                admin,
                interval: std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0)),
                once,
            };
            return match hsmgate_proxy::top::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hsmgate top: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        // Handled before the configuration is read.
        Some(Command::Token { .. }) | None => {}
    }
    let defaults = KeyDefaults {
        module: source
            .overrides
            .get(Setting::Module)
            .map(|g| PathBuf::from(&g.text)),
    };
    if source.path == Path::new(DEFAULT_CONFIG) && !source.path.exists() {
        emerg(&format!(
            "no configuration: {DEFAULT_CONFIG} does not exist; give a file with -c FILE (TOML, \
             or nginx syntax), or configure hsmgate with the variables HSMGATE_LISTEN, \
             HSMGATE_UPSTREAM, HSMGATE_CERT, HSMGATE_KEY (and HSMGATE_PIN_FILE, \
             HSMGATE_PKCS11_MODULE, HSMGATE_ADMIN) or their flags (hsmgate --help)"
        ));
        return ExitCode::FAILURE;
    }
    if let Some(name) = &cli.signal {
        init_logging(None, "warn", format);
        return exit(send_signal(&source, name));
    }
    if cli.test || cli.dump {
        // Warnings are printed nginx-style by test_config; the log shows errors only.
        init_logging(None, "error", format);
        return test_config(
            &source,
            &defaults,
            cli.error_log.as_deref(),
            cli.quiet,
            cli.dump,
        );
    }
    // The error log comes from the configuration; a broken one is reported on stderr.
    let site = match source.load() {
        Ok((site, _)) => site,
        Err(e) => {
            emerg(&e);
            return ExitCode::FAILURE;
        }
    };
    let reopen = match error_log(&cli, &site, format) {
        Ok(r) => r,
        Err(e) => {
            emerg(&e);
            return ExitCode::FAILURE;
        }
    };
    for warning in unread_variables(&source) {
        tracing::warn!("{warning}");
    }
    if let Some(user) = &site.user {
        tracing::warn!(
            user,
            "\"user\" is recorded but hsmgate does not switch users: run it as that user (systemd User=)"
        );
    }
    exit(run(source, defaults, site.workers, reopen))
}

/// The configuration file read when neither `-c` nor the sidecar's settings are given.
const DEFAULT_CONFIG: &str = "/etc/hsmgate/hsmgate.toml";

/// The configuration: `-c FILE` with the sidecar flags and `HSMGATE_*` variables over
/// it (native format), or those alone when there is no `-c` and they configure
/// something, else the default file. Also the log format.
fn config_source(cli: &mut Cli) -> Result<(ConfigSource, LogFormat), ConfigError> {
    let mut overrides = Overrides::from_env(&ProcessEnv)?;
    for (setting, flag) in [
        (Setting::Listen, cli.listen.take()),
        (Setting::Upstream, cli.upstream.take()),
        (Setting::Cert, cli.cert.take()),
        (Setting::Key, cli.key.take()),
        (Setting::PinFile, cli.pin_file.take()),
        (Setting::Module, cli.pkcs11_module.take()),
        (Setting::Admin, cli.admin.take()),
        (Setting::LogFormat, cli.log_format.take()),
        (Setting::ClientCa, cli.client_ca.take()),
    ] {
        overrides.flag(setting, flag)?;
    }
    let format = overrides.log_format()?;
    let path = match cli.config.take() {
        Some(path) => path,
        None if overrides.configure() => PathBuf::new(),
        None => PathBuf::from(DEFAULT_CONFIG),
    };
    let mut source = ConfigSource {
        path,
        prefix: cli.prefix.clone(),
        globals: cli.globals.clone(),
        overrides,
    };
    // The file as opened (a relative `-c` is under `-p` for an nginx file, else under
    // the working directory), absolute: errors name it as nginx's do ("in /abs:10").
    if !source.path.as_os_str().is_empty() {
        let opened = match &source.prefix {
            Some(prefix) if source.path.is_relative() && !source.is_native() => {
                prefix.join(&source.path)
            }
            _ => source.path.clone(),
        };
        source.path = std::path::absolute(&opened).unwrap_or(opened);
    }
    if !source.is_native() {
        source.overrides.check_nginx(&source.path)?;
    }
    Ok((source, format))
}

/// The configuration's name in messages.
fn describe(source: &ConfigSource) -> String {
    match source.path.as_os_str().is_empty() {
        true => hsmgate_config::ENVIRONMENT.to_owned(),
        // Absolute already (`config_source`), as nginx's messages name it.
        false => source.path.display().to_string(),
    }
}

fn exit(result: Result<(), ProxyError>) -> ExitCode {
    // Every signer thread closes its sessions and releases its module instance before
    // the process exits: p11-kit aborts when its exit-time cleanup races with them.
    hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on the terminal; the error log gets it too when it is a file.
            if LOG_TO_FILE.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!("{e}");
            }
            emerg(&e);
            ExitCode::FAILURE
        }
    }
}

/// Whether the fatal error lines on stderr are JSON (`--log-format json`).
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The fatal error that stops the process, on stderr: nginx's `hsmgate: [emerg] …` line,
/// or with the JSON log format one JSON object as tracing-subscriber writes them.
fn emerg(e: &dyn std::fmt::Display) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": "ERROR",
            "fields": { "message": e.to_string() },
            "target": "hsmgate",
        });
        eprintln!("{line}");
    } else {
        eprintln!("hsmgate: [emerg] {e}");
    }
}

/// Whether logs go to a file (`error_log`, `-e FILE`) rather than stderr.
static LOG_TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `RUST_LOG` if set, else `default` with rustls' own lines at `error` only: its
/// warnings are what a peer sent (a renegotiation request, an IP address as SNI), so
/// any client could write them into the log at will; the handshake failures they lead
/// to are counted in `/metrics` and logged by hsmgate at `debug`.
fn env_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},rustls=error")))
}

fn init_logging(file: Option<Arc<LogFile>>, level: &str, format: LogFormat) {
    init_logging_as(file, level, format, false);
}

/// [`init_logging`]; `nginx`: text lines in nginx's error log format (an nginx
/// configuration's log, read by tools written for nginx's).
fn init_logging_as(file: Option<Arc<LogFile>>, level: &str, format: LogFormat, nginx: bool) {
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter(level));
    if nginx && format == LogFormat::Text {
        let builder = builder.event_format(hsmgate_proxy::NginxLine);
        match file {
            Some(f) => builder
                .with_writer(move || LogWriter(Arc::clone(&f)))
                .init(),
            None => builder.with_writer(std::io::stderr).init(),
        }
        return;
    }
    match (file, format) {
        (Some(f), LogFormat::Text) => builder
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&f)))
            .init(),
        (Some(f), LogFormat::Json) => builder
            .json()
            .with_writer(move || LogWriter(Arc::clone(&f)))
            .init(),
        (None, LogFormat::Text) => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).init(),
    }
}

/// Route logs to the configuration's main `error_log` file (or stderr); the returned
/// hook reopens the file on SIGUSR1.
fn error_log(cli: &Cli, site: &Site, format: LogFormat) -> Result<Option<ReopenHook>, ProxyError> {
    let configured = site.error_logs.first();
    let level = match configured.map(|l| l.level.as_str()) {
        Some("debug") => "debug",
        Some("info" | "notice") => "info",
        Some("warn") => "warn",
        Some(_) => "error",
        None => "info",
    };
    let nginx = !site.native;
    let Some(path) = error_log_path(cli.error_log.as_deref(), site) else {
        init_logging_as(None, level, format, nginx);
        return Ok(None);
    };
    let file = Arc::new(LogFile::open(path)?);
    LOG_TO_FILE.store(true, std::sync::atomic::Ordering::Relaxed);
    init_logging_as(Some(Arc::clone(&file)), level, format, nginx);
    Ok(Some(ReopenHook(Arc::new(move || {
        if let Err(e) = file.reopen() {
            eprintln!("hsmgate: [alert] {e}");
        }
    }))))
}

/// The error log's file (`None`: stderr): `-e`, else the configuration's first
/// main-level `error_log`, else for nginx files the replaced nginx's compiled-in one.
fn error_log_path(flag: Option<&Path>, site: &Site) -> Option<PathBuf> {
    let configured = site.error_logs.first();
    match flag {
        Some(p) if p == Path::new("stderr") => None,
        // As nginx: a relative `-e` path is under the prefix.
        Some(p) => Some(site.prefix.join(p)),
        // No error_log: the replaced nginx's compiled-in one (stderr for Debian's).
        None if configured.is_none() && !site.native => {
            hsmgate_config::nginx::compiled_paths().error_log.clone()
        }
        None => configured.and_then(|l| l.path.clone()),
    }
}

/// What `-t` opens besides the configuration, as nginx's does: the error log (created
/// if missing, as the start would) and the pid file's place (an existing file is opened
/// without being changed; a missing one is created and removed again). A path that
/// would stop the start is a warning, where nginx fails the test: configurations are
/// often checked where their pid and log directories do not exist yet. Only paths the
/// configuration or `-e` names (the defaults, `/run/hsmgate/` made by the systemd unit
/// and the replaced nginx's compiled-in error log, are left alone).
fn check_files(flag: Option<&Path>, site: &Site) -> Vec<String> {
    let mut warnings = Vec::new();
    let will_not_start = |e: &dyn std::fmt::Display| format!("{e}: hsmgate will not start with it");
    let named = flag.is_some() || !site.error_logs.is_empty();
    let log = error_log_path(flag, site).filter(|_| named);
    if let Some(Err(e)) = log.map(|path| LogFile::open_file(&path)) {
        warnings.push(will_not_start(&e));
    }
    let default = Path::new(hsmgate_config::defaults::PID_FILE);
    let Some(pid) = (site.pid.as_ref())
        .filter(|p| p.as_path() != default)
        .map(|p| site.prefix.join(p))
    else {
        return warnings;
    };
    let opened = match pid.exists() {
        true => std::fs::OpenOptions::new().write(true).open(&pid).map(drop),
        false => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pid)
            .map(|_| {
                let _ = std::fs::remove_file(&pid);
            }),
    };
    if let Err(e) = opened {
        let e = format!("open() \"{}\" failed: {e}", pid.display());
        warnings.push(will_not_start(&e));
    }
    warnings
}

/// The error log file, reopened on SIGUSR1.
struct LogFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl LogFile {
    fn open(path: PathBuf) -> Result<LogFile, ProxyError> {
        let file = Self::open_file(&path)?;
        Ok(LogFile {
            path,
            file: Mutex::new(file),
        })
    }

    fn open_file(path: &Path) -> Result<std::fs::File, ProxyError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ProxyError::Io {
                what: format!("open() \"{}\" failed", path.display()),
                source,
            })
    }

    fn reopen(&self) -> Result<(), ProxyError> {
        let fresh = Self::open_file(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

struct LogWriter(Arc<LogFile>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn send_signal(source: &ConfigSource, name: &str) -> Result<(), ProxyError> {
    let signal = hsmgate_proxy::signal_for(name).ok_or_else(|| {
        ProxyError::Invalid(format!(
            "invalid option: \"-s {name}\" (reload, stop, quit, reopen)"
        ))
    })?;
    let (site, _) = source.load()?;
    let pid_file = site
        .pid
        .as_ref()
        .map(|p| site.prefix.join(p))
        .ok_or_else(|| {
            ProxyError::Invalid(
                "the native format writes no pid file: signal the process directly (systemctl reload/stop)".into(),
            )
        })?;
    hsmgate_proxy::send_signal(&pid_file, signal).map(drop)
}

/// The process's `HSMGATE_*` variables that this configuration does not read (see
/// [`hsmgate_config::unread_variables`]), as warnings.
fn unread_variables(source: &ConfigSource) -> Vec<String> {
    let names: Vec<String> = (std::env::vars_os())
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    hsmgate_config::unread_variables(names.iter().map(String::as_str), !source.is_native())
}

fn test_config(
    source: &ConfigSource,
    defaults: &KeyDefaults,
    error_log: Option<&Path>,
    quiet: bool,
    dump: bool,
) -> ExitCode {
    let path = describe(source);
    let failed = |e: &dyn std::fmt::Display| {
        // A build that failed after opening keys has signer threads winding down: they
        // end before the process does (the module's exit-time cleanup must not race them).
        hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
        eprintln!("hsmgate: [emerg] {e}");
        eprintln!("hsmgate: configuration file {path} test failed");
        ExitCode::FAILURE
    };
    let (warnings, files) = match source.load() {
        Ok((site, warnings)) => (warnings, check_files(error_log, &site)),
        Err(e) => return failed(&e),
    };
    let files = files.into_iter().chain(unread_variables(source));
    // "syntax is ok" comes once the certificates and keys have loaded, as nginx's. `-q`
    // prints errors only: nginx's prints its warnings, but hsmgate warns of every
    // directive it ignores (`sendfile`, `types`…), which a unit's `ExecStartPre=… -t -q`
    // would write to the journal at each start.
    if !quiet {
        for w in warnings.iter().map(ToString::to_string).chain(files) {
            eprintln!("hsmgate: [warn] {w}");
        }
    }
    match Proxy::check_source(source, defaults) {
        // Keys were opened to check them; their sessions close before the exit.
        Ok(generation) => {
            if !quiet {
                for w in &generation.warnings {
                    eprintln!("hsmgate: [warn] {w}");
                }
            }
            // An HA group starts while one member can sign. For the test, a member that
            // refused its configuration (a wrong PIN, another key) fails it; one that
            // is unreachable now is a warning.
            let mut refused = Vec::new();
            for pool in generation.pools.pools() {
                for m in pool.members() {
                    let what = format!(
                        "HSM member {} of group {}: {}",
                        m.name,
                        pool.group_name(),
                        m.last_error
                    );
                    match m.state {
                        hsmgate_signer::MemberState::Refused => refused.push(what),
                        hsmgate_signer::MemberState::Up => {}
                        _ if !quiet => eprintln!("hsmgate: [warn] {what} (not up now)"),
                        _ => {}
                    }
                }
            }
            drop(generation);
            hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
            if !refused.is_empty() {
                return failed(&format!("{} (refused)", refused.join("; ")));
            }
        }
        Err(e) => return failed(&e),
    }
    if !quiet {
        eprintln!("hsmgate: the configuration file {path} syntax is ok");
        eprintln!("hsmgate: configuration file {path} test is successful");
    }
    if dump {
        match source.dump() {
            Ok(Some(text)) => print!("{text}"),
            Ok(None) => {}
            Err(e) => return failed(&e),
        }
    }
    ExitCode::SUCCESS
}

fn run(
    source: ConfigSource,
    defaults: KeyDefaults,
    workers: Option<u32>,
    reopen: Option<ReopenHook>,
) -> Result<(), ProxyError> {
    let metrics = hsmgate_proxy::install_recorder();
    hsmgate_signer::metrics::describe();
    hsmgate_proxy::describe_metrics();
    let runtime = runtime(workers)?;
    let result = runtime.block_on(async move {
        let signals = Signals::install()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let forwarder = tokio::spawn(signals.forward(tx));
        // Native formats wait, alive and not ready, for an HSM that cannot be used yet.
        let started = hsmgate_proxy::waiting::start(source, defaults, &mut rx, metrics.clone());
        let Some(proxy) = started.await? else {
            forwarder.abort();
            return Ok(());
        };
        let mut proxy = proxy.with_metrics(metrics);
        if let Some(hook) = reopen {
            proxy = proxy.on_reopen(hook);
        }
        let pid_path = proxy.generation().pid_file();
        let _pid = pid_path.as_deref().map(PidFile::create).transpose()?;
        let result = proxy.run_controlled(rx).await;
        forwarder.abort();
        result
    });
    // Blocking work still running (a reload abandoned on a hung HSM or PIN source) does
    // not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// The demo's admin address when none is given: 127.0.0.1:9901, or a port the system
/// picks when that one is taken (a second demo, another program), so that the demo
/// starts anyway; the lines it prints give the port.
fn demo_admin() -> SocketAddr {
    let usual = SocketAddr::from(([127, 0, 0, 1], 9901));
    match std::net::TcpListener::bind(usual) {
        Ok(_) => usual,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

fn run_demo(
    listen: SocketAddr,
    kind: KeyKind,
    module: Option<PathBuf>,
    admin: Option<SocketAddr>,
) -> Result<(), ProxyError> {
    let admin = admin.unwrap_or_else(demo_admin);
    let metrics = hsmgate_proxy::install_recorder();
    hsmgate_signer::metrics::describe();
    hsmgate_proxy::describe_metrics();
    let upstream_socket =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| ProxyError::Io {
            what: "bind the demo upstream on 127.0.0.1".into(),
            source,
        })?;
    let upstream_addr = upstream_socket
        .local_addr()
        .map_err(|source| ProxyError::Io {
            what: "demo upstream address".into(),
            source,
        })?;
    let demo = demo::prepare(listen, upstream_addr, kind, module, Some(admin))?;
    let config = hsmgate_config::load(&demo.config)?;
    let proxy = Proxy::build(&config)?.with_metrics(metrics);
    let bound = proxy.local_addrs().first().copied().unwrap_or(listen);
    println!(
        "hsmgate demo: {kind} key generated on SoftHSM token \"hsmgate-demo\" in {} (configuration: {})",
        demo.dir().display(),
        demo.config.display()
    );
    println!("upstream: built-in echo server on http://{upstream_addr}; press Ctrl-C to stop");
    println!("{}", demo::curl_line(bound, &demo.certificate));
    if let Some(admin) = proxy.admin_addr() {
        for line in demo::admin_lines(admin) {
            println!("{line}");
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let result = runtime(None)?.block_on(async move {
        upstream_socket
            .set_nonblocking(true)
            .map_err(|source| ProxyError::Io {
                what: "demo upstream socket".into(),
                source,
            })?;
        let listener = tokio::net::TcpListener::from_std(upstream_socket).map_err(|source| {
            ProxyError::Io {
                what: "demo upstream socket".into(),
                source,
            }
        })?;
        let upstream = tokio::spawn(echo_upstream::serve_logging(
            listener,
            "hsmgate-demo-upstream",
        ));
        let signals = Signals::install()?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let forwarder = tokio::spawn(signals.forward(tx));
        let result = proxy.run_controlled(rx).await;
        forwarder.abort();
        upstream.abort();
        result
    });
    // The signer threads close their sessions before the demo's token goes away.
    hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
    result
    // `demo` (and its token directory) is dropped here, after the proxy has stopped.
}

fn runtime(workers: Option<u32>) -> Result<tokio::runtime::Runtime, ProxyError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let threads = match workers.filter(|&n| n > 0) {
        Some(n) => n as usize,
        None => std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .max(hsmgate_config::defaults::MIN_RUNTIME_THREADS),
    };
    builder.worker_threads(threads);
    let runtime = builder
        .enable_all()
        .thread_name("hsmgate-rt")
        .build()
        .map_err(|source| ProxyError::Io {
            what: "start the async runtime".into(),
            source,
        })?;
    tracing::info!(
        threads = runtime.metrics().num_workers(),
        "async runtime started (`[runtime] threads`, nginx's `worker_processes`)"
    );
    Ok(runtime)
}
