//! The `hsmgate` command, with nginx's flags (`-c -p -g -t -T -q -s -e`): flags,
//! logging, configuration, runtime, signals. Thin on purpose; the work is in the
//! library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};
use hsmgate_proxy::control::{self, PidFile, Signals};
use hsmgate_proxy::keys::KeyDefaults;
use hsmgate_proxy::server::ReopenHook;
use hsmgate_proxy::site::Site;
use hsmgate_proxy::{ConfigSource, Proxy, ProxyError, demo, upstream};
use hsmgate_signer::KeyKind;

/// TLS-terminating reverse proxy whose private keys stay in PKCS#11 tokens.
///
/// The configuration format is chosen by the file name: `*.toml` is hsmgate's native
/// format, any other name is read as nginx syntax (e.g. `-c /etc/nginx/nginx.conf`).
#[derive(Debug, Parser)]
#[command(name = "hsmgate", version, about)]
struct Cli {
    /// Configuration file: `*.toml` native, anything else nginx syntax.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/hsmgate/hsmgate.toml"
    )]
    config: PathBuf,
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
    /// PKCS#11 module for token keys whose URI and OpenSSL configuration name none
    /// (default: $HSMGATE_PKCS11_MODULE).
    #[arg(long)]
    pkcs11_module: Option<PathBuf>,
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
    let cli = Cli::parse();
    if let Some(Command::Demo {
        listen,
        key,
        module,
    }) = cli.command
    {
        init_logging(None, "info");
        return exit(run_demo(listen, key.into(), module));
    }
    let source = ConfigSource {
        path: cli.config.clone(),
        prefix: cli.prefix.clone(),
        globals: cli.globals.clone(),
    };
    let defaults = KeyDefaults {
        module: cli.pkcs11_module.clone(),
    };
    if let Some(name) = &cli.signal {
        init_logging(None, "warn");
        return exit(send_signal(&source, name));
    }
    if cli.test || cli.dump {
        // Warnings are printed nginx-style by test_config; the log shows errors only.
        init_logging(None, "error");
        return test_config(&source, &defaults, cli.quiet, cli.dump);
    }
    // The error log comes from the configuration; a broken one is reported on stderr.
    let site = match source.load() {
        Ok((site, _)) => site,
        Err(e) => {
            eprintln!("hsmgate: [emerg] {e}");
            return ExitCode::FAILURE;
        }
    };
    let reopen = match error_log(&cli, &site) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hsmgate: [emerg] {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(user) = &site.user {
        tracing::warn!(
            user,
            "\"user\" is recorded but hsmgate does not switch users: run it as that user (systemd User=)"
        );
    }
    exit(run(source, defaults, site.workers, reopen))
}

fn exit(result: Result<(), ProxyError>) -> ExitCode {
    // Every signer thread closes its sessions and releases its module instance before
    // the process exits: p11-kit aborts when its exit-time cleanup races with them.
    hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("hsmgate: [emerg] {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

fn init_logging(file: Option<Arc<LogFile>>, level: &str) {
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter(level));
    match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&f)))
            .init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Route logs to the configuration's main `error_log` file (or stderr); the returned
/// hook reopens the file on SIGUSR1.
fn error_log(cli: &Cli, site: &Site) -> Result<Option<ReopenHook>, ProxyError> {
    let configured = site.error_logs.first();
    let level = match configured.map(|l| l.level.as_str()) {
        Some("debug") => "debug",
        Some("info" | "notice") => "info",
        Some("warn") => "warn",
        Some(_) => "error",
        None => "info",
    };
    let path = match &cli.error_log {
        Some(p) if p == Path::new("stderr") => None,
        Some(p) => Some(p.clone()),
        None => configured.and_then(|l| l.path.clone()),
    };
    let Some(path) = path else {
        init_logging(None, level);
        return Ok(None);
    };
    let file = Arc::new(LogFile::open(path)?);
    init_logging(Some(Arc::clone(&file)), level);
    Ok(Some(ReopenHook(Arc::new(move || {
        if let Err(e) = file.reopen() {
            eprintln!("hsmgate: [alert] {e}");
        }
    }))))
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
    let signal = control::signal_for(name).ok_or_else(|| {
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
    control::send(&pid_file, signal).map(drop)
}

fn test_config(source: &ConfigSource, defaults: &KeyDefaults, quiet: bool, dump: bool) -> ExitCode {
    let path = source.path.display();
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("hsmgate: [emerg] {e}");
        eprintln!("hsmgate: configuration file {path} test failed");
        ExitCode::FAILURE
    };
    let warnings = match source.load() {
        Ok((_, warnings)) => warnings,
        Err(e) => return failed(&e),
    };
    if !quiet {
        for w in warnings {
            eprintln!("hsmgate: [warn] {w}");
        }
        eprintln!("hsmgate: the configuration file {path} syntax is ok");
    }
    match Proxy::check_source(source, defaults) {
        // Keys were opened to check them; their sessions close before the exit.
        Ok(generation) => {
            drop(generation);
            hsmgate_signer::wait_for_workers(std::time::Duration::from_secs(3));
        }
        Err(e) => return failed(&e),
    }
    if !quiet {
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
    let metrics = hsmgate_proxy::admin::install_recorder();
    hsmgate_signer::metrics::describe();
    let mut proxy = Proxy::from_source(source, defaults)?.with_metrics(metrics);
    if let Some(hook) = reopen {
        proxy = proxy.on_reopen(hook);
    }
    let pid_path = proxy.generation().pid_file();
    runtime(workers)?.block_on(async move {
        let signals = Signals::install()?;
        let _pid = pid_path.as_deref().map(PidFile::create).transpose()?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let forwarder = tokio::spawn(signals.forward(tx));
        let result = proxy.run_controlled(rx).await;
        forwarder.abort();
        result
    })
}

fn run_demo(listen: SocketAddr, kind: KeyKind, module: Option<PathBuf>) -> Result<(), ProxyError> {
    let metrics = hsmgate_proxy::admin::install_recorder();
    hsmgate_signer::metrics::describe();
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
    let demo = demo::prepare(listen, upstream_addr, kind, module)?;
    let config = hsmgate_config::load(&demo.config)?;
    let proxy = Proxy::build(&config)?.with_metrics(metrics);
    let bound = proxy.local_addrs().first().copied().unwrap_or(listen);
    println!(
        "hsmgate demo: {kind:?} key generated on SoftHSM token \"hsmgate-demo\" in {} (configuration: {})",
        demo.dir().display(),
        demo.config.display()
    );
    println!("upstream: built-in echo server on http://{upstream_addr}; press Ctrl-C to stop");
    println!("{}", demo::curl_line(bound, &demo.certificate));
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
        let upstream = tokio::spawn(upstream::serve(listener, "hsmgate-demo-upstream"));
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
    if let Some(n) = workers.filter(|&n| n > 0) {
        builder.worker_threads(n as usize);
    }
    builder
        .enable_all()
        .thread_name("hsmgate-rt")
        .build()
        .map_err(|source| ProxyError::Io {
            what: "start the async runtime".into(),
            source,
        })
}
