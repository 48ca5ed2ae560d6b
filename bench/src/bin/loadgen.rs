//! loadgen: million-message runs against sluice (embedded) or any Kafka-compatible broker, with
//! HdrHistogram latency reports, loss verification, plots and comparisons. See `loadgen --help`.

use std::process::ExitCode;

use clap::Parser;
use sluice_bench::config::{Cli, Command};
use sluice_bench::{compare, report, run, scaling};
use sluice_server::alloc::GuardedAlloc;

/// The embedded broker survives allocations sized by hostile length prefixes, as
/// `sluice-server` does (see `sluice_server::alloc`).
#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::PlotScaling(p)) = &cli.command {
        return match scaling::plot_scaling(&p.csv, &p.output, &p.format) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen plot-scaling: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Compare(c)) = cli.command {
        return match compare::compare(&c.runs, c.output.as_deref()) {
            Ok((text, dir)) => {
                print!("{text}");
                println!("\nwritten to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen compare: {e}");
                ExitCode::from(2)
            }
        };
    }
    let args = cli.run;
    let result = match run::run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    for line in report::summary_lines(&result) {
        println!("{line}");
    }
    if !args.no_report {
        match report::write_reports(&result, &args.output) {
            Ok(dir) => println!("reports written to {}", dir.display()),
            Err(e) => {
                eprintln!("loadgen: writing reports: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if result.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("loadgen: FAILED (lost, duplicated or reordered messages, or errors)");
        ExitCode::FAILURE
    }
}
