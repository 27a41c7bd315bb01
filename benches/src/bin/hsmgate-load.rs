//! `hsmgate-load`: HTTPS load generator for hsmgate (see `hsmgate_benches::load`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use hsmgate_benches::load::{self, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    match load::run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.human());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hsmgate-load: {e}");
            ExitCode::FAILURE
        }
    }
}
