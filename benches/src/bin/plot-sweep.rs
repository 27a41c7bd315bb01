//! `plot-sweep IN.jsonl OUT.svg [TITLE]`: draws an open-loop sweep (JSON lines of
//! `server`, `offered`, `goodput`, `p99_ms`) as an SVG with two panels, goodput and p99
//! latency against the offered rate, one line per server. See [`hsmgate_benches::sweep`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hsmgate_benches::sweep;

/// Arguments of `plot-sweep`.
#[derive(Debug, Parser)]
#[command(
    name = "plot-sweep",
    about = "Plot an open-loop sweep (JSON lines) as an SVG"
)]
struct Args {
    /// JSON lines: {"server","offered","goodput","p99_ms"} per run
    input: PathBuf,
    /// The SVG to write
    output: PathBuf,
    /// Title above both panels
    #[arg(default_value = "open-loop handshake sweep")]
    title: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> Result<usize, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(&args.input)
            .map_err(|e| format!("{}: {e}", args.input.display()))?;
        let points = sweep::parse_lines(&text)?;
        sweep::plot_svg(&points, &args.title, &args.output)?;
        Ok(points.len())
    };
    match run() {
        Ok(n) => {
            eprintln!("plot-sweep: {n} points -> {}", args.output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("plot-sweep: {msg}");
            ExitCode::FAILURE
        }
    }
}
