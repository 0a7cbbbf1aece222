//! `repvgg-train`: train RepVGG on an ImageFolder data set with the paper's recipe, or run the
//! self-contained demonstration. The flags and what is printed live here (`src/cli/`); the
//! training itself is the library's ([`repvgg_train::train`]).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use repvgg_train::throughput::{LoaderBenchArgs, bench_loader};

use crate::cli::demo::DemoArgs;
use crate::cli::train::TrainArgs;

/// Train RepVGG with the paper's ImageNet recipe (defaults), then write the training-time and
/// the re-parameterized deploy-time model.
///
/// Example: repvgg-train --data /data/imagenet --arch A0
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: Option<TrainArgs>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a small image set, train a small RepVGG on it on the CPU, convert it, and
    /// compare the speed of both forms (a few minutes, nothing to download).
    Demo(DemoArgs),
    /// Measure the data pipeline: decoded and augmented ImageNet-sized JPEGs per second, for
    /// each worker count.
    BenchLoader(LoaderBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logger();
    let outcome = match (cli.command, cli.train) {
        (Some(Command::Demo(args)), _) => cli::demo::run(&args),
        (Some(Command::BenchLoader(args)), _) => run_bench_loader(&args),
        (None, Some(args)) => cli::train::run(&args),
        (None, None) => {
            eprintln!("error: give --data DIR to train, or `demo` (see --help)");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Shows the library's `log` lines on stderr: its own at `info` (as plain lines), every other
/// crate's from `warn` (burn-train logs every iteration at `info`); `RUST_LOG` overrides.
fn init_logger() {
    let filter = env_logger::Env::default().default_filter_or("warn,repvgg=info");
    env_logger::Builder::from_env(filter)
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "{}", record.args()),
            level => {
                let style = out.default_level_style(level);
                let label = match level {
                    log::Level::Warn => "warning",
                    other => other.as_str(),
                };
                writeln!(out, "{style}{label}{style:#}: {}", record.args())
            }
        })
        .init();
}

/// `bench-loader`: measures, then prints a markdown table.
fn run_bench_loader(args: &LoaderBenchArgs) -> anyhow::Result<()> {
    let results = bench_loader(args)?;
    println!("| workers | images | images/s | images/s per worker |");
    println!("|---|---|---|---|");
    for result in results {
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            result.workers,
            result.images,
            result.images_per_second,
            result.images_per_second / result.workers as f64
        );
    }
    Ok(())
}
