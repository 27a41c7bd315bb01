//! The `hsmgate` command: flags, logging, configuration, runtime, signals. Thin on
//! purpose; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hsmgate_proxy::{Proxy, ProxyError, demo, upstream};
use hsmgate_signer::KeyKind;

/// TLS-terminating reverse proxy whose private keys stay in PKCS#11 tokens.
#[derive(Debug, Parser)]
#[command(name = "hsmgate", version, about)]
struct Cli {
    /// Configuration file (native TOML).
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/hsmgate/hsmgate.toml"
    )]
    config: PathBuf,
    /// Test the configuration (including the token, key and certificate) and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let metrics = hsmgate_proxy::admin::install_recorder();
    hsmgate_signer::metrics::describe();
    let result = match cli.command {
        Some(Command::Demo {
            listen,
            key,
            module,
        }) => run_demo(listen, key.into(), module),
        None if cli.test => test_config(&cli.config),
        None => run(&cli.config, metrics),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsmgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<hsmgate_config::Config, ProxyError> {
    let config = hsmgate_config::load(path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn test_config(path: &std::path::Path) -> Result<(), ProxyError> {
    let config = load(path)?;
    println!(
        "hsmgate: the configuration file {} syntax is ok",
        path.display()
    );
    Proxy::check(&config)?;
    println!(
        "hsmgate: configuration file {} test is successful",
        path.display()
    );
    Ok(())
}

fn run(
    path: &std::path::Path,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<(), ProxyError> {
    let config = load(path)?;
    let proxy = Proxy::build(&config)?.with_metrics(metrics);
    runtime()?.block_on(proxy.run(shutdown_signal()))
}

fn run_demo(listen: SocketAddr, kind: KeyKind, module: Option<PathBuf>) -> Result<(), ProxyError> {
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
    let config = load(&demo.config)?;
    let proxy = Proxy::build(&config)?;
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
    runtime()?.block_on(async move {
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
        let result = proxy.run(shutdown_signal()).await;
        upstream.abort();
        result
    })
    // `demo` (and its token directory) is dropped here, after the proxy has stopped.
}

fn runtime() -> Result<tokio::runtime::Runtime, ProxyError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hsmgate-rt")
        .build()
        .map_err(|source| ProxyError::Io {
            what: "start the async runtime".into(),
            source,
        })
}

/// Resolves on SIGTERM, SIGINT or SIGQUIT: all three drain for the grace period.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("install SIGQUIT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = quit.recv() => "SIGQUIT",
    };
    tracing::info!(signal = name, "signal received");
}
